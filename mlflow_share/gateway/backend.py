"""What the gateway needs from a model runtime, and nothing more.

The gateway's service (which version an alias names, who may run it, the cache, rate limits,
audit events) never touches a runtime: it asks an ``InferenceBackend`` to load a version into
a ``LoadedModel`` and to run one on inputs already checked against that model's signature
(``inputs.feeds``). ``onnx_backend.OnnxBackend`` (verified bytes, onnxruntime) is the one the
gateway serves with; the unit tests give the service a fake one, so routing, refusals and
limits are tested without model files or a runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """One input of a model's signature, as request bodies are checked against it."""

    name: str
    dtype: Any  # numpy type
    shape: tuple[int | None, ...]  # None: any size (symbolic or unknown dimension)
    onnx_type: str  # the type's name in refusals, e.g. "tensor(float)"


@dataclass
class LoadedModel:
    """A version ready to run: what the service caches (by ``identity``) and routes to."""

    name: str
    version: int
    model_id: str
    identity: str  # the verified manifest's identity: a different one is a different model
    session: Any  # the backend's runnable (an onnxruntime.InferenceSession for ONNX)
    inputs: list[TensorSpec]
    outputs: list[str]
    size: int  # bytes of the model file; the cache keeps about twice this in memory
    run_seconds: float = float("inf")  # a moving average of runs; inf until measured


@runtime_checkable
class InferenceBackend(Protocol):
    """Loads versions into runnable models and runs them.

    ``load`` is where a version's bytes are read and checked: it must refuse (raise an
    ``MlflowShareError``) rather than return a model it could not verify; the service caches
    what it returns by identity and audits the load or the refusal.
    """

    def load(self, name: str, version: int) -> LoadedModel:
        """Version ``version`` of the model now named ``name``, verified and ready to run.

        Raises:
            MlflowShareError: it must not be served (``DataLoss``: its bytes are not the
                registered ones; ``InvalidInput``: it is not a model this backend runs;
                ``NotFound``: it has no manifest).
        """
        ...

    def run(self, model: LoadedModel, feeds: dict[str, np.ndarray]) -> list[Any]:
        """The outputs, in ``model.outputs``' order, of ``model`` on ``feeds`` (one array per
        input of ``model.inputs``, already checked against its spec). Any exception means the
        input did not fit the model: the caller answers 400."""
        ...

    def versions(self) -> dict[str, str]:
        """The runtime's name and version (``/version`` shows them)."""
        ...
