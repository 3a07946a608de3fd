"""The examples are part of the contract: each runs end to end against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_walkthrough_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_",
                                                                     "MLFLOW_SHARE_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "walkthrough.py")],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PERMISSION_DENIED" in result.stdout


def test_sharing_package_example_runs_end_to_end() -> None:
    """log_shareable, a rejected package edited until it validates, a withdrawn one, publish,
    use and revoke: with the stock client and the CLI, against its own server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_",
                                                                     "MLFLOW_SHARE_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "sharing_package.py")],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "signature outputs ['label', 'probabilities']" in result.stdout
    assert "validated after the edit" in result.stdout
    assert "withdrawn (its record stays in the audit log)" in result.stdout
    assert "predicted [1, 0]" in result.stdout


@pytest.mark.postgres
def test_scale_out_example_checks_itself() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_",
                                                                     "MLFLOW_SHARE_ADMIN"))}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "scale-out" / "run.py"),
                             "--check", "--workers", "1", "--s3"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "bob reads, after the revocation, on the other instances: [403]" in result.stdout
    assert "alice's upload, read back, on the other instances: [200]" in result.stdout
