#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests use are up on 127.0.0.1, installing and starting them if not, and that
# Prometheus and Chromium are installed.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! have pg_ctlcluster || ! have pg_isready; then
  echo "ensure-services: installing PostgreSQL"
  apt_install postgresql
fi
if ! postgres_up; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
fi

if ! have redis-server || ! have redis-cli; then
  echo "ensure-services: installing Redis"
  apt_install redis-server
fi
if ! redis_up; then
  echo "ensure-services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
fi

# The metrics tests scrape Kiln with a real Prometheus and check expositions with promtool.
if ! have prometheus || ! have promtool; then
  echo "ensure-services: installing Prometheus"
  apt_install prometheus
fi

# RabbitMQ, the other broker Kiln supports (tests/e2e/test_rabbitmq.py).
rabbit_up() { (echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! have rabbitmq-server; then
  echo "ensure-services: installing RabbitMQ"
  apt_install rabbitmq-server
fi
if ! rabbit_up; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached
fi

# The web UI's tests drive Debian's headless Chromium with Playwright (never `playwright install`, which downloads one).
if ! have chromium; then
  echo "ensure-services: installing Chromium"
  apt_install chromium
fi

for _ in $(seq 1 120); do  # RabbitMQ takes a while to boot
  if postgres_up && redis_up && rabbit_up; then
    exit 0
  fi
  sleep 0.5
done
echo "ensure-services: PostgreSQL, Redis or RabbitMQ did not come up on 127.0.0.1" >&2
exit 1
