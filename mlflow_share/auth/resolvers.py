"""Find which MLflow resource a request touches, by reading MLflow's own tables.

Runs and logged models never move between experiments and their IDs are the server's
(random UUIDs, never reused), so those lookups are cached for the life of the process. Trace
IDs are chosen by clients and a trace can be deleted and its ID used again elsewhere, so
traces are always looked up. Registered-model names can be renamed, so they go through the
policy engine's name index, which every rename invalidates.
"""

from __future__ import annotations

import functools
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share.errors import InvalidInput
from mlflow_share.mlflow_compat import tables as mt

_CACHE_SIZE = 100_000


class _LruCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: str, load: Callable[[str], str | None]) -> str | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = load(key)
        if value is not None:  # never cache "not found": the resource may be created next
            with self._lock:
                self._data[key] = value
                if len(self._data) > self._size:
                    self._data.popitem(last=False)
        return value


@dataclass(frozen=True)
class TraceLocation:
    """Where a trace lives: its experiment, and where its data is stored."""

    trace_id: str
    experiment_id: str
    experiment_artifact_location: str | None
    artifact_tag: str | None

    def stored_where_expected(self) -> bool:
        """Whether the trace's data tag is the folder MLflow's store derives for it
        (``<experiment root>/traces/<trace id>/artifacts``), not one a client named."""
        if self.artifact_tag is None or self.experiment_artifact_location is None:
            return True  # MLflow itself refuses a trace without its location
        from mlflow.utils.uri import append_to_uri_path

        expected = append_to_uri_path(self.experiment_artifact_location, "traces",
                                      self.trace_id, "artifacts")
        return self.artifact_tag == expected


class MlflowLookups:
    """Read-only queries on MLflow's schema (tables ``experiments``, ``runs``, ...)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._run_experiment = _LruCache(_CACHE_SIZE)
        self._logged_model_experiment = _LruCache(_CACHE_SIZE)

    def _scalar(self, query: sa.Select[Any]) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else str(value)

    def _scalar_where(self, column: sa.Column[Any], key_column: sa.Column[Any],
                      key: str) -> str | None:
        """``column`` of the row whose ``key_column`` is ``key``."""
        return self._scalar(sa.select(column).where(key_column == key))

    def experiment_of_run(self, run_id: str) -> str | None:
        return self._run_experiment.get_or_load(run_id, functools.partial(
            self._scalar_where, mt.runs.c.experiment_id, mt.runs.c.run_uuid))

    def artifact_uri_of_run(self, run_id: str) -> str | None:
        """Where the run's artifacts are stored (not cached: read only by registrations)."""
        return self._scalar_where(mt.runs.c.artifact_uri, mt.runs.c.run_uuid, run_id)

    def experiment_of_logged_model(self, model_id: str) -> str | None:
        return self._logged_model_experiment.get_or_load(model_id, functools.partial(
            self._scalar_where, mt.logged_models.c.experiment_id, mt.logged_models.c.model_id))

    def trace_location(self, trace_id: str) -> TraceLocation | None:
        ti, e, tt = mt.trace_info, mt.experiments, mt.trace_tags
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ti.c.experiment_id, e.c.artifact_location, tt.c.value)
                .select_from(ti.join(e, e.c.experiment_id == ti.c.experiment_id).outerjoin(
                    tt, sa.and_(tt.c.request_id == ti.c.request_id,
                                tt.c.key == "mlflow.artifactLocation")))
                .where(ti.c.request_id == trace_id)).first()
        if row is None:
            return None
        return TraceLocation(trace_id, str(row[0]), row[1], row[2])

    def assessment_exists(self, assessment_id: str) -> bool:
        a = mt.assessments.c
        return self._scalar(sa.select(a.assessment_id).where(
            a.assessment_id == assessment_id)) is not None

    def source_run_of_logged_model(self, model_id: str) -> str | None:
        lm = mt.logged_models.c
        return self._scalar(sa.select(lm.source_run_id).where(lm.model_id == model_id))

    def experiment_exists(self, experiment_id: str) -> bool:
        if not (experiment_id.isascii() and experiment_id.isdigit()) or len(experiment_id) > 18:
            return False
        e = mt.experiments.c
        return self._scalar(sa.select(e.experiment_id).where(
            e.experiment_id == mt.bigint(int(experiment_id)))) is not None

    def experiment_by_name(self, name: str) -> str | None:
        e = mt.experiments.c
        return self._scalar(sa.select(e.experiment_id).where(e.name == name))

    def model_exists(self, name: str) -> bool:
        rm = mt.registered_models.c
        return self._scalar(sa.select(rm.name).where(rm.name == name)) is not None

    def models_of_run(self, run_id: str) -> list[tuple[str, int]]:
        """``(name, version)`` of the registered model versions registered from ``run_id``."""
        mv = mt.model_versions.c
        with self.engine.connect() as conn:
            rows: Any = conn.execute(sa.select(mv.name, mv.version).where(
                mv.run_id == run_id)).all()
        return sorted({(str(name), int(version)) for name, version in rows})

    def models_serving_location(self, segments: list[str]) -> list[tuple[str, int]]:
        """``(name, version)`` of the model versions whose files include this artifact path.

        ``segments`` is a validated artifact path: ``<exp>/<run>/artifacts/...`` for run
        artifacts, ``<exp>/models/<model id>/artifacts/...`` for logged models.
        """
        if len(segments) < 3:
            return []
        experiment_id = segments[0]
        location = "mlflow-artifacts:/" + "/".join(segments)
        if segments[1] == "models":
            owner_column, owner = "model_id", segments[2]
            base = f"mlflow-artifacts:/{experiment_id}/models/{owner}/artifacts"
        else:
            owner_column, owner = "run_id", segments[1]
            base = f"mlflow-artifacts:/{experiment_id}/{owner}/artifacts"
        mv = mt.model_versions.c
        query = sa.select(mv.name, mv.version, mv.source, mv.storage_location)
        rows: Any
        with self.engine.connect() as conn:
            if owner_column == "run_id":
                rows = conn.execute(query.where(mv.run_id == owner)).all()
            else:
                rows = conn.execute(query.where(sa.or_(
                    mv.source == f"models:/{owner}",
                    mv.storage_location.like(_like_prefix(base), escape="\\")))).all()
        found: set[tuple[str, int]] = set()
        for name, version, source, storage_location in rows:
            for root in _artifact_roots(str(source or ""), str(storage_location or ""), base, owner):
                if location == root or location.startswith(root + "/"):
                    found.add((str(name), int(version)))
        return sorted(found)


