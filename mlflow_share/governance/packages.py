"""Sharing packages: a model's pinned versions, metadata and target teams, validated, then
published (the grants take effect), revoked or expired (they stop at once).

Life cycle: ``create`` validates at once and stores the package as ``validated`` or
``rejected`` with its report (there is no separate draft state: a package that is not
published yet is one of these two); ``validate`` runs the checks again (after a fix);
``edit`` changes what ``create`` took (versions or alias, target teams, semantic version,
model card, expiry) of a package not published yet and validates it again; ``withdraw``
deletes a package not published yet (the audit event of the deletion keeps its whole
record); ``publish`` (maintainers of the owner team) re-checks the bytes, writes the
package's grants, the semantic version and the ``mlflow_share.semver`` tag of the version in
one audited transaction; ``revoke`` removes the grants. A published package past
``expires_at`` reads as ``expired`` and its grants no longer count.

A validation runs outside the write transaction (it reads and runs the model); the write
that stores its outcome then checks, in its transaction, that the package is still what was
validated (``_unchanged``): an edit, a withdrawal or a publish that landed meanwhile makes it
a 409 instead of a report or grants of another content.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mlflow_share import db
from mlflow_share.artifacts.repository import ChecksumArtifactRepository
from mlflow_share.audit.log import audited_write
from mlflow_share.directory import MODEL
from mlflow_share.errors import Conflict, InvalidInput, NotFound
from mlflow_share.governance import validation
from mlflow_share.governance.aliases import current_version
from mlflow_share.mlflow_compat import tables as mt
from mlflow_share.policy.enforcer import validate_choice, validate_identifier

SHARE_PERMISSIONS = ("read", "execute", "write")
UNPUBLISHED = ("validated", "rejected")  # what may be validated again, edited or withdrawn
SEMVER_TAG = "mlflow_share.semver"
DETAIL_FIELDS = ("description", "intended_use", "limitations", "owner_contact")
_P = db.packages
_YEAR_10000_MS = 253_402_300_800_000
_MV = mt.model_versions.c
_LIVE = _MV.current_stage != "Deleted_Internal"  # MLflow soft-deletes model versions


@dataclass
class Draft:
    model: str
    model_id: str
    versions: list[int]
    alias: str | None
    teams: list[tuple[str, str]]
    semver: str | None
    details: dict[str, Any]
    expires_at: int | None


def _version_number(value: Any) -> int:
    text = str(value)
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InvalidInput(f"{value!r} is not a version number.")
    return int(text)


def parse_draft(engine: sa.Engine, data: dict[str, Any], *, model: str, model_id: str,
                created_by: str) -> Draft:
    """Check the request's shape (400/404 before anything is stored)."""
    versions, alias = data.get("versions"), data.get("alias")
    if (versions is None) == (alias is None):
        raise InvalidInput("Give either 'versions' (a list of version numbers) or 'alias'.")
    if versions is not None:
        if not isinstance(versions, list) or not versions or len(versions) > 100:
            raise InvalidInput("'versions' must be a non-empty list of version numbers.")
        pinned = sorted({_version_number(v) for v in versions})
    teams_in = data.get("teams")
    if not isinstance(teams_in, list) or not teams_in or len(teams_in) > 100:
        raise InvalidInput("'teams' must be a non-empty list of {team, permission}.")
    teams: list[tuple[str, str]] = []
    for entry in teams_in:
        if not isinstance(entry, dict):
            raise InvalidInput("Each entry of 'teams' must be an object {team, permission}.")
        team = validate_identifier("team name", entry.get("team"))
        permission = validate_choice("permission", entry.get("permission"), SHARE_PERMISSIONS)
        if (team, permission) not in teams:
            teams.append((team, permission))
    details: dict[str, Any] = {"owner_contact": created_by}
    for key in DETAIL_FIELDS:
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidInput(f"{key!r} must be a string.")
            details[key] = value
    semver = data.get("semver")
    if semver is not None and (not isinstance(semver, str) or len(semver) > 128):
        raise InvalidInput("'semver' must be a string such as 1.2.0 (at most 128 characters).")
    expires_at = data.get("expires_at")
    if expires_at is not None:
        if isinstance(expires_at, bool) or not isinstance(expires_at, int) or \
                expires_at >= _YEAR_10000_MS:
            raise InvalidInput("'expires_at' must be a time in milliseconds since the epoch.")
        if expires_at <= db.now_ms():
            raise InvalidInput("'expires_at' is in the past.")
    with engine.connect() as conn:
        known: set[Any] = set(conn.execute(sa.select(db.teams.c.name).where(
            db.teams.c.name.in_([t for t, _ in teams]))).scalars())
        unknown = sorted({t for t, _ in teams} - known)
        if unknown:
            raise NotFound(f"Unknown team(s) {unknown}.")
        owner = conn.execute(sa.select(db.resources.c.owner_team).where(
            db.resources.c.kind == MODEL, db.resources.c.resource_id == model_id)).scalar()
        if owner is not None and owner in {t for t, _ in teams}:
            raise InvalidInput(f"Team {owner!r} owns {model!r}: a package shares it with "
                               "other teams, so its owner team cannot be a target.")
        if alias is not None:
            if not isinstance(alias, str) or not alias:
                raise InvalidInput("'alias' must be an alias name.")
            found = current_version(conn, model, alias)
            if found is None:
                raise NotFound(f"Registered model {model!r} has no alias {alias!r}.")
            pinned = [found]
        existing: set[Any] = set(conn.execute(sa.select(_MV.version).where(
            _MV.name == model, _LIVE)).scalars())
        missing = [v for v in pinned if v not in existing]
        if missing:
            raise NotFound(f"Registered model {model!r} has no version(s) {missing}.")
        details["metrics"] = _metrics(conn, model, pinned)
    return Draft(model, model_id, pinned, alias, teams, semver, details, expires_at)


