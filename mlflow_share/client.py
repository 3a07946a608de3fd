"""``ShareAdminClient``: a typed HTTP client for the ``/api/2.0/mlflow-share/`` admin API.

Registered as the ``mlflow.app.client`` of the ``mlflow-share`` app, and used by the CLI.
Credentials are read like the MLflow client reads them, in its order:
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` when both are set, else
``MLFLOW_TRACKING_TOKEN`` (so the CLI and a notebook act as the same caller). It depends on ``requests`` only
(not on MLflow), so the CLI starts fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import requests

API = "/api/2.0/mlflow-share"


class ShareClientError(Exception):
    """A request the client refuses to send (missing server address, bad arguments)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ShareUnreachable(ShareClientError):
    """The server did not answer (down, wrong address, too slow)."""


class ShareApiError(ShareClientError):
    """An error answered by the server, with its MLflow error code and HTTP status."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.remote_error_code = error_code


class ShareAdminClient:
    def __init__(self, tracking_uri: str | None = None, *, token: str | None = None,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 30.0) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri or not uri.startswith(("http://", "https://")):
            raise ShareClientError(
                "Set the server address with --tracking-uri or MLFLOW_TRACKING_URI (http[s]://...)."
            )
        self.base = uri.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout
        token = token or os.environ.get("MLFLOW_TRACKING_TOKEN")
        username = username or os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if username and password:  # MLflow's rest_utils: basic auth first, then the token
            self.session.auth = (username, password)
        elif token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif (stored := _stored_token(self.base)) is not None:  # `mlflow-share login`'s
            self.session.headers["Authorization"] = f"Bearer {stored}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.session.request(method, f"{self.base}{API}{path}", json=body,
                                            params=params, timeout=self.timeout)
        except requests.Timeout:
            raise ShareUnreachable(
                f"The mlflow-share server at {self.base} did not answer within "
                f"{self.timeout:g} s.") from None
        except requests.ConnectionError:
            raise ShareUnreachable(
                f"Cannot reach an mlflow-share server at {self.base}: start it "
                "(mlflow-share server) or set --tracking-uri / MLFLOW_TRACKING_URI.") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            raise ShareApiError(response.status_code, data.get("error_code", "INTERNAL_ERROR"),
                                data.get("message", response.text[:200]))
        return data if isinstance(data, dict) else {}

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/whoami")

    def create_team(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/teams", {"name": name})

    def list_teams(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/teams")["teams"])

    def add_member(self, team: str, user: str, role: str) -> dict[str, Any]:
        return self._call("POST", "/teams/members", {"team": team, "user": user, "role": role})

    def remove_member(self, team: str, user: str) -> None:
        self._call("DELETE", "/teams/members", {"team": team, "user": user})

    def create_user(self, name: str, password: str | None = None, *,
                    service_account: bool = False, admin: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "service_account": service_account, "admin": admin}
        if password is not None:
            body["password"] = password
        return self._call("POST", "/users", body)

    def list_users(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/users")["users"])

    def disable_user(self, name: str) -> None:
        self._call("POST", "/users/disable", {"name": name})

    def enable_user(self, name: str) -> None:
        self._call("POST", "/users/enable", {"name": name})

    def delete_user(self, name: str) -> None:
        self._call("DELETE", "/users", {"name": name})

    def reset_password(self, name: str, password: str) -> None:
        self._call("POST", "/users/password", {"name": name, "password": password})

    def create_token(self, user: str | None = None, expires_in_days: float | None = None,
                     description: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/tokens", {"user": user, "expires_in_days": expires_in_days,
                                              "description": description})

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/tokens", params={"user": user} if user else None)["tokens"])

    def revoke_token(self, token_id: str) -> None:
        self._call("DELETE", "/tokens", {"token_id": token_id})

    @staticmethod
    def _target(model: str | None, experiment_id: str | None) -> dict[str, Any]:
        if (model is None) == (experiment_id is None):
            raise ShareClientError("Name exactly one of --model or --experiment-id.")
        return {"model": model} if model is not None else {"experiment_id": experiment_id}

    def grant(self, team: str, permission: str, *, model: str | None = None,
              experiment_id: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/grants", {**self._target(model, experiment_id), "team": team,
                                              "permission": permission})

    def revoke(self, team: str, permission: str, *, model: str | None = None,
               experiment_id: str | None = None) -> dict[str, Any]:
        return self._call("DELETE", "/grants", {**self._target(model, experiment_id),
                                                "team": team, "permission": permission})

    def list_grants(self, *, model: str | None = None, experiment_id: str | None = None
                    ) -> dict[str, Any]:
        params = {} if model is None and experiment_id is None else self._target(model, experiment_id)
        return self._call("GET", "/grants", params=params)

    def effective_access(self, model: str | None = None, experiment_id: str | None = None,
                         version: str | None = None) -> dict[str, Any]:
        params = {**self._target(model, experiment_id)}
        if version is not None:
            params["version"] = version
        return self._call("GET", "/access", params=params)

    def explain_access(self, user: str, action: str, model: str | None = None,
                       experiment_id: str | None = None,
                       version: str | None = None) -> dict[str, Any]:
        params = {**self._target(model, experiment_id), "user": user, "action": action}
        if version is not None:
            params["version"] = version
        return self._call("GET", "/access/explain", params=params)

    def export_policy(self) -> str:
        return str(self._call("GET", "/policy")["policy"])

    def import_policy(self, text: str, *, dry_run: bool = False) -> dict[str, Any]:
        return self._call("POST", "/policy", {"policy": text, "dry_run": dry_run})

    # -- workload identity: trust rules ------------------------------------------------------
    def add_trust_rule(self, issuer: str, audience: str, subject: str, service_account: str,
                       *, claims: dict[str, str] | None = None,
                       jwks_uri: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", "/trust-rules", _drop_none({
            "issuer": issuer, "audience": audience, "subject": subject,
            "service_account": service_account, "claims": claims or None,
            "jwks_uri": jwks_uri}))["rule"])

    def list_trust_rules(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/trust-rules")["rules"])

    def remove_trust_rule(self, rule_id: str) -> None:
        self._call("DELETE", "/trust-rules", {"id": rule_id})

    # -- audit -----------------------------------------------------------------------
    def audit_events(self, *, page_token: str | None = None, max_results: int = 1000,
                     **filters: Any) -> dict[str, Any]:
        """One page of audit events; ``filters``: since, until, principal, team, resource, action."""
        params = {k: v for k, v in filters.items() if v is not None}
        params["max_results"] = max_results
        if page_token:
            params["page_token"] = page_token
        return self._call("GET", "/audit/events", params=params)

    def iter_audit_events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            page = self.audit_events(page_token=token, **filters)
            yield from page.get("events", [])
            token = page.get("next_page_token")
            if not token:
                return

    def verify_audit(self, checkpoint_seq: int | None = None) -> dict[str, Any]:
        params = {"checkpoint_seq": checkpoint_seq} if checkpoint_seq else None
        return self._call("GET", "/audit/verify", params=params)

    # -- registered model versions: manifests and integrity --------------------------------
    def resolve_model_version(self, model_uri: str) -> tuple[str, str]:
        """``(name, version)`` of ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
        name, version, alias = parse_model_uri(model_uri)
        if alias is None:
            return name, str(version)
        response = self.session.get(f"{self.base}/api/2.0/mlflow/registered-models/alias",
                                    params={"name": name, "alias": alias}, timeout=self.timeout)
        data = response.json() if response.content else {}
        if response.status_code >= 400:
            raise ShareApiError(response.status_code, data.get("error_code", "INTERNAL_ERROR"),
                                data.get("message", response.text[:200]))
        return name, str(data["model_version"]["version"])

    def model_version_manifest(self, name: str, version: str) -> dict[str, Any]:
        return self._call("GET", "/model-versions/manifest",
                          params={"name": name, "version": version})

    def verify_model_version(self, name: str, version: str) -> dict[str, Any]:
        return self._call("GET", "/model-versions/verify",
                          params={"name": name, "version": version})

    # -- aliases: protection, compare-and-set moves, rollback, history -----------------------
    def protect_alias(self, model: str, alias: str, protect: bool = True,
                      require_approval: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "alias": alias}
        if protect:
            body["require_approval"] = require_approval
        return self._call("POST", "/aliases/protect" if protect else "/aliases/unprotect", body)

    def request_alias_move(self, model: str, alias: str, version: str,
                           reason: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", "/aliases/requests", _drop_none({
            "model": model, "alias": alias, "version": version, "reason": reason}))["request"])

    def approve_alias_move(self, request_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/aliases/requests/{request_id}/approve")["request"])

    def reject_alias_move(self, request_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", f"/aliases/requests/{request_id}/reject",
                               _drop_none({"reason": reason}))["request"])

    def alias_requests(self, model: str, status: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/aliases/requests", params=_drop_none(
            {"model": model, "status": status}))["requests"])

    def move_alias(self, model: str, alias: str, version: str,
                   expected_version: str | None = None,
                   reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/aliases/move", _drop_none({
            "model": model, "alias": alias, "version": version,
            "expected_version": expected_version, "reason": reason}))

    def rollback_alias(self, model: str, alias: str, reason: str,
                       to_version: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/aliases/rollback", _drop_none({
            "model": model, "alias": alias, "reason": reason, "to_version": to_version}))

    def alias_history(self, model: str, alias: str | None = None) -> list[dict[str, Any]]:
        params = _drop_none({"model": model, "alias": alias})
        return list(self._call("GET", "/aliases/history", params=params)["history"])


    # -- sharing packages ----------------------------------------------------------------------
    def create_package(self, model: str, teams: list[tuple[str, str]], *,
                       versions: list[str] | None = None, alias: str | None = None,
                       semver: str | None = None, description: str | None = None,
                       intended_use: str | None = None, limitations: str | None = None,
                       owner_contact: str | None = None,
                       expires_at: int | None = None) -> dict[str, Any]:
        """Create and validate a package; its ``status`` is ``validated`` or ``rejected``."""
        return dict(self._call("POST", "/packages", _drop_none({
            "model": model, "versions": versions, "alias": alias, "semver": semver,
            "teams": [{"team": t, "permission": p} for t, p in teams],
            "description": description, "intended_use": intended_use,
            "limitations": limitations, "owner_contact": owner_contact,
            "expires_at": expires_at}))["package"])

    def get_package(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/packages/{package_id}")["package"])

    def list_packages(self, model: str | None = None, status: str | None = None
                      ) -> list[dict[str, Any]]:
        params = _drop_none({"model": model, "status": status})
        return list(self._call("GET", "/packages", params=params)["packages"])

    def validate_package(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/packages/{package_id}/validate")["package"])

    def publish_package(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/packages/{package_id}/publish")["package"])

    def revoke_package(self, package_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/packages/{package_id}/revoke")["package"])

    # -- SCIM provisioning tokens (org admins) ----------------------------------------------
    def create_scim_token(self, description: str | None = None,
                          expires_in_days: float | None = None) -> dict[str, Any]:
        return dict(self._call("POST", "/scim/tokens", {"description": description,
                                                        "expires_in_days": expires_in_days}))

    def list_scim_tokens(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/scim/tokens")["tokens"])

    def revoke_scim_token(self, token_id: str) -> None:
        self._call("DELETE", "/scim/tokens", {"token_id": token_id})

    def edit_package(self, package_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change an unpublished package (what create takes; ``None`` clears a field); it
        is validated again."""
        return dict(self._call("PATCH", f"/packages/{package_id}", changes)["package"])

    def withdraw_package(self, package_id: str) -> None:
        """Delete an unpublished package (the audit log keeps it)."""
        self._call("DELETE", f"/packages/{package_id}")

    # -- semantic versions, lineage, discovery -------------------------------------------------
    def list_semvers(self, model: str) -> list[dict[str, Any]]:
        return list(self._call("GET", "/semver", params={"model": model})["versions"])

    def resolve_semver(self, model: str, version_range: str) -> dict[str, Any]:
        return self._call("GET", "/semver/resolve", params={"model": model,
                                                            "range": version_range})

    def lineage(self, model_uri: str) -> dict[str, Any]:
        return self._call("GET", "/lineage", params={"uri": model_uri})

    def diff(self, a: str, b: str) -> dict[str, Any]:
        return self._call("GET", "/diff", params={"a": a, "b": b})

    def search_models(self, *, owner_team: str | None = None, tag: str | None = None,
                      semver: str | None = None, metric: str | None = None,
                      status: str | None = None) -> list[dict[str, Any]]:
        params = _drop_none({"owner_team": owner_team, "tag": tag, "semver": semver,
                             "metric": metric, "status": status})
        return list(self._call("GET", "/models/search", params=params)["models"])

    # -- notifications -------------------------------------------------------------------------
    def subscribe(self, model: str, url: str, team: str | None = None) -> dict[str, Any]:
        """Returns the subscription with its signing ``secret`` (shown only here)."""
        return dict(self._call("POST", "/subscriptions", _drop_none(
            {"model": model, "url": url, "team": team}))["subscription"])

    def list_subscriptions(self, model: str) -> list[dict[str, Any]]:
        return list(self._call("GET", "/subscriptions", params={"model": model})[
            "subscriptions"])

    def unsubscribe(self, model: str, subscription_id: str) -> None:
        self._call("DELETE", "/subscriptions", {"model": model, "id": subscription_id})

    def deliveries(self, model: str) -> list[dict[str, Any]]:
        return list(self._call("GET", "/subscriptions/deliveries", params={"model": model})[
            "deliveries"])

def _stored_token(base: str) -> str | None:
    """The token ``mlflow-share login`` stored for ``base`` (mlflow-share-client's private
    file, renewed when due), or None: no file entry, or the client package not installed."""
    try:
        from mlflow_share_client.auth import stored_token
    except ImportError:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return stored_token(base)
    except MlflowException as exc:  # a file others can read, a failed renewal
        raise ShareClientError(exc.message) from None


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of a registered model version URI."""
    import re

    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))/?", model_uri)
    if match is None:
        raise ShareClientError(
            f"{model_uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS.")
    return match.group(1), match.group(2), match.group(3)

