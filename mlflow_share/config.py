"""Every setting of mlflow-share: name, type, default and ``MLFLOW_SHARE_*`` variable.

``Settings.from_env()`` builds one frozen object at start-up and refuses invalid input, so
the server fails closed instead of running with a half-understood configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Variables MLflow's own `mlflow server` sets for the processes it spawns.
_MLFLOW_BACKEND_STORE_URI = "_MLFLOW_SERVER_FILE_STORE"
_MLFLOW_REGISTRY_STORE_URI = "_MLFLOW_SERVER_REGISTRY_STORE"
_MLFLOW_SGI_NAME = "_MLFLOW_SGI_NAME"

HOME_ENV = "MLFLOW_SHARE_HOME"
ADMIN_USERNAME_ENV = "MLFLOW_SHARE_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_SHARE_ADMIN_PASSWORD"
PASSWORD_CACHE_SECONDS_ENV = "MLFLOW_SHARE_PASSWORD_CACHE_SECONDS"

# The audit log's append-only triggers and chain lock exist for these two.
_SQL_SCHEMES = ("sqlite", "postgresql")
AUDIT_SCHEME_PREFIX = "audit+"


def default_home() -> Path:
    """The embedded default's home folder: ``$MLFLOW_SHARE_HOME`` or ``~/.mlflow-share``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".mlflow-share").expanduser()


def _int_env(name: str, default: int, minimum: int) -> int:
    from mlflow_share.errors import InvalidInput

    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}, got {value}")
    return value


GATEWAY_ENV = "MLFLOW_SHARE_GATEWAY"  # "1": the server also serves the inference gateway


@dataclass(frozen=True)
class Settings:
    """The server-side configuration, read once per process.

    Attributes:
        backend_store_uri: SQL URI of MLflow's tracking store; mlflow-share keeps its
            tables (identity, policy, ownership) in the same database.
        server_kind: ``uvicorn`` (ASGI) or ``gunicorn``/``waitress`` (WSGI).
        password_cache_seconds: how long a verified password stays verified in memory.
    """

    backend_store_uri: str
    server_kind: str = "uvicorn"
    password_cache_seconds: int = 300

    @classmethod
    def from_env(cls) -> Settings:
        # Imported here: the CLI reads this module's names and must not load all of MLflow.
        from mlflow_share.errors import InvalidInput

        uri = os.environ.get(_MLFLOW_BACKEND_STORE_URI, "")
        # `audit+sqlite://...` names the audited stores explicitly; the server audits either way.
        uri = uri[len(AUDIT_SCHEME_PREFIX):] if uri.startswith(AUDIT_SCHEME_PREFIX) else uri
        if not uri:
            raise InvalidInput(
                "mlflow-share needs a SQL backend store: pass --backend-store-uri "
                "(for example sqlite:///mlflow.db) to `mlflow server`, or use `mlflow-share server`."
            )
        scheme = uri.split(":", 1)[0].split("+", 1)[0]
        if scheme not in _SQL_SCHEMES:
            raise InvalidInput(
                f"mlflow-share needs a SQL backend store ({', '.join(_SQL_SCHEMES)}); "
                f"got a {scheme or 'file'!s} store."
            )
        registry = os.environ.get(_MLFLOW_REGISTRY_STORE_URI)
        if registry and registry.startswith(AUDIT_SCHEME_PREFIX):
            registry = registry[len(AUDIT_SCHEME_PREFIX):]
        if registry and registry != uri:
            raise InvalidInput(
                "mlflow-share keeps the registry in the tracking database: "
                "--registry-store-uri must be unset or equal to --backend-store-uri."
            )
        return cls(
            backend_store_uri=uri,
            server_kind=os.environ.get(_MLFLOW_SGI_NAME) or "uvicorn",
            password_cache_seconds=_int_env(PASSWORD_CACHE_SECONDS_ENV, 300, 0),
        )
