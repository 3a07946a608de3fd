"""The fence around MLflow's internals holds on the installed MLflow: every private name
mlflow-share uses is there (an MLflow upgrade that moves one fails here), and nothing
outside ``mlflow_share/mlflow_compat`` imports a private MLflow name."""

from __future__ import annotations

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
