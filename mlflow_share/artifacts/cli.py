"""``mlflow-share verify models:/NAME/VERSION`` (or ``models:/NAME@ALIAS``).

Checks every stored byte of a registered version against its manifest and prints the missing,
extra and changed files; exit 1 if there is any, or if the manifest no longer matches its
digest, the version's identity or the audit log. Through the server (read access to the
model) or directly on the database and artifact root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlflow_share.commands import admin_client, call_server


@click.command()
@click.argument("model_uri", metavar="models:/NAME/VERSION")
@click.option("--backend-store-uri", default=None,
              help="Check directly on this database (with --artifacts-destination).")
@click.option("--artifacts-destination", default=None,
              help="The server's checksum+ artifact root (with --backend-store-uri).")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Ed25519 public key that must have signed the manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify(ctx: click.Context, model_uri: str, backend_store_uri: str | None,
           artifacts_destination: str | None, key_path: Path | None, as_json: bool) -> None:
    """Check a registered model version's bytes against its manifest."""
    from mlflow_share.artifacts.manifest import check_signature

    if backend_store_uri or artifacts_destination:
        report, manifest = _direct(model_uri, backend_store_uri, artifacts_destination)
    else:
        client = admin_client(ctx)
        name, version = call_server(client.resolve_model_version, model_uri)
        report = call_server(client.verify_model_version, name, version)
        manifest = call_server(client.model_version_manifest, name, version)
    if key_path is not None:
        signature = manifest.get("signature")
        if not signature or not check_signature(manifest["manifest"], signature, key_path):
            report["ok"] = False
            report.setdefault("problems", []).append(
                "The manifest is not signed by the given key." if signature else
                "The manifest is not signed.")
    _print(report, as_json)
    ctx.exit(0 if report["ok"] else 1)


def _direct(model_uri: str, backend_store_uri: str | None,
            artifacts_destination: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    import sqlalchemy as sa

    from mlflow_share import db
    from mlflow_share.artifacts import registration
    from mlflow_share.artifacts.ledger import Ledger
    from mlflow_share.artifacts.repository import ChecksumArtifactRepository
    from mlflow_share.client import parse_model_uri
    from mlflow_share.errors import MlflowShareError
    from mlflow_share.mlflow_compat import tables as mt

    if not backend_store_uri or not artifacts_destination:
        raise click.UsageError("--backend-store-uri and --artifacts-destination go together.")
    if not artifacts_destination.startswith(("checksum+file://", "checksum+s3://")):
        raise click.UsageError("--artifacts-destination must be a checksum+file:// or "
                               "checksum+s3:// URI.")
    engine = db.get_engine(db.strip_scheme(backend_store_uri))
    name, version, alias = parse_model_uri(model_uri)
    if alias is not None:
        a = mt.registered_model_aliases.c
        with engine.connect() as conn:
            version = conn.execute(sa.select(a.version).where(
                a.name == name, a.alias == alias)).scalar()
        if version is None:
            raise click.ClickException(f"Registered model {name!r} has no alias {alias!r}.")
    repo = ChecksumArtifactRepository(artifacts_destination, ledger=Ledger(engine),
                                      root=artifacts_destination)
    try:
        report = registration.verify_version(engine, repo, name, str(version)).to_dict()
        manifest = registration.find_manifest(engine, name, str(version)).to_dict()
    except MlflowShareError as exc:
        raise click.ClickException(exc.message) from None
    return report, manifest


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    label = f"models:/{report['name']}/{report['version']}"
    if report["ok"] and not report.get("files", report["checked"]):
        click.echo(f"OK: {label}: the version has no files (its manifest lists none); "
                   f"identity {report['identity']}")
        return
    if report["ok"]:
        click.echo(f"OK: {label}: {report['checked']} files match the manifest; "
                   f"identity {report['identity']}")
        return
    click.echo(f"FAILED: {label} (identity {report['identity']})", err=True)
    for path in report.get("missing", []):
        click.echo(f"  missing: {path}", err=True)
    for path in report.get("extra", []):
        click.echo(f"  extra:   {path}", err=True)
    for change in report.get("changed", []):
        click.echo(f"  changed: {change['path']}: expected sha256 {change['expected_sha256']} "
                   f"({change['expected_size']} bytes), actual {change['actual_sha256']} "
                   f"({change['actual_size']} bytes)", err=True)
    for problem in report.get("problems", []):
        click.echo(f"  {problem}", err=True)
