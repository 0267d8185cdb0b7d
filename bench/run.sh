#!/usr/bin/env bash
# pagerhook benchmark: builds in release mode, runs every measurement on this machine in one
# go, and prints the figures side by side with the targets from issues 7 and 16.
#
# The accept throughput is measured interleaved, in BENCH_ROUNDS rounds (default 3) of: the bare
# actix-web handler (HMAC check only), pagerhook (fsync, shipped mappings/github.toml) and, when
# the `webhook` binary (adnanh/webhook, Debian package `webhook`) is on PATH, webhook with an
# HMAC-SHA256 trigger rule running /bin/true; all three get the same sequence of signed
# 8.7 KB pull requests, each numbered in trailing whitespace (a body seen before is a
# duplicate). Each figure is the median of its rounds, so a load spike hurts all three alike.
#
#   bench/run.sh                 # about 4 minutes after the build
#   BENCH_SECONDS=5 bench/run.sh # shorter runs
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/run.sh
#                                # adds PostgreSQL rows: 1 and 3 replicas (psql needed)
#   BENCH_ONLY=storm bench/run.sh  # only the storm row (bench/storm.py), about 2 minutes;
#                                # BENCH_STORM_RATE sets its per_key_rate (default 6000)
#
# Needs: cargo, curl, python3 (for reading JSON). Nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
BACKLOG=${BENCH_BACKLOG:-1000000}
UP_PORT=${BENCH_PORT:-19900}
HOOK_PORT=$((UP_PORT + 1))
ADMIN_PORT=$((UP_PORT + 2))
WEBHOOK_PORT=$((UP_PORT + 3))
export PD_KEY=0123456789abcdef0123456789abcdef GH_SECRET=bench-github-secret HOOK_TOKEN=bench-token

echo "building (release)..." >&2
cargo build --release --quiet --bin pagerhook --example bench_upstream --example loadgen --example bench_fill
BIN=target/release/pagerhook
EX=target/release/examples
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

json() { python3 -c "import json,sys; v=json.load(sys.stdin); print(v$1 if v$1 is not None else 'n/a')"; }
wait_ready() { # url, timeout seconds
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    if ((SECONDS > deadline)); then echo "timed out waiting for $1" >&2; exit 1; fi
    sleep 0.01
  done
}
rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
load() { "$EX/loadgen" --seconds "$RUN" "$@"; }

cat > "$WORK/numbered.toml" <<'TOML'
[[rule]]
name = "numbered"
emit = "alert"
action = "trigger"
dedup_key = "n-{{body.n}}"
summary = "bench event {{body.n}}"
source = "bench"
custom_details = { t = "{{body.t}}" }
TOML

config() { # db file or postgres URL, durability, events_url[, hook port, admin port, file]
  local storage="path = \"$1\"
durability = \"$2\""
  case "$1" in postgres*) storage="url = \"$1\"" ;; esac
  cat > "${6:-$WORK/pagerhook.toml}" <<TOML
[server]
listen = "127.0.0.1:${4:-$HOOK_PORT}"
admin_listen = "127.0.0.1:${5:-$ADMIN_PORT}"
[storage]
$storage
[pagerduty]
events_url = "$3"
routing_key = "env:PD_KEY"
[delivery]
per_key_rate = 0
[[source]]
name = "github"
kind = "github"
secrets = ["env:GH_SECRET"]
mappings = ["$PWD/mappings/github.toml"]
[[source]]
name = "load"
kind = "generic"
verify = { scheme = "bearer", secrets = ["env:HOOK_TOKEN"] }
mappings = ["$WORK/numbered.toml"]
[[source]]
name = "alertmanager"
kind = "generic"
verify = { scheme = "bearer", secrets = ["env:HOOK_TOKEN"] }
mappings = ["$PWD/mappings/alertmanager.toml"]
max_events_per_request = 1000
TOML
}
start() { # [config file] -> PAGERHOOK pid
  RUST_LOG=warn "$BIN" --config "${1:-$WORK/pagerhook.toml}" --log-format json serve 2>>"$WORK/pagerhook.log" &
  PAGERHOOK=$!
  PIDS+=("$PAGERHOOK")
}
stop() { kill -TERM "$PAGERHOOK"; wait "$PAGERHOOK" 2>/dev/null || true; }

