"""``mlflow-share adopt artifacts``: record digests of the artifacts stored before mlflow-share.

Walks the server's artifact root and the declared registration source roots (or the roots
given with ``--root``) and records each file's size and SHA-256 as *trusted on adoption*
(``artifacts.adoption``). From then on a download or a registration checks those files as it
checks files uploaded through mlflow-share. ``--dry-run`` only counts. Running it again skips
what is recorded, so an interrupted pass continues where it stopped.

    mlflow-share adopt artifacts --backend-store-uri sqlite:///mlflow.db \\
        --artifacts-destination checksum+file:///srv/mlartifacts --dry-run
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlflow_share import config

if TYPE_CHECKING:  # imported when run: `mlflow-share --help` does not load MLflow
    from mlflow_share.artifacts.adoption import Adoption, Tally
    from mlflow_share.artifacts.roots import Root


def _default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@click.command("artifacts")
@click.option("--dry-run", is_flag=True,
              help="Count the files and bytes to adopt; record nothing.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"The embedded default's folder (${config.HOME_ENV}, else ~/.mlflow-share).")
@click.option("--backend-store-uri", default=None,
              help="The server's SQL URI (default: SQLite in --home).")
@click.option("--artifacts-destination", default=None,
              help="The server's artifact root, as given to the server "
                   "(default: checksum+file://<home>/artifacts).")
@click.option("--root", "extra_roots", multiple=True, metavar="URI",
              help="Another root to adopt (file:///path or s3://bucket/prefix); repeatable. "
                   "Default: the roots in MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS.")
@click.option("--jobs", type=click.IntRange(1, 64), default=_default_jobs(), show_default=True,
              help="Files hashed at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON (for scripts).")
def artifacts_command(dry_run: bool, home: Path | None, backend_store_uri: str | None,
                      artifacts_destination: str | None, extra_roots: tuple[str, ...],
                      jobs: int, as_json: bool) -> None:
    """Record the size and SHA-256 of every stored file that has none (trusted on adoption)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        _run(dry_run, home, backend_store_uri, artifacts_destination, extra_roots, jobs,
             as_json)
    except MlflowException as exc:
        raise click.ClickException(exc.message.strip().splitlines()[0]) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()
        raise click.ClickException(f"The database refused: {(reason or [''])[0]}") from None
    except _s3_errors() as exc:
        raise click.ClickException(f"S3: {(str(exc).splitlines() or [''])[0]}") from None


def _s3_errors() -> tuple[type[BaseException], ...]:
    from mlflow_share.artifacts.storage import storage_errors

    return tuple(error for error in storage_errors() if error is not OSError)


def _run(dry_run: bool, home: Path | None, backend_store_uri: str | None,
         artifacts_destination: str | None, extra_roots: tuple[str, ...], jobs: int,
         as_json: bool) -> None:
    from mlflow_share.artifacts import roots
    from mlflow_share.artifacts.adoption import Tally

    config.options()  # a bad MLFLOW_SHARE_* value stops here, in one line
    home = (home or config.default_home()).expanduser().resolve()
    uri = config.checked_backend_uri(backend_store_uri or f"sqlite:///{home / 'mlflow.db'}")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise click.ClickException(f"No database at {uri}: pass the server's "
                                   "--backend-store-uri.")
    server = roots.server_root(artifacts_destination or f"checksum+file://{home / 'artifacts'}")
    extras = [roots.parse(raw) for raw in extra_roots] if extra_roots else list(roots.declared())
    for extra in extras:
        if extra.overlaps(server):
            raise click.UsageError(
                f"--root {extra.uri} overlaps the server's artifact root {server.uri}: the "
                "server's root is adopted as --artifacts-destination.")
    every = [server, *dict.fromkeys(extras)]
    adoption = _adoption(uri, dry_run, jobs)

    # Counted first (a listing, no reads): the dry run's answer, and the progress bar's end.
    surveys: list[tuple[Root, Tally]] = []
    for root in every:
        if not as_json:
            click.echo(f"Listing {_label(root)} ...", err=True)
        surveyed = adoption.survey(root)
        surveys.append((root, surveyed))
        if not as_json:
            click.echo(f"  to adopt: {surveyed.files} files ({_size(surveyed.bytes)}); "
                       f"already recorded: {surveyed.skipped}; refused: {surveyed.refused}; "
                       f"unreadable: {surveyed.failed}", err=True)
    if dry_run:
        _report(_sum(surveys), surveys, dry_run=True, as_json=as_json)
        return

    per_root: list[tuple[Root, Tally]] = []
    try:
        with click.progressbar(length=max(_sum(surveys).bytes, 1), label="Hashing",
                               file=sys.stderr, show_eta=True, show_percent=True) as bar:
            for root in every:
                per_root.append((root, Tally()))
                adoption.adopt(root, bar.update, per_root[-1][1])
    except KeyboardInterrupt:
        done = _sum(per_root)
        click.echo(f"Interrupted: {done.files} files ({_size(done.bytes)}) recorded so far; "
                   "run the command again to continue.", err=True)
        raise click.exceptions.Exit(130) from None
    _report(_sum(per_root), per_root, dry_run=False, as_json=as_json)


