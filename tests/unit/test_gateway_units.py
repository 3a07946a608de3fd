"""The gateway's service without a server: a real SQLite database (MLflow's registry schema and
mlflow-share's), the real policy engine and the real queries, with a fake inference backend in
place of onnxruntime. Routing, refusals, the fallback to a verified version, rate limits and
the fast path, each checked on the service's own calls."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from mlflow_share import config, db
from mlflow_share.audit.log import AuditContext
from mlflow_share.directory import MODEL, Directory
from mlflow_share.errors import (
    DataLoss,
    InvalidInput,
    MlflowShareError,
    NotFound,
    PermissionDenied,
    TooMany,
)
from mlflow_share.gateway.backend import InferenceBackend, LoadedModel, TensorSpec
from mlflow_share.gateway.models import resolve_alias
from mlflow_share.gateway.service import Gateway, Labels, RateLimiter
from mlflow_share.gateway.usage import usage_rows
from mlflow_share.mlflow_compat import tables as mt
from mlflow_share.policy.enforcer import PolicyEngine

PASSWORD = "a-long-enough-password"
JSON = "application/json"
BODY = b'{"inputs": [[0.1, 0.2], [0.3, 0.4]]}'


class FakeBackend:
    """Versions that predict their own number, one per row; a version in ``refused`` fails
    to load (as a tampered or code-carrying one would), and a NaN input fails to run."""

    def __init__(self, identities: dict[tuple[str, int], str]) -> None:
        self.identities = identities  # what the version's verified manifest would say
        self.refused: dict[tuple[str, int], MlflowShareError] = {}
        self.loads: list[tuple[str, int]] = []

    def load(self, name: str, version: int) -> LoadedModel:
        self.loads.append((name, version))
        if (name, version) in self.refused:
            raise self.refused[(name, version)]
        return LoadedModel(name, version, f"id-{name}", self.identities[(name, version)],
                           session=None, inputs=[TensorSpec("X", np.float32, (None, 2),
                                                            "tensor(float)")],
                           outputs=["version"], size=100)

    def run(self, model: LoadedModel, feeds: dict[str, np.ndarray]) -> list[Any]:
        rows = feeds["X"]
        if not np.isfinite(rows).all():
            raise ValueError("the fake runtime takes no NaN")
        return [np.full(len(rows), model.version, dtype=np.int64)]

    def versions(self) -> dict[str, str]:
        return {"fake": "1"}


class Recorder:
    """An audit appender that keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any], attempts: int = 6) -> int:
        self.events.append(row)
        return len(self.events)

    def actions(self) -> list[str]:
        return [event["action"] for event in self.events]


