"""The decision point itself: search filtering, spellings, traversal payloads, injection."""

from __future__ import annotations

import base64

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def catalog(share_server):  # type: ignore[no-untyped-def]
    """7 models and experiments of team-a, 5 of team-b, one of team-a shared with team-b."""
    import uuid

    prefix = f"cat{uuid.uuid4().hex[:6]}"
    made: dict[str, list[str]] = {"team-a": [], "team-b": []}
    experiments: dict[str, list[str]] = {"team-a": [], "team-b": []}
    for team, user, count in (("team-a", "aaron", 7), ("team-b", "bea", 5)):
        token = share_server.tokens[user]
        for i in range(count):
            name = f"{prefix}-{team}-{i}"
            r = share_server.api("POST", f"{API}/registered-models/create", token=token,
                                 json={"name": name})
            assert r.status_code == 200, r.text
            made[team].append(name)
            r = share_server.api("POST", f"{API}/experiments/create", token=token,
                                 json={"name": name})
            assert r.status_code == 200, r.text
            experiments[team].append(r.json()["experiment_id"])
    shared = made["team-a"][0]
    r = share_server.api("POST", "/api/2.0/mlflow-share/grants", token=share_server.tokens["alice"],
                         json={"model": shared, "team": "team-b", "permission": "read"})
    assert r.status_code == 200
    return {"prefix": prefix, "models": made, "experiments": experiments, "shared": shared}


def _all_pages(fetch, max_results: int) -> list[str]:  # type: ignore[no-untyped-def]
    names, token, pages = [], None, 0
    while True:
        page = fetch(max_results, token)
        names += [item.name for item in page]
        pages += 1
        token = page.token
        if not token:
            return names
        assert pages < 50


@pytest.mark.parametrize("page_size", [2, 3, 100])
def test_search_registered_models_returns_exactly_readable(as_user, catalog, page_size) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient()
    like = f"name LIKE '{catalog['prefix']}%'"
    as_user("bert")  # viewer of team-b
    seen = _all_pages(lambda n, t: client.search_registered_models(like, max_results=n,
                                                                   page_token=t), page_size)
    assert sorted(seen) == sorted(catalog["models"]["team-b"] + [catalog["shared"]])
    as_user("carl")
    assert _all_pages(lambda n, t: client.search_registered_models(like, max_results=n,
                                                                   page_token=t), page_size) == []
    as_user("admin")
    everything = _all_pages(lambda n, t: client.search_registered_models(
        like, max_results=n, page_token=t), page_size)
    assert sorted(everything) == sorted(catalog["models"]["team-a"] + catalog["models"]["team-b"])


def test_search_experiments_and_versions_filtered(share_server, as_user, catalog) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient()
    as_user("bob")
    found = _all_pages(lambda n, t: client.search_experiments(
        filter_string=f"name LIKE '{catalog['prefix']}%'", max_results=n, page_token=t), 2)
    assert sorted(found) == sorted(catalog["models"]["team-b"])  # experiments share the names
    # ajax-api spelling of the same searches gives the same answer.
    r = share_server.api("POST", "/ajax-api/2.0/mlflow/experiments/search",
                         token=share_server.tokens["bob"],
                         json={"filter": f"name LIKE '{catalog['prefix']}%'", "max_results": 100})
    assert sorted(e["name"] for e in r.json()["experiments"]) == sorted(catalog["models"]["team-b"])
    r = share_server.api("GET", "/ajax-api/2.0/mlflow/registered-models/search",
                         token=share_server.tokens["carl"],
                         params={"filter": f"name LIKE '{catalog['prefix']}%'"})
    assert r.json().get("registered_models", []) == []
    # Runs of an unreadable experiment cannot be searched.
    with pytest.raises(MlflowException) as denied:
        client.search_runs([catalog["experiments"]["team-a"][0]])
    assert denied.value.error_code == "PERMISSION_DENIED"


