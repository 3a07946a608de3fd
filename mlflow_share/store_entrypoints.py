"""Entry points for the ``audit+<db>`` store schemes; MLflow is imported only when they are called.

MLflow loads entry-point modules while importing ``mlflow.tracking``: importing its SqlAlchemy
stores at that moment is an import cycle, so the builders import them lazily.
"""

from __future__ import annotations

from typing import Any


def tracking_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    from mlflow_share.stores import build_tracking_store

    return build_tracking_store(store_uri, artifact_uri)


def registry_store(store_uri: str, tracking_uri: str | None = None) -> Any:
    from mlflow_share.stores import build_registry_store

    return build_registry_store(store_uri)
