#!/usr/bin/env bash
# Runs every test: lint, the whole suite on Python 3.11 (real RabbitMQ and PostgreSQL), the module's
# tests on Python 3.9 (IRIS 2.4's), and a wheel install + import on Python 3.12 (IRIS 2.5's).
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

bash scripts/check-py312.sh
