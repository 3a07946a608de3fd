"""``MLFLOW_TRACKING_AUTH=mlflow-share``: the stock MLflow client with a token from a private
file, renewed before it expires; a file others can read is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ShareServer

pytestmark = pytest.mark.integration
SHARE = "/api/2.0/mlflow-share"


def _login(server: ShareServer, token: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlflow_share_client.auth", "login", "--tracking-uri", server.url,
         "--token-stdin"], input=token + "\n", capture_output=True, text=True, env=env,
        timeout=60)


def test_stock_client_uses_and_renews_the_stored_token(share_server: ShareServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       unique: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    # A short-lived token, as a user would create on /share/access: due for renewal at once.
    issued = share_server.api("POST", f"{SHARE}/tokens", token=share_server.tokens["alice"],
                              json={"expires_in_days": 0.0005}).json()  # 43 s
    path = tmp_path / "home" / "tokens.json"
    env = {**os.environ, "MLFLOW_SHARE_TOKEN_FILE": str(path)}
    done = _login(share_server, issued["token"], env)
    assert done.returncode == 0, done.stderr
    assert "as alice" in done.stdout and path.stat().st_mode & 0o777 == 0o600

    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_SHARE_TOKEN_FILE", str(path))
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "mlflow-share")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", share_server.url)
    client = mlflow.MlflowClient(tracking_uri=share_server.url)
    client.create_registered_model(f"auth-{unique}")
    assert client.get_registered_model(f"auth-{unique}").name == f"auth-{unique}"

    stored = json.loads(path.read_text())[share_server.url]
    assert stored["token"] != issued["token"] and stored["user"] == "alice"  # renewed...
    old = share_server.api("GET", f"{SHARE}/whoami", token=issued["token"])
    assert old.status_code == 401  # ...and the old token revoked
    assert path.stat().st_mode & 0o777 == 0o600

    path.chmod(0o644)  # readable by others: refused, not used
    with pytest.raises(MlflowException, match="chmod 600"):
        client.get_registered_model(f"auth-{unique}")


def test_login_refuses_a_token_the_server_does_not_accept(share_server: ShareServer,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    done = _login(share_server, "msh_0000_notatoken", {**os.environ,
                                                       "MLFLOW_SHARE_TOKEN_FILE": str(path)})
    assert done.returncode == 1 and "refused" in done.stderr and not path.exists()
