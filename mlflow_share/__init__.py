"""mlflow-share: share MLflow models across teams without giving up control."""

from __future__ import annotations

__version__ = "0.1.0"
