"""Semantic-version ranges, webhook address checks and signatures, without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.errors import InvalidInput
from mlflow_share import config
from mlflow_share.governance import notifications
from mlflow_share.governance import versions as semvers

PUBLISHED = ["0.1.0", "0.1.5", "0.2.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta",
             "1.0.0", "1.2.0", "1.2.7", "1.3.0-rc.1", "1.3.0", "2.0.0-rc.1", "2.0.0", "2.1.0"]


@pytest.mark.parametrize(("text", "newest"), [
    ("^1.2", "1.3.0"),          # same major, never a pre-release
    ("^1.2.3", "1.3.0"),
    ("~1.2", "1.2.7"),          # same minor
    ("~1.2.3", "1.2.7"),
    ("~1", "1.3.0"),
    ("^0.1", "0.1.5"),          # below 1.0 the minor is the breaking part
    ("^0.1.2", "0.1.5"),
    ("1.2", "1.2.7"),           # a partial version is a range
    ("1.2.0", "1.2.0"),
    ("=1.0.0", "1.0.0"),
    (">=1.0.0 <2", "1.3.0"),
    (">1.2", "2.1.0"),
    (">1.2 <2", "1.3.0"),
    ("<=1.2", "1.2.7"),
    ("<1", "0.2.0"),
    ("*", "2.1.0"),
    ("^1.0.0-alpha", "1.3.0"),  # names a pre-release of 1.0.0: those are allowed, not others
    (">=1.0.0-alpha <1.0.0", "1.0.0-beta"),
    (">=2.0.0-rc.0 <2.0.0", "2.0.0-rc.1"),
    ("^3", None),
])
def test_ranges_pick_the_newest_match(text: str, newest: str | None) -> None:
    assert semvers.parse_range(text).newest(PUBLISHED) == newest


def test_semver_order_follows_the_spec() -> None:
    ordered = sorted(reversed(PUBLISHED), key=semvers.parse)
    assert ordered == PUBLISHED
    assert semvers.parse("1.0.0+build.5").compare(semvers.parse("1.0.0")) == 0


@pytest.mark.parametrize("bad", ["1", "1.2", "v1.2.3", "01.2.3", "1.2.3-", "", "1.2.3.4",
                                 "x" * 200, None, 3])
def test_invalid_semantic_versions_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        semvers.parse(bad)


@pytest.mark.parametrize("bad", ["", "^", "^x.y", "~1.2.3-", "1.2-rc.1", ">=", "1..2"])
def test_invalid_ranges_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        semvers.parse_range(bad)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.3.4", "192.168.1.1",
                                     "169.254.169.254", "0.0.0.0", "::1", "fe80::1",
                                     "fd00::1", "::ffff:10.0.0.1", "224.0.0.1", "100.64.0.1"])
def test_non_public_addresses_are_refused(address: str, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.delenv(notifications.ALLOW_ENV, raising=False)
    config.options.cache_clear()  # settings are parsed once per process
    with pytest.raises(notifications.Refused):
        notifications.check_address(address)


def test_the_allow_list_admits_only_what_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(notifications.ALLOW_ENV, "127.0.0.0/8, ::1")
    config.options.cache_clear()  # settings are parsed once per process
    notifications.check_address("127.0.0.1")
    notifications.check_address("::ffff:127.0.0.1")
    notifications.check_address("8.8.8.8")  # public addresses are always fine
    with pytest.raises(notifications.Refused):
        notifications.check_address("10.0.0.1")


class _Sink(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500 if type(self).hits < 3 else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _notifier(tmp_path: Path, url: str) -> tuple[notifications.Notifier, str]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'n.db'}")
    db.create_schema(engine)
    with engine.begin() as conn:
        # Inserted directly: as if the name had resolved to a public address when checked.
        conn.execute(db.subscriptions.insert().values(
            id="s1", model_id="m1", subscriber="user:u", url=url, secret="k", created_by="u",
            created_at=0))
        conn.execute(db.deliveries.insert().values(
            id="d1", subscription_id="s1", event="package.published", payload='{"a": 1}',
            status="pending", attempts=0, created_at=0, updated_at=0))
    notifier = notifications.Notifier(engine)
    notifier.backoff = 0.01
    return notifier, "d1"


@pytest.fixture
def sink() -> Iterator[int]:
    """A receiver on loopback that answers 500 twice, then 204; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Sink.hits = 0
    yield int(server.server_address[1])
    server.shutdown()


def _delivery(notifier: notifications.Notifier) -> Any:
    with notifier.engine.connect() as conn:
        return conn.execute(sa.select(db.deliveries)).one()


def test_the_peer_is_checked_at_connect_time(tmp_path: Path, sink: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscription whose name later points at a private address (DNS rebinding) is refused
    when connecting, before a byte is sent, and never retried."""
    monkeypatch.delenv(notifications.ALLOW_ENV, raising=False)
    config.options.cache_clear()  # settings are parsed once per process
    notifier, delivery = _notifier(tmp_path, f"http://localhost:{sink}/")
    assert notifier.deliver(notifications._session(), delivery) == "refused"
    assert _Sink.hits == 0
    row = _delivery(notifier)
    assert row.status == "refused" and row.attempts == 1 and "not a public" in row.last_error


def test_deliveries_retry_server_errors_with_backoff(tmp_path: Path, sink: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(notifications.ALLOW_ENV, "127.0.0.0/8")
    config.options.cache_clear()  # settings are parsed once per process
    notifier, delivery = _notifier(tmp_path, f"http://127.0.0.1:{sink}/")
    assert notifier.deliver(notifications._session(), delivery) == "delivered"
    assert _Sink.hits == 3
    row = _delivery(notifier)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 3, 204)


def test_signature_is_mlflows_webhook_scheme() -> None:
    expected = base64.b64encode(hmac.new(b"secret", b"id.123.{}", hashlib.sha256).digest())
    assert notifications.sign("secret", "id", "123", "{}") == "v1," + expected.decode()


@pytest.mark.parametrize(("text", "versions", "newest"), [
    (">1.2", ["1.2.5", "1.3.0-alpha"], None),  # an implied bound never admits a pre-release
    (">1", ["1.9.0", "2.0.0-rc.1", "2.0.0"], "2.0.0"),
    ("<2", ["1.9.0", "2.0.0-rc.1"], "1.9.0"),
    ("^1.2", ["1.2.0", "2.0.0-0"], "1.2.0"),
])
def test_implied_bounds_do_not_admit_pre_releases(text: str, versions: list[str],
                                                  newest: str | None) -> None:
    assert semvers.parse_range(text).newest(versions) == newest


@pytest.fixture(autouse=True)
def _fresh_settings():  # type: ignore[no-untyped-def]
    yield
    config.options.cache_clear()
