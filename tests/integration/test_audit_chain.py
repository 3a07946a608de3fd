"""Tampering with the audit chain out of band is found by `mlflow-share audit verify`.

Each case builds a chain in a fresh database (SQLite file, or a PostgreSQL database of its own),
drops the append-only triggers the way an attacker with owner rights would, tampers, and checks
that verification fails at the first bad sequence number (with a signed checkpoint where only a
checkpoint can tell).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.audit import log, models
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.integration
EVENTS = 50


def _row(i: int) -> dict[str, object]:
    return {"ts": 1_700_000_000_000 + i, "request_id": f"r{i}", "source": "request",
            "principal": f"user{i % 3}", "action": "mlflow.SetTag", "method": "POST",
            "route": "/api/2.0/mlflow/runs/set-tag", "resource_kind": "experiment",
            "resource_id": str(i % 4), "resource_name": None, "owner_team": "team-a",
            "decision": "allow", "status": 200, "client": "127.0.0.1", "owner_teams": None,
            "details": models.encode_details({"changes": [{"op": "set_tag", "i": i}]})}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A fresh database (SQLite file, or a PostgreSQL database of its own) with the audit
    table and its triggers."""
    name = f"mlflow_share_chain_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'chain.db'}"
    else:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        uri = f"postgresql+psycopg://{POSTGRES_URL.split('://', 1)[1]}/{name}"
    engine = db.get_engine(uri)
    db.create_schema(engine)
    models.install_triggers(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        if request.param == "postgres":
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def chain(empty_chain: sa.Engine) -> str:
    """A database holding a verified chain of EVENTS events; its URI."""
    for start in range(0, EVENTS, 10):
        with empty_chain.connect() as conn:
            log.begin_write(conn)
            log.append(conn, [_row(i) for i in range(start, start + 10)])
            conn.commit()
    return empty_chain.url.render_as_string(hide_password=False)


def _verify(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlflow_share.cli", "audit", "verify", "--backend-store-uri", uri,
         *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def _tamper(uri: str, *statements: str) -> None:
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for trigger in ("share_audit_no_update", "share_audit_no_delete",
                            "share_audit_append_only"):
                conn.exec_driver_sql(f"DROP TRIGGER {trigger}")
        else:
            for trigger in ("share_audit_no_update", "share_audit_no_truncate",
                            "share_audit_append_only"):
                conn.exec_driver_sql(f"DROP TRIGGER {trigger} ON share_audit_events")
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_intact_chain_verifies(chain: str) -> None:
    result = _verify(chain)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {EVENTS} events; head seq {EVENTS} ")


@pytest.mark.parametrize("statement, bad_seq", [
    ("UPDATE share_audit_events SET principal = 'mallory' WHERE seq = 17", 17),
    ("UPDATE share_audit_events SET details = '{}' WHERE seq = 3", 3),
    ("DELETE FROM share_audit_events WHERE seq = 23", 23),
    ("UPDATE share_audit_events SET status = 403 WHERE seq = 50", 50),
])
def test_edited_or_deleted_event_is_named(chain: str, statement: str, bad_seq: int) -> None:
    _tamper(chain, statement)
    result = _verify(chain)
    assert result.returncode == 1
    assert f"FAILED at seq {bad_seq}:" in result.stderr


@pytest.mark.parametrize("bad_seq", [1, 17, 18, 34, 50])
def test_parallel_verification_finds_the_same_first_bad_event(chain: str, bad_seq: int) -> None:
    from mlflow_share.audit.verify import verify_chain

    engine = sa.create_engine(chain)
    assert verify_chain(engine, processes=3, parallel_from=1).events == EVENTS
    later = [f"DELETE FROM share_audit_events WHERE seq = {bad_seq + 20}"] if bad_seq <= 30 else []
    _tamper(chain, f"UPDATE share_audit_events SET client = 'x' WHERE seq = {bad_seq}", *later)
    serial = verify_chain(engine, processes=1)
    parallel = verify_chain(engine, processes=3, parallel_from=1)
    engine.dispose()
    assert serial.first_bad_seq == parallel.first_bad_seq == bad_seq
    assert (serial.expected, serial.actual) == (parallel.expected, parallel.actual)


def test_edit_with_recomputed_hash_breaks_the_next_link(chain: str) -> None:
    engine = sa.create_engine(chain)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM share_audit_events WHERE seq = 10")).one()
    engine.dispose()
    values = [row._mapping[f] for f in models.FIELDS]
    values[models.FIELDS.index("principal")] = "mallory"
    forged = models.event_hash(10, row.prev_hash, values)
    _tamper(chain, f"UPDATE share_audit_events SET principal = 'mallory', hash = '{forged}' "
                   "WHERE seq = 10")
    result = _verify(chain)
    assert result.returncode == 1 and "FAILED at seq 11:" in result.stderr
    assert forged in result.stderr  # expected (the link) vs actual, both named


def _checkpoint(chain: str, tmp_path: Path) -> tuple[Path, Path]:
    key, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    cli = [sys.executable, "-m", "mlflow_share.cli", "audit"]
    subprocess.run([*cli, "keygen", "--private", str(key), "--public", str(public)], check=True,
                   capture_output=True, timeout=60)
    checkpoint = tmp_path / "head.json"
    done = subprocess.run([*cli, "checkpoint", "--backend-store-uri", chain, "--key", str(key),
                           "-o", str(checkpoint)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(checkpoint.read_text())["seq"] == EVENTS
    return checkpoint, public


def test_truncated_tail_needs_and_finds_a_checkpoint(chain: str, tmp_path: Path) -> None:
    checkpoint, public = _checkpoint(chain, tmp_path)
    _tamper(chain, "DELETE FROM share_audit_events WHERE seq > 45")
    assert _verify(chain).returncode == 0  # a chain alone cannot see a missing tail
    result = _verify(chain, "--checkpoint", str(checkpoint), "--key", str(public))
    assert result.returncode == 1 and "FAILED at seq 46:" in result.stderr
    assert "truncated" in result.stderr


def test_wholly_recomputed_chain_is_caught_by_the_checkpoint(chain: str, tmp_path: Path) -> None:
    checkpoint, public = _checkpoint(chain, tmp_path)
    engine = sa.create_engine(chain)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.text("SELECT * FROM share_audit_events ORDER BY seq"))]
    engine.dispose()
    rows[4]["principal"] = "mallory"
    prev, updates = models.GENESIS_HASH, []
    for row in rows:
        new_hash = models.event_hash(row["seq"], prev, [row[f] for f in models.FIELDS])
        updates.append(f"UPDATE share_audit_events SET principal = '{row['principal']}', "
                       f"prev_hash = '{prev}', hash = '{new_hash}' WHERE seq = {row['seq']}")
        prev = new_hash
    _tamper(chain, *updates)
    assert _verify(chain).returncode == 0  # internally consistent
    result = _verify(chain, "--checkpoint", str(checkpoint), "--key", str(public))
    assert result.returncode == 1 and f"FAILED at seq {EVENTS}:" in result.stderr
    assert "rewritten" in result.stderr


def test_forged_checkpoint_signature_is_refused(chain: str, tmp_path: Path) -> None:
    checkpoint, public = _checkpoint(chain, tmp_path)
    document = json.loads(checkpoint.read_text())
    document["seq"] = 10
    checkpoint.write_text(json.dumps(document))
    result = _verify(chain, "--checkpoint", str(checkpoint), "--key", str(public))
    assert result.returncode != 0 and "signature" in result.stderr


def test_hash_is_sha256_over_the_canonical_encoding() -> None:
    values = [_row(0)[f] for f in models.FIELDS]
    encoded = models.canonical(1, models.GENESIS_HASH, values)
    assert json.loads(encoded)[:3] == [1, models.GENESIS_HASH, values[0]]
    assert models.event_hash(1, models.GENESIS_HASH, values) == hashlib.sha256(encoded).hexdigest()
    values[models.FIELDS.index("status")] = 201
    assert models.event_hash(1, models.GENESIS_HASH, values) != hashlib.sha256(encoded).hexdigest()



AWKWARD = ['ünïcødé 🚀', 'quote " and \\ backslash', "new\nline\ttab\r", "\x01\x1f control",
           "'; DROP TABLE share_audit_events; --", "", "\u2028\u2029 separators"]


def test_single_appends_store_the_hash_python_computes(empty_chain: sa.Engine) -> None:
    """One event at a time is how the server appends. On PostgreSQL the database builds the
    hash (one round trip for lock, head, insert and commit): it must be the very hash that
    Python computes over the stored fields, for every kind of value."""
    engine = empty_chain
    appender = log.AuditAppender(engine)
    for i, text in enumerate(AWKWARD * 2):
        row = {**_row(i), "principal": text, "resource_name": text or None,
               "details": models.encode_details({"changes": [{"value": text}]}),
               "ts": 2**62 + i, "status": None if i % 3 else 503}
        if i < 2:  # longer than their columns: cut, not refused (PostgreSQL cuts excess
            # spaces silently, which would leave a stored value that is not the hashed one)
            row.update(resource_id="id" + " " * 300, route="r" * 600)
        if i % 2:
            appender.append(row)
        else:
            with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    assert log._pipelines(conn.connection.dbapi_connection)
                log.begin_write(conn)
                log.append(conn, [row], commit=True)
                conn.commit()
    with engine.connect() as conn:
        stored = conn.execute(sa.select(*[models.events.c[c] for c in models.COLUMNS])
                              .order_by(models.events.c.seq)).all()
    assert [r.seq for r in stored] == list(range(1, 2 * len(AWKWARD) + 1))
    previous = models.GENESIS_HASH
    for r in stored:
        assert r.prev_hash == previous
        assert r.hash == models.event_hash(r.seq, previous, [r._mapping[f] for f in models.FIELDS])
        previous = r.hash
    assert {r.principal for r in stored} == set(AWKWARD)
    assert [len(r.resource_id) for r in stored[:2]] == [256, 256]
    assert [len(r.route) for r in stored[:2]] == [512, 512]
    result = _verify(engine.url.render_as_string(hide_password=False))
    assert result.returncode == 0, result.stderr


def test_a_savepoint_inside_a_write_commits_with_the_rest(empty_chain: sa.Engine,
                                                          tmp_path: Path) -> None:
    """MLflow opens SAVEPOINTs inside its write transactions (``begin_nested``): releasing one
    is not the transaction's commit. Writes before, inside and after it commit together, with
    one event, also when the SAVEPOINT is rolled back."""
    from mlflow.store.tracking.dbmodels.models import SqlExperimentTag
    from sqlalchemy.exc import IntegrityError

    from mlflow_share.stores import build_tracking_store

    uri = empty_chain.url.render_as_string(hide_password=False)
    store = build_tracking_store(f"audit+{uri}", str(tmp_path / "artifacts"))
    experiment = int(store.create_experiment(f"savepoints-{uuid.uuid4().hex[:6]}"))

    def events() -> int:
        with empty_chain.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(models.events))
                       .scalar_one())

    # MLflow's own: the default label schema is inserted in a SAVEPOINT on first listing.
    assert len(store.list_label_schemas(str(experiment))) >= 1
    first = events()
    with store.ManagedSessionMaker(read_only=False) as session:
        session.add(SqlExperimentTag(experiment_id=experiment, key="before", value="1"))
        with session.begin_nested():
            session.add(SqlExperimentTag(experiment_id=experiment, key="inside", value="2"))
            session.flush()
        session.add(SqlExperimentTag(experiment_id=experiment, key="after", value="3"))
    assert events() == first + 1
    with store.ManagedSessionMaker(read_only=False) as session:
        session.add(SqlExperimentTag(experiment_id=experiment, key="kept", value="4"))
        session.flush()
        try:
            with session.begin_nested():  # a duplicate key: only the SAVEPOINT rolls back
                session.add(SqlExperimentTag(experiment_id=experiment, key="before", value="x"))
                session.flush()
        except IntegrityError:
            pass
    assert events() == first + 2
    tags = store.get_experiment(str(experiment)).tags
    assert {k: tags[k] for k in ("before", "inside", "after", "kept")} == {
        "before": "1", "inside": "2", "after": "3", "kept": "4"}
    result = _verify(uri)
    assert result.returncode == 0, result.stderr
