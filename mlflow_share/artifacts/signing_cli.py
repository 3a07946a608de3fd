"""``mlflow-share signature`` and ``mlflow-share signing``: OpenSSF Model Signing signatures.

    mlflow-share signing keygen --private k.pem --public k.pub     # an ECDSA P-256 key pair
    mlflow-share signature models:/NAME/VERSION -o model.sig       # any reader of the version
    model_signing verify key FOLDER --signature model.sig --public_key k.pub
    mlflow-share signature sign-existing                           # org admins
    mlflow-share signing keys [--key-id ID -o key.pub]             # the published keys

FOLDER is what ``mlflow.artifacts.download_artifacts("models:/NAME/VERSION")`` delivers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlflow_share.artifacts import oms
from mlflow_share.commands import admin_client, call_server, json_option, show

_SIGNATURE = "/model-versions/signature"
_KEYS = "/signing/keys"
_GIT_PATHS = (".git/", ".github/", ".gitattributes", ".gitignore")


class _UriOrCommand(click.Group):
    """``signature models:/...`` fetches; ``signature sign-existing`` is a subcommand."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            return "fetch", self.commands["fetch"], args
        return super().resolve_command(ctx, args)


@click.group(cls=_UriOrCommand)
def signature() -> None:
    """Fetch a registered version's OpenSSF Model Signing signature, or sign old versions.

    \b
    mlflow-share signature models:/NAME/VERSION -o model.sig
    mlflow-share signature sign-existing
    """


@signature.command("fetch", hidden=True)
@click.argument("model_uri", metavar="models:/NAME/VERSION")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Where to write the signature (a sigstore bundle).")
@click.option("--key-id", default=None, help="The signature of this key (default: the "
              "current key's, else the newest by a trusted key).")
@click.pass_context
def fetch(ctx: click.Context, model_uri: str, output: Path, key_id: str | None) -> None:
    """Write the signature of models:/NAME/VERSION (or models:/NAME@ALIAS) to OUTPUT."""
    client = admin_client(ctx)
    name, version = call_server(client.resolve_model_version, model_uri)
    params = {"name": name, "version": version, **({"key_id": key_id} if key_id else {})}
    record = call_server(client._call, "GET", _SIGNATURE, params=params)
    output.write_text(record["bundle"], encoding="utf-8")
    manifest = call_server(client.model_version_manifest, name, version)
    click.echo(f"Wrote {output}: models:/{name}/{version} signed by key {record['key_id']}"
               + ("" if record.get("trusted", True) else " (a key this server no longer "
                  "trusts)"), err=True)
    click.echo(f"Check a download of it: model_signing verify key FOLDER --signature {output} "
               "--public_key KEY.pub" + _git_hint(manifest), err=True)


def _git_hint(manifest: dict[str, Any]) -> str:
    """``model_signing verify`` skips git files at the model's top level by default; a
    version holding one must be verified with them, or the check reports it missing (it is
    signed, as every file is)."""
    names = [str(r["name"]) for r in manifest["manifest"]["predicate"]["resources"]]
    if any(n.startswith(_GIT_PATHS) for n in names):
        return " --no-ignore-git-paths (this version holds git files)"
    return ""


@signature.command("sign-existing")
@click.option("--max-versions", default=200, show_default=True, type=click.IntRange(1, 1000),
              help="Versions signed per request.")
@click.pass_context
def sign_existing(ctx: click.Context, max_versions: int) -> None:
    """Sign every version without a signature by a trusted key (org admins): versions
    registered before the signing key was configured, or signed by a retired key."""
    client = admin_client(ctx)
    body: dict[str, Any] = {"max_versions": max_versions}
    signed = failed = 0
    while True:
        page = call_server(client._call, "POST", "/signing/sign-existing", body)
        signed += len(page["signed"])
        for failure in page["failed"]:
            failed += 1
            click.echo(f"  not signed: models:/{failure['name']}/{failure['version']}: "
                       f"{failure['reason']}", err=True)
        click.echo(f"Signed {signed} versions with key {page['key_id']} so far", err=True)
        if not page.get("next_page_token"):
            break
        body["page_token"] = page["next_page_token"]
    click.echo(f"Signed {signed}; {failed} could not be signed; {page['remaining']} versions "
               "have no signature by a trusted key.")
    ctx.exit(1 if failed else 0)


@click.group()
def signing() -> None:
    """Keys for OpenSSF Model Signing signatures of registered versions."""


@signing.command()
@click.option("--private", "private_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (MLFLOW_SHARE_SIGNING_KEY of the server).")
@click.option("--public", "public_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the public key (for verifiers).")
@click.option("--curve", type=click.Choice(sorted(oms.CURVES)), default="P-256",
              show_default=True, help="ECDSA curve (those OpenSSF Model Signing accepts).")
def keygen(private_path: Path, public_path: Path, curve: str) -> None:
    """Create an ECDSA key pair for signing versions (the private file is mode 0600)."""
    try:
        key = oms.generate_key(private_path, public_path, curve)
    except FileExistsError as exc:
        existing = exc.filename or exc.args[0]
        raise click.ClickException(f"{existing} exists; refusing to overwrite a key.") from None
    click.echo(f"Wrote {private_path} (private) and {public_path} (public); key id {key}")


@signing.command("keys")
@click.option("--key-id", default=None, help="Only this key.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the key's PEM here (with --key-id, or the current key).")
@json_option
@click.pass_context
def keys_command(ctx: click.Context, key_id: str | None, output: Path | None,
                 as_json: bool) -> None:
    """The public keys the server's signatures verify with (current first)."""
    client = admin_client(ctx)
    published = call_server(client._call, "GET", _KEYS)
    rows = [k for k in published["keys"] if key_id in (None, k["key_id"])]
    if key_id is not None and not rows:
        raise click.ClickException(f"The server publishes no key {key_id}.")
    if output is not None:
        chosen = rows[0] if key_id else next((k for k in rows if k["current"]), None)
        if chosen is None:
            raise click.ClickException("The server has no current signing key; give --key-id.")
        output.write_text(chosen["public_key"])
        click.echo(f"Wrote {output}: key {chosen['key_id']}", err=True)
        return
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    show(rows, [("key id", "key_id"), ("curve", "curve"), ("current", "current")],
         as_json=False, empty="The server has no signing keys.")


COMMANDS = (signature, signing)
