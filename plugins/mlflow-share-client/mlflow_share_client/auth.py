"""``MLFLOW_TRACKING_AUTH=mlflow-share``: the stock MLflow client authenticates with a token
kept in a private file, and renews it before it expires, so no secret is pasted into a notebook.

    python -m mlflow_share_client.auth login --device --tracking-uri http://mlflow.example:5000
    # confirm the code it shows at http://mlflow.example:5000/share/device, signed in (SSO)
    # (or without --device: paste a token created on /share/access)
    export MLFLOW_TRACKING_AUTH=mlflow-share   # then any mlflow call in any notebook

With ``MLFLOW_TRACKING_AUTH=mlflow-share`` and no token stored for the server yet, the provider
starts that device login itself when someone can answer it (a terminal, a Jupyter kernel, or
``MLFLOW_SHARE_DEVICE_LOGIN=1``; ``0`` never), and stores the token it gets.

The file (``$MLFLOW_SHARE_TOKEN_FILE``, default ``~/.mlflow-share/tokens.json``) maps a
tracking URI to ``{token, token_id, expires_at}``. It must be readable by its owner only (mode
0600): a file that others can read is refused, not used. A token that expires within a day
(or within a tenth of its lifetime) is exchanged for a new one of the same lifetime, and the
old one is revoked; the file is replaced atomically.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import json
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

API = "/api/2.0/mlflow-share"
_DAY_MS = 86_400_000
_lock = threading.Lock()
_logger = logging.getLogger(__name__)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The token file to ourselves, across threads and processes (notebooks and workers
    share it): one renewal at a time, and nobody overwrites another's renewed entry."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _lock, open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def token_file() -> Path:
    return Path(os.environ.get("MLFLOW_SHARE_TOKEN_FILE")
                or Path.home() / ".mlflow-share" / "tokens.json").expanduser()


def _key(tracking_uri: str) -> str:
    return tracking_uri.rstrip("/")


def _read(path: Path) -> dict[str, Any]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise MlflowException(
            f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            f"run `chmod 600 {path}` (and create a new token if others may have read it).")
    if info.st_uid != os.getuid():
        raise MlflowException(f"{path} belongs to another user: refused.")
    data = json.loads(path.read_text() or "{}")
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_token(tracking_uri: str, token: str, *, verify: bool = True) -> dict[str, Any]:
    """Check ``token`` against the server (it must open a session there) and store it."""
    entry: dict[str, Any] = {"token": token, "token_id": _token_id(token), "expires_at": None}
    if verify:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        who = session.get(f"{_key(tracking_uri)}{API}/whoami", timeout=30)
        if who.status_code != 200:
            raise MlflowException(f"The server refused this token ({who.status_code}).")
        entry["user"] = who.json().get("user")
        tokens = session.get(f"{_key(tracking_uri)}{API}/tokens", timeout=30).json()
        for listed in tokens.get("tokens", []):
            if listed.get("token_id") == entry["token_id"]:
                entry["expires_at"] = listed.get("expires_at")
                entry["created_at"] = listed.get("created_at")
    path = token_file()
    with _locked(path):
        data = _read(path)
        data[_key(tracking_uri)] = entry
        _write(path, data)
    return entry


def _token_id(token: str) -> str | None:
    parts = token.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "msh" else None


def _due(entry: dict[str, Any], now_ms: int) -> bool:
    expires, created = entry.get("expires_at"), entry.get("created_at")
    if not isinstance(expires, int):
        return False
    lifetime = expires - created if isinstance(created, int) else _DAY_MS * 10
    return expires - now_ms < min(_DAY_MS, max(lifetime // 10, 60_000))


def _renew(tracking_uri: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A new token of the same lifetime for the same user; the old one is revoked."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {entry['token']}"
    created = entry.get("created_at")
    lifetime_ms = entry["expires_at"] - created if isinstance(created, int) else _DAY_MS * 30
    issued = session.post(f"{tracking_uri}{API}/tokens", timeout=30, json={
        "expires_in_days": max(lifetime_ms / _DAY_MS, 0.001),
        "description": "renewed by mlflow-share-client"})
    if issued.status_code != 200:
        raise MlflowException(f"Could not renew the mlflow-share token ({issued.status_code}): "
                              "log in again with `python -m mlflow_share_client.auth login`.")
    body = issued.json()
    renewed = {"token": body["token"], "token_id": body["token_id"], "user": body.get("user"),
               "expires_at": body.get("expires_at"), "created_at": int(time.time() * 1000)}
    if entry.get("token_id"):
        revoked = session.delete(f"{tracking_uri}{API}/tokens", timeout=30,
                                 json={"token_id": entry["token_id"]})
        if revoked.status_code != 200:
            _logger.warning("mlflow-share: the replaced token %s could not be revoked (%s); "
                            "revoke it on /share/access", entry["token_id"], revoked.status_code)
    return renewed


def _device_entry(tracking_uri: str, expires_in_days: float | None) -> dict[str, Any]:
    """A token for ``tracking_uri`` through a device login (the browser approves it)."""
    from mlflow_share_client.device import DeviceLoginError, device_login

    try:
        answer = device_login(tracking_uri, expires_in_days=expires_in_days)
    except DeviceLoginError as exc:
        raise MlflowException(exc.message) from None
    return {"token": answer["access_token"], "token_id": answer.get("token_id"),
            "user": answer.get("user"), "expires_at": answer.get("expires_at"),
            "created_at": int(time.time() * 1000), "via": "device"}


def login_with_device(tracking_uri: str, expires_in_days: float | None = None) -> dict[str, Any]:
    """Log in through a device login and store the token (mode 0600); returns its entry."""
    path = token_file()
    with _locked(path):
        _read(path)  # a file others can read is refused before anything is asked
        entry = _device_entry(_key(tracking_uri), expires_in_days)
        data = _read(path)
        data[_key(tracking_uri)] = entry
        _write(path, data)
    return entry


def _may_ask_someone() -> bool:
    """Whether a device login started here can be answered by a person: a terminal or a
    Jupyter kernel (``MLFLOW_SHARE_DEVICE_LOGIN``: 1 always, 0 never)."""
    choice = os.environ.get("MLFLOW_SHARE_DEVICE_LOGIN", "")
    if choice in ("0", "1"):
        return choice == "1"
    return sys.stdin is not None and sys.stdin.isatty() or "ipykernel" in sys.modules


def stored_token(tracking_uri: str, *, device_login: bool = False) -> str | None:
    """The token stored for ``tracking_uri``, renewed first when due; None when there is none
    (after a device login, with ``device_login``, when someone can answer it)."""
    key = _key(tracking_uri)
    path = token_file()
    with _locked(path):
        data = _read(path)
        entry = data.get(key)
        if not isinstance(entry, dict) or not entry.get("token"):
            if not (device_login and _may_ask_someone()):
                return None
            entry = _device_entry(key, None)
            data[key] = entry
            _write(path, data)
        elif entry.get("via") == "device":
            # A device login's token lasts what its approver allowed and is not renewed:
            # once it has expired, the next device login asks a browser again.
            expires = entry.get("expires_at")
            if isinstance(expires, int) and expires <= int(time.time() * 1000):
                if not (device_login and _may_ask_someone()):
                    return None
                entry = _device_entry(key, None)
                data[key] = entry
                _write(path, data)
        elif _due(entry, int(time.time() * 1000)):
            entry = _renew(key, entry)
            data[key] = entry
            _write(path, data)
        return str(entry["token"])


def current_token(tracking_uri: str) -> str:
    token = stored_token(tracking_uri, device_login=True)
    if token is None:
        key = _key(tracking_uri)
        raise MlflowException(
            f"No mlflow-share token for {key} in {token_file()}: run "
            f"`python -m mlflow_share_client.auth login --device --tracking-uri {key}` "
            "(or `mlflow-share login --device`).")
    return token


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class ShareAuthProvider(RequestAuthProvider):
    """The ``mlflow.request_auth_provider`` entry point named ``mlflow-share``."""

    def get_name(self) -> str:
        return "mlflow-share"

    def get_auth(self) -> Any:
        from mlflow.tracking._tracking_service.utils import get_tracking_uri

        return _Bearer(current_token(get_tracking_uri()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_share_client.auth")
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="store a token for a tracking server")
    login.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    login.add_argument("--token-stdin", action="store_true",
                       help="read the token from standard input instead of a prompt")
    login.add_argument("--device", action="store_true",
                       help="log in through the browser: confirm a code at <server>/share/device")
    login.add_argument("--expires-in", type=float, default=None, metavar="DAYS",
                       help="with --device: the token lifetime to ask for, in days")
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("--tracking-uri (or MLFLOW_TRACKING_URI) is required")
    if args.expires_in is not None and not args.device:
        parser.error("--expires-in goes with --device")
    try:
        if args.device:
            entry = login_with_device(args.tracking_uri, args.expires_in)
        else:
            token = sys.stdin.readline().strip() if args.token_stdin else getpass.getpass(
                f"Token for {args.tracking_uri} (create one on "
                f"{args.tracking_uri}/share/access): ")
            entry = save_token(args.tracking_uri, token)
    except MlflowException as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"Logged in to {_key(args.tracking_uri)} as {entry.get('user')}; token stored in "
          f"{token_file()}. Set MLFLOW_TRACKING_AUTH=mlflow-share to use it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
