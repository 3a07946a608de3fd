"""``MLFLOW_TRACKING_AUTH=mlflow-share``: the stock MLflow client with a token from a private
file, renewed before it expires; a file others can read is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_gateway_usage_follows_a_renamed_model_and_goes_with_a_deleted_one(
        share_server: ShareServer, unique: str) -> None:
    import sqlalchemy as sa

    from mlflow_share import db

    token = share_server.tokens["alice"]
    api = "/api/2.0/mlflow/registered-models"
    name, renamed = f"usage-{unique}", f"usage-renamed-{unique}"
    assert share_server.api("POST", f"{api}/create", token=token, json={"name": name}).ok
    engine = sa.create_engine(share_server.backend_uri)
    with engine.begin() as conn:
        conn.execute(db.gateway_usage.insert().values(
            model=name, version="1", team="team-b", minute=60_000, requests=3, errors=0,
            latency_sum_ms=3.0, p50_ms=1.0, p95_ms=1.0, p99_ms=1.0))

    def usage(model: str) -> list[Any]:
        return share_server.api("GET", f"{SHARE}/usage", token=token,
                                params={"model": model}).json()["usage"]

    assert share_server.api("POST", f"{api}/rename", token=token,
                            json={"name": name, "new_name": renamed}).ok
    assert [row["requests"] for row in usage(renamed)] == [3]
    assert share_server.api("DELETE", f"{api}/delete", token=token, json={"name": renamed}).ok
    # A new model of the old name does not inherit who called the deleted one.
    assert share_server.api("POST", f"{api}/create", token=token, json={"name": renamed}).ok
    assert usage(renamed) == []
    engine.dispose()
