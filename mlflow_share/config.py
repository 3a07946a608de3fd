"""Every setting of mlflow-share: name, type, default and ``MLFLOW_SHARE_*`` variable.

``Settings.from_env()`` builds one frozen object at start-up and refuses invalid input, so
the server fails closed instead of running with a half-understood configuration.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Variables MLflow's own `mlflow server` sets for the processes it spawns.
_MLFLOW_BACKEND_STORE_URI = "_MLFLOW_SERVER_FILE_STORE"
_MLFLOW_REGISTRY_STORE_URI = "_MLFLOW_SERVER_REGISTRY_STORE"
_MLFLOW_SGI_NAME = "_MLFLOW_SGI_NAME"

HOME_ENV = "MLFLOW_SHARE_HOME"
ADMIN_PASSWORD_ENV = "MLFLOW_SHARE_ADMIN_PASSWORD"

# The audit log's append-only triggers and chain lock exist for these two.
_SQL_SCHEMES = ("sqlite", "postgresql")
AUDIT_SCHEME_PREFIX = "audit+"


def default_home() -> Path:
    """The embedded default's home folder: ``$MLFLOW_SHARE_HOME`` or ``~/.mlflow-share``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".mlflow-share").expanduser()


MIN_PASSWORD_LENGTH = 12  # every password: users', and the first admin's from the environment
GATEWAY_ENV = "MLFLOW_SHARE_GATEWAY"  # "1": the server also serves the inference gateway


@dataclass(frozen=True)
class Setting:
    """One ``MLFLOW_SHARE_*`` setting: where it is read, its type, default and meaning.

    ``kind`` is ``int``, ``float``, ``bool`` (``1`` or ``0``), ``text``,
    ``secret`` (text never shown), ``password`` (a secret of at least
    ``MIN_PASSWORD_LENGTH`` characters), ``path``, ``networks`` (comma-separated CIDRs) or
    ``roots`` (comma-separated ``file://`` and ``s3://`` artifact root URIs).
    """

    attribute: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None

    @property
    def env(self) -> str:
        return "MLFLOW_SHARE_" + self.attribute.upper()


