"""mlflow-share's own tables, kept in MLflow's database, and the engine that reaches them.

The tables are prefixed ``share_`` and never touch MLflow's schema. ``share_state`` holds
``policy_version`` and ``resource_version``: every change to identity or policy bumps one in
the same transaction, which is how every worker process learns that its cache is stale.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from mlflow_share import config

metadata = sa.MetaData()

users = sa.Table(
    "share_users",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("is_service_account", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # An SSO user's identity at the provider ("<issuer> <sub>"), bound at provisioning.
    sa.Column("sso_subject", sa.String(512), nullable=True),
    # Set while the user is disabled: no password, token or session of theirs authenticates.
    sa.Column("disabled_at", sa.BigInteger, nullable=True),
    # "scim" for a user an identity provider provisions through SCIM (share_scim_users):
    # its SCIM groups, not an SSO login's groups claim, decide its teams.
    sa.Column("provisioned_by", sa.String(16), nullable=True),
)

tokens = sa.Table(
    "share_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_name", sa.String(128), sa.ForeignKey("share_users.name"), nullable=False),
    sa.Column("description", sa.String(256), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

teams = sa.Table(
    "share_teams",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Memberships and org roles as casbin rules (ptype g: user, role, team).
casbin_rules = sa.Table(
    "share_casbin_rule",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ptype", sa.String(8), nullable=False),
    sa.Column("v0", sa.String(128), nullable=False),
    sa.Column("v1", sa.String(128), nullable=False),
    sa.Column("v2", sa.String(128), nullable=False, default=""),
    sa.UniqueConstraint("ptype", "v0", "v1", "v2", name="share_casbin_rule_uq"),
)

# Ownership of MLflow resources, keyed by MLflow's IDs. Registered models have no ID in
# MLflow (their key is the name), so each gets a UUID here and its current name beside it;
# a rename moves the name, never the grants.
resources = sa.Table(
    "share_resources",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("resource_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=True, index=True),
    sa.Column("owner_team", sa.String(128), nullable=False, index=True),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

grants = sa.Table(
    "share_grants",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("resource_id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(128), primary_key=True),
    sa.Column("permission", sa.String(16), primary_key=True),
    sa.Column("granted_by", sa.String(128), nullable=False),
    sa.Column("granted_at", sa.BigInteger, nullable=False),
    sa.Index("share_grants_team_idx", "team", "kind"),
)

state = sa.Table(
    "share_state",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# The SHA-256 and size of every file written through a checksum+ artifact repository, keyed
# by its path under the server's artifact root, and the audit event that recorded it. Files
# found already stored (``mlflow-share adopt artifacts``) are recorded as they were read, with
# ``origin`` "adoption": under the server's root by path, in a declared registration source
# root by their full URI (``file:///...``, ``s3://...``; never a valid path under the root).
DIGEST_UPLOAD, DIGEST_ADOPTION = "upload", "adoption"
artifact_digests = sa.Table(
    "share_artifact_digests",
    metadata,
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("audit_seq", sa.BigInteger, nullable=True),
    sa.Column("recorded_at", sa.BigInteger, nullable=False),
    # "upload": hashed as the bytes came in through mlflow-share; "adoption": trusted on
    # adoption, hashed as found in storage (what was there before cannot be checked).
    sa.Column("origin", sa.String(16), nullable=False,
              server_default=sa.text(f"'{DIGEST_UPLOAD}'")),
)

# The manifest of each registered model version's files (an in-toto statement, canonical
# JSON), its digest, the version's identity and the audit event that recorded them.
model_manifests = sa.Table(
    "share_model_manifests",
    metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, index=True),
    sa.Column("location", sa.String(1024), nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("identity", sa.String(64), nullable=False),
    sa.Column("signature", sa.Text, nullable=True),
    sa.Column("audit_seq", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# The inference gateway's usage per model version, calling team and minute.
gateway_usage = sa.Table(
    "share_gateway_usage",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("version", sa.String(16), primary_key=True),
    sa.Column("team", sa.String(128), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("latency_sum_ms", sa.Float, nullable=False),
    sa.Column("p50_ms", sa.Float, nullable=True),
    sa.Column("p99_ms", sa.Float, nullable=True),
    sa.Column("p95_ms", sa.Float, nullable=True),
    # The successful calls' latencies (HdrHistogram, microseconds, base64): flushes and
    # processes add theirs, and any set of rows gives percentiles over exactly its calls.
    sa.Column("latency_histogram", sa.Text, nullable=True),
)

# Named deployments on the gateway (`mlflow deployments -t mlflow-share`): a name bound to a
# registered model's alias or version.
gateway_deployments = sa.Table(
    "share_gateway_deployments",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("alias", sa.String(256), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Aliases only maintainers may move (governance.aliases), and every alias move.
protected_aliases = sa.Table(
    "share_protected_aliases",
    metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(256), primary_key=True),
    sa.Column("protected_by", sa.String(128), nullable=False),
    sa.Column("protected_at", sa.BigInteger, nullable=False),
    # Moves need a second maintainer's approval (share_alias_requests).
    sa.Column("require_approval", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Requested moves of protected aliases that need a second maintainer: request -> approve or
# reject, each recorded with who and when.
alias_requests = sa.Table(
    "share_alias_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(64), nullable=False, index=True),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("requested_at", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, approved, rejected, failed
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", sa.BigInteger, nullable=True),
    sa.Column("decision", sa.Text, nullable=True),
)

alias_history = sa.Table(
    "share_alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.String(64), nullable=True, index=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    sa.Column("principal", sa.String(128), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
)

# Sharing packages (governance.packages): pinned versions of a model, their metadata, target
# teams and validation report. The grants of a published, unexpired package are in force.
packages = sa.Table(
    "share_packages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(64), nullable=False, index=True),
    sa.Column("versions", sa.Text, nullable=False),  # JSON list of version numbers
    sa.Column("alias", sa.String(256), nullable=True),
    sa.Column("semver", sa.String(128), nullable=True),
    sa.Column("details", sa.Text, nullable=False),  # JSON: description, metrics, contact...
    sa.Column("teams", sa.Text, nullable=False),  # JSON [[team, permission], ...]
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("report", sa.Text, nullable=True),  # JSON validation report
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("published_by", sa.String(128), nullable=True),
    sa.Column("published_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_by", sa.String(128), nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

# The grants a published package holds, removed when it is revoked; past ``expires_at`` they
# no longer count (the policy snapshot reloads at the earliest expiry).
package_grants = sa.Table(
    "share_package_grants",
    metadata,
    sa.Column("package_id", sa.String(32), primary_key=True),
    sa.Column("team", sa.String(128), primary_key=True),
    sa.Column("permission", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Index("share_package_grants_team_idx", "team", "kind"),
)

# A semantic version names one version of a model, once and for ever (set on publish).
semvers = sa.Table(
    "share_semvers",
    metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),
    sa.Column("semver", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("package_id", sa.String(32), nullable=False),
    sa.UniqueConstraint("model_id", "version", name="share_semvers_version_uq"),
)

# Webhook subscriptions to a model's events, and every delivery attempt.
subscriptions = sa.Table(
    "share_subscriptions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(64), nullable=False, index=True),
    sa.Column("subscriber", sa.String(192), nullable=False),  # "team:<name>" or "user:<name>"
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

deliveries = sa.Table(
    "share_webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("subscription_id", sa.String(32), nullable=False, index=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, failed, refused
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Browser sessions (the cookie holds a random id; only its SHA-256 is stored) and OIDC logins
# under way (state → nonce and PKCE verifier; single use).
web_sessions = sa.Table(
    "share_web_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(128), nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("via", sa.String(16), nullable=False),  # "password" or "oidc"
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

web_logins = sa.Table(
    "share_web_logins",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("nonce", sa.String(128), nullable=False),
    sa.Column("verifier", sa.String(128), nullable=False),
    sa.Column("next_path", sa.String(512), nullable=False),
    sa.Column("binding_hash", sa.String(64), nullable=False),  # the starting browser's cookie
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Device logins under way (OAuth device authorization grant, RFC 8628). The device code is a
# bearer secret: only its SHA-256 is kept. The user code is short, lives minutes and works
# once; ``id`` names the login in the audit log (neither code is ever logged).
device_grants = sa.Table(
    "share_device_grants",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("device_code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_code", sa.String(16), nullable=False, unique=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("client_name", sa.String(128), nullable=True),  # as the device describes itself
    sa.Column("client_address", sa.String(64), nullable=True),
    sa.Column("requested_days", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, approved, denied, issued
    sa.Column("interval_s", sa.Integer, nullable=False),
    sa.Column("last_poll_at", sa.BigInteger, nullable=True),
    sa.Column("user_name", sa.String(128), nullable=True),  # who approved or denied it
    sa.Column("approved_days", sa.Float, nullable=True),
    sa.Column("token_id", sa.String(32), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("decided_at", sa.BigInteger, nullable=True),
)

# Workload identity (RFC 8693 token exchange): JWTs of ``issuer`` for ``audience`` whose
# ``sub`` matches ``subject`` (a glob) and whose claims match ``claims`` (a JSON object of
# claim -> glob) are exchanged for short-lived tokens of ``service_account``.
trust_rules = sa.Table(
    "share_trust_rules",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("issuer", sa.String(512), nullable=False, index=True),
    sa.Column("audience", sa.String(256), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("claims", sa.Text, nullable=False),
    sa.Column("service_account", sa.String(128), nullable=False),
    sa.Column("jwks_uri", sa.String(512), nullable=True),  # else the issuer's discovery document
    sa.Column("created_by", sa.String(160), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# How a token was issued when an OAuth grant issued it ("device_code" or "token_exchange"):
# a workload's short-lived token may not mint longer-lived ones.
token_origins = sa.Table(
    "share_token_origins",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("grant_type", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(512), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# SCIM provisioning (mlflow_share.scim): the identity provider's bearer tokens (only their
# SHA-256; they open /scim/v2/ and nothing else), the users and groups it provisioned under
# stable ids, and each group's members. A group is a team and role ("fraud:maintainer").
scim_tokens = sa.Table(
    "share_scim_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.String(256), nullable=True),
    sa.Column("created_by", sa.String(160), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

scim_users = sa.Table(
    "share_scim_users",
    metadata,
    sa.Column("scim_id", sa.String(36), primary_key=True),
    sa.Column("user_name", sa.String(128), nullable=False, unique=True),
    sa.Column("external_id", sa.String(256), nullable=True, index=True),
    sa.Column("attributes", sa.Text, nullable=False),  # JSON: name, emails, ... as sent
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

scim_groups = sa.Table(
    "share_scim_groups",
    metadata,
    sa.Column("scim_id", sa.String(36), primary_key=True),
    sa.Column("display_name", sa.String(256), nullable=False, unique=True),
    sa.Column("team", sa.String(128), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("external_id", sa.String(256), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

scim_members = sa.Table(
    "share_scim_members",
    metadata,
    sa.Column("group_id", sa.String(36), primary_key=True),
    sa.Column("user_name", sa.String(128), primary_key=True),
    sa.Index("share_scim_members_user_idx", "user_name"),
)

# -- the audit log: append-only, enforced by the database itself ---------------------------
# (what an event holds and how its hash is taken: ``mlflow_share.audit.models``)
AUDIT_TABLE = "share_audit_events"
GENESIS_HASH = "0" * 64

audit_events = sa.Table(
    AUDIT_TABLE,
    metadata,
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


_SQLITE_AUDIT_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS share_audit_no_update BEFORE UPDATE ON {AUDIT_TABLE}
    BEGIN SELECT RAISE(ABORT, 'mlflow-share audit events are append-only'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS share_audit_no_delete BEFORE DELETE ON {AUDIT_TABLE}
    BEGIN SELECT RAISE(ABORT, 'mlflow-share audit events are append-only'); END""",
    # A REPLACE deletes the old row without firing DELETE triggers (recursive_triggers is off):
    # only the next sequence number, linked to the current head, may be inserted.
    f"""CREATE TRIGGER IF NOT EXISTS share_audit_append_only BEFORE INSERT ON {AUDIT_TABLE}
    WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM {AUDIT_TABLE})
      OR NEW.prev_hash IS NOT COALESCE(
           (SELECT hash FROM {AUDIT_TABLE} WHERE seq = NEW.seq - 1), '{GENESIS_HASH}')
    BEGIN SELECT RAISE(ABORT, 'mlflow-share audit events are append-only'); END""",
)

