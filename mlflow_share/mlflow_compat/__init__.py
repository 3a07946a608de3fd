"""The fence around MLflow's internals: everything mlflow-share leans on that MLflow does not
promise.

mlflow-share is a plugin, and a plugin breaks where it leans on what MLflow does not
promise. Each such hook is declared here and checked at start-up (``check()``, which the
server runs before it serves; a test runs it on every MLflow version CI tests), so an MLflow
upgrade that moves one fails here, loudly, instead of somewhere in a request:
- ``PRIVATE_NAMES``: private functions and constants, reached through ``private()``;
- ``OVERRIDDEN_METHODS``: private methods mlflow-share's subclasses override (renamed, the
  override would silently stop applying: searches would no longer be narrowed);
- ``tables``: MLflow's tables and the columns mlflow-share reads or writes;
- ``VIEW_SWAPS`` and ``ROUTE_SPLICES``: MLflow views replaced and FastAPI routes put ahead
  of MLflow's own, through ``replace_view`` and ``splice_routes``.
Where older versions lack a name, the fallback is written here.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

# (module, name) of every private MLflow name used, with what it is for.
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    ("mlflow.server.handlers", "_get_request_message", "parse a request as MLflow does"),
    ("mlflow.server.handlers", "HANDLERS", "the REST handlers and their request messages"),
    ("mlflow.server.handlers", "_get_request_json", "read a JSON body as MLflow does"),
    ("mlflow.server.handlers", "_get_tracking_store",
     "the server's tracking store (kept closed while the request schemas are learned)"),
    ("mlflow.server.handlers", "_get_artifact_repo",
     "a run's artifact repository (kept closed while the request schemas are learned)"),
    ("mlflow.server.handlers", "_get_model_registry_store", "the server's registry store"),
    ("mlflow.server.handlers", "_get_artifact_repo_mlflow_artifacts",
     "the proxied artifact root"),
    ("mlflow.server.handlers", "_content_disposition_attachment", "download headers"),
    ("mlflow.server.handlers", "_get_workspace_scoped_repo_path_if_enabled",
     "workspace-scoped artifact paths"),
    ("mlflow.server.handlers", "_tracking_store_registry",
     "the server's tracking stores by URI scheme (audited stores for SQL schemes)"),
    ("mlflow.server.handlers", "_model_registry_store_registry",
     "the server's registry stores by URI scheme (audited stores for SQL schemes)"),
    ("mlflow.tracking._tracking_service.utils", "_SERVER_ARTIFACT_ROOT_ENV_VAR",
     "the server's artifact root, as MLflow's own store builder reads it"),
    ("mlflow.server.handlers", "_get_tracking_store", "the server's tracking store"),
    ("mlflow.server.artifact_router", "_get_artifact_repo",
     "the proxied artifact root, as MLflow's native artifact routes get it"),
    ("mlflow.server.artifact_router", "_is_serving_proxied_artifacts",
     "whether the server proxies artifacts, as MLflow's native artifact routes read it"),
    ("mlflow.utils.mime_type_utils", "_guess_mime_type", "download content types"),
    ("mlflow.utils.validation", "_validate_run_id", "MLflow's own run ID check"),
    ("mlflow.utils.validation", "_validate_experiment_id", "MLflow's own experiment ID check"),
    ("mlflow.store.artifact.utils.models", "_parse_model_uri", "models:/ URIs as MLflow reads"),
    ("mlflow.store.artifact.s3_artifact_repo", "_get_s3_client",
     "an S3 client configured as MLflow's"),
)

# (module, class, method, what the override does) of every private MLflow method overridden.
OVERRIDDEN_METHODS: tuple[tuple[str, str, str, str], ...] = (
    ("mlflow.store.model_registry.sqlalchemy_store", "SqlAlchemyStore",
     "_get_workspace_clauses", "registry searches narrowed to what the caller may read"),
    ("mlflow.store.tracking.sqlalchemy_store", "SqlAlchemyStore",
     "_experiment_where_clauses", "experiment searches narrowed to what the caller may read"),
    ("mlflow.store.artifact.artifact_repo", "ArtifactRepository", "_download_file",
     "downloads checked against their recorded digests"),
    ("mlflow.store.artifact.artifact_repo", "ArtifactRepository", "_is_directory",
     "folder downloads listed from the digest records"),
)

# What MLflow 3.16 lacks, and what it means there.
_PROMPT_SOURCES_316 = frozenset({"dummy-source", "prompt-template"})


_DECLARED = frozenset((module, name) for module, name, _why in PRIVATE_NAMES)


@functools.cache
def private(module: str, name: str) -> Any:
    """A private MLflow name listed in ``PRIVATE_NAMES`` (resolved once: some are called on
    every request)."""
    if (module, name) not in _DECLARED:
        raise KeyError(f"{module}.{name} is not declared in mlflow_compat.PRIVATE_NAMES")
    return getattr(importlib.import_module(module), name)


def missing() -> list[str]:
    """Every declared private name, overridden method, table or column the installed MLflow
    does not have."""
    from mlflow_share.mlflow_compat import tables

    gone = []
    for module, name, _why in PRIVATE_NAMES:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            gone.append(f"{module}.{name}")
    for module, cls, method, _why in OVERRIDDEN_METHODS:
        try:
            getattr(getattr(importlib.import_module(module), cls), method)
        except (ImportError, AttributeError):
            gone.append(f"{module}.{cls}.{method}")
    return gone + tables.missing()


def check() -> None:
    """Refuse to start on an MLflow whose internals moved (the server runs this first).

    Raises:
        RuntimeError: with every hook that lost its target.
    """
    gone = missing()
    if gone:
        raise RuntimeError("mlflow-share cannot start: this MLflow version is not supported; "
                           "moved or gone: " + ", ".join(gone))


def prompt_source_placeholders() -> frozenset[str]:
    """The sources MLflow gives prompt versions (no bytes behind them)."""
    try:
        from mlflow.prompt.constants import _PROMPT_SOURCE_PLACEHOLDERS
    except ImportError:  # MLflow 3.16
        return _PROMPT_SOURCES_316
    return frozenset(_PROMPT_SOURCE_PLACEHOLDERS)


# MLflow views mlflow-share replaces: (endpoint, what for, whether the server can run without).
VIEW_SWAPS: tuple[tuple[str, str, bool], ...] = (
    ("_graphql", "GraphQL authorised field by field", False),
    ("_download_artifact", "checked artifact downloads under gunicorn and waitress", False),
    ("_upload_artifact", "checked artifact uploads under gunicorn and waitress", False),
    ("serve", "the Permissions tab in MLflow's UI", True),
    ("serve_static_file", "MLflow's page served only with a session", True),
    ("static", "MLflow's page served only with a session", True),
)


def replace_view(flask_app: Any, endpoint: str, make: Any) -> None:
    """Replace MLflow's view ``endpoint`` by ``make(original)``.

    Raises:
        RuntimeError: a view the server cannot run without has moved (start-up fails).
    """
    import logging

    declared = {name: (why, optional) for name, why, optional in VIEW_SWAPS}
    if endpoint not in declared:
        raise KeyError(f"{endpoint} is not declared in mlflow_compat.VIEW_SWAPS")
    why, optional = declared[endpoint]
    original = flask_app.view_functions.get(endpoint)
    if original is None:
        if not optional:
            raise RuntimeError(f"mlflow-share cannot start: MLflow's view {endpoint!r} ({why}) "
                               "is gone; this MLflow version is not supported.")
        logging.getLogger(__name__).warning(
            "mlflow-share: MLflow's view %r is gone, so %s is not available.", endpoint, why)
        return
    flask_app.view_functions[endpoint] = make(original)


def missing_views(flask_app: Any) -> list[str]:
    """Every declared view the installed MLflow's app does not have."""
    return [name for name, _why, _optional in VIEW_SWAPS if name not in flask_app.view_functions]


