"""Layers point one way: persistence and views never import the decision point (request
state lives in ``request_state``, the blueprints' shared helpers in ``http``), nothing below
the HTTP edge imports a blueprint, the audit mechanism is a leaf that the packages acting
inside a write hook into, and no module imports itself back. Function-level imports count
too."""

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


# What the audit mechanism (its log, table, store hooks and verification) may build on.
AUDIT_CORE = ("audit/log.py", "audit/models.py", "audit/store.py", "audit/verify.py")
BELOW_AUDIT = ("mlflow_share.db", "mlflow_share.errors", "mlflow_share.config",
               "mlflow_share.mlflow_compat", "mlflow_share.request_state", "mlflow_share.audit")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_audit_is_a_leaf() -> None:
    offenders = [f"{name} imports {module}" for name in AUDIT_CORE
                 for module in _imports(PACKAGE / name)
                 if module.startswith("mlflow_share.") and not module.startswith(BELOW_AUDIT)]
    assert offenders == []


def test_every_package_that_acts_inside_a_write_hooks_in() -> None:
    """Registration, protected aliases and ownership run through write hooks; the audited
    store itself knows none of them."""
    from mlflow_share.audit.store import write_hooks
    from mlflow_share.stores import install_write_hooks

    install_write_hooks()
    hooked = {(kind, method): {hook.__module__ for hook in write_hooks(kind, method)}
              for kind, method in (("registry", "create_model_version"),
                                   ("registry", "set_registered_model_alias"),
                                   ("registry", "create_registered_model"),
                                   ("tracking", "create_experiment"))}
    assert hooked == {
        ("registry", "create_model_version"): {"mlflow_share.artifacts.write_hooks"},
        ("registry", "set_registered_model_alias"): {"mlflow_share.governance.write_hooks"},
        ("registry", "create_registered_model"): {"mlflow_share.policy.write_hooks"},
        ("tracking", "create_experiment"): {"mlflow_share.policy.write_hooks"},
    }


def test_nothing_below_the_decision_point_imports_it() -> None:
    offenders = [f"{name} imports {module}" for name in BELOW_THE_DECISION_POINT
                 for module in _imports(PACKAGE / name) if module.startswith(DECISION_POINT)]
    assert offenders == []


def test_the_shared_http_helpers_are_not_a_blueprint() -> None:
    users = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if "mlflow_share.admin.api" in _imports(path) and path.name != "app.py"]
    assert users == []  # blueprints share mlflow_share.http, not the admin API's module
