#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, user postgres with trust on loopback) and RabbitMQ
# (127.0.0.1:5672, guest/guest) run, installing them with apt-get (Debian/Ubuntu) where
# missing and starting them where stopped. A server already answering on its port is left
# alone. Used by .ci/run and scripts/demo.sh; needs root (or sudo) only when it has to
# install or start something.
#
#   scripts/services-up.sh            # both
#   SERVICES_UP_QUIET=1 …             # no "already running" lines
set -euo pipefail

say() { printf '[services] %s\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 90); do
    port_open "$port" && return 0
    sleep 1
  done
  say "$what did not open port $port"
  return 1
}

# Root runs commands as they are; anyone else through sudo, which asks for a password.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "need root to run: $*  (no sudo found)"
    return 1
  fi
}

apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "$* is not installed and this system has no apt-get: install it yourself and start it on its default port"
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $* (a minute or two)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL ---------------------------------------------------------------------------
if port_open 5432; then
  [ -n "${SERVICES_UP_QUIET:-}" ] || say "PostgreSQL already answers on 127.0.0.1:5432"
else
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "PostgreSQL is not installed: installing it"
    apt_install postgresql
  fi
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    say "no PostgreSQL cluster found under /etc/postgresql"
    exit 1
  fi
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # sluice connects as postgres over TCP without a password: trust on loopback only.
  if ! as_root grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    say "allowing passwordless (trust) connections from 127.0.0.1 and ::1 in $hba"
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  if port_open 5432; then
    # The package's install script started the cluster before pg_hba.conf was changed.
    say "reloading PostgreSQL $version (pg_hba.conf)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  else
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  wait_port 5432 PostgreSQL
fi

# --- RabbitMQ -----------------------------------------------------------------------------
if port_open 5672; then
  [ -n "${SERVICES_UP_QUIET:-}" ] || say "RabbitMQ already answers on 127.0.0.1:5672"
else
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "RabbitMQ is not installed: installing it"
    apt_install rabbitmq-server
  fi
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  wait_port 5672 RabbitMQ
fi
# The port opens before the broker accepts connections; wait until it answers.
if command -v rabbitmq-diagnostics >/dev/null 2>&1; then
  for _ in $(seq 1 60); do
    as_root rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break
    sleep 1
  done
fi
