#!/usr/bin/env bash
# Runs every test: lint, the whole suite on Python 3.11 (real RabbitMQ and PostgreSQL), the module's
# tests on Python 3.9 (IRIS 2.4's), and the wheel installed and imported on Python 3.9 and 3.12.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/services.sh

.venv/bin/ruff check .
if [ -f docker-compose.yml ]; then
  .venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
fi

echo "== Python 3.11: full suite"
.venv/bin/python -m pytest tests -q -p no:cacheprovider

if [ -x .venv39/bin/python ]; then
  echo "== Python 3.9: module suite"
  .venv39/bin/python -m pytest tests/module -q -p no:cacheprovider
fi

bash scripts/check-wheel.sh 3.9 3.12
