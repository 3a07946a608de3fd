"""The proxy's artifact GET and PUT with digests: one pass over the bytes, both servers.

MLflow's own handlers stream a downloaded file straight from disk (``get_local_path``) and
never see a client's declared digest. These replace them, under uvicorn (FastAPI routes
placed ahead of MLflow's, same names, so the route table applies) and under gunicorn or
waitress (the Flask view functions), when the artifact root is a ``checksum+`` repository:

- GET checks size before the response starts and SHA-256 while it streams; files up to
  ``WHOLE_FILE_LIMIT`` are read and checked before anything is sent, so a mismatch is a
  ``DATA_LOSS`` error naming the file with expected and actual digest. A larger file whose
  bytes turn out wrong is cut off before its last chunk (the client sees a short body, never
  a complete wrong file) and the mismatch is appended to the audit log. Every response
  carries ``Content-Digest: sha-256=:…:`` (RFC 9530), or ``X-MLflow-Share-Integrity:
  unverified`` for a file stored before mlflow-share recorded digests.
- PUT honours ``Content-Digest: sha-256=:…:``: a mismatch is 400 and nothing is stored.
"""


import base64
import binascii
import json
import logging
import posixpath
import re
from collections.abc import Iterator
from typing import Any

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from mlflow_share.artifacts.repository import ChecksumArtifactRepository, Verified
from mlflow_share.audit.log import AUDIT_CONTEXT, AuditAppender
from mlflow_share.errors import AuditUnavailable, DataLoss, InvalidInput, Unavailable

_logger = logging.getLogger(__name__)

WHOLE_FILE_LIMIT = 8 * 1024 * 1024
INTEGRITY_HEADER = "X-MLflow-Share-Integrity"
_DIGEST_ITEM = re.compile(r"\s*([a-z0-9-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*")

_appender: AuditAppender | None = None


def parse_content_digest(header: str | None) -> str | None:
    """The hex SHA-256 declared by a ``Content-Digest`` header, if it declares one (400 if bad)."""
    if not header:
        return None
    found = None
    for item in header.split(","):
        match = _DIGEST_ITEM.fullmatch(item)
        if match is None:
            raise InvalidInput("Malformed Content-Digest header (RFC 9530: sha-256=:<base64>:).")
        if match.group(1) == "sha-256":
            try:
                raw = base64.b64decode(match.group(2), validate=True)
            except binascii.Error:
                raise InvalidInput("Malformed sha-256 value in the Content-Digest header.") from None
            if len(raw) != 32:
                raise InvalidInput("The Content-Digest sha-256 value must be 32 bytes.")
            found = raw.hex()
    return found


def digest_header(sha256_hex: str) -> str:
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode() + ":"


def _headers(opened: Verified, artifact_path: str) -> dict[str, str]:
    from mlflow_share.mlflow_compat import private

    _content_disposition_attachment = private("mlflow.server.handlers",
                                              "_content_disposition_attachment")
    _guess_mime_type = private("mlflow.utils.mime_type_utils", "_guess_mime_type")

    headers = {
        "Content-Type": _guess_mime_type(artifact_path),
        "Content-Disposition": _content_disposition_attachment(posixpath.basename(artifact_path)),
        "X-Content-Type-Options": "nosniff",
        "Content-Length": str(opened.size),
    }
    if opened.digest is not None:
        headers["Content-Digest"] = digest_header(opened.digest.sha256)
        headers[INTEGRITY_HEADER] = "verified"
    else:
        headers[INTEGRITY_HEADER] = "unverified"
    return headers


def _note(key: str, what: str) -> None:
    ctx = AUDIT_CONTEXT.get()
    if ctx is not None:
        ctx.extra["integrity"] = what
        ctx.extra.setdefault("artifact_path", key)


def _cut_off_on_mismatch(repo: ChecksumArtifactRepository, opened: Verified) -> Iterator[bytes]:
    """Stream a large file; on a mismatch, audit it and stop before the last chunk."""
    ctx = AUDIT_CONTEXT.get()
    try:
        yield from repo.iter_verified(opened)
    except DataLoss as exc:
        _logger.error("mlflow-share: %s", exc.message)
        if ctx is not None and _appender is not None:
            row = ctx.event(status=500, action="artifact.data_loss")
            row["decision"] = "fail"
            row["details"] = json.dumps({"amends": ctx.recorded_seq, "reason": exc.message},
                                        separators=(",", ":"))
            try:
                _appender.append(row)
            except AuditUnavailable:
                pass
        raise


def _open(repo: ChecksumArtifactRepository, artifact_path: str
          ) -> tuple[Verified, bytes | None]:
    """Open and, for a small file, read and check it whole; errors before any byte is sent."""
    try:
        opened = repo.open_verified(artifact_path)
        if opened.digest is not None:
            _note(opened.key, "checked")
        if opened.size <= WHOLE_FILE_LIMIT:
            return opened, b"".join(repo.iter_verified(opened))
        return opened, None
    except DataLoss as exc:
        _note(repo.key(artifact_path), exc.message)
        raise


def _checked_path(artifact_path: str) -> str:
    from mlflow_share.mlflow_compat import private

    _get_workspace_scoped_repo_path_if_enabled = private(
        "mlflow.server.handlers", "_get_workspace_scoped_repo_path_if_enabled")
    from mlflow.utils.uri import validate_path_is_safe

    return str(_get_workspace_scoped_repo_path_if_enabled(validate_path_is_safe(artifact_path)))


