"""tests/integration/test_noise.py - noise control end to end with short settings: an
unacknowledged incident repeats and escalates on Kafka (escalations also on a supervisor's
topic), acknowledging stops both, and the settings are shown by --help. The timing itself is
covered with a controlled clock in tests/unit/test_alerts_noise.c."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, metric, run, run_iocd, wait_for  # noqa: E402
from test_incidents import KAFKATOOL, MockKafka, post_json  # noqa: E402


def consume(k, topic, count, timeout=30):
    p = subprocess.run([KAFKATOOL, "consume", k.bootstrap, topic, str(count), str(timeout)],
                       capture_output=True, text=True, timeout=timeout + 30)
    return [json.loads(json.loads(line)["value"]) for line in p.stdout.splitlines() if line]


def test_unacknowledged_incident_repeats_and_escalates_until_acknowledged():
    k = MockKafka()
    try:
        with Daemon("--kafka-brokers", k.bootstrap, "--repeat-interval", "1s",
                    "--escalate-after", "2s", "--escalation-topic", "iocd.supervisor") as d:
            d.start()
            r = post_json(d, "/api/v1/incidents", {"domain": "lighting", "ward": "phu_xa",
                                                   "description": "Đèn đường tắt cả dãy",
                                                   "severity": "info"})
            eq(r.status, 201, "report")
            iid = r.json()["data"]["id"]
            wait_for(lambda: d.get("/api/v1/incidents/%d" % iid).json()["data"]["severity"] ==
                     "critical", timeout=30, what="escalated twice: info, warning, critical")
            inc = d.get("/api/v1/incidents/%d" % iid).json()["data"]
            kinds = [e["type"] for e in inc["events"]]
            eq(kinds.count("escalated"), 2, "two escalations: %r" % kinds)
            check("repeated" in kinds, "repeats while unacknowledged: %r" % kinds)
            r = post_json(d, "/api/v1/incidents/%d/ack" % iid, {"by": "Lan", "note": "seen"})
            eq(r.status, 200, "ack")
            n = len(r.json()["data"]["events"])
            # Nothing more after it (checked at the end, seconds later).
            before = metric(d.metrics(), "iocd_incident_repeats_total")
            msgs = consume(k, "iocd.incidents", n)
            eq([m["event"] for m in msgs], [e["type"] for e in
                                             d.get("/api/v1/incidents/%d" % iid)
                                             .json()["data"]["events"]][:len(msgs)],
               "every event on Kafka, in order")
            eq(msgs[-1]["event"], "acknowledged", "the last is the acknowledgement")
            sup = consume(k, "iocd.supervisor", 2)
            eq([(m["event"], m["incident"]["severity"]) for m in sup],
               [("escalated", "warning"), ("escalated", "critical")],
               "escalations also on the supervisor's topic")
            eq(metric(d.metrics(), "iocd_incident_repeats_total"), before,
               "no repeat after the acknowledgement")
    finally:
        k.close()


ROUTES = """return {
  routes = {
    { match = '{domain="water", severity="critical"}', topic = "iocd.water-urgent",
      repeat_interval = "1s" },
    { match = '{domain="water"}', topic = "iocd.water", escalate_after = "0s" },
  },
}
"""


def test_routes_send_by_domain_and_severity_with_their_own_settings():
    k = MockKafka()
    try:
        with Daemon("--kafka-brokers", k.bootstrap, "--escalate-after", "1s",
                    config=ROUTES) as d:
            d.start()
            ids = {}
            for name, body in (("burst", {"domain": "water", "severity": "critical",
                                          "description": "Vỡ ống chính"}),
                               ("leak", {"domain": "water", "severity": "info",
                                         "description": "Rò rỉ nhỏ"}),
                               ("lamp", {"domain": "lighting", "severity": "info",
                                         "description": "Đèn tắt"})):
                r = post_json(d, "/api/v1/incidents", dict(body, ward="tan_lap"))
                eq(r.status, 201, "report %s" % name)
                ids[name] = r.json()["data"]["id"]

            def events(name):
                return [e["type"] for e in
                        d.get("/api/v1/incidents/%d" % ids[name]).json()["data"]["events"]]
            # The urgent water route repeats every second; the global escalation (1 s) moves
            # the lamp up; the other water route never escalates.
            wait_for(lambda: events("burst").count("repeated") >= 2, what="burst repeats")
            wait_for(lambda: "escalated" in events("lamp"), what="the lamp escalated")
            eq(events("leak"), ["firing"], "the leak: its route never escalates")
            urgent = consume(k, "iocd.water-urgent", 3)
            eq([(m["event"], m["incident"]["id"]) for m in urgent],
               [("firing", ids["burst"]), ("repeated", ids["burst"]),
                ("repeated", ids["burst"])], "the urgent water route's topic")
            eq([(m["event"], m["incident"]["id"]) for m in consume(k, "iocd.water", 1)],
               [("firing", ids["leak"])], "the water route's topic")
            eq([(m["event"], m["incident"]["id"]) for m in consume(k, "iocd.incidents", 2)],
               [("firing", ids["lamp"]), ("escalated", ids["lamp"])],
               "everything else on the incident topic")
    finally:
        k.close()


def test_a_route_without_match_is_refused_at_start():
    with Daemon(config='return { routes = { { topic = "x" } } }\n') as d:
        d.start(wait=False)
        eq(d.proc.wait(timeout=20), 2, "exit code of a bad config")
        check("routes[1] needs match" in d.log_text(), d.log_text()[-500:])


def test_recurring_silence_through_the_api():
    with Daemon("--timezone", "Asia/Ho_Chi_Minh") as d:
        d.start()
        r = post_json(d, "/api/v1/silences", {"matchers": '{ward="tan_lap", domain="water"}',
                                              "every": "weekdays", "from": "22:00",
                                              "to": "02:00", "created_by": "Lan",
                                              "comment": "nightly pump maintenance"})
        eq(r.status, 201, "a recurring silence without an end (%s)" % r.text)
        s = r.json()["data"]
        eq((s["every"], s["from"], s["to"]), ("mon,tue,wed,thu,fri", "22:00", "02:00"),
           "its window")
        check(s["state"] in ("active", "pending"), "active now or waiting for its window")
        for bad in ({"every": "someday", "from": "22:00", "to": "02:00"},
                    {"every": "daily", "from": "22:00"},
                    {"every": "daily", "from": "22:61", "to": "02:00"}):
            body = dict(bad, matchers='{ward="x"}', created_by="Lan", comment="x")
            r = post_json(d, "/api/v1/silences", body)
            eq(r.status, 400, "refused: %r" % bad)
            check("HH:MM" in r.json()["error"], r.json()["error"])
        r = post_json(d, "/api/v1/silences", {"matchers": "{}", "ends_at": "2099-01-01T00:00:00Z",
                                              "created_by": "Lan", "comment": "everything"})
        eq(r.status, 400, "a silence of everything is refused")
        d.stop()
        d.start()
        eq([x["every"] for x in d.get("/api/v1/silences").json()["data"]],
           ["mon,tue,wed,thu,fri"], "kept across a restart")


def test_noise_settings_are_documented_in_help():
    out = run_iocd("serve", "--help")[1]
    for flag in ("--group-wait", "--repeat-interval", "--escalate-after", "--escalation-topic",
                 "--flap-window", "--flap-changes"):
        check(flag in out, "%s in serve --help" % flag)


if __name__ == "__main__":
    run(globals())
