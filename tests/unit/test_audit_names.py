"""Audit action names: one human name per operation, derived by rule from the stored spelling
(the route key, or mlflow-share's own name); the filters take the name or the spelling and
find exactly the events of that operation, whatever spelling the chain holds."""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mlflow_share.audit import models
from mlflow_share.audit.log import action_clause, action_name, readable_event, stored_actions

# mlflow-share's blueprints: name -> the module whose ROUTES it binds.
BLUEPRINTS = {
    "mlflow_share_api": "mlflow_share.admin.api",
    "mlflow_share_audit": "mlflow_share.audit.api",
    "mlflow_share_usage": "mlflow_share.gateway.api",
    "mlflow_share_aliases": "mlflow_share.governance.api",
    "mlflow_share_sharing": "mlflow_share.governance.sharing_api",
    "mlflow_share_artifacts": "mlflow_share.artifacts.api",
    "mlflow_share_health": "mlflow_share.health",
    "mlflow_share_web": "mlflow_share.web.pages",
    "mlflow_share_account": "mlflow_share.web.account",
    "mlflow_share_oauth": "mlflow_share.oauth_api",
    "mlflow_share_device": "mlflow_share.web.device",
    "mlflow_share_trust": "mlflow_share.admin.trust_api",
    "mlflow_share_scim": "mlflow_share.scim.api",
    "mlflow_share_scim_admin": "mlflow_share.scim.admin",
    "mlflow_share_signing": "mlflow_share.artifacts.signing_api",
}
# Actions named by mlflow-share itself (not route keys), and changes made outside a request.
OWN = ("unrouted", "request.outcome", "store.write", "health.audit_probe", "gateway.usage",
       "gateway.load", "gateway.refuse", "gateway.invoke", "gateway.models.list",
       "gateway.metrics", "gateway.deployment.create", "artifact.data_loss", "artifact.put",
       "model_version.copy", "share.grant", "share.revoke", "share.create_user",
       "share.disable_user", "share.revoke_token", "share.package.publish",
       "share.alias.protect", "share.set_password")


def _stored_spellings() -> Iterator[str]:
    """Every action the decision point can store (the route table's keys), and ours."""
    from mlflow.server import app
    from mlflow.server.fastapi_app import create_fastapi_app

    from mlflow_share.policy.routes import RouteTable, native_routes

    yield from (endpoint.rsplit("|", 1)[0] for endpoint in RouteTable(app).rules)
    yield from (f"native:{name}" for _, _, name in native_routes(create_fastapi_app(app)))
    for blueprint, module in BLUEPRINTS.items():
        for _rule, endpoint, _view, _methods in importlib.import_module(module).ROUTES:
            yield f"flask:{blueprint}.{endpoint}"
    yield from OWN


@pytest.fixture(scope="module")
def spellings() -> list[str]:
    return sorted(set(_stored_spellings()))


@pytest.fixture(scope="module")
def log(spellings: list[str]) -> Iterator[sa.Connection]:
    """A table of the audit log's name holding one event per stored spelling."""
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE share_audit_events (action VARCHAR(256))")
        conn.execute(sa.text("INSERT INTO share_audit_events VALUES (:a)"),
                     [{"a": a} for a in spellings])
        yield conn
    engine.dispose()


def _matching(conn: sa.Connection, name: str) -> set[str]:
    query = sa.select(models.events.c.action).where(action_clause(name))
    return set(conn.execute(query).scalars())


def test_every_action_has_a_name_that_finds_exactly_its_spellings(
        spellings: list[str], log: sa.Connection) -> None:
    assert len(spellings) > 300
    by_name: dict[str, set[str]] = defaultdict(set)
    for stored in spellings:
        name = action_name(stored)
        assert name and not name.startswith(("mlflow.", "fn:", "flask:", "native:", "share.")), \
            stored
        by_name[name].add(stored)
    for name, stored in by_name.items():
        assert _matching(log, name) == stored, name
        for spelling in stored:  # the stored spelling still filters, to itself
            assert _matching(log, spelling) == {spelling}
    # Spellings that share a name are one operation served twice.
    shared = {name: sorted(stored) for name, stored in by_name.items() if len(stored) > 1}
    assert shared["artifact.download"] == ["mlflow.artifacts.DownloadArtifact",
                                           "native:download_artifact"]
    assert shared["package.publish"] == ["flask:mlflow_share_sharing.publish_package",
                                         "share.package.publish"]
    assert shared["grant"] == ["flask:mlflow_share_api.grant", "share.grant"]


