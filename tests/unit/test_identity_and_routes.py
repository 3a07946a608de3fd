"""Pure pieces: credentials, hashing, artifact paths, the route table, the error mapping."""

from __future__ import annotations

import base64

import pytest

from mlflow_share import errors
from mlflow_share.auth.identity import (
    PasswordCache,
    hash_password,
    hash_token,
    new_token,
    parse_authorization,
    verify_password,
)
from mlflow_share.auth.resolvers import validate_artifact_path
from mlflow_share.policy import routes


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("header, expected", [
    (None, None), ("", None), ("Bearer", None), ("Bearer abc", ("bearer", "", "abc")),
    ("bearer  abc ", ("bearer", "", "abc")), (_basic("u:p:q"), ("basic", "u", "p:q")),
    (_basic("nocolon"), None), (_basic(":p"), None), ("Basic %%%", None), ("Digest x", None),
])
def test_parse_authorization(header, expected) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_authorization(header)
    assert (None if parsed is None else (parsed.kind, parsed.username, parsed.secret)) == expected


def test_password_hashing_and_cache() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("x", "garbage") and not verify_password("x", None)
    cache = PasswordCache(ttl=60)
    assert cache.verify("u", "correct horse battery", stored)
    assert cache.verify("u", "correct horse battery", stored)  # from the cache
    assert not cache.verify("u", "wrong", stored)
    assert not cache.verify("u", "correct horse battery", hash_password("other"))


def test_tokens_are_random_and_stored_hashed() -> None:
    token_id, token, token_hash = new_token()
    assert token.startswith(f"msh_{token_id}_") and len(token) > 40
    assert token_hash == hash_token(token) and token not in token_hash
    assert new_token()[1] != token


@pytest.mark.parametrize("path", ["1/abc/artifacts/model/MLmodel", "12/models/m-1/artifacts/x"])
def test_valid_artifact_paths(path: str) -> None:
    assert validate_artifact_path(path) == path.split("/")


@pytest.mark.parametrize("path", ["", "/etc/passwd", "1/../2", "1/./x", "1//x", "..", "1/x\\y",
                                  "1/x\x00", "file:/etc", "1/x;y", "1/x?y", "1/x#y", "1/.."])
def test_invalid_artifact_paths(path: str) -> None:
    with pytest.raises(errors.InvalidInput):
        validate_artifact_path(path)


def test_every_rest_endpoint_of_mlflow_has_a_rule() -> None:
    missing = sorted({key for key in routes.rest_keys().values() if routes.rest_rule(key) is None})
    assert missing == []


def test_unknown_keys_have_no_rule() -> None:
    assert routes.rest_rule("mlflow.SomethingNew") is None
    assert routes.flask_rule("some_new_view") is None
    assert routes.native_rule("new_native", "/api/2.0/new") is None
    assert routes.native_rule("x", "/gateway/anything") == routes.ADMIN


def test_fastapi_paths_convert() -> None:
    assert routes.fastapi_to_werkzeug("/a/{x}/b/{p:path}") == "/a/<x>/b/<path:p>"


@pytest.mark.parametrize("error, status, code", [
    (errors.Unauthenticated("x"), 401, "UNAUTHENTICATED"),
    (errors.PermissionDenied("x"), 403, "PERMISSION_DENIED"),
    (errors.InvalidInput("x"), 400, "INVALID_PARAMETER_VALUE"),
    (errors.InvalidPolicy("x"), 400, "INVALID_PARAMETER_VALUE"),
    (errors.NotFound("x"), 404, "RESOURCE_DOES_NOT_EXIST"),
    (errors.Conflict("x"), 409, "RESOURCE_CONFLICT"),
    (errors.Unavailable("x"), 503, "TEMPORARILY_UNAVAILABLE"),
])
def test_error_mapping(error, status, code) -> None:  # type: ignore[no-untyped-def]
    import json

    got_status, body = errors.envelope(error)
    assert got_status == status
    assert json.loads(body)["error_code"] == code
