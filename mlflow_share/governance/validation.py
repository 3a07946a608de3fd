"""Automated validation of a sharing package: the report that decides whether it may publish.

For every pinned version:

- ``manifest``: every stored byte matches the version's manifest, and the manifest its
  identity and audit record (``artifacts.registration.verify_version``);
- ``onnx``: the model is an ONNX model (no flavor that needs code of its own) and
  ``model.onnx``, read through the verified path, loads in onnxruntime on the CPU provider;
- ``input_example``: the input example logged with the model runs through the same input
  checks as the gateway, and the outputs match the model signature (name, dtype, shape).

And once for the package, ``metadata``: a description and an owner contact are present, the
semantic version is SemVer 2.0 and names no other version of the model.

Each check is ``{"check", "version", "ok", "problems": [...]}``; the report is ``ok`` when all
are. A problem is a sentence a person can act on.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml

from mlflow_share import db
from mlflow_share.artifacts import registration
from mlflow_share.artifacts.repository import ChecksumArtifactRepository
from mlflow_share.errors import InvalidInput, MlflowShareError, NotFound
from mlflow_share.gateway import inputs
from mlflow_share.gateway.models import MODEL_FILE, check_flavors, new_session, specs
from mlflow_share.governance import versions as semvers

MAX_TEXT = 10_000
_EXAMPLE_FILES = ("serving_input_example.json", "input_example.json")
# MLflow's column types as numpy dtype kinds and item sizes.
_COLUMN_TYPES = {"boolean": ("b", 1), "integer": ("i", 4), "long": ("i", 8), "float": ("f", 4),
                 "double": ("f", 8), "string": ("OUS", None), "binary": ("OS", None)}


def check(name: str, version: int | None, problems: list[str], **extra: Any) -> dict[str, Any]:
    return {"check": name, "version": version, "ok": not problems, "problems": problems, **extra}


def metadata_problems(conn: sa.Connection, *, model_id: str, versions: list[int],
                      semver: str | None, details: dict[str, Any],
                      package_id: str | None = None) -> list[str]:
    problems = []
    for key, label in (("description", "a description"), ("owner_contact", "an owner contact")):
        value = details.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"The package needs {label} ({key}).")
    for key, value in details.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            problems.append(f"{key} is longer than {MAX_TEXT} characters.")
    if semver is None:
        return problems
    try:
        parsed = semvers.parse(semver)
    except InvalidInput as exc:
        return [*problems, exc.message]
    if parsed.build:
        return [*problems, f"Semantic version {semver} has build metadata (+{parsed.build}): "
                           "it does not change precedence, so it cannot tell versions apart."]
    if len(versions) != 1:
        problems.append(f"Semantic version {semver} must name exactly one model version; the "
                        f"package pins {len(versions)}.")
        return problems
    taken = conn.execute(sa.select(db.semvers.c.version).where(
        db.semvers.c.model_id == model_id, db.semvers.c.semver == semver)).scalar()
    if taken is not None and int(taken) != versions[0]:
        problems.append(f"Semantic version {semver} already names version {taken} of this model.")
    named = conn.execute(sa.select(db.semvers.c.semver).where(
        db.semvers.c.model_id == model_id, db.semvers.c.version == versions[0])).scalar()
    if named is not None and named != semver:
        problems.append(f"Version {versions[0]} is already published as {named}.")
    claimed: Any = conn.execute(sa.select(db.packages.c.id, db.packages.c.versions).where(
        db.packages.c.model_id == model_id, db.packages.c.semver == semver,
        db.packages.c.status.in_(("validated", "published")),
        db.packages.c.id != (package_id or ""))).all()
    for other, other_versions in claimed:
        if json.loads(other_versions) != versions:
            problems.append(f"Semantic version {semver} is claimed by package {other} for "
                            f"another version.")
    return problems


def validate_version(engine: sa.Engine, repo: ChecksumArtifactRepository, name: str,
                     version: int) -> list[dict[str, Any]]:
    """The manifest, ONNX and input-example checks of one model version, in one read of its
    files (the model's own files come from the pass that checks them)."""
    manifest, files = _manifest_check(engine, repo, name, version)
    checks = [manifest]
    if not manifest["ok"]:
        not_run = "Not run: the version's bytes do not match its manifest."
        return [*checks, check("onnx", version, [not_run]),
                check("input_example", version, [not_run])]
    try:
        if manifest.get("files") == 0:
            raise InvalidInput("The version has no files (a logged model without artifacts, "
                               "as MLflow 3 allows): nothing for the gateway to run.")
        spec = _mlmodel(files.get("MLmodel"))
        check_flavors(files.get("MLmodel"))
        if "onnx" not in (spec.get("flavors") or {}):
            raise InvalidInput("The model has no onnx flavor: only ONNX models can be shared "
                               "for execution (log it with mlflow.onnx.log_model).")
        if MODEL_FILE not in files:
            raise InvalidInput(f"The model has no {MODEL_FILE}.")
        session = new_session(files[MODEL_FILE], name, version)
    except MlflowShareError as exc:
        checks.append(check("onnx", version, [exc.message]))
        checks.append(check("input_example", version,
                             ["Not run: the model did not load in onnxruntime."]))
        return checks
    checks.append(check("onnx", version, [], inputs=[i.name for i in session.get_inputs()],
                         outputs=[o.name for o in session.get_outputs()]))
    checks.append(check("input_example", version, _example_problems(spec, files, session)))
    return checks


def _manifest_check(engine: sa.Engine, repo: ChecksumArtifactRepository, name: str,
                    version: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest check, and the bytes of the files the other checks read."""
    try:
        report = registration.verify_version(engine, repo, name, str(version),
                                             keep=(MODEL_FILE, "MLmodel", *_EXAMPLE_FILES))
    except NotFound:
        return check("manifest", version, [
            f"Version {version} has no manifest: it was registered on a server without a "
            "checksum+ artifact root, so its bytes cannot be verified."]), {}
    except MlflowShareError as exc:
        return check("manifest", version, [exc.message]), {}
    problems = list(report.problems)
    problems += [f"{path} is missing from storage." for path in report.missing]
    problems += [f"{path} is in storage but not in the manifest." for path in report.extra]
    problems += [f"{c['path']} does not match the manifest (expected SHA-256 "
                 f"{c['expected_sha256']}, stored {c['actual_sha256']})." for c in report.changed]
    return check("manifest", version, problems, identity=report.identity,
                 files=report.checked), report.kept


def _mlmodel(data: bytes | None) -> dict[str, Any]:
    if data is None:
        raise InvalidInput("The model has no MLmodel file.")
    try:
        spec = yaml.safe_load(data)
    except yaml.YAMLError:
        raise InvalidInput("The model's MLmodel file is not valid YAML.") from None
    if not isinstance(spec, dict):
        raise InvalidInput("The model's MLmodel file is not a mapping.")
    return spec


def _example_body(spec: dict[str, Any], files: dict[str, bytes]) -> bytes:
    info = spec.get("saved_input_example_info")
    if not isinstance(info, dict):
        raise InvalidInput("No input example was logged with the model (log it with "
                           "mlflow_share_client.log_shareable(model, name=..., "
                           "input_example=X), which also infers the signature's outputs).")
    serving, example = info.get("serving_input_path"), info.get("artifact_path")
    if isinstance(serving, str) and serving in files:
        return files[serving]
    if not isinstance(example, str) or example not in files:
        raise InvalidInput(f"The input example {serving or example!r} named by MLmodel is not "
                           "among the model's files.")
    data = json.loads(files[example])
    if info.get("type") == "dataframe":
        key = "dataframe_records" if info.get("pandas_orient") == "records" else "dataframe_split"
        return json.dumps({key: data}).encode()
    return json.dumps({"inputs": data}).encode()


def _example_problems(spec: dict[str, Any], files: dict[str, bytes], session: Any) -> list[str]:
    try:
        payload, _ = inputs.parse(_example_body(spec, files), "application/json")
        feed = inputs.feeds(payload, specs(session.get_inputs()))
    except (MlflowShareError, ValueError) as exc:
        message = exc.message if isinstance(exc, MlflowShareError) else str(exc)
        return [f"The input example does not fit the model's inputs: {message}"]
    try:
        values = session.run(None, feed)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are many and plain
        return [f"The input example fails in onnxruntime: {type(exc).__name__}: "
                f"{str(exc)[:300]}"]
    names = [o.name for o in session.get_outputs()]
    return _signature_problems(spec.get("signature"), dict(zip(names, values)), values)


def _signature_problems(signature: Any, by_name: dict[str, Any], values: list[Any]
                        ) -> list[str]:
    if not isinstance(signature, dict) or not signature.get("outputs"):
        return ["The model has no output signature to check the example's outputs against "
                "(log it with mlflow_share_client.log_shareable(model, name=..., "
                "input_example=X), or with signature=infer_signature(X, predictions))."]
    try:
        outputs = json.loads(signature["outputs"])
    except (TypeError, ValueError):
        return ["The model signature's outputs are not valid JSON."]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        return ["The model signature's outputs are not a list of column or tensor specs."]
    problems = []
    for index, out in enumerate(outputs):
        try:
            problems.extend(_output_problems(index, out, by_name, values))
        except (TypeError, ValueError):
            problems.append(f"Signature output #{index} is malformed: {str(out)[:200]}")
    return problems


def _output_problems(index: int, out: dict[str, Any], by_name: dict[str, Any],
                     values: list[Any]) -> list[str]:
    label = out.get("name") or f"#{index}"
    value = by_name.get(out["name"]) if out.get("name") else (
        values[index] if index < len(values) else None)
    if value is None:
        return [f"Signature output {label} is not produced by the model (it produces "
                f"{list(by_name)})."]
    array = np.asarray(value)
    problems = []
    if out.get("type") == "tensor":
        tensor = out.get("tensor-spec") or {}
        want = np.dtype(tensor.get("dtype", "float32"))
        shape = list(tensor.get("shape") or [])
        if array.dtype != want:
            problems.append(f"Signature output {label} is {want}, the model returns "
                            f"{array.dtype}.")
        if len(shape) != array.ndim or any(w not in (-1, g) for w, g in zip(shape, array.shape)):
            problems.append(f"Signature output {label} has shape {shape}, the model returns "
                            f"{list(array.shape)}.")
        return problems
    kinds, size = _COLUMN_TYPES.get(str(out.get("type")), (None, None))
    if kinds is not None and (array.dtype.kind not in kinds or
                              (size is not None and array.dtype.itemsize != size)):
        problems.append(f"Signature output {label} is {out.get('type')}, the model returns "
                        f"{array.dtype}.")
    return problems
