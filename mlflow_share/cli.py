"""The ``mlflow-share`` console script: run the server, and administer it over HTTP.

``mlflow`` has no plugin hook for CLI commands, so this is a separate script. Every command
but ``server`` talks to a running server through ``ShareAdminClient``, with the server
address and credentials taken from the same options and variables the MLflow client uses.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlflow_share import config
from mlflow_share.commands import admin_client as _client
from mlflow_share.commands import call_server as _run
from mlflow_share.commands import confirm, iso_time, json_option, show, token_state, yes_option

PERMISSION = click.Choice(["read", "execute", "write", "manage"])
ROLE = click.Choice(["viewer", "engineer", "maintainer"])


def _one_line(exc: BaseException) -> str:
    """What went wrong, in the words of the layer that knows (never a traceback)."""
    message = getattr(exc, "message", None)  # mlflow-share's and MLflow's errors
    if isinstance(message, str) and message:
        return message.strip().splitlines()[0]
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if orig is not None:
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        return f"The database refused: {first}"
    if isinstance(exc, ModuleNotFoundError):
        return (f"The Python package {exc.name!r} is not installed; a database or storage "
                "driver this configuration needs is missing.")
    if isinstance(exc, OSError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Cli(click.Group):
    """Any failure ends in one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as exc:  # noqa: BLE001 - every error, said in one line
            raise click.ClickException(_one_line(exc)) from None


@click.group(cls=_Cli)
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="mlflow-share server URL.")
@click.version_option(package_name="mlflow-share")
@click.pass_context
def cli(ctx: click.Context, tracking_uri: str | None) -> None:
    """Share MLflow models across teams: server, teams, users, tokens and grants."""
    ctx.ensure_object(dict)
    ctx.obj["tracking_uri"] = tracking_uri


# -- server -------------------------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Folder for the embedded default (${config.HOME_ENV}, else ~/.mlflow-share).")
@click.option("--backend-store-uri", default=None, help="SQL URI (default: SQLite in --home).")
@click.option("--artifacts-destination", default=None,
              help="Artifact root (default: checksum+file://<home>/artifacts).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, type=int,
              help="Worker processes (each checks every request itself).")
@click.option("--gateway/--no-gateway", default=True, show_default=True,
              help="Also serve the inference gateway under /v1/models (uvicorn only).")
@click.argument("mlflow_server_args", nargs=-1, type=click.UNPROCESSED,
                metavar="[MLFLOW SERVER OPTIONS]...")
def server(home: Path | None, backend_store_uri: str | None, artifacts_destination: str | None,
           host: str, port: int, workers: int, gateway: bool,
           mlflow_server_args: tuple[str, ...]) -> None:
    """Run `mlflow server --app-name mlflow-share` on the embedded default or given stores.

    Extra arguments are passed to `mlflow server` unchanged.
    """
    _checked_settings()  # before anything is created: a bad value stops here, in one line
    home = (home or config.default_home()).expanduser().resolve()
    uri = config.checked_backend_uri(backend_store_uri or f"sqlite:///{home / 'mlflow.db'}")
    destination = artifacts_destination or f"checksum+file://{home / 'artifacts'}"
    if gateway:  # what every worker would refuse at start, refused once here
        config.checked_gateway_destination(destination)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _prepare_database(uri)
    command = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "mlflow-share",
        "--backend-store-uri", uri, "--artifacts-destination", destination,
        "--host", host, "--port", str(port), "--workers", str(workers), *mlflow_server_args,
    ]
    click.echo(f"mlflow-share: serving http://{host}:{port} (data in {home})", err=True)
    if gateway:
        os.environ[config.GATEWAY_ENV] = "1"
    os.execv(sys.executable, command)


