"""``mlflow-share audit``: verify the chain, export events, write and check signed checkpoints.

Each command works against the database directly (``--backend-store-uri``, read-only) or,
without it, through a running server with the caller's credentials (org admin for verify).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mlflow_share.client import ShareClientError
from mlflow_share.commands import admin_client as _client
from mlflow_share.commands import call_server as _server_call
from mlflow_share.commands import click_error

_DB_OPTION = click.option(
    "--backend-store-uri", default=None,
    help="Read the database directly (SQL URI, audit+ prefix allowed) instead of the server.")


def _engine(uri: str) -> Any:
    from mlflow_share import db

    return db.get_engine(db.strip_scheme(uri))


def _time(value: str | None) -> int | None:
    """Milliseconds since the epoch, from an integer or an ISO 8601 date/time (UTC if naive)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither milliseconds nor an ISO date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


@click.group()
def audit() -> None:
    """Verify and export the tamper-evident audit log."""


@audit.command()
@_DB_OPTION
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A signed checkpoint the chain must still contain.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Ed25519 key (public or private PEM) that signed the checkpoint.")
@click.pass_context
def verify(ctx: click.Context, backend_store_uri: str | None, checkpoint: Path | None,
           key_path: Path | None) -> None:
    """Check every hash and link; exit 1 naming the first bad sequence number."""
    from mlflow_share.audit import verify as audit_verify
    from mlflow_share.errors import InvalidInput

    head = None
    if checkpoint is not None:
        if key_path is None:
            raise click.UsageError("--checkpoint needs --key, the key that signed it.")
        try:
            head = audit_verify.read_checkpoint(checkpoint, key_path)
        except InvalidInput as exc:
            raise click.ClickException(exc.message) from None
    if backend_store_uri:
        engine = _engine(backend_store_uri)
        result = audit_verify.verify_chain(engine)
        stored = audit_verify.hash_at(engine, head["seq"]) if head else None
    else:
        data = _server_call(_client(ctx).verify_audit, head["seq"] if head else None)
        stored = data.pop("checkpoint_hash", None)
        result = audit_verify.VerifyResult(**data)
    if head is not None:
        result = audit_verify.check_against_checkpoint(result, head, stored)
    if result.ok:
        click.echo(f"OK: {result.events} events; head seq {result.head_seq} hash {result.head_hash}")
        return
    click.echo(
        f"FAILED at seq {result.first_bad_seq}: {result.problem}\n"
        f"  expected: {result.expected}\n  actual:   {result.actual}\n"
        f"  ({result.events} events verified before it)", err=True)
    sys.exit(1)


@audit.command()
@_DB_OPTION
@click.option("--since", default=None, help="From this time (ms or ISO 8601), inclusive.")
@click.option("--until", default=None, help="Up to this time (ms or ISO 8601), exclusive.")
@click.option("--principal", default=None, help="Only this user's actions.")
@click.option("--team", default=None, help="Only events on resources this team owns.")
@click.option("--resource", default=None, help="Only this resource (ID or name).")
@click.option("--action", default=None,
              help="Only this action: its name (for example registered_model.read, grant, "
                   "package.publish) or its stored spelling (mlflow.GetRegisteredModel).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JSON Lines here instead of standard output.")
@click.pass_context
def export(ctx: click.Context, backend_store_uri: str | None, since: str | None,
           until: str | None, principal: str | None, team: str | None, resource: str | None,
           action: str | None, output: Path | None) -> None:
    """Write the matching events as JSON Lines, oldest first ("action" is the action's name,
    "stored_action" the spelling the chain holds and hashes)."""
    from mlflow_share.audit.log import NamedEventFilter, readable_event
    from mlflow_share.audit.verify import iter_events

    filters: dict[str, Any] = {"since": _time(since), "until": _time(until), "principal": principal,
               "team": team, "resource": resource, "action": action}
    events: Iterator[dict[str, Any]]
    if backend_store_uri:
        events = (readable_event(event) for event in
                  iter_events(_engine(backend_store_uri), NamedEventFilter(**filters)))
    else:
        events = _client(ctx).iter_audit_events(**filters)
    handle = output.open("w") if output else sys.stdout
    count = 0
    try:
        for event in events:
            handle.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    except ShareClientError as exc:
        raise click_error(exc) from None
    finally:
        if output:
            handle.close()
    if output:
        click.echo(f"Wrote {count} events to {output}", err=True)


@audit.command()
@_DB_OPTION
@click.option("--key", "key_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM) to sign with.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the checkpoint: outside the database, ideally write-once.")
@click.pass_context
def checkpoint(ctx: click.Context, backend_store_uri: str | None, key_path: Path,
               output: Path) -> None:
    """Sign the current head (seq, hash, time) after verifying the chain up to it."""
    from mlflow_share.audit import verify as audit_verify
    from mlflow_share.audit.log import now_ms
    from mlflow_share.errors import InvalidInput

    if backend_store_uri:
        result = audit_verify.verify_chain(_engine(backend_store_uri))
    else:
        result = audit_verify.VerifyResult(**{
            k: v for k, v in _server_call(_client(ctx).verify_audit).items()
            if k != "checkpoint_hash"})
    if not result.ok:
        raise click.ClickException(
            f"The chain does not verify (seq {result.first_bad_seq}: {result.problem}); "
            "refusing to sign it.")
    try:
        document = audit_verify.sign_checkpoint(result.head_seq, result.head_hash, now_ms(),
                                                key_path)
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    output.write_text(json.dumps(document, indent=2) + "\n")
    click.echo(f"Checkpoint seq {result.head_seq} hash {result.head_hash} written to {output}")


@audit.command()
@click.option("--private", "private_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (keep it on the signing host).")
@click.option("--public", "public_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the public key (give it to verifiers).")
def keygen(private_path: Path, public_path: Path) -> None:
    """Create an Ed25519 key pair for checkpoints (the private file is mode 0600)."""
    from mlflow_share.audit.verify import generate_key

    try:
        generate_key(private_path, public_path)
    except FileExistsError:
        raise click.ClickException(f"{private_path} exists; refusing to overwrite a key.") from None
    click.echo(f"Wrote {private_path} (private) and {public_path} (public)")
