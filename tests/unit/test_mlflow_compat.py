"""The fence around MLflow's internals holds on the installed MLflow: every private name
mlflow-share uses is there (an MLflow upgrade that moves one fails here), and nothing
outside ``mlflow_share/mlflow_compat`` imports a private MLflow name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import mlflow_share
from mlflow_share import mlflow_compat

_PRIVATE_IMPORT = re.compile(r"from mlflow(?:\.[\w.]+)? import [^\n]*\b_[A-Za-z]\w*(?! as)")


def test_every_private_mlflow_name_is_where_it_was() -> None:
    assert mlflow_compat.missing() == []


def test_private_mlflow_names_are_reached_through_the_fence() -> None:
    package = Path(mlflow_share.__file__).parent
    outside = [f"{path.relative_to(package)}: {match.group(0)}"
               for path in package.rglob("*.py") if "mlflow_compat" not in path.parts
               for match in _PRIVATE_IMPORT.finditer(path.read_text())]
    assert outside == []


def test_an_undeclared_private_name_is_refused() -> None:
    with pytest.raises(KeyError):
        mlflow_compat.private("mlflow.server.handlers", "_something_new")


def test_prompt_sources_are_known_on_every_version() -> None:
    assert {"dummy-source", "prompt-template"} <= mlflow_compat.prompt_source_placeholders()


def test_every_view_mlflow_share_replaces_is_there() -> None:
    from mlflow.server import app

    assert mlflow_compat.missing_views(app) == []


def test_a_moved_view_fails_start_up_or_warns() -> None:
    from flask import Flask

    bare = Flask("bare")
    with pytest.raises(RuntimeError, match="_graphql"):
        mlflow_compat.replace_view(bare, "_graphql", lambda original: original)
    mlflow_compat.replace_view(bare, "serve", lambda original: original)  # the UI: a warning
    assert "serve" not in bare.view_functions


# -- MLflow's tables -----------------------------------------------------------------------------
def test_every_mlflow_table_and_column_is_where_it_was() -> None:
    from mlflow_share.mlflow_compat import tables

    assert tables.missing() == []


def test_no_sql_text_names_an_mlflow_table_outside_the_fence() -> None:
    """MLflow's tables are queried as SQLAlchemy tables from ``mlflow_compat.tables``: no
    string outside the fence reads or writes one as SQL."""
    import ast

    from mlflow_share.mlflow_compat import tables

    names = "|".join(re.escape(name) for name in sorted(tables.DECLARED, key=len, reverse=True))
    sql = re.compile(rf"\b(FROM|JOIN|INTO|UPDATE)\s+({names})\b", re.IGNORECASE)
    package = Path(mlflow_share.__file__).parent
    offenders = [f"{path.relative_to(package)}:{node.lineno}: {node.value[:80]!r}"
                 for path in sorted(package.rglob("*.py")) if "mlflow_compat" not in path.parts
                 for node in ast.walk(ast.parse(path.read_text(), str(path)))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and sql.search(node.value)]
    assert offenders == []


def test_a_table_whose_model_is_gone_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_share.mlflow_compat import tables

    monkeypatch.setitem(tables.DECLARED, "vanished", (
        "mlflow.store.tracking.dbmodels.models", "SqlVanished", ("id",)))
    with pytest.raises(RuntimeError, match="'vanished'.*SqlVanished"):
        tables._load("vanished")
    assert "vanished" in tables.missing()


def _private_attributes(path: Path) -> list[str]:
    """``module._name`` where ``module`` was imported from MLflow (``handlers._get_x``)."""
    tree = ast.parse(path.read_text())
    mlflow_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mlflow":
            mlflow_names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            mlflow_names.update(alias.asname or alias.name.split(".")[0] for alias in node.names
                                if alias.name.split(".")[0] == "mlflow")
    return [f"{path.name}:{node.lineno} {node.value.id}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in mlflow_names and node.attr.startswith("_")
            and not node.attr.startswith("__")]


def test_no_private_mlflow_attribute_is_used_outside_the_fence() -> None:
    package = Path(mlflow_share.__file__).parent
    outside = [found for path in package.rglob("*.py") if "mlflow_compat" not in path.parts
               for found in _private_attributes(path)]
    assert outside == []


def test_every_overridden_private_method_is_there() -> None:
    assert [m for m in mlflow_compat.missing() if m.count(".") and "SqlAlchemyStore" in m
            or "ArtifactRepository" in m] == []
    mlflow_compat.check()  # what the server runs first


def test_every_route_mlflow_share_takes_over_is_there() -> None:
    from mlflow.server import app
    from mlflow.server.fastapi_app import create_fastapi_app

    assert mlflow_compat.missing_routes(create_fastapi_app(app)) == []


def test_a_moved_route_fails_start_up() -> None:
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    async def view() -> None:
        return None

    ours = [APIRoute(path, view, methods=[method])
            for path, method in mlflow_compat.ROUTE_SPLICES["artifacts"][0]]
    bare = FastAPI()
    with pytest.raises(RuntimeError, match="mlflow-artifacts"):
        mlflow_compat.splice_routes(bare, "artifacts", ours)
    assert bare.router.routes[:len(ours)] != ours
