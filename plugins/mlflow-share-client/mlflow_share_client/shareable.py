"""Log an ONNX model so that a sharing package made from it passes validation the first time.

A sharing package's validation (``mlflow_share.governance.validation`` on the server) needs,
for each pinned version: an ONNX model that loads in onnxruntime, a logged input example
that fits the model's inputs, and a signature with *outputs* that match what the model
returns for that example (names, dtypes, shapes). ``mlflow.onnx.log_model(...,
input_example=X)`` infers no outputs, so such a version is rejected.

``log_shareable`` runs the model once on the input example with onnxruntime (CPU, as the
server does), infers the whole signature from the input and the named outputs
(``mlflow.models.infer_signature``) and logs the model with both::

    from mlflow_share_client import log_shareable

    with mlflow.start_run():
        info = log_shareable(onnx_model, name="model", input_example=X[:5],
                             registered_model_name="churn-classifier")

Inputs: a numpy array (or nested lists) for a model with one input, a pandas DataFrame
(its columns are the features of a model with one 2-D input, or the inputs by name), or a
dict ``{input name: array}`` for a model with several inputs. The example is cast to the
dtypes the model declares, as the gateway casts a request.
"""

from __future__ import annotations

import os
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# onnxruntime's tensor types as numpy dtypes (names, so numpy is imported only when used).
_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
    "tensor(string)": "object",
}
_MISSING_EXAMPLE = (
    "log_shareable needs input_example=...: a few rows the model accepts (a numpy array, a "
    "pandas DataFrame, or a dict {{input name: array}} for a model with several inputs). "
    "The model runs on it once to infer the signature's outputs, and a sharing package's "
    "validation runs it again on the server. The model's inputs: {inputs}.")


class ShareableModelError(MlflowException, ValueError):
    """The model cannot be logged so that a sharing package would validate; the message
    says what to pass. An ``MlflowException`` (INVALID_PARAMETER_VALUE) and a
    ``ValueError``, so either ``except`` catches it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def log_shareable(onnx_model: Any, name: str | None = None, input_example: Any = None, *,
                  registered_model_name: str | None = None, artifact_path: str | None = None,
                  **log_model_kwargs: Any) -> Any:
    """Log an ONNX model with its input example and a full signature (inputs and outputs),
    optionally registering it, so that a sharing package of the version validates.

    Args:
        onnx_model: an ``onnx.ModelProto``, its serialized bytes, or the path of a
            ``.onnx`` file.
        name: the logged model's name (``mlflow.onnx.log_model(name=...)``; default
            ``"model"``). ``artifact_path`` is MLflow's older name for it.
        input_example: what the model is run on (see the module's docstring); required.
        registered_model_name: also register the logged model as a version of this
            registered model.
        **log_model_kwargs: passed to ``mlflow.onnx.log_model`` (``pip_requirements``,
            ``metadata``, ``tags``, ``await_registration_for``...); not ``signature`` or
            ``input_example``, which this function sets.

    Returns:
        MLflow's ``ModelInfo`` of the logged model (``registered_model_version`` is set
        when it was registered).

    Raises:
        ShareableModelError: no input example, a model that does not load, an example that
            does not fit the model or fails in onnxruntime, or outputs that are not tensors.
    """
    import mlflow.onnx
    from mlflow.models import infer_signature

    if "signature" in log_model_kwargs:
        raise ShareableModelError(
            "log_shareable infers the signature from the model's outputs on the input "
            "example: do not pass signature=... (call mlflow.onnx.log_model to set your own).")
    model, source = _load(onnx_model)
    session = _session(source)
    if input_example is None:
        raise ShareableModelError(_MISSING_EXAMPLE.format(inputs=_describe(session)))
    example, feed = _feed(session, input_example)
    try:
        values = session.run(None, feed)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are many and plain
        raise ShareableModelError(
            f"The ONNX model fails on the input example in onnxruntime ({_said(exc)}). Pass "
            f"an input_example the model accepts; its inputs: {_describe(session)}.") from exc
    outputs = _outputs(session, values)
    signature = infer_signature(example, outputs)
    if artifact_path is None:
        where = {"name": name or "model"}
    elif name is None:
        where = {"artifact_path": artifact_path}
    else:
        raise ShareableModelError("Give name=... (MLflow 3) or artifact_path=..., not both.")
    return mlflow.onnx.log_model(model, input_example=example, signature=signature,
                                 registered_model_name=registered_model_name,
                                 **where, **log_model_kwargs)


def _modules() -> tuple[Any, Any, Any]:
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ShareableModelError(
            f"log_shareable needs numpy, onnx and onnxruntime ({exc.name} is missing): "
            "pip install 'mlflow-share-client[onnx]'.") from None
    return np, onnx, ort


def _load(onnx_model: Any) -> tuple[Any, Any]:
    """The model to log, and what onnxruntime loads (bytes, or the file's path so that
    external data next to it is found)."""
    _, onnx, _ = _modules()
    if isinstance(onnx_model, onnx.ModelProto):
        return onnx_model, onnx_model.SerializeToString()
    try:
        if isinstance(onnx_model, (bytes, bytearray)):
            return onnx.load_from_string(bytes(onnx_model)), bytes(onnx_model)
        if isinstance(onnx_model, (str, os.PathLike)):
            path = os.fspath(onnx_model)
            return onnx.load(path), path
    except Exception as exc:  # noqa: BLE001 - protobuf's and the file system's errors
        raise ShareableModelError(
            f"onnx_model could not be read as an ONNX model: {_said(exc)}.") from exc
    raise ShareableModelError(
        f"onnx_model must be an onnx.ModelProto, its bytes or a .onnx file's path, not "
        f"{type(onnx_model).__name__} (convert it first, e.g. skl2onnx.to_onnx).")


def _said(exc: BaseException) -> str:
    """An error's type and text on one line (onnxruntime's span several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300].rstrip('.')}"


