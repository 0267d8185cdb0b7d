#!/usr/bin/env python3
"""The on-call comparison of issue 36; run it through bench/oncall.sh (README in bench/).

One real Alertmanager receives one stream of alerts and notifies, from one receiver, its own
PagerDuty integration and one pagerhook per row below, each into its own fake PagerDuty
(bench/fake_pagerduty.py). Alertmanager's timings and pagerhook's resolve_delay are divided
by SCALE (60), so that the stream, about a minute, stands for an hour of real time.

Usage: oncall.py PAGERHOOK_BINARY ALERTMANAGER_BINARY
Exit 1 when pagerhook's suggested set-up pages as often as Alertmanager or more, leaves a
group unpaged or leaves an incident of a resolved group open.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = 60
ROUTING_KEY = "R0BENCH0ONCALL0000000000000000000"[:32]
TOKEN = "bench-oncall-token"
GROUPS = ["BenchCritical", "BenchWarning", "BenchFlap", "BenchFleet", "BenchBrief"]
RESOLVED = {"BenchCritical", "BenchFlap", "BenchBrief"}
STREAM_SECONDS = 60
SETTLE_SECONDS = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_until_up(url, what, proc, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"oncall: {what} exited with {proc.returncode} before it was ready")
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"oncall: {what} not ready at {url} after {deadline} s")


def seconds(duration):
    """A pagerhook duration ("6m", "90s", "1h") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not m:
        sys.exit(f"oncall: cannot read the duration {duration!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def suggested_source():
    """The Alertmanager [[source]] block pagerhook.toml suggests, uncommented, as a dict of lines."""
    text = open(os.path.join(ROOT, "pagerhook.toml")).read()
    block = re.search(r'# \[\[source\]\]\n# name = "alertmanager".*?(?=\n#\n|\n\n|\Z)', text, re.S)
    if not block:
        sys.exit("oncall: pagerhook.toml suggests no [[source]] named alertmanager")
    fields = {}
    for line in block.group(0).splitlines()[1:]:
        key, _, value = line[2:].partition("=")
        fields[key.strip()] = re.sub(r"\s+#.*$", "", value.strip())
    return fields


def pagerhook_config(dir, port, admin, fake, source):
    """A config like pagerhook.toml's defaults with `source` (a dict of TOML values) as its one source."""
    mappings = json.loads(source["mappings"])
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        f'admin_listen = "127.0.0.1:{admin}"',
        "[storage]",
        f'path = "{dir}/pagerhook.db"',
        "[pagerduty]",
        f'events_url = "http://127.0.0.1:{fake}"',
        f'routing_key = "{ROUTING_KEY}"',
        "[[source]]",
        'name = "alertmanager"',
        'kind = "generic"',
        f'verify = {{ scheme = "bearer", secrets = ["{TOKEN}"] }}',
        "mappings = " + json.dumps([os.path.join(ROOT, m) for m in mappings]),
    ]
    for key, value in source.items():
        if key == "resolve_delay":
            scaled = seconds(json.loads(value)) / SCALE
            lines.append(f'resolve_delay = "{int(scaled * 1000)}ms"')
        elif key not in ("name", "kind", "verify", "mappings"):
            lines.append(f"{key} = {value}")
    path = os.path.join(dir, "pagerhook.toml")
    open(path, "w").write("\n".join(lines) + "\n")
    return path


def alertmanager_config(dir, fake, hooks):
    """Alertmanager's default timings divided by SCALE, each rounded to a whole second at least."""
    webhooks = "".join(
        f"""
  - url: http://127.0.0.1:{port}/hooks/alertmanager
    max_alerts: 0
    http_config:
      authorization:
        credentials: {TOKEN}"""
        for port in hooks
    )
    text = f"""route:
  receiver: all
  group_by: [alertname]
  group_wait: 1s        # 30s
  group_interval: 5s    # 5m
  repeat_interval: 4m   # 4h
receivers:
- name: all
  pagerduty_configs:
  - routing_key: {ROUTING_KEY}
    url: http://127.0.0.1:{fake}/v2/enqueue
  webhook_configs:{webhooks}
"""
    path = os.path.join(dir, "alertmanager.yml")
    open(path, "w").write(text)
    return path


def alert(name, severity, ends, **labels):
    now = datetime.now(timezone.utc)
    return {
        "labels": {"alertname": name, "severity": severity, "cluster": "bench", **labels},
        "annotations": {"summary": f"{name} on {labels.get('instance', labels.get('pod', 'bench'))}"},
        "startsAt": (now - timedelta(seconds=1)).isoformat(),
        "endsAt": (now + timedelta(hours=1) if ends == "firing" else now).isoformat(),
        "generatorURL": "http://prometheus.bench/graph",
    }


