"""``mlflow-share login`` (a token of your own, stored for the CLI and notebooks) and
``mlflow-share trust`` (which workloads' JWTs stand for which service accounts)."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click

from mlflow_share.commands import admin_client as _client
from mlflow_share.commands import call_server as _run
from mlflow_share.commands import confirm, iso_time, json_option, show, yes_option


def _tracking_uri(ctx: click.Context) -> str:
    uri = (ctx.find_root().obj or {}).get("tracking_uri")
    if not uri or not str(uri).startswith(("http://", "https://")):
        raise click.UsageError("Set the server address with --tracking-uri or "
                               "MLFLOW_TRACKING_URI (http[s]://...).")
    return str(uri)


@click.command()
@click.option("--device", is_flag=True,
              help="Log in through the browser: confirm the printed code at <server>/share/device "
                   "(SSO or a local account).")
@click.option("--expires-in", "expires_in", type=click.FloatRange(min=0, min_open=True),
              default=None, metavar="DAYS",
              help="With --device: the token lifetime to ask for (the server's default "
                   "without it; you may shorten it in the browser).")
@click.option("--token-stdin", is_flag=True,
              help="Without --device: read an existing token from standard input.")
@click.pass_context
def login(ctx: click.Context, device: bool, expires_in: float | None, token_stdin: bool) -> None:
    """Get a token of your own for the server and store it (mode 0600) where this CLI and
    mlflow-share-client (MLFLOW_TRACKING_AUTH=mlflow-share) find it; renewed before it
    expires."""
    uri = _tracking_uri(ctx)
    if expires_in is not None and not device:
        raise click.UsageError("--expires-in goes with --device.")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow_share_client.auth import login_with_device, save_token, token_file
    except ImportError:
        raise click.ClickException(
            "`mlflow-share login` keeps the token where mlflow-share-client reads it: install "
            "it (pip install mlflow-share-client, or plugins/mlflow-share-client).") from None
    try:
        if device:
            entry = login_with_device(uri, expires_in)
        else:
            token = sys.stdin.readline().strip() if token_stdin else getpass.getpass(
                f"Token for {uri} (create one on {uri}/share/access): ")
            entry = save_token(uri, token)
    except MlflowException as exc:
        raise click.ClickException(exc.message) from None
    expires = iso_time(entry["expires_at"]) if entry.get("expires_at") else "never"
    click.echo(f"Logged in to {uri.rstrip('/')} as {entry.get('user')} (token "
               f"{entry.get('token_id')}, expires {expires}); stored in {token_file()}.")


@click.group()
def trust() -> None:
    """Workload identity: JWTs of trusted issuers exchanged for service-account tokens."""


def _claims(pairs: tuple[str, ...]) -> dict[str, str]:
    claims: dict[str, str] = {}
    for pair in pairs:
        name, sep, pattern = pair.partition("=")
        if not sep or not name or not pattern:
            raise click.UsageError(f"--claim takes NAME=PATTERN, got {pair!r}.")
        if name in claims:
            raise click.UsageError(f"--claim {name} is given twice.")
        claims[name] = pattern
    return claims


@trust.command("add")
@click.option("--issuer", required=True, metavar="URL",
              help="The issuer (its iss claim); keys from URL/.well-known/openid-configuration.")
@click.option("--audience", required=True, metavar="AUD",
              help="The audience the JWT must be issued for (its aud claim).")
@click.option("--subject", required=True, metavar="PATTERN",
              help="Glob the JWT's sub must match, e.g. 'system:serviceaccount:ml:trainer'.")
@click.option("--service-account", required=True, metavar="NAME",
              help="The service account whose token a matching JWT gets.")
@click.option("--jwks-uri", default=None, metavar="URL",
              help="Fetch the issuer's keys here instead of its discovery document.")
@click.option("--claim", "claims", multiple=True, metavar="NAME=PATTERN",
              help="Another claim the JWT must match (a glob); repeatable.")
@click.pass_context
def trust_add(ctx: click.Context, issuer: str, audience: str, subject: str,
              service_account: str, jwks_uri: str | None, claims: tuple[str, ...]) -> None:
    """Trust JWTs of ISSUER for AUD whose subject matches PATTERN as SERVICE-ACCOUNT
    (org admins); prints the rule's id."""
    rule = _run(_client(ctx).add_trust_rule, issuer, audience, subject, service_account,
                claims=_claims(claims), jwks_uri=jwks_uri)
    click.echo(f"Trusted {rule['issuer']} (aud {rule['audience']}, sub {rule['subject']}) "
               f"as {rule['service_account']}", err=True)
    click.echo(rule["id"])


TRUST_COLUMNS: list[tuple[str, Any]] = [
    ("id", "id"), ("issuer", "issuer"), ("audience", "audience"), ("subject", "subject"),
    ("claims", lambda r: [f"{k}={v}" for k, v in (r.get("claims") or {}).items()]),
    ("service account", "service_account"), ("jwks uri", "jwks_uri"),
    ("by", "created_by"), ("created", lambda r: iso_time(r.get("created_at")))]


@trust.command("list")
@json_option
@click.pass_context
def trust_list(ctx: click.Context, as_json: bool) -> None:
    """Every trust rule (org admins)."""
    show(_run(_client(ctx).list_trust_rules), TRUST_COLUMNS, as_json=as_json,
         empty="No trust rules.")


@trust.command("remove")
@click.argument("rule_id", metavar="ID")
@yes_option
@click.pass_context
def trust_remove(ctx: click.Context, rule_id: str, yes: bool) -> None:
    """Remove trust rule ID (tokens it issued run out within their short lifetime)."""
    confirm(f"Remove trust rule {rule_id}?", yes)
    _run(_client(ctx).remove_trust_rule, rule_id)
    click.echo(f"Removed trust rule {rule_id}")


COMMANDS = (login, trust)
