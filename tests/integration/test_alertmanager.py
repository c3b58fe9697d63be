"""tests/integration/test_alertmanager.py - iocd standing in for an Alertmanager (API v2).
Alerts are posted byte for byte as Prometheus 2.42's notifier sends them (a compact JSON array,
keys in Go's order, times with milliseconds and the server's zone, '&' written \\u0026) and
become incidents dispatched over Kafka (a librdkafka mock cluster, a real consumer); re-sends
do not duplicate; an endsAt in the past resolves; an alert not re-sent resolves when its endsAt
passes; the table of active alerts survives kill -9; silences in Alertmanager's shape round
trip and hold back matching alerts; bad bodies get 400; tokens are enforced."""

import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, metric, run, wait_for  # noqa: E402
from test_incidents import MockKafka  # noqa: E402

PROM_HEADERS = {"Content-Type": "application/json", "User-Agent": "Prometheus/2.42.0"}
ICT = datetime.timezone(datetime.timedelta(hours=7))  # a Prometheus server in Hanoi


def go_time(t):
    """A time as strfmt.DateTime marshals it: RFC 3339, milliseconds, the local zone."""
    if t is None:
        return "0001-01-01T00:00:00.000Z"  # Go's zero time
    d = datetime.datetime.fromtimestamp(t, ICT)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d" % (d.microsecond // 1000) + "+07:00"


def prom_alert(labels, annotations=None, starts=None, ends=None, url=None):
    """models.PostableAlert in the order encoding/json writes its fields."""
    a = {"annotations": dict(sorted((annotations or {}).items())),
         "endsAt": go_time(ends), "startsAt": go_time(starts)}
    if url:
        a["generatorURL"] = url
    a["labels"] = dict(sorted(labels.items()))
    return a


def prom_body(alerts):
    """Compact like encoding/json, which also escapes <, > and & inside strings."""
    text = json.dumps(alerts, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .encode("utf-8"))


def post_alerts(d, alerts, headers=None):
    return d.post("/api/v2/alerts", prom_body(alerts), headers=dict(PROM_HEADERS, **(headers or {})))


def post_json(d, path, obj, headers=None):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return d.post(path, body, headers=dict({"Content-Type": "application/json"}, **(headers or {})))


