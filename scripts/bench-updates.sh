#!/usr/bin/env bash
# Server time of the loader's update statements, with no client work: how Postgres itself
# prices an update of every row next to a raw COPY, per table layout and SQL formulation
# (docs/benchmarks.md, "Issue 15: allocator, memory and updates").
#
# 200,000 `klaviyo.events`-shaped rows (~315 bytes each) are loaded into a destination with
# a primary key and two secondary indexes, then every row is rewritten in 25 transactions
# of 8,000, each as the loader does it: binary COPY into a temporary staging table, then
# the write. Each variant is `WRITE:FILLFACTOR:SHAPE`:
#   WRITE       upsert — the loader's `INSERT … ON CONFLICT (id) DO UPDATE … WHERE (…) IS
#               DISTINCT FROM (…)`; merge — `MERGE … WHEN MATCHED AND (…) IS DISTINCT FROM (…)`
#   FILLFACTOR  the destination's fillfactor (10–100)
#   SHAPE       events — the changed columns are not indexed (uuid, value,
#               event_properties), so an update may be HOT; profiles — one changed column
#               is indexed, as a profile's `updated` (or a customer's `last_modified_at`) is
#               on every real update, so no update can be HOT
# Around each variant, raw binary COPY of the same 200,000 rows into an unindexed table is
# timed twice: the reference of the same moment (the box is shared: compare within a line).
#
#   scripts/bench-updates.sh                                   # the default variants
#   scripts/bench-updates.sh upsert:100:events upsert:50:events
#
# Needs psql and a local superuser connection (server-side COPY to and from files under
# $BENCH_DIR, default /tmp/sluice-bench-updates): PGHOST/PGUSER as usual, default
# 127.0.0.1 and postgres. Works in its own database, sluice_bench_updates, dropped at the end.
set -euo pipefail

export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
export PGOPTIONS='-c client_min_messages=warning'
DIR=${BENCH_DIR:-/tmp/sluice-bench-updates}
DB=sluice_bench_updates
mkdir -p "$DIR" && chmod 777 "$DIR"
P="psql -X -v ON_ERROR_STOP=1 -d $DB -qAt"
COLS="id, metric_id, profile_id, datetime, timestamp, uuid, value, event_properties"
GUARD="(t.metric_id, t.profile_id, t.datetime, t.timestamp, t.uuid, t.value, t.event_properties)"

ms() { local s; s=$(date +%s%N); "$@" >/dev/null; echo $((($(date +%s%N) - s) / 1000000)); }

