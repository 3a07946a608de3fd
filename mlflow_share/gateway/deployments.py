"""Named deployments on the gateway: a name bound to ``models:/NAME@ALIAS`` or ``/VERSION``.

``mlflow deployments ... -t mlflow-share`` (the client package's plugin) manages them through
``/v1/deployments``. Creating or moving one needs ``execute`` on its model; deleting one needs
to be its creator or an org admin. Calling one is calling its model: the decision is the
model's, at call time.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.errors import Conflict, InvalidInput, NotFound

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MODEL_URI = re.compile(r"models:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))/?")
_T = db.gateway_deployments


def parse_model_uri(uri: Any) -> tuple[str, str | None, int | None]:
    match = _MODEL_URI.fullmatch(uri) if isinstance(uri, str) else None
    if match is None:
        raise InvalidInput("'model_uri' must be models:/NAME/VERSION or models:/NAME@ALIAS.")
    name, version, alias = match.groups()
    return name, alias, int(version) if version else None


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput("A deployment name is 1-128 letters, digits, '.', '_' or '-'.")
    return name


def to_dict(row: Any) -> dict[str, Any]:
    target = f"@{row.alias}" if row.alias is not None else f"/{row.version}"
    return {"name": row.name, "model_uri": f"models:/{row.model}{target}",
            "flavor": "onnx", "created_by": row.created_by, "updated_at": row.updated_at}


def get(engine: sa.Engine, name: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(sa.select(_T).where(_T.c.name == name)).first()
    if row is None:
        raise NotFound(f"No deployment named {name!r}.")
    return row


def all_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(_T).order_by(_T.c.name)).all())


def put(engine: sa.Engine, name: str, model: str, alias: str | None, version: int | None,
        user: str, *, create: bool) -> None:
    values = {"model": model, "alias": alias, "version": version, "updated_at": db.now_ms()}
    with engine.begin() as conn:
        exists = conn.execute(sa.select(_T.c.name).where(_T.c.name == name)).first()
        if create and exists:
            raise Conflict(f"A deployment named {name!r} exists already.")
        if not create and not exists:
            raise NotFound(f"No deployment named {name!r}.")
        if create:
            conn.execute(_T.insert().values(name=name, created_by=user, **values))
        else:
            conn.execute(_T.update().where(_T.c.name == name).values(**values))


def delete(engine: sa.Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(_T.delete().where(_T.c.name == name))
