"""Request bodies as ``mlflow models serve`` takes them, checked against the ONNX inputs.

Accepted (JSON): ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
(each with optional ``params``); CSV with ``Content-Type: text/csv``. A data frame feeds a
model with one 2-D input column by column (the frame's columns are its features, in order),
or a model with several inputs by column name. A wrong column, shape or dtype is a 400 that
names it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from mlflow_share.errors import InvalidInput
from mlflow_share.gateway.backend import TensorSpec

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse(body: bytes, content_type: str) -> tuple[Any, dict[str, Any]]:
    """``(payload, params)``: a pandas DataFrame, a list, or a dict of arrays."""
    import pandas as pd

    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/csv":
        try:
            return pd.read_csv(io.BytesIO(body)), {}
        except (ValueError, pd.errors.ParserError) as exc:
            raise InvalidInput(f"The CSV body could not be parsed: {exc}") from None
    if kind not in ("application/json", ""):
        raise InvalidInput(f"Unsupported content type {kind!r}: use application/json or "
                           "text/csv.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"The JSON body must be an object with one of {list(FORMATS)}.")
    present = [key for key in FORMATS if key in data]
    if len(present) != 1 or set(data) - {present[0], "params"}:
        raise InvalidInput(f"The JSON body must have exactly one of {list(FORMATS)} (and "
                           "optionally 'params').")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'params' must be an object.")
    key, value = present[0], data[present[0]]
    try:
        if key == "dataframe_split":
            if not isinstance(value, dict) or "data" not in value:
                raise InvalidInput("'dataframe_split' needs 'columns' and 'data'.")
            return pd.DataFrame(value["data"], columns=value.get("columns"),
                                index=value.get("index")), params
        if key == "dataframe_records":
            if not isinstance(value, list):
                raise InvalidInput("'dataframe_records' must be a list of records.")
            return pd.DataFrame.from_records(value), params
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"'{key}' does not describe a data frame: {exc}") from None
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}, params
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return pd.DataFrame.from_records(value), params  # instances as records
    if not isinstance(value, list):
        raise InvalidInput(f"'{key}' must be a list or an object of named inputs.")
    return value, params


def _array(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=spec.dtype)
    except (ValueError, TypeError):
        raise InvalidInput(f"Input {name!r} cannot be read as {spec.onnx_type}.") from None
    if spec.dtype is not np.object_ and np.issubdtype(spec.dtype, np.integer):
        raw = np.asarray(value)
        if raw.dtype.kind == "f" and not np.all(np.mod(raw, 1) == 0):
            raise InvalidInput(f"Input {name!r} expects integers ({spec.onnx_type}).")
    if spec.shape and array.ndim != len(spec.shape):
        raise InvalidInput(f"Input {name!r} expects {len(spec.shape)} dimensions "
                           f"{_shape(spec)}, got shape {list(array.shape)}.")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if want is not None and want != got:
            raise InvalidInput(f"Input {name!r} expects size {want} on axis {axis} "
                               f"{_shape(spec)}, got shape {list(array.shape)}.")
    if array.size == 0:
        raise InvalidInput(f"Input {name!r} is empty.")
    return array


def _shape(spec: TensorSpec) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"


def feeds(payload: Any, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The onnxruntime feed for ``payload``, or 400 naming what does not fit."""
    import pandas as pd

    names = [spec.name for spec in inputs]
    if isinstance(payload, pd.DataFrame):
        if len(inputs) == 1 and len(inputs[0].shape) == 2:
            spec = inputs[0]
            width = spec.shape[1]
            if width is not None and payload.shape[1] != width:
                raise InvalidInput(f"Input {spec.name!r} expects {width} columns, got "
                                   f"{payload.shape[1]}: {[str(c) for c in payload.columns]}.")
            return {spec.name: _array(spec.name, payload.to_numpy(), spec)}
        missing = [n for n in names if n not in payload.columns]
        if missing:
            raise InvalidInput(f"Missing column(s) {missing}; the model's inputs are {names}.")
        unknown = [str(c) for c in payload.columns if c not in names]
        if unknown:
            raise InvalidInput(f"Unknown column(s) {unknown}; the model's inputs are {names}.")
        try:
            return {s.name: _array(s.name, payload[s.name].to_numpy().reshape(
                (-1,) + tuple(d or 1 for d in s.shape[1:])), s) for s in inputs}
        except ValueError:
            raise InvalidInput(f"Each of the columns {names} must hold one value per row for "
                               "its input's shape.") from None
    if isinstance(payload, dict):
        missing = [n for n in names if n not in payload]
        unknown = [k for k in payload if k not in names]
        if missing or unknown:
            raise InvalidInput(f"Named inputs must be exactly {names} (missing {missing}, "
                               f"unknown {unknown}).")
        return {s.name: _array(s.name, payload[s.name], s) for s in inputs}
    if len(inputs) != 1:
        raise InvalidInput(f"The model has several inputs {names}: name them.")
    return {inputs[0].name: _array(inputs[0].name, payload, inputs[0])}


def predictions(outputs: list[str], values: list[Any]) -> Any:
    """``{"predictions": ...}``'s value: one output as a list, several by name."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                # JSON has no NaN or infinity: they become null, as pandas writes them.
                cleaned = value.astype(object)
                cleaned[~np.isfinite(value)] = None
                return cleaned.tolist()
            return value.tolist()
        if isinstance(value, list):  # sequence(map) outputs, e.g. ZipMap
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, np.generic):
            item = value.item()
            return None if isinstance(item, float) and not np.isfinite(item) else item
        return value

    if len(outputs) == 1:
        return plain(values[0])
    return {name: plain(value) for name, value in zip(outputs, values)}
