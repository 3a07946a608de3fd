"""What a registered version's folder must hold: exactly the files its manifest lists.

Listings and folder downloads under ``models/<model id>/<version>/`` are compared with the
version's manifest, so a listed file missing from storage is reported (DATA_LOSS, naming it)
instead of being silently left out, and so is a file registration did not put there. The
stock client downloads a version by listing its folder and fetching what it listed: without
this, a deleted file would make it deliver an incomplete model without a word.

Before the manifest is stored (the version is still PENDING_REGISTRATION) there is nothing to
compare with, and the folder is listed as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.artifacts import manifest as mf
from mlflow_share.errors import DataLoss

MODELS_DIR = "models"
_NAMED = 20  # files named in one message; the rest are counted


def locate(key: str) -> tuple[str, str] | None:
    """``(version folder, path inside it)`` for a key at or under a registered version's
    folder ``models/<model id>/<version>``, else ``None``."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != MODELS_DIR or not parts[2].isdigit():
        return None
    return "/".join(parts[:3]), "/".join(parts[3:])


@dataclass(frozen=True)
class Expected:
    """The files (relative to the version folder) the manifest of a version lists."""

    label: str
    files: frozenset[str]

    def under(self, inside: str) -> set[str]:
        """The listed files at or under ``inside`` (the whole version for ``""``)."""
        if not inside:
            return set(self.files)
        return {p for p in self.files if p == inside or p.startswith(inside + "/")}


def expected(engine: sa.Engine, folder: str) -> Expected | None:
    """What the manifest stored for the version at ``folder`` lists (``None``: no manifest
    yet); 500 DATA_LOSS if the stored manifest no longer matches its digest."""
    _, model_id, version = folder.split("/")
    t = db.model_manifests
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.c.name, t.c.version, t.c.manifest, t.c.manifest_sha256)
                           .where(t.c.model_id == model_id, t.c.version == int(version),
                                  t.c.location == folder)).first()
    if row is None:
        return None
    label = f"Model {row.name!r} version {row.version}"
    statement = json.loads(row.manifest)
    if mf.statement_digest(statement) != row.manifest_sha256:
        raise DataLoss(f"{label}: its stored manifest does not match its recorded digest.")
    return Expected(label, frozenset(mf.resources(statement)))


def check_listing(expected: Expected, inside: str, entries: Iterable[tuple[str, bool]],
                  stored_as: str) -> None:
    """Compare one folder level (``entries``: name, is a folder) with the manifest;
    ``stored_as`` says what storage holds at ``inside``: ``folder``, ``file`` or ``nothing``.

    Raises:
        DataLoss: a listed file (or a folder of listed files) is missing here, has become a
            folder, or an entry the manifest does not list is stored here.
    """
    if inside in expected.files:  # the path of a listed file: storage must hold that file
        if stored_as != "file":
            _refuse(expected, [inside], [inside + "/"] if stored_as == "folder" else [])
        return
    prefix = inside + "/" if inside else ""
    children: dict[str, bool] = {}  # name -> is a folder, as the manifest implies
    for path in expected.under(inside):
        head, sep, _ = path[len(prefix):].partition("/")
        children[head] = children.get(head, False) or bool(sep)
    actual = dict(entries)
    missing: list[str] = []
    for name, is_dir in sorted(children.items()):
        if actual.get(name) != is_dir:
            missing.extend(sorted(expected.under(prefix + name)))
    extra = [prefix + name + ("/" if is_dir else "") for name, is_dir in sorted(actual.items())
             if children.get(name) != is_dir]
    if missing or extra:
        _refuse(expected, missing, extra)


def check_files(expected: Expected, inside: str, present: Iterable[str]) -> None:
    """Compare every file stored at or under ``inside`` (relative to the version folder)
    with the manifest's files there.

    Raises:
        DataLoss: files are missing or extra.
    """
    wanted, found = expected.under(inside), set(present)
    missing, extra = sorted(wanted - found), sorted(found - wanted)
    if missing or extra:
        _refuse(expected, missing, extra)


def missing_file(expected: Expected, inside: str) -> DataLoss | None:
    """The error for a file the manifest lists but storage does not hold (else ``None``)."""
    if inside not in expected.files:
        return None
    return DataLoss(f"{expected.label}: {inside!r} is listed in its manifest but missing from "
                    "storage.")


def _named(paths: list[str]) -> str:
    shown = ", ".join(paths[:_NAMED])
    return shown + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


def _refuse(expected: Expected, missing: list[str], extra: list[str]) -> None:
    parts = []
    if missing:
        parts.append("missing from storage: " + _named(missing))
    if extra:
        parts.append("stored but not in its manifest: " + _named(extra))
    raise DataLoss(f"{expected.label} does not match its manifest: " + "; ".join(parts) + ".")
