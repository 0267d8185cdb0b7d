#!/usr/bin/env bash
# The on-call comparison (issue 36): one real Alertmanager notifies its own PagerDuty receiver
# and pagerhook, per alert and as pagerhook.toml suggests, each into its own fake PagerDuty,
# on the same one-minute stream; prints how often each paged (bench/README.md, "On call").
#
#   bench/oncall.sh            # the release binary if built, else the debug one (built if missing)
#   PAGERHOOK_BIN=path bench/oncall.sh
#
# Exits 1 when pagerhook's suggested set-up pages as often as Alertmanager or more, leaves an
# alert group unpaged, or leaves an incident of a resolved group open. Takes about 100 s.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's prometheus-alertmanager: the real Alertmanager (CI has package registries only).
if ! command -v prometheus-alertmanager >/dev/null 2>&1 && ! command -v alertmanager >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager
fi
alertmanager="$(command -v prometheus-alertmanager || command -v alertmanager)"
# The package starts its own service where systemd runs; ours listens on a port of its own.

bin="${PAGERHOOK_BIN:-}"
if [ -z "$bin" ]; then
    if [ -x target/release/pagerhook ]; then
        bin=target/release/pagerhook
    else
        cargo build --quiet --bin pagerhook
        bin=target/debug/pagerhook
    fi
fi
exec python3 bench/oncall.py "$(realpath "$bin")" "$alertmanager"
