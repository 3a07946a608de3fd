"""The fence around MLflow's internals: every private MLflow name mlflow-share uses.

mlflow-share is a plugin, and a plugin breaks where it leans on what MLflow does not
promise. Each private function or constant it needs is reached through this package, named
in ``PRIVATE_NAMES`` and checked by ``missing()`` (a test asserts none is missing on every
MLflow version CI runs), so an MLflow upgrade that moves one fails here, loudly, instead of
somewhere in a request. Where older versions lack a name, the fallback is written here.
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
    ("mlflow.utils.mime_type_utils", "_guess_mime_type", "download content types"),
    ("mlflow.utils.validation", "_validate_run_id", "MLflow's own run ID check"),
    ("mlflow.utils.validation", "_validate_experiment_id", "MLflow's own experiment ID check"),
    ("mlflow.store.artifact.utils.models", "_parse_model_uri", "models:/ URIs as MLflow reads"),
    ("mlflow.store.artifact.s3_artifact_repo", "_get_s3_client",
     "an S3 client configured as MLflow's"),
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
    """Every declared private name the installed MLflow does not have."""
    gone = []
    for module, name, _why in PRIVATE_NAMES:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            gone.append(f"{module}.{name}")
    return gone


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
