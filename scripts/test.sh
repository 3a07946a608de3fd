#!/usr/bin/env bash
# Install mlflow-share with its test extra into .venv (and Debian's chromium for the browser
# tests), type-check it (mypy) and run the whole suite (unit, integration against real servers
# on 127.0.0.1, PostgreSQL, browser). Exit 5 (nothing collected) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser tests drive Debian's chromium (Playwright never downloads a browser here).
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && \
         $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
fi
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
[ "$status" -eq 0 ] || exit "$status"

# Compatibility, for every older MLflow minor that pyproject.toml allows (the suite above ran
# on the newest), each in its own virtualenv: the oldest with the coverage guards and the
# enforcement and field tests (every route and field MLflow serves is decided); the ones
# between with the coverage guards (tests/unit). Skipped when arguments narrow the run (a developer's `scripts/test.sh -k x`).
compat() {  # compat VENV VERSION TESTS...
  local venv="$1" version="$2"
  shift 2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "mlflow==$version" "mlflow-skinny==$version" \
    -e ".[test]" -e plugins/mlflow-share-client
  set +e
  "$venv/bin/python" -m pytest -p no:cacheprovider -n auto --dist loadfile "$@"
  status=$?
  set -e
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests on MLflow $version: failing" >&2
    exit 1
  fi
  [ "$status" -eq 0 ] || exit "$status"
}
if [ "$#" -eq 0 ]; then
  compat .venv-oldest "3.16.*" tests/unit tests/integration/test_enforcement.py \
    tests/integration/test_fields.py
  compat .venv-3.17 "3.17.*" tests/unit
fi
exit "$status"