# The storm row (issue 28, bench/storm.py): one routing key, paced at BENCH_STORM_RATE a minute
# (the order of sends does not depend on the rate; storm.py scales positions to the default
# 120), a storm page after a minute of backlog, and a second Alertmanager source on the same
# key for the critical page. Prints storm.py's JSON line.
storm_row() {
  local rate=${BENCH_STORM_RATE:-6000}
  config "$WORK/storm.db" fsync "$UP"
  python3 - "$WORK/pagerhook.toml" "$rate" "$PWD" <<'PY'
import sys
path, rate, root = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read().replace("per_key_rate = 0", f"per_key_rate = {rate}")
text = text.replace('routing_key = "env:PD_KEY"', 'routing_key = "env:PD_KEY"\nstorm_page_after = "1m"', 1)
text += f'''[[source]]
name = "other"
kind = "generic"
verify = {{ scheme = "bearer", secrets = ["env:HOOK_TOKEN"] }}
mappings = ["{root}/mappings/alertmanager.toml"]
'''
open(path, "w").write(text)
PY
  start
  wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" 10
  curl -sf -X POST "$UP/record" >/dev/null
  python3 bench/storm.py "$HOOKS" "$HOOK_TOKEN" "$UP" "http://127.0.0.1:$ADMIN_PORT" "$rate"
  stop
  rm -rf "$WORK"/storm.db*
}
storm_table() { # storm.py's JSON line -> the row, as the main table prints it
  python3 - "$1" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
def pos(p): return "never" if p is None else f"#{p}"
crit = (f'critical: {pos(s["critical_position"])} of the key\'s sends, after {s["critical_waited_sends"]} others since its 202: '
        f'{s["critical_wait_s"]} s at {s["rate"]}/min, ~{s["critical_wait_at_default_s"]} s at the default 120/min')
res = (f'resolves: {s["resolves_sent"]} of 500 sent, {pos(s["resolves_first_position"])}..{pos(s["resolves_last_position"])}; '
       f'the last after {s["resolves_last_waited_sends"]} others since they were accepted: {s["resolves_last_after_s"]} s, '
       f'~{s["resolves_last_at_default_s"]} s at 120/min; {s["superseded"]} events superseded (a trigger and its resolve, '
       f'neither sent), {s["compat_resolves_sent"]} resolves under the pre-upgrade key; recovered alerts left open: {s["recovered_left_open"]}')
page = f'storm page: {pos(s["storm_page_position"])}; {s["storm_triggers_sent"]} storm triggers sent, drained: {s["drained"]}'
print(f"8 storm on one key: {crit}\n  {res}\n  {page}")
PY
}

"$EX/bench_upstream" "$UP_PORT" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$UP_PORT/stats" 10
UP="http://127.0.0.1:$UP_PORT"
HOOKS="http://127.0.0.1:$HOOK_PORT/hooks"

if [ "${BENCH_ONLY:-}" = storm ]; then
  echo "8/8 storm on one key: 10 000 triggers, 1 critical from another source, 500 resolves..." >&2
  storm_table "$(storm_row)"
  exit 0
fi

config "$WORK/fsync.db" fsync "$UP"
start
wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" 10
sleep 1
RSS_IDLE=$(rss_kib "$PAGERHOOK" VmRSS)

WEBHOOK_BIN=$(command -v webhook || true)
if [ -n "$WEBHOOK_BIN" ]; then
  cat >"$WORK/hooks.json" <<JSON
