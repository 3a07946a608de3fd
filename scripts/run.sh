#!/usr/bin/env bash
# Install mlflow-share into .venv and start it on the embedded default (SQLite + local
# artifacts under ~/.mlflow-share, or $MLFLOW_SHARE_HOME). Extra arguments go to `mlflow-share server`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e . -e plugins/mlflow-share-client
exec .venv/bin/mlflow-share server "$@"
