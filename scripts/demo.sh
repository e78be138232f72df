#!/usr/bin/env bash
# The main job end to end: builds sluice, starts the sandbox, the planner, two fetchers and
# the loader against the RabbitMQ and PostgreSQL at their default local addresses, ingests
# the real Sailthru sample export and a generated one, extracts Klaviyo events and profiles
# from the sandbox's emulation of Klaviyo's API and commercetools orders, customers,
# categories and products from its emulation of commercetools' API, syncs the What Drops
# Now catalogue from its emulation of that API (the real limit of 5 concurrent requests,
# 20 ms per request) and prints what landed and the retailer analysis.
#
# On a bare Debian/Ubuntu machine it first installs and starts PostgreSQL and RabbitMQ
# (scripts/services-up.sh, with apt-get; root or sudo) when nothing answers on their ports,
# saying so before it does. It needs a Rust toolchain (https://rustup.rs).
#
#   SLUICE_DEMO_MESSAGES   size of the generated export (message_blast records), default 200000
#   SLUICE_DEMO_WDN_PRODUCTS  products of the generated WDN catalogue, default 5000
#   SLUICE_DEMO_PROFILE    cargo profile: release (default) or debug
#   SLUICE__…              any sluice setting (database URL, AMQP URL, prefix, …)
set -euo pipefail
cd "$(dirname "$0")/.."

messages=${SLUICE_DEMO_MESSAGES:-200000}
wdn_products=${SLUICE_DEMO_WDN_PRODUCTS:-5000}
profile=${SLUICE_DEMO_PROFILE:-release}
sandbox_port=${SLUICE_DEMO_SANDBOX_PORT:-9200}
work=target/demo
mkdir -p "$work"

steps=9
step=0
demo_started=$(date +%s)
demo_started_utc=$(date -u +%Y-%m-%dT%H:%M:%S)
# A numbered step with the time since the start, so a person can follow where it is.
say() {
  step=$((step + 1))
  printf '\n== [%d/%d, %ds] %s\n' "$step" "$steps" "$(( $(date +%s) - demo_started ))" "$*"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs), then run $0 again" >&2
  exit 1
fi

say "PostgreSQL and RabbitMQ"
missing=()
port_open 5432 || missing+=("PostgreSQL (127.0.0.1:5432)")
port_open 5672 || missing+=("RabbitMQ (127.0.0.1:5672)")
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'Not running: %s.\n' "$(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')"
  echo "Installing (apt-get, where missing) and starting them now with scripts/services-up.sh;"
  echo "this needs root or sudo and takes a minute or two the first time."
fi
scripts/services-up.sh

target_dir=${CARGO_TARGET_DIR:-target}
say "building sluice ($profile)"
if [ ! -x "$target_dir/$profile/sluice-planner" ]; then
  echo "First build: compiling sluice and its dependencies takes several minutes (10-20 on"
  echo "two cores); later runs only rebuild what changed. Cargo's progress follows."
fi
if [ "$profile" = release ]; then
  cargo build --release --locked --bins
else
  cargo build --locked --bins
