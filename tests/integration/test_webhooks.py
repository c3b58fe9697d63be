"""tests/integration/test_webhooks.py - a route's webhook: incident events POSTed in
Alertmanager's webhook format to a real HTTP server in the test, in order, retried while the
endpoint fails, and re-sent after kill -9 until it answers 2xx: nothing lost, nothing
reordered."""

import http.server
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, metric, run, wait_for  # noqa: E402
from test_incidents import post_json  # noqa: E402


class Receiver:
    """An HTTP endpoint that records what is POSTed, answering `status` (500: down)."""

    def __init__(self):
        self.got, self.status, self.lock = [], 200, threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    status = outer.status
                    if status == 200:
                        outer.got.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def events(self):
        with self.lock:
            return [(g["iocd"]["event"], g["iocd"]["incident"]["id"]) for g in self.got]

    def close(self):
        self.srv.shutdown()


def config(url):
    return 'return { routes = { { match = \'{domain="water"}\', webhook = "%s" } } }\n' % url


def test_webhook_events_arrive_in_order_through_outages_and_kill_9():
    rx = Receiver()
    try:
        with Daemon(config=config(rx.url)) as d:
            d.start()
            r = post_json(d, "/api/v1/incidents", {"domain": "water", "ward": "tan_lap",
                                                   "description": "Vỡ ống", "severity": "critical"})
            iid = r.json()["data"]["id"]
            post_json(d, "/api/v1/incidents", {"domain": "lighting", "description": "Đèn tắt"})
            wait_for(lambda: rx.events() == [("firing", iid)], what="the firing event")
            g = rx.got[0]
            eq((g["version"], g["status"], g["receiver"], len(g["alerts"])),
               ("4", "firing", "iocd", 1), "Alertmanager's webhook shape")
            a = g["alerts"][0]
            eq((a["status"], a["labels"]["domain"], a["annotations"]["description"],
                a["endsAt"]), ("firing", "water", "Vỡ ống", "0001-01-01T00:00:00Z"), "the alert")
            check(a["startsAt"].endswith("Z") and a["fingerprint"] == g["groupKey"], repr(a))
            # The endpoint goes down: events wait, in order, and are retried.
            rx.status = 500
            post_json(d, "/api/v1/incidents/%d/ack" % iid, {"by": "Lan", "note": "crew"})
            post_json(d, "/api/v1/incidents/%d/comment" % iid, {"by": "Lan", "text": "valve"})
            wait_for(lambda: metric(d.metrics(), "iocd_webhook_retries_total") >= 1,
                     what="a failed delivery")
            eq(metric(d.metrics(), "iocd_webhook_queue_depth"), 2, "two events waiting")
            d.kill9()
            d.start()
            post_json(d, "/api/v1/incidents/%d/resolve" % iid, {"by": "Lan", "reason": "fixed"})
            rx.status = 200
            wait_for(lambda: len(rx.events()) == 4, timeout=60, what="every event delivered")
            eq(rx.events(), [("firing", iid), ("acknowledged", iid), ("updated", iid),
                             ("resolved", iid)], "in order, each once, across kill -9")
            last = rx.got[-1]
            eq((last["status"], last["alerts"][0]["status"]), ("resolved", "resolved"),
               "the resolution")
            check(last["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z", "endsAt set")
            wait_for(lambda: metric(d.metrics(), "iocd_webhook_queue_depth") == 0,
                     what="the queue drained")
    finally:
        rx.close()


def test_a_webhook_that_is_not_a_url_stops_the_start():
    with Daemon(config=config("ftp://x")) as d:
        d.start(wait=False)
        eq(d.proc.wait(timeout=20), 2, "exit code")
        check("routes[1].webhook: expected an http:// or https:// URL" in d.log_text(),
              d.log_text()[-400:])


if __name__ == "__main__":
    run(globals())
