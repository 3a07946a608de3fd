"""Protected aliases, alias history, compare-and-set moves, rollback and branches.

- A maintainer of a model's owner team (or an org admin) **protects** an alias (e.g.
  ``production``). From then on only maintainers and admins may set or delete it — through
  stock MLflow too (403 for anyone else) — and only onto a version that registered with a
  verified manifest and is READY.
- Every alias change (stock or ours) is written to ``share_alias_history`` in the same
  transaction as the change: who, when, from which version to which, and why (``reason``).
- ``POST /aliases/move`` moves an alias only if it still points where the caller saw it
  (``expected_version``): of two maintainers moving it at once, one wins, the other gets 409.
  ``POST /aliases/rollback`` moves it back to the version before (or ``to_version``).
- **Branches** are aliases named ``branch-<name>``: engineers create and move them freely
  (MLflow allows letters, digits, ``_`` and ``-`` in alias names); they can never be protected,
  so a branch can never touch a protected alias.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.audit.log import audited_write
from mlflow_share.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from mlflow_share.mlflow_compat import tables as mt

BRANCH_PREFIX = "branch-"
_P = db.protected_aliases
_H = db.alias_history


def skeleton(alias: str) -> str:
    """What an alias looks like to a reader: NFKC, case folded, every character that is
    confusable with a Latin one (Unicode's confusables data) replaced by it, and the ASCII
    look-alikes of TR39 (``rn`` for ``m``, ``0`` for ``o``, ``1`` for ``l``) folded."""
    import unicodedata

    from confusable_homoglyphs import confusables

    folded = unicodedata.normalize("NFKC", alias).casefold()
    out = []
    for char in folded:
        found: Any = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin"]) \
            if not char.isascii() else None
        latin = [g["c"] for item in (found if isinstance(found, list) else [])
                 for g in item["homoglyphs"] if g["c"].isascii()]
        out.append(latin[0].casefold() if latin else char)
    text = "".join(out)
    # Unicode's confusables (TR39) also within ASCII: letters runs and digits that read as
    # other letters in the fonts people use.
    for confusable, letter in _ASCII_CONFUSABLES:
        text = text.replace(confusable, letter)
    return text


_ASCII_CONFUSABLES = (("rn", "m"), ("vv", "w"), ("cl", "d"), ("0", "o"), ("1", "l"),
                      ("|", "l"))


def look_alike(conn: sa.Connection, model_id: str | None, alias: str) -> str | None:
    """The protected alias of the model that ``alias`` only looks like (another letter
    case, a confusable character), or None: such a name is reserved with it."""
    if model_id is None:
        return None
    wanted = skeleton(alias)
    for (protected,) in conn.execute(sa.select(_P.c.alias).where(_P.c.model_id == model_id)):
        if protected != alias and skeleton(str(protected)) == wanted:
            return str(protected)
    return None


def protection(conn: sa.Connection, model_id: str | None, alias: str) -> Any:
    """The alias's protection row (``require_approval``), or None if it is not protected."""
    if model_id is None:
        return None
    return conn.execute(sa.select(_P.c.alias, _P.c.require_approval).where(
        _P.c.model_id == model_id, _P.c.alias == alias)).first()


def is_protected(conn: sa.Connection, model_id: str | None, alias: str) -> bool:
    return protection(conn, model_id, alias) is not None


def protect(engine: sa.Engine, model_id: str, alias: str, user: str,
            require_approval: bool = False) -> None:
    if alias.startswith(BRANCH_PREFIX):
        raise InvalidInput(f"{alias!r} is a branch: branches are never protected.")
    change = {"op": "alias.protect", "model_id": model_id, "alias": alias,
              "require_approval": require_approval}
    with audited_write(engine, change) as conn:
        before = protection(conn, model_id, alias)
        change["before"] = None if before is None else {
            "require_approval": bool(before.require_approval)}
        if before is None:
            conn.execute(_P.insert().values(model_id=model_id, alias=alias, protected_by=user,
                                            protected_at=db.now_ms(),
                                            require_approval=require_approval))
        else:
            conn.execute(_P.update().where(_P.c.model_id == model_id, _P.c.alias == alias)
                         .values(require_approval=require_approval))


def unprotect(engine: sa.Engine, model_id: str, alias: str) -> bool:
    with audited_write(engine, {"op": "alias.unprotect", "model_id": model_id,
                                "alias": alias}) as conn:
        return bool(conn.execute(_P.delete().where(
            _P.c.model_id == model_id, _P.c.alias == alias)).rowcount)


def protected(engine: sa.Engine, model_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows: Any = conn.execute(sa.select(_P).where(_P.c.model_id == model_id)
                                 .order_by(_P.c.alias)).all()
    return [{"alias": r.alias, "require_approval": bool(r.require_approval),
             "protected_by": r.protected_by, "protected_at": r.protected_at} for r in rows]


# -- moves that need a second maintainer -------------------------------------------------------
_R = db.alias_requests


def request_move(engine: sa.Engine, *, model_id: str, name: str, alias: str, version: int,
                 reason: str | None, by: str) -> dict[str, Any]:
    with engine.connect() as conn:
        rule = protection(conn, model_id, alias)
        if rule is None or not rule.require_approval:
            raise InvalidInput(f"Alias {alias!r} of {name!r} does not need an approval: move it.")
        check_target(conn, name, version)
        before = current_version(conn, name, alias)
    request_id = uuid.uuid4().hex[:16]
    change = {"op": "alias.request", "request": request_id, "model": name, "alias": alias,
              "from_version": before, "to_version": version, "reason": reason}
    with audited_write(engine, change) as conn:
        conn.execute(_R.insert().values(
            id=request_id, model_id=model_id, alias=alias, from_version=before,
            to_version=version, reason=reason, requested_by=by, requested_at=db.now_ms(),
            status="pending"))
    return get_request(engine, request_id)


def get_request(engine: sa.Engine, request_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(_R).where(_R.c.id == str(request_id)[:32])).first()
    if row is None:
        raise NotFound(f"Alias move request {str(request_id)[:64]!r} does not exist.")
    return dict(row._mapping)


def list_requests(engine: sa.Engine, model_id: str, status: str | None = None
                  ) -> list[dict[str, Any]]:
    query = sa.select(_R).where(_R.c.model_id == model_id)
    if status:
        query = query.where(_R.c.status == status)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(_R.c.requested_at))]


