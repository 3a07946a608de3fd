"""``mlflow-share verify models:/NAME/VERSION`` (or ``models:/NAME@ALIAS``).

Checks every stored byte of a registered version against its manifest and prints the missing,
extra and changed files; exit 1 if there is any, or if the manifest no longer matches its
digest, the version's identity or the audit log. Through the server (read access to the
model) or directly on the database and artifact root. The version's OpenSSF Model Signing
signature is named by its key id; ``--key`` with an ECDSA public key checks that the
signature of that key verifies and signs exactly the manifest's files (an Ed25519 key checks
the older manifest signature, ``MLFLOW_SHARE_MANIFEST_KEY``).
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
              default=None, help="Public key that must have signed the version: ECDSA (its "
              "OpenSSF Model Signing signature) or Ed25519 (the manifest signature).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify(ctx: click.Context, model_uri: str, backend_store_uri: str | None,
           artifacts_destination: str | None, key_path: Path | None, as_json: bool) -> None:
    """Check a registered model version's bytes against its manifest."""
    from mlflow_share.artifacts.manifest import check_signature

    oms_keys = _oms_key(key_path) if key_path is not None else None
    wanted = next(iter(oms_keys.public)) if oms_keys is not None else None
    if backend_store_uri or artifacts_destination:
        report, manifest, bundle = _direct(model_uri, backend_store_uri, artifacts_destination,
                                           wanted)
    else:
        client = admin_client(ctx)
        name, version = call_server(client.resolve_model_version, model_uri)
        report = call_server(client.verify_model_version, name, version)
        manifest = call_server(client.model_version_manifest, name, version)
        bundle = _served_signature(client, name, version, wanted)
    if bundle is not None:
        report["signing_key"] = bundle["key_id"]
    if oms_keys is not None:
        _check_oms(report, manifest, bundle, oms_keys)
    elif key_path is not None:
        signature = manifest.get("signature")
        if not signature or not check_signature(manifest["manifest"], signature, key_path):
            report["ok"] = False
            report.setdefault("problems", []).append(
                "The manifest is not signed by the given key." if signature else
                "The manifest is not signed.")
    _print(report, as_json)
    ctx.exit(0 if report["ok"] else 1)


def _oms_key(key_path: Path) -> Any:
    """The OMS keys of an ECDSA key file (public, or private: its public half); ``None`` for
    any other key (the Ed25519 manifest-signature check takes it)."""
    from mlflow_share.artifacts import oms
    from mlflow_share.errors import InvalidInput

    pem = key_path.read_bytes()
    try:
        if b"PRIVATE KEY" in pem:
            keys = oms.SigningKeys.load(pem, where=str(key_path))
            return oms.SigningKeys.load(None, [k.pem for k in keys.public.values()])
        return oms.SigningKeys.load(None, [pem], where=str(key_path))
    except InvalidInput:
        return None


def _served_signature(client: Any, name: str, version: str, key_id: str | None
                      ) -> dict[str, Any] | None:
    from mlflow_share.client import ShareApiError

    params = {"name": name, "version": version, **({"key_id": key_id} if key_id else {})}
    try:
        return dict(client._call("GET", "/model-versions/signature", params=params))
    except ShareApiError as exc:
        if exc.status == 404:
            return None
        raise


def _check_oms(report: dict[str, Any], manifest: dict[str, Any],
               bundle: dict[str, Any] | None, keys: Any) -> None:
    """The signature of ``keys``' key must verify and sign exactly the manifest's files."""
    from mlflow_share.artifacts import oms
    from mlflow_share.errors import DataLoss

    if bundle is None:
        report["ok"] = False
        report.setdefault("problems", []).append("The version has no signature by the given key.")
        return
    files = {str(r["name"]): str(r["digest"])
             for r in manifest["manifest"]["predicate"]["resources"]}
    label = f"models:/{report['name']}/{report['version']}"
    try:
        oms.check(keys, bundle["bundle"], files, label)
    except DataLoss as exc:
        report["ok"] = False
        report.setdefault("problems", []).append(exc.message)


def _direct(model_uri: str, backend_store_uri: str | None, artifacts_destination: str | None,
            key_id: str | None = None
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    import sqlalchemy as sa

    from mlflow_share import db
    from mlflow_share.artifacts import registration, signatures
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
        record = registration.find_manifest(engine, name, str(version))
    except MlflowShareError as exc:
        raise click.ClickException(exc.message) from None
    stored = signatures.stored(engine, record.model_id, record.version)
    chosen = next((s for s in stored if key_id in (None, s.key_id)), None)
    return report, record.to_dict(), chosen.to_dict() if chosen is not None else None


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
        signed = (f"; signed by key {report['signing_key']}" if report.get("signing_key")
                  else "")
        click.echo(f"OK: {label}: {report['checked']} files match the manifest; "
                   f"identity {report['identity']}{signed}")
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
