"""The audit table, the database rules that keep it append-only, and the chain's hash.

Each event's ``hash`` is SHA-256 over a canonical encoding of its sequence number, the previous
event's hash and every other column, so changing, removing or inserting any event breaks the
chain from that point. The database itself refuses UPDATE, DELETE, out-of-order INSERT (which
also stops SQLite's ``INSERT OR REPLACE``) and, on PostgreSQL, TRUNCATE (``db.install_audit_triggers``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from mlflow_share import db

# The table, its triggers and their installation are with the rest of the schema (db.py).
TABLE = db.AUDIT_TABLE
GENESIS_HASH = db.GENESIS_HASH
events = db.audit_events
install_triggers = db.install_audit_triggers

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