def _checked_settings() -> config.Options:
    from mlflow.exceptions import MlflowException

    try:
        return config.options()
    except MlflowException as exc:
        raise click.ClickException(exc.message) from None


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per setting.")
def config_command(as_json: bool) -> None:
    """List every MLFLOW_SHARE_* setting: variable, type, default, value here, meaning."""
    import json

    shown = _checked_settings().shown()
    if as_json:
        for setting, value in shown:
            click.echo(json.dumps({"variable": setting.env, "type": setting.kind,
                                   "default": None if setting.default in (None, ()) else
                                   str(setting.default), "value": value,
                                   "help": setting.help}))
        return
    width = max(len(setting.env) for setting, _ in shown)
    click.echo(f"{'VARIABLE':<{width}}  {'TYPE':<8}  {'VALUE':<22}  MEANING")
    for setting, value in shown:
        click.echo(f"{setting.env:<{width}}  {setting.kind:<8}  {value[:22]:<22}  {setting.help}")


@cli.command("gateway")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"The embedded default's folder (${config.HOME_ENV}, else ~/.mlflow-share).")
@click.option("--backend-store-uri", default=None, help="The server's SQL URI.")
@click.option("--artifacts-destination", default=None,
              help="The server's checksum+ artifact root (default: checksum+file://<home>/artifacts).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5001, show_default=True, type=int, help="Port to listen on.")
def gateway_command(home: Path | None, backend_store_uri: str | None,
                    artifacts_destination: str | None, host: str, port: int) -> None:
    """Serve shared ONNX model versions to the teams allowed to execute them."""
    import uvicorn

    from mlflow_share.gateway.app import create_gateway_app

    _checked_settings()
    home = (home or config.default_home()).expanduser().resolve()
    uri = config.checked_backend_uri(backend_store_uri or f"sqlite:///{home / 'mlflow.db'}")
    destination = config.checked_gateway_destination(
        artifacts_destination or f"checksum+file://{home / 'artifacts'}")
    _require_server_database(uri)
    click.echo(f"mlflow-share gateway: serving http://{host}:{port}/v1/models", err=True)
    # No per-request access log: it costs more than a small model's inference. Calls are
    # counted in /metrics and the usage rows, denials and loads in the audit log.
    uvicorn.run(create_gateway_app(uri, destination), host=host, port=port, log_level="info",
                access_log=False)


def _require_server_database(uri: str) -> None:
    """The gateway reads the server's database: refuse one the server never set up."""
    import sqlalchemy as sa

    from mlflow_share import db

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise click.ClickException(
            f"No mlflow-share database at {uri}: start the server first (mlflow-share server) "
            "or pass its --backend-store-uri.")
    engine = db.get_engine(uri)
    if not {"registered_models", db.AUDIT_TABLE} <= set(sa.inspect(engine).get_table_names()):
        raise click.ClickException(
            f"{uri} is not an mlflow-share server's database: start the server on it first "
            "(mlflow-share server --backend-store-uri ...).")


def _prepare_database(uri: str) -> None:
    """Create MLflow's and mlflow-share's tables and the first admin, once, before workers."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    from mlflow_share import db
    from mlflow_share.app import announce_generated_admin, bootstrap_admin
    from mlflow_share.directory import Directory

    uri = db.strip_scheme(uri)
    TrackingStore(uri, "file:///nonexistent-unused")
    RegistryStore(uri)
    db.ensure_schema(uri)
    engine = db.get_engine(uri)
    generated = bootstrap_admin(Directory(engine))
    if generated is not None:
        announce_generated_admin(config.options().admin_username or "admin", generated)
    engine.dispose()


# -- identity -----------------------------------------------------------------------------
@cli.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Show the authenticated caller, its teams and roles."""
    me = _run(_client(ctx).whoami)
    show([me], [("user", "user"), ("org admin", "is_admin"), ("teams", "teams")],
         as_json=as_json)


@cli.group()
def team() -> None:
    """Create teams and manage their members."""


@team.command("create")
@click.argument("name")
@click.pass_context
def team_create(ctx: click.Context, name: str) -> None:
    """Create team NAME (org admins)."""
    _run(_client(ctx).create_team, name)
    click.echo(f"Created team {name}")


@team.command("list")
@json_option
@click.pass_context
def team_list(ctx: click.Context, as_json: bool) -> None:
    """Teams and their members with their roles."""
    show(_run(_client(ctx).list_teams), [
        ("team", "name"),
        ("members", lambda t: [f"{m['user']} ({m['role']})" for m in t["members"]])],
        as_json=as_json, empty="No teams.")


@team.command("add-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("user")
@click.option("--role", type=ROLE, required=True, help="The member's role in the team.")
@click.pass_context
def team_add_member(ctx: click.Context, team_name: str, user: str, role: str) -> None:
    """Make USER a member of TEAM with ROLE (or change the role)."""
    _run(_client(ctx).add_member, team_name, user, role)
    click.echo(f"{user} is now {role} of {team_name}")


@team.command("remove-member")
@click.argument("team_name", metavar="TEAM")
@click.argument("user")
@yes_option
@click.pass_context
def team_remove_member(ctx: click.Context, team_name: str, user: str, yes: bool) -> None:
    """Remove USER from TEAM."""
    confirm(f"Remove {user} from {team_name}?", yes)
    _run(_client(ctx).remove_member, team_name, user)
    click.echo(f"Removed {user} from {team_name}")


@cli.group()
def user() -> None:
    """Create users and service accounts."""


@user.command("create")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--service-account", is_flag=True, help="No password; authenticates with tokens.")
@click.option("--admin", is_flag=True, help="Make the user an org administrator.")
@click.pass_context
def user_create(ctx: click.Context, name: str, password_stdin: bool, service_account: bool,
                admin: bool) -> None:
    """Create user NAME (asks for the password) or a service account (tokens only)."""
    password = None
    if service_account:
        if password_stdin:
            raise click.UsageError("A service account has no password.")
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run(_client(ctx).create_user, name, password, service_account=service_account, admin=admin)
    click.echo(f"Created {'service account' if service_account else 'user'} {name}")


@user.command("list")
@json_option
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    """Users and service accounts."""
    show(_run(_client(ctx).list_users), [
        ("user", "name"), ("org admin", "is_admin"), ("service account", "is_service_account"),
        ("state", lambda u: "disabled" if u.get("disabled_at") else "active"),
        ("since", lambda u: iso_time(u.get("disabled_at") or u.get("created_at")))],
        as_json=as_json, empty="No users.")


@user.command("disable")
@click.argument("name")
@yes_option
@click.pass_context
def user_disable(ctx: click.Context, name: str, yes: bool) -> None:
    """Stop NAME at once: their password, tokens and browser sessions no longer work."""
    confirm(f"Disable {name} (their tokens and sessions stop now)?", yes)
    _run(_client(ctx).disable_user, name)
    click.echo(f"Disabled {name}")


@user.command("enable")
@click.argument("name")
@click.pass_context
def user_enable(ctx: click.Context, name: str) -> None:
    """Let a disabled user in again (their tokens work again; they log in again)."""
    _run(_client(ctx).enable_user, name)
    click.echo(f"Enabled {name}")


@user.command("delete")
@click.argument("name")
@yes_option
@click.pass_context
def user_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete NAME with their tokens, sessions and memberships (the audit log keeps the rest)."""
    confirm(f"Delete user {name}, their tokens and memberships?", yes)
    _run(_client(ctx).delete_user, name)
    click.echo(f"Deleted {name}")


@user.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def user_reset_password(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set NAME's password (their browser sessions end)."""
    password = (sys.stdin.readline().rstrip("\r\n") if password_stdin else
                click.prompt("New password", hide_input=True, confirmation_prompt=True))
    _run(_client(ctx).reset_password, name, password)
    click.echo(f"Password of {name} reset")


@cli.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--expires-in", "expires_in", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Lifetime in days (default: no expiry).")
@click.option("--description", default=None, help="What the token is for (shown in lists).")
@click.pass_context
def token_create(ctx: click.Context, user_name: str, expires_in: float | None,
                 description: str | None) -> None:
    """Create a token for USER; the token is printed alone on the last line, once."""
    issued = _run(_client(ctx).create_token, user_name, expires_in, description)
    click.echo(f"Token {issued['token_id']} for {issued['user']}, expires "
               f"{iso_time(issued['expires_at']) if issued['expires_at'] else 'never'}:",
               err=True)
    click.echo(issued["token"])


@token.command("list")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
@json_option
@click.pass_context
def token_list(ctx: click.Context, user_name: str | None, as_json: bool) -> None:
    """API tokens (their ids, never their values): yours, or everyone's for org admins."""
    rows = [{**entry, "state": token_state(entry)}
            for entry in _run(_client(ctx).list_tokens, user_name)]
    show(rows, [("token id", "token_id"), ("user", "user"), ("state", "state"),
                ("expires", lambda t: iso_time(t["expires_at"]) if t["expires_at"] else "never"),
                ("description", "description")], as_json=as_json, empty="No tokens.")


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@yes_option
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, yes: bool) -> None:
    """Revoke the token whose id is ID (the first column of `token list`; not the token)."""
    confirm(f"Revoke token {token_id}? Whatever uses it stops working.", yes)
    _run(_client(ctx).revoke_token, token_id)
    click.echo(f"Revoked token {token_id}")