@pytest.mark.parametrize(("stored", "name"), [
    ("mlflow.GetRegisteredModel", "registered_model.read"),
    ("mlflow.SearchRegisteredModels", "registered_models.search"),
    ("mlflow.CreateModelVersion", "model_version.create"),
    ("mlflow.SetRegisteredModelAlias", "registered_model_alias.set"),
    ("mlflow.GetTraceInfoV3", "trace_info_v3.read"),
    ("mlflow.BatchGetTraces", "traces.batch_read"),
    ("mlflow.artifacts.DownloadArtifact", "artifact.download"),
    ("fn:_graphql", "graphql"),
    ("fn:_invoke_scorer_handler", "scorer.invoke"),
    ("flask:serve", "serve"),
    ("flask:serve_upload_artifact", "artifact.upload"),
    ("flask:mlflow_share_api.grant", "grant"),
    ("flask:mlflow_share_api.revoke", "revoke"),
    ("flask:mlflow_share_api.create_team", "team.create"),
    ("flask:mlflow_share_api.revoke_token", "token.revoke"),
    ("flask:mlflow_share_api.disable_user", "user.disable"),
    ("flask:mlflow_share_api.reset_password", "password.reset"),
    ("flask:mlflow_share_api.whoami", "whoami"),
    ("flask:mlflow_share_sharing.publish_package", "package.publish"),
    ("flask:mlflow_share_audit.events", "audit.events"),
    ("flask:mlflow_share_audit.verify", "audit.verify"),
    ("flask:mlflow_share_artifacts.verify", "artifacts.verify"),
    ("flask:mlflow_share_usage.usage", "usage"),
    ("flask:mlflow_share_usage.summary", "usage.summary"),
    ("flask:mlflow_share_web.page_access", "web.page_access"),
    ("share.create_user", "user.create"),
    ("share.package.publish", "package.publish"),
    ("gateway.invoke", "gateway.invoke"),
    ("unrouted", "unrouted"),
    ("request.outcome", "request.outcome"),
])
def test_names(stored: str, name: str, log: sa.Connection) -> None:
    assert action_name(stored) == name
    assert stored in _matching(log, name) or stored not in _stored_spellings_cache(log)


def _stored_spellings_cache(conn: sa.Connection) -> set[str]:
    return set(conn.exec_driver_sql("SELECT action FROM share_audit_events").scalars())


def test_readable_events_keep_the_stored_spelling() -> None:
    event = {"seq": 1, "action": "mlflow.GetRun", "decision": "allow"}
    assert readable_event(event) == {"seq": 1, "action": "run.read",
                                     "stored_action": "mlflow.GetRun", "decision": "allow"}


@pytest.mark.parametrize("odd", ["", "flask:", "flask:mlflow_share_", "flask:mlflow_share_x.",
                                 "share.", "mlflow.", "fn:_", "native:__", "a.b.c", "x" * 300])
def test_odd_spellings_keep_their_spelling(odd: str) -> None:
    assert action_name(odd) == odd
    exact, _like = stored_actions(odd)
    assert odd in exact


@pytest.mark.parametrize("name", ["x." + "_".join(["read"] * 40), "x_" * 3000,
                                  "a.b." + "read_" * 30 + "read"])
def test_an_action_filter_expands_to_a_bounded_number_of_spellings(name: str) -> None:
    """Each verb word may have two spellings (read/get): a filter of many such words must not
    expand to 2^words candidates (any maintainer may ask for one)."""
    exact, like = stored_actions(name)
    assert len(exact) + len(like) <= 64
