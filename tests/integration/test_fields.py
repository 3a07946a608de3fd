"""Field-complete decisions against a live server: every ID, location and reserved tag a
request carries is decided, on the value MLflow reads, and odd input gets a 4xx envelope.

Team A is aaron (engineer) and alice (maintainer); team B is bea (engineer). Each test
builds what it needs through the stock client or plain HTTP, then attacks as team B.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"


def _call(server: Any, user: str, method: str, path: str, **kwargs: Any) -> Any:
    return server.api(method, path, token=server.tokens[user], **kwargs)


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _experiment(server: Any, user: str) -> str:
    return str(_ok(_call(server, user, "POST", f"{API}/experiments/create",
                         json={"name": f"fields-{uuid.uuid4().hex[:8]}"}))["experiment_id"])


def _run(server: Any, user: str, experiment_id: str) -> str:
    run = _ok(_call(server, user, "POST", f"{API}/runs/create",
                    json={"experiment_id": experiment_id}))
    return str(run["run"]["info"]["run_id"])


def _trace(server: Any, user: str, experiment_id: str, trace_id: str | None = None,
           **trace_info: Any) -> Any:
    trace_id = trace_id or f"tr-{uuid.uuid4().hex}"
    info = {"trace_id": trace_id, "trace_location": {
        "type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
        "request_time": "2026-12-07T10:00:00Z", "state": "OK", **trace_info}
    return _call(server, user, "POST", f"{API3}/traces", json={"trace": {"trace_info": info}})


def _error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    if code is not None:
        assert body["error_code"] == code, body
    for internal in ("SQL", "sqlalchemy", "sqlite3", "psycopg", "Traceback"):
        assert internal not in body["message"], body
    return str(body["message"])


def test_a_logged_model_cannot_link_another_teams_run(share_server) -> None:  # type: ignore[no-untyped-def]
    secret_run = _run(share_server, "aaron", _experiment(share_server, "aaron"))
    own = _experiment(share_server, "bea")
    # Creating the link is refused...
    refused = _call(share_server, "bea", "POST", f"{API}/logged-models",
                    json={"experiment_id": own, "source_run_id": secret_run})
    _error(refused, 403, "PERMISSION_DENIED")
    # ...and a version never takes another team's run as its lineage, however it is named.
    model = f"fields-{uuid.uuid4().hex[:8]}"
    _ok(_call(share_server, "bea", "POST", f"{API}/registered-models/create",
              json={"name": model}))
    for body in ({"source": f"runs:/{secret_run}/model"},
                 {"source": f"runs:/{secret_run}/model", "run_id": secret_run}):
        _error(_call(share_server, "bea", "POST", f"{API}/model-versions/create",
                     json={"name": model, **body}), 403)
    _error(_call(share_server, "bea", "GET", f"{API}/runs/get",
                 params={"run_id": secret_run}), 403)


def test_traces_are_decided_by_what_they_name(share_server) -> None:  # type: ignore[no-untyped-def]
    theirs = _experiment(share_server, "aaron")
    trace_id = f"tr-{uuid.uuid4().hex}"
    _ok(_trace(share_server, "aaron", theirs, trace_id))
    own = _experiment(share_server, "bea")
    own_run = _run(share_server, "bea", own)
    # Taking the trace over by starting it again in one's own experiment.
    _error(_trace(share_server, "bea", own, trace_id), 403)
    # Linking it to one's own run.
    _error(_call(share_server, "bea", "POST", f"{API}/traces/link-to-run",
                 json={"trace_ids": [trace_id], "run_id": own_run}), 403)
    # Pointing a trace's data at another trace's folder, or at a file on the server.
    folder = f"{share_server.artifacts}/{theirs}/traces/{trace_id}/artifacts"
    for location in (folder, "file:///etc"):
        _error(_trace(share_server, "bea", own, tags={"mlflow.artifactLocation": location}), 400)
    mine = f"tr-{uuid.uuid4().hex}"
    _ok(_trace(share_server, "bea", own, mine))
    _error(_call(share_server, "bea", "PATCH", f"{API3}/traces/{mine}/tags",
                 json={"key": "mlflow.artifactLocation", "value": folder}), 400)
    # Linking a trace to another team's run through its metadata.
    secret_run = _run(share_server, "aaron", theirs)
    _error(_trace(share_server, "bea", own,
                  trace_metadata={"mlflow.sourceRun": secret_run}), 403)
    # A trace ID is never a path: MLflow builds the trace's folder from it.
    for planted in (f"../../{theirs}/traces/{trace_id}", f"x/../../../{theirs}/traces/{trace_id}"):
        _error(_trace(share_server, "bea", own, planted), 400)
        _error(_call(share_server, "bea", "GET", "/ajax-api/2.0/mlflow/get-trace-artifact",
                     params={"request_id": planted}), 400)
    # The owner may start its own trace again (MLflow's upsert), in the same experiment.
    _ok(_trace(share_server, "aaron", theirs, trace_id))
    _error(_trace(share_server, "aaron", _experiment(share_server, "aaron"), trace_id), 409)


def test_a_trace_whose_location_was_planted_is_not_served(share_server) -> None:  # type: ignore[no-untyped-def]
    """A tag written before this check existed (here: straight into the database) is not
    followed: data is served only from the folder the server derives."""
    own = _experiment(share_server, "bea")
    trace_id = f"tr-{uuid.uuid4().hex}"
    _ok(_trace(share_server, "bea", own, trace_id))
    engine = sa.create_engine(share_server.backend_uri)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE trace_tags SET value = 'file:///etc' WHERE "
                                 "request_id = :t AND key = 'mlflow.artifactLocation'"),
                         {"t": trace_id})
    finally:
        engine.dispose()
    _error(_call(share_server, "bea", "GET", "/ajax-api/2.0/mlflow/get-trace-artifact",
                 params={"request_id": trace_id}), 403)
    _error(_call(share_server, "bea", "GET", f"{API3}/traces/get",
                 params={"trace_id": trace_id}), 403)


def test_the_value_mlflow_reads_is_the_one_decided(share_server) -> None:  # type: ignore[no-untyped-def]
    secret_run = _run(share_server, "aaron", _experiment(share_server, "aaron"))
    own_run = _run(share_server, "bea", _experiment(share_server, "bea"))
    get = f"{API}/runs/get"
    # HEAD: MLflow reads the body, whatever the query says.
    head = _call(share_server, "bea", "HEAD", get, params={"run_id": own_run},
                 json={"run_id": secret_run})
    assert head.status_code == 403
    # GET with a query: MLflow reads the query, whatever the body says.
    assert _call(share_server, "bea", "GET", get, params={"run_id": own_run},
                 json={"run_id": secret_run}).status_code == 200
    # A metric that names another team's logged model, inside an own run's batch.
    theirs = _experiment(share_server, "aaron")
    logged = _ok(_call(share_server, "aaron", "POST", f"{API}/logged-models",
                       json={"experiment_id": theirs}))["model"]["info"]["model_id"]
    _error(_call(share_server, "bea", "POST", f"{API}/runs/log-batch", json={
        "run_id": own_run, "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": 0,
                                        "model_id": logged}]}), 403)
    # A run nested under another team's run, at creation or afterwards.
    _error(_call(share_server, "bea", "POST", f"{API}/runs/set-tag", json={
        "run_id": own_run, "key": "mlflow.parentRunId", "value": secret_run}), 403)
    _error(_call(share_server, "bea", "POST", f"{API}/runs/create", json={
        "experiment_id": _experiment(share_server, "bea"),
        "tags": [{"key": "mlflow.parentRunId", "value": secret_run}]}), 403)


def test_reserved_tags_are_the_servers(share_server) -> None:  # type: ignore[no-untyped-def]
    own = _experiment(share_server, "bea")
    own_run = _run(share_server, "bea", own)
    for path, body in (
        (f"{API}/runs/set-tag", {"run_id": own_run, "key": "mlflow_share.identity", "value": "x"}),
        (f"{API}/experiments/set-experiment-tag",
         {"experiment_id": own, "key": "mlflow-share.team", "value": "team-a"}),
        (f"{API}/runs/create", {"experiment_id": own,
                                "tags": [{"key": "mlflow_share.semver", "value": "9.9.9"}]}),
    ):
        _error(_call(share_server, "bea", "POST", path, json=body), 409, "RESOURCE_CONFLICT")


def test_a_protected_alias_reserves_its_look_alikes(share_server) -> None:  # type: ignore[no-untyped-def]
    model = f"fields-{uuid.uuid4().hex[:8]}"
    _ok(_call(share_server, "alice", "POST", f"{API}/registered-models/create",
              json={"name": model}))
    experiment = _experiment(share_server, "alice")
    run = _run(share_server, "alice", experiment)
    share_server.api("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/"
                     "model/MLmodel", token=share_server.tokens["alice"], data=b"flavors: {}\n")
    _ok(_call(share_server, "alice", "POST", f"{API}/model-versions/create",
              json={"name": model, "source": f"runs:/{run}/model", "run_id": run}))
    deadline = time.monotonic() + 60
    while _ok(_call(share_server, "alice", "GET", f"{API}/model-versions/get",
                    params={"name": model, "version": "1"}))["model_version"]["status"] != "READY":
        assert time.monotonic() < deadline, "the version never became READY"
        time.sleep(0.2)
    _ok(_call(share_server, "alice", "POST", "/api/2.0/mlflow-share/aliases/protect",
              json={"model": model, "alias": "champion"}))
    for look_alike in ("Champion", "CHAMPION", "ch\u0430mpion", "\uff43hampion"):
        message = _error(_call(share_server, "aaron", "POST", f"{API}/registered-models/alias",
                               json={"name": model, "alias": look_alike, "version": "1"}), 409)
        assert "champion" in message
    # mlflow-share's own alias routes set aliases through the same store: the same refusal,
    # for the owner team's maintainer too.
    share = "/api/2.0/mlflow-share/aliases"
    for user, look_alike in (("alice", "Champion"), ("alice", "champi\u03bfn"),
                             ("aaron", "ch\u0430mpion")):
        body = {"model": model, "alias": look_alike, "version": 1}
        for route, extra in (("move", {}), ("rollback", {"reason": "spoof", "to_version": 1})):
            message = _error(_call(share_server, user, "POST", f"{share}/{route}",
                                   json={**body, **extra}), 409)
            assert "looks like the protected alias 'champion'" in message, (route, message)
    _ok(_call(share_server, "aaron", "POST", f"{API}/registered-models/alias",
              json={"name": model, "alias": "challenger", "version": "1"}))


def test_odd_input_gets_a_4xx_envelope(share_server) -> None:  # type: ignore[no-untyped-def]
    own = _experiment(share_server, "bea")
    run = _run(share_server, "bea", own)
    # MLflow's own answer for what MLflow refuses as malformed (same words as stock).
    message = _error(_call(share_server, "bea", "GET", f"{API}/runs/get",
                           json={"run_id": 5}), 400, "INVALID_PARAMETER_VALUE")
    assert "Invalid value 5 for parameter 'run_id'" in message
    _error(_call(share_server, "bea", "GET", f"{API}/runs/get",
                 params={"run_id": "file:///etc/passwd"}), 400, "INVALID_PARAMETER_VALUE")
    for user in ("bea", "admin"):
        response = share_server.api("GET", f"{API}/experiments/get",
                                    params={"experiment_id": str(2**70)},
                                    **({"auth": share_server.admin_auth()} if user == "admin"
                                       else {"token": share_server.tokens[user]}))
        _error(response, 400, "INVALID_PARAMETER_VALUE")
    # A name in use: MLflow's own message carries the driver's SQL; the client sees none.
    name = f"fields-{uuid.uuid4().hex[:8]}"
    _ok(_call(share_server, "bea", "POST", f"{API}/experiments/create", json={"name": name}))
    _error(_call(share_server, "bea", "POST", f"{API}/experiments/create", json={"name": name}),
           400)
    # A folder asked for as a file, an over-long artifact name, a deep body.
    folder = f"/api/2.0/mlflow-artifacts/artifacts/{own}/{run}"
    assert _call(share_server, "bea", "PUT", f"{folder}/artifacts/f.txt", data=b"x").ok
    for _ in range(3):
        _error(_call(share_server, "bea", "GET", folder), 400)
    _error(_call(share_server, "bea", "PUT", f"{folder}/artifacts/{'x' * 5000}", data=b"x"), 400)
    deep = "[" * 5000 + "]" * 5000
    _error(_call(share_server, "bea", "POST", f"{API}/runs/log-batch",
                 data=json.dumps({"run_id": run})[:-1] + f', "x": {deep}}}',
                 headers={"Content-Type": "application/json"}), 400)
    _error(_trace(share_server, "bea", own, trace_location={"type": "UC_SCHEMA"}), 400)


def test_a_graphql_refusal_is_audited_as_a_denial(share_server) -> None:  # type: ignore[no-untyped-def]
    theirs = _experiment(share_server, "aaron")
    request_id = f"gql-{uuid.uuid4().hex[:12]}"
    query = '{ mlflowGetExperiment(input: {experimentId: "%s"}) { experiment { name } } }' % theirs
    answer = _call(share_server, "bea", "POST", "/graphql", json={"query": query},
                   headers={"X-Request-Id": request_id})
    assert "Permission denied" in answer.json()["errors"][0]
    engine = sa.create_engine(share_server.backend_uri)
    try:
        with engine.connect() as conn:
            decisions = conn.execute(sa.text(
                "SELECT decision FROM share_audit_events WHERE request_id = :r"),
                {"r": request_id}).scalars().all()
    finally:
        engine.dispose()
    assert decisions == ["deny"]
    _error(_call(share_server, "bea", "POST", "/graphql", json={"query": "{"}), 400)


def test_review_round_two(share_server) -> None:  # type: ignore[no-untyped-def]
    """Found by the second adversarial review: each is a 4xx in the envelope."""
    theirs = _experiment(share_server, "aaron")
    name = _ok(_call(share_server, "aaron", "GET", f"{API}/experiments/get",
                     params={"experiment_id": theirs}))["experiment"]["name"]
    # Another team's experiment name answers like a missing one (no probing of names).
    hidden = _call(share_server, "bea", "GET", f"{API}/experiments/get-by-name",
                   params={"experiment_name": name})
    missing = _call(share_server, "bea", "GET", f"{API}/experiments/get-by-name",
                    params={"experiment_name": f"{name}-none"})
    assert _error(hidden, 404) == f"Could not find experiment with name '{name}'"
    _error(missing, 404)
    own = _experiment(share_server, "bea")
    run = _run(share_server, "bea", own)
    # Paths no file system takes, through MLflow's own Flask routes.
    _error(_call(share_server, "bea", "GET", "/get-artifact",
                 params={"run_id": run, "path": "x" * 5000}), 400)
    _error(_call(share_server, "bea", "GET", "/get-artifact",
                 params={"run_id": run, "path": f"{'y' * 300}/f"}), 400)
    # Version numbers past the database's integers.
    model = f"fields-{uuid.uuid4().hex[:8]}"
    _ok(_call(share_server, "bea", "POST", f"{API}/registered-models/create", json={"name": model}))
    _error(_call(share_server, "bea", "GET", "/model-versions/get-artifact",
                 params={"name": model, "version": "9" * 20, "path": "MLmodel"}), 400)
    _error(_call(share_server, "bea", "POST", f"{API}/model-versions/create",
                 json={"name": model, "source": f"models:/{model}/{'9' * 20}"}), 400)
    # A client-chosen assessment ID that is in use (a 500 and an oracle before).
    trace_id = f"tr-{uuid.uuid4().hex}"
    _ok(_trace(share_server, "bea", own, trace_id))
    assessment = {"assessment_name": "q", "trace_id": trace_id,
                  "source": {"source_type": "HUMAN", "source_id": "bea"},
                  "feedback": {"value": 1}}
    made = _ok(_call(share_server, "bea", "POST", f"{API3}/traces/{trace_id}/assessments",
                     json={"assessment": assessment}))
    used = made["assessment"]["assessment_id"]
    _error(_call(share_server, "bea", "POST", f"{API3}/traces/{trace_id}/assessments",
                 json={"assessment": {**assessment, "assessment_id": used}}), 409)


def test_missing_entities_get_mlflows_own_answer(share_server) -> None:  # type: ignore[no-untyped-def]
    """Run and logged model IDs are the server's: a missing one is left to MLflow, which
    answers in its own words (found by running MLflow's REST tests through mlflow-share)."""
    history = _call(share_server, "bea", "GET", f"{API}/metrics/get-history",
                    params={"run_id": "nope", "metric_key": "m"})
    assert history.status_code == 200 and history.json().get("metrics", []) == []
    run = _call(share_server, "bea", "GET", f"{API}/runs/get", params={"run_id": "nope"})
    assert _error(run, 404, "RESOURCE_DOES_NOT_EXIST") == "Run with id=nope not found"
    logged = _call(share_server, "bea", "GET", f"{API}/logged-models/m-nope")
    assert _error(logged, 404) == "Logged model with ID 'm-nope' not found."
    trace = _call(share_server, "bea", "GET", f"{API3}/traces/tr-nope")
    assert _error(trace, 404) == "Trace with ID 'tr-nope' not found."
    experiment = _call(share_server, "bea", "GET", f"{API}/experiments/get",
                       params={"experiment_id": "abc"})
    assert _error(experiment, 400) == ("Invalid experiment ID 'abc'. Experiment ID must be a "
                                       "valid integer.")


def test_hand_written_routes_refuse_missing_fields_in_mlflows_words(share_server) -> None:  # type: ignore[no-untyped-def]
    promptlab = _call(share_server, "bea", "POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run",
                      json={})
    assert _error(promptlab, 400) == "CreatePromptlabRun request must specify experiment_id."
    upload = _call(share_server, "bea", "POST", "/ajax-api/2.0/mlflow/upload-artifact",
                   params={"path": "f.txt"}, data=b"x")
    assert _error(upload, 400) in (
        "Request must specify run_uuid.",  # MLflow 3.16 and 3.17
        "Request must specify run_id or run_uuid.")  # MLflow 3.18


def test_every_run_an_upload_names_is_decided_whichever_mlflow_reads(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    """MLflow 3.18's ajax upload reads run_id before run_uuid, older versions run_uuid only:
    each run a request names must be writable, so no version writes into another team's run."""
    def run_of(user: str) -> str:
        experiment = _ok(_call(share_server, user, "POST", f"{API}/experiments/create",
                               json={"name": f"upload-{user}-{unique}"}))["experiment_id"]
        return str(_ok(_call(share_server, user, "POST", f"{API}/runs/create",
                             json={"experiment_id": experiment}))["run"]["info"]["run_id"])

    theirs, mine = run_of("alice"), run_of("bea")
    upload = "/ajax-api/2.0/mlflow/upload-artifact"
    for params in ({"run_id": theirs, "run_uuid": mine}, {"run_id": mine, "run_uuid": theirs},
                   {"run_id": theirs}, {"run_uuid": theirs}):
        refused = _call(share_server, "bea", "POST", upload, data=b"x",
                        params={**params, "path": "f.txt"})
        _error(refused, 403, "PERMISSION_DENIED")
    assert _call(share_server, "bea", "POST", upload, data=b"x",
                 params={"run_uuid": mine, "path": "f.txt"}).status_code == 200


def test_presigned_downloads_are_for_org_admins_only(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    """MLflow 3.18 answers ?presigned=true with a storage URL instead of the bytes: that would
    skip the digest check, so only org admins may ask (as for MLflow's presigned-URL API)."""
    name = f"presigned-{unique}"
    _ok(_call(share_server, "alice", "POST", f"{API}/registered-models/create",
              json={"name": name}))
    refused = _call(share_server, "alice", "GET", "/model-versions/get-artifact",
                    params={"name": name, "version": "1", "path": "MLmodel",
                            "presigned": "true"})
    assert "digest check" in _error(refused, 403, "PERMISSION_DENIED")
    logged = _call(share_server, "alice", "GET",
                   "/ajax-api/2.0/mlflow/logged-models/m-nope/artifacts/files",
                   params={"artifact_file_path": "MLmodel", "presigned": "true"})
    assert logged.status_code in (403, 404)  # refused, or no such model: never a URL