def incidents(d, **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    return d.get("/api/v1/incidents?" + q).json()["data"]["incidents"]


def am_alerts(d, query=""):
    r = d.get("/api/v2/alerts" + query)
    eq(r.status, 200, "GET /api/v2/alerts (%s)" % r.text)
    return r.json()


PRESSURE = {"alertname": "WaterPressureLow", "severity": "critical", "domain": "water",
            "ward": "phu_xa", "instance": "pump-7:9100", "job": "scada"}
PRESSURE_ANN = {"summary": "Low water pressure, Phu Xa ward",
                "description": "Pressure under 1.5 bar for 5 minutes (now 1.1 bar).",
                "runbook_url": "https://wiki.example/runbooks/water-pressure"}
PRESSURE_URL = "http://prometheus:9090/graph?g0.expr=water_pressure_bar+%3C+1.5&g0.tab=1"


def test_prometheus_alert_becomes_an_incident_on_kafka_once_and_resolves():
    k = MockKafka()
    try:
        with Daemon("--kafka-brokers", k.bootstrap) as d:
            d.start()
            now = time.time()
            starts = int(now) - 300  # whole seconds: exact in both forms
            r = post_alerts(d, [prom_alert(PRESSURE, PRESSURE_ANN, starts, now + 240, PRESSURE_URL)])
            eq(r.status, 200, "posted (%s)" % r.text)
            eq(r.body, b"", "Alertmanager answers an empty 200")
            inc = wait_for(lambda: incidents(d), what="an incident")[0]
            eq(inc["rule"], "WaterPressureLow", "rule = alertname")
            eq(inc["state"], "firing", "state")
            eq(inc["severity"], "critical", "severity from the label")
            eq(inc["domain"], "water", "domain from the label")
            eq(inc["ward"], "phu_xa", "ward from the label")
            eq(inc["summary"], PRESSURE_ANN["summary"], "summary")
            eq(inc["description"], PRESSURE_ANN["description"], "description")
            eq(inc["runbook"], PRESSURE_ANN["runbook_url"], "runbook")
            eq(inc["labels"], PRESSURE, "labels as given")
            got = am_alerts(d)
            eq(len(got), 1, "one active alert")
            a = got[0]
            eq(a["fingerprint"], inc["fingerprint"], "the alert's fingerprint is its incident's")
            eq(a["labels"], PRESSURE, "labels")
            eq(a["annotations"], PRESSURE_ANN, "annotations")
            eq(a["generatorURL"], PRESSURE_URL, "generatorURL (\\u0026 decoded)")
            eq(a["status"], {"state": "active", "silencedBy": [], "inhibitedBy": []}, "status")
            eq(a["receivers"], [{"name": "iocd"}], "receivers")
            eq(a["startsAt"], datetime.datetime.fromtimestamp(starts, datetime.timezone.utc)
               .strftime("%Y-%m-%dT%H:%M:%S.000Z"), "startsAt kept, in UTC")
            msgs = k.consume(1)
            eq(len(msgs), 1, "the firing event on Kafka")
            eq(msgs[0]["key"], inc["fingerprint"], "keyed by fingerprint")
            eq(msgs[0]["headers"]["ce_type"], "iocd.incident.firing", "ce_type")
            eq(msgs[0]["event"]["incident"]["rule"], "WaterPressureLow", "the event's incident")
            # Prometheus re-sends every evaluation with a later endsAt: nothing new happens.
            for i in range(3):
                r = post_alerts(d, [prom_alert(PRESSURE, PRESSURE_ANN, starts, now + 300 + 60 * i,
                                               PRESSURE_URL)])
                eq(r.status, 200, "re-sent")
            eq(len(incidents(d)), 1, "no second incident")
            eq(am_alerts(d)[0]["endsAt"][:16],
               datetime.datetime.fromtimestamp(now + 420, datetime.timezone.utc)
               .strftime("%Y-%m-%dT%H:%M"), "endsAt follows the re-sends")
            # Resolved: Prometheus sends endsAt = the time it resolved, in the past.
            r = post_alerts(d, [prom_alert(PRESSURE, PRESSURE_ANN, starts, time.time() - 1,
                                           PRESSURE_URL)])
            eq(r.status, 200, "resolved posted")
            detail = d.get("/api/v1/incidents/%d" % inc["id"]).json()["data"]
            eq(detail["state"], "resolved", "resolved by the alert's endsAt")
            eq([e["type"] for e in detail["events"]], ["firing", "resolved"], "history")
            eq(am_alerts(d), [], "no active alert")
            # Prometheus keeps re-sending the resolved alert for a while: still nothing new.
            post_alerts(d, [prom_alert(PRESSURE, PRESSURE_ANN, starts, time.time() - 1,
                                       PRESSURE_URL)])
            msgs = k.consume(2)
            eq([m["event"]["event"] for m in msgs], ["firing", "resolved"], "events on Kafka")
            wait_for(lambda: metric(d.metrics(), "iocd_outbox_delivered_total") >= 2,
                     what="delivered")
            ms = d.metrics()
            eq(metric(ms, "iocd_outbox_delivered_total"), 2.0, "two events, no duplicates")
            eq(metric(ms, "iocd_external_alerts_received_total"), 6.0, "received counted")
            eq(metric(ms, "iocd_external_alerts_active"), 0.0, "none active")
    finally:
        k.close()


def test_an_alert_not_re_sent_resolves_when_its_ends_at_passes():
    with Daemon() as d:
        d.start()
        now = time.time()
        short = {"alertname": "CameraOffline", "device": "cam-31", "ward": "gia_sang",
                 "severity": "warning", "domain": "cameras"}
        steady = {"alertname": "LampOut", "device": "lamp-9", "severity": "Info"}
        r = post_alerts(d, [prom_alert(short, {"summary": "cam-31 offline"}, now, now + 2),
                            prom_alert(steady, {}, now, None)])  # no endsAt: resolve_timeout
        eq(r.status, 200, "posted (%s)" % r.text)
        got = {a["labels"]["alertname"]: a for a in am_alerts(d)}
        eq(sorted(got), ["CameraOffline", "LampOut"], "both active")
        ends = datetime.datetime.strptime(got["LampOut"]["endsAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
        left = ends.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()
        check(280 < left <= 301, "no endsAt: 5 minutes from now (%.0f s)" % left)
        by_rule = {i["rule"]: i for i in incidents(d)}
        eq(by_rule["LampOut"]["severity"], "info", "severity words are mapped")
        eq(by_rule["LampOut"]["domain"], "other", "no domain label: other")
        eq(by_rule["LampOut"]["summary"], "LampOut", "no summary: the alertname")
        cam = by_rule["CameraOffline"]["id"]
        wait_for(lambda: d.get("/api/v1/incidents/%d" % cam).json()["data"]["state"] == "resolved",
                 timeout=15, what="resolved when endsAt passed")
        eq([a["labels"]["alertname"] for a in am_alerts(d)], ["LampOut"], "only the steady one")
        eq(d.get("/api/v1/incidents/%d" % by_rule["LampOut"]["id"]).json()["data"]["state"],
           "firing", "the other still firing")
        check(metric(d.metrics(), "iocd_external_alerts_expired_total") == 1, "expiry counted")


def test_active_alerts_survive_kill_9_and_expire_afterwards():
    with Daemon() as d:
        d.start()
        now = time.time()
        long_ = {"alertname": "DrainLevelHigh", "ward": "phu_xa", "device": "drain-3"}
        short = {"alertname": "DrainLevelHigh", "ward": "gia_sang", "device": "drain-8"}
        r = post_alerts(d, [prom_alert(long_, {"summary": "drain-3 high"}, now, now + 3600),
                            prom_alert(short, {"summary": "drain-8 high"}, now, now + 4)])
        eq(r.status, 200, "posted (%s)" % r.text)
        eq(len(incidents(d, state="firing")), 2, "two incidents")
        before = {a["fingerprint"]: a for a in am_alerts(d)}
        d.kill9()
        d.start()
        after = {a["fingerprint"]: a for a in am_alerts(d) if a["labels"]["device"] == "drain-3"}
        eq(len(after), 1, "the long alert is still active after kill -9")
        fp = next(iter(after))
        eq(after[fp]["annotations"], before[fp]["annotations"], "annotations kept")
        eq(after[fp]["endsAt"], before[fp]["endsAt"], "endsAt kept")
        # The short one expires without a re-send, with no process that saw it posted.
        wait_for(lambda: [i["labels"]["device"] for i in incidents(d, state="firing")] == ["drain-3"],
                 timeout=20, what="the short alert resolved after the restart")
        eq([a["labels"]["device"] for a in am_alerts(d)], ["drain-3"], "one active alert")
        # A re-send after the restart changes nothing.
        post_alerts(d, [prom_alert(long_, {"summary": "drain-3 high"}, now, now + 3600)])
        eq(len(incidents(d)), 2, "still two incidents")


def silence_body(matchers, hours=1, **extra):
    now = time.time()
    body = {"matchers": matchers,
            "startsAt": go_time(now - 5), "endsAt": go_time(now + 3600 * hours),
            "createdBy": "minh@ioc", "comment": "pump station maintenance"}
    body.update(extra)
    return body


def test_v2_silences_round_trip_and_hold_back_a_matching_alert():
    with Daemon() as d:
        d.start()
        matchers = [{"name": "alertname", "value": "WaterPressureLow", "isRegex": False, "isEqual": True},
                    {"name": "ward", "value": "phu_.*", "isRegex": True, "isEqual": True},
                    {"name": "instance", "value": 'odd "pump" \\ 2', "isRegex": False, "isEqual": False},
                    {"name": "job", "value": "test.*", "isRegex": True, "isEqual": False}]
        r = post_json(d, "/api/v2/silences", silence_body(matchers))
        eq(r.status, 200, "silence created (%s)" % r.text)
        sid = r.json()["silenceID"]
        check(isinstance(sid, str) and sid, "an id as a string")
        lst = d.get("/api/v2/silences").json()
        eq(len(lst), 1, "one silence")
        s = lst[0]
        eq(s["id"], sid, "id")
        eq(s["status"], {"state": "active"}, "active")
        eq(s["matchers"], matchers, "matchers round trip")
        eq(s["createdBy"], "minh@ioc", "createdBy")
        eq(s["comment"], "pump station maintenance", "comment")
        for key in ("startsAt", "endsAt", "updatedAt"):
            check(s[key].endswith("Z"), "%s is a time: %r" % (key, s[key]))
        eq(d.get("/api/v2/silence/%s" % sid).json(), s, "GET one")
        v1 = d.get("/api/v1/silences").json()["data"][0]["matchers"]
        eq(v1, '{alertname="WaterPressureLow", ward=~"phu_.*", instance!="odd \\"pump\\" \\\\ 2", '
               'job!~"test.*"}', "stored as iocd's selector")
        eq([x["id"] for x in d.get('/api/v2/silences?filter=alertname%3D"WaterPressureLow"').json()],
           [sid], "filter that matches")
        eq(d.get("/api/v2/silences?filter=alertname%3DOther").json(), [], "filter that does not")
        # An alert it matches opens no incident; one in another ward does.
        now = time.time()
        held = prom_alert(PRESSURE, PRESSURE_ANN, now, now + 600)
        other = prom_alert(dict(PRESSURE, ward="gia_sang"), PRESSURE_ANN, now, now + 600)
        eq(post_alerts(d, [held, other]).status, 200, "posted")
        eq([i["ward"] for i in incidents(d)], ["gia_sang"], "only the unsilenced alert")
        check(metric(d.metrics(), "iocd_alerts_silenced_total") >= 1, "silenced counted")
        states = {a["labels"]["ward"]: a["status"] for a in am_alerts(d)}
        eq(states["phu_xa"], {"state": "suppressed", "silencedBy": [sid], "inhibitedBy": []},
           "suppressed, by the silence")
        eq(states["gia_sang"]["state"], "active", "the other is active")
        eq([a["labels"]["ward"] for a in am_alerts(d, "?silenced=false")], ["gia_sang"],
           "silenced=false hides it")
        eq([a["labels"]["ward"] for a in am_alerts(d, "?active=false")], ["phu_xa"],
           "active=false shows only the silenced")
        eq([a["labels"]["ward"] for a in am_alerts(d, '?filter=ward%3D"phu_xa"')], ["phu_xa"],
           "filter")
        eq(am_alerts(d, "?receiver=other.*"), [], "another receiver")
        groups = d.get("/api/v2/alerts/groups").json()
        eq(len(groups), 1, "one group")
        eq(groups[0]["receiver"], {"name": "iocd"}, "its receiver")
        eq(len(groups[0]["alerts"]), 2, "both alerts in it")
        # Updating (id given) replaces it; expiring ends it; then the alert opens its incident.
        r = post_json(d, "/api/v2/silences", silence_body(matchers[:2], id=sid,
                                                          comment="extended"))
        eq(r.status, 200, "updated (%s)" % r.text)
        sid2 = r.json()["silenceID"]
        check(sid2 != sid, "a new id for the update")
        eq(d.get("/api/v2/silence/%s" % sid).json()["status"]["state"], "expired", "old expired")
        r = d.request("DELETE", "/api/v2/silence/%s" % sid2)
        eq(r.status, 200, "expired (%s)" % r.text)
        eq(d.get("/api/v2/silence/%s" % sid2).json()["status"]["state"], "expired", "state")
        eq(d.request("DELETE", "/api/v2/silence/999").status, 404, "unknown silence")
        eq(d.request("DELETE", "/api/v2/silence/abc").status, 404, "not an id")
        eq(d.get("/api/v2/silence/999").status, 404, "GET unknown")
        eq(post_alerts(d, [held]).status, 200, "re-sent after the silence")
        eq(sorted(i["ward"] for i in incidents(d)), ["gia_sang", "phu_xa"], "now it opens")
        eq(am_alerts(d, '?filter=ward%3D"phu_xa"')[0]["status"]["state"], "active", "active")


def test_bad_bodies_get_400_with_a_reason():
    with Daemon() as d:
        d.start()
        now = time.time()

        def refused(body, want, status=400):
            r = d.post("/api/v2/alerts", body if isinstance(body, bytes) else prom_body(body),
                       headers=PROM_HEADERS)
            eq(r.status, status, "status for %r (%s)" % (body[:80], r.text))
            msg = r.json()
            check(isinstance(msg, str) and want in msg, "reason %r in %r" % (want, msg))

        refused(b"", "empty")
        refused(b"not json", "invalid JSON at byte 1")
        refused(b'[{"labels": {"alertname": "x"}},]', "invalid JSON")
        refused(b'{"labels": {"alertname": "x"}}', "expected a JSON array")
        refused([{"annotations": {}}], "labels are required")
        refused([{"labels": {}}], "at least one label pair")
        refused([{"labels": {"job": "x"}}], "no alertname label")
        refused([{"labels": {"alertname": "x", "9lives": "y"}}], "invalid name")
        refused([{"labels": {"alertname": 5}}], "must be a string")
        refused([{"labels": {"alertname": "x"}, "startsAt": "yesterday"}], "startsAt")
        refused([prom_alert({"alertname": "x"}, None, now, now - 60)], "start time must be before")
        refused([{"labels": {"alertname": "x", "v": "y" * 5000}}], "longer than")
        refused(b"[" * 40 + b"]" * 40, "nested too deeply")
        many = [{"labels": {"alertname": "a%d" % i}} for i in range(5001)]
        refused(many, "at most 5000", status=413)
        # A good alert beside a bad one: the good one is applied, the answer says what was not.
        r = post_alerts(d, [{"labels": {}}, prom_alert({"alertname": "Good"}, None, now, now + 600)])
        eq(r.status, 400, "mixed")
        eq(r.json(), "1 of 2 alerts refused: alert 1: at least one label pair required", "reason")
        eq([i["rule"] for i in incidents(d)], ["Good"], "the good one applied")
        eq(incidents(d, state="resolved"), [], "nothing else")
        # Silences.
        for body, want in [(b"[]", "expected a JSON object"),
                           (silence_body([]), "at least one matcher"),
                           (silence_body([{"name": "x"}]), "\"value\""),
                           (silence_body([{"name": "a-b", "value": "v"}]), "invalid label name"),
                           (silence_body([{"name": "x", "value": "(", "isRegex": True}]), "matchers"),
                           (silence_body([{"name": "x", "value": ".*", "isRegex": True}]), "empty"),
                           (silence_body([{"name": "x", "value": "v", "isRegex": "yes"}]), "true or false"),
                           (silence_body([{"name": "x", "value": "v"}], hours=-1), "in the past"),
                           (silence_body([{"name": "x", "value": "v"}], createdBy=""), "createdBy")]:
            r = post_json(d, "/api/v2/silences", body)
            eq(r.status, 400, "silence %r (%s)" % (body, r.text))
            check(want in r.json(), "reason %r in %r" % (want, r.json()))
        r = post_json(d, "/api/v2/silences", silence_body([{"name": "x", "value": "v"}], id="77"))
        eq(r.status, 404, "update of an unknown silence")
        eq(d.get("/api/v2/silences").json(), [], "no silence made")
        eq(d.get("/api/v2/alerts?active=maybe").status, 400, "a bad flag")
        eq(d.get("/api/v2/alerts?filter=%3D%3Dx").status, 400, "a bad filter")
        eq(d.request("PUT", "/api/v2/alerts", b"[]").status, 405, "wrong method")


def test_tokens_are_enforced():
    cfg = ('return { tokens = {\n'
           '  { name = "grafana", token = "read-token-0123456789", role = "read" },\n'
           '  { name = "prometheus", token = "write-token-0123456789", role = "write" } } }\n')
    read = {"Authorization": "Bearer read-token-0123456789"}
    write = {"Authorization": "Bearer write-token-0123456789"}
    with Daemon(config=cfg) as d:
        d.start()
        now = time.time()
        body = [prom_alert({"alertname": "T"}, None, now, now + 600)]
        eq(post_alerts(d, body).status, 401, "no token")
        eq(post_alerts(d, body, read).status, 403, "a read token cannot post")
        eq(post_alerts(d, body, write).status, 200, "the write token can")
        eq(d.get("/api/v2/alerts").status, 401, "reading needs a token")
        eq(len(d.get("/api/v2/alerts", headers=read).json()), 1, "read token lists")
        sil = silence_body([{"name": "alertname", "value": "T", "isRegex": False}])
        eq(post_json(d, "/api/v2/silences", sil, read).status, 403, "read cannot silence")
        r = post_json(d, "/api/v2/silences", sil, write)
        eq(r.status, 200, "write can silence")
        sid = r.json()["silenceID"]
        eq(d.request("DELETE", "/api/v2/silence/" + sid, headers=read).status, 403, "read cannot expire")
        eq(d.request("DELETE", "/api/v2/silence/" + sid, headers=write).status, 200, "write can")
        for path in ("/api/v2/silences", "/api/v2/status", "/api/v2/receivers", "/api/v2/alerts/groups"):
            eq(d.get(path).status, 401, path + " needs a token")
            eq(d.get(path, headers=read).status, 200, path + " with the read token")


def test_status_and_receivers_as_amtool_and_grafana_read_them():
    with Daemon() as d:
        d.start()
        st = d.get("/api/v2/status").json()
        eq(st["cluster"]["status"], "disabled", "no cluster")
        eq(st["cluster"]["peers"], [], "no peers")
        for key in ("version", "revision", "branch", "buildUser", "buildDate", "goVersion"):
            check(isinstance(st["versionInfo"][key], str), "versionInfo." + key)
        check("receiver: iocd" in st["config"]["original"], st["config"]["original"])
        check(st["uptime"].endswith("Z"), "uptime is the start time")
        eq(d.get("/api/v2/receivers").json(), [{"name": "iocd"}], "receivers")
        eq(d.get("/api/v2/alerts/groups").json(), [], "no group without alerts")


if __name__ == "__main__":
    run(globals())
