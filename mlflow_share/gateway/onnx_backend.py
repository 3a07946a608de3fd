"""The ONNX backend: verified bytes, ONNX only, run by onnxruntime on the CPU.

A version is loaded from its registered copy through the checksum repository: every file of
its manifest is read and checked (size and SHA-256, against the manifest and the digest
ledger), the manifest itself against its digest and the version's identity, and, when signing
keys are configured, its OpenSSF Model Signing signature against the digests of that same
read (no second pass: once per load, then the loaded model is cached by identity); only then
is ``model.onnx`` handed to onnxruntime, from memory, with the providers the gateway pins.
Nothing from the model is imported or unpickled: a model whose MLmodel declares any flavor
but ONNX (or a ``loader_module`` other than MLflow's ONNX loader) is refused, and so is an
ONNX graph with external data (it could name files outside the model).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml

from mlflow_share.artifacts import manifest as mf
from mlflow_share.artifacts import oms, registration, signing
from mlflow_share.artifacts.repository import ChecksumArtifactRepository
from mlflow_share.errors import DataLoss, InvalidInput
from mlflow_share.gateway.backend import LoadedModel, TensorSpec

MODEL_FILE = "model.onnx"
_ALLOWED_FLAVORS = {"onnx", "python_function"}
_ONNX_LOADER = "mlflow.onnx"
_NUMPY_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
    "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
}


def specs(args: list[Any]) -> list[TensorSpec]:
    """The signature of a session's inputs (``session.get_inputs()``) as bodies are checked
    against it; 400 for a type the gateway cannot feed."""
    specs = []
    for arg in args:
        dtype = _NUMPY_TYPES.get(arg.type)
        if dtype is None:
            raise InvalidInput(f"Input {arg.name!r} has an unsupported type {arg.type}.")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or []))
        specs.append(TensorSpec(arg.name, dtype, shape, arg.type))
    return specs


def check_flavors(mlmodel: bytes | None) -> None:
    """Refuse a model that would need code of its own (pickles, custom loaders)."""
    if mlmodel is None:
        return
    try:
        spec = yaml.safe_load(mlmodel) or {}
    except yaml.YAMLError:
        raise InvalidInput("The model's MLmodel file is not valid YAML.") from None
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    if not isinstance(flavors, dict):
        raise InvalidInput("The model's MLmodel file has no valid flavors.")
    extra = sorted(set(flavors) - _ALLOWED_FLAVORS)
    if extra:
        raise InvalidInput(f"The gateway serves ONNX models only; this one has flavors {extra}.")
    loader = (flavors.get("python_function") or {}).get("loader_module")
    if loader not in (None, _ONNX_LOADER):
        raise InvalidInput(f"The model declares loader_module {loader!r}: refused, the gateway "
                           "never runs code shipped with a model.")


def _tensors(graph: Any) -> Any:
    """Every tensor a graph holds: initializers, sparse ones, attributes, subgraphs'."""
    for tensor in graph.initializer:
        yield tensor
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes: Any) -> Any:
    for attribute in attributes:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        for sparse in attribute.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attribute.HasField("g"):
            yield from _tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _tensors(graph)


def parse_onnx(model_bytes: bytes) -> Any:
    """The model's protobuf; 400 if it is not one, or if any tensor lives in external data
    (a file name the runtime would open on the gateway's host)."""
    import onnx
    from google.protobuf.message import DecodeError

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(model_bytes)
    except (DecodeError, RuntimeError, ValueError):
        raise InvalidInput("model.onnx is not an ONNX model.") from None
    tensors = list(_tensors(proto.graph))
    for function in proto.functions:
        for node in function.node:
            tensors.extend(_attribute_tensors(node.attribute))
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise InvalidInput("The ONNX graph references external data files: refused.")
    return proto