def _sum(tallies: list[tuple[Root, Tally]]) -> Tally:
    from mlflow_share.artifacts.adoption import Tally

    total = Tally()
    for _, tally in tallies:
        total.add(tally)
    return total


def _adoption(uri: str, dry_run: bool, jobs: int) -> Adoption:
    import sqlalchemy as sa

    from mlflow_share import db
    from mlflow_share.artifacts.adoption import Adoption
    from mlflow_share.artifacts.ledger import Ledger

    if not dry_run:
        db.ensure_schema(uri)
        return Adoption(Ledger(db.get_engine(uri)), jobs=jobs)
    engine = db.get_engine(uri)
    if db.artifact_digests.name not in sa.inspect(engine).get_table_names():
        return Adoption(None, jobs=jobs, recorded=lambda paths: set())  # nothing recorded yet
    return Adoption(Ledger(engine), jobs=jobs)


def _report(total: Tally, roots: list[tuple[Root, Tally]], *, dry_run: bool,
            as_json: bool) -> None:
    """The final count (stdout), each problem (stderr); exit 1 if a file could not be read
    (a refused file stays refused: it is reported, and the pass is complete without it)."""
    if as_json:
        click.echo(json.dumps({
            "dry_run": dry_run, "files": total.files, "bytes": total.bytes,
            "skipped": total.skipped, "skipped_bytes": total.skipped_bytes,
            "failed": total.failed, "refused": total.refused, "problems": total.problems,
            "roots": [{"root": root.uri, "own": root.own, "files": tally.files,
                       "bytes": tally.bytes, "skipped": tally.skipped,
                       "failed": tally.failed, "refused": tally.refused}
                      for root, tally in roots]}, sort_keys=True))
    else:
        for problem in total.problems:
            click.echo(f"  {problem}", err=True)
        unlisted = total.failed + total.refused - len(total.problems)
        if unlisted > 0:
            click.echo(f"  ... and {unlisted} more", err=True)
        verb = "To adopt" if dry_run else "Adopted"
        click.echo(f"{verb}: {total.files} files ({_size(total.bytes)}); skipped "
                   f"{total.skipped} already recorded ({_size(total.skipped_bytes)}); "
                   f"failed {total.failed}; refused {total.refused}.")
    if total.failed and not dry_run:
        raise click.ClickException(f"{total.failed} files could not be read (listed above); "
                                   "run the command again to adopt them.")


def _label(root: Root) -> str:
    return f"{root.uri} (server root)" if root.own else root.uri


def _size(count: int) -> str:
    amount = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{int(amount)} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{count} bytes"


if __name__ == "__main__":  # python -m mlflow_share.adopt.artifacts, outside the CLI group
    artifacts_command(prog_name="mlflow-share adopt artifacts")