def _metrics(conn: sa.Connection, model: str, versions: list[int]) -> dict[str, Any]:
    """The latest metrics of each version's run, as they are now (a snapshot)."""
    snapshot: dict[str, Any] = {}
    for version in versions:
        run_id = conn.execute(sa.select(_MV.run_id).where(
            _MV.name == model, _MV.version == version)).scalar()
        snapshot[str(version)] = {"run_id": run_id, "metrics": run_metrics(conn, run_id)}
    return snapshot


def run_metrics(conn: sa.Connection, run_id: str | None) -> dict[str, float]:
    """The latest value of each metric of a run."""
    if not run_id:
        return {}
    lm = mt.latest_metrics.c
    rows: Any = conn.execute(sa.select(lm.key, lm.value).where(lm.run_uuid == run_id)
                             .order_by(lm.key)).all()
    return {str(key): float(value) for key, value in rows}


def _report(engine: sa.Engine, repo: ChecksumArtifactRepository, *, model: str, model_id: str,
            versions: list[int], semver: str | None, details: dict[str, Any],
            package_id: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        checks = [validation.check("metadata", None, validation.metadata_problems(
            conn, model_id=model_id, versions=versions, semver=semver, details=details,
            package_id=package_id))]
    for version in versions:
        checks.extend(validation.validate_version(engine, repo, model, version))
    return {"ok": all(c["ok"] for c in checks), "checked_at": db.now_ms(), "checks": checks}


def create(engine: sa.Engine, repo: ChecksumArtifactRepository, draft: Draft,
           created_by: str) -> dict[str, Any]:
    package_id = uuid.uuid4().hex[:16]
    report = _report(engine, repo, model=draft.model, model_id=draft.model_id,
                     versions=draft.versions, semver=draft.semver, details=draft.details,
                     package_id=package_id)
    status = "validated" if report["ok"] else "rejected"
    change = {"op": "package.create", "package": package_id, "model": draft.model,
              "versions": draft.versions, "teams": [list(t) for t in draft.teams],
              "semver": draft.semver, "status": status}
    with audited_write(engine, change) as conn:
        conn.execute(_P.insert().values(
            id=package_id, model_id=draft.model_id, versions=json.dumps(draft.versions),
            alias=draft.alias, semver=draft.semver, details=json.dumps(draft.details),
            teams=json.dumps([list(t) for t in draft.teams]), status=status,
            report=json.dumps(report), expires_at=draft.expires_at, created_by=created_by,
            created_at=db.now_ms()))
    return get(engine, package_id)


def get(engine: sa.Engine, package_id: str) -> dict[str, Any]:
    """The package as stored, with its model's current name (404 if none)."""
    if not isinstance(package_id, str) or not package_id.isalnum() or len(package_id) > 32:
        raise NotFound(f"Sharing package {package_id!r} does not exist.")
    with engine.connect() as conn:
        row = conn.execute(sa.select(_P, db.resources.c.name, db.resources.c.owner_team).join(
            db.resources, sa.and_(db.resources.c.kind == MODEL,
                                  db.resources.c.resource_id == _P.c.model_id),
            isouter=True).where(_P.c.id == package_id)).first()
    if row is None:
        raise NotFound(f"Sharing package {package_id!r} does not exist.")
    return _as_dict(row)




def _as_dict(row: Any) -> dict[str, Any]:
    status = str(row.status)
    if status == "published" and row.expires_at is not None and row.expires_at <= db.now_ms():
        status = "expired"
    details = json.loads(row.details)
    return {
        "id": row.id, "model": row.name, "model_id": row.model_id,
        "owner_team": row.owner_team, "versions": [str(v) for v in json.loads(row.versions)],
        "alias": row.alias, "semver": row.semver, "status": status,
        "teams": [{"team": t, "permission": p} for t, p in json.loads(row.teams)],
        "metrics": details.pop("metrics", {}), **{k: details.get(k) for k in DETAIL_FIELDS},
        "expires_at": row.expires_at, "report": json.loads(row.report or "null"),
        "created_by": row.created_by, "created_at": row.created_at,
        "published_by": row.published_by, "published_at": row.published_at,
        "revoked_by": row.revoked_by, "revoked_at": row.revoked_at,
    }


def validate(engine: sa.Engine, repo: ChecksumArtifactRepository, package: dict[str, Any]
             ) -> dict[str, Any]:
    """Run the checks again; a package not yet published becomes validated or rejected."""
    _require_unpublished(package, "validated again")
    report = _revalidate(engine, repo, package)
    status = "validated" if report["ok"] else "rejected"
    change = {"op": "package.validate", "package": package["id"], "status": status}
    with audited_write(engine, change) as conn:
        _unchanged(conn, package, "validated")
        conn.execute(_P.update().where(_P.c.id == package["id"], _P.c.status.in_(
            UNPUBLISHED)).values(status=status, report=json.dumps(report)))
    return get(engine, package["id"])


def _require_unpublished(package: dict[str, Any], what: str) -> None:
    if package["status"] not in UNPUBLISHED:
        hint = " Revoke it instead." if package["status"] in ("published", "expired") else ""
        raise Conflict(f"Sharing package {package['id']} is {package['status']}: only a "
                       f"package that is not published yet (validated or rejected) can be "
                       f"{what}.{hint}")


def _content(package: dict[str, Any]) -> tuple[Any, ...]:
    """What a validation or a publish acted on, as stored."""
    return ([int(v) for v in package["versions"]], package["alias"], package["semver"],
            [[t["team"], t["permission"]] for t in package["teams"]], package["expires_at"],
            {k: package.get(k) for k in DETAIL_FIELDS})


def _unchanged(conn: sa.Connection, package: dict[str, Any], what: str) -> None:
    """Inside a write transaction: 409 unless the package is still as it was read (same
    status and content), so a slow validation or publish never applies to another content."""
    row = conn.execute(sa.select(_P).where(_P.c.id == package["id"])).first()
    if row is None:
        raise Conflict(f"Sharing package {package['id']} was withdrawn while it was {what}.")
    details = json.loads(row.details)
    stored = (json.loads(row.versions), row.alias, row.semver, json.loads(row.teams),
              row.expires_at, {k: details.get(k) for k in DETAIL_FIELDS})
    if str(row.status) != package["status"] or stored != _content(package):
        raise Conflict(f"Sharing package {package['id']} changed while it was {what}: "
                       "show it and try again.")


EDITABLE = ("versions", "alias", "teams", "semver", *DETAIL_FIELDS, "expires_at")


def parse_edit(engine: sa.Engine, package: dict[str, Any], data: dict[str, Any]) -> Draft:
    """The package as the edit would leave it: each field given replaces the stored one, and
    ``null`` clears an optional one (a cleared owner contact is the creator again); ``versions``
    or ``alias`` replace what is pinned. Checked as ``create`` checks (400/404, nothing
    stored)."""
    if package["model"] is None:
        raise NotFound(f"The model of sharing package {package['id']!r} no longer exists.")
    model = data.get("model")
    if model is not None and model != package["model"]:
        raise InvalidInput(f"Sharing package {package['id']} packages {package['model']!r}: "
                           "its model cannot change (create a package for the other model).")
    unknown = sorted(str(k) for k in set(data) - {"model", *EDITABLE})
    if unknown:
        raise InvalidInput(f"Unknown field(s) {unknown}: an edit may change "
                           f"{', '.join(EDITABLE)}.")
    if not set(data) & set(EDITABLE):
        raise InvalidInput(f"Nothing to change: give at least one of {', '.join(EDITABLE)}.")
    merged: dict[str, Any] = {
        "teams": [{"team": t["team"], "permission": t["permission"]} for t in package["teams"]],
        "semver": package["semver"], "expires_at": package["expires_at"],
        **{k: package.get(k) for k in DETAIL_FIELDS}}
    repinned = "versions" in data or "alias" in data
    if repinned:
        merged["versions"], merged["alias"] = data.get("versions"), data.get("alias")
    else:  # keep the versions pinned (not what the alias names now)
        merged["versions"] = [int(v) for v in package["versions"]]
    merged.update({k: v for k, v in data.items() if k in EDITABLE and k not in (
        "versions", "alias")})
    draft = parse_draft(engine, merged, model=package["model"], model_id=package["model_id"],
                        created_by=package["created_by"])
    if not repinned:
        draft.alias = package["alias"]
    return draft


def edit(engine: sa.Engine, repo: ChecksumArtifactRepository, package: dict[str, Any],
         draft: Draft) -> dict[str, Any]:
    """Store an edit of a package not published yet, validated again: it becomes validated
    or rejected with the new report. The audit event carries the package before and after."""
    _require_unpublished(package, "edited")
    report = _report(engine, repo, model=draft.model, model_id=draft.model_id,
                     versions=draft.versions, semver=draft.semver, details=draft.details,
                     package_id=package["id"])
    status = "validated" if report["ok"] else "rejected"
    after = {"versions": draft.versions, "alias": draft.alias,
             "teams": [list(t) for t in draft.teams], "semver": draft.semver,
             "expires_at": draft.expires_at,
             **{k: draft.details.get(k) for k in DETAIL_FIELDS}}
    before = {"versions": [int(v) for v in package["versions"]], "alias": package["alias"],
              "teams": [[t["team"], t["permission"]] for t in package["teams"]],
              "semver": package["semver"], "expires_at": package["expires_at"],
              **{k: package.get(k) for k in DETAIL_FIELDS}}
    change = {"op": "package.edit", "package": package["id"], "model": draft.model,
              "status": status, "previous_status": package["status"],
              "changed": sorted(k for k in after if after[k] != before[k]),
              "before": before, "after": after}
    with audited_write(engine, change) as conn:
        _unchanged(conn, package, "edited")
        conn.execute(_P.update().where(_P.c.id == package["id"], _P.c.status.in_(
            UNPUBLISHED)).values(
            versions=json.dumps(draft.versions), alias=draft.alias, semver=draft.semver,
            details=json.dumps(draft.details), teams=json.dumps([list(t) for t in draft.teams]),
            status=status, report=json.dumps(report), expires_at=draft.expires_at))
    return get(engine, package["id"])


def withdraw(engine: sa.Engine, package: dict[str, Any]) -> None:
    """Delete a package that is not published yet. Its row goes (lists, searches, semantic
    version claims and the protected-alias check no longer see it); the audit event of the
    deletion, committed in the same transaction, keeps its whole record."""
    _require_unpublished(package, "withdrawn")
    report = package.get("report") or {}
    record = {k: v for k, v in package.items() if k not in ("report", "owner_team")}
    record["report"] = {"ok": report.get("ok"), "checked_at": report.get("checked_at"),
                        "problems": [p for c in report.get("checks") or []
                                     for p in c.get("problems") or []]}
    change = {"op": "package.withdraw", "package": package["id"], "model": package["model"],
              "status": package["status"], "record": record}
    with audited_write(engine, change) as conn:
        _unchanged(conn, package, "withdrawn")
        deleted = conn.execute(_P.delete().where(
            _P.c.id == package["id"], _P.c.status.in_(UNPUBLISHED))).rowcount
        if not deleted:
            raise Conflict(f"Sharing package {package['id']} changed while it was withdrawn.")


def _revalidate(engine: sa.Engine, repo: ChecksumArtifactRepository, package: dict[str, Any]
                ) -> dict[str, Any]:
    details = {k: package[k] for k in DETAIL_FIELDS if package.get(k) is not None}
    return _report(engine, repo, model=package["model"], model_id=package["model_id"],
                   versions=[int(v) for v in package["versions"]], semver=package["semver"],
                   details=details, package_id=package["id"])


def publish(engine: sa.Engine, repo: ChecksumArtifactRepository, package: dict[str, Any],
            by: str) -> dict[str, Any]:
    """Re-check, then make the grants, the semantic version and its tag take effect."""
    if package["status"] != "validated":
        raise Conflict(f"Sharing package {package['id']} is {package['status']}: only a "
                       "validated package can be published.")
    report = _revalidate(engine, repo, package)  # the bytes may have changed since
    if not report["ok"]:
        with audited_write(engine, {"op": "package.validate", "package": package["id"],
                                    "status": "rejected"}) as conn:
            _unchanged(conn, package, "published")
            conn.execute(_P.update().where(_P.c.id == package["id"],
                                           _P.c.status == "validated").values(
                status="rejected", report=json.dumps(report)))
        raise Conflict(f"Sharing package {package['id']} no longer passes validation: "
                       + "; ".join(p for c in report["checks"] for p in c["problems"]))
    change = {"op": "package.publish", "package": package["id"], "model": package["model"],
              "versions": package["versions"], "semver": package["semver"],
              "teams": package["teams"]}
    try:
        _publish(engine, package, change, report, by)
    except IntegrityError:  # a racing publish took the same semantic version first
        raise Conflict(f"Semantic version {package['semver']} or version "
                       f"{package['versions'][0]} was just published by another package.") from None
    return get(engine, package["id"])


def _publish(engine: sa.Engine, package: dict[str, Any], change: dict[str, Any],
             report: dict[str, Any], by: str) -> None:
    with audited_write(engine, change) as conn:
        _unchanged(conn, package, "published")  # an edit meanwhile: not these grants
        updated = conn.execute(_P.update().where(
            _P.c.id == package["id"], _P.c.status == "validated").values(
            status="published", report=json.dumps(report), published_by=by,
            published_at=db.now_ms())).rowcount
        if not updated:
            raise Conflict(f"Sharing package {package['id']} changed while it was published.")
        for team in package["teams"]:
            conn.execute(db.package_grants.insert().values(
                package_id=package["id"], team=team["team"], permission=team["permission"],
                kind=MODEL, resource_id=package["model_id"], expires_at=package["expires_at"]))
        if package["semver"]:
            _name_version(conn, package)
        db.bump(conn, db.POLICY_VERSION)


def _name_version(conn: sa.Connection, package: dict[str, Any]) -> None:
    version = int(package["versions"][0])
    semver = package["semver"]
    s = db.semvers.c
    named: Any = conn.execute(sa.select(s.semver, s.version).where(
        s.model_id == package["model_id"],
        sa.or_(s.semver == semver, s.version == version))).all()
    if any((str(n), int(v)) != (semver, version) for n, v in named):
        raise Conflict(f"Semantic version {semver} or version {version} is already taken.")
    if not named:
        conn.execute(db.semvers.insert().values(model_id=package["model_id"], semver=semver,
                                                version=version, package_id=package["id"]))
        conn.execute(mt.model_version_tags.insert().values(
            key=SEMVER_TAG, value=semver, name=package["model"], version=version))


def revoke(engine: sa.Engine, package: dict[str, Any], by: str) -> dict[str, Any]:
    if package["status"] in ("revoked", "rejected"):
        raise Conflict(f"Sharing package {package['id']} is {package['status']}.")
    change = {"op": "package.revoke", "package": package["id"], "model": package["model"],
              "teams": package["teams"]}
    with audited_write(engine, change) as conn:
        # The status first (it locks the row): a publish racing this one either committed
        # its grants before (deleted below) or finds the package revoked and stops.
        revoked = conn.execute(_P.update().where(
            _P.c.id == package["id"], _P.c.status.in_(("validated", "published"))).values(
            status="revoked", revoked_by=by, revoked_at=db.now_ms())).rowcount
        if not revoked:
            raise Conflict(f"Sharing package {package['id']} changed while it was revoked.")
        conn.execute(db.package_grants.delete().where(
            db.package_grants.c.package_id == package["id"]))
        db.bump(conn, db.POLICY_VERSION)
    return get(engine, package["id"])


def list_packages(engine: sa.Engine, *, model_ids: list[str] | None, teams: list[str],
                  status: str | None = None) -> list[dict[str, Any]]:
    """Packages of ``model_ids`` (None: all), and published ones that target ``teams``."""
    query = sa.select(_P, db.resources.c.name, db.resources.c.owner_team).join(
        db.resources, sa.and_(db.resources.c.kind == MODEL,
                              db.resources.c.resource_id == _P.c.model_id), isouter=True)
    if model_ids is not None and not teams:
        query = query.where(_P.c.model_id.in_(model_ids))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(_P.c.created_at)).all()
    found = []
    for row in rows:
        package = _as_dict(row)
        targets = {t["team"] for t in package["teams"]}
        visible = model_ids is None or row.model_id in model_ids or (
            package["status"] == "published" and targets & set(teams))
        if visible and (status is None or package["status"] == status):
            found.append(package)
    return found


