"""The one authorizer: who is calling, and may they do this action on this resource.

The interceptor's resolvers, mlflow-share's own blueprints and the inference gateway all ask
here, so a decision and the words of its denial are the same on every surface. It knows
teams, roles, grants and owners (through the policy engine) and nothing about HTTP.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mlflow_share.audit.log import note_resource
from mlflow_share.auth.identity import Credentials, Principal, parse_authorization
from mlflow_share.directory import EXPERIMENT, MODEL
from mlflow_share.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from mlflow_share.policy.enforcer import PolicyEngine

if TYPE_CHECKING:
    from mlflow_share.auth.resolvers import MlflowLookups

MISSING_CREDENTIALS = "Authentication required: send a token or username/password."
BAD_CREDENTIALS = "Invalid, expired or revoked credentials."


def denial(principal: Principal, action: str, label: str) -> PermissionDenied:
    """The one wording of a refusal: who, which action, on what (never policy internals)."""
    return PermissionDenied(f"Permission denied: {principal.name!r} may not {action} {label}.")


def model_label(name: str, version: int | None = None) -> str:
    if version is None:
        return f"registered model {name!r}"
    return f"version {version} of registered model {name!r}"


def validate_experiment_id(experiment_id: str) -> None:
    """MLflow's own check, then what its SQL stores need: a decimal integer under 2**63
    (anything else reaches the database and comes back as a 500 naming the driver)."""
    from mlflow_share.mlflow_compat import private

    private("mlflow.utils.validation", "_validate_experiment_id")(experiment_id)
    # MLflow's words for what it cannot parse; stricter than its int(): " 1" and full-width
    # digits (which MLflow reads as experiment 1) are refused rather than decided twice.
    if not (experiment_id.isascii() and experiment_id.isdigit()):
        raise InvalidInput(f"Invalid experiment ID '{experiment_id}'. Experiment ID must be a "
                           "valid integer.")
    if int(experiment_id) >= 2**63:
        raise InvalidInput(f"Invalid experiment ID '{experiment_id}': out of range.")


class Authorizer:
    """Authenticates callers and decides ``principal``, ``action``, resource.

    Every check names its resource in the request's audit event (the first one checked is the
    one the event names) and raises ``PermissionDenied`` (403) or ``NotFound`` (404: the
    resource does not exist, or exists for nobody but admins) instead of returning False.
    """

    def __init__(self, policy: PolicyEngine, lookups: MlflowLookups | None = None) -> None:
        self.policy = policy
        # With MLflow's tables at hand, a resource with no owner team that MLflow does have
        # is a 403 (it exists, for admins); without them every unowned resource is a 404.
        self.lookups = lookups

    # -- who ---------------------------------------------------------------------------------
    def credentials(self, header: str | None) -> Credentials | None:
        return parse_authorization(header)

    def authenticate(self, header: str | None) -> Principal:
        """The caller an ``Authorization`` header names; 401 when absent or not valid."""
        credentials = parse_authorization(header)
        if credentials is None:
            raise Unauthenticated(MISSING_CREDENTIALS)
        return self.authenticate_credentials(credentials)

    def authenticate_credentials(self, credentials: Credentials) -> Principal:
        principal = self.policy.authenticate(credentials, int(time.time() * 1000))
        if principal is None:
            raise Unauthenticated(BAD_CREDENTIALS)
        return principal

    # -- may they ------------------------------------------------------------------------------
    def check(self, principal: Principal, kind: str, resource_id: str | None, owner: str | None,
              action: str, label: str, *, name: str | None = None,
              version: int | None = None) -> None:
        note_resource(kind, resource_id, name, owner)
        if not self.policy.is_allowed(principal, kind, resource_id, owner, action, version):
            raise denial(principal, action, label)

    def check_experiment(self, principal: Principal, experiment_id: str, action: str) -> None:
        validate_experiment_id(experiment_id)
        owner = self.policy.owner_of(EXPERIMENT, experiment_id)
        if owner is None and not principal.is_admin and (
                self.lookups is None or not self.lookups.experiment_exists(experiment_id)):
            raise NotFound(f"No Experiment with id={experiment_id} exists")  # MLflow's words
        self.check(principal, EXPERIMENT, experiment_id, owner, action,
                   f"experiment {experiment_id!r}")

    def check_model(self, principal: Principal, name: str, action: str,
                    version: int | None = None) -> str | None:
        """mlflow-share's ID of registered model ``name`` if ``principal`` may ``action`` it
        (``version``: the version whose bytes are reached; a sharing package's grant covers
        only the versions it pins). 404 for a model nobody but admins could see."""
        model_id = self.policy.model_id(name)
        owner = self.policy.owner_of(MODEL, model_id) if model_id is not None else None
        if model_id is None and not principal.is_admin and (
                self.lookups is None or not self.lookups.model_exists(name)):
            raise NotFound(f"Registered Model with name={name} not found")  # MLflow's words
        self.check(principal, MODEL, model_id, owner, action, model_label(name, version),
                   name=name, version=version)
        return model_id

    def may(self, principal: Principal, kind: str, resource_id: str | None, action: str,
            version: int | None = None, *, owner: str | None = None) -> bool:
        """A yes/no for listings and the UI (no audit note, no exception); ``owner`` when
        the caller has read it already."""
        if owner is None and resource_id is not None:
            owner = self.policy.owner_of(kind, resource_id)
        return self.policy.is_allowed(principal, kind, resource_id, owner, action, version)

    def executing_team(self, principal: Principal, name: str, version: int | None = None) -> str:
        """The team through which ``principal`` may execute ``name`` through the gateway
        (any version, or ``version``); ``admin`` for an org admin with no team grant."""
        model_id = self.policy.model_id(name)
        if model_id is None and not principal.is_admin:
            raise NotFound(f"Registered Model with name={name} not found")  # MLflow's words
        owner = self.policy.owner_of(MODEL, model_id) if model_id else None
        note_resource(MODEL, model_id, name, owner)
        team = self.policy.granting_team(principal, MODEL, model_id, owner, "execute", version)
        if team is not None:
            return team
        if principal.is_admin:
            return "admin"
        raise denial(principal, "execute", model_label(name, version))
