#!/usr/bin/env bash
# One quick accept run for A/B comparisons while optimising (bench/run.sh is the run of record):
# starts the fake PagerDuty and pagerhook (fsync, shipped mappings/github.toml, per_key_rate 0)
# from the release build in TREE, sends the signed 8.7 KB pull request for SECONDS with loadgen
# (extra arguments go to loadgen, e.g. --rate 4000), and prints req/s, latency, pagerhook's CPU
# (utime + stime) and disk writes (/proc/PID/io write_bytes) per accepted webhook, and how many
# events the fake PagerDuty received during the run.
#
#   bench/quick.sh TREE [SECONDS] [loadgen args...]     # P=19910 sets the port base
#
# CPU per webhook is steadier than req/s on a shared machine; interleave A and B runs.
# Needs a release build in TREE with the bench's examples (see bench/run.sh).
set -euo pipefail
TREE=${1:?usage: bench/quick.sh TREE [SECONDS] [loadgen args...]}
SECONDS_RUN=${2:-8}
shift $(($# < 2 ? $# : 2))
P=${P:-19910}
cd "$TREE"
export PD_KEY=0123456789abcdef0123456789abcdef GH_SECRET=bench-github-secret
W=$(mktemp -d)
cat >"$W/p.toml" <<TOML
[server]
listen = "127.0.0.1:$((P + 1))"
admin_listen = "127.0.0.1:$((P + 2))"
[storage]
path = "$W/q.db"
durability = "fsync"
[pagerduty]
events_url = "http://127.0.0.1:$P"
routing_key = "env:PD_KEY"
[delivery]
per_key_rate = 0
[[source]]
name = "github"
kind = "github"
secrets = ["env:GH_SECRET"]
mappings = ["$PWD/mappings/github.toml"]
TOML
target/release/examples/bench_upstream "$P" &
UP=$!
RUST_LOG=warn target/release/pagerhook --config "$W/p.toml" serve 2>"$W/log" &
PH=$!
trap 'kill $UP $PH 2>/dev/null; rm -rf "$W"' EXIT
until curl -sf -o /dev/null "http://127.0.0.1:$((P + 2))/readyz"; do sleep 0.05; done
until curl -sf -o /dev/null "http://127.0.0.1:$P/stats"; do sleep 0.05; done
cpu() { awk '{print $14 + $15}' "/proc/$PH/stat"; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$PH/io"; }
delivered() { curl -sf "http://127.0.0.1:$P/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['count'])"; }
t0=$(cpu) w0=$(written) d0=$(delivered)
OUT=$(target/release/examples/loadgen --seconds "$SECONDS_RUN" --url "http://127.0.0.1:$((P + 1))/hooks/github" \
  --kind github --secret "$GH_SECRET" "$@")
t1=$(cpu) w1=$(written) d1=$(delivered)
queued=$(curl -sf "http://127.0.0.1:$((P + 2))/metrics" | awk '$1 == "pagerhook_queue_depth" {print $2}')
python3 - "$OUT" "$t0" "$t1" "$w0" "$w1" "$d0" "$d1" "$queued" <<'PY'
import json, os, sys
r = json.loads(sys.argv[1])
t0, t1, w0, w1, d0, d1 = map(int, sys.argv[2:8])
ok, hz = r["ok"], os.sysconf("SC_CLK_TCK")
print(f"{r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms | "
      f"{(t1 - t0) / hz * 1e6 / ok:.0f} us CPU and {(w1 - w0) / ok / 1024:.1f} KiB written per webhook | "
      f"{d1 - d0} delivered during the run, {sys.argv[8]} queued at its end")
PY