@dataclass
class World:
    engine: sa.Engine
    registry: Any  # MLflow's SqlAlchemyStore for the model registry
    directory: Directory
    tokens: dict[str, str]
    identities: dict[tuple[str, int], str] = field(default_factory=dict)

    def header(self, user: str) -> str:
        return f"Bearer {self.tokens[user]}"

    def model(self, name: str) -> str:
        """A registered model owned by team-a; its mlflow-share ID."""
        self.registry.create_registered_model(name)
        return self.directory.record_owner(MODEL, None, "team-a", "en", name=name)

    def version(self, name: str, manifest: bool = True) -> int:
        """A new version stored under the proxied root, with a recorded manifest unless
        ``manifest`` is False (then it has no identity: never served)."""
        count = len([key for key in self.identities if key[0] == name]) + 1
        location = f"models/{name}/{count}"
        created = self.registry.create_model_version(name, f"mlflow-artifacts:/{location}")
        version = int(created.version)
        if manifest:
            identity = f"identity-{name}-{version}"
            with self.engine.begin() as conn:
                conn.execute(db.model_manifests.insert().values(
                    model_id=f"id-{name}", version=version, name=name, location=location,
                    manifest="{}", manifest_sha256="0" * 64, identity=identity,
                    created_at=db.now_ms()))
            self.identities[(name, version)] = identity
        else:
            self.identities[(name, version)] = "never-read"
        return version

    def alias(self, name: str, alias: str, version: int) -> None:
        self.registry.set_registered_model_alias(name, alias, str(version))

    def gateway(self, **env: str) -> tuple[Gateway, FakeBackend, Recorder]:
        """A service on this database with a fake backend and a recording appender;
        ``env``: ``MLFLOW_SHARE_*`` settings (no rate limit unless set)."""
        settings = config.parse_options({"MLFLOW_SHARE_GATEWAY_RATE_PER_TEAM": "0", **env})
        backend, recorder = FakeBackend(self.identities), Recorder()
        gateway = Gateway(self.engine, backend, policy=PolicyEngine(self.engine, 0),
                          appender=recorder, settings=settings)  # type: ignore[arg-type]
        return gateway, backend, recorder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("gateway-units")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    registry = SqlAlchemyStore(uri)
    engine = db.get_engine(uri)
    db.create_schema(engine)
    directory = Directory(engine)
    tokens: dict[str, str] = {}
    for team in ("team-a", "team-b"):
        directory.create_team(team)
    for user, team in (("en", "team-a"), ("be", "team-b")):
        directory.create_user(user, PASSWORD)
        directory.add_member(team, user, "engineer")
        tokens[user] = directory.create_token(user).token
    yield World(engine, registry, directory, tokens)
    engine.dispose()


def test_an_alias_runs_the_version_it_names_now_and_a_number_its_own(world: World) -> None:
    name = "routed"
    world.model(name)
    first, second = world.version(name), world.version(name)
    world.alias(name, "champion", second)
    gateway, backend, recorder = world.gateway()
    en = gateway.authenticate(world.header("en"))

    labels = Labels()
    model = gateway.admit(en, name, "champion", None, labels)
    assert model.version == second
    assert gateway.predict(model, BODY, JSON) == [second, second]
    assert (labels.team, labels.model, labels.version) == ("team-a", name, str(second))

    world.alias(name, "champion", first)  # read on the database at the next slow-path call
    assert gateway.admit(en, name, "champion", None, Labels()).version == first
    assert gateway.admit(en, name, None, second, Labels()).version == second
    # Cached by identity: each version loaded once, and each load audited once.
    assert backend.loads == [(name, second), (name, first)]
    loads = [e for e in recorder.events if e["action"] == "gateway.load"]
    assert [(e["resource_name"], e["decision"]) for e in loads] == [(name, "allow")] * 2


def test_a_version_is_served_only_while_it_has_a_manifest_and_is_not_deleted(
        world: World) -> None:
    name = "unservable"
    world.model(name)
    served, bare = world.version(name), world.version(name, manifest=False)
    gateway, backend, _recorder = world.gateway()
    en = gateway.authenticate(world.header("en"))
    with pytest.raises(NotFound, match="has no manifest"):
        gateway.admit(en, name, None, bare, Labels())
    world.alias(name, "candidate", bare)
    assert resolve_alias(world.engine, name, "candidate") == bare  # named, though not servable
    with pytest.raises(NotFound, match="has no alias 'nothing'"):
        gateway.admit(en, name, "nothing", None, Labels())

    assert gateway.admit(en, name, None, served, Labels()).version == served
    world.registry.delete_model_version(name, str(served))  # MLflow keeps the row and files
    with pytest.raises(NotFound, match=f"has no version {served}"):
        gateway.admit(en, name, None, served, Labels())
    assert backend.loads == [(name, served)]  # neither refusal loaded anything