_POSTGRES_AUDIT_TRIGGERS = (
    f"""CREATE OR REPLACE FUNCTION share_audit_refuse() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'mlflow-share audit events are append-only'; END
    $$ LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp""",
    f"""CREATE OR REPLACE FUNCTION share_audit_check_append() RETURNS trigger AS $$
    DECLARE head_seq BIGINT; head_hash TEXT;
    BEGIN
      SELECT seq, hash INTO head_seq, head_hash FROM {AUDIT_TABLE} ORDER BY seq DESC LIMIT 1;
      IF NEW.seq IS DISTINCT FROM COALESCE(head_seq, 0) + 1
         OR NEW.prev_hash IS DISTINCT FROM COALESCE(head_hash, '{GENESIS_HASH}') THEN
        RAISE EXCEPTION 'mlflow-share audit events are append-only';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp""",
    f"DROP TRIGGER IF EXISTS share_audit_no_update ON {AUDIT_TABLE}",
    f"""CREATE TRIGGER share_audit_no_update BEFORE UPDATE OR DELETE ON {AUDIT_TABLE}
    FOR EACH ROW EXECUTE FUNCTION share_audit_refuse()""",
    f"DROP TRIGGER IF EXISTS share_audit_no_truncate ON {AUDIT_TABLE}",
    f"""CREATE TRIGGER share_audit_no_truncate BEFORE TRUNCATE ON {AUDIT_TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION share_audit_refuse()""",
    f"DROP TRIGGER IF EXISTS share_audit_append_only ON {AUDIT_TABLE}",
    f"""CREATE TRIGGER share_audit_append_only BEFORE INSERT ON {AUDIT_TABLE}
    FOR EACH ROW EXECUTE FUNCTION share_audit_check_append()""",
    # ENABLE ALWAYS: the triggers fire even with session_replication_role = replica.
    f"ALTER TABLE {AUDIT_TABLE} ENABLE ALWAYS TRIGGER share_audit_no_update",
    f"ALTER TABLE {AUDIT_TABLE} ENABLE ALWAYS TRIGGER share_audit_no_truncate",
    f"ALTER TABLE {AUDIT_TABLE} ENABLE ALWAYS TRIGGER share_audit_append_only",
)

