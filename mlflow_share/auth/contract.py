"""MLflow's own request contract, applied before mlflow-share decides anything.

A REST request is parsed here by MLflow's own ``_get_request_message``, with the validation
schema MLflow's handler for that message passes it, so a malformed request gets exactly the
answer stock MLflow gives (status, error code and words), and every field the decision reads
is the value MLflow's handler will read: query string for a GET with one, else the JSON body
(HEAD included), one spelling of a field, protobuf's types.

MLflow writes each handler's schema inline (``_get_request_message(GetRun(), schema={...})``);
``capture_schemas`` learns them once per process by running a copy of each handler whose
``_get_request_message`` reports its arguments and stops, and whose stores refuse to open, so
nothing is read or written. A handler that does not parse a message this way has no schema
(MLflow validates nothing for it either).
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict
from werkzeug.datastructures import MultiDict

_logger = logging.getLogger(__name__)

Schema = dict[str, list[Callable[..., Any]]]


class _Captured(Exception):
    def __init__(self, schema: Schema | None) -> None:
        super().__init__()
        self.schema = schema


class _Stopped(Exception):
    """A handler reached for a store or an artifact repository: it has no schema to give."""


def _capture(_message: Any, flask_request: Any = None, schema: Schema | None = None) -> Any:
    raise _Captured(schema)


def _stop(*_args: Any, **_kwargs: Any) -> Any:
    raise _Stopped()


_STOPPED_NAMES = ("_get_tracking_store", "_get_model_registry_store", "_get_artifact_repo",
                  "_get_artifact_repo_mlflow_artifacts", "_get_trace_artifact_repo",
                  "get_artifact_repository", "_get_workspace_store", "_get_job_store")


def capture_schemas(flask_app: Any) -> dict[str, Schema | None]:
    """Request message full name → the schema MLflow's handler validates it with."""
    from mlflow.server import handlers

    fake_globals = dict(vars(handlers))
    fake_globals["_get_request_message"] = _capture
    for name in _STOPPED_NAMES:
        if name in fake_globals:
            fake_globals[name] = _stop
    schemas: dict[str, Schema | None] = {}
    for request_class, handler in handlers.HANDLERS.items():
        descriptor = getattr(request_class, "DESCRIPTOR", None)
        if descriptor is None:
            continue
        function = inspect.unwrap(handler)
        if not isinstance(function, types.FunctionType) or function.__module__ != handlers.__name__:
            schemas[descriptor.full_name] = None
            continue
        clone = types.FunctionType(function.__code__, fake_globals, function.__name__,
                                   function.__defaults__, function.__closure__)
        arguments = ["_"] * len(inspect.signature(function).parameters)
        schema: Schema | None = None
        with flask_app.test_request_context("/", method="POST", json={}):
            try:
                clone(*arguments)
            except _Captured as captured:
                schema = captured.schema
            except Exception:  # noqa: BLE001 - a handler that does not parse first: no schema
                schema = None
        schemas[descriptor.full_name] = schema
    return schemas


class RequestView:
    """What MLflow's parsing reads of a Flask request, over mlflow-share's ``IncomingRequest``."""

    def __init__(self, method: str, args: MultiDict[str, str], headers: Mapping[str, str],
                 body: bytes | None) -> None:
        self.method = method
        self.args = args
        self.content_type = headers.get("content-type")
        self._body = body or b""

    def get_json(self, force: bool = False, silent: bool = False) -> Any:
        # Flask's get_json(force=True, silent=True): any body, None when it is not JSON.
        try:
            return json.loads(self._body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            if silent:
                return None
            raise


class Contract:
    """Parses REST requests as MLflow does; learns the handlers' schemas on first use."""

    def __init__(self, flask_app: Any) -> None:
        self._flask_app = flask_app
        self._schemas: dict[str, Schema | None] | None = None
        self._classes: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[dict[str, Schema | None], dict[str, Any]]:
        schemas, classes = self._schemas, self._classes
        if schemas is not None and classes is not None:  # every request after the first
            return schemas, classes
        with self._lock:
            if self._schemas is None or self._classes is None:
                from mlflow.server import handlers

                self._classes = {cls.DESCRIPTOR.full_name: cls  # type: ignore[attr-defined]
                                 for cls in handlers.HANDLERS
                                 if getattr(cls, "DESCRIPTOR", None) is not None}
                self._schemas = capture_schemas(self._flask_app)
            return self._schemas, self._classes

    def message_class(self, key: str) -> Any | None:
        return self._load()[1].get(key)

    def parse(self, key: str, view: RequestView) -> dict[str, Any] | None:
        """The request as MLflow's handler for ``key`` reads it (proto field names, int64 as
        text); None when ``key`` is not a protobuf request. Raises MLflow's own
        ``MlflowException`` for a request MLflow would refuse as malformed."""
        from mlflow_share.mlflow_compat import private

        _get_request_message = private("mlflow.server.handlers", "_get_request_message")
        schemas, classes = self._load()
        request_class = classes.get(key)
        if request_class is None:
            return None
        message = _get_request_message(request_class(), flask_request=view,
                                       schema=schemas.get(key))
        parsed: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
        return parsed
