#!/usr/bin/env bash
# Runs every test: lint, types (mypy on the module and the connectors), the import rules (import-linter), the Compose file against the Compose specification, the module's wheel installed and
# imported on Python 3.9 and 3.12, the module's tests on Python 3.9 (IRIS 2.4's), and last the whole suite on
# Python 3.11 against the real RabbitMQ and PostgreSQL. Both module runs include tests/module/test_server_models.py,
# which publishes from IRIS's web workers in subprocesses: eventlet 0.30.2 on .venv39, threads on .venv312.
# Each pytest run has a hard ceiling (timeout) far above its normal time, so a hang fails the run instead of
# holding CI for hours. pytest's own settings are in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/services.sh

.venv/bin/ruff check .
.venv/bin/mypy  # both packages (module and connectors): settings in pyproject.toml
.venv/bin/lint-imports --no-cache  # the layout's import rules: [tool.importlinter] in pyproject.toml
.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
bash scripts/check-wheel.sh 3.9 3.12

if [ -x .venv39/bin/python ]; then
  echo "== Python 3.9: module suite"
  timeout --kill-after=30 900 .venv39/bin/python -m pytest tests/module -q
fi

echo "== Python 3.11: full suite"
timeout --kill-after=30 1800 .venv/bin/python -m pytest tests -q
