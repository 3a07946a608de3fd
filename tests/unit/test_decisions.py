"""The decision table of the interceptor: ``IncomingRequest`` → ``Decision`` on a real SQLite
database (MLflow's schema and mlflow-share's), the real policy engine and MLflow's own request
parsing, without a server. One row per resolver and per entity field, for the owner team, another
team, a granted team, an org admin and a caller without credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from mlflow_share import db
from mlflow_share.auth.contract import Contract
from mlflow_share.auth.interceptor import IncomingRequest, Interceptor
from mlflow_share.auth.resolvers import MlflowLookups
from mlflow_share.directory import EXPERIMENT, MODEL, Directory
from mlflow_share.policy.enforcer import PolicyEngine
from mlflow_share.policy.routes import RouteTable

PASSWORD = "a-long-enough-password"
API, API3 = "/api/2.0/mlflow", "/api/3.0/mlflow"


@dataclass
class World:
    interceptor: Interceptor
    tokens: dict[str, str]
    ids: dict[str, str]

    def decide(self, user: str | None, method: str, path: str, query: dict[str, Any] | None = None,
               body: dict[str, Any] | None = None) -> int:
        """The answer's status: 200 when allowed."""
        path = path.format(**self.ids)
        query = {k: str(v).format(**self.ids) for k, v in (query or {}).items()}
        headers = {"content-type": "application/json", "host": "localhost"}
        if user is not None:
            headers["authorization"] = f"Bearer {self.tokens[user]}"
        request = IncomingRequest(method=method, path=path, raw_path=path,
                                  query=MultiDict(query), headers=headers,
                                  body=_fill(body, self.ids) if body is not None else None)
        match = self.interceptor.match(request)
        assert not hasattr(match, "allowed"), f"{method} {path} is not routed"
        decision = self.interceptor.decide(request, match)  # type: ignore[arg-type]
        return 200 if decision.allowed else decision.status


def _fill(body: dict[str, Any], ids: dict[str, str]) -> bytes:
    text = json.dumps(body)
    for key, value in ids.items():
        text = text.replace("{" + key + "}", value)
    return text.encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from mlflow.entities import TraceInfo, TraceLocation, TraceState
    from mlflow.server import app
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("decisions")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    store = SqlAlchemyStore(uri, str(folder / "artifacts"))
    registry = RegistryStore(uri)
    engine = db.get_engine(uri)
    db.create_schema(engine)
    directory = Directory(engine)
    tokens: dict[str, str] = {}
    for team in ("team-a", "team-b", "team-c"):
        directory.create_team(team)
    for user, team in (("en", "team-a"), ("be", "team-b"), ("ce", "team-c")):
        directory.create_user(user, PASSWORD)
        directory.add_member(team, user, "engineer")
        tokens[user] = directory.create_token(user).token
    directory.create_user("root", PASSWORD, admin=True)
    tokens["root"] = directory.create_token("root").token

    ids: dict[str, str] = {}
    for team, suffix in (("team-a", "a"), ("team-b", "b")):
        experiment = store.create_experiment(f"exp-{suffix}")
        directory.record_owner(EXPERIMENT, experiment, team, "en")
        created = store.create_run(experiment, "u", 0, [], f"run-{suffix}").info
        run = created.run_id
        ids[f"run_uri_{suffix}"] = created.artifact_uri
        logged = store.create_logged_model(experiment_id=experiment, source_run_id=run).model_id
        trace = f"tr-{suffix * 8}"
        store.start_trace(TraceInfo(trace_id=trace, request_time=0, state=TraceState.OK,
                                    trace_location=TraceLocation.from_experiment_id(experiment),
                                    execution_duration=0))
        registry.create_registered_model(f"model-{suffix}")
        model_id = directory.record_owner(MODEL, None, team, "en", name=f"model-{suffix}")
        ids.update({f"exp_{suffix}": experiment, f"run_{suffix}": run,
                    f"lm_{suffix}": logged, f"trace_{suffix}": trace,
                    f"model_{suffix}": f"model-{suffix}", f"model_id_{suffix}": model_id})
    directory.grant(MODEL, ids["model_id_a"], "team-c", "read", "root")
    directory.grant(EXPERIMENT, ids["exp_a"], "team-c", "read", "root")

    policy = PolicyEngine(engine, password_cache_seconds=0)
    lookups = MlflowLookups(engine)
    interceptor = Interceptor(RouteTable(app), policy, directory, lookups, None, Contract(app))
    yield World(interceptor, tokens, ids)
    engine.dispose()


