"""Ownership, recorded inside MLflow's transaction: an experiment or registered model never
exists without its owner team, a rename keeps its grants, a deletion takes them along.

The owner is the team the decision point chose for the request (``AuditContext.create_team``);
outside a request (a script on an ``audit+`` URI) nothing is owned and only org admins see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow_share import directory
from mlflow_share.audit.log import AUDIT_CONTEXT, note_resource
from mlflow_share.audit.store import Proceed, add_write_hook


def _in_transaction(store: Any, proceed: Proceed, then: Any) -> Any:
    with store.ManagedSessionMaker(read_only=False) as session:
        result = proceed()
        then(session.connection(), result)
    return result


def _owned(kind: str, name_of: Any, id_of: Any) -> Any:
    def hook(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
        ctx = AUDIT_CONTEXT.get()
        if ctx is None or ctx.create_team is None:
            return proceed()
        team, principal = ctx.create_team, ctx.principal

        def own(conn: Any, result: Any) -> None:
            resource_id = directory.record_owner_in(conn, kind, id_of(result), team, principal,
                                                    name_of(arguments))
            note_resource(kind, resource_id, name_of(arguments), team)

        return _in_transaction(store, proceed, own)
    return hook


own_model = _owned(directory.MODEL, lambda args: args["name"], lambda result: None)
own_experiment = _owned(directory.EXPERIMENT, lambda args: None, lambda result: str(result))


def follow_rename(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
    return _in_transaction(store, proceed, lambda conn, _result: directory.rename_model_in(
        conn, arguments["name"], arguments["new_name"]))


def forget_deleted(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
    return _in_transaction(store, proceed, lambda conn, _result: directory.forget_model_in(
        conn, arguments["name"]))


def install() -> None:
    add_write_hook("registry", "create_registered_model", own_model)
    add_write_hook("tracking", "create_experiment", own_experiment)
    add_write_hook("registry", "rename_registered_model", follow_rename)
    add_write_hook("registry", "delete_registered_model", forget_deleted)
