#!/usr/bin/env bash
# Install mlflow-share with its test extra into .venv, type-check it (mypy) and run the whole
# suite (unit, integration against real servers on 127.0.0.1, PostgreSQL). Exit 5 (nothing collected) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]" -e plugins/mlflow-share-client
.venv/bin/python -m mypy mlflow_share
set +e
# Two processes (one per core here), each test file whole on one of them: most of the time
# goes to servers starting and answering, which overlaps well.
.venv/bin/python -m pytest -n auto --dist loadfile tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