# (name, method, path, query, body, {user: status}); users: en owner team, be other team,
# ce granted read, root admin, None no credentials.
ROWS: list[tuple[str, str, str, dict[str, Any] | None, dict[str, Any] | None,
                 dict[str | None, int]]] = [
    # primary resources, one per resolver
    ("experiment", "GET", f"{API}/experiments/get", {"experiment_id": "{exp_a}"}, None,
     {"en": 200, "be": 403, "ce": 200, "root": 200, None: 401}),
    ("experiments", "POST", f"{API}/runs/search", None, {"experiment_ids": ["{exp_a}"]},
     {"en": 200, "be": 403, "ce": 200, "root": 200}),
    ("experiment by name (hidden answers as missing)", "GET", f"{API}/experiments/get-by-name",
     {"experiment_name": "exp-a"}, None, {"en": 200, "be": 404, "ce": 200, "root": 200}),
    ("run", "GET", f"{API}/runs/get", {"run_id": "{run_a}"}, None,
     {"en": 200, "be": 403, "ce": 200, "root": 200, None: 401}),
    ("runs", "GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
     {"run_ids": "{run_a}", "metric_key": "m"}, None, {"en": 200, "be": 403, "root": 200}),
    ("logged model", "GET", API + "/logged-models/{lm_a}", None, None,
     {"en": 200, "be": 403, "ce": 200, "root": 200}),
    ("trace", "GET", API3 + "/traces/{trace_a}", None, None,
     {"en": 200, "be": 403, "ce": 200, "root": 200}),
    ("traces", "GET", f"{API3}/traces/batchGet", {"trace_ids": "{trace_a}"}, None,
     {"en": 200, "be": 403, "root": 200}),
    ("registered model", "GET", f"{API}/registered-models/get", {"name": "{model_a}"}, None,
     {"en": 200, "be": 403, "ce": 200, "root": 200, None: 401}),
    ("model write", "PATCH", f"{API}/registered-models/update", None,
     {"name": "{model_a}", "description": "x"}, {"en": 200, "be": 403, "ce": 403, "root": 200}),
    ("alias", "POST", f"{API}/registered-models/alias", None,
     {"name": "{model_a}", "alias": "c", "version": "1"}, {"en": 200, "be": 403, "root": 200}),
    ("trace start", "POST", f"{API3}/traces", None,
     {"trace": {"trace_info": {"trace_id": "tr-new1", "request_time": "2026-01-01T00:00:00Z",
                               "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                  "mlflow_experiment": {"experiment_id":
                                                                        "{exp_a}"}}}}},
     {"en": 200, "be": 403, "root": 200}),
    ("artifact", "GET", "/api/2.0/mlflow-artifacts/artifacts/{exp_a}/{run_a}/artifacts/f",
     None, None, {"en": 200, "be": 403, "root": 200}),
    # secondary fields, decided on the value MLflow reads
    ("HEAD reads the body", "HEAD", f"{API}/runs/get", {"run_id": "{run_b}"},
     {"run_id": "{run_a}"}, {"be": 403, "en": 200}),
    ("GET with a query reads the query", "GET", f"{API}/runs/get", {"run_id": "{run_b}"},
     {"run_id": "{run_a}"}, {"be": 200}),
    ("a logged model's source run", "POST", f"{API}/logged-models", None,
     {"experiment_id": "{exp_b}", "source_run_id": "{run_a}"}, {"be": 403, "root": 200}),
    ("a version's source run", "POST", f"{API}/model-versions/create", None,
     {"name": "{model_b}", "source": "runs:/{run_a}/model"}, {"be": 403, "root": 200}),
    ("a version's run_id", "POST", f"{API}/model-versions/create", None,
     {"name": "{model_b}", "source": "runs:/{run_b}/model", "run_id": "{run_a}"},
     {"be": 403}),
    ("a raw source under the request's own run", "POST", f"{API}/model-versions/create", None,
     {"name": "{model_a}", "source": "{run_uri_a}/model", "run_id": "{run_a}"},
     {"en": 200, "be": 403, "root": 200}),
    ("a raw source under another run than the one named", "POST",
     f"{API}/model-versions/create", None,
     {"name": "{model_b}", "source": "{run_uri_a}/model", "run_id": "{run_b}"}, {"be": 400}),
    ("a raw source with no run named", "POST", f"{API}/model-versions/create", None,
     {"name": "{model_b}", "source": "{run_uri_b}/model"}, {"be": 400, "root": 200}),
    ("a version's logged model (and its source run)", "POST", f"{API}/model-versions/create",
     None, {"name": "{model_b}", "source": "models:/{lm_a}"}, {"be": 403}),
    ("another registered version as source", "POST", f"{API}/model-versions/create", None,
     {"name": "{model_b}", "source": "models:/{model_a}@champion"}, {"be": 403}),
    ("a metric's logged model", "POST", f"{API}/runs/log-batch", None,
     {"run_id": "{run_b}", "metrics": [{"key": "m", "value": 1, "timestamp": 1,
                                        "model_id": "{lm_a}"}]}, {"be": 403}),
    ("linked traces", "POST", f"{API}/traces/link-to-run", None,
     {"trace_ids": ["{trace_a}"], "run_id": "{run_b}"}, {"be": 403, "root": 200}),
    ("a trace upsert into another experiment", "POST", f"{API3}/traces", None,
     {"trace": {"trace_info": {"trace_id": "{trace_a}", "request_time": "2026-01-01T00:00:00Z",
                               "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                  "mlflow_experiment": {"experiment_id":
                                                                        "{exp_b}"}}}}},
     {"be": 403, "en": 403, "root": 409}),
    ("trace metadata naming a run", "POST", f"{API3}/traces", None,
     {"trace": {"trace_info": {"trace_id": "tr-new2", "request_time": "2026-01-01T00:00:00Z",
                               "trace_metadata": {"mlflow.sourceRun": "{run_a}"},
                               "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                  "mlflow_experiment": {"experiment_id":
                                                                        "{exp_b}"}}}}},
     {"be": 403}),
    ("a parent run", "POST", f"{API}/runs/set-tag", None,
     {"run_id": "{run_b}", "key": "mlflow.parentRunId", "value": "{run_a}"}, {"be": 403}),
    ("a trace location tag", "PATCH", API3 + "/traces/{trace_b}/tags", None,
     {"key": "mlflow.artifactLocation", "value": "file:///etc"}, {"be": 400, "root": 400}),
    ("mlflow-share's own tag", "POST", f"{API}/runs/set-tag", None,
     {"run_id": "{run_b}", "key": "mlflow_share.identity", "value": "x"}, {"be": 409}),
    ("a trace ID that is a path", "POST", f"{API3}/traces", None,
     {"trace": {"trace_info": {"trace_id": "../../1/traces/x",
                               "request_time": "2026-01-01T00:00:00Z",
                               "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                  "mlflow_experiment": {"experiment_id":
                                                                        "{exp_b}"}}}}},
     {"be": 400}),
    # MLflow's own contract first
    ("a wrong type gets MLflow's answer", "GET", f"{API}/runs/get", None, {"run_id": 5},
     {"be": 400, "root": 400}),
    ("a missing run is MLflow's to answer", "GET", f"{API}/metrics/get-history",
     {"run_id": "nope", "metric_key": "m"}, None, {"be": 200}),
]


@pytest.mark.parametrize("name,method,path,query,body,expected", ROWS,
                         ids=[row[0] for row in ROWS])
def test_decision_table(world: World, name: str, method: str, path: str,
                        query: dict[str, Any] | None, body: dict[str, Any] | None,
                        expected: dict[str | None, int]) -> None:
    got = {user: world.decide(user, method, path, query, body) for user in expected}
    assert got == expected