# -- grants -------------------------------------------------------------------------------
def _target_options(fn: Any) -> Any:
    fn = click.option("--experiment-id", default=None, help="An experiment ID.")(fn)
    return click.option("--model", default=None, help="A registered model name.")(fn)


@cli.command()
@click.argument("team_name", metavar="TEAM")
@click.argument("permission", type=PERMISSION)
@_target_options
@click.pass_context
def grant(ctx: click.Context, team_name: str, permission: str, model: str | None,
          experiment_id: str | None) -> None:
    """Grant TEAM a permission on a registered model (or an experiment)."""
    result = _run(_client(ctx).grant, team_name, permission, model=model,
                  experiment_id=experiment_id)
    state = "Granted" if result["grant"]["created"] else "Already granted"
    click.echo(f"{state}: {permission} to {team_name}")


@cli.command()
@click.argument("team_name", metavar="TEAM")
@click.argument("permission", type=PERMISSION)
@_target_options
@yes_option
@click.pass_context
def revoke(ctx: click.Context, team_name: str, permission: str, model: str | None,
           experiment_id: str | None, yes: bool) -> None:
    """Revoke a permission granted with `grant`."""
    confirm(f"Revoke {permission} from {team_name}?", yes)
    result = _run(_client(ctx).revoke, team_name, permission, model=model,
                  experiment_id=experiment_id)
    click.echo(f"{'Revoked' if result['revoked'] else 'Not granted'}: {permission} from {team_name}")


