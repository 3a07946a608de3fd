"""Loaded versions for the gateway: the bounded cache, and which version a name points at.

The cache holds what the inference backend (``backend.InferenceBackend``; the gateway's is
``onnx_backend.OnnxBackend``: verified bytes, ONNX only) loaded, by identity. Which version an
alias or a number names, and its identity, is read from MLflow's registry tables (through the
``mlflow_compat.tables`` fence) joined to the manifests mlflow-share recorded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.artifacts import registration
from mlflow_share.errors import DataLoss, MlflowShareError, NotFound
from mlflow_share.gateway.backend import InferenceBackend, LoadedModel, TensorSpec
from mlflow_share.gateway.onnx_backend import (
    MODEL_FILE,
    check_flavors,
    load_version,
    new_session,
    parse_onnx,
    read_files,
    read_version,
    specs,
)
from mlflow_share.mlflow_compat import tables as mt

# Kept importable from here, where they lived before the backend split (governance's
# validation runs the same checks and sessions as the gateway).
__all__ = [
    "MODEL_FILE", "InferenceBackend", "LoadedModel", "ModelCache", "TensorSpec",
    "check_flavors", "current_identity", "load_version", "new_session", "parse_onnx",
    "read_files", "read_version", "resolve", "resolve_alias", "servable_aliases", "specs",
]


class ModelCache:
    """Loaded versions by identity, least recently used out beyond ``max_bytes``.

    Loaded through ``backend`` and keyed by the version's identity (manifest + run + params),
    so a model deleted and recreated under the same name, or a version whose manifest changed,
    is never served from an old entry. A failed load is remembered for ``retry_after`` seconds: callers get the
    same refusal without the files being read again.
    """

    def __init__(self, backend: InferenceBackend, *, max_bytes: int = 1024**3,
                 retry_after: float = 30.0) -> None:
        self.backend = backend
        self.max_bytes, self.retry_after = max_bytes, retry_after
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._failed: dict[str, tuple[float, MlflowShareError]] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, name: str, version: int, identity: str) -> tuple[LoadedModel, bool]:
        """The loaded version and whether this call loaded it."""
        with self._lock:
            model = self._models.get(identity)
            if model is not None:
                self._models.move_to_end(identity)
                return model, False
            failed = self._failed.get(identity)
            if failed is not None and time.monotonic() - failed[0] < self.retry_after:
                raise failed[1]
            loading = self._loading.setdefault(identity, threading.Lock())
        with loading:  # one load per version at a time; the others wait for it
            with self._lock:
                model = self._models.get(identity)
                if model is not None:
                    return model, False
            try:
                model = self.backend.load(name, version)
                if model.identity != identity:
                    raise DataLoss(f"{name!r} version {version} changed while it was loaded.")
            except MlflowShareError as exc:
                with self._lock:
                    self._failed[identity] = (time.monotonic(), exc)
                    self._loading.pop(identity, None)
                raise
            with self._lock:
                self._models[identity] = model
                self._failed.pop(identity, None)
                self._loading.pop(identity, None)
                # A session holds about twice its file in memory; the newest always stays.
                while sum(2 * m.size for m in self._models.values()) > self.max_bytes and \
                        len(self._models) > 1:
                    self._models.popitem(last=False)
            return model, True

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def peek(self, identity: str) -> LoadedModel | None:
        """The loaded version with this identity, if it is loaded (never loads)."""
        with self._lock:
            model = self._models.get(identity)
            if model is not None:
                self._models.move_to_end(identity)  # the LRU order counts every call
            return model


_versions, _aliases, _manifests = mt.model_versions, mt.registered_model_aliases, \
    db.model_manifests
# A version's manifest is the one recorded at its storage location (MLflow's proxied
# ``mlflow-artifacts:/`` URI, the scheme cut off); a version without one has no identity.
_SERVABLE = sa.select(_versions.c.version, _manifests.c.identity)
_WITH_MANIFEST = _versions.outerjoin(_manifests, _manifests.c.location == sa.func.substr(
    _versions.c.storage_location, sa.literal_column(str(len(registration.PROXY_SCHEME) + 1))))
# MLflow deletes a version softly (stage Deleted_Internal, files kept): never served.
_LIVE = _versions.c.current_stage != "Deleted_Internal"
_BY_ALIAS = _SERVABLE.select_from(_WITH_MANIFEST.join(_aliases, sa.and_(
    _aliases.c.name == _versions.c.name, _aliases.c.version == _versions.c.version))).where(
    _aliases.c.name == sa.bindparam("n"), _aliases.c.alias == sa.bindparam("a"), _LIVE)
_BY_VERSION = _SERVABLE.select_from(_WITH_MANIFEST).where(
    _versions.c.name == sa.bindparam("n"), _versions.c.version == sa.bindparam("v"), _LIVE)


def _servable(engine: sa.Engine, query: Any, params: dict[str, Any], missing: str
              ) -> tuple[int, str]:
    with engine.connect() as conn:
        row = conn.execute(query, params).first()
    if row is None:
        raise NotFound(missing)
    if row.identity is None:
        raise NotFound(f"{params['n']!r} version {row.version} has no manifest: register it on "
                       "a server with a checksum+ artifact root to serve it.")
    return int(row.version), str(row.identity)


def resolve(engine: sa.Engine, name: str, alias: str) -> tuple[int, str]:
    """The version an alias names now and its identity, in one query (404 if none)."""
    return _servable(engine, _BY_ALIAS, {"n": name, "a": alias},
                     f"Registered model {name!r} has no alias {alias!r}.")


def current_identity(engine: sa.Engine, name: str, version: int) -> str:
    """The identity of version ``version`` of the model now named ``name`` (404 if none)."""
    return _servable(engine, _BY_VERSION, {"n": name, "v": version},
                     f"Registered model {name!r} has no version {version}.")[1]


def resolve_alias(engine: sa.Engine, name: str, alias: str) -> int:
    """The version ``alias`` names, servable or not (a deployment may name it before its
    version can load; 404 if there is no such alias)."""
    with engine.connect() as conn:
        version = conn.execute(sa.select(_aliases.c.version).where(
            _aliases.c.name == name, _aliases.c.alias == alias)).scalar()
    if version is None:
        raise NotFound(f"Registered model {name!r} has no alias {alias!r}.")
    return int(version)


def servable_aliases(engine: sa.Engine) -> list[tuple[str, str | None, int | None]]:
    """``(model, alias, version)`` for every model with a recorded manifest, by model name;
    ``(model, None, None)`` for one without aliases."""
    query = sa.select(_manifests.c.name, _aliases.c.alias, _aliases.c.version).select_from(
        _manifests.outerjoin(_aliases, _aliases.c.name == _manifests.c.name)).group_by(
        _manifests.c.name, _aliases.c.alias, _aliases.c.version).order_by(_manifests.c.name)
    with engine.connect() as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(query).all()]