def _artifact_roots(source: str | None, storage_location: str | None, base: str,
                    owner: str) -> list[str]:
    """The ``mlflow-artifacts:/`` folders a model version's files live in."""
    roots = []
    for uri in (source, storage_location):
        if not uri:
            continue
        if uri.startswith("mlflow-artifacts:/"):
            roots.append(uri.rstrip("/"))
        elif uri.startswith(f"runs:/{owner}/"):
            roots.append(f"{base}/{uri[len(f'runs:/{owner}/'):]}".rstrip("/"))
        elif uri == f"models:/{owner}":
            roots.append(base)
    return roots


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


_MAX_NAME_BYTES = 255  # NAME_MAX of the usual file systems
_MAX_PATH_BYTES = 1024  # an S3 object key's limit
_FORBIDDEN_PATH_CHARS = ("\\", "\x00", ";", "?", "#")


def check_path_length(path: str) -> None:
    """A path no file system or object store takes is a 400 here, not the OS error (and a
    500) it becomes once MLflow hands it to one."""
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        raise InvalidInput(f"Invalid artifact path: longer than {_MAX_PATH_BYTES} bytes.")
    if any(len(seg.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES
           for seg in path.split("/")):
        raise InvalidInput(f"Invalid artifact path: a name longer than {_MAX_NAME_BYTES} bytes.")


def validate_artifact_path(path: str, *, allow_empty: bool = False) -> list[str]:
    """Split a relative artifact path into segments, or raise ``InvalidInput`` (400).

    Refuses what MLflow's path-traversal advisories used: ``..`` and ``.`` segments, absolute
    paths, backslashes, NUL, URL schemes, empty segments (``a//b``) and anything that
    normalises differently from how it reads.
    """
    if path == "" and allow_empty:
        return []
    if "%" in path and unquote(path) != path:
        # MLflow decodes paths again before using them: an encoded "/", "." or "\\" here
        # would become a traversal there.
        raise InvalidInput(f"Invalid artifact path {path!r}: percent-encoded characters.")
    if (
        not path
        or path.startswith("/")
        or any(ch in path for ch in _FORBIDDEN_PATH_CHARS)
        or ":" in path.split("/", 1)[0]
    ):
        raise InvalidInput(f"Invalid artifact path {path!r}.")
    check_path_length(path)  # a file system refuses such a name only once an upload started
    segments = path.rstrip("/").split("/")
    if any(seg in ("", ".", "..") for seg in segments) or posixpath.normpath(path.rstrip("/")) != path.rstrip("/"):
        raise InvalidInput(f"Invalid artifact path {path!r}.")
    return segments
