#!/usr/bin/env bash
# Starts the local services the tests talk to (RabbitMQ, PostgreSQL) when they are installed but down.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "services: starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do port_open 5672 && break; sleep 1; done
  fi
  port_open 5672 || { echo "services: RabbitMQ is not reachable on 127.0.0.1:5672" >&2; exit 1; }
fi

if ! port_open 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
fi
exit 0