# fmt: off
DECLARED: tuple[Setting, ...] = (
    Setting("home", "path", None, "the embedded default's folder (default ~/.mlflow-share)"),
    Setting("admin_username", "text", "admin", "the first org admin's name"),
    Setting("admin_password", "password", "", "the first org admin's password (else one is "
            "generated and shown once)"),
    Setting("password_cache_seconds", "int", 300, "how long a verified password stays "
            "verified in memory", 0),
    Setting("gateway", "bool", False, "the server also serves the inference gateway"),
    Setting("db_pool_size", "int", 5, "connections each pool keeps open (PostgreSQL; 0: no "
            "limit)", 0),
    Setting("db_max_overflow", "int", 10, "connections a pool may open beyond its size", 0),
    Setting("gateway_max_body_bytes", "int", 16 * 1024 * 1024, "largest invocation body", 1),
    Setting("gateway_rate_per_team", "float", 500.0, "gateway calls per second per calling "
            "team (0: unlimited)", 0),
    Setting("gateway_cache_bytes", "int", 1024**3, "bytes of loaded models kept in memory", 0),
    Setting("gateway_metrics_token", "secret", "", "bearer token Prometheus scrapes the "
            "gateway's /metrics with (else org admins only)"),
    Setting("gateway_freshness_seconds", "float", 0.5, "how old the policy and alias "
            "targets behind an in-memory gateway decision may be", 0),
    Setting("usage_flush_seconds", "float", 5.0, "how often gateway usage is written", 0.01),
    Setting("webhook_allow", "networks", (), "networks webhooks may reach besides public "
            "addresses (e.g. 10.0.0.0/8)"),
    Setting("webhook_attempts", "int", 5, "deliveries tried per webhook event", 1),
    Setting("webhook_backoff", "float", 1.0, "seconds before the first retry (doubling)", 0),
    Setting("webhook_timeout", "float", 10.0, "seconds a webhook receiver has to answer", 0.01),
    Setting("session_hours", "float", 8.0, "lifetime of a browser session", 0.01),
    Setting("insecure_cookies", "bool", False, "session cookies without Secure (plain HTTP "
            "beyond localhost)"),
    Setting("device_code_minutes", "float", 10.0, "how long a device login's code waits for "
            "approval in a browser (RFC 8628)", 0.01),
    Setting("device_poll_seconds", "int", 5, "least interval between a device's polls; "
            "faster polls get slow_down", 1),
    Setting("device_token_max_days", "float", 90.0, "longest lifetime of a token a device "
            "login issues", 0.001),
    Setting("workload_token_minutes", "float", 60.0, "lifetime of a token a workload "
            "identity (RFC 8693 token exchange) issues", 1),
    Setting("oidc_issuer", "text", "", "the OIDC provider's issuer URL (enables SSO)"),
    Setting("oidc_client_id", "text", "", "the OIDC client ID"),
    Setting("oidc_client_secret", "secret", "", "the OIDC client secret"),
    Setting("oidc_scopes", "text", "openid profile email", "scopes asked for at login"),
    Setting("oidc_username_claim", "text", "preferred_username", "claim naming the user"),
    Setting("oidc_groups_claim", "text", "groups", "claim listing the user's groups"),
    Setting("oidc_admin_group", "text", "", "group whose members are org admins"),
    Setting("manifest_key", "path", None, "Ed25519 private key that signs version manifests"),
    Setting("signing_key", "path", None, "ECDSA private key (PEM; P-256, P-384 or P-521) "
            "that signs every registered version in OpenSSF Model Signing format "
            "(`mlflow-share signing keygen` makes one)"),
    Setting("signing_key_pem", "secret", "", "the same key as PEM text, instead of a file"),
    Setting("signing_public_keys", "path", None, "file or folder of PEM public keys of earlier "
            "signing keys: versions they signed still verify after a rotation"),
    Setting("registration_source_roots", "roots", (), "artifact roots besides the server's "
            "own (file:///path, s3://bucket/prefix; comma-separated) that registration may "
            "copy a version's files from"),
)
# fmt: on


