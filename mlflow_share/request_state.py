"""The state one request carries across packages: who is calling and what they may search.

The decision point sets it for the duration of a request (``auth/middleware.py``); the scoped
stores and mlflow-share's views read it. It lives here, below every package, so persistence
and views never import the decision point to learn who is calling.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from mlflow_share.auth.identity import Principal


@dataclass(frozen=True)
class SearchScope:
    """Restricts store searches of one request to what the caller may read."""

    principal: str
    teams: tuple[str, ...]


SEARCH_SCOPE: contextvars.ContextVar[SearchScope | None] = contextvars.ContextVar(
    "mlflow_share_search_scope", default=None
)
CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "mlflow_share_principal", default=None
)


@dataclass(frozen=True)
class AliasMove:
    """What a caller of mlflow-share's alias API asked for beyond MLflow's own alias call:
    the version it expects the alias to hold now (compare-and-set), why, and the approved
    request the move carries out. The registry store's alias hook reads it."""

    expected_version: int | None = None
    reason: str | None = None
    request_id: str | None = None


ALIAS_MOVE: contextvars.ContextVar[AliasMove | None] = contextvars.ContextVar(
    "mlflow_share_alias_move", default=None
)