def read_files(engine: sa.Engine, repo: ChecksumArtifactRepository, name: str, version: int,
               keep: tuple[str, ...], keys: oms.SigningKeys | None = None
               ) -> tuple[registration.ManifestRecord, dict[str, bytes]]:
    """Check every file of a version against its manifest (and, with ``keys`` that hold
    any key, against its OMS signature); return the bytes of ``keep``."""
    record = registration.find_manifest(engine, name, str(version))
    if record.problems():
        raise DataLoss(f"The manifest of {name!r} version {version} does not match its identity.")
    files = mf.resources(record.statement)
    root = repo.at_root()
    kept: dict[str, bytes] = {}
    read: dict[str, str] = {}
    for relative, (size, sha) in sorted(files.items()):
        opened = root.open_verified(f"{record.location}/{relative}")
        hasher, length, chunks = hashlib.sha256(), 0, []
        for chunk in root.iter_verified(opened):
            hasher.update(chunk)
            length += len(chunk)
            if relative in keep:
                chunks.append(chunk)
        if (length, hasher.hexdigest()) != (size, sha):
            raise DataLoss(f"{name!r} version {version}: {relative} does not match the manifest "
                           f"(expected SHA-256 {sha}, actual {hasher.hexdigest()}).")
        if relative in keep:
            kept[relative] = b"".join(chunks)
        read[relative] = hasher.hexdigest()
    if keys is not None:
        signing.check_files(engine, record, keys, read)
    return record, kept


def read_version(engine: sa.Engine, repo: ChecksumArtifactRepository, name: str,
                 version: int, keys: oms.SigningKeys | None = None
                 ) -> tuple[registration.ManifestRecord, bytes, bytes | None]:
    """The version's manifest, ``model.onnx`` and ``MLmodel`` bytes, every file checked."""
    record, kept = read_files(engine, repo, name, version, (MODEL_FILE, "MLmodel"), keys)
    if MODEL_FILE not in kept:
        raise InvalidInput(f"{name!r} version {version} has no {MODEL_FILE}.")
    return record, kept[MODEL_FILE], kept.get("MLmodel")


def new_session(model_bytes: bytes, name: str, version: int, *, intra_op_threads: int = 1
                ) -> Any:
    """An onnxruntime session on the CPU provider, or 400 saying the model does not load."""
    import onnxruntime as ort

    parse_onnx(model_bytes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model_bytes, sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are many and plain
        raise InvalidInput(f"{name!r} version {version}: model.onnx does not load in "
                           f"onnxruntime ({type(exc).__name__}).") from None


def load_version(engine: sa.Engine, repo: ChecksumArtifactRepository, name: str, version: int,
                 *, intra_op_threads: int = 1, keys: oms.SigningKeys | None = None
                 ) -> LoadedModel:
    record, model_bytes, mlmodel = read_version(engine, repo, name, version, keys)
    check_flavors(mlmodel)
    session = new_session(model_bytes, name, version, intra_op_threads=intra_op_threads)
    return LoadedModel(name, version, record.model_id, record.identity, session,
                       specs(session.get_inputs()), [o.name for o in session.get_outputs()],
                       len(model_bytes))


class OnnxBackend:
    """The gateway's ``InferenceBackend``: versions read through the checksum repository
    ``repo`` (manifests found in ``engine``), their signatures checked with ``keys`` (default:
    the ``MLFLOW_SHARE_SIGNING_*`` settings; none configured, none checked), run by
    onnxruntime with ``intra_op_threads`` threads per run (the gateway runs calls side by
    side, a thread each)."""

    def __init__(self, engine: sa.Engine, repo: ChecksumArtifactRepository, *,
                 intra_op_threads: int = 1, keys: oms.SigningKeys | None = None) -> None:
        import onnxruntime  # at start-up: a gateway without its runtime does not start

        self.engine, self.repo = engine, repo
        self.intra_op_threads = intra_op_threads
        self.keys = keys if keys is not None else oms.server_keys()  # bad keys: no start
        self.keys.warm()
        self._runtime_version = str(onnxruntime.__version__)

    def load(self, name: str, version: int) -> LoadedModel:
        return load_version(self.engine, self.repo, name, version,
                            intra_op_threads=self.intra_op_threads, keys=self.keys)

    def run(self, model: LoadedModel, feeds: dict[str, np.ndarray]) -> list[Any]:
        values: list[Any] = model.session.run(None, feeds)
        return values

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": self._runtime_version}