def test_a_team_without_execute_is_refused_and_its_call_names_no_model(world: World) -> None:
    name = "guarded"
    model_id = world.model(name)
    world.alias(name, "champion", world.version(name))
    gateway, backend, recorder = world.gateway()
    be = gateway.authenticate(world.header("be"))
    labels = Labels()
    with pytest.raises(PermissionDenied, match="'be' may not execute registered model"):
        gateway.admit(be, name, "champion", None, labels)
    assert labels == Labels() and backend.loads == []  # nothing named, nothing loaded

    world.directory.grant(MODEL, model_id, "team-b", "execute", "en")
    be = gateway.authenticate(world.header("be"))  # reads the policy again
    assert gateway.admit(be, name, "champion", None, labels).version == 1
    assert labels.team == "team-b"

    # A refusal decided without a check naming the model (a 429) names it in its event.
    ctx = AuditContext(action="gateway.invoke", principal="be")
    gateway.record_refusal(ctx, 429, "Team 'team-b' is over its rate limit.", model=name)
    event = recorder.events[-1]
    assert (event["decision"], event["status"], event["source"]) == ("deny", 429, "gateway")
    assert (event["resource_name"], event["resource_id"], event["owner_team"]) == (
        name, model_id, "team-a")


def test_a_version_that_fails_to_load_leaves_the_verified_one_serving(world: World) -> None:
    name = "tampered"
    world.model(name)
    good, bad = world.version(name), world.version(name)
    gateway, backend, recorder = world.gateway()
    backend.refused[(name, bad)] = DataLoss(f"{name!r} version {bad}: model.onnx does not "
                                            "match the manifest.")
    en = gateway.authenticate(world.header("en"))
    world.alias(name, "champion", good)
    assert gateway.admit(en, name, "champion", None, Labels()).version == good

    world.alias(name, "champion", bad)
    labels = Labels()
    assert gateway.admit(en, name, "champion", None, labels).version == good
    assert labels.version == str(good)  # counted against the version that ran
    refusals = [e for e in recorder.events if e["action"] == "gateway.refuse"]
    assert len(refusals) == 1 and refusals[0]["decision"] == "fail", refusals
    assert refusals[0]["route"] == f"/v1/models/{name}/versions/{bad}"
    with pytest.raises(DataLoss, match="does not match"):  # by its number: refused
        gateway.admit(en, name, None, bad, Labels())
    world.alias(name, "fresh", bad)
    with pytest.raises(DataLoss):  # an alias that never served a verified version
        gateway.admit(en, name, "fresh", None, Labels())
    # The failure is remembered: the version's files are read once, not per call.
    assert backend.loads.count((name, bad)) == 1


def test_a_team_over_its_rate_is_refused_until_its_bucket_refills() -> None:
    now = [100.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.take("team-a") for _ in range(3)] == [True, True, False]
    assert limiter.take("team-b")  # a bucket per team
    now[0] += 0.5  # one request's worth at 2 per second
    assert [limiter.take("team-a") for _ in range(2)] == [True, False]
    now[0] += 3600  # idle for long: still no more than a burst of ``rate``
    assert [limiter.take("team-a") for _ in range(3)] == [True, True, False]
    assert all(RateLimiter(0).take("team-a") for _ in range(1000))  # 0: no limit


def test_the_service_applies_the_rate_limit_and_counts_the_refusal(world: World) -> None:
    name = "limited"
    world.model(name)
    world.alias(name, "champion", world.version(name))
    gateway, backend, _recorder = world.gateway(MLFLOW_SHARE_GATEWAY_RATE_PER_TEAM="1")
    assert gateway.limiter.rate == 1
    now = [0.0]
    gateway.limiter.clock = lambda: now[0]
    en = gateway.authenticate(world.header("en"))
    gateway.admit(en, name, "champion", None, Labels())
    labels = Labels()
    with pytest.raises(TooMany, match="'team-a' is over its rate limit"):
        gateway.admit(en, name, "champion", None, labels)
    assert (labels.team, labels.model) == ("team-a", name)  # the 429 is the model's to see
    now[0] += 1
    assert gateway.admit(en, name, "champion", None, Labels()).version == 1


