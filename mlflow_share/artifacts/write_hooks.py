"""What the artifact layer adds to MLflow's registry writes.

- ``create_model_version``: with a checksum artifact root, a new version's files are copied
  write-once to its own location and its manifest taken (``registration``); MLflow's row and
  the version's PENDING_REGISTRATION state commit in one transaction, the copy follows, and
  READY (or FAILED_REGISTRATION, with the reason) is the last write. A source with no files
  is refused (nothing is created), unless it is a logged model: those may have none.
- the identity tags (``mlflow_share.*`` on a version) are set by registration only: a client
  can neither set nor delete them, nor pass them when it creates or copies a version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from mlflow_share.artifacts import oms, registration
from mlflow_share.artifacts.manifest import RESERVED_TAG_PREFIX
from mlflow_share.audit.store import Proceed, add_write_hook
from mlflow_share.errors import Conflict, InvalidInput, MlflowShareError
from mlflow_share.mlflow_compat import prompt_source_placeholders
from mlflow_share.mlflow_compat import tables as mt

_logger = logging.getLogger(__name__)


def register_files(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
    name, source = arguments["name"], arguments["source"]
    tags = [t for t in arguments.get("tags") or []
            if not str(t.key).startswith(RESERVED_TAG_PREFIX)]
    repo = registration.destination()
    if repo is None or source in prompt_source_placeholders():  # prompts have no files
        return proceed(tags=tags)
    v = mt.model_versions.c
    with store.ManagedSessionMaker(read_only=False) as session:
        created = proceed(tags=tags)
        conn = session.connection()
        version = int(created.version)
        row = conn.execute(sa.select(v.storage_location, v.run_id).where(
            v.name == name, v.version == version)).one()
        folder_of_source = registration.source_folder(conn, source, row.storage_location, repo)
        sources = folder_of_source.files(repo)
        # A logged model may have no files (MLflow 3: externally hosted models, GenAI agent
        # versions); any other source without files is most likely a mistyped path.
        if not sources and registration.logged_model_id(source) is None:
            raise InvalidInput(f"Model version source {source!r} has no files to register.")
        folder = registration.model_key(conn, name)
        location = registration.version_location(folder, version)
        conn.execute(mt.model_versions.update().where(v.name == name, v.version == version)
                     .values(status="PENDING_REGISTRATION",
                             storage_location=registration.PROXY_SCHEME + location))
        params = registration.run_params(conn, row.run_id)
        source_run = row.run_id
    try:
        registered = registration.copy_and_describe(
            repo, name=name, version=version, model_id=folder, source=source,
            folder=folder_of_source, sources=sources, run_id=source_run, params=params,
            keys=oms.server_keys())
        registration.finish(repo, model_id=folder, name=name, version=version,
                            registered=registered)
    except Exception as exc:
        # Readers of the version see the reason: ours name files and digests; anything
        # else could carry paths or SQL, so it goes to the server log only.
        reason = (exc.message if isinstance(exc, MlflowShareError) else
                  "Copying the version's files failed; see the server log.")
        _logger.error("mlflow-share: registering %s version %s failed: %s", name, version, exc)
        try:
            registration.fail(repo, name=name, version=version, reason=reason)
        except Exception as marking:  # noqa: BLE001 - the original error matters more
            _logger.error("mlflow-share: could not mark it FAILED_REGISTRATION: %s", marking)
        raise
    return store.get_model_version(name, str(version))


def refuse_reserved_tag(store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any:
    tag = arguments.get("tag")
    key = tag.key if tag is not None else arguments.get("key")
    if str(key).startswith(RESERVED_TAG_PREFIX):
        raise Conflict(f"Tag {key!r} is set by mlflow-share at registration and cannot change.")
    return proceed()


def install() -> None:
    add_write_hook("registry", "create_model_version", register_files)
    add_write_hook("registry", "set_model_version_tag", refuse_reserved_tag)
    add_write_hook("registry", "delete_model_version_tag", refuse_reserved_tag)
