"""``mlflow-share adopt``: owner teams for what existed before mlflow-share, and basic-auth's
users and permissions, as a reviewable plan applied in one audited transaction.

The commands work on the server's database directly (``--backend-store-uri``, or the embedded
default's in ``--home``), as ``mlflow-share gateway`` does: adoption is a one-off migration by
whoever runs the installation; it reads MLflow's own tables and basic-auth's database, which
no server API exposes; and it is one transaction. Running servers see the change at their next
request (the policy version moves). The audit log names the operating-system user that
applied it (``system:NAME``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Engine

from mlflow_share import config, db
from mlflow_share.adopt.basic_auth import carried_password_hash, read_basic_auth
from mlflow_share.adopt.owners import (
    ADMINS_ONLY,
    Plan,
    PlanOptions,
    Rule,
    apply_plan,
    make_plan,
    parse_plan,
    read_rules,
    users_with_carried_passwords,
)
from mlflow_share.audit.log import system_principal
from mlflow_share.policy.enforcer import validate_identifier


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


class _AdoptGroup(click.Group):
    """A failure is one line on stderr and exit status 1 (also when run on its own)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlflowException as exc:  # mlflow-share's errors say what and where
            raise click.ClickException(_first_line(exc.message)) from None
        except sa.exc.SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None)
            said = _first_line(str(orig if orig is not None else exc)) or type(exc).__name__
            raise click.ClickException(f"The database refused: {said}") from None
        except OSError as exc:
            raise click.ClickException(str(exc)) from None


@click.group("adopt", cls=_AdoptGroup)
def adopt_group() -> None:
    """Adopt an existing MLflow installation: owner teams (and basic-auth's users and
    permissions) through a plan to review, then apply.

    Until then only org admins see what was made before mlflow-share.
    """


def _database_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--backend-store-uri", default=None,
                      help="The server's SQL URI (default: the SQLite database in --home).")(fn)
    return click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=f"The embedded default's folder (${config.HOME_ENV}, else "
                             "~/.mlflow-share).")(fn)


def _server_database(home: Path | None, backend_store_uri: str | None) -> tuple[Engine, str]:
    """The server's database, refused unless MLflow and mlflow-share have both set it up."""
    home = (home or config.default_home()).expanduser().resolve()
    uri = config.checked_backend_uri(backend_store_uri or f"sqlite:///{home / 'mlflow.db'}")
    shown = sa.engine.make_url(uri).render_as_string(hide_password=True)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise click.ClickException(f"No database at {shown}: pass the server's "
                                   "--backend-store-uri (or its --home).")
    engine = db.get_engine(uri)
    present = set(sa.inspect(engine).get_table_names())
    if not {"experiments", "registered_models"} <= present:
        raise click.ClickException(f"{shown} is not an MLflow database.")
    if not {db.resources.name, db.AUDIT_TABLE} <= present:
        raise click.ClickException(
            f"mlflow-share has not run on {shown} yet: start it on that database once "
            "(mlflow-share server --backend-store-uri ...), create the teams, then adopt.")
    return engine, shown


def _plan_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed((
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Write the plan here (default: standard output)."),
        click.option("--rule", "rules", multiple=True, metavar="GLOB=TEAM",
                     help="Experiments and models whose name matches GLOB go to TEAM "
                          "(experiment:GLOB or model:GLOB for one kind); repeatable, the "
                          "first match wins, before those of --rules-file."),
        click.option("--rules-file", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="More rules, one GLOB=TEAM a line (# comments)."),
        click.option("--by-tag", default=None, metavar="KEY",
                     help="A tag whose value names the owner team (before the rules)."),
        click.option("--by-creator", is_flag=True,
                     help="After the rules: the team of whoever made it (its first run or "
                          "version), if they are in exactly one team."),
        click.option("--default-team", default=None, metavar="TEAM",
                     help="The owner of whatever nothing else matched."),
        click.option("--default-experiment", default=None, metavar="TEAM|admins-only",
                     help="The Default experiment's owner (else the plan asks you to decide)."),
    )):
        fn = option(fn)
    return fn


def _options(rules: tuple[str, ...], rules_file: Path | None, by_tag: str | None,
             by_creator: bool, default_team: str | None, default_experiment: str | None
             ) -> PlanOptions:
    parsed = [Rule.parse(text) for text in rules]
    if rules_file is not None:
        if not rules_file.is_file():
            raise click.ClickException(f"No rules file at {rules_file}.")
        parsed += read_rules(rules_file.read_text(), str(rules_file))
    if default_team is not None:
        validate_identifier("team name", default_team)
    if default_experiment not in (None, ADMINS_ONLY):
        validate_identifier("team name", default_experiment)
    return PlanOptions(rules=tuple(parsed), default_team=default_team, by_tag=by_tag,
                       by_creator=by_creator, default_experiment=default_experiment)


