"""``mlflow deployments ... -t mlflow-share``: named deployments on the mlflow-share gateway.

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000   # the server mounts the gateway
    # (a standalone `mlflow-share gateway`: export MLFLOW_SHARE_GATEWAY_URI=http://HOST:5001)
    mlflow deployments create -t mlflow-share --name churn -m models:/churn@champion
    mlflow deployments predict -t mlflow-share --name churn --input-path rows.json
    mlflow deployments list|get|update|delete -t mlflow-share ...
    mlflow deployments run-local -t mlflow-share --name churn -m models:/churn@champion

The gateway decides every call (``execute`` on the model); credentials are the stock client's
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, else ``MLFLOW_TRACKING_TOKEN``, in that order). ``run-local``
downloads the version checked against its manifest and serves its ONNX graph on this machine
(needs ``onnxruntime``; the model's own code is never run).
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
import requests
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException

GATEWAY_ENV = "MLFLOW_SHARE_GATEWAY_URI"


class GatewayError(MlflowException, click.ClickException):
    """An MlflowException for Python callers that the ``mlflow deployments`` CLI (click)
    prints as one line and exit status 1, instead of a traceback."""

    def __init__(self, message: str) -> None:
        MlflowException.__init__(self, message)
        self.message = message


def _auth() -> dict[str, str]:
    """The stock client's credentials, in its order (mlflow.utils.rest_utils)."""
    import base64

    user, password = (os.environ.get("MLFLOW_TRACKING_USERNAME"),
                      os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {}


def _gateway_base(target_uri: str) -> str:
    """``mlflow-share:/URL``, else ``$MLFLOW_SHARE_GATEWAY_URI``, else the tracking server
    (``mlflow-share server`` serves the gateway itself)."""
    _, _, rest = target_uri.partition(":/")
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    base = rest or os.environ.get(GATEWAY_ENV) or (
        tracking if tracking.startswith(("http://", "https://")) else "")
    if not base:
        raise GatewayError(
            "No mlflow-share gateway to talk to: set MLFLOW_TRACKING_URI to the mlflow-share "
            f"server (it serves the gateway), or {GATEWAY_ENV} to a standalone gateway.")
    return base.rstrip("/")


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
    """Deployments on the gateway of ``_gateway_base`` (the server's own by default)."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.base = _gateway_base(target_uri)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = requests.request(method, self.base + path, json=body, headers=_auth(),
                                        timeout=60)
        except requests.RequestException:
            raise GatewayError(
                f"Cannot reach the mlflow-share gateway at {self.base}: is the server "
                f"running? (MLFLOW_TRACKING_URI, or {GATEWAY_ENV} for a standalone "
                "gateway)") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            raise GatewayError(f"{data.get('error_code', response.status_code)}: "
                                  f"{data.get('message', response.text[:300])}")
        return data

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        if flavor not in (None, "onnx"):
            raise GatewayError("The mlflow-share gateway serves ONNX models only.")
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