_POSTGRES_AUDIT_TRIGGER_NAMES = ("share_audit_no_update", "share_audit_no_truncate",
                           "share_audit_append_only")


def install_audit_triggers(engine: Engine) -> None:
    """Create the append-only triggers if they are missing (idempotent, any process)."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if dialect == "sqlite":
            for statement in _SQLITE_AUDIT_TRIGGERS:
                conn.exec_driver_sql(statement)
        elif dialect == "postgresql":
            # Serialize concurrent workers; CREATE OR REPLACE on functions races otherwise.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7219350001)")
            present = {row[0] for row in conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %(t)s::regclass "
                "AND tgenabled = 'A'", {"t": AUDIT_TABLE})}
            if not set(_POSTGRES_AUDIT_TRIGGER_NAMES) <= present:
                # pg_temp last: a session's temporary table cannot stand in for the real one.
                schema = conn.exec_driver_sql("SELECT quote_ident(current_schema())").scalar()
                for statement in _POSTGRES_AUDIT_TRIGGERS:
                    conn.exec_driver_sql(statement.replace("{schema}", str(schema)))


POLICY_VERSION = "policy_version"
RESOURCE_VERSION = "resource_version"

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def now_ms() -> int:
    return int(time.time() * 1000)


def get_engine(uri: str, *, purpose: str = "default") -> Engine:
    """One engine per URI, purpose and process (engines are not shared across fork).

    ``purpose="audit"`` is the audit appender's: no ping on checkout (an append that meets a
    dead connection is retried on a fresh one) and a small pool, since every request uses it.
    ``purpose="gateway"`` is the inference gateway's: no ping either (a few short reads per
    call; a dead connection fails that call and is replaced).

    Pool sizes: ``MLFLOW_SHARE_DB_POOL_SIZE`` and ``MLFLOW_SHARE_DB_MAX_OVERFLOW`` (each
    engine of each worker; MLflow's own stores read ``MLFLOW_SQLALCHEMYSTORE_POOL_SIZE`` and
    ``..._MAX_OVERFLOW``). On PostgreSQL, keep instances x workers x (both) under the server's
    ``max_connections``: past it, requests wait for a pooled connection instead of failing.
    """
    with _engines_lock:
        engine = _engines.get(f"{purpose}:{uri}")
        if engine is None:
            kwargs: dict[str, object] = {"pool_pre_ping": purpose not in ("audit", "gateway")}
            if uri.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            if not uri.startswith("sqlite"):
                settings = config.options()
                kwargs.update(pool_size=settings.db_pool_size,
                              max_overflow=settings.db_max_overflow)
            engine = sa.create_engine(uri, **kwargs)
            if uri.startswith("sqlite"):
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            _engines[f"{purpose}:{uri}"] = engine
        return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA busy_timeout = 30000")
    # In WAL mode NORMAL still survives a killed process (the WAL is in the OS's cache); only
    # a power loss can drop the last commits. FULL would fsync every audit batch.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def enable_wal(engine: Engine) -> None:
    """Put a SQLite database in WAL mode: readers never wait for the audit log's writers."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return
    for attempt in range(5):
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            return
        except OperationalError:  # another worker holds a lock while switching it
            time.sleep(0.1 * (attempt + 1))


