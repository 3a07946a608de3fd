"""Trust rules of workload identity: which issuer's JWTs (for which audience, subject and
claims) stand for which service account. Validation, storage, and their part of policy as code.

A rule names its issuer by URL; that URL (its discovery document) or the rule's own JWKS URL
are the only addresses the server ever fetches keys from, so what a token claims as its
``iss`` can select a rule but never makes the server fetch anything else. Issuer and JWKS
URLs are ``https``, or ``http`` on a loopback address (a test issuer on the same machine).
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.audit.log import audited_write
from mlflow_share.errors import Conflict, InvalidInput, NotFound
from mlflow_share.policy.enforcer import validate_identifier

MAX_URL = 512
MAX_PATTERN = 256
MAX_CLAIMS = 16
_CLAIM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}")
# Claims a rule matches through its own fields, or that every JWT has: not claim patterns.
_RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "exp", "nbf", "iat", "jti"})
_LOOPBACK_NAMES = frozenset({"localhost"})


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(what: str, value: object) -> str:
    """``value`` without a trailing slash if it is an https URL (http on loopback) with no
    user, query or fragment.

    Raises:
        InvalidInput: anything else.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise InvalidInput(f"The {what} must be a URL of at most {MAX_URL} characters.")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise InvalidInput(f"The {what} {value[:200]!r} is not a valid URL.") from None
    if parts.scheme not in ("https", "http") or not host or parts.username is not None \
            or parts.password is not None or parts.query or parts.fragment \
            or any(ord(c) < 33 for c in value):
        raise InvalidInput(f"The {what} must be an https:// URL without user, query or "
                           f"fragment (got {value[:200]!r}).")
    if parts.scheme == "http" and not _loopback(host):
        raise InvalidInput(f"The {what} must use https (plain http only on a loopback "
                           "address).")
    return value.rstrip("/")


def _checked_pattern(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_PATTERN \
            or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"The {what} must be 1-{MAX_PATTERN} printable characters.")
    return value


def _checked_subject(value: object) -> str:
    subject = _checked_pattern("subject pattern", value)
    if set(subject) <= {"*", "?"}:
        # With a public issuer (a CI provider's), such a rule would admit every workload of
        # every one of its customers that asks for this audience.
        raise InvalidInput("A subject pattern must not match every subject: name the "
                           "workload (e.g. 'repo:org/app:ref:refs/heads/main', "
                           "'system:serviceaccount:ml:*').")
    return subject


