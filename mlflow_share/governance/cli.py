"""``mlflow-share share ...`` (also ``mlflow-share package ...``), ``semver``, ``lineage``,
``diff``, ``search``, ``subscribe``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from mlflow_share.commands import admin_client as _client
from mlflow_share.commands import call_server as _run
from mlflow_share.commands import confirm, json_option, show, yes_option


def _team(value: str) -> tuple[str, str]:
    team, _, permission = value.partition(":")
    if not team or permission not in ("read", "execute", "write"):
        raise click.BadParameter(f"{value!r}: expected TEAM:read, TEAM:execute or TEAM:write.")
    return team, permission


def _alias_note(package: dict[str, Any]) -> str:
    """Where the alias a package was pinned through points now (MLflow's registry), not
    where it pointed when the package was made."""
    alias = package.get("alias")
    if not alias:
        return ""
    now = package.get("alias_version")
    if now is None and "alias_version" in package:
        return f" (pinned through @{alias}, since deleted)"
    if now is None or str(now) in package["versions"]:
        return f" (@{alias})"
    return f" (pinned through @{alias}, which now points at version {now})"


def _print_package(package: dict[str, Any]) -> None:
    click.echo(f"package {package['id']}: {package['model']} versions "
               f"{', '.join(package['versions'])}" + _alias_note(package)
               + (f" semver {package['semver']}" if package.get("semver") else "")
               + f"  [{package['status']}]")
    click.echo("  teams: " + ", ".join(f"{t['team']}:{t['permission']}"
                                       for t in package["teams"]))
    for key in ("description", "intended_use", "limitations", "owner_contact"):
        if package.get(key):
            click.echo(f"  {key}: {package[key]}")
    for version, snapshot in (package.get("metrics") or {}).items():
        metrics = ", ".join(f"{k}={v:g}" for k, v in snapshot["metrics"].items())
        click.echo(f"  metrics v{version}: {metrics or '-'}")
    report = package.get("report")
    if report:
        click.echo(f"  validation: {'passed' if report['ok'] else 'FAILED'}")
        for check in report["checks"]:
            where = f" v{check['version']}" if check.get("version") else ""
            click.echo(f"    {'ok ' if check['ok'] else 'BAD'} {check['check']}{where}")
            for problem in check["problems"]:
                click.echo(f"        {problem}")


@click.group()
def share() -> None:
    """Sharing packages: create (validated at once), edit, withdraw, publish, revoke, show,
    list."""


@share.command("create")
@click.argument("model")
@click.option("--version", "versions", multiple=True, help="A version to pin (repeatable).")
@click.option("--alias", default=None, help="Pin the version this alias names now.")
@click.option("--team", "teams", multiple=True, required=True, type=_team,
              metavar="TEAM:PERMISSION",
              help="TEAM:read, TEAM:execute or TEAM:write (repeatable).")
@click.option("--semver", default=None, help="Semantic version X.Y.Z of the pinned version.")
@click.option("--description", default=None, help="What the model does (model card).")
@click.option("--intended-use", default=None, help="What it is for (model card).")
@click.option("--limitations", default=None, help="Where it must not be used (model card).")
@click.option("--contact", "owner_contact", default=None, help="Default: you.")
@click.option("--expires-in-days", type=float, default=None,
              help="The package's grants end after this many days (default: never).")
@click.pass_context
def share_create(ctx: click.Context, model: str, versions: tuple[str, ...], alias: str | None,
                 teams: tuple[tuple[str, str], ...], semver: str | None,
                 description: str | None, intended_use: str | None, limitations: str | None,
                 owner_contact: str | None, expires_in_days: float | None) -> None:
    """Package MODEL for other teams; prints the validation report, then the package id."""
    expires_at = int(time.time() * 1000 + expires_in_days * 86_400_000) \
        if expires_in_days else None
    package = _run(_client(ctx).create_package, model, list(teams),
                   versions=list(versions) or None, alias=alias, semver=semver,
                   description=description, intended_use=intended_use,
                   limitations=limitations, owner_contact=owner_contact, expires_at=expires_at)
    _print_package(package)
    click.echo(package["id"])
    if package["status"] == "rejected":
        ctx.exit(1)


@share.command("publish")
@click.argument("package_id", metavar="ID")
@click.pass_context
def share_publish(ctx: click.Context, package_id: str) -> None:
    """Publish a validated package: its teams get their permissions now."""
    package = _run(_client(ctx).publish_package, package_id)
    click.echo(f"package {package['id']}: published to "
               + ", ".join(f"{t['team']}:{t['permission']}" for t in package["teams"]))


@share.command("revoke")
@yes_option
@click.argument("package_id", metavar="ID")
@click.pass_context
def share_revoke(ctx: click.Context, package_id: str, yes: bool) -> None:
    """Revoke a package: its teams lose the permissions it gave at once."""
    confirm(f"Revoke package {package_id}? Its teams lose access now.", yes)
    package = _run(_client(ctx).revoke_package, package_id)
    click.echo(f"package {package['id']}: revoked")


@share.command("validate")
@click.argument("package_id", metavar="ID")
@click.pass_context
def share_validate(ctx: click.Context, package_id: str) -> None:
    """Run the validation of an unpublished package again."""
    package = _run(_client(ctx).validate_package, package_id)
    _print_package(package)
    if package["status"] == "rejected":
        ctx.exit(1)


def _edit_package(ctx: click.Context, package_id: str, body: dict[str, Any]) -> Any:
    return _run(_client(ctx).edit_package, package_id, body)


def _withdraw_package(ctx: click.Context, package_id: str) -> None:
    _run(_client(ctx).withdraw_package, package_id)


_CLEARABLE = {"semver": "semver", "intended-use": "intended_use",
              "limitations": "limitations", "expiry": "expires_at"}


@share.command("edit")
@click.argument("package_id", metavar="ID")
@click.option("--version", "versions", multiple=True,
              help="Pin these versions instead (repeatable).")
@click.option("--alias", default=None, help="Pin the version this alias names now instead.")
@click.option("--team", "teams", multiple=True, type=_team, metavar="TEAM:PERMISSION",
              help="The target teams instead (repeatable): TEAM:read, TEAM:execute or "
                   "TEAM:write.")
@click.option("--semver", default=None, help="Semantic version X.Y.Z of the pinned version.")
@click.option("--description", default=None, help="What the model does (model card).")
@click.option("--intended-use", default=None, help="What it is for (model card).")
@click.option("--limitations", default=None, help="Where it must not be used (model card).")
@click.option("--contact", "owner_contact", default=None, help="The owner contact.")
@click.option("--expires-in-days", type=float, default=None,
              help="The package's grants end this many days from now.")
@click.option("--clear", "cleared", multiple=True, type=click.Choice(sorted(_CLEARABLE)),
              help="Remove the semver, intended use, limitations or expiry (repeatable).")
@click.pass_context
def share_edit(ctx: click.Context, package_id: str, versions: tuple[str, ...],
               alias: str | None, teams: tuple[tuple[str, str], ...], semver: str | None,
               description: str | None, intended_use: str | None, limitations: str | None,
               owner_contact: str | None, expires_in_days: float | None,
               cleared: tuple[str, ...]) -> None:
    """Change a package that is not published yet (validated or rejected) and validate it
    again; what is not given stays. Prints the new validation report."""
    body: dict[str, Any] = {key: value for key, value in (
        ("versions", list(versions) or None), ("alias", alias),
        ("teams", [{"team": t, "permission": p} for t, p in teams] or None),
        ("semver", semver), ("description", description), ("intended_use", intended_use),
        ("limitations", limitations), ("owner_contact", owner_contact)) if value is not None}
    if expires_in_days is not None:
        body["expires_at"] = int(time.time() * 1000 + expires_in_days * 86_400_000)
    for name in cleared:
        if _CLEARABLE[name] in body:
            raise click.UsageError(f"--clear {name} and a new value for it: give one.")
        body[_CLEARABLE[name]] = None
    if not body:
        raise click.UsageError("Nothing to change: give --version, --alias, --team, --semver, "
                               "--description, --intended-use, --limitations, --contact, "
                               "--expires-in-days or --clear.")
    package = _edit_package(ctx, package_id, body)
    _print_package(package)
    if package["status"] == "rejected":
        ctx.exit(1)


@share.command("withdraw")
@yes_option
@click.argument("package_id", metavar="ID")
@click.pass_context
def share_withdraw(ctx: click.Context, package_id: str, yes: bool) -> None:
    """Withdraw (delete) a package that is not published yet; the audit log keeps its
    record. A published package is revoked instead."""
    confirm(f"Withdraw package {package_id}? It is deleted (the audit log keeps its "
            "record).", yes)
    _withdraw_package(ctx, package_id)
    click.echo(f"package {package_id}: withdrawn")


@share.command("show")
@click.argument("package_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_context
def share_show(ctx: click.Context, package_id: str, as_json: bool) -> None:
    """A package with its metadata, teams and validation report."""
    package = _run(_client(ctx).get_package, package_id)
    if as_json:
        click.echo(json.dumps(package, indent=2, sort_keys=True))
    else:
        _print_package(package)


@share.command("list")
@click.option("--model", default=None, help="Only this registered model's packages.")
@click.option("--status", default=None,
              help="validated or rejected (not published yet), published, expired, revoked.")
@json_option
@click.pass_context
def share_list(ctx: click.Context, model: str | None, status: str | None,
               as_json: bool) -> None:
    """Packages you may see: every package of the models you may write, and the published
    ones shared with your teams (never another team's unpublished one)."""
    show(_run(_client(ctx).list_packages, model, status), [
        ("package", "id"), ("model", "model"), ("versions", "versions"),
        ("semver", lambda p: p.get("semver")), ("status", "status"),
        ("teams", lambda p: [f"{t['team']} ({t['permission']})" for t in p["teams"]])],
        as_json=as_json, empty="No packages.")


@click.group()
def semver() -> None:
    """Semantic versions of published model versions."""


@semver.command("list")
@click.argument("model")
@json_option
@click.pass_context
def semver_list(ctx: click.Context, model: str, as_json: bool) -> None:
    """MODEL's published semantic versions and the model versions they name."""
    show(_run(_client(ctx).list_semvers, model), [("semver", "semver"), ("version", "version")],
         as_json=as_json, empty="No published semantic versions.")


@semver.command("resolve")
@click.argument("model")
@click.argument("version_range", metavar="RANGE")
@click.pass_context
def semver_resolve(ctx: click.Context, model: str, version_range: str) -> None:
    """The newest published version of MODEL matching RANGE (^1.2, ~1.2.3, >=1 <2)."""
    found = _run(_client(ctx).resolve_semver, model, version_range)
    click.echo(f"{found['semver']}  models:/{model}/{found['version']}")


@click.command()
@click.argument("model_uri", metavar="models:/NAME/VERSION")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_context
def lineage(ctx: click.Context, model_uri: str, as_json: bool) -> None:
    """Where a version comes from and who uses it."""
    found = _run(_client(ctx).lineage, model_uri)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    click.echo(f"{model_uri}  [{found['status']}]" +
               (f"  semver {found['semver']}" if found.get("semver") else ""))
    if found.get("manifest"):
        click.echo(f"  identity: {found['manifest']['identity']}")
    run = found.get("run") or {}
    if run.get("hidden"):
        click.echo(f"  run {run['run_id']}: {run['hidden']}")
    elif run:
        click.echo(f"  run {run['run_id']} in experiment {run.get('experiment')!r} "
                   f"({run.get('experiment_id')})")
        if run.get("code_commit"):
            click.echo(f"  code commit: {run['code_commit']}")
        for key, value in sorted((run.get("params") or {}).items()):
            click.echo(f"  param {key} = {value}")
        for key, value in sorted((run.get("metrics") or {}).items()):
            click.echo(f"  metric {key} = {value:g}")
        for dataset in run.get("datasets") or []:
            click.echo(f"  dataset {dataset['name']} digest {dataset['digest']} "
                       f"({dataset.get('context') or 'input'})")
    if found.get("parent"):
        click.echo(f"  parent: version {found['parent']['version']} "
                   f"({found['parent']['basis']})")
    for package in found.get("packages") or []:
        click.echo(f"  package {package['id']} [{package['status']}]")
    for team in found.get("consuming_teams") or []:
        click.echo(f"  used by {team['team']}: {', '.join(team['via'])}")


@click.command()
@click.argument("a", metavar="models:/NAME/A")
@click.argument("b", metavar="models:/NAME/B")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """Changed params, metrics and manifest entries between two versions."""
    found = _run(_client(ctx).diff, a, b)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    if found.get("note"):
        click.echo(found["note"])
    for kind in ("params", "metrics"):
        for key, change in (found.get(kind) or {}).items():
            click.echo(f"{kind[:-1]} {key}: {change['a']} -> {change['b']}")
    files = found.get("files")
    if files is None:
        click.echo("files: one of the versions has no manifest")
        return
    for path in files["added"]:
        click.echo(f"file + {path}")
    for path in files["removed"]:
        click.echo(f"file - {path}")
    for change in files["changed"]:
        click.echo(f"file ~ {change['path']}: {change['a_sha256'][:12]} -> "
                   f"{change['b_sha256'][:12]}")
    click.echo(f"{files['same']} file(s) identical")


@click.command()
@click.option("--owner-team", default=None, help="Only models this team owns.")
@click.option("--tag", default=None, help="KEY or KEY=VALUE of a registered-model tag.")
@click.option("--semver", "semver_range", default=None, help="e.g. ^1.2")
@click.option("--metric", default=None, help="e.g. accuracy>=0.9")
@click.option("--status", default=None, help="published, validated, rejected or none.")
@json_option
@click.pass_context
def search(ctx: click.Context, owner_team: str | None, tag: str | None,
           semver_range: str | None, metric: str | None, status: str | None,
           as_json: bool) -> None:
    """Find the models you may see."""
    show(_run(_client(ctx).search_models, owner_team=owner_team, tag=tag,
              semver=semver_range, metric=metric, status=status), [
        ("model", "name"), ("owner team", "owner_team"), ("version", "version"),
        ("semver", "semver"), ("validation", "validation_status")],
        as_json=as_json, empty="No models match.")


@click.command()
@click.argument("model")
@click.argument("url")
@click.option("--team", default=None, help="Subscribe for a team you belong to.")
@click.pass_context
def subscribe(ctx: click.Context, model: str, url: str, team: str | None) -> None:
    """Send MODEL's publish and protected-alias events to URL (signed; prints the secret)."""
    found = _run(_client(ctx).subscribe, model, url, team)
    click.echo(f"subscription {found['id']}: {url}")
    click.echo(f"signing secret (shown once): {found['secret']}")


# ``mlflow-share package ...``: the same commands under the name of what they act on.
package = click.Group("package", commands=share.commands, hidden=True,
                      help="Sharing packages (the same commands as `mlflow-share share`).")

COMMANDS = (share, package, semver, lineage, diff, search, subscribe)
