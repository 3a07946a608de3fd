"""``mlflow_share_client.log_shareable``: an ONNX model logged with it, through the stock
MLflow client against a real server, makes a sharing package that validates the first time
(a plain ``mlflow.onnx.log_model(..., input_example=X)`` does not: no output signature);
what it cannot log is refused in one message that says what to pass, before anything is
logged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ShareServer
from tests.integration.test_sharing import SHARE, X, _classifier

pytestmark = pytest.mark.integration


def _two_inputs() -> Any:
    """A model with two named inputs and two outputs: sum and product."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"],
                                                                        ["product"])],
        "two-inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 2]),
         helper.make_tensor_value_info("product", TensorProto.FLOAT, [None, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _package(server: ShareServer, user: str, name: str, versions: list[str]) -> dict[str, Any]:
    response = server.api("POST", f"{SHARE}/packages", token=server.tokens[user], json={
        "model": name, "versions": versions, "description": "Churn scores",
        "teams": [{"team": "team-b", "permission": "execute"}]})
    assert response.status_code == 200, response.text
    return dict(response.json()["package"])


def _problems(package: dict[str, Any]) -> list[str]:
    return [p for c in package["report"]["checks"] for p in c["problems"]]


def test_a_model_logged_with_log_shareable_validates_the_first_time(
        share_server: ShareServer, as_user: Any, unique: str) -> None:
    import mlflow
    from mlflow.models.model import ModelInfo

    from mlflow_share_client import log_shareable

    name = f"shareable-{unique}"
    as_user("aaron")  # an engineer of team-a: may log, register and package, not publish
    mlflow.set_experiment(f"shareable-{unique}")
    with mlflow.start_run():
        info = log_shareable(_classifier(), name="model", input_example=X[:5].astype(np.float64),
                             registered_model_name=name)
        # The stock way, for contrast: an input example, and no outputs in the signature.
        plain = mlflow.onnx.log_model(_classifier(), name="plain", input_example=X[:5],
                                      registered_model_name=name)
    assert isinstance(info, ModelInfo)
    assert (str(info.registered_model_version), str(plain.registered_model_version)) == ("1", "2")
    outputs = {o["name"]: o["tensor-spec"] for o in info.signature.outputs.to_dict()}
    assert outputs == {"label": {"dtype": "int64", "shape": (-1,)},
                       "probabilities": {"dtype": "float32", "shape": (-1, 2)}}
    # The example was cast to what the model takes (float32), as the gateway casts requests.
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "float32"

    shareable = _package(share_server, "aaron", name, ["1"])
    assert shareable["status"] == "validated", _problems(shareable)
    assert [c["check"] for c in shareable["report"]["checks"] if c["ok"]] == [
        "metadata", "manifest", "onnx", "input_example"]
    rejected = _package(share_server, "aaron", name, ["2"])
    assert rejected["status"] == "rejected"
    assert any("no output signature" in p for p in _problems(rejected)), rejected


def test_several_inputs_and_data_frames_validate_too(share_server: ShareServer, as_user: Any,
                                                     unique: str) -> None:
    import mlflow

    from mlflow_share_client import log_shareable

    name = f"shareable-multi-{unique}"
    as_user("alice")
    mlflow.set_experiment(f"shareable-multi-{unique}")
    rows = np.random.default_rng(3).random((4, 2))
    frame = pd.DataFrame(X[:4], columns=["tenure", "spend", "visits", "tickets"])
    with mlflow.start_run():
        named = log_shareable(_two_inputs(), name="named", input_example={
            "a": rows, "b": rows[::-1]}, registered_model_name=name)
        framed = log_shareable(_classifier().SerializeToString(), name="framed",
                               input_example=frame, registered_model_name=name)
    assert [o["name"] for o in named.signature.outputs.to_dict()] == ["sum", "product"]
    assert [c["name"] for c in framed.signature.inputs.to_dict()] == list(frame.columns)
    package = _package(share_server, "alice", name, [str(named.registered_model_version),
                                                     str(framed.registered_model_version)])
    assert package["status"] == "validated", _problems(package)


def test_what_cannot_be_shared_is_refused_before_anything_is_logged(
        share_server: ShareServer, as_user: Any, unique: str) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlflow_share_client import ShareableModelError, log_shareable

    name = f"never-{unique}"
    as_user("alice")
    mlflow.set_experiment(f"never-{unique}")
    cases: list[tuple[Any, dict[str, Any], tuple[str, ...]]] = [
        (_classifier(), {}, ("needs input_example=", "X (tensor(float), shape [N, 4])")),
        (_classifier(), {"input_example": X[:3, :3]},
         ("fails on the input example in onnxruntime", "Expected: 4", "shape [N, 4]")),
        (_classifier(), {"input_example": X[:3], "signature": None}, ("do not pass signature",)),
        (_two_inputs(), {"input_example": X[:3, :2]}, ("several inputs ['a', 'b']", "dict")),
        (_two_inputs(), {"input_example": {"a": X[:3, :2]}}, ("missing ['b']",)),
        (b"not an onnx model", {"input_example": X[:3]}, ("could not be read as an ONNX",)),
    ]
    zipmap = _classifier_with_zipmap()
    cases.append((zipmap, {"input_example": X[:3]}, ("not a tensor", "'zipmap': False")))
    with mlflow.start_run() as run:
        for model, kwargs, words in cases:
            with pytest.raises(ShareableModelError) as raised:
                log_shareable(model, name="model", registered_model_name=name, **kwargs)
            error = raised.value
            assert isinstance(error, MlflowException) and isinstance(error, ValueError)
            assert error.error_code == "INVALID_PARAMETER_VALUE"
            assert "\n" not in error.message, error.message
            for word in words:
                assert word in error.message, (word, error.message)
    client = MlflowClient()
    assert client.list_artifacts(run.info.run_id) == []
    with pytest.raises(MlflowException, match="not found|RESOURCE_DOES_NOT_EXIST"):
        client.get_registered_model(name)


def _classifier_with_zipmap() -> Any:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    labels = (X[:, 0] + X[:, 2] > 1.0).astype(np.int64)
    return to_onnx(LogisticRegression().fit(X, labels), X[:1])  # outputs a list of dicts
