"""Per-minute usage of each model version by each calling team, for the owners' dashboard.

The gateway counts in memory and a background thread writes what it counted every few
seconds (``MLFLOW_SHARE_USAGE_FLUSH_SECONDS``, default 5; and at shutdown) to
``share_gateway_usage``: requests, errors, latency sum and p50/p95/p99 per minute, so the
monitoring dashboard is at most that far behind. A minute written in several flushes (or by
several gateway processes) adds its counts and keeps the worst of each percentile. Each
flush is also one audit event with the invocation counts it wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mlflow_share import config, db
from mlflow_share.audit.log import AuditAppender, AuditContext, new_request_id

_SAMPLES = 2000  # latencies kept per bucket for its quantiles
_logger = logging.getLogger(__name__)


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    samples: list[float] = field(default_factory=list)


def _quantile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _worst(stored: float | None, new: float | None) -> float | None:
    present = [x for x in (stored, new) if x is not None]
    return max(present) if present else None


class Usage:
    def __init__(self, engine: sa.Engine, appender: AuditAppender,
                 every: float | None = None) -> None:
        self.engine, self.appender = engine, appender
        self.every = every if every is not None else config.options().usage_flush_seconds
        self._buckets: dict[tuple[str, str, str, int], _Bucket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.flush(everything=True)
            except Exception as exc:  # noqa: BLE001 - the counts stay for the next turn
                _logger.error("mlflow-share gateway: writing usage failed: %s", exc)

    def close(self) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        self.flush(everything=True)

    def record(self, model: str, version: str, team: str, status: int, seconds: float) -> None:
        minute = int(time.time() // 60) * 60_000
        with self._lock:
            if self._writer is None:  # started in the serving process, after any fork
                self._writer = threading.Thread(target=self._run, name="mlflow-share-usage",
                                                daemon=True)
                self._writer.start()
            bucket = self._buckets.setdefault((model, version, team, minute), _Bucket())
            bucket.requests += 1
            if status >= 400:
                bucket.errors += 1
            else:
                bucket.latency_sum += seconds * 1000
                if len(bucket.samples) < _SAMPLES:
                    bucket.samples.append(seconds * 1000)

    def flush(self, everything: bool = False) -> int:
        """Write finished minutes (all with ``everything``); returns the rows written."""
        current = int(time.time() // 60) * 60_000
        with self._lock:
            done = {k: v for k, v in self._buckets.items() if everything or k[3] < current}
            for key in done:
                del self._buckets[key]
        if not done:
            return 0
        try:
            self._write(done)
        except Exception:
            with self._lock:  # keep them for the next flush
                for key, bucket in done.items():
                    merged = self._buckets.setdefault(key, _Bucket())
                    merged.requests += bucket.requests
                    merged.errors += bucket.errors
                    merged.latency_sum += bucket.latency_sum
                    merged.samples = (merged.samples + bucket.samples)[:_SAMPLES]
            raise
        self._audit(done)
        return len(done)

    def _write(self, done: dict[tuple[str, str, str, int], _Bucket]) -> None:
        table = db.gateway_usage
        with self.engine.begin() as conn:
            for (model, version, team, minute), bucket in done.items():
                match = sa.and_(table.c.model == model, table.c.version == version,
                                table.c.team == team, table.c.minute == minute)
                row = conn.execute(sa.select(table).where(match)).first()
                quantiles = {f"p{q}_ms": _quantile(bucket.samples, q / 100) for q in (50, 95, 99)}
                if row is None:
                    conn.execute(table.insert().values(
                        model=model, version=version, team=team, minute=minute,
                        requests=bucket.requests, errors=bucket.errors,
                        latency_sum_ms=bucket.latency_sum, **quantiles))
                else:  # an earlier flush or another process wrote this minute: add, keep worst
                    conn.execute(table.update().where(match).values(
                        requests=row.requests + bucket.requests,
                        errors=row.errors + bucket.errors,
                        latency_sum_ms=row.latency_sum_ms + bucket.latency_sum,
                        **{name: _worst(getattr(row, name), value)
                           for name, value in quantiles.items()}))

    def _audit(self, done: dict[tuple[str, str, str, int], _Bucket]) -> None:

        context = AuditContext(request_id=new_request_id(), principal="gateway",
                               action="gateway.usage", method="FLUSH", route="/v1/models")
        context.extra = {"invocations": [
            {"model": m, "version": v, "team": t, "minute": minute, "requests": b.requests,
             "errors": b.errors} for (m, v, t, minute), b in sorted(done.items())][:500]}
        self.appender.append(context.event(status=200, source="gateway"))


def usage_rows(engine: sa.Engine, model: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    table = db.gateway_usage
    query = sa.select(table).where(table.c.model == model)
    if since_ms is not None:
        query = query.where(table.c.minute >= since_ms)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(table.c.minute, table.c.version, table.c.team)).all()
    return [dict(row._mapping) for row in rows]
