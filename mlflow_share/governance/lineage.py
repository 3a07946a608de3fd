"""Lineage of a model version, the difference of two versions, and model discovery.

Lineage: version -> run -> experiment, the run's params, metrics, dataset inputs (with
their digests) and code commit, the parent version, the version's manifest identity, the
sharing packages that pin it and the teams that consume it (grants, live package grants,
gateway usage). Run details are shown only to callers who may read the run's experiment:
reading a model does not open its experiment.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.artifacts import manifest as mf
from mlflow_share.artifacts import registration
from mlflow_share.errors import InvalidInput, NotFound
from mlflow_share.governance import packages
from mlflow_share.governance import versions as semvers
from mlflow_share.mlflow_compat import tables as mt

PARENT_TAG = "parent_version"
_COMMIT_TAGS = ("mlflow.source.git.commit",)


def _pairs(conn: sa.Connection, table: sa.Table, *where: sa.ColumnElement[bool]
           ) -> dict[str, Any]:
    """``key -> value`` of the rows of ``table`` (a tag or param table) that match."""
    rows: Any = conn.execute(sa.select(table.c.key, table.c.value).where(*where)).all()
    return {str(key): value for key, value in rows}


def _version_row(conn: sa.Connection, name: str, version: int) -> Any:
    mv = mt.model_versions.c
    row = conn.execute(sa.select(
        mv.name, mv.version, mv.run_id, mv.source, mv.status, mv.creation_time, mv.description
    ).where(mv.name == name, mv.version == version,
            mv.current_stage != "Deleted_Internal")).first()
    if row is None:
        raise NotFound(f"Registered model {name!r} has no version {version}.")
    return row


def run_details(conn: sa.Connection, run_id: str) -> dict[str, Any]:
    r, e = mt.runs.c, mt.experiments.c
    run = conn.execute(sa.select(
        r.run_uuid, r.name, r.experiment_id, r.status, r.start_time, e.name.label("experiment")
    ).select_from(mt.runs.join(mt.experiments, e.experiment_id == r.experiment_id))
        .where(r.run_uuid == run_id)).first()
    if run is None:
        return {"run_id": run_id, "missing": True}
    params = _pairs(conn, mt.params, mt.params.c.run_uuid == run_id)
    metrics = packages.run_metrics(conn, run_id)
    tags = _pairs(conn, mt.tags, mt.tags.c.run_uuid == run_id)
    i, d, t = mt.inputs.c, mt.datasets.c, mt.input_tags.c
    context = sa.select(t.value).where(
        t.input_uuid == i.input_uuid, t.name == "mlflow.data.context"
    ).scalar_subquery().label("context")
    datasets = [{"name": ds.name, "digest": ds.digest, "source_type": ds.dataset_source_type,
                 "source": ds.dataset_source, "context": ds.context}
                for ds in conn.execute(sa.select(
                    d.name, d.digest, d.dataset_source_type, d.dataset_source, context
                ).select_from(mt.inputs.join(mt.datasets, d.dataset_uuid == i.source_id)).where(
                    i.destination_type == "RUN", i.destination_id == run_id,
                    i.source_type == "DATASET").order_by(d.name)).all()]
    return {"run_id": run_id, "run_name": run.name, "status": run.status,
            "start_time": run.start_time, "experiment_id": str(run.experiment_id),
            "experiment": run.experiment, "params": params, "metrics": metrics,
            "datasets": datasets,
            "code_commit": next((tags[t] for t in _COMMIT_TAGS if t in tags), None),
            "source": tags.get("mlflow.source.name")}


def experiment_of(conn: sa.Connection, run_id: str | None) -> str | None:
    if not run_id:
        return None
    value = conn.execute(sa.select(mt.runs.c.experiment_id).where(
        mt.runs.c.run_uuid == run_id)).scalar()
    return str(value) if value is not None else None


def lineage(engine: sa.Engine, *, name: str, model_id: str, version: int,
            run_visible: Callable[[str | None], bool]) -> dict[str, Any]:
    with engine.connect() as conn:
        row = _version_row(conn, name, version)
        tags = _pairs(conn, mt.model_version_tags, mt.model_version_tags.c.name == name,
                      mt.model_version_tags.c.version == version)
        parent, basis = _parent(conn, name, version, tags.get(PARENT_TAG))
        experiment_id = experiment_of(conn, row.run_id)
        run: dict[str, Any] | None = None
        if row.run_id:
            run = run_details(conn, row.run_id) if run_visible(experiment_id) else {
                "run_id": row.run_id, "hidden": "You may not read this run's experiment."}
        teams = _consumers(conn, model_id, name, version)
    try:
        record = registration.find_manifest(engine, name, str(version))
        identity: dict[str, Any] | None = {
            "identity": record.identity, "manifest_sha256": record.manifest_sha256,
            "files": len(mf.resources(record.statement))}
    except NotFound:
        identity = None
    shared = [{"id": p["id"], "status": p["status"], "semver": p["semver"],
               "teams": p["teams"]}
              for p in packages.list_packages(engine, model_ids=[model_id], teams=[])
              if str(version) in p["versions"]]
    return {"model": name, "version": str(version), "status": row.status,
            "source": row.source, "created_at": row.creation_time, "tags": tags,
            "semver": tags.get(packages.SEMVER_TAG), "manifest": identity, "run": run,
            "parent": {"version": parent, "basis": basis} if parent else None,
            "packages": shared, "consuming_teams": teams}


def _parent(conn: sa.Connection, name: str, version: int, tagged: str | None
            ) -> tuple[str | None, str | None]:
    if tagged and tagged.isdigit():
        return tagged, f"tag {PARENT_TAG}"
    mv = mt.model_versions.c
    before = conn.execute(sa.select(sa.func.max(mv.version)).where(
        mv.name == name, mv.version < version)).scalar()
    return (str(before), "previous version") if before is not None else (None, None)


def _consumers(conn: sa.Connection, model_id: str, name: str, version: int
               ) -> list[dict[str, Any]]:
    found: dict[str, set[str]] = {}
    for team, permission in conn.execute(sa.select(db.grants.c.team, db.grants.c.permission)
                                         .where(db.grants.c.resource_id == model_id)).all():
        found.setdefault(str(team), set()).add(f"grant:{permission}")
    pg = db.package_grants.c
    for team, permission, package_id in conn.execute(
            sa.select(pg.team, pg.permission, pg.package_id).where(
                pg.resource_id == model_id,
                sa.or_(pg.expires_at.is_(None), pg.expires_at > db.now_ms()))).all():
        found.setdefault(str(team), set()).add(f"package {package_id}:{permission}")
    u = db.gateway_usage.c
    usage: Any = conn.execute(
            sa.select(u.team, sa.func.sum(u.requests)).where(
                u.model == name, u.version == str(version)).group_by(u.team)).all()
    for team, requests in usage:
        found.setdefault(str(team), set()).add(f"gateway:{int(requests)} requests")
    return [{"team": team, "via": sorted(via)} for team, via in sorted(found.items())]


def diff(engine: sa.Engine, a: tuple[str, int], b: tuple[str, int],
         run_visible: Callable[[str | None], bool]) -> dict[str, Any]:
    sides = []
    with engine.connect() as conn:
        for name, version in (a, b):
            row = _version_row(conn, name, version)
            experiment_id = experiment_of(conn, row.run_id)
            details = run_details(conn, row.run_id) if row.run_id and run_visible(
                experiment_id) else None
            sides.append((row, details))
    files: list[dict[str, tuple[int, str]] | None] = []
    for name, version in (a, b):
        try:
            files.append(mf.resources(registration.find_manifest(
                engine, name, str(version)).statement))
        except NotFound:
            files.append(None)
    result: dict[str, Any] = {"a": f"models:/{a[0]}/{a[1]}", "b": f"models:/{b[0]}/{b[1]}"}
    (_, run_a), (_, run_b) = sides
    if run_a is None or run_b is None:
        result["params"] = result["metrics"] = None
        result["note"] = "Params and metrics need read on both versions' experiments."
    else:
        result["params"] = _changed(run_a["params"], run_b["params"])
        result["metrics"] = _changed(run_a["metrics"], run_b["metrics"])
    fa, fb = files
    if fa is None or fb is None:
        result["files"] = None
    else:
        shared = sorted(set(fa) & set(fb))
        result["files"] = {
            "added": sorted(set(fb) - set(fa)), "removed": sorted(set(fa) - set(fb)),
            "changed": [{"path": p, "a_sha256": fa[p][1], "b_sha256": fb[p][1],
                         "a_size": fa[p][0], "b_size": fb[p][0]}
                        for p in shared if fa[p] != fb[p]],
            "same": len([p for p in shared if fa[p] == fb[p]])}
    return result


def _changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {key: {"a": a.get(key), "b": b.get(key)} for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)}


# -- discovery -----------------------------------------------------------------------------------
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "=": operator.eq}


def parse_metric(text: str) -> tuple[str, Callable[[float, float], bool], float]:
    for op in (">=", "<=", "==", ">", "<", "="):
        if op in text:
            key, _, value = text.partition(op)
            try:
                return key.strip(), _OPS[op], float(value)
            except ValueError:
                break
    raise InvalidInput(f"Invalid metric filter {text!r}: e.g. accuracy>=0.9.")


def search(engine: sa.Engine, model_ids: list[str], run_visible: Callable[[str | None], bool],
           *, owner_team: str | None = None, tag: str | None = None,
           semver_range: str | None = None, metric: str | None = None,
           status: str | None = None) -> list[dict[str, Any]]:
    """Summaries of the given (readable) models that pass every filter.

    Metrics are the run's when the caller may read its experiment, else those a published
    sharing package disclosed for that version (its snapshot), else none.
    """
    wanted = semvers.parse_range(semver_range) if semver_range else None
    metric_filter = parse_metric(metric) if metric else None
    tag_key, _, tag_value = (tag or "").partition("=")
    if not model_ids:
        return []
    results = []
    mv = mt.model_versions.c
    with engine.connect() as conn:
        rows: Any = conn.execute(sa.select(db.resources.c.resource_id, db.resources.c.name,
                                      db.resources.c.owner_team).where(
            db.resources.c.kind == "registered_model",
            db.resources.c.resource_id.in_(model_ids)).order_by(db.resources.c.name)).all()
        for model_id, name, owner in rows:
            if owner_team and owner != owner_team:
                continue
            tags = _pairs(conn, mt.registered_model_tags,
                          mt.registered_model_tags.c.name == name)
            if tag_key and (tag_key not in tags or (tag_value and tags[tag_key] != tag_value)):
                continue
            published = packages.published_versions(conn, model_id)
            chosen = wanted.newest(published) if wanted else None
            if wanted and chosen is None:
                continue
            latest = conn.execute(sa.select(mv.version, mv.run_id).where(
                mv.name == name, mv.current_stage != "Deleted_Internal"
            ).order_by(mv.version.desc()).limit(1)).first()
            version = published[chosen] if chosen else (latest.version if latest else None)
            run_id = conn.execute(sa.select(mv.run_id).where(
                mv.name == name, mv.version == version
            )).scalar() if version is not None else None
            shared = packages.list_packages(engine, model_ids=[model_id], teams=[])
            if run_visible(experiment_of(conn, run_id)):
                metrics = packages.run_metrics(conn, run_id)
            else:
                metrics = next((p["metrics"][str(version)]["metrics"] for p in reversed(shared)
                                if p["status"] == "published"
                                and str(version) in p["metrics"]), {})
            if metric_filter:
                key, compare, bound = metric_filter
                if key not in metrics or not compare(metrics[key], bound):
                    continue
            validation = _validation_status([p["status"] for p in shared])
            if status and validation != status:
                continue
            description = conn.execute(sa.select(mt.registered_models.c.description).where(
                mt.registered_models.c.name == name)).scalar()
            newest = semvers.Range("*", ()).newest(published)
            results.append({"name": name, "owner_team": owner, "description": description,
                            "tags": tags, "version": str(version) if version else None,
                            "semver": chosen or newest, "metrics": metrics,
                            "validation_status": validation,
                            "published_semvers": sorted(published, key=semvers.parse)})
    return results


def _validation_status(statuses: list[str]) -> str:
    for status in ("published", "validated", "rejected"):
        if status in statuses:
            return status
    return "none"