def _session(source: Any) -> Any:
    _, _, ort = _modules()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run is raised here, not also logged
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are many and plain
        raise ShareableModelError(
            f"The ONNX model does not load in onnxruntime on the CPU (the sharing validation "
            f"loads it so): {_said(exc)}.") from exc


def _describe(session: Any) -> str:
    return ", ".join(f"{i.name} ({i.type}, shape {_shape(i.shape)})"
                     for i in session.get_inputs())


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" for d in shape or []) + "]"


def _dtype(node: Any) -> Any:
    np, _, _ = _modules()
    found = _ONNX_DTYPES.get(node.type)
    if found is None:
        raise ShareableModelError(
            f"Input {node.name!r} is {node.type}: only tensor inputs can be shared (the "
            "gateway and the sharing validation feed tensors).")
    return np.dtype(found)


def _array(node: Any, value: Any) -> Any:
    """``value`` as the input's dtype, as the gateway reads a request."""
    np, _, _ = _modules()
    dtype = _dtype(node)
    try:
        array = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise ShareableModelError(
            f"The input example for {node.name!r} cannot be read as {node.type}: {exc}. "
            f"The model's inputs: {_shape(node.shape)}.") from None
    raw = np.asarray(value)
    if dtype.kind in "iu" and raw.dtype.kind == "f" and not np.all(np.mod(raw, 1) == 0):
        raise ShareableModelError(
            f"Input {node.name!r} takes integers ({node.type}); the input example has "
            "fractions.")
    if array.size == 0:
        raise ShareableModelError(f"The input example for {node.name!r} is empty: give at "
                                  "least one row.")
    return array


def _is_frame(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame"


def _feed(session: Any, example: Any) -> tuple[Any, dict[str, Any]]:
    """The example as it is logged (cast to the model's dtypes) and the onnxruntime feed."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    if _is_frame(example):
        if len(inputs) == 1 and len(inputs[0].shape or []) == 2:
            node = inputs[0]
            width = node.shape[1]
            if isinstance(width, int) and example.shape[1] != width:
                raise ShareableModelError(
                    f"Input {node.name!r} takes {width} features; the input example "
                    f"DataFrame has {example.shape[1]} columns {list(example.columns)}.")
            array = _array(node, example.to_numpy())
            frame = example.astype(array.dtype) if array.dtype.kind != "O" else example
            return frame, {node.name: array}
        missing = [n for n in names if n not in example.columns]
        unknown = [str(c) for c in example.columns if c not in names]
        if missing or unknown:
            raise ShareableModelError(
                f"The input example DataFrame's columns must be the model's inputs {names} "
                f"(missing {missing}, unknown {unknown}).")
        feed = {}
        for node in inputs:
            column = example[node.name].to_numpy()
            rest = tuple(d if isinstance(d, int) else 1 for d in (node.shape or [])[1:])
            try:
                feed[node.name] = _array(node, column.reshape((-1, *rest)))
            except ValueError:
                raise ShareableModelError(
                    f"Column {node.name!r} of the input example must hold one value per row "
                    f"for its input's shape {_shape(node.shape)}.") from None
        return example.astype({n: feed[n].dtype for n in names
                               if feed[n].dtype.kind != "O"}), feed
    if isinstance(example, dict):
        missing = [n for n in names if n not in example]
        unknown = [str(k) for k in example if k not in names]
        if missing or unknown:
            raise ShareableModelError(
                f"The input example's keys must be exactly the model's inputs {names} "
                f"(missing {missing}, unknown {unknown}).")
        feed = {node.name: _array(node, example[node.name]) for node in inputs}
        return dict(feed), feed
    if len(inputs) != 1:
        raise ShareableModelError(
            f"The model has several inputs {names}: pass input_example as a dict "
            "{input name: array} (or a DataFrame with a column per input).")
    array = _array(inputs[0], example)
    return array, {inputs[0].name: array}


def _outputs(session: Any, values: list[Any]) -> dict[str, Any]:
    """The outputs by name, for the signature; each must be a tensor."""
    np, _, _ = _modules()
    found = {}
    for node, value in zip(session.get_outputs(), values):
        if not isinstance(value, np.ndarray):
            raise ShareableModelError(
                f"Output {node.name!r} is {node.type}, not a tensor: the sharing validation "
                "checks tensor outputs against the signature. Export the model with tensor "
                "outputs (for a scikit-learn classifier: skl2onnx options={'zipmap': False}).")
        found[node.name] = value
    return found