def with_alias_now(engine: sa.Engine, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each package pinned through an alias, with ``alias_version``: the version that alias
    names now in MLflow's registry (``None`` once it is deleted). ``alias`` stays what the
    package pinned through when it was created."""
    wanted = {(p["model"], p["alias"]) for p in found if p.get("alias") and p.get("model")}
    now: dict[tuple[str, str], str] = {}
    if wanted:
        a = mt.registered_model_aliases.c
        with engine.connect() as conn:
            rows: Any = conn.execute(sa.select(a.name, a.alias, a.version).where(
                a.name.in_(sorted({m for m, _ in wanted})))).all()
        now = {(str(n), str(al)): str(v) for n, al, v in rows}
    for package in found:
        if package.get("alias"):
            package["alias_version"] = now.get((package["model"], package["alias"]))
    return found


def published_versions(conn: sa.Connection, model_id: str) -> dict[str, int]:
    """Semantic version -> version number, for versions in a live published package."""
    now = db.now_ms()
    rows: Any = conn.execute(sa.select(_P.c.versions).where(
        _P.c.model_id == model_id, _P.c.status == "published",
        sa.or_(_P.c.expires_at.is_(None), _P.c.expires_at > now))).scalars().all()
    pinned = {int(v) for versions in rows for v in json.loads(versions)}
    r = db.resources.c
    existing: set[Any] = set(conn.execute(sa.select(_MV.version).select_from(
        mt.model_versions.join(db.resources, sa.and_(r.name == _MV.name,
                                                     r.kind == "registered_model"))
    ).where(r.resource_id == model_id, _LIVE)).scalars())
    live = pinned & {int(v) for v in existing}
    named: Any = conn.execute(sa.select(db.semvers.c.semver, db.semvers.c.version).where(
        db.semvers.c.model_id == model_id)).all()
    return {str(s): int(v) for s, v in named if int(v) in live}