def stream():
    """(second, alerts to post): the stream of issue 36, about a minute."""
    critical = lambda s: [alert("BenchCritical", "critical", s, instance=f"checkout-{i}") for i in range(3)]
    warning = lambda s: [alert("BenchWarning", "warning", s, instance=f"disk-{i}") for i in range(2)]
    fleet = [alert("BenchFleet", "critical", "firing", pod=f"worker-{i:04}", namespace="jobs") for i in range(1200)]
    flap = lambda s: [alert("BenchFlap", "critical", s, instance="gateway-0")]
    brief = lambda s: [alert("BenchBrief", "critical", s, instance="cron-0")]
    return [
        (0, lambda: critical("firing") + warning("firing") + fleet + flap("firing")),
        (5, lambda: flap("resolved")),
        (10, lambda: flap("firing")),
        (12, lambda: brief("firing")),
        (14, lambda: brief("resolved")),
        (15, lambda: flap("resolved")),
        (20, lambda: flap("firing")),
        (25, lambda: flap("resolved")),
        (40, lambda: critical("resolved")),
    ]


def tally(state):
    paged = {g for i in state["incidents"] for g in i["groups"]}
    stuck = [i for i in state["incidents"] if i["open"] and i["groups"] and set(i["groups"]) <= RESOLVED]
    return {
        "pages": state["pages"],
        "never_paged": [g for g in GROUPS if g not in paged],
        "stuck": len(stuck),
        "events": state["events"],
    }


def main():
    pagerhook, alertmanager = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="pagerhook-oncall-")
    suggested = suggested_source()
    rows = [
        ("Alertmanager's own PagerDuty receiver", None),
        ("pagerhook, per alert (mappings/alertmanager.toml)", {"mappings": '["mappings/alertmanager.toml"]'}),
        ("pagerhook, as pagerhook.toml suggests (" + " ".join(json.loads(suggested["mappings"])) + ")", suggested),
    ]
    procs = []
    try:
        fakes, hooks = [], []
        for n, (_, source) in enumerate(rows):
            fake = free_port()
            procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "bench/fake_pagerduty.py"), str(fake)]))
            wait_until_up(f"http://127.0.0.1:{fake}/state", "the fake PagerDuty", procs[-1])
            fakes.append(fake)
            if source is None:
                continue
            dir = os.path.join(work, f"pagerhook-{n}")
            os.makedirs(dir)
            port, admin = free_port(), free_port()
            config = pagerhook_config(dir, port, admin, fake, source)
            log = open(os.path.join(dir, "log"), "w")
            procs.append(subprocess.Popen([pagerhook, "--config", config, "serve"], stdout=log, stderr=log))
            wait_until_up(f"http://127.0.0.1:{admin}/readyz", f"pagerhook ({config})", procs[-1])
            hooks.append(port)
        am = free_port()
        config = alertmanager_config(work, fakes[0], hooks)
        log = open(os.path.join(work, "alertmanager.log"), "w")
        procs.append(
            subprocess.Popen(
                [alertmanager, f"--config.file={config}", f"--storage.path={work}/am",
                 f"--web.listen-address=127.0.0.1:{am}", "--cluster.listen-address=",
                 f"--web.external-url=http://127.0.0.1:{am}"],
                stdout=log, stderr=log,
            )
        )
        wait_until_up(f"http://127.0.0.1:{am}/-/ready", "alertmanager", procs[-1])
        start = time.monotonic()
        for at, alerts in stream():
            time.sleep(max(0, start + at - time.monotonic()))
            http("POST", f"http://127.0.0.1:{am}/api/v2/alerts", alerts(), timeout=30)
        time.sleep(max(0, start + STREAM_SECONDS + SETTLE_SECONDS - time.monotonic()))
        states = [json.loads(http("GET", f"http://127.0.0.1:{f}/state")[1]) for f in fakes]
        results = [tally(state) for state in states]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    print(f"On-call comparison ({STREAM_SECONDS} s stream, read {STREAM_SECONDS + SETTLE_SECONDS} s after its start;"
          f" Alertmanager's timings and resolve_delay divided by {SCALE}; logs in {work})\n")
    print("| receiver | incidents opened (pages) | groups never paged | stuck open | events sent |")
    print("|---|---|---|---|---|")
    for (name, _), r in zip(rows, results):
        print(f"| {name} | {r['pages']} | {len(r['never_paged'])} | {r['stuck']} | {r['events']} |")
    print(f"\nIncidents of the last row (title as PagerDuty keeps it → the latest alert's summary):")
    for i in states[-1]["incidents"]:
        state = "open" if i["open"] else "resolved"
        print(f"  {state:8} {i['summary'][:70]!r} → {i.get('latest_summary', '')[:70]!r}")
    ours, theirs = results[-1], results[0]
    failures = []
    if ours["pages"] >= theirs["pages"]:
        failures.append(f"the suggested set-up paged {ours['pages']} times, Alertmanager {theirs['pages']}")
    if ours["never_paged"]:
        failures.append(f"the suggested set-up never paged {', '.join(ours['never_paged'])}")
    if ours["stuck"]:
        failures.append(f"the suggested set-up left {ours['stuck']} incidents of resolved groups open")
    for f in failures:
        print(f"oncall: FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