ACCESS_COLUMNS = [
    ("team", "team"), ("may", "actions"), ("through", lambda r: {
        "owner": "owns it", "grant": f"{r['permission']} grant",
        "package": f"package {r['package_id']} ({r['permission']})"}[r["via"]]),
    ("versions", lambda r: r["versions"] or "all"),
    ("until", lambda r: iso_time(r["expires_at"]) if r["expires_at"] else "-"),
    ("by", "granted_by")]


def _show_access(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    show(found["teams"], ACCESS_COLUMNS, as_json=False, empty="No team has access.")
    click.echo(f"Org admins may do everything: {', '.join(found['admins']) or '-'}")


@cli.command("grants")
@_target_options
@json_option
@click.pass_context
def grants_list(ctx: click.Context, model: str | None, experiment_id: str | None,
                as_json: bool) -> None:
    """Who has access to a model or experiment, and through what (its owner team, grants and
    published sharing packages); without one, every direct grant (org admins)."""
    if model is not None or experiment_id is not None:
        _show_access(_run(_client(ctx).effective_access, model, experiment_id), as_json)
        return
    result = _run(_client(ctx).list_grants, model=model, experiment_id=experiment_id)
    show(result["grants"], [
        ("kind", "kind"), ("resource", lambda g: g["name"] or g["resource_id"]),
        ("team", "team"), ("permission", "permission"), ("granted by", "granted_by"),
        ("granted", lambda g: iso_time(g.get("granted_at")))], as_json=as_json,
        empty="No grants.")


@cli.group()
def access() -> None:
    """Effective access: who may do what on a model, and why a user may or may not."""


@access.command("show")
@click.argument("model", required=False)
@click.option("--experiment-id", default=None, help="An experiment instead of a model.")
@click.option("--version", default=None, help="Only what reaches this version's files.")
@json_option
@click.pass_context
def access_show(ctx: click.Context, model: str | None, experiment_id: str | None,
                version: str | None, as_json: bool) -> None:
    """Every team that may act on MODEL, what it may do and through what."""
    _show_access(_run(_client(ctx).effective_access, model, experiment_id, version), as_json)


@access.command("explain")
@click.argument("user_name", metavar="USER")
@click.argument("model", required=False)
@click.option("--experiment-id", default=None, help="An experiment instead of a model.")
@click.option("--action", type=click.Choice(["read", "execute", "write", "manage"]),
              default="read", show_default=True, help="The action to explain.")
@click.option("--version", default=None, help="The version whose files are reached.")
@json_option
@click.pass_context
def access_explain(ctx: click.Context, user_name: str, model: str | None,
                   experiment_id: str | None, action: str, version: str | None,
                   as_json: bool) -> None:
    """Why USER may or may not ACTION on MODEL (exit 0 if allowed, 3 if not)."""
    found = _run(_client(ctx).explain_access, user_name, action, model, experiment_id, version)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
    else:
        target = model or f"experiment {experiment_id}"
        click.echo(f"{user_name} {'MAY' if found['allowed'] else 'may NOT'} {action} {target}"
                   + (f" version {version}" if version else "") + ".")
        for reason in found["reasons"]:
            click.echo(f"  - {reason}")
    ctx.exit(0 if found["allowed"] else 3)


# -- policy as code -----------------------------------------------------------------------
@cli.group()
def policy() -> None:
    """Export and import the whole policy as reviewable YAML."""


@policy.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
@click.pass_context
def policy_export(ctx: click.Context, output: Path | None) -> None:
    """Write every team, member, owner and grant as YAML (to review, diff and import)."""
    text = _run(_client(ctx).export_policy)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"Wrote {output}", err=True)