def _team_of(values: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for value in values:
        user, sep, team = value.partition("=")
        if not sep or not user or not team:
            raise click.ClickException(f"--team-of {value!r}: expected USER=TEAM.")
        mapping[user.strip()] = validate_identifier("team name", team.strip())
    return mapping


def _emit(plan: Plan, output: Path | None) -> None:
    if output is None:
        click.echo(plan.text, nl=False)
    else:
        output.write_text(plan.text)
        click.echo(f"Wrote {output}", err=True)
    said = [f"{plan.proposed} owner(s) proposed", f"{plan.unmatched} unmatched"]
    if plan.users or plan.teams or plan.grants:
        said.append(f"{plan.users} new user(s), {plan.teams} new team(s) and {plan.grants} "
                    "grant(s) from basic-auth")
    if plan.skipped:
        said.append(f"{plan.skipped} not carried (see skipped:)")
    click.echo("Plan: " + ", ".join(said) + ".", err=True)
    if plan.default_undecided:
        click.echo("The Default experiment needs a decision: edit its team: (a team, or "
                   f"{ADMINS_ONLY}), or pass --default-experiment.", err=True)
    if plan.grants_without_owner:
        click.echo(f"{plan.grants_without_owner} grant(s) are on resources the plan leaves "
                   "without an owner team: give them one, or delete the grants.", err=True)
    if plan.missing_teams:
        click.echo("Teams to create before applying: " + ", ".join(plan.missing_teams)
                   + " (mlflow-share team create NAME).", err=True)


@adopt_group.command("plan")
@_database_options
@_plan_options
def plan_command(home: Path | None, backend_store_uri: str | None, output: Path | None,
                 rules: tuple[str, ...], rules_file: Path | None, by_tag: str | None,
                 by_creator: bool, default_team: str | None,
                 default_experiment: str | None) -> None:
    """Propose an owner team for every experiment and registered model that has none.

    The plan is YAML to review and edit; nothing changes until `adopt apply`.
    """
    options = _options(rules, rules_file, by_tag, by_creator, default_team, default_experiment)
    engine, shown = _server_database(home, backend_store_uri)
    _emit(make_plan(engine, options, source=shown), output)


@adopt_group.command("basic-auth")
@click.option("--auth-db", required=True, metavar="URI",
              help="basic-auth's database (database_uri in its basic_auth.ini).")
@click.option("--team-of", "team_of", multiple=True, metavar="USER=TEAM",
              help="USER's own permissions go to TEAM instead of a personal team user-USER.")
@_database_options
@_plan_options
def basic_auth_command(auth_db: str, team_of: tuple[str, ...], home: Path | None,
                       backend_store_uri: str | None, output: Path | None,
                       rules: tuple[str, ...], rules_file: Path | None, by_tag: str | None,
                       by_creator: bool, default_team: str | None,
                       default_experiment: str | None) -> None:
    """Plan the move from MLflow's basic-auth: its users (admins become org admins), teams for
    its users and roles, owners (MANAGE holders) and grants; then owners as `adopt plan` does.

    Passwords carry over where mlflow-share can verify basic-auth's hash; the others need a
    new password or a token. Nothing changes until `adopt apply`.
    """
    options = _options(rules, rules_file, by_tag, by_creator, default_team, default_experiment)
    engine, shown = _server_database(home, backend_store_uri)
    auth = read_basic_auth(auth_db, team_of=_team_of(team_of))
    _emit(make_plan(engine, options, basic_auth=auth, source=shown), output)


@adopt_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_database_options
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--reassign", is_flag=True,
              help="Move resources that already have another owner team than the plan's.")
@click.option("--auth-db", default=None, metavar="URI",
              help="The basic-auth database the plan was made from (for the passwords it "
                   "carries).")
def apply_command(file: Path, home: Path | None, backend_store_uri: str | None, dry_run: bool,
                  reassign: bool, auth_db: str | None) -> None:
    """Apply a plan as a whole in one audited transaction, or nothing if any of it is wrong.

    Applying it again changes nothing; what was made after the plan is not touched.
    """
    if not file.is_file():
        raise click.ClickException(f"No plan at {file}.")
    text = file.read_text()
    engine, _shown = _server_database(home, backend_store_uri)
    passwords = None
    carried = users_with_carried_passwords(parse_plan(text))
    if carried and auth_db:
        users = read_basic_auth(auth_db).users
        passwords = {name: carried_password_hash(users[name].password_hash)
                     if name in users else None for name in carried}
    result = apply_plan(engine, text, by=system_principal(), dry_run=dry_run,
                        reassign=reassign, passwords=passwords)
    for line in result.changes + result.left:
        click.echo(line)
    counts = (f"{len(result.unchanged)} unchanged, {len(result.left)} left to org admins")
    if not result.changes:
        click.echo(f"No changes ({counts}).")
    elif dry_run:
        click.echo(f"Dry run: {len(result.changes)} change(s) would be applied ({counts}); "
                   "nothing applied.")
    else:
        click.echo(f"Applied {len(result.changes)} change(s) ({counts}).")


def _add_artifacts_command() -> None:
    from mlflow_share.adopt.artifacts import artifacts_command

    adopt_group.add_command(artifacts_command)


_add_artifacts_command()