fi
bin=$target_dir/$profile

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start() { # name, then the command; logs to target/demo/<name>.log
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

wait_ready() { # name port pid
  for _ in $(seq 1 120); do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 exited; last lines of $work/$1.log:" >&2
      tail -n 5 "$work/$1.log" >&2
      exit 1
    fi
    if port_open "$2"; then return 0; fi
    sleep 0.5
  done
  echo "$1 did not come up; see $work/$1.log" >&2
  exit 1
}

ports="$sandbox_port 9101 9102 9112 9103"
for port in $ports; do
  if port_open "$port"; then
    echo "port $port is already in use (another sluice running?); stop it first" >&2
    exit 1
  fi
done

# The sandbox also emulates Klaviyo's API (real rate limits); point the default account at it.
export SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY=pk_sandbox
export SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__BASE_URL="http://127.0.0.1:$sandbox_port"

# … and commercetools' (OAuth client credentials of the sandbox's generated project).
for key in API_URL AUTH_URL; do
  export "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__$key=http://127.0.0.1:$sandbox_port"
done
export SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__PROJECT_KEY=sluice-sandbox
export SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__CLIENT_ID=sluice-sandbox
export SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__CLIENT_SECRET=sluice-sandbox-secret

# … and What Drops Now's (no credentials; the sandbox serves it under /wdn/api/v1).
export SLUICE__CONNECTORS__WDN__BASE_URL="http://127.0.0.1:$sandbox_port/wdn/api/v1"

say "migrating the database"
"$bin/sluicectl" migrate

say "starting sandbox, planner, 2 fetchers, loader (logs in $work/)"
start sandbox "$bin/sluice-sandbox" serve --bind "127.0.0.1:$sandbox_port" --cache-dir "$work/sandbox-cache" \
  --set "wdn.data.products=$wdn_products" --set wdn.faults.latency_ms=20
start planner env SLUICE__PLANNER__ADMIN_BIND=127.0.0.1:9101 "$bin/sluice-planner"
start fetcher-1 env SLUICE__FETCHER__ADMIN_BIND=127.0.0.1:9102 "$bin/sluice-fetcher"
start fetcher-2 env SLUICE__FETCHER__ADMIN_BIND=127.0.0.1:9112 "$bin/sluice-fetcher"
start loader env SLUICE__LOADER__ADMIN_BIND=127.0.0.1:9103 "$bin/sluice-loader"
i=0
for svc in sandbox:$sandbox_port planner:9101 fetcher-1:9102 fetcher-2:9112 loader:9103; do
  wait_ready "${svc%%:*}" "${svc##*:}" "${pids[$i]}"
  i=$((i + 1))
done

say "ingesting the real Sailthru sample export"
"$bin/sluicectl" sync sailthru --export tests/fixtures/sailthru/sailthru_data-exporter_samples.zip --wait

say "ingesting a generated export of $messages messages served over HTTP by the sandbox"
export_url="http://127.0.0.1:$sandbox_port/sailthru/exports/1/$messages/sailthru_export.20240102.zip"
started_ms=$(date +%s%3N)
"$bin/sluicectl" sync sailthru --export "$export_url" --wait
elapsed_ms=$(( $(date +%s%3N) - started_ms ))
echo "generated export: $((elapsed_ms / 1000)).$(( (elapsed_ms % 1000) / 100 )) s wall time, including generating it in the sandbox"

say "extracting Klaviyo from the sandbox's emulation: January's Placed Order and Received Email events, then all profiles"
"$bin/sluicectl" sync klaviyo events --metric "Placed Order" --metric "Received Email" \
  --since 2024-01-01T00:00:00Z --until 2024-02-01T00:00:00Z --wait
"$bin/sluicectl" sync klaviyo profiles --wait

say "extracting commercetools from the sandbox's emulation: orders, customers, categories, products"
for stream in orders customers categories products; do
  "$bin/sluicectl" sync commercetools "$stream" --wait
done

say "syncing the What Drops Now catalogue from the sandbox's emulation: Converse, Vans, Nike, Adidas, Jordan"
started_ms=$(date +%s%3N)
"$bin/sluicectl" sync wdn --wait
elapsed_ms=$(( $(date +%s%3N) - started_ms ))
echo "wdn: $((elapsed_ms / 1000)).$(( (elapsed_ms % 1000) / 100 )) s wall time; the emulator saw:"
curl -fsS "http://127.0.0.1:$sandbox_port/wdn/_admin/stats" 2>/dev/null | sed 's/"faults".*//' \
  | grep -o '"\(total\|peak_concurrency\|mean_in_flight\)":[0-9.]*' | tr '\n' ' ' || true
echo
echo "a second sync inside the freshness window (1 day) asks for the brand searches only:"
"$bin/sluicectl" sync wdn --wait

say "retailers by price segment (wdn.retailer_price_segments, the original's sql.py)"
db_url=${SLUICE__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/sluice}
if command -v psql >/dev/null; then
  psql "$db_url" -P pager=off -c "SELECT segment, rank, retailer_name, avg_price_usd, offers FROM wdn.retailer_price_segments"
else
  echo "(psql not found: run SELECT * FROM wdn.retailer_price_segments in any Postgres client)"
fi

say "what landed"
heading() { printf '\n-- %s\n' "$*"; }
for schema in sailthru klaviyo commercetools wdn; do
  heading "tables of $schema"
  "$bin/sluicectl" tables "$schema"
done
heading "freshness"
"$bin/sluicectl" freshness
heading "recent jobs"
"$bin/sluicectl" jobs list --limit 9

# Per connector, the jobs of this run: how many succeeded, rows loaded, records rejected.
# `jobs list --json` prints one flat JSON object per job (fields in a fixed order).
heading "summary of this run ($(( $(date +%s) - demo_started )) s)"
"$bin/sluicectl" jobs list --limit 50 --json |
  sed -nE 's/.*"connector":"([^"]*)".*"state":"([^"]*)".*"rows_loaded":([0-9]+),"rows_rejected":([0-9]+),"requested_at":"([^"]*)".*/\1 \2 \3 \4 \5/p' |
  awk -v since="$demo_started_utc" '
    $5 >= since { jobs[$1]++; if ($2 == "succeeded") ok[$1]++; rows[$1] += $3; rej[$1] += $4 }
    END {
      printf "%-15s %5s %10s %13s %9s\n", "connector", "jobs", "succeeded", "rows loaded", "rejected"
      for (c in jobs) printf "%-15s %5d %10d %13d %9d\n", c, jobs[c], ok[c], rows[c], rej[c]
    }'