@policy.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the difference, change nothing.")
@click.pass_context
def policy_import(ctx: click.Context, file: Path, dry_run: bool) -> None:
    """Make the policy what FILE says (one audited transaction); --dry-run shows the changes."""
    result = _run(_client(ctx).import_policy, file.read_text(), dry_run=dry_run)
    for change in result["changes"]:
        click.echo(change)
    if not result["changes"]:
        click.echo("No changes.")
    elif dry_run:
        click.echo("Dry run: nothing applied.")
    else:
        click.echo(f"Applied {len(result['changes'])} change(s).")


# -- aliases --------------------------------------------------------------------------------
@cli.group()
def alias() -> None:
    """Protected aliases: protect, move (compare-and-set), roll back, history."""


@alias.command("protect")
@click.argument("model")
@click.argument("alias_name", metavar="ALIAS")
@click.option("--off", is_flag=True, help="Unprotect it instead.")
@click.option("--require-approval", is_flag=True,
              help="Every move also needs a second maintainer's approval.")
@click.pass_context
def alias_protect(ctx: click.Context, model: str, alias_name: str, off: bool,
                  require_approval: bool) -> None:
    """Only maintainers may move ALIAS of MODEL, and only onto verified versions."""
    _run(_client(ctx).protect_alias, model, alias_name, not off, require_approval)
    state = "unprotected" if off else "protected" + (
        ", moves need a second maintainer" if require_approval else "")
    click.echo(f"{model}@{alias_name}: {state}")


@alias.command("request")
@click.argument("model")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version")
@click.option("--reason", required=True, help="Why: shown to the approver, kept in the history.")
@click.pass_context
def alias_request(ctx: click.Context, model: str, alias_name: str, version: str,
                  reason: str) -> None:
    """Ask a second maintainer to move ALIAS of MODEL to VERSION; prints the request id."""
    found = _run(_client(ctx).request_alias_move, model, alias_name, version, reason)
    click.echo(f"{model}@{alias_name}: {found['from_version']} -> {found['to_version']} "
               "awaits approval")
    click.echo(found["id"])


