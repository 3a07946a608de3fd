"""``mlflow-share scim token create|list|revoke``: the identity provider's provisioning
tokens, administered by org admins over the server's HTTP API."""

from __future__ import annotations

import click

from mlflow_share.commands import admin_client as _client
from mlflow_share.commands import call_server as _run
from mlflow_share.commands import confirm, iso_time, json_option, show, token_state
from mlflow_share.commands import yes_option


@click.group("scim")
def scim_group() -> None:
    """SCIM provisioning (/scim/v2/): the identity provider's tokens."""


@scim_group.group("token")
def token_group() -> None:
    """Create, list and revoke provisioning tokens (org admins)."""


@token_group.command("create")
@click.option("--description", default=None, help="What the token is for (shown in lists).")
@click.option("--expires-in", "expires_in", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Lifetime in days (default: no expiry).")
@click.pass_context
def token_create(ctx: click.Context, description: str | None, expires_in: float | None) -> None:
    """Create a provisioning token; it is printed alone on the last line, once.

    Give it to the identity provider with the base URL <server>/scim/v2. It opens /scim/v2/
    and nothing else.
    """
    issued = _run(_client(ctx).create_scim_token, description, expires_in)
    expires = iso_time(issued["expires_at"]) if issued.get("expires_at") else "never"
    click.echo(f"SCIM token {issued['token_id']}, expires {expires}:", err=True)
    click.echo(issued["token"])


@token_group.command("list")
@json_option
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Provisioning tokens (their ids, never their values)."""
    rows = [{**entry, "state": token_state(entry)} for entry in _run(_client(ctx).list_scim_tokens)]
    show(rows, [("token id", "token_id"), ("state", "state"), ("created by", "created_by"),
                ("created", lambda t: iso_time(t["created_at"])),
                ("expires", lambda t: iso_time(t["expires_at"]) if t["expires_at"] else "never"),
                ("description", "description")], as_json=as_json, empty="No SCIM tokens.")


@token_group.command("revoke")
@click.argument("token_id", metavar="ID")
@yes_option
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, yes: bool) -> None:
    """Revoke the provisioning token ID: the identity provider's requests stop at once."""
    confirm(f"Revoke SCIM token {token_id}? Provisioning with it stops.", yes)
    _run(_client(ctx).revoke_scim_token, token_id)
    click.echo(f"Revoked SCIM token {token_id}")