# FastAPI routes put ahead of MLflow's native ones: name -> (MLflow's routes they take over
# as (path, method), why). MLflow's routes must be there: if they moved, ours would shadow
# nothing and requests would reach MLflow's unchecked ones.
ROUTE_SPLICES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "artifacts": (tuple((f"{prefix}/mlflow-artifacts/artifacts/{{artifact_path:path}}", method)
                        for prefix in ("/api/2.0", "/ajax-api/2.0") for method in ("GET", "PUT")),
                  "artifact downloads and uploads checked against their digests"),
}


def native_routes(fastapi_app: Any) -> list[tuple[str, frozenset[str], str]]:
    """(path, methods, name) of every route the FastAPI app serves itself (not the Flask
    mount), included routers' routes too."""
    found: list[tuple[str, frozenset[str], str]] = []
    for route in fastapi_app.router.routes:
        if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x included routers
            for context in route.effective_route_contexts():
                found.append((context.path, frozenset(context.methods or ()), context.name))
        elif hasattr(route, "methods") and hasattr(route, "path"):
            found.append((route.path, frozenset(route.methods or ()), route.name))
        # Mounts (the Flask app at "/") are not native routes.
    return found


def _native_routes(fastapi_app: Any) -> set[tuple[str, str]]:
    return {(path, method) for path, methods, _name in native_routes(fastapi_app)
            for method in methods}


def splice_routes(fastapi_app: Any, name: str, routes: list[Any]) -> None:
    """Put ``routes`` ahead of MLflow's own routes that ``ROUTE_SPLICES[name]`` names.

    Raises:
        RuntimeError: MLflow's routes are not where they were (start-up fails), or ours do
            not cover them all.
    """
    replaced, why = ROUTE_SPLICES[name]
    gone = sorted(set(replaced) - _native_routes(fastapi_app))
    if gone:
        raise RuntimeError(f"mlflow-share cannot start: MLflow's routes {gone} ({why}) are "
                           "gone; this MLflow version is not supported.")
    ours = {(route.path, method) for route in routes for method in route.methods}
    if not set(replaced) <= ours:
        raise RuntimeError(f"mlflow-share: the {name} routes do not cover "
                           f"{sorted(set(replaced) - ours)}.")
    fastapi_app.router.routes[0:0] = routes


def missing_routes(fastapi_app: Any) -> list[str]:
    """Every MLflow route a declared splice takes over that the installed MLflow lacks."""
    native = _native_routes(fastapi_app)
    return [f"{method} {path}" for replaced, _why in ROUTE_SPLICES.values()
            for path, method in replaced if (path, method) not in native]
