"""Layers point one way: persistence and views never import the decision point (request
state lives in ``request_state``, the blueprints' shared helpers in ``http``), and nothing
below the HTTP edge imports a blueprint. Function-level imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import mlflow_share

PACKAGE = Path(mlflow_share.__file__).parent
DECISION_POINT = ("mlflow_share.auth.interceptor", "mlflow_share.auth.middleware")
# Modules below the decision point: stores, request state, the blueprints and their helpers.
BELOW_THE_DECISION_POINT = (
    "stores.py", "request_state.py", "http.py", "admin/api.py", "audit/api.py",
    "artifacts/api.py", "gateway/api.py", "governance/api.py", "governance/sharing_api.py",
    "health.py", "web/pages.py", "audit/store.py", "audit/log.py", "db.py", "config.py",
)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_nothing_below_the_decision_point_imports_it() -> None:
    offenders = [f"{name} imports {module}" for name in BELOW_THE_DECISION_POINT
                 for module in _imports(PACKAGE / name) if module.startswith(DECISION_POINT)]
    assert offenders == []


def test_the_shared_http_helpers_are_not_a_blueprint() -> None:
    users = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if "mlflow_share.admin.api" in _imports(path) and path.name != "app.py"]
    assert users == []  # blueprints share mlflow_share.http, not the admin API's module
