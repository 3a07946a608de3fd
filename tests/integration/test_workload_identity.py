"""Workload identity (RFC 8693 token exchange): JWTs signed by a real issuer on loopback (an
HTTP server publishing an OpenID discovery document and a JWKS) are exchanged for
short-lived service-account tokens that the stock MlflowClient uses; every kind of bad token
is refused, keys are fetched only from the trusted issuer, and every exchange is audited."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.conftest import ADMIN_PASSWORD, ShareServer

pytestmark = pytest.mark.integration
SHARE = "/api/2.0/mlflow-share"
TOKEN_URL = f"{SHARE}/oauth/token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AUDIENCE = "mlflow-share"


@dataclass
class Issuer:
    """An OpenID issuer on loopback: discovery document, JWKS, and the private keys."""

    server: ThreadingHTTPServer
    keys: list[Any]
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    def sign(self, claims: dict[str, Any] | None = None, *, key: Any = None, alg: str = "RS256",
             header: dict[str, Any] | None = None, **overrides: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "system:serviceaccount:ml:trainer",
                "iat": now, "nbf": now, "exp": now + 300, **(claims or {})}
        body.update(overrides)
        body = {k: v for k, v in body.items() if v is not None}
        key = key or self.keys[0]
        head = {"alg": alg, "kid": key.kid, **(header or {})}
        return jwt.encode(head, body, key, algorithms=[alg])


def _serve(documents: Any, hits: Counter[str]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits[self.path] += 1
            document = documents().get(self.path)
            body = json.dumps(document).encode() if document is not None else b"{}"
            self.send_response(200 if document is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    keys = [RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12], "use": "sig"})]
    holder: dict[str, Issuer] = {}

    def documents() -> dict[str, Any]:
        found = holder["issuer"]
        return {"/.well-known/openid-configuration": {"issuer": found.url,
                                                      "jwks_uri": f"{found.url}/jwks"},
                "/jwks": found.jwks()}

    hits: Counter[str] = Counter()
    found = Issuer(_serve(documents, hits), keys, hits)
    holder["issuer"] = found
    yield found
    found.server.shutdown()


@pytest.fixture
def account(share_server: ShareServer, unique: str) -> str:
    """A service account, engineer of team-a."""
    name = f"wl-{unique}"
    share_server.admin("POST", "/users", json={"name": name, "service_account": True})
    share_server.admin("POST", "/teams/members", json={"team": "team-a", "user": name,
                                                       "role": "engineer"})
    return name


def _trust(server: ShareServer, issuer: Issuer, account: str, **extra: Any) -> dict[str, Any]:
    rule = {"issuer": issuer.url, "audience": AUDIENCE,
            "subject": "system:serviceaccount:ml:*", "service_account": account, **extra}
    return dict(server.admin("POST", "/trust-rules", json=rule).json()["rule"])


def _exchange(server: ShareServer, subject_token: str, **extra: str) -> requests.Response:
    return requests.post(server.url + TOKEN_URL, timeout=30, data={
        "grant_type": EXCHANGE, "subject_token": subject_token,
        "subject_token_type": JWT_TYPE, **extra})


def _refusal(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and "error_code" not in body, body
    return str(body["error_description"])


def _events(server: ShareServer, **filters: str) -> list[dict[str, Any]]:
    return list(server.admin("GET", "/audit/events", params={"max_results": 1000, **filters})
                .json()["events"])


def _details(event: dict[str, Any]) -> dict[str, Any]:
    details = event.get("details") or {}
    return json.loads(details) if isinstance(details, str) else dict(details)


def _cli(server: ShareServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_trusted_workload_gets_a_short_lived_token_the_stock_client_uses(
        share_server: ShareServer, issuer: Issuer, account: str, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    added = _cli(share_server, "trust", "add", "--issuer", issuer.url, "--audience", AUDIENCE,
                 "--subject", "system:serviceaccount:ml:*", "--service-account", account,
                 "--claim", "cluster=prod-*")
    assert added.returncode == 0, added.stderr
    rule_id = added.stdout.strip().splitlines()[-1]
    listed = _cli(share_server, "trust", "list", "--json")
    rules = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rules[rule_id]["service_account"] == account
    assert rules[rule_id]["claims"] == {"cluster": "prod-*"}

    response = _exchange(share_server, issuer.sign({"cluster": "prod-eu"}))
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    issued = response.json()
    assert issued["token_type"] == "Bearer" and issued["service_account"] == account
    assert issued["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert 3500 <= issued["expires_in"] <= 3600  # MLFLOW_SHARE_WORKLOAD_TOKEN_MINUTES=60
    assert abs(issued["expires_at"] / 1000 - time.time() - 3600) < 120
    listed_tokens = share_server.admin("GET", "/tokens", params={"user": account}).json()["tokens"]
    assert [t["expires_at"] for t in listed_tokens if t["token_id"] == issued["token_id"]] == [
        issued["expires_at"]]

    token = issued["access_token"]
    who = share_server.api("GET", f"{SHARE}/whoami", token=token).json()
    assert who["user"] == account and who["teams"] == {"team-a": "engineer"}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    client = mlflow.MlflowClient(tracking_uri=share_server.url)
    client.create_registered_model(f"wl-model-{unique}", tags={"mlflow-share.team": "team-a"})
    assert client.get_registered_model(f"wl-model-{unique}").name == f"wl-model-{unique}"
    # A workload's token lives an hour: it cannot mint itself a longer-lived one.
    minted = share_server.api("POST", f"{SHARE}/tokens", token=token,
                              json={"expires_in_days": 365})
    assert minted.status_code == 403, minted.text

    # A claim outside the rule's pattern: refused.
    assert _refusal(_exchange(share_server, issuer.sign({"cluster": "staging"}))) \
        == "No trust rule accepts this token."
    granted = [e for e in _events(share_server, action="oauth.token", principal=account)
               if e["decision"] == "allow"]
    assert granted and _details(granted[-1])["issuer"] == issuer.url
    assert _details(granted[-1])["subject"] == "system:serviceaccount:ml:trainer"
    assert _details(granted[-1])["service_account"] == account
    assert _details(granted[-1])["trust_rule"] == rule_id

    removed = _cli(share_server, "trust", "remove", rule_id, "--yes")
    assert removed.returncode == 0, removed.stderr
    assert _refusal(_exchange(share_server, issuer.sign({"cluster": "prod-eu"}))) \
        == "No trust rule accepts this token."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(issuer: Issuer, header: dict[str, Any], secret: bytes | None) -> str:
    """A JWT signed with HMAC-SHA256 under ``secret``, or unsigned without one."""
    import hashlib
    import hmac

    now = int(time.time())
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps({
        "iss": issuer.url, "aud": AUDIENCE, "sub": "system:serviceaccount:ml:trainer",
        "exp": now + 300}).encode())
    if secret is None:
        return signing_input + "."
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(),
                                               hashlib.sha256).digest())


def test_bad_tokens_are_refused_and_audited(share_server: ShareServer, issuer: Issuer,
                                            account: str) -> None:
    _trust(share_server, issuer, account)
    published = issuer.keys[0]
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-published"})
    impostor = RSAKey.generate_key(2048, parameters={"kid": published.kid})  # a published kid
    public_pem = published.as_pem(private=False)
    now = int(time.time())
    cases = {
        "a key the issuer does not publish": issuer.sign(key=stranger),
        "a signature by another key under a published kid": issuer.sign(key=impostor),
        "expired": issuer.sign(exp=now - 600, iat=now - 900, nbf=now - 900),
        "not yet valid": issuer.sign(nbf=now + 600, exp=now + 900),
        "without expiry": issuer.sign(exp=None),
        "another audience": issuer.sign(aud="someone-else"),
        "a subject no rule matches": issuer.sign(sub="system:serviceaccount:other:job"),
        "unsigned (alg none)": _handmade(issuer, {"alg": "none", "typ": "JWT"}, None),
        # The classic confusion: the issuer's public key, which anyone has, as an HMAC secret.
        "HS256 under the issuer's public key": _handmade(
            issuer, {"alg": "HS256", "kid": published.kid}, public_pem),
        "not a JWT": "not.a.jwt",
    }
    refusals = {name: _refusal(_exchange(share_server, token)) for name, token in cases.items()}
    assert refusals["a key the issuer does not publish"] == \
        "The subject token was refused: it is signed with a key the issuer does not publish."
    assert "does not verify" in refusals["a signature by another key under a published kid"]
    assert refusals["expired"].endswith("it has expired.")
    assert refusals["not yet valid"].endswith("it is not valid yet.")
    assert refusals["without expiry"].endswith("it has no expiry.")
    assert refusals["another audience"] == "No trust rule accepts this token."
    assert refusals["a subject no rule matches"] == "No trust rule accepts this token."
    assert refusals["unsigned (alg none)"].endswith("it is unsigned (alg none).")
    assert "HMAC" in refusals["HS256 under the issuer's public key"]
    # Each refusal is one audit event, a denial naming the issuer, the subject and why.
    denied = [e for e in _events(share_server, action="oauth.token")
              if e["decision"] == "deny" and _details(e).get("issuer") == issuer.url]
    reasons = " | ".join(str(_details(e).get("reason", e.get("reason", ""))) for e in denied)
    assert len(denied) >= len(cases) - 1, reasons  # "not a JWT" names no issuer
    assert "another audience" in reasons and "another subject" in reasons
    assert all(_details(e).get("subject") for e in denied)
    # Nothing was issued.
    assert share_server.admin("GET", "/tokens", params={"user": account}).json()["tokens"] == []
    # Other grant types and parameters are refused in OAuth's form.
    wrong = requests.post(share_server.url + TOKEN_URL, data={"grant_type": "password"},
                          timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error"] == "unsupported_grant_type"
    as_json = requests.post(share_server.url + TOKEN_URL, timeout=30, json={
        "grant_type": EXCHANGE, "subject_token": issuer.sign(), "subject_token_type": JWT_TYPE})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    other_type = _exchange(share_server, issuer.sign(),
                           subject_token_type="urn:ietf:params:oauth:token-type:saml2")
    assert other_type.json()["error"] == "invalid_request"


def test_keys_come_only_from_the_trusted_issuer(share_server: ShareServer, issuer: Issuer,
                                                account: str) -> None:
    """A token's own iss (or jku, x5u, jwk headers) never makes the server fetch anything:
    only the trust rule's issuer is asked for keys."""
    _trust(share_server, issuer, account)
    attacker_hits: Counter[str] = Counter()
    attacker_key = RSAKey.generate_key(2048, parameters={"kid": "evil"})
    attacker = _serve(lambda: {"/.well-known/openid-configuration": {
        "issuer": f"http://127.0.0.1:{attacker.server_port}",
        "jwks_uri": f"http://127.0.0.1:{attacker.server_port}/jwks"},
        "/jwks": {"keys": [attacker_key.as_dict(private=False)]}}, attacker_hits)
    try:
        here = f"http://127.0.0.1:{attacker.server_port}"
        unknown_issuer = issuer.sign(key=attacker_key, iss=here)
        assert _refusal(_exchange(share_server, unknown_issuer)) == \
            "No trust rule accepts this token."
        pointed = issuer.sign(key=attacker_key, header={
            "jku": f"{here}/jwks", "x5u": f"{here}/cert",
            "jwk": attacker_key.as_dict(private=False)})
        assert "does not publish" in _refusal(_exchange(share_server, pointed))
        assert sum(attacker_hits.values()) == 0
        assert issuer.hits["/.well-known/openid-configuration"] >= 1
    finally:
        attacker.shutdown()
    # An issuer the admin may not trust: plain http beyond loopback, or everything at once.
    for bad in ({"issuer": "http://idp.example.com"}, {"subject": "*"},
                {"jwks_uri": "file:///etc/passwd"}):
        rule = {"issuer": issuer.url, "audience": AUDIENCE, "subject": "x:*",
                "service_account": account, **bad}
        refused = share_server.api("POST", f"{SHARE}/trust-rules", auth=share_server.admin_auth(),
                                   json=rule)
        assert refused.status_code == 400, refused.text
    person = share_server.api("POST", f"{SHARE}/trust-rules", auth=share_server.admin_auth(),
                              json={"issuer": issuer.url, "audience": AUDIENCE,
                                    "subject": "x:*", "service_account": "alice"})
    assert person.status_code == 404  # a person's account is no service account
    not_admin = share_server.api("GET", f"{SHARE}/trust-rules",
                                 token=share_server.tokens["alice"])
    assert not_admin.status_code == 403


