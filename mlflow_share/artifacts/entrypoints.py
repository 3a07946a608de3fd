"""``mlflow.artifact_repository`` entry points: MLflow loads them while importing its artifact
registry, so they import mlflow-share's repository only when a repository is built."""

from __future__ import annotations

from typing import Any


def checksum_repository(artifact_uri: str, tracking_uri: str | None = None,
                    registry_uri: str | None = None) -> Any:
    from mlflow_share.artifacts.repository import ChecksumArtifactRepository

    return ChecksumArtifactRepository(artifact_uri, tracking_uri, registry_uri)
