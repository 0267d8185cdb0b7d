#!/usr/bin/env python3
"""A fake PagerDuty Events API v2 for bench/oncall.sh: what an on-call engineer would see.

Usage: fake_pagerduty.py PORT

POST /v2/enqueue answers 202 naming the dedup_key, as PagerDuty does, and keeps PagerDuty's
incident rules (the same as src/pagerduty_model.rs): a trigger on a dedup_key with no open
incident opens one, and that is a page; a trigger on an open one only adds to it; a resolve
closes it; an acknowledge or resolve of no open incident is dropped. GET /state answers what
it holds, as JSON: the pages, and each incident with the bench's alert names (Bench...) its
events mentioned, so oncall.sh can tell which alert groups were paged and which stay open.
"""

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GROUP = re.compile(r"Bench[A-Z][A-Za-z]*")
LOCK = threading.Lock()
STATE = {"events": 0, "pages": 0, "incidents": []}
OPEN = {}  # (routing_key, dedup_key) -> index into STATE["incidents"]


def apply(event):
    """One alert event, as PagerDuty would file it."""
    lane = (event.get("routing_key", ""), event.get("dedup_key", ""))
    action = event.get("event_action")
    groups = set(GROUP.findall(json.dumps(event)))
    STATE["events"] += 1
    if action == "trigger":
        if lane not in OPEN:
            STATE["pages"] += 1
            summary = (event.get("payload") or {}).get("summary", "")
            STATE["incidents"].append({"dedup_key": lane[1], "summary": summary, "groups": [], "open": True})
            OPEN[lane] = len(STATE["incidents"]) - 1
        incident = STATE["incidents"][OPEN[lane]]
        incident["groups"] = sorted(set(incident["groups"]) | groups)
        # What the incident's alert says now; PagerDuty's title stays the first (`summary`).
        incident["latest_summary"] = (event.get("payload") or {}).get("summary", "")
    elif action == "resolve" and lane in OPEN:
        STATE["incidents"][OPEN.pop(lane)]["open"] = False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            event = json.loads(body)
        except ValueError:
            return self.answer(400, {"status": "invalid event", "message": "Event object is invalid"})
        if self.path == "/v2/enqueue":
            if not event.get("dedup_key"):
                # PagerDuty makes one up; a trigger without one is always a new incident.
                event["dedup_key"] = "fake-%d" % STATE["events"]
            with LOCK:
                apply(event)
        self.answer(202, {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")})

    def do_GET(self):
        with LOCK:
            self.answer(200, STATE)

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender stopped waiting (pagerhook shutting down at the end of the run)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