def create_schema(engine: Engine) -> None:
    """Create the tables if missing; safe to call from several processes at once."""
    for attempt in range(5):
        try:
            metadata.create_all(engine, checkfirst=True)
            _add_missing_columns(engine)
            with engine.begin() as conn:
                for key in (POLICY_VERSION, RESOURCE_VERSION):
                    exists = conn.execute(
                        sa.select(state.c.value).where(state.c.key == key)
                    ).first()
                    if exists is None:
                        conn.execute(state.insert().values(key=key, value=1))
            return
        except (IntegrityError, OperationalError, ProgrammingError):
            # Another worker created the same table or row between check and create.
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


def _add_missing_columns(engine: Engine) -> None:
    """Columns added to an existing table since it was created (each with a default)."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if column.server_default is None and not column.nullable:
                raise RuntimeError(f"{table.name}.{column.name} needs a default to be added.")
            kind = column.type.compile(dialect=engine.dialect)
            default = ""
            if column.server_default is not None:
                clause: Any = column.server_default.arg  # type: ignore[attr-defined]
                default = " DEFAULT " + str(clause.compile(dialect=engine.dialect))
            null = "" if column.nullable else " NOT NULL"
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                                     f"{kind}{default}{null}")


def bump(conn: sa.Connection, key: str) -> None:
    """Advance a version counter inside the caller's transaction."""
    conn.execute(state.update().where(state.c.key == key).values(value=state.c.value + 1))


def read_versions(conn: sa.Connection) -> tuple[int, int]:
    rows: dict[str, int] = dict(conn.execute(  # type: ignore[arg-type]
        sa.select(state.c.key, state.c.value)).all())
    return int(rows.get(POLICY_VERSION, 0)), int(rows.get(RESOURCE_VERSION, 0))


SCHEME_PREFIX = config.AUDIT_SCHEME_PREFIX  # ``audit+sqlite://``: audited stores (mlflow_share.stores)


def strip_scheme(uri: str) -> str:
    """The database URI behind an ``audit+`` store URI."""
    return uri[len(SCHEME_PREFIX):] if uri.startswith(SCHEME_PREFIX) else uri


_SCHEMA_READY: set[str] = set()


def ensure_schema(db_uri: str) -> None:
    """Create mlflow-share's tables and the audit triggers once per process, as MLflow's
    stores create theirs: the server and code that opens an ``audit+`` URI find them there."""
    if db_uri in _SCHEMA_READY:
        return
    engine = get_engine(db_uri)
    enable_wal(engine)
    create_schema(engine)
    install_audit_triggers(engine)
    _SCHEMA_READY.add(db_uri)