def _checked_claims(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_CLAIMS:
        raise InvalidInput(f"'claims' must map at most {MAX_CLAIMS} claim names to patterns.")
    claims: dict[str, str] = {}
    for name, pattern in value.items():
        if not isinstance(name, str) or not _CLAIM_NAME.fullmatch(name):
            raise InvalidInput(f"Invalid claim name {str(name)[:100]!r}.")
        if name in _RESERVED_CLAIMS:
            raise InvalidInput(f"Claim {name!r} is matched by the rule's own fields "
                               "(issuer, audience, subject) or checked for every token.")
        claims[name] = _checked_pattern(f"pattern of claim {name!r}", pattern)
    return dict(sorted(claims.items()))


@dataclass(frozen=True)
class TrustRule:
    """JWTs of ``issuer`` for ``audience``, ``sub`` matching ``subject`` (a glob, as
    ``fnmatch`` with case), and each claim of ``claims`` matching its glob, are exchanged for
    tokens of ``service_account``. Keys come from ``jwks_uri`` if set, else from the
    issuer's OpenID discovery document."""

    issuer: str
    audience: str
    subject: str
    service_account: str
    claims: dict[str, str] = field(default_factory=dict)
    jwks_uri: str | None = None
    id: str = ""
    created_by: str = ""
    created_at: int = 0

    @classmethod
    def checked(cls, data: dict[str, Any]) -> TrustRule:
        """A rule from user input, every field validated.

        Raises:
            InvalidInput: a field is missing or invalid.
        """
        jwks_uri = data.get("jwks_uri")
        return cls(
            issuer=checked_url("issuer", data.get("issuer")),
            audience=_checked_pattern("audience", data.get("audience")),
            subject=_checked_subject(data.get("subject")),
            service_account=validate_identifier("service account name",
                                                data.get("service_account")),
            claims=_checked_claims(data.get("claims")),
            jwks_uri=checked_url("JWKS URL", jwks_uri) if jwks_uri not in (None, "") else None,
        )

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        """What makes two rules the same rule (everything but id and history)."""
        return (self.issuer, self.audience, self.subject, self.service_account,
                json.dumps(self.claims, sort_keys=True), self.jwks_uri or "")

    def to_dict(self, *, with_id: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"issuer": self.issuer, "audience": self.audience,
                               "subject": self.subject, "service_account": self.service_account}
        if self.claims:
            out["claims"] = dict(self.claims)
        if self.jwks_uri:
            out["jwks_uri"] = self.jwks_uri
        if with_id:
            out.update(id=self.id, created_by=self.created_by, created_at=self.created_at)
        return out

    def mismatches(self, claims: dict[str, Any]) -> list[str]:
        """Why verified ``claims`` do not match this rule (``[]``: they do). The issuer and
        the signature were checked before."""
        reasons = []
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            reasons.append("another audience")
        if not fnmatchcase(str(claims.get("sub", "")), self.subject):
            reasons.append("another subject")
        for name, pattern in self.claims.items():
            value = claims.get(name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            if not isinstance(value, (str, int, float)) or not fnmatchcase(str(value), pattern):
                reasons.append(f"claim {name!r} does not match")
        return reasons


def _from_row(row: Any) -> TrustRule:
    return TrustRule(issuer=row.issuer, audience=row.audience, subject=row.subject,
                     service_account=row.service_account, claims=json.loads(row.claims),
                     jwks_uri=row.jwks_uri, id=row.id, created_by=row.created_by,
                     created_at=row.created_at)


def _service_accounts(conn: sa.Connection) -> set[str]:
    """The service accounts a trust rule may name: not org admins (a workload's short-lived
    token of an admin could make itself lasting access: users, trust rules, SCIM tokens)."""
    return set(conn.execute(sa.select(db.users.c.name).where(
        db.users.c.is_service_account, sa.not_(db.users.c.is_admin))).scalars())


def _insert(conn: sa.Connection, rule: TrustRule, by: str) -> TrustRule:
    stored = replace(rule, id=uuid.uuid4().hex, created_by=by[:160], created_at=db.now_ms())
    conn.execute(db.trust_rules.insert().values(
        id=stored.id, issuer=stored.issuer, audience=stored.audience, subject=stored.subject,
        claims=json.dumps(stored.claims, sort_keys=True), service_account=stored.service_account,
        jwks_uri=stored.jwks_uri, created_by=stored.created_by, created_at=stored.created_at))
    return stored


class TrustRules:
    """The trust rules in mlflow-share's database (every worker reads the same rows)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, rule: TrustRule, *, by: str) -> TrustRule:
        """Store a validated rule (audited).

        Raises:
            NotFound: the service account does not exist (or is a person's account).
            Conflict: the same rule exists.
        """
        change: dict[str, Any] = {"op": "trust_add", **rule.to_dict(with_id=False)}
        with audited_write(self.engine, change) as conn:
            if rule.service_account not in _service_accounts(conn):
                raise NotFound(f"No service account that is not an org admin is named "
                               f"{rule.service_account!r} (create it with `mlflow-share user "
                               "create NAME --service-account`).")
            for existing in self._rows(conn, rule.issuer):
                if existing.key == rule.key:
                    raise Conflict(f"Trust rule {existing.id} already says this.")
            stored = _insert(conn, rule, by)
            change["id"] = stored.id
        return stored

    def remove(self, rule_id: str) -> None:
        """Raises NotFound when no rule has this id."""
        with audited_write(self.engine, {"op": "trust_remove", "id": rule_id[:64]}) as conn:
            if not conn.execute(db.trust_rules.delete().where(
                    db.trust_rules.c.id == rule_id)).rowcount:
                raise NotFound(f"No trust rule has the id {rule_id[:64]!r} (see `mlflow-share "
                               "trust list`).")

    def all(self) -> list[TrustRule]:
        with self.engine.connect() as conn:
            return self._rows(conn)

    def for_issuer(self, issuer: str) -> list[TrustRule]:
        """The rules of exactly this issuer (a trailing slash aside), oldest first."""
        with self.engine.connect() as conn:
            return self._rows(conn, issuer.rstrip("/"))

    @staticmethod
    def _rows(conn: sa.Connection, issuer: str | None = None) -> list[TrustRule]:
        query = sa.select(db.trust_rules).order_by(db.trust_rules.c.created_at,
                                                   db.trust_rules.c.id)
        if issuer is not None:
            query = query.where(db.trust_rules.c.issuer == issuer)
        return [_from_row(row) for row in conn.execute(query)]


# -- policy as code: the ``trust:`` list -------------------------------------------------------
def export_rules(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every rule as policy YAML lists it (no ids: a rule is what it says)."""
    return [rule.to_dict(with_id=False)
            for rule in sorted(TrustRules._rows(conn), key=lambda r: r.key)]


def desired_rules(entries: object, conn: sa.Connection, errors: list[str]) -> list[TrustRule]:
    """The rules a policy document's ``trust:`` list asks for; problems go to ``errors``."""
    if not isinstance(entries, list):
        errors.append("'trust' must be a list of rules.")
        return []
    accounts = _service_accounts(conn)
    wanted: dict[tuple[str, ...], TrustRule] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            errors.append(f"Trust entries must be mappings: {str(entry)[:200]!r}.")
            continue
        unknown = set(entry) - {"issuer", "audience", "subject", "service_account", "claims",
                                "jwks_uri"}
        if unknown:
            errors.append(f"Unknown trust rule keys: {', '.join(sorted(map(str, unknown)))}.")
            continue
        try:
            rule = TrustRule.checked(entry)
        except InvalidInput as exc:
            errors.append(exc.message)
            continue
        if rule.service_account not in accounts:
            errors.append(f"Trust rule for {rule.service_account!r}: no such service account "
                          "(or it is an org admin).")
        if rule.key in wanted:
            errors.append(f"Trust rule for {rule.service_account!r} from {rule.issuer!r} is "
                          "listed twice.")
        wanted[rule.key] = rule
    return list(wanted.values())


def _describe_rule(sign: str, rule: TrustRule) -> str:
    claims = "".join(f" {k}={v}" for k, v in rule.claims.items())
    return (f"{sign} trust {rule.issuer} aud={rule.audience} sub={rule.subject}{claims} "
            f"-> {rule.service_account}")


def apply_rules(conn: sa.Connection, desired: list[TrustRule], *, by: str,
                dry_run: bool) -> list[str]:
    """Make the stored rules ``desired`` in ``conn``'s transaction; return the changes."""
    current = {rule.key: rule for rule in TrustRules._rows(conn)}
    wanted = {rule.key: rule for rule in desired}
    removed = [current[key] for key in sorted(set(current) - set(wanted))]
    added = [wanted[key] for key in sorted(set(wanted) - set(current))]
    if not dry_run:
        for rule in removed:
            conn.execute(db.trust_rules.delete().where(db.trust_rules.c.id == rule.id))
        for rule in added:
            _insert(conn, rule, by)
    return [_describe_rule("-", r) for r in removed] + [_describe_rule("+", r) for r in added]