def test_graphql_is_authorised_per_field(share_server, catalog) -> None:  # type: ignore[no-untyped-def]
    team_a_experiment = catalog["experiments"]["team-a"][1]
    query = ('query { mlflowGetExperiment(input: {experimentId: "%s"}) '
             '{ experiment { name } } }' % team_a_experiment)
    as_bob = share_server.api("POST", "/graphql", token=share_server.tokens["bob"],
                              json={"query": query}).json()
    assert as_bob["data"]["mlflowGetExperiment"] is None
    assert "Permission denied" in as_bob["errors"][0]
    as_alice = share_server.api("POST", "/graphql", token=share_server.tokens["alice"],
                                json={"query": query}).json()
    assert as_alice["data"]["mlflowGetExperiment"]["experiment"]["name"].startswith(
        catalog["prefix"])
    versions = ('query { mlflowSearchModelVersions(input: {filter: "name LIKE \'%s%%\'"}) '
                '{ modelVersions { name } } }' % catalog["prefix"])
    result = share_server.api("POST", "/graphql", token=share_server.tokens["carl"],
                              json={"query": versions}).json()
    assert not (result["data"]["mlflowSearchModelVersions"] or {}).get("modelVersions")
    assert share_server.api("POST", "/graphql", json={"query": query}).status_code == 401


def test_spelling_and_method_variants(share_server, catalog) -> None:  # type: ignore[no-untyped-def]
    private = catalog["models"]["team-a"][2]
    bob = {"Authorization": f"Bearer {share_server.tokens['bob']}"}
    url = share_server.url
    get = f"{API}/registered-models/get"
    import requests

    def status(method: str, path: str, **kwargs) -> int:  # type: ignore[no-untyped-def]
        return requests.request(method, url + path, headers={**bob, **kwargs.pop("headers", {})},
                                timeout=30, **kwargs).status_code

    params = {"name": private}
    assert status("GET", get, params=params) == 403
    assert status("GET", "/ajax-api/2.0/mlflow/registered-models/get", params=params) == 403
    # MLflow's handlers read a HEAD's JSON body, not its query: a HEAD naming the model only
    # in its query gets MLflow's own 400 (no name), one naming it in its body is decided.
    assert status("HEAD", get, params=params) == 400
    assert status("HEAD", get, json=params) == 403
    assert status("HEAD", get, params={"name": catalog["models"]["team-b"][0]},
                  json=params) == 403
    assert status("GET", "/" + get, params=params) == 404  # //api/...
    assert status("GET", get.replace("registered-models", "REGISTERED-MODELS"), params=params) == 404
    assert status("GET", get + ";", params=params) == 404
    assert status("GET", get.replace("/get", "%2Fget"), params=params) == 403  # decoded = canonical
    assert status("POST", get, json=params,
                  headers={"X-HTTP-Method-Override": "GET"}) in (400, 405)
    assert status("PUT", get, json=params) == 405
    # A body that names the field twice (snake and camel case) is refused, as MLflow does.
    assert status("GET", get, data='{"name": "x", "name": "%s"}' % private,
                  headers={"Content-Type": "application/json"}) == 403
    r = requests.options(url + get, timeout=30)
    assert r.status_code == 401
    assert status("GET", "/api/2.0/mlflow/no-such-endpoint") == 404


def test_errors_use_the_mlflow_envelope(share_server) -> None:  # type: ignore[no-untyped-def]
    for response, status, code in (
        (share_server.api("GET", f"{API}/experiments/get", params={"experiment_id": "0"}), 401,
         "UNAUTHENTICATED"),
        (share_server.api("GET", f"{API}/experiments/get", params={"experiment_id": "0"},
                          token=share_server.tokens["bob"]), 403, "PERMISSION_DENIED"),
        (share_server.api("GET", f"{API}/experiments/get", params={"experiment_id": "987654"},
                          token=share_server.tokens["bob"]), 404, "RESOURCE_DOES_NOT_EXIST"),
        (share_server.api("POST", "/api/2.0/mlflow-share/teams", auth=share_server.admin_auth(),
                          json={"name": "team-a"}), 409, "RESOURCE_CONFLICT"),
    ):
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error_code"] == code
        assert "SELECT" not in body["message"] and "/tmp" not in body["message"]
    garbage = share_server.api("GET", "/api/2.0/mlflow-share/whoami",
                               headers={"Authorization": "Basic !!!notbase64"})
    assert garbage.status_code == 401
    no_colon = base64.b64encode(b"admin").decode()
    assert share_server.api("GET", "/api/2.0/mlflow-share/whoami",
                            headers={"Authorization": f"Basic {no_colon}"}).status_code == 401


