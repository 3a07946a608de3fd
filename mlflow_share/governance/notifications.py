"""Webhook notifications: subscriptions to a model, signed deliveries, retries, SSRF guard.

Events: ``package.published``, ``package.revoked`` and ``alias.moved`` (protected aliases).
A delivery is a JSON POST in MLflow's own webhook format and signature scheme, so a receiver
written for MLflow webhooks verifies it unchanged::

    X-MLflow-Delivery-Id: <uuid>     X-MLflow-Timestamp: <unix seconds>
    X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>

Each attempt is recorded in ``share_webhook_deliveries``; connection errors, 429 and 5xx are
retried with exponential backoff (``MLFLOW_SHARE_WEBHOOK_ATTEMPTS``, default 5, from
``MLFLOW_SHARE_WEBHOOK_BACKOFF`` seconds, default 1). Redirects are never followed.

SSRF guard: URLs must be http(s) with a canonical host. The host is resolved when the
subscription is made, and the peer address of the *connected socket* is checked again right
after ``connect()``, before a byte is sent (no DNS-rebinding window). Loopback, private,
link-local (cloud metadata), multicast, reserved and unspecified addresses are refused unless
listed in ``MLFLOW_SHARE_WEBHOOK_ALLOW`` (comma-separated networks, e.g. ``127.0.0.0/8``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import queue
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

import requests
import sqlalchemy as sa
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from mlflow_share import config, db
from mlflow_share.errors import InvalidInput, NotFound

_logger = logging.getLogger(__name__)
ALLOW_ENV = "MLFLOW_SHARE_WEBHOOK_ALLOW"
EVENTS = ("package.published", "package.revoked", "alias.moved")
_S, _D = db.subscriptions, db.deliveries
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NUMERIC_HOST = re.compile(r"^((0x[0-9a-f]*|[0-9]+)\.?){1,4}$", re.IGNORECASE)


class Refused(Exception):
    """The destination is not allowed (never retried)."""


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    # Parsed (and refused at start-up when malformed) by mlflow_share.config.
    return [ipaddress.ip_network(network) for network in config.options().webhook_allow]


# IPv6 forms that carry an IPv4 address a router or NAT may deliver to: the IPv4 decides.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible ::a.b.c.d
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT ::ffff:0:a.b.c.d


def _unmapped(ip: IPAddress) -> IPAddress:
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in (*_NAT64, _COMPATIBLE, _TRANSLATED)) and \
            ip not in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def check_address(address: str) -> None:
    raw = ipaddress.ip_address(address.split("%", 1)[0])
    ip = _unmapped(raw)
    if any(ip in network or raw in network for network in allowed_networks()):
        return
    if not ip.is_global or ip.is_multicast or not raw.is_global:
        raise Refused(f"{ip} is not a public address (loopback, private, link-local, reserved "
                      f"or metadata); allow it with {ALLOW_ENV} if that is intended.")


def check_url(url: object) -> str:
    """400 unless ``url`` is an http(s) URL whose host resolves only to allowed addresses."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise InvalidInput("'url' must be an http:// or https:// URL.")
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        raise InvalidInput(f"Webhook URL {url!r} is not a valid URL.") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput(f"Webhook URL {url!r} must be http:// or https:// with a host.")
    if parsed.username or parsed.password:
        raise InvalidInput("Webhook URLs cannot carry credentials; the signature authenticates.")
    host = parsed.hostname
    if ":" in host or _NUMERIC_HOST.match(host):  # 127.1, 0x7f000001, 017700000001...
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidInput(f"Webhook host {host!r} is not a canonical IP address.") from None
    try:
        infos = socket.getaddrinfo(host, port or (443 if parsed.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidInput(f"Webhook host {host!r} does not resolve.") from None
    try:
        for info in infos:
            check_address(str(info[4][0]))
    except Refused as exc:
        raise InvalidInput(f"Webhook URL {url!r} refused: {exc}") from None
    return url


# -- connect-time peer check (closes the DNS-rebinding gap) ---------------------------------
def _checked(sock: socket.socket) -> socket.socket:
    try:
        check_address(str(sock.getpeername()[0]))
    except (Refused, OSError, ValueError) as exc:
        sock.close()
        raise Refused(str(exc)) from None
    return sock


class _HTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn())


class _HTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:  # the raw socket, before TLS
        return _checked(super()._new_conn())


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **kwargs: Any) -> None:
        self.poolmanager = PoolManager(num_pools=connections, maxsize=maxsize, block=block,
                                       **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # a proxy would make the checked peer the proxy
    adapter = _GuardedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(),
                      hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# -- subscriptions -----------------------------------------------------------------------------
MAX_SUBSCRIPTIONS = 20  # per model and creator


def subscribe(engine: sa.Engine, *, model_id: str, subscriber: str, url: str, by: str
              ) -> dict[str, Any]:
    check_url(url)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(_S).where(
            _S.c.model_id == model_id, _S.c.created_by == by)).scalar()
    if (count or 0) >= MAX_SUBSCRIPTIONS:
        raise InvalidInput(f"At most {MAX_SUBSCRIPTIONS} subscriptions per model and user.")
    record = {"id": uuid.uuid4().hex[:16], "model_id": model_id, "subscriber": subscriber,
              "url": url, "secret": secrets.token_urlsafe(32), "created_by": by,
              "created_at": db.now_ms()}
    with engine.begin() as conn:
        conn.execute(_S.insert().values(**record))
    return record  # the only time the secret is shown


