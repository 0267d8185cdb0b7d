"""The storm row of bench/run.sh (issue 28): on one routing key, 10 000 warning triggers from
one source, then one critical trigger from another source, then 500 resolves of storm alerts
(every 20th, spread over the storm); waits until pagerhook's queue is empty and reads, from
the fake PagerDuty's log of what it received and when, where the critical page and the
resolves went in the key's send order, how many of the key's sends they waited for after
they were accepted, and how long that was.

Run by bench/run.sh with the key paced at BENCH_STORM_RATE a minute (a faster rate than the
default 120 so that the row takes about two minutes, not 85). The number of the key's sends
an event waits for does not depend on the rate; during a storm (its burst long spent) each of
them is 500 ms at the default 120 a minute, which is how the waits at the default pacing are
computed.

Usage: python3 bench/storm.py HOOKS_URL TOKEN FAKE_URL ADMIN_URL RATE -> one JSON line
"""
import json, sys, time, urllib.request

hooks, token, fake, admin, rate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
STORM, RESOLVES, GROUP = 10_000, 500, 100


def now_us():
    return int(time.time() * 1_000_000)


def post(source, alerts):
    body = {
        "version": "4", "status": "firing", "receiver": "pagerhook", "groupKey": "{}:{alertname=\"Bench\"}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am.bench",
        "alerts": alerts,
    }
    req = urllib.request.Request(f"{hooks}/{source}", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 202, r.status
    return now_us()


def alert(name, i, status, severity):
    return {"status": status, "labels": {"alertname": name, "instance": f"host-{i}", "severity": severity},
            "annotations": {"summary": f"{name} {i}"}, "startsAt": "2024-06-03T09:41:30Z",
            # As Alertmanager sends them: a firing alert's endsAt is the zero time.
            "endsAt": "2024-06-03T10:11:30Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "fingerprint": f"{name.lower()}-{i:08x}"}


def depth():
    with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("pagerhook_queue_depth "):
                return float(line.split()[1])
    return -1


t_storm = now_us()
for g in range(STORM // GROUP):
    post("alertmanager", [alert("BenchStorm", g * GROUP + i, "firing", "warning") for i in range(GROUP)])
t_stormed = now_us()
t_critical = post("other", [alert("BenchCritical", 0, "firing", "critical")])
recovered = list(range(0, STORM, STORM // RESOLVES))
for g in range(0, RESOLVES, GROUP):
    post("alertmanager", [alert("BenchStorm", i, "resolved", "warning") for i in recovered[g:g + GROUP]])
t_resolved = now_us()

deadline = time.time() + 900
while depth() != 0 and time.time() < deadline:
    time.sleep(0.5)
drained = depth() == 0
with urllib.request.urlopen(f"{fake}/log", timeout=60) as r:
    log = json.load(r)

# Position 1 is the first event the fake received after the storm began.
log = [e for e in log if e[0] >= t_storm]
pos = {i + 1: e for i, e in enumerate(log)}
def where(pred):
    return [(p, e) for p, e in pos.items() if pred(e)]
critical = where(lambda e: e[2].startswith("alertmanager/BenchCritical/") and e[1] == "trigger")
# The mapping's key ends with the Alertmanager's hash (`/am-…`); a resolve is also sent under
# the key of earlier versions (no hash), for incidents opened before an upgrade.
resolves = where(lambda e: e[2].startswith("alertmanager/BenchStorm/") and "/am-" in e[2] and e[1] == "resolve")
compat = where(lambda e: e[2].startswith("alertmanager/BenchStorm/") and "/am-" not in e[2] and e[1] == "resolve")
last = {}
for _, e in sorted(pos.items()):
    last[e[2]] = e[1]
recovered_keys = {f"benchstorm-{i:08x}" for i in recovered}
left_open = sum(1 for k, a in last.items() if a == "trigger" and k.split("/")[2] in recovered_keys)
with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as r:
    superseded = sum(float(l.split()[1]) for l in r.read().decode().splitlines()
                     if l.startswith("pagerhook_events_superseded_total"))
page = where(lambda e: e[2].startswith("pagerhook/") and e[2].endswith("/storm_waiting") and e[1] == "trigger")
storm_triggers = where(lambda e: e[2].startswith("alertmanager/BenchStorm/") and e[1] == "trigger")


def waited(since_us, until_us):
    """How many of the key's sends came after `since_us` and before `until_us`."""
    return sum(1 for e in log if since_us < e[0] < until_us)


def at_default(slots):
    """Seconds that many of the key's sends take at 120 a minute, its burst spent."""
    return slots / 2


def secs(us):
    return round(us / 1e6, 1)


out = {
    "rate": rate, "drained": drained, "received": len(log), "storm_triggers_sent": len(storm_triggers),
    "accept_storm_s": secs(t_stormed - t_storm), "accept_resolves_s": secs(t_resolved - t_critical),
    "critical_position": critical[0][0] if critical else None,
    "critical_wait_s": secs(critical[0][1][0] - t_critical) if critical else None,
    "critical_waited_sends": waited(t_critical, critical[0][1][0]) if critical else None,
    "critical_wait_at_default_s": at_default(waited(t_critical, critical[0][1][0])) if critical else None,
    "resolves_sent": len(resolves), "compat_resolves_sent": len(compat), "superseded": int(superseded),
    "recovered_left_open": left_open,
    "resolves_first_position": resolves[0][0] if resolves else None,
    "resolves_last_position": resolves[-1][0] if resolves else None,
    "resolves_last_after_s": secs(resolves[-1][1][0] - t_resolved) if resolves else None,
    "resolves_last_waited_sends": waited(t_resolved, resolves[-1][1][0]) if resolves else None,
    "resolves_last_at_default_s": at_default(waited(t_resolved, resolves[-1][1][0])) if resolves else None,
    "storm_page_position": page[0][0] if page else None,
}
print(json.dumps(out))