# Path-traversal payloads from MLflow's 2023-2026 advisories (CVE-2023-1177, -2356, -6014,
# -6018, -6831, -6909, -6974, -6975, -6976, -6977, CVE-2024-0520, -1483, -1558, -1560, -1594,
# -2928, -3848, -4263, CVE-2025-1474, -11200 ...): dot segments, encoded and double-encoded
# dots, absolute paths, backslashes, fragments and query tricks in paths and source URIs.
TRAVERSAL = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "/etc/passwd",
    "..\\..\\etc\\passwd",
    "model/../../../secret",
    "./model",
    "#/../../etc/passwd",
]


class _RawResponse:
    def __init__(self, status_code: int, text: str, url: str) -> None:
        self.status_code, self.text = status_code, text
        self.request = type("R", (), {"url": url})()


def _raw(server, method: str, path: str, token: str, body: bytes | None = None,  # type: ignore[no-untyped-def]
         content_type: str | None = None) -> _RawResponse:
    """Send ``method`` and ``path`` byte for byte: HTTP libraries would resolve ``..``."""
    import http.client
    from urllib.parse import urlsplit

    host = urlsplit(server.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode(errors="replace")
    connection.close()
    return _RawResponse(response.status, text, path)


@pytest.mark.parametrize("payload", TRAVERSAL)
def test_traversal_payloads_are_refused(share_server, payload) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import quote

    token = share_server.tokens["alice"]
    # A real experiment/run of alice's so that only the path decides.
    exp = share_server.api("POST", f"{API}/experiments/create", token=token,
                           json={"name": f"trav-{abs(hash(payload))}"}).json()["experiment_id"]
    run = share_server.api("POST", f"{API}/runs/create", token=token,
                           json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    quoted = quote(f"{exp}/{run}/artifacts/{payload}", safe="/%")
    responses = [
        _raw(share_server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{quoted}", token),
        _raw(share_server, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quoted}", token, b"x"),
        share_server.api("GET", "/api/2.0/mlflow-artifacts/artifacts", token=token,
                         params={"path": f"{exp}/{run}/artifacts/{payload}"}),
        share_server.api("GET", "/get-artifact", token=token,
                         params={"run_id": run, "path": payload}),
    ]
    model = f"trav-{abs(hash(payload))}"
    share_server.api("POST", f"{API}/registered-models/create", token=token, json={"name": model})
    responses.append(share_server.api(
        "POST", f"{API}/model-versions/create", token=token,
        json={"name": model, "source": f"mlflow-artifacts:/{exp}/{run}/artifacts/{payload}"}))
    responses.append(share_server.api(
        "POST", f"{API}/model-versions/create", token=token,
        json={"name": model, "source": f"runs:/{run}/{payload}"}))
    responses.append(share_server.api(
        "GET", "/model-versions/get-artifact", token=token,
        params={"name": model, "version": "1", "path": payload}))
    for response in responses:
        # 400 from mlflow-share or MLflow; 404 where the route cannot even match.
        assert response.status_code in (400, 404), (response.request.url, response.text)
        assert "root:" not in response.text
    assert not (share_server.artifacts.parent / "secret").exists()


@pytest.mark.parametrize("source", ["file:///etc", "/etc/passwd", "s3://bucket/x",
                                    "mlflow-artifacts://evil.example/x", "models:/../../x"])
def test_foreign_sources_are_refused(share_server, source, unique) -> None:  # type: ignore[no-untyped-def]
    token = share_server.tokens["alice"]
    model = f"src-{unique}"
    share_server.api("POST", f"{API}/registered-models/create", token=token, json={"name": model})
    response = share_server.api("POST", f"{API}/model-versions/create", token=token,
                                json={"name": model, "source": source})
    assert response.status_code in (400, 403, 404), response.text


@pytest.mark.parametrize("bad", ["viewer, team-b", "team-b)", "a(b", "x#y", "team-b ", " team-b",
                                 "", "a" * 129, "org", "with space", "semi;colon"])
def test_casbin_identifier_injection_is_refused(share_server, bad) -> None:  # type: ignore[no-untyped-def]
    admin = share_server.admin_auth()
    calls = [
        ("POST", "/teams", {"name": bad}),
        ("POST", "/users", {"name": bad, "password": "long-enough-password"}),
        ("POST", "/teams/members", {"team": "team-b", "user": bad, "role": "viewer"}),
        ("POST", "/teams/members", {"team": bad, "user": "carl", "role": "viewer"}),
        ("POST", "/teams/members", {"team": "team-b", "user": "carl", "role": bad}),
    ]
    if bad == "org":  # a valid user name, but reserved for teams (the org admin domain)
        calls = [calls[0], calls[3]]
    for method, path, body in calls:
        response = share_server.api(method, "/api/2.0/mlflow-share" + path, auth=admin, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    # No privilege was gained: carl is still only an engineer of team-c.
    me = share_server.api("GET", "/api/2.0/mlflow-share/whoami",
                          token=share_server.tokens["carl"]).json()
    assert me["teams"] == {"team-c": "engineer"}


def test_searches_without_a_scope_are_refused(share_server) -> None:  # type: ignore[no-untyped-def]
    token = share_server.tokens["bob"]
    for path, body in ((f"{API}/runs/search", {"experiment_ids": []}),
                       (f"{API}/logged-models/search", {"experiment_ids": []}),
                       ("/api/3.0/mlflow/traces/search", {"locations": []})):
        response = share_server.api("POST", path, token=token, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_review_findings_stay_fixed(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    """Bypasses found in review: each answer must be a refusal in the JSON envelope."""
    import json

    alice, bob = share_server.tokens["alice"], share_server.tokens["bob"]
    exp_a = share_server.api("POST", f"{API}/experiments/create", token=alice,
                             json={"name": f"rv-a-{unique}"}).json()["experiment_id"]
    run_a = share_server.api("POST", f"{API}/runs/create", token=alice,
                             json={"experiment_id": exp_a}).json()["run"]["info"]["run_id"]
    exp_b = share_server.api("POST", f"{API}/experiments/create", token=bob,
                             json={"name": f"rv-b-{unique}"}).json()["experiment_id"]
    run_b = share_server.api("POST", f"{API}/runs/create", token=bob,
                             json={"experiment_id": exp_b}).json()["run"]["info"]["run_id"]
    lm_a = share_server.api("POST", f"{API}/logged-models", token=alice,
                            json={"experiment_id": exp_a}).json()["model"]["info"]["model_id"]
    lm_b = share_server.api("POST", f"{API}/logged-models", token=bob,
                            json={"experiment_id": exp_b}).json()["model"]["info"]["model_id"]
    # 1. a lower-case method with the other team's id in the query and one's own in the body
    lower = _raw(share_server, "get", f"{API}/runs/get?run_id={run_a}", bob,
                 json.dumps({"run_id": run_b}).encode(), "application/json")
    # uvicorn's httptools parser refuses a lower-case method itself (400, before any app);
    # under h11 the request reaches the interceptor, which refuses it (405, in the envelope).
    assert lower.status_code in (400, 405)
    # 2. a path id and a different body id
    finalize = share_server.api("PATCH", f"{API}/logged-models/{lm_b}", token=bob,
                                json={"model_id": lm_a, "status": "LOGGED_MODEL_UPLOAD_FAILED"})
    assert finalize.status_code == 400, finalize.text
    # 3. metrics written into the other team's logged model
    metric = share_server.api("POST", f"{API}/runs/log-metric", token=bob, json={
        "run_id": run_b, "key": "acc", "value": 1.0, "timestamp": 1, "step": 0, "model_id": lm_a})
    assert metric.status_code == 403, metric.text
    batch = share_server.api("POST", f"{API}/runs/log-batch", token=bob, json={
        "run_id": run_b, "metrics": [{"key": "acc", "value": 1.0, "timestamp": 1, "step": 0,
                                      "model_id": lm_a}]})
    assert batch.status_code == 403, batch.text
    # 4. an artifact location chosen by the caller
    planted = share_server.api("POST", f"{API}/experiments/create", token=bob,
                               json={"name": f"rv-x-{unique}", "artifact_location": "/tmp/x"})
    assert planted.status_code == 400
    # 5. inputs that used to raise inside the decision: always a JSON envelope, never a 500
    for response in (
        share_server.api("POST", f"{API}/runs/log-metric", token=bob, data=b"[" * 200_000,
                         headers={"Content-Type": "application/json"}),
        share_server.api("GET", f"{API}/experiments/get", token=bob,
                         params={"experiment_id": "9" * 30}),
        _raw(share_server, "POST", f"{API}/runs/update", bob,
             b'{"run_id": "\\ud800", "status": "FINISHED"}', "application/json"),
    ):
        assert response.status_code in (400, 404), response.text
        assert "error_code" in json.loads(response.text)
    # 7. a model grant opens the source run's metadata, not its other files via /get-artifact
    model = f"rv-model-{unique}"
    share_server.api("POST", f"{API}/registered-models/create", token=alice, json={"name": model})
    share_server.api("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp_a}/{run_a}/artifacts/"
                     "secret.txt", token=alice, data=b"secret")
    share_server.api("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp_a}/{run_a}/artifacts/"
                     "model/MLmodel", token=alice, data=b"flavors: {}\n")
    share_server.api("POST", f"{API}/model-versions/create", token=alice,
                     json={"name": model, "source": f"runs:/{run_a}/model", "run_id": run_a})
    share_server.api("POST", "/api/2.0/mlflow-share/grants", token=alice,
                     json={"model": model, "team": "team-b", "permission": "read"})
    assert share_server.api("GET", f"{API}/runs/get", token=bob,
                            params={"run_id": run_a}).status_code == 200
    assert share_server.api("GET", "/get-artifact", token=bob,
                            params={"run_id": run_a, "path": "secret.txt"}).status_code == 403
    assert share_server.api("GET", f"{API}/artifacts/list", token=bob,
                            params={"run_id": run_a}).status_code == 403
    # 8. a logged model of one's own whose source run is the other team's: registering it
    #    made that run the version's lineage, which then opened the run (found in review)
    linked = share_server.api("POST", f"{API}/logged-models", token=bob,
                              json={"experiment_id": exp_b, "source_run_id": run_a})
    assert linked.status_code == 403, linked.text
    # 9. the other team's trace linked to one's own run
    trace_a = f"tr-{unique}{'0' * 24}"
    share_server.api("POST", "/api/3.0/mlflow/traces", token=alice, json={"trace": {
        "trace_info": {"trace_id": trace_a, "request_time": "2026-12-07T10:00:00Z",
                       "state": "OK", "trace_location": {
                           "type": "MLFLOW_EXPERIMENT",
                           "mlflow_experiment": {"experiment_id": exp_a}}}}})
    link = share_server.api("POST", f"{API}/traces/link-to-run", token=bob,
                            json={"trace_ids": [trace_a], "run_id": run_b})
    assert link.status_code == 403, link.text
    # 10. a folder asked for as a file: a 400, and no descriptor left open each time
    share_server.api("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{exp_b}/{run_b}/artifacts/"
                     "f.txt", token=bob, data=b"x")
    for _ in range(3):
        folder = share_server.api("GET", f"/api/2.0/mlflow-artifacts/artifacts/{exp_b}/{run_b}",
                                  token=bob)
        assert folder.status_code == 400, folder.text