def subscriptions(engine: sa.Engine, model_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_S).where(_S.c.model_id == model_id)
                            .order_by(_S.c.created_at)).all()
    return [{"id": r.id, "subscriber": r.subscriber, "url": r.url, "created_by": r.created_by,
             "created_at": r.created_at} for r in rows]


def redacted(subscription: dict[str, Any]) -> dict[str, Any]:
    """A subscription as others see it: URLs often carry secrets of their own."""
    parsed = urlparse(subscription["url"])
    return {**subscription, "url": f"{parsed.scheme}://{parsed.hostname}/..."}


def unsubscribe(engine: sa.Engine, model_id: str, subscription_id: str) -> None:
    with engine.begin() as conn:
        removed = conn.execute(_S.delete().where(_S.c.model_id == model_id,
                                                 _S.c.id == subscription_id)).rowcount
    if not removed:
        raise NotFound(f"Subscription {subscription_id!r} does not exist.")


def deliveries(engine: sa.Engine, model_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_D).join(_S, _S.c.id == _D.c.subscription_id)
                            .where(_S.c.model_id == model_id).order_by(_D.c.created_at)).all()
    return [{"id": r.id, "subscription_id": r.subscription_id, "event": r.event,
             "status": r.status, "attempts": r.attempts, "last_error": r.last_error,
             "response_status": r.response_status, "created_at": r.created_at,
             "updated_at": r.updated_at} for r in rows]


