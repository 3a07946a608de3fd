"""Pure parts of device logins and workload identity: user codes, trust rule validation and
matching, subject token refusals before any key is read, and the bounded key fetch rate."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from mlflow_share.auth.device import USER_CODE_ALPHABET, display_code, new_user_code, \
    normalize_user_code
from mlflow_share.auth.trust import TrustRule, checked_url
from mlflow_share.auth.workload import ExchangeRefused, JwksCache, KeysUnavailable, \
    _check_algorithm, _unverified, import_keys
from mlflow_share.errors import InvalidInput

ISSUER = "https://token.actions.githubusercontent.com"


def test_user_codes_are_unambiguous_and_typed_loosely() -> None:
    code = new_user_code()
    assert len(code) == 8 and set(code) <= set(USER_CODE_ALPHABET)
    assert not set(USER_CODE_ALPHABET) & set("AEIOU01")  # no words, no 0/O or 1/I
    assert normalize_user_code(f" {display_code(code).lower()} ") == code


@pytest.mark.parametrize("url,ok", [
    ("https://idp.example.com/realms/ml/", True), ("http://127.0.0.1:8080", True),
    ("http://localhost:9000/issuer", True), ("http://idp.example.com", False),
    ("https://user:pw@idp.example.com", False), ("https://idp.example.com?x=1", False),
    ("file:///etc/passwd", False), ("https://", False), ("https://idp.example.com:port", False),
])
def test_issuer_urls(url: str, ok: bool) -> None:
    if ok:
        assert checked_url("issuer", url) == url.rstrip("/")
    else:
        with pytest.raises(InvalidInput):
            checked_url("issuer", url)


def _rule(**extra: Any) -> TrustRule:
    return TrustRule.checked({"issuer": ISSUER, "audience": "mlflow-share",
                              "subject": "repo:acme/models:ref:refs/heads/*",
                              "service_account": "ci-models", **extra})


@pytest.mark.parametrize("bad", [
    {"subject": "*"}, {"subject": "?**"}, {"audience": ""}, {"service_account": "a b"},
    {"claims": {"sub": "x"}}, {"claims": {"bad name": "x"}}, {"claims": ["x"]},
    {"jwks_uri": "http://keys.example.com/jwks"},
])
def test_trust_rules_refuse_what_would_trust_too_much(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        _rule(**bad)


def test_trust_rules_match_audience_subject_and_claims() -> None:
    rule = _rule(claims={"repository_owner": "acme", "ref_protected": "true"})
    claims = {"iss": ISSUER, "aud": ["other", "mlflow-share"], "sub": "repo:acme/models:ref:"
              "refs/heads/main", "repository_owner": "acme", "ref_protected": True}
    assert rule.mismatches(claims) == []
    assert rule.mismatches({**claims, "aud": "other"}) == ["another audience"]
    assert rule.mismatches({**claims, "sub": "repo:evil/models:ref:refs/heads/main"}) == [
        "another subject"]
    assert rule.mismatches({**claims, "ref_protected": False}) == [
        "claim 'ref_protected' does not match"]
    assert rule.mismatches({**claims, "repository_owner": ["acme"]}) == [
        "claim 'repository_owner' does not match"]  # lists are not matched element-wise


def _token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.c2ln"


@pytest.mark.parametrize("header,why", [
    ({"alg": "none"}, "unsigned"), ({"alg": "NONE"}, "unsigned"), ({}, "unsigned"),
    ({"alg": "HS256"}, "HMAC"), ({"alg": "hs512"}, "HMAC"), ({"alg": "RSA-OAEP"}, "not accepted"),
])
def test_algorithms_that_prove_nothing_are_refused(header: dict[str, Any], why: str) -> None:
    parsed, _claims = _unverified(_token(header, {"iss": ISSUER}))
    with pytest.raises(ExchangeRefused, match=why):
        _check_algorithm(parsed)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d.e", "é.b.c", "x" * 20_000])
def test_what_is_no_compact_jws_is_refused(token: str) -> None:
    with pytest.raises(ExchangeRefused):
        _unverified(token)


def test_jwks_keep_public_signing_keys_only() -> None:
    signing = RSAKey.generate_key(2048, parameters={"kid": "sig"})
    document = {"keys": [signing.as_dict(private=True), {"kty": "oct", "k": "c2VjcmV0"},
                         {**signing.as_dict(private=False), "kid": "enc", "use": "enc"},
                         {"kty": "RSA", "kid": "broken"}]}
    keys = import_keys(document)
    assert [key.kid for key in keys.keys] == ["sig"]
    assert not keys.keys[0].is_private


def test_key_fetches_are_bounded_per_source() -> None:
    fetched: list[str] = []
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/.well-known/jwks"}
        return {"keys": [key.as_dict(private=False)]}

    cache = JwksCache(fetch, burst=3, refill_seconds=3600)
    assert [k.kid for k in cache.keys(ISSUER, None).keys] == ["k1"]
    for _ in range(20):  # unknown key ids asking for a refresh
        cache.keys(ISSUER, None, refresh=True)
    assert len(fetched) == 3 * 2  # burst of three, discovery and JWKS each
    # A source of its own (an explicit JWKS URL) has its own allowance.
    cache.keys(ISSUER, f"{ISSUER}/keys")
    assert fetched[-1] == f"{ISSUER}/keys"

    def down(url: str) -> dict[str, Any]:
        raise KeysUnavailable("down")

    with pytest.raises(KeysUnavailable):
        JwksCache(down).keys(ISSUER, None)
    lying = JwksCache(lambda url: {"issuer": "https://elsewhere.example", "jwks_uri": "x"})
    with pytest.raises(KeysUnavailable, match="another issuer"):
        lying.keys(ISSUER, None)