@alias.command("approve")
@click.argument("request_id", metavar="ID")
@click.pass_context
def alias_approve(ctx: click.Context, request_id: str) -> None:
    """Approve (and so make) a requested move; not your own."""
    found = _run(_client(ctx).approve_alias_move, request_id)
    click.echo(f"request {request_id}: approved, {found['alias']} -> {found['to_version']}")


@alias.command("reject")
@click.argument("request_id", metavar="ID")
@click.option("--reason", default=None, help="Why, for the requester and the audit log.")
@click.pass_context
def alias_reject(ctx: click.Context, request_id: str, reason: str | None) -> None:
    """Reject a requested move."""
    _run(_client(ctx).reject_alias_move, request_id, reason)
    click.echo(f"request {request_id}: rejected")


@alias.command("requests")
@click.argument("model")
@click.option("--status", default=None, help="pending, approved or rejected.")
@json_option
@click.pass_context
def alias_requests(ctx: click.Context, model: str, status: str | None, as_json: bool) -> None:
    """Requested moves of MODEL's protected aliases and their decisions."""
    show(_run(_client(ctx).alias_requests, model, status), [
        ("id", "id"), ("alias", "alias"), ("from", "from_version"), ("to", "to_version"),
        ("status", "status"), ("requested by", "requested_by"), ("decided by", "decided_by"),
        ("reason", "reason")], as_json=as_json, empty="No requests.")


@alias.command("move")
@click.argument("model")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version")
@click.option("--expect", default=None, help="Fail (409) unless ALIAS still points here.")
@click.option("--reason", default=None, help="Why: kept in the alias history and audit log.")
@click.pass_context
def alias_move(ctx: click.Context, model: str, alias_name: str, version: str,
               expect: str | None, reason: str | None) -> None:
    """Point ALIAS of MODEL at VERSION."""
    _run(_client(ctx).move_alias, model, alias_name, version, expect, reason)
    click.echo(f"{model}@{alias_name} -> {version}")


@alias.command("rollback")
@click.argument("model")
@click.argument("alias_name", metavar="ALIAS")
@click.option("--to", "to_version", default=None, help="Version (default: the one before).")
@click.option("--reason", required=True, help="Why: kept in the alias history and audit log.")
@click.pass_context
def alias_rollback(ctx: click.Context, model: str, alias_name: str, to_version: str | None,
                   reason: str) -> None:
    """Move ALIAS of MODEL back to its previous version (or --to VERSION)."""
    result = _run(_client(ctx).rollback_alias, model, alias_name, reason, to_version)
    click.echo(f"{model}@{alias_name}: {result['from_version']} -> {result['version']}")


@alias.command("history")
@click.argument("model")
@click.option("--alias", "alias_name", default=None, help="Only this alias.")
@json_option
@click.pass_context
def alias_history(ctx: click.Context, model: str, alias_name: str | None,
                  as_json: bool) -> None:
    """Who moved which alias of MODEL, when, from, to and why."""
    show(_run(_client(ctx).alias_history, model, alias_name), [
        ("when", lambda r: iso_time(r["at"])), ("alias", "alias"), ("from", "from_version"),
        ("to", "to_version"), ("by", "principal"), ("reason", "reason")],
        as_json=as_json, empty="No moves.")


def _add_subcommands() -> None:
    from mlflow_share.adopt.cli import adopt_group
    from mlflow_share.artifacts.cli import verify
    from mlflow_share.artifacts.signing_cli import COMMANDS as SIGNING_COMMANDS
    from mlflow_share.audit.cli import audit
    from mlflow_share.auth.cli import COMMANDS as IDENTITY_COMMANDS
    from mlflow_share.governance.cli import COMMANDS

    for command in IDENTITY_COMMANDS:  # login (device flow), trust (workload identity)
        cli.add_command(command)
    cli.add_command(adopt_group)
    cli.add_command(audit)
    cli.add_command(verify)
    for command in SIGNING_COMMANDS:  # signature (OpenSSF Model Signing), signing keygen/keys
        cli.add_command(command)
    for command in COMMANDS:
        cli.add_command(command)
    from mlflow_share.scim.cli import scim_group

    cli.add_command(scim_group)


_add_subcommands()

if __name__ == "__main__":
    cli()
