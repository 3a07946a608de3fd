"""Per-minute usage of each model version by each calling team, for the owners' dashboard.

The gateway counts in memory and a background thread writes what it counted every few
seconds (``MLFLOW_SHARE_USAGE_FLUSH_SECONDS``, default 5; and at shutdown) to
``share_gateway_usage``: requests, errors, latency sum, p50/p95/p99 and the latency
histogram per minute, so the monitoring dashboard is at most that far behind. Only calls
that reached a version count (a refused or rate-limited call is in the metrics and the audit
log, not in a version's usage). Latencies go into an HdrHistogram (2 significant digits:
within 1 %), which adds up exactly: a minute written in several flushes or by several
gateway processes adds its histograms, and ``summarize`` gives percentiles over exactly the
calls of any set of rows. Each flush is also one audit event with the invocation counts it
wrote.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from collections.abc import Collection

import sqlalchemy as sa
from hdrh.histogram import HdrHistogram

from mlflow_share import config, db
from mlflow_share.audit.log import AuditAppender, AuditContext, new_request_id

_logger = logging.getLogger(__name__)
_MAX_MICROSECONDS = 3_600_000_000  # an hour: anything longer is recorded as an hour
QUANTILES = (50, 95, 99)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, _MAX_MICROSECONDS, 2)


def _histogram(encoded: str | bytes | None) -> HdrHistogram:
    histogram = new_histogram()
    if encoded:
        histogram.decode_and_add(encoded)
    return histogram


def percentiles(histogram: HdrHistogram) -> dict[str, float | None]:
    """``p50_ms``, ``p95_ms``, ``p99_ms`` of the recorded calls (None without any), by
    nearest rank: the q-th percentile is the ceil(q % of n)-th fastest call."""
    total = histogram.get_total_count()
    if total == 0:
        return {f"p{q}_ms": None for q in QUANTILES}
    found = {}
    for q in QUANTILES:
        rank = max(1, math.ceil(q * total / 100))
        # HdrHistogram takes the rank int(p % of n + 0.5): ask for the p that gives ours.
        found[f"p{q}_ms"] = histogram.get_value_at_percentile(100 * (rank - 0.25) / total) / 1000
    return found


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    latencies: HdrHistogram = field(default_factory=new_histogram)


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
                bucket.latencies.record_value(
                    min(_MAX_MICROSECONDS, max(1, round(seconds * 1_000_000))))

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
                    merged.latencies.add(bucket.latencies)
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
                latencies = bucket.latencies
                if row is not None:  # an earlier flush or another process wrote this minute
                    latencies = _histogram(row.latency_histogram)
                    latencies.add(bucket.latencies)
                values = dict(requests=bucket.requests, errors=bucket.errors,
                              latency_sum_ms=bucket.latency_sum,
                              latency_histogram=latencies.encode().decode("ascii"),
                              **percentiles(latencies))
                if row is None:
                    conn.execute(table.insert().values(model=model, version=version, team=team,
                                                       minute=minute, **values))
                else:
                    values.update(requests=row.requests + bucket.requests,
                                  errors=row.errors + bucket.errors,
                                  latency_sum_ms=row.latency_sum_ms + bucket.latency_sum)
                    conn.execute(table.update().where(match).values(**values))

    def _audit(self, done: dict[tuple[str, str, str, int], _Bucket]) -> None:

        context = AuditContext(request_id=new_request_id(), principal="gateway",
                               action="gateway.usage", method="FLUSH", route="/v1/models")
        context.extra = {"invocations": [
            {"model": m, "version": v, "team": t, "minute": minute, "requests": b.requests,
             "errors": b.errors} for (m, v, t, minute), b in sorted(done.items())][:500]}
        self.appender.append(context.event(status=200, source="gateway"))


def usage_rows(engine: sa.Engine, model: str, since_ms: int | None = None,
               teams: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The model's rows (oldest first; of the calling ``teams`` only, when given), without
    their histograms (``summarize`` reads them)."""
    table = db.gateway_usage
    columns = [c for c in table.c if c.name != "latency_histogram"]
    query = sa.select(*columns).where(table.c.model == model)
    if since_ms is not None:
        query = query.where(table.c.minute >= since_ms)
    if teams is not None:
        query = query.where(table.c.team.in_(sorted(teams)))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(table.c.minute, table.c.version, table.c.team)).all()
    return [dict(row._mapping) for row in rows]


def summarize(engine: sa.Engine, model: str, since_ms: int | None = None,
              by: tuple[str, ...] = (), teams: Collection[str] | None = None
              ) -> list[dict[str, Any]]:
    """Requests, errors, mean and p50/p95/p99 over exactly the calls of the model's rows since
    ``since_ms``, in all or per value of ``by`` (``version``, ``team``): their histograms are
    added, never their percentiles averaged."""
    table = db.gateway_usage
    query = sa.select(table).where(table.c.model == model)
    if since_ms is not None:
        query = query.where(table.c.minute >= since_ms)
    if teams is not None:
        query = query.where(table.c.team.in_(sorted(teams)))
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            key = tuple(str(getattr(row, name)) for name in by)
            group = groups.setdefault(key, {"requests": 0, "errors": 0, "latency_sum_ms": 0.0,
                                            "latencies": new_histogram()})
            group["requests"] += row.requests
            group["errors"] += row.errors
            group["latency_sum_ms"] += row.latency_sum_ms
            if row.latency_histogram:
                group["latencies"].decode_and_add(row.latency_histogram)
    summary = []
    for key, group in sorted(groups.items()):
        latencies = group.pop("latencies")
        succeeded = group["requests"] - group["errors"]
        summary.append({**dict(zip(by, key)), **group,
                        "mean_ms": group["latency_sum_ms"] / succeeded if succeeded else None,
                        **percentiles(latencies)})
    return summary