def test_known_callers_are_decided_in_memory_only_on_fresh_state(world: World) -> None:
    name = "fast"
    world.model(name)
    first, second = world.version(name), world.version(name)
    world.alias(name, "champion", first)
    gateway, _backend, _recorder = world.gateway(MLFLOW_SHARE_GATEWAY_FRESHNESS_SECONDS="60")
    header = world.header("en")
    assert gateway.admit_cached(header, name, "champion", None) is None  # nothing read yet
    gateway.admit(gateway.authenticate(header), name, "champion", None, Labels())
    gateway.refresh()
    admitted = gateway.admit_cached(header, name, "champion", None)
    assert admitted is not None
    principal, team, model = admitted
    assert (principal.name, team, model.version) == ("en", "team-a", first)
    # Refusals and passwords are decided on the database, every time.
    assert gateway.admit_cached(world.header("be"), name, "champion", None) is None
    assert gateway.admit_cached("Basic ZW46eA==", name, "champion", None) is None
    # An alias move reaches the fast path at the next refresh (the new version is not loaded
    # yet: the slow path loads it).
    world.alias(name, "champion", second)
    gateway.refresh()
    assert gateway.admit_cached(header, name, "champion", None) is None
    assert gateway.admit(gateway.authenticate(header), name, "champion", None,
                         Labels()).version == second
    assert gateway.admit_cached(header, name, "champion", None) is not None
    gateway.fresh_at -= 61  # the last refresh is older than the bound: never decided on
    assert gateway.admit_cached(header, name, "champion", None) is None


def test_inputs_are_checked_before_a_run_and_a_failed_run_is_a_400(world: World) -> None:
    name = "inputs"
    world.model(name)
    world.alias(name, "champion", world.version(name))
    gateway, _backend, _recorder = world.gateway()
    en = gateway.authenticate(world.header("en"))
    model = gateway.admit(en, name, "champion", None, Labels())
    assert math.isinf(model.run_seconds)
    with pytest.raises(InvalidInput, match="'X' expects size 2 on axis 1"):
        gateway.predict(model, b'{"inputs": [[1.0, 2.0, 3.0]]}', JSON)
    with pytest.raises(InvalidInput, match=r"could not run on this input.*\['X'\]"):
        gateway.predict(model, b'{"inputs": [[NaN, 1.0]]}', JSON)
    assert gateway.predict(model, b"a,b\n1.0,2.0\n", "text/csv") == [1]
    assert math.isfinite(model.run_seconds)  # measured: it decides where calls run
    assert gateway.runs_inline(model, BODY) == (model.run_seconds < 0.0002)


def test_listing_and_counting_name_only_models_the_caller_may_run(world: World) -> None:
    name = "listed"
    world.model(name)
    world.alias(name, "champion", world.version(name))
    world.alias(name, "previous", world.version(name))
    unaliased = "listed-plain"
    world.model(unaliased)
    world.version(unaliased)
    gateway, _backend, recorder = world.gateway()
    listed = gateway.executable(gateway.authenticate(world.header("en")))
    assert {"name": name, "aliases": {"champion": "1", "previous": "2"}} in listed
    assert {"name": unaliased, "aliases": {}} in listed
    assert [m["name"] for m in listed] == sorted(m["name"] for m in listed)
    be_sees = [m["name"] for m in gateway.executable(gateway.authenticate(world.header("be")))]
    assert name not in be_sees and unaliased not in be_sees

    gateway.observe(Labels(), 401, 0.001)  # a refused caller: counted, naming nothing
    gateway.observe(Labels("team-a", name, "1"), 200, 0.002)
    metrics, _content_type = gateway.metrics.render()
    assert f'model="{name}"'.encode() in metrics and b'model="-"' in metrics
    gateway.usage.close()  # writes what it counted
    rows = usage_rows(world.engine, name)
    assert [(r["version"], r["team"], r["requests"]) for r in rows] == [("1", "team-a", 1)]
    assert usage_rows(world.engine, "-") == []
    assert "gateway.usage" in recorder.actions()


