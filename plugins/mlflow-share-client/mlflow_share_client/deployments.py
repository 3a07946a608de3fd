"""``mlflow deployments ... -t mlflow-share``: named deployments on the mlflow-share gateway.

    export MLFLOW_SHARE_GATEWAY_URI=http://127.0.0.1:5001   # and MLFLOW_TRACKING_TOKEN
    mlflow deployments create -t mlflow-share --name churn -m models:/churn@champion
    mlflow deployments predict -t mlflow-share --name churn --input-path rows.json
    mlflow deployments list|get|update|delete -t mlflow-share ...
    mlflow deployments run-local -t mlflow-share --name churn -m models:/churn@champion

The gateway decides every call (``execute`` on the model); credentials are the stock client's
(``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``). ``run-local``
downloads the version checked against its manifest and serves its ONNX graph on this machine
(needs ``onnxruntime``; the model's own code is never run).
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException

GATEWAY_ENV = "MLFLOW_SHARE_GATEWAY_URI"


def _auth() -> dict[str, str]:
    import base64

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (os.environ.get("MLFLOW_TRACKING_USERNAME"),
                      os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()}
    return {}


def _inputs(inputs: Any) -> dict[str, Any]:
    try:
        import pandas as pd

        if isinstance(inputs, pd.DataFrame):
            return {"dataframe_split": json.loads(inputs.to_json(orient="split", index=False))}
    except ImportError:
        pass
    if isinstance(inputs, dict) and any(k in inputs for k in (
            "dataframe_split", "dataframe_records", "instances", "inputs")):
        return inputs
    if hasattr(inputs, "tolist"):
        inputs = inputs.tolist()
    return {"inputs": inputs}


class MlflowShareDeploymentClient(BaseDeploymentClient):
    """Deployments on the gateway at ``$MLFLOW_SHARE_GATEWAY_URI`` (or ``mlflow-share:/URL``)."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        _, _, rest = target_uri.partition(":/")
        self.base = (rest or os.environ.get(GATEWAY_ENV) or "http://127.0.0.1:5001").rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, self.base + path, json=body, headers=_auth(),
                                    timeout=60)
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            raise MlflowException(f"{data.get('error_code', response.status_code)}: "
                                  f"{data.get('message', response.text[:300])}")
        return data

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        if flavor not in (None, "onnx"):
            raise MlflowException("The mlflow-share gateway serves ONNX models only.")
        return dict(self._call("POST", "/v1/deployments", {"name": name, "model_uri": model_uri}))

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        if model_uri is None:
            return self.get_deployment(name)
        return dict(self._call("PATCH", f"/v1/deployments/{name}", {"model_uri": model_uri}))

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> None:
        self._call("DELETE", f"/v1/deployments/{name}")

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/deployments")["deployments"])

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/deployments/{name}"))

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        data = self._call("POST", f"/v1/deployments/{deployment_name}/invocations",
                          _inputs(inputs))
        return PredictionsResponse.from_json(json.dumps(data))


def run_local(name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, Any] | None = None) -> None:
    """Serve a verified download of ``model_uri`` on 127.0.0.1 (``config``: ``port``)."""
    import numpy as np
    import onnxruntime as ort
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlflow_share_client.verify import download_verified

    folder = download_verified(model_uri)
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    outputs = [o.name for o in session.get_outputs()]
    port = int((config or {}).get("port", 5002))

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._send(200, {}) if self.path in ("/ping", "/health") else self._send(404, {})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/invocations":
                return self._send(404, {})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                rows = body.get("inputs", body.get("instances"))
                dtype = np.float32 if first.type == "tensor(float)" else None
                values = session.run(None, {first.name: np.asarray(rows, dtype=dtype)})
            except Exception as exc:  # noqa: BLE001 - the caller gets the reason
                return self._send(400, {"error_code": "BAD_REQUEST", "message": str(exc)})
            result = (values[0].tolist() if len(values) == 1 else
                      {n: v.tolist() for n, v in zip(outputs, values)})
            self._send(200, {"predictions": result})

    print(f"Serving {model_uri} (verified, {folder}) on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def target_help() -> str:
    return __doc__ or ""
