"""Ordinary failures of the command line end in one line saying what is wrong and what to do,
a non-zero exit and no traceback: the ``mlflow-share`` console script (each case below was a
traceback once) and the ``mlflow deployments`` plugin. Each case runs the installed scripts in
a fresh process, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def _run(script: str, *args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_SHARE_"))}
    return subprocess.run([str(BIN / script), *args], capture_output=True, text=True,
                          timeout=120, env={**environ, **(env or {})}, cwd=cwd)


def _one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [("team", "list"), ("user", "list"), ("whoami",),
                                     ("grants",), ("audit", "export")])
def test_the_cli_with_the_server_down(command: tuple[str, ...]) -> None:
    port = _closed_port()
    done = _run("mlflow-share", *command, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    _one_clear_line(done, f"127.0.0.1:{port}", "mlflow-share server")


def test_a_weak_admin_password_stops_the_server_before_anything_is_made(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = _run("mlflow-share", "server", "--home", str(home), "--port", str(_closed_port()),
                env={"MLFLOW_SHARE_ADMIN_PASSWORD": "short"})
    _one_clear_line(done, "MLFLOW_SHARE_ADMIN_PASSWORD", "12 characters")
    assert not home.exists()  # no half-made database


@pytest.mark.parametrize("uri,words", [
    ("mysql://user:pw@127.0.0.1/mlflow", ("sqlite, postgresql", "mysql")),
    ("mysql+pymysql://user:pw@127.0.0.1/mlflow", ("sqlite, postgresql", "mysql")),
    ("./mlruns", ("SQL backend store", "file")),
])
def test_an_unsupported_backend_store_is_refused(tmp_path: Path, uri: str,
                                                 words: tuple[str, ...]) -> None:
    done = _run("mlflow-share", "server", "--home", str(tmp_path / "home"),
                "--backend-store-uri", uri, cwd=tmp_path)
    _one_clear_line(done, *words)
    assert not (tmp_path / "home").exists()


def test_a_plain_artifact_folder_with_the_gateway_is_refused_once(tmp_path: Path) -> None:
    done = _run("mlflow-share", "server", "--home", str(tmp_path / "home"),
                "--artifacts-destination", str(tmp_path / "plain"))
    _one_clear_line(done, "checksum+file://", "--no-gateway")


@pytest.mark.parametrize("env,words", [
    ({"MLFLOW_SHARE_ADMIN_PASSWORD": "short"}, ("MLFLOW_SHARE_ADMIN_PASSWORD", "12 characters")),
    ({"MLFLOW_SHARE_GATEWAY": "1"}, ("checksum+file://", "MLFLOW_SHARE_GATEWAY")),
])
def test_plain_mlflow_server_refuses_bad_settings_once(tmp_path: Path, env: dict[str, str],
                                                       words: tuple[str, ...]) -> None:
    """`mlflow server --app-name mlflow-share` itself (not only `mlflow-share server`): one
    line before any worker starts, instead of a traceback per worker and a crash loop."""
    done = _run("mlflow", "server", "--app-name", "mlflow-share", "--backend-store-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                str(tmp_path / "plain"), "--host", "127.0.0.1", "--port", str(_closed_port()),
                "--workers", "2", env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("mlflow-share: ")]
    assert len(ours) == 1 and all(word in ours[0] for word in words), done.stderr
    assert "Uvicorn running" not in done.stderr  # no worker was started


def test_the_gateway_without_the_servers_database(tmp_path: Path) -> None:
    done = _run("mlflow-share", "gateway", "--home", str(tmp_path / "nothing-here"))
    _one_clear_line(done, "No mlflow-share database", "mlflow-share server")
    empty = tmp_path / "empty.db"
    empty.touch()
    done = _run("mlflow-share", "gateway", "--backend-store-uri", f"sqlite:///{empty}",
                "--artifacts-destination", f"checksum+file://{tmp_path / 'a'}")
    _one_clear_line(done, "not an mlflow-share server's database")


def test_the_gateway_on_a_database_that_does_not_exist() -> None:
    done = _run("mlflow-share", "gateway", "--backend-store-uri",
                "postgresql://127.0.0.1:5432/mlflow_share_no_such_db",
                "--artifacts-destination", "checksum+file:///tmp/unused")
    _one_clear_line(done, "mlflow_share_no_such_db")


def test_mlflow_deployments_without_a_gateway_address(tmp_path: Path) -> None:
    done = _run("mlflow", "deployments", "list", "-t", "mlflow-share", cwd=tmp_path)
    _one_clear_line(done, "MLFLOW_TRACKING_URI", "MLFLOW_SHARE_GATEWAY_URI")


def test_mlflow_deployments_uses_the_servers_gateway_and_says_when_it_is_down(
        tmp_path: Path) -> None:
    port = _closed_port()
    done = _run("mlflow", "deployments", "list", "-t", "mlflow-share", cwd=tmp_path,
                env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    _one_clear_line(done, f"127.0.0.1:{port}", "is the server running")


def test_credentials_are_chosen_as_the_mlflow_client_chooses_them() -> None:
    """Basic auth first when a username and password are set, else the token (MLflow's
    rest_utils): the CLI and a notebook act as the same caller."""
    from mlflow_share.client import ShareAdminClient

    both = ShareAdminClient("http://127.0.0.1:1", token="t0ken", username="ann",
                            password="pw-0123456789")
    assert both.session.auth == ("ann", "pw-0123456789")
    assert "Authorization" not in both.session.headers
    token_only = ShareAdminClient("http://127.0.0.1:1", token="t0ken")
    assert token_only.session.headers["Authorization"] == "Bearer t0ken"