[{"id": "github", "execute-command": "/bin/true", "command-working-directory": "$WORK",
  "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$GH_SECRET",
                             "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}}]
JSON
  "$WEBHOOK_BIN" -hooks "$WORK/hooks.json" -ip 127.0.0.1 -port "$WEBHOOK_PORT" >>"$WORK/webhook.log" 2>&1 &
  PIDS+=($!)
  # webhook answers 500 to a GET of a POST-only hook once it is up: any answer means listening.
  deadline=$((SECONDS + 10))
  until curl -s -o /dev/null "http://127.0.0.1:$WEBHOOK_PORT/hooks/github"; do
    if ((SECONDS > deadline)); then echo "webhook did not start: $(cat "$WORK/webhook.log")" >&2; exit 1; fi
    sleep 0.01
  done
else
  echo "  (webhook not on PATH: skipping the adnanh/webhook row; apt-get install webhook)" >&2
fi

median() { python3 -c "import json,sys,statistics; rs=[json.loads(l) for l in sys.stdin if l.strip()]; m=statistics.median(r['rps'] for r in rs); print(json.dumps(min(rs, key=lambda r: abs(r['rps']-m))))"; }
depth() { curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "pagerhook_queue_depth" { print $2 }'; }
delivered() { curl -sf "$UP/stats" | json "['count']"; }
drain() { # waits (at most 300 s) until nothing is queued; prints how long that took, in ms
  local t0 deadline=$((SECONDS + 300))
  t0=$(date +%s%N)
  until [ "$(depth)" = 0 ] || ((SECONDS > deadline)); do sleep 0.1; done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
# One pagerhook run, starting with an empty queue: loadgen's figures plus how many events the
# fake PagerDuty received while the load ran, how many were still queued when it stopped, and
# how long they then took to drain. The drain is waited for, so no later run (the bare
# handler's or webhook's included) shares the cores with a backlog being delivered.
pagerhook_run() { # loadgen arguments
  local before result after queued
  before=$(delivered)
  result=$(load "$@")
  after=$(delivered)
  queued=$(depth)
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r.update(delivered=int(sys.argv[2]), undelivered=int(sys.argv[3]), drain_ms=int(sys.argv[4])); print(json.dumps(r))" \
    "$result" $((after - before)) "$queued" "$(drain)"
}
: >"$WORK/bare.jsonl"; : >"$WORK/relay.jsonl"; : >"$WORK/fsync.jsonl"; : >"$WORK/webhook.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  echo "1-2/6 round $round/$ROUNDS: bare actix-web (HMAC only), relay floor, pagerhook fsync${WEBHOOK_BIN:+, adnanh/webhook}..." >&2
  load --url "$UP/ceiling" --kind github --secret "$GH_SECRET" >>"$WORK/bare.jsonl"
  load --url "$UP/relay" --kind github --secret "$GH_SECRET" >>"$WORK/relay.jsonl"
  pagerhook_run --url "$HOOKS/github" --kind github --secret "$GH_SECRET" >>"$WORK/fsync.jsonl"
  if [ -n "$WEBHOOK_BIN" ]; then
    load --url "http://127.0.0.1:$WEBHOOK_PORT/hooks/github" --kind github --secret "$GH_SECRET" >>"$WORK/webhook.jsonl"
    # webhook forks /bin/true per request; for seconds after tens of thousands of forks this
    # VM runs everything slower (measured: the bare handler at 18 000 req/s right after, 45 000
    # five seconds later, 60 000 before), so whatever ran next paid for webhook's run.
    sleep "${BENCH_SETTLE:-10}"
  fi
done
CEIL=$(median <"$WORK/bare.jsonl")
RELAY=$(median <"$WORK/relay.jsonl")
FSYNC=$(median <"$WORK/fsync.jsonl")
WEBHOOK='{}'
[ -n "$WEBHOOK_BIN" ] && WEBHOOK=$(median <"$WORK/webhook.jsonl")
PEAK_RPS=$(echo "$FSYNC" | json "['rps']")
HALF=$(python3 -c "print(max(1, int($PEAK_RPS / 2)))")
# Every saturation run's backlog has drained (pagerhook_run waits): this run starts fresh.
HALFRUN=$(pagerhook_run --url "$HOOKS/github" --kind github --secret "$GH_SECRET" --rate "$HALF")
UNDRAINED=$(depth || echo unknown) # still queued when the end-to-end run starts, if any

echo "4/6 end-to-end latency at 1000 req/s..." >&2
curl -sf -X POST "$UP/reset" >/dev/null
E2E_LOAD=$(load --url "$HOOKS/load" --kind numbered --secret "$HOOK_TOKEN" --rate 1000)
SENT=$(echo "$E2E_LOAD" | json "['ok']")
deadline=$((SECONDS + 60))
until [ "$(curl -sf "$UP/stats" | json "['timed']")" -ge "$SENT" ] || ((SECONDS > deadline)); do sleep 0.1; done
E2E=$(curl -sf "$UP/stats")

echo "6/6 alert storm: 10 000 Alertmanager alerts in 100 requests..." >&2
STORM=$("$EX/loadgen" --url "$HOOKS/alertmanager" --kind alertmanager --secret "$HOOK_TOKEN" --requests 100 --alerts 100 --connections 4 --seconds 600)
RSS_PEAK=$(rss_kib "$PAGERHOOK" VmHWM)
stop
rm -rf "$WORK"/fsync.db* # gigabytes of accepted payloads: keep the disk for the backlog

echo "3/6 pagerhook, durability=process..." >&2
config "$WORK/process.db" process "$UP"
start
wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" 10
PROCESS=$(load --url "$HOOKS/github" --kind github --secret "$GH_SECRET")
stop
rm -rf "$WORK"/process.db*

echo "5/6 start with a backlog of $BACKLOG events..." >&2
"$EX/bench_fill" "$WORK/backlog.db" "$BACKLOG" 2>>"$WORK/pagerhook.log"
# PagerDuty unreachable, so the backlog stays while we look.
config "$WORK/backlog.db" fsync "http://127.0.0.1:9"
t0=$(date +%s%N)
start
wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" 60
t1=$(date +%s%N)
READY_MS=$(( (t1 - t0) / 1000000 ))
sleep 1
RSS_BACKLOG=$(rss_kib "$PAGERHOOK" VmRSS)
stop

echo "8/8 storm on one key: 10 000 triggers, 1 critical from another source, 500 resolves..." >&2
STORM_ROW=$(storm_row)

PG1='{}' PG3='{}'
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  SCHEMA="pagerhook_bench_$$"
  psql -q "$BENCH_DATABASE_URL" -c "CREATE SCHEMA $SCHEMA"
  PG_URL="$BENCH_DATABASE_URL$([[ $BENCH_DATABASE_URL == *\?* ]] && echo '&' || echo '?')options=-c%20search_path%3D$SCHEMA"
  echo "7/7 PostgreSQL: 1 replica, then 3..." >&2
  config "$PG_URL" fsync "$UP"
  start
  wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz" 20
  PG1=$(load --url "$HOOKS/github" --kind github --secret "$GH_SECRET")
  stop
  REPLICAS=()
  for r in 0 1 2; do
    config "$PG_URL" fsync "$UP" $((HOOK_PORT + 10 + 2 * r)) $((HOOK_PORT + 11 + 2 * r)) "$WORK/replica-$r.toml"
    start "$WORK/replica-$r.toml"
    REPLICAS+=("$PAGERHOOK")
    wait_ready "http://127.0.0.1:$((HOOK_PORT + 11 + 2 * r))/readyz" 20
  done
  LOADS=()
  for r in 0 1 2; do
    load --url "http://127.0.0.1:$((HOOK_PORT + 10 + 2 * r))/hooks/github" --kind github --secret "$GH_SECRET" \
      --connections 22 >"$WORK/pg3-$r.json" &
    LOADS+=($!)
  done
  for p in "${LOADS[@]}"; do wait "$p"; done
  PG3=$(python3 -c "import json; rs=[json.load(open('$WORK/pg3-%d.json' % r)) for r in range(3)]; print(json.dumps({'rps': sum(r['rps'] for r in rs), 'p99_ms': max(r['p99_ms'] for r in rs), 'errors': sum(r['errors'] for r in rs)}))")
  for p in "${REPLICAS[@]}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
  psql -q "$BENCH_DATABASE_URL" -c "DROP SCHEMA $SCHEMA CASCADE"
fi

f() { echo "$1" | json "$2"; }
CEIL_RPS=$(f "$CEIL" "['rps']")
python3 - "$CEIL" "$FSYNC" "$PROCESS" "$HALFRUN" "$E2E" "$STORM" "$RSS_IDLE" "$RSS_PEAK" "$RSS_BACKLOG" "$READY_MS" "$BACKLOG" "$HALF" "$PG1" "$PG3" "$WEBHOOK" "$ROUNDS" "$UNDRAINED" "$SENT" "$RELAY" <<'PY'
import json, sys
ceil, fsync, process, half, e2e, storm = (json.loads(a) for a in sys.argv[1:7])
rss_idle, rss_peak, rss_backlog, ready_ms, backlog, half_rate = (int(a) for a in sys.argv[7:13])
pg1, pg3 = (json.loads(a) for a in sys.argv[13:15])
webhook, rounds = json.loads(sys.argv[15]), int(sys.argv[16])
undrained, e2e_sent = sys.argv[17], sys.argv[18]
relay = json.loads(sys.argv[19])
def ok(good): return "ok" if good else "MISSED"
# A figure that could not be measured (no request or event timed) prints as n/a with the
# reason in its row, instead of stopping the script before the table.
def ms(v): return "n/a" if v is None else f"{v:.2f} ms"
def e2e_row():
    if e2e.get("p99_ms") is None:
        why = f"no event of {e2e_sent} sent reached the fake PagerDuty within 60 s"
        if undrained not in ("0", ""):
            why += f"; {undrained} events of the earlier runs were still queued (drain timed out)"
        return (why, "MISSED (not measured)")
    return (f'{e2e["timed"]} events, p50 {ms(e2e["p50_ms"])}, p99 {ms(e2e["p99_ms"])}', f'p99 <= 50 ms {ok(e2e["p99_ms"] <= 50)}')
def delivery_row(run):
    # Delivered while the load ran, and what was still queued when it stopped: whether
    # delivery kept up with accepting, not only whether it caught up afterwards.
    seconds = run["ok"] / run["rps"] if run["rps"] else 0
    rate = run["delivered"] / seconds if seconds else 0
    return (f'{run["delivered"]} delivered during it ({rate:.0f}/s), {run["undelivered"]} queued at its end, '
            f'drained in {run["drain_ms"] / 1000:.1f} s')
ratio = fsync["rps"] / ceil["rps"]
rows = [
    ("1 ceiling (bare actix-web, HMAC only)", f'{ceil["rps"]:.0f} req/s, p50 {ms(ceil["p50_ms"])}, p99 {ms(ceil["p99_ms"])}, median of {rounds}', ""),
    ("  relay floor (1) + one POST to the fake", f'{relay["rps"]:.0f} req/s, p99 {ms(relay["p99_ms"])}, {relay["errors"]} errors: {relay["rps"] / ceil["rps"]:.0%} of (1), nothing stored', ""),
    ("2 pagerhook, fsync", f'{fsync["rps"]:.0f} req/s, p50 {ms(fsync["p50_ms"])}, p99 {ms(fsync["p99_ms"])}, {fsync["errors"]} errors', f'>= 25% of (1): {ratio:.0%} {ok(ratio >= 0.25)}'),
]
if webhook:
    vs = fsync["rps"] / webhook["rps"]
    rows.append(("  adnanh/webhook, HMAC rule, /bin/true", f'{webhook["rps"]:.0f} req/s, p50 {ms(webhook["p50_ms"])}, p99 {ms(webhook["p99_ms"])}, {webhook["errors"]} errors', f'(2) >= 3x this: {vs:.2f}x {ok(vs >= 3)}'))
rows += [
    ("3 pagerhook, process", f'{process["rps"]:.0f} req/s, p50 {ms(process["p50_ms"])}, p99 {ms(process["p99_ms"])}', ""),
    (f"  accept at {half_rate} req/s (half of 2)", f'p50 {ms(half["p50_ms"])}, p99 {ms(half["p99_ms"])}, from an empty queue', f'p99 <= 5 ms {ok(half["p99_ms"] is not None and half["p99_ms"] <= 5)}'),
    ("  delivery during 2", delivery_row(fsync), f'all delivered during the run {ok(fsync["undelivered"] == 0)}'),
    ("  delivery during the half-rate run", delivery_row(half), f'all delivered during the run {ok(half["undelivered"] == 0)}'),
    ("4 end to end at 1000 req/s", *e2e_row()),
    ("5 RSS idle / peak", f'{rss_idle/1024:.1f} MiB / {rss_peak/1024:.1f} MiB', f'<= 30 / 150 MiB {ok(rss_idle <= 30*1024 and rss_peak <= 150*1024)}'),
    (f"  ready with {backlog} queued", f'{ready_ms} ms (RSS then {rss_backlog/1024:.1f} MiB)', f'<= 2 s {ok(ready_ms <= 2000)}'),
    ("6 storm: 10 000 alerts / 100 requests", f'all accepted in {storm["seconds"]:.2f} s ({storm["ok"]} ok, {storm["errors"]} errors)', ""),
]
if pg1:
    rows.append(("7 PostgreSQL, 1 replica", f'{pg1["rps"]:.0f} req/s, p99 {ms(pg1["p99_ms"])}, {pg1["errors"]} errors', ""))
    rows.append(("  PostgreSQL, 3 replicas", f'{pg3["rps"]:.0f} req/s in all, p99 {ms(pg3["p99_ms"])}, {pg3["errors"]} errors', ""))
w = max(len(r[0]) for r in rows)
print(f'{"measurement":<{w}}  {"result":<72}  target')
for name, result, target in rows:
    print(f"{name:<{w}}  {result:<72}  {target}")
PY
storm_table "$STORM_ROW"
