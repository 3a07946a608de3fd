"""Device login end to end: `mlflow-share login --device` polls while a real browser session
(SSO through the loopback identity provider, or a local account) confirms the code on
/share/device, or denies it; the token the CLI stores works with the stock MlflowClient."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import login_local, login_sso
from tests.conftest import ShareServer

pytestmark = pytest.mark.browser
SHARE = "/api/2.0/mlflow-share"


class Cli:
    """`mlflow-share login --device` running, its standard error read as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")),
                         daemon=True).start()

    def wait_for_link(self, timeout: float = 120) -> str:
        """The verification_uri_complete the CLI printed (it carries the user code)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"\(or open (\S+/share/device\?user_code=[A-Z-]+)\)",
                              "".join(self.lines))
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("the CLI printed no code:\n" + "".join(self.lines))

    def wait_for_text(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in "".join(self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in:\n" + "".join(self.lines))
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> str:
        """Wait for the CLI to end; its standard output (a line or two)."""
        self.process.wait(timeout=timeout)
        assert self.process.stdout is not None
        return self.process.stdout.read()


@contextmanager
def device_login(web: ShareServer, tokens: Path, *args: str) -> Iterator[Cli]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": web.url, "MLFLOW_SHARE_TOKEN_FILE": str(tokens)}
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_AUTH"):
        env.pop(name, None)
    command = [str(Path(sys.executable).parent / "mlflow-share"), "login", "--device", *args]
    process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        yield Cli(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _page_path(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def test_sso_user_approves_the_cli_and_its_token_works_with_the_stock_client(
        web: ShareServer, new_page: Any, tmp_path: Path, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    tokens = tmp_path / "tokens.json"
    with device_login(web, tokens, "--expires-in", "2") as cli:
        link = cli.wait_for_link()
        page = new_page()
        login_sso(page, "sso-ann", next_path=_page_path(link))  # SSO, then back to the page
        page.locator("#request").wait_for(state="visible")
        code = link.rsplit("=", 1)[1]
        assert page.locator("#request-code").inner_text() == code
        assert "mlflow-share-client on" in page.locator("#request-client").inner_text()
        assert page.locator("#me").inner_text() == "sso-ann"
        page.select_option("#lifetime", "1")  # shorter than the 2 days asked
        page.click("#approve")
        page.locator("#approved").wait_for()
        out = cli.finish()
    assert cli.process.returncode == 0, "".join(cli.lines)
    assert "as sso-ann" in out
    assert tokens.stat().st_mode & 0o777 == 0o600
    entry = json.loads(tokens.read_text())[web.url]
    assert entry["user"] == "sso-ann"
    assert abs(entry["expires_at"] / 1000 - time.time() - 86_400) < 300

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", entry["token"])
    client = mlflow.MlflowClient(tracking_uri=web.url)
    client.create_registered_model(f"device-{unique}")  # ann maintains team-a
    assert client.get_registered_model(f"device-{unique}").name == f"device-{unique}"
    # The code is spent: the same page cannot approve it again.
    page.goto(_page_path(link))
    page.locator("#status .error").wait_for()
    assert page.locator("#request").is_hidden()


def test_a_local_user_denies_and_the_cli_stops(web: ShareServer, new_page: Any,
                                               tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    with device_login(web, tokens) as cli:
        link = cli.wait_for_link()
        page = new_page()
        login_local(page, "bob", next_path="/share/device")
        page.fill("#user-code", link.rsplit("=", 1)[1].replace("-", "").lower())  # as typed
        page.click("#continue")
        page.locator("#request").wait_for(state="visible")
        page.click("#deny")
        page.locator("#denied").wait_for()
        cli.finish()
    assert cli.process.returncode == 1
    cli.wait_for_text("denied")
    assert not tokens.exists() or web.url not in json.loads(tokens.read_text() or "{}")