def test_usage_percentiles_are_over_exactly_the_calls_they_summarise(world: World) -> None:
    """Known latencies, written by two processes in several flushes: the percentiles of any
    set of rows are those of its calls (within HdrHistogram's two significant digits), never the
    average or worst of per-minute percentiles; calls that never reached a version are not a
    version's."""
    from mlflow_share.gateway.usage import Usage, summarize

    name = "timed"
    first, second = Usage(world.engine, Recorder(), every=3600), \
        Usage(world.engine, Recorder(), every=3600)
    for ms in range(1, 91):  # 1..90 ms on version 1, split over two writers and flushes
        (first if ms % 2 else second).record(name, "1", "team-a", 200, ms / 1000)
        if ms == 45:
            first.flush(everything=True)
    for ms in (1000, 1000):  # two slow calls on version 2
        second.record(name, "2", "team-b", 200, ms / 1000)
    second.record(name, "2", "team-b", 400, 0.0005)  # an error: counted, not timed
    gateway, _backend, _recorder = world.gateway()
    gateway.observe(Labels("team-a", name, "-"), 429, 0.0001)  # refused before a version
    gateway.usage.close()
    first.close()
    second.close()

    [everything] = summarize(world.engine, name)
    assert (everything["requests"], everything["errors"]) == (93, 1)
    exact = sorted([float(ms) for ms in range(1, 91)] + [1000.0, 1000.0])
    for q in (50, 95, 99):  # nearest rank over the 92 timed calls
        expected = exact[math.ceil(q / 100 * len(exact)) - 1]
        assert everything[f"p{q}_ms"] == pytest.approx(expected, rel=0.015), q
    assert everything["mean_ms"] == pytest.approx(sum(exact) / len(exact), rel=1e-6)
    by_version = {row["version"]: row for row in summarize(world.engine, name, by=("version",))}
    assert set(by_version) == {"1", "2"}  # no "-" version for the refused call
    assert by_version["1"]["p50_ms"] == pytest.approx(45, rel=0.015)
    assert by_version["1"]["p99_ms"] == pytest.approx(90, rel=0.015)
    assert by_version["2"]["p50_ms"] == pytest.approx(1000, rel=0.015)
    assert (by_version["2"]["requests"], by_version["2"]["errors"]) == (3, 1)
    per_minute = usage_rows(world.engine, name)
    assert "latency_histogram" not in per_minute[0]


def test_the_onnx_backend_is_an_inference_backend(world: World, tmp_path: Path) -> None:
    import onnxruntime
    from onnx import TensorProto, helper

    from mlflow_share.artifacts.ledger import Ledger
    from mlflow_share.artifacts.repository import ChecksumArtifactRepository
    from mlflow_share.gateway.onnx_backend import OnnxBackend, new_session, specs

    destination = f"checksum+file://{tmp_path}"
    backend = OnnxBackend(world.engine, ChecksumArtifactRepository(
        destination, ledger=Ledger(world.engine), root=destination))
    assert isinstance(backend, InferenceBackend)
    assert isinstance(FakeBackend({}), InferenceBackend)
    assert not isinstance(object(), InferenceBackend)
    assert backend.versions() == {"onnxruntime": onnxruntime.__version__}
    with pytest.raises(NotFound, match="has no manifest"):  # nothing loads unverified
        backend.load("no-such-model", 1)

    # The service runs an onnxruntime session through the backend as it runs the fake's.
    graph = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"])], "double",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])])
    model_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = model_bytes.SerializeToString()
    session = new_session(data, "double", 1)
    model = LoadedModel("double", 1, "id-double", "identity-double", session,
                        specs(session.get_inputs()), [o.name for o in session.get_outputs()],
                        len(data))
    gateway = Gateway(world.engine, backend, policy=PolicyEngine(world.engine, 0),
                      appender=Recorder(),  # type: ignore[arg-type]
                      settings=config.parse_options({}))
    assert gateway.predict(model, b'{"inputs": [[1.5, 2.0]]}', JSON) == [[3.0, 4.0]]