class Options:
    """Every ``MLFLOW_SHARE_*`` value of this process, parsed once (``options()``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, attribute: str) -> Any:
        try:
            return self.__dict__["_values"][attribute]
        except KeyError:
            raise AttributeError(attribute) from None

    def shown(self) -> list[tuple[Setting, str]]:
        """Each setting with its value as text (secrets masked), for ``mlflow-share config``."""
        out = []
        for setting in DECLARED:
            value = self._values[setting.attribute]
            if setting.kind in ("secret", "password"):
                text = "(set)" if value else "(not set)"
            elif setting.kind in ("networks", "roots"):
                text = ",".join(value) or "(none)"
            else:
                text = "(not set)" if value in (None, "") else str(value)
            out.append((setting, text))
        return out


def _parse_one(setting: Setting, raw: str) -> Any:
    import ipaddress
    import math

    if setting.kind in ("text", "secret"):
        return raw
    if setting.kind == "password":
        if len(raw) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"must be at least {MIN_PASSWORD_LENGTH} characters long")
        return raw
    if setting.kind == "path":
        return Path(raw).expanduser()
    if setting.kind == "bool":  # as before: "1" switches on; anything but 1 or 0 is refused
        if raw in ("1", "0"):
            return raw == "1"
        raise ValueError("must be 1 or 0")
    if setting.kind == "networks":
        networks = []
        for part in raw.split(","):
            if part.strip():
                try:
                    networks.append(str(ipaddress.ip_network(part.strip(), strict=False)))
                except ValueError:
                    raise ValueError(f"{part.strip()!r} is not a network (e.g. 10.0.0.0/8)") \
                        from None
        return tuple(networks)
    if setting.kind == "roots":
        return tuple(dict.fromkeys(artifact_root_uri(part.strip())
                                   for part in raw.split(",") if part.strip()))
    number: float
    try:
        number = int(raw) if setting.kind == "int" else float(raw)
    except ValueError:
        raise ValueError(f"must be {'an integer' if setting.kind == 'int' else 'a number'}") \
            from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    if setting.minimum is not None and number < setting.minimum:
        raise ValueError(f"must be at least {setting.minimum:g}")
    return number


def artifact_root_uri(raw: str) -> str:
    """The canonical URI of an artifact root: ``file:///absolute/path`` or
    ``s3://bucket[/prefix]`` without a trailing slash.

    Raises:
        ValueError: another scheme, a relative path, or a path with ``.``, ``..`` or empty
            segments.
    """
    from urllib.parse import unquote, urlparse

    parsed = urlparse(raw)
    path = unquote(parsed.path)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and not parsed.query \
            and not parsed.fragment:
        if not path.startswith("/"):
            raise ValueError(f"must name absolute folders ({raw!r} is relative)")
        folder = "/" + path.strip("/")
        kind = "file://"
    elif parsed.scheme == "s3" and parsed.netloc and not parsed.query and not parsed.fragment:
        folder = "/".join(p for p in (parsed.netloc, path.strip("/")) if p)
        kind = "s3://"
    else:
        raise ValueError(f"must list file:///path or s3://bucket/prefix URIs ({raw!r} is not "
                         "one)")
    if any(segment in (".", "..") for segment in folder.split("/")) or "\\" in folder \
            or "\x00" in folder or "//" in folder.lstrip("/"):
        raise ValueError(f"must name folders without '.', '..' or empty segments ({raw!r})")
    return kind + folder


def parse_options(environ: Mapping[str, str]) -> Options:
    """Parse every declared setting; one error naming each bad value, or the options.

    Raises:
        InvalidInput: a setting has a value of the wrong type or out of range.
    """
    from mlflow_share.errors import InvalidInput

    values: dict[str, Any] = {}
    errors = []
    for setting in DECLARED:
        raw = environ.get(setting.env, "")
        if raw == "":
            values[setting.attribute] = setting.default
            continue
        try:
            values[setting.attribute] = _parse_one(setting, raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.kind in ("secret", "password") else repr(raw[:100])
            errors.append(f"{setting.env} {exc}, got {shown}")
    if errors:
        raise InvalidInput("Invalid mlflow-share settings: " + "; ".join(errors) + ".")
    return Options(values)


@functools.cache
def options() -> Options:
    """This process's settings, parsed from its environment the first time they are asked."""
    return parse_options(os.environ)


def checked_backend_uri(uri: str) -> str:
    """The SQL URI behind a backend store URI (``audit+`` names the audited stores
    explicitly; the server audits either way).

    Raises:
        InvalidInput: not a database mlflow-share runs on (SQLite, PostgreSQL).
    """
    from mlflow_share.errors import InvalidInput

    uri = uri[len(AUDIT_SCHEME_PREFIX):] if uri.startswith(AUDIT_SCHEME_PREFIX) else uri
    if not uri:
        raise InvalidInput(
            "mlflow-share needs a SQL backend store: pass --backend-store-uri "
            "(for example sqlite:///mlflow.db) to `mlflow server`, or use `mlflow-share server`."
        )
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if "://" in uri else "file"
    if scheme not in _SQL_SCHEMES:
        raise InvalidInput(
            f"mlflow-share needs a SQL backend store ({', '.join(_SQL_SCHEMES)}); "
            f"got a {scheme} store."
        )
    return uri


def checked_gateway_destination(destination: str) -> str:
    """Raises InvalidInput unless the gateway can serve from ``destination``."""
    from mlflow_share.errors import InvalidInput

    if not destination.startswith("checksum+"):
        raise InvalidInput(
            "The gateway serves verified versions only: give a checksum+ artifact root "
            f"(for example --artifacts-destination checksum+file://{destination or '/srv/artifacts'}"
            "), or turn the gateway off (`mlflow-share server --no-gateway`; unset "
            f"{GATEWAY_ENV} for `mlflow server`).")
    return destination


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

        uri = checked_backend_uri(os.environ.get(_MLFLOW_BACKEND_STORE_URI, ""))
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
            password_cache_seconds=options().password_cache_seconds,
        )