setup() {
  psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  $P <<SQL
CREATE TABLE src (g int, id text, metric_id text, profile_id text, datetime timestamptz,
    timestamp bigint, uuid text, value double precision, event_properties jsonb);
INSERT INTO src
SELECT gen, '4' || lpad(i::text, 25, '0'), 'M' || lpad((i % 12)::text, 5, '0'),
       '01J' || lpad((i % 50000)::text, 23, '0'), to_timestamp(1700000000 + i * 7),
       1700000000 + i * 7, md5(i || ':' || gen), (i % 1000) * 1.25 + gen,
       jsonb_build_object('\$value', (i % 1000) * 1.25 + gen, 'OrderId', 'O-' || i,
         'ItemNames', jsonb_build_array('Jeans', 'Shirt'),
         'Categories', jsonb_build_array('Women', 'Women > Pants'),
         '\$extra', jsonb_build_object('Discount', 'SUMMER', 'generation', gen))
  FROM generate_series(0, 199999) i, generate_series(0, 1) gen;
COPY (SELECT $COLS FROM src WHERE g = 0 ORDER BY id) TO '$DIR/all0.bin' (FORMAT binary);
DO \$\$ BEGIN FOR k IN 0..24 LOOP
  EXECUTE format('COPY (SELECT $COLS, 0::bigint FROM src WHERE g = 1 ORDER BY id OFFSET %s LIMIT 8000)
                  TO %L (FORMAT binary)', k * 8000, '$DIR/upd' || k || '.bin');
END LOOP; END \$\$;
SQL
}

reset() { # fillfactor shape
  local second="profile_id"
  [ "$2" = profiles ] && second="uuid"
  $P <<SQL
DROP TABLE IF EXISTS dest; DROP TABLE IF EXISTS raw;
CREATE TABLE raw (id text, metric_id text, profile_id text, datetime timestamptz,
    timestamp bigint, uuid text, value double precision, event_properties jsonb);
CREATE TABLE dest (id text PRIMARY KEY, metric_id text, profile_id text, datetime timestamptz,
    timestamp bigint, uuid text, value double precision, event_properties jsonb,
    extra jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001',
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now())
    WITH (fillfactor = $1);
CREATE INDEX ON dest (metric_id, datetime);
CREATE INDEX ON dest ($second);
COPY dest ($COLS) FROM '$DIR/all0.bin' (FORMAT binary);
CHECKPOINT;
SQL
}

transactions() { # write → the 25 transactions as SQL
  local job="'00000000-0000-0000-0000-000000000002'::uuid"
  for k in $(seq 0 24); do
    echo "BEGIN;
CREATE TEMP TABLE IF NOT EXISTS stage ON COMMIT DELETE ROWS AS
  SELECT $COLS, 0::bigint AS _sluice_ord FROM dest WITH NO DATA;
COPY stage FROM '$DIR/upd$k.bin' (FORMAT binary);"
    if [ "$1" = upsert ]; then
      echo "WITH w AS (
  INSERT INTO dest AS t ($COLS, _sluice_job_id, _sluice_loaded_at)
  SELECT $COLS, $job, now() FROM stage s ORDER BY id
  ON CONFLICT (id) DO UPDATE SET metric_id = EXCLUDED.metric_id,
    profile_id = EXCLUDED.profile_id, datetime = EXCLUDED.datetime,
    timestamp = EXCLUDED.timestamp, uuid = EXCLUDED.uuid, value = EXCLUDED.value,
    event_properties = EXCLUDED.event_properties, _sluice_job_id = EXCLUDED._sluice_job_id,
    _sluice_loaded_at = EXCLUDED._sluice_loaded_at
  WHERE $GUARD IS DISTINCT FROM (EXCLUDED.metric_id, EXCLUDED.profile_id, EXCLUDED.datetime,
    EXCLUDED.timestamp, EXCLUDED.uuid, EXCLUDED.value, EXCLUDED.event_properties)
  RETURNING (t.xmax = 0) AS inserted)
SELECT count(*), count(*) FILTER (WHERE inserted) FROM w;"
    else
      echo "MERGE INTO dest t USING stage s ON t.id = s.id
WHEN MATCHED AND $GUARD IS DISTINCT FROM (s.metric_id, s.profile_id, s.datetime, s.timestamp,
    s.uuid, s.value, s.event_properties) THEN UPDATE SET metric_id = s.metric_id,
  profile_id = s.profile_id, datetime = s.datetime, timestamp = s.timestamp, uuid = s.uuid,
  value = s.value, event_properties = s.event_properties, _sluice_job_id = $job,
  _sluice_loaded_at = now()
WHEN NOT MATCHED THEN INSERT ($COLS, _sluice_job_id) VALUES (s.id, s.metric_id, s.profile_id,
  s.datetime, s.timestamp, s.uuid, s.value, s.event_properties, $job);"
    fi
    echo "COMMIT;"
  done
}

raw() { $P -c "TRUNCATE raw" -c "CHECKPOINT"; ms $P -c "COPY raw FROM '$DIR/all0.bin' (FORMAT binary)"; }

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(upsert:100:events merge:100:events upsert:50:events
  merge:50:events upsert:100:profiles upsert:50:profiles)
setup
for variant in "${variants[@]}"; do
  IFS=: read -r write fillfactor shape <<<"$variant"
  reset "$fillfactor" "$shape"
  loaded=$($P -c "SELECT pg_size_pretty(pg_table_size('dest'))")
  transactions "$write" >"$DIR/tx.sql"
  r1=$(raw)
  $P -c "SELECT pg_stat_reset()" >/dev/null
  t=$(ms $P -f "$DIR/tx.sql")
  r2=$(raw)
  $P -c "SELECT pg_stat_force_next_flush()" >/dev/null
  sleep 1
  read -r upd hot < <($P -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'dest'")
  size=$($P -c "SELECT pg_size_pretty(pg_table_size('dest'))")
  ratio=$(awk -v r1="$r1" -v r2="$r2" -v t="$t" 'BEGIN { printf "%.2f", (r1 + r2) / 2 / t }')
  echo "$write fillfactor $fillfactor $shape: updates of 200,000 rows ${t} ms = ${ratio}× raw COPY (${r1} / ${r2} ms before / after); $upd updated, $hot HOT; table $loaded after the fresh load, $size after the updates; load $(cut -d' ' -f1-3 /proc/loadavg)"
done
psql -X -qAt -d postgres -c "DROP DATABASE $DB"
rm -f "$DIR"/*.bin "$DIR/tx.sql"
