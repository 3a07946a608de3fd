"""The same mlflow-share server with its audit log off: the baseline of DESIGN.md's write target.

Benchmarks only; mlflow-share itself has no switch that turns the audit log off. A uvicorn
``--loop`` factory (``--uvicorn-opts "--loop _noaudit_app:new_event_loop"``) runs in each
worker before the app is loaded, so it can take out, in that worker only:

- the event a write transaction appends before it commits (and with it the chain lock);
- the request events the middleware appends (reads, denials, no-op writes);
- the before-values read for the change record.

Everything else stays: token authentication, the policy check at each request, the decision,
search scoping, ownership bookkeeping in the write transaction, and on SQLite the writer lock
that orders write transactions.
"""

from __future__ import annotations

from typing import Any


def _audit_off() -> None:
    from mlflow_share.audit import log, store

    store.record_in_transaction = lambda *_args, **_kwargs: 0  # type: ignore[assignment]
    store._before_query = lambda *_args: None  # type: ignore[assignment]
    log.AuditAppender._append = lambda _self, _row, _attempts=6: 0  # type: ignore[assignment]


def new_event_loop() -> Any:
    from _nodelay_app import new_event_loop as loop_with_nodelay

    _audit_off()
    return loop_with_nodelay()
