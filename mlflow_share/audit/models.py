"""The audit table, the database rules that keep it append-only, and the chain's hash.

Each event's ``hash`` is SHA-256 over a canonical encoding of its sequence number, the previous
event's hash and every other column, so changing, removing or inserting any event breaks the
chain from that point. The database itself refuses UPDATE, DELETE, out-of-order INSERT (which
also stops SQLite's ``INSERT OR REPLACE``) and, on PostgreSQL, TRUNCATE.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share import db

TABLE = "share_audit_events"
GENESIS_HASH = "0" * 64

events = sa.Table(
    TABLE,
    db.metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("principal", sa.String(160), nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("method", sa.String(8), nullable=True),
    sa.Column("route", sa.String(512), nullable=True),
    sa.Column("resource_kind", sa.String(32), nullable=True),
    sa.Column("resource_id", sa.String(256), nullable=True),
    sa.Column("resource_name", sa.String(256), nullable=True),
    sa.Column("owner_team", sa.String(128), nullable=True),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("client", sa.String(64), nullable=True),
    # Every owner team the request touched, as ",team-a,team-b," (team names have no commas):
    # a maintainer sees an event if any of the team's resources was involved.
    sa.Column("owner_teams", sa.String(1024), nullable=True),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("share_audit_ts_idx", "ts"),
    sa.Index("share_audit_principal_idx", "principal", "seq"),
    sa.Index("share_audit_owner_idx", "owner_team", "seq"),
    sa.Index("share_audit_resource_idx", "resource_kind", "resource_id"),
)

# The hashed fields, in hashing order (seq and prev_hash come first, hash is the result).
FIELDS: tuple[str, ...] = (
    "ts", "request_id", "source", "principal", "action", "method", "route", "resource_kind",
    "resource_id", "resource_name", "owner_team", "decision", "status", "client", "owner_teams",
    "details",
)
COLUMNS: tuple[str, ...] = ("seq", "prev_hash", *FIELDS, "hash")

# The longest text each bounded column holds. Longer values are cut before the hash is taken,
# so that what is hashed is what is stored: PostgreSQL refuses an over-long value, or cuts it
# silently when the excess is spaces (which `audit verify` would then report as tampering).
LIMITS: dict[str, int] = {
    column.name: column.type.length for column in events.columns
    if column.name in FIELDS and isinstance(column.type, sa.String) and column.type.length
}


def fit(row: dict[str, Any]) -> None:
    """Cut ``row``'s text fields to their columns' lengths (see ``LIMITS``)."""
    for name, limit in LIMITS.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            row[name] = value[:limit]


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def canonical(seq: int, prev_hash: str, values: Sequence[Any]) -> bytes:
    """The bytes an event's hash covers: a JSON array of seq, prev_hash and ``FIELDS``."""
    return _encode([seq, prev_hash, *values]).encode("utf-8")


def encode_values(values: Sequence[Any]) -> str:
    """The JSON array of ``FIELDS`` values, encoded as ``canonical`` encodes them."""
    return _encode(list(values))


def encode_row(row: Sequence[Any]) -> bytes:
    """``canonical`` of a row read in ``COLUMNS`` order (the trailing hash is left out)."""
    return _encode(row[:-1]).encode("utf-8")


def event_hash(seq: int, prev_hash: str, values: Sequence[Any]) -> str:
    return hashlib.sha256(canonical(seq, prev_hash, values)).hexdigest()


def encode_teams(teams: Sequence[str], first: str | None = None) -> str | None:
    names = [t for t in ([first] if first else []) + list(teams) if t]
    unique = list(dict.fromkeys(names))
    return ("," + ",".join(unique) + ",")[:1024] if unique else None


def encode_details(details: Mapping[str, Any]) -> str:
    """Details are stored (and hashed) as canonical JSON text: sorted keys, no spaces."""
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS share_audit_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'mlflow-share audit events are append-only'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS share_audit_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'mlflow-share audit events are append-only'); END""",
    # A REPLACE deletes the old row without firing DELETE triggers (recursive_triggers is off):
    # only the next sequence number, linked to the current head, may be inserted.
    f"""CREATE TRIGGER IF NOT EXISTS share_audit_append_only BEFORE INSERT ON {TABLE}
    WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM {TABLE})
      OR NEW.prev_hash IS NOT COALESCE(
           (SELECT hash FROM {TABLE} WHERE seq = NEW.seq - 1), '{GENESIS_HASH}')
    BEGIN SELECT RAISE(ABORT, 'mlflow-share audit events are append-only'); END""",
)

_POSTGRES_TRIGGERS = (
    f"""CREATE OR REPLACE FUNCTION share_audit_refuse() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'mlflow-share audit events are append-only'; END
    $$ LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp""",
    f"""CREATE OR REPLACE FUNCTION share_audit_check_append() RETURNS trigger AS $$
    DECLARE head_seq BIGINT; head_hash TEXT;
    BEGIN
      SELECT seq, hash INTO head_seq, head_hash FROM {TABLE} ORDER BY seq DESC LIMIT 1;
      IF NEW.seq IS DISTINCT FROM COALESCE(head_seq, 0) + 1
         OR NEW.prev_hash IS DISTINCT FROM COALESCE(head_hash, '{GENESIS_HASH}') THEN
        RAISE EXCEPTION 'mlflow-share audit events are append-only';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp""",
    f"DROP TRIGGER IF EXISTS share_audit_no_update ON {TABLE}",
    f"""CREATE TRIGGER share_audit_no_update BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION share_audit_refuse()""",
    f"DROP TRIGGER IF EXISTS share_audit_no_truncate ON {TABLE}",
    f"""CREATE TRIGGER share_audit_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION share_audit_refuse()""",
    f"DROP TRIGGER IF EXISTS share_audit_append_only ON {TABLE}",
    f"""CREATE TRIGGER share_audit_append_only BEFORE INSERT ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION share_audit_check_append()""",
    # ENABLE ALWAYS: the triggers fire even with session_replication_role = replica.
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER share_audit_no_update",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER share_audit_no_truncate",
    f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER share_audit_append_only",
)

_POSTGRES_TRIGGER_NAMES = ("share_audit_no_update", "share_audit_no_truncate",
                           "share_audit_append_only")


def install_triggers(engine: Engine) -> None:
    """Create the append-only triggers if they are missing (idempotent, any process)."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if dialect == "sqlite":
            for statement in _SQLITE_TRIGGERS:
                conn.exec_driver_sql(statement)
        elif dialect == "postgresql":
            # Serialize concurrent workers; CREATE OR REPLACE on functions races otherwise.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7219350001)")
            present = {row[0] for row in conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %(t)s::regclass "
                "AND tgenabled = 'A'", {"t": TABLE})}
            if not set(_POSTGRES_TRIGGER_NAMES) <= present:
                # pg_temp last: a session's temporary table cannot stand in for the real one.
                schema = conn.exec_driver_sql("SELECT quote_ident(current_schema())").scalar()
                for statement in _POSTGRES_TRIGGERS:
                    conn.exec_driver_sql(statement.replace("{schema}", str(schema)))