def decide_in(conn: sa.Connection, request_id: str, *, model_id: str | None, alias: str,
              version: int | None, by: str) -> None:
    """Inside the move's transaction: the approved request, claimed once (409 for a second)."""
    row = conn.execute(sa.select(_R).where(_R.c.id == request_id)).first()
    if row is None or row.model_id != model_id or row.alias != alias or \
            row.to_version != version:
        raise Conflict(f"Request {request_id} does not ask for this move.")
    if row.requested_by == by:
        raise PermissionDenied("A move needs a second maintainer: you cannot approve your "
                               "own request.")
    claimed = conn.execute(_R.update().where(_R.c.id == request_id, _R.c.status == "pending")
                           .values(status="approved", decided_by=by,
                                   decided_at=db.now_ms())).rowcount
    if not claimed:
        raise Conflict(f"Request {request_id} was already decided.")


def reject(engine: sa.Engine, request: dict[str, Any], by: str, reason: str | None) -> None:
    change = {"op": "alias.reject", "request": request["id"], "reason": reason}
    with audited_write(engine, change) as conn:
        rejected = conn.execute(_R.update().where(
            _R.c.id == request["id"], _R.c.status == "pending").values(
            status="rejected", decided_by=by, decided_at=db.now_ms(), decision=reason)).rowcount
        if not rejected:
            raise Conflict(f"Request {request['id']} was already decided.")


def current_version(conn: sa.Connection, name: str, alias: str) -> int | None:
    a = mt.registered_model_aliases.c
    version = conn.execute(sa.select(a.version).where(a.name == name, a.alias == alias)).scalar()
    return int(version) if version is not None else None


def check_target(conn: sa.Connection, name: str, version: int) -> None:
    """A protected alias only points at a READY version that has a verified manifest and
    whose validation passed (a validated or published sharing package pins it)."""
    mv = mt.model_versions.c
    row = conn.execute(sa.select(mv.status, mv.storage_location).where(
        mv.name == name, mv.version == mt.bigint(version))).first()
    if row is None:
        raise NotFound(f"Registered model {name!r} has no version {version}.")
    location = str(row.storage_location or "").removeprefix("mlflow-artifacts:/")
    manifest = conn.execute(sa.select(db.model_manifests.c.identity).where(
        db.model_manifests.c.location == location)).first()
    if row.status != "READY" or manifest is None:
        raise Conflict(f"Version {version} of {name!r} is not a READY version with a verified "
                       "manifest: a protected alias cannot point at it.")
    pinned: Any = conn.execute(sa.select(db.packages.c.versions).join(
        db.resources, sa.and_(db.resources.c.kind == "registered_model",
                              db.resources.c.resource_id == db.packages.c.model_id)).where(
        db.resources.c.name == name, db.packages.c.status.in_(("validated", "published")))).scalars().all()
    if not any(version in json.loads(versions) for versions in pinned):
        raise Conflict(f"Version {version} of {name!r} has not passed validation: a protected "
                       f"alias cannot point at it. Validate it first: mlflow-share share create "
                       f"{name} --version {version} --team TEAM:PERMISSION ...")


def record(conn: sa.Connection, *, model_id: str | None, name: str, alias: str,
           to_version: int | None, principal: str, reason: str | None,
           expected_version: int | None, protected_move: bool) -> int | None:
    """Inside the change's transaction: compare-and-set, the target check, the history row.
    Returns the version the alias pointed at before."""
    before = current_version(conn, name, alias)
    if expected_version is not None and before != expected_version:
        raise Conflict(f"Alias {alias!r} of {name!r} points at version {before}, not "
                       f"{expected_version}: someone moved it first. Look again and retry.")
    if protected_move and to_version is not None:
        check_target(conn, name, to_version)
    conn.execute(_H.insert().values(
        model_id=model_id, name=name, alias=alias, from_version=before, to_version=to_version,
        principal=principal, at=db.now_ms(), reason=(reason or None) and reason[:1000]))
    return before


def history(engine: sa.Engine, model_id: str | None, name: str,
            alias: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(_H).where(_H.c.model_id == model_id if model_id else _H.c.name == name)
    if alias is not None:
        query = query.where(_H.c.alias == alias)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(_H.c.id)).all()
    return [{"alias": r.alias, "from_version": r.from_version, "to_version": r.to_version,
             "principal": r.principal, "at": r.at, "reason": r.reason, "name": r.name}
            for r in rows]


def previous_version(engine: sa.Engine, model_id: str | None, name: str, alias: str) -> int:
    """The version the alias pointed at before its latest move (for a rollback)."""
    moves = [h for h in history(engine, model_id, name, alias) if h["to_version"] is not None]
    if not moves or moves[-1]["from_version"] is None:
        raise Conflict(f"Alias {alias!r} of {name!r} has no earlier version to roll back to.")
    return int(moves[-1]["from_version"])