def test_rotated_keys_are_fetched_again_at_a_bounded_rate(
        share_server: ShareServer, issuer: Issuer, account: str) -> None:
    _trust(share_server, issuer, account, claims={"cluster": "prod"})
    first = _exchange(share_server, issuer.sign({"cluster": "prod"}))
    assert first.status_code == 200, first.text
    # The issuer rotates its key: a token under the new kid makes the server read the JWKS again.
    issuer.keys = [ECKey.generate_key("P-256", parameters={"kid": "rotated"})]
    rotated = _exchange(share_server, issuer.sign({"cluster": "prod"}, alg="ES256"))
    assert rotated.status_code == 200, rotated.text
    before = issuer.hits["/jwks"]
    # A flood of made-up key ids: refused, and the issuer is asked at most once more.
    for _ in range(10):
        made_up = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex})
        _refusal(_exchange(share_server, issuer.sign({"cluster": "prod"}, key=made_up)))
    assert issuer.hits["/jwks"] - before <= 1


def test_trust_rules_are_part_of_the_policy_file(share_server: ShareServer, issuer: Issuer,
                                                 account: str) -> None:
    import yaml

    _trust(share_server, issuer, account, claims={"cluster": "prod"})
    exported = share_server.admin("GET", "/policy").json()["policy"]
    document = yaml.safe_load(exported)
    mine = [r for r in document["trust"] if r["issuer"] == issuer.url]
    assert mine == [{"issuer": issuer.url, "audience": AUDIENCE,
                     "subject": "system:serviceaccount:ml:*", "service_account": account,
                     "claims": {"cluster": "prod"}}]

    document["trust"] = [r for r in document["trust"] if r["issuer"] != issuer.url]
    dry = share_server.admin("POST", "/policy", json={"policy": yaml.safe_dump(document),
                                                      "dry_run": True}).json()
    assert dry["changes"] == [f"- trust {issuer.url} aud={AUDIENCE} "
                              f"sub=system:serviceaccount:ml:* cluster=prod -> {account}"]
    share_server.admin("POST", "/policy", json={"policy": yaml.safe_dump(document)})
    assert _refusal(_exchange(share_server, issuer.sign({"cluster": "prod"}))) == \
        "No trust rule accepts this token."

    document["trust"].append({**mine[0], "service_account": "no-such-account"})
    refused = share_server.api("POST", f"{SHARE}/policy", auth=share_server.admin_auth(),
                               json={"policy": yaml.safe_dump(document)})
    assert refused.status_code == 400 and "no-such-account" in refused.json()["message"]
    document["trust"][-1] = mine[0]
    applied = share_server.admin("POST", "/policy", json={"policy": yaml.safe_dump(document)})
    assert applied.json()["changes"][0].startswith(f"+ trust {issuer.url}")
    assert _exchange(share_server, issuer.sign({"cluster": "prod"})).status_code == 200