# -- delivery ------------------------------------------------------------------------------------
class Notifier:
    """Queues one delivery per subscription of an event; a few threads send them.

    A subscription is served only while its creator may still read the model: someone who
    lost access stops receiving events at once.
    """

    def __init__(self, engine: sa.Engine, may_read: Callable[[str, str], bool] | None = None,
                 threads: int = 4) -> None:
        self.engine = engine
        self.may_read = may_read or (lambda _user, _model_id: True)
        self.threads = threads
        settings = config.options()
        self.attempts: int = settings.webhook_attempts
        self.backoff: float = settings.webhook_backoff
        self.timeout: float = settings.webhook_timeout
        self._queue: queue.Queue[str] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def emit(self, model_id: str | None, event: str, data: dict[str, Any]) -> None:
        """Record the deliveries of ``event`` (after the change committed) and send them."""
        if model_id is None:
            return
        body = json.dumps({"entity": event.split(".")[0], "action": event.split(".")[1],
                           "event": event, "timestamp": datetime.now(timezone.utc).isoformat(),
                           "data": data}, sort_keys=True)
        now = db.now_ms()
        try:
            with self.engine.begin() as conn:
                rows: Any = conn.execute(sa.select(_S.c.id, _S.c.created_by).where(
                    _S.c.model_id == model_id)).all()
                subs = [sid for sid, user in rows if self.may_read(str(user), model_id)]
                ids = [uuid.uuid4().hex[:16] for _ in subs]
                for delivery_id, sub in zip(ids, subs):
                    conn.execute(_D.insert().values(
                        id=delivery_id, subscription_id=sub, event=event, payload=body,
                        status="pending", attempts=0, created_at=now, updated_at=now))
        except sa.exc.SQLAlchemyError as exc:  # the change itself is done; say so loudly
            _logger.error("mlflow-share: could not queue %s notifications: %s", event, exc)
            return
        for delivery_id in ids:
            self._queue.put(delivery_id)
        if ids:
            self._start()

    def _start(self) -> None:
        with self._lock:
            self._workers = [t for t in self._workers if t.is_alive()]
            while len(self._workers) < self.threads:
                worker = threading.Thread(target=self._run, name="mlflow-share-webhooks",
                                          daemon=True)
                worker.start()
                self._workers.append(worker)

    def _run(self) -> None:
        session = _session()
        while True:
            delivery_id = self._queue.get()
            try:
                self.deliver(session, delivery_id)
            except Exception:  # noqa: BLE001 - one bad delivery must not stop the others
                _logger.exception("mlflow-share: webhook delivery %s failed", delivery_id)

    def deliver(self, session: requests.Session, delivery_id: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_D.c.payload, _D.c.event, _S.c.url, _S.c.secret)
                               .join(_S, _S.c.id == _D.c.subscription_id)
                               .where(_D.c.id == delivery_id)).first()
        if row is None:
            return "gone"
        for attempt in range(1, self.attempts + 1):
            outcome, error, code = self._attempt(session, delivery_id, row)
            last = outcome != "retry" or attempt == self.attempts
            status = {"retry": "failed" if last else "pending"}.get(outcome, outcome)
            self._record(delivery_id, status, attempt, error, code)
            if last:
                return status
            time.sleep(self.backoff * 2 ** (attempt - 1))
        return "failed"

    def _attempt(self, session: requests.Session, delivery_id: str, row: Any
                 ) -> tuple[str, str | None, int | None]:
        """``(outcome, error, HTTP status)``; outcome: delivered, refused, failed or retry."""
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
                   "X-MLflow-Timestamp": timestamp, "X-MLflow-Share-Event": row.event,
                   "X-MLflow-Signature": sign(row.secret, delivery_id, timestamp, row.payload)}
        try:
            # The body is never read: a receiver cannot stall or flood the sender with it.
            with session.post(row.url, data=row.payload.encode(), headers=headers,
                              timeout=self.timeout, allow_redirects=False,
                              stream=True) as response:
                code = response.status_code
        except Refused as exc:  # raised from connect(): not a urllib3 error, never retried
            return "refused", f"refused: {exc}", None
        except requests.RequestException as exc:
            return "retry", f"{type(exc).__name__}: {str(exc)[:300]}", None
        if 200 <= code < 300:
            return "delivered", None, code
        if code == 429 or code >= 500:
            return "retry", f"HTTP {code}", code
        return "failed", f"HTTP {code} (not retried)", code

    def _record(self, delivery_id: str, status: str, attempts: int, error: str | None,
                code: int | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(_D.update().where(_D.c.id == delivery_id).values(
                status=status, attempts=attempts, last_error=error, response_status=code,
                updated_at=db.now_ms()))


_NOTIFIER: Notifier | None = None


def install(engine: sa.Engine, may_read: Callable[[str, str], bool] | None = None) -> Notifier:
    global _NOTIFIER
    _NOTIFIER = Notifier(engine, may_read)
    return _NOTIFIER


def emit(model_id: str | None, event: str, data: dict[str, Any]) -> None:
    """Emit through this process's notifier (none outside a server: nothing is sent)."""
    if _NOTIFIER is not None:
        _NOTIFIER.emit(model_id, event, data)
