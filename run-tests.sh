#!/usr/bin/env bash
# Runs every test: lint, the Compose file against the Compose specification, the module's wheel installed and
# imported on Python 3.9 and 3.12, the module's tests on Python 3.9 (IRIS 2.4's), and last the whole suite on
# Python 3.11 against the real RabbitMQ and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/services.sh

.venv/bin/ruff check .
.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
bash scripts/check-wheel.sh 3.9 3.12

if [ -x .venv39/bin/python ]; then
  echo "== Python 3.9: module suite"
  .venv39/bin/python -m pytest tests/module -q -p no:cacheprovider
fi

echo "== Python 3.11: full suite"
.venv/bin/python -m pytest tests -q -p no:cacheprovider
