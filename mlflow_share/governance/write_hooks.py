"""What governance adds to MLflow's alias writes, inside MLflow's transaction.

- every move of an alias (set or delete) is compare-and-set when the caller asked for it
  (``request_state.ALIAS_MOVE``), lands in ``share_alias_history``, and a protected alias
  moves only onto a verified version, and only with an approved request where the alias
  needs a second maintainer's approval;
- MLflow drops a version's aliases with the version: not a protected one (move it first);
- after the commit, a protected alias's move is announced to the model's subscribers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.audit.log import AUDIT_CONTEXT, system_principal
from mlflow_share.audit.store import Proceed, add_write_hook
from mlflow_share.errors import Conflict, PermissionDenied
from mlflow_share.governance import aliases, notifications
from mlflow_share.mlflow_compat import tables as mt
from mlflow_share.request_state import ALIAS_MOVE, AliasMove


def _model_id(conn: sa.Connection, name: str) -> str | None:
    r = db.resources.c
    value = conn.execute(sa.select(r.resource_id).where(
        r.kind == "registered_model", r.name == name)).scalar()
    return None if value is None else str(value)


def _move(conn: sa.Connection, name: str, alias: str, version: int | None) -> dict[str, Any]:
    if conn.dialect.name == "postgresql":  # serialize moves of one alias (SQLite: the lock)
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"alias:{name}:{alias}",))
    model_id = _model_id(conn, name)
    ctx = AUDIT_CONTEXT.get()
    asked = ALIAS_MOVE.get() or AliasMove()
    # A protected alias reserves its look-alikes (another case, a confusable letter) on every
    # path that sets an alias; deleting one made before stays possible.
    reserved = aliases.look_alike(conn, model_id, alias) if version is not None else None
    if reserved is not None:
        raise Conflict(f"Alias {alias!r} looks like the protected alias {reserved!r} of "
                       f"registered model {name!r}; choose another name.")
    rule = aliases.protection(conn, model_id, alias)
    principal = ctx.principal if ctx is not None else system_principal()
    if rule is not None and rule.require_approval:
        if asked.request_id is None:
            raise PermissionDenied(
                f"Alias {alias!r} of {name!r} moves only with a second maintainer's approval: "
                "request the move in the model's Permissions tab in MLflow's UI (Protected "
                "aliases \u2192 Request move), or from a terminal with: mlflow-share alias "
                f"request {name} {alias} VERSION --reason TEXT.")
        aliases.decide_in(conn, str(asked.request_id), model_id=model_id, alias=alias,
                          version=version, by=principal)
    before = aliases.record(conn, model_id=model_id, name=name, alias=alias,
                            to_version=version, principal=principal, reason=asked.reason,
                            expected_version=asked.expected_version,
                            protected_move=rule is not None)
    return {"model_id": model_id, "protected": rule is not None, "model": name, "alias": alias,
            "from_version": before, "to_version": version, "principal": principal,
            "reason": asked.reason, "request": asked.request_id}


def _announce(move: dict[str, Any]) -> None:
    """After the commit: a protected alias's move is announced to the model's subscribers."""
    if move.pop("protected"):
        notifications.emit(move.pop("model_id"), "alias.moved", move)


def move_alias(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
    version = arguments.get("version")
    with store.ManagedSessionMaker(read_only=False) as session:
        move = _move(session.connection(), arguments["name"], arguments["alias"],
                     None if version is None else int(version))
        result = proceed()
    _announce(move)
    return result


def keep_protected_targets(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
    name, version = arguments["name"], str(arguments["version"])
    with store.ManagedSessionMaker(read_only=False) as session:
        conn = session.connection()
        model_id = _model_id(conn, name)
        a = mt.registered_model_aliases.c
        held = conn.execute(sa.select(a.alias).where(
            a.name == name, a.version == mt.bigint(int(version) if version.isdigit() else -1)
        )).scalars().all()
        for alias in held:
            if aliases.is_protected(conn, model_id, str(alias)):
                raise Conflict(f"Version {version} of {name!r} is the target of protected "
                               f"alias {alias!r}: move the alias before deleting it.")
        return proceed()  # in the same transaction: no move onto it slips in between


def install() -> None:
    add_write_hook("registry", "set_registered_model_alias", move_alias)
    add_write_hook("registry", "delete_registered_model_alias", move_alias)
    add_write_hook("registry", "delete_model_version", keep_protected_targets)