def _upload_target(repo: ChecksumArtifactRepository, artifact_path: str,
                   content_digest: str | None) -> tuple[str, str | None]:
    """The ledger key a PUT writes and the SHA-256 its client declared (400 if bad)."""
    declared = parse_content_digest(content_digest)
    head, tail = posixpath.split(_checked_path(artifact_path))
    if not tail:
        raise InvalidInput("Artifact path must include a file name (cannot end with '/').")
    return repo.file_key(tail, head or None), declared


def _as_mlflow(exc: Exception) -> MlflowException:
    """The database out of reach is a 503 to retry, in MLflow's envelope."""
    if isinstance(exc, MlflowException):
        return exc
    _logger.warning("mlflow-share: artifact request without its database: %s", exc)
    return Unavailable("The server cannot reach its database; try again shortly.")


def _error_json(exc: MlflowException) -> tuple[int, dict[str, Any]]:
    return exc.get_http_status_code(), json.loads(exc.serialize_as_json())


# -- uvicorn (FastAPI) -------------------------------------------------------------------------
def install_fastapi(fastapi_app: Any) -> None:
    """Put the checked GET and PUT ahead of MLflow's native artifact routes."""
    import asyncio

    from fastapi import Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from fastapi.routing import APIRoute
    from mlflow.server import artifact_router as stock

    from mlflow_share.mlflow_compat import private, splice_routes

    get_repo = private("mlflow.server.artifact_router", "_get_artifact_repo")
    proxied = private("mlflow.server.artifact_router", "_is_serving_proxied_artifacts")

    async def download_artifact(artifact_path: str, request: Request) -> Any:
        repo = get_repo() if proxied() else None
        if not isinstance(repo, ChecksumArtifactRepository):
            return await stock.download_artifact(artifact_path)
        try:
            path = _checked_path(artifact_path)
            opened, body = await asyncio.to_thread(_open, repo, path)
        except (MlflowException, SQLAlchemyError) as exc:
            status, content = _error_json(_as_mlflow(exc))
            return JSONResponse(status_code=status, content=content)
        headers = _headers(opened, path)
        if body is not None:
            return Response(content=body, headers=headers)
        return StreamingResponse(_cut_off_on_mismatch(repo, opened), headers=headers)

    async def upload_artifact(artifact_path: str, request: Request) -> Any:
        repo = get_repo() if proxied() else None
        if not isinstance(repo, ChecksumArtifactRepository):
            return await stock.upload_artifact(artifact_path, request)
        try:
            key, declared = _upload_target(repo, artifact_path,
                                           request.headers.get("content-digest"))
            await repo.write_async_stream(key, request.stream(), declared)
        except (MlflowException, SQLAlchemyError) as exc:
            status, content = _error_json(_as_mlflow(exc))
            return JSONResponse(status_code=status, content=content)
        return Response(status_code=200)

    routes = []
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        path = prefix + "/mlflow-artifacts/artifacts/{artifact_path:path}"
        routes.append(APIRoute(path, download_artifact, methods=["GET"], name="download_artifact"))
        routes.append(APIRoute(path, upload_artifact, methods=["PUT"], name="upload_artifact"))
    splice_routes(fastapi_app, "artifacts", routes)


# -- gunicorn / waitress (Flask) -----------------------------------------------------------------
def install_flask(flask_app: Any) -> None:
    """Replace MLflow's Flask artifact GET and PUT views by the checked ones."""
    from flask import Response, request

    from mlflow_share.mlflow_compat import private

    stock_download = flask_app.view_functions.get("_download_artifact")
    stock_upload = flask_app.view_functions.get("_upload_artifact")

    def _repo() -> ChecksumArtifactRepository | None:
        from mlflow.server import SERVE_ARTIFACTS_ENV_VAR
        import os

        if os.environ.get(SERVE_ARTIFACTS_ENV_VAR, "false") != "true":
            return None
        repo = private("mlflow.server.handlers", "_get_artifact_repo_mlflow_artifacts")()
        return repo if isinstance(repo, ChecksumArtifactRepository) else None

    def _json_error(exc: MlflowException) -> Any:
        return Response(exc.serialize_as_json(), status=exc.get_http_status_code(),
                        mimetype="application/json")

    def download(artifact_path: str) -> Any:
        repo = _repo()
        if repo is None:
            return stock_download(artifact_path)
        try:
            path = _checked_path(artifact_path)
            opened, body = _open(repo, path)
        except MlflowException as exc:
            return _json_error(exc)
        headers = _headers(opened, path)
        if body is not None:
            return Response(body, headers=headers)
        return Response(_cut_off_on_mismatch(repo, opened), headers=headers,
                        direct_passthrough=True)

    def upload(artifact_path: str) -> Any:
        repo = _repo()
        if repo is None:
            return stock_upload(artifact_path)
        try:
            key, declared = _upload_target(repo, artifact_path,
                                           request.headers.get("Content-Digest"))
            repo.write_stream(key, request.stream.read, declared)
        except MlflowException as exc:
            return _json_error(exc)
        return Response("{}", mimetype="application/json")

    from mlflow_share.mlflow_compat import replace_view

    replace_view(flask_app, "_download_artifact", lambda _original: download)
    replace_view(flask_app, "_upload_artifact", lambda _original: upload)


def install(flask_app: Any, fastapi_app: Any | None, appender: AuditAppender) -> None:
    global _appender
    _appender = appender
    if "mlflow_share_checked_artifacts" not in flask_app.config:
        install_flask(flask_app)
        flask_app.config["mlflow_share_checked_artifacts"] = True
    if fastapi_app is not None:
        install_fastapi(fastapi_app)
