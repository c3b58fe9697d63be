"""tests/integration/test_devices.py - the device registry through the real daemon: CSV and JSON
uploads (RFC 4180 quoting, Vietnamese addresses), bad rows rejected with their line while the
rest is stored, GET one and all, DELETE, the body cap, tokens, kill -9, and incidents enriched
from it: a rule's (through to its Kafka event) and a manual report."""

import gzip
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, metric, run, wait_for  # noqa: E402
from test_incidents import EXAMPLES, MockKafka, camera, post_json  # noqa: E402

CSV = ("device,kind,domain,ward,address,latitude,longitude\n"
       'cam-31,camera,cameras,gia_sang,"Số 12, đường ""Hoàng Văn Thụ"", Gia Sàng",21.5942,105.8412\n'
       'dr-7,drain,drainage,phu_xa,"Tổ 5,\nphường Phú Xá",21.5771,105.8551\n'
       "sl-0101,lamp,lighting,phu_xa,Ngõ 3 Phú Xá,,\n")


def upload(d, body, ctype="text/csv", method="PUT", headers=None):
    h = {"Content-Type": ctype} if ctype else {}
    h.update(headers or {})
    if isinstance(body, str):
        body = body.encode()
    return d.request(method, "/api/v1/devices", body=body, headers=h)


def registry(d, query="", headers=None):
    r = d.get("/api/v1/devices" + query, headers=headers)
    eq(r.status, 200, "list (%s)" % r.text)
    data = r.json()["data"]
    eq(data["total"], len(data["devices"]), "total")
    return {x["device"]: x for x in data["devices"]}


def test_csv_upload_get_one_and_all_and_delete():
    with Daemon() as d:
        d.start()
        r = upload(d, CSV)
        eq(r.status, 200, "upload (%s)" % r.text)
        eq(r.json()["status"], "success", "status")
        eq(r.json()["data"], {"stored": 3, "rejected": 0, "removed": 0, "devices": 3, "errors": []},
           "counts")
        got = registry(d)
        eq(sorted(got), ["cam-31", "dr-7", "sl-0101"], "ids, sorted")
        eq(got["cam-31"], {"device": "cam-31", "kind": "camera", "domain": "cameras",
                           "ward": "gia_sang", "address": 'Số 12, đường "Hoàng Văn Thụ", Gia Sàng',
                           "latitude": 21.5942, "longitude": 105.8412}, "quoted commas and quotes")
        eq(got["dr-7"]["address"], "Tổ 5, phường Phú Xá", "a line break in a quoted field")
        eq((got["sl-0101"]["latitude"], got["sl-0101"]["longitude"]), (None, None), "no position")
        eq(sorted(registry(d, "?ward=phu_xa")), ["dr-7", "sl-0101"], "filtered by ward")
        eq(sorted(registry(d, "?kind=camera")), ["cam-31"], "filtered by kind")
        page = d.get("/api/v1/devices?limit=1&offset=1").json()["data"]
        eq(([x["device"] for x in page["devices"]], page["total"]), (["dr-7"], 3), "a page")
        r = d.get("/api/v1/devices/cam-31")
        eq(r.status, 200, "one")
        eq(r.json()["data"], got["cam-31"], "one is as listed")
        eq(d.get("/api/v1/devices/cam-99").status, 404, "unknown device")
        eq(metric(d.metrics(), "iocd_devices"), 3, "gauge")
        r = d.request("DELETE", "/api/v1/devices/sl-0101")
        eq(r.status, 200, "delete (%s)" % r.text)
        eq(r.json()["data"]["device"], "sl-0101", "the deleted device")
        eq(d.get("/api/v1/devices/sl-0101").status, 404, "gone")
        eq(d.request("DELETE", "/api/v1/devices/sl-0101").status, 404, "deleted twice")
        eq(d.request("DELETE", "/api/v1/devices").status, 400, "DELETE needs an id")
        eq(d.request("PUT", "/api/v1/devices/cam-31", body=b"x").status, 405, "PUT one")
        eq(metric(d.metrics(), "iocd_devices"), 2, "gauge after delete")
        # What GET gives can be PUT back as JSON.
        listed = d.get("/api/v1/devices").json()["data"]["devices"]
        r = upload(d, json.dumps(listed), "application/json")
        eq(r.json()["data"]["stored"], 2, "round trip (%s)" % r.text)
        eq(d.get("/api/v1/devices").json()["data"]["devices"], listed, "unchanged by the round trip")


def test_json_upload_update_replace_and_formats():
    with Daemon() as d:
        d.start()
        items = [{"device": "cam-1", "kind": "camera", "ward": "tan_lap", "latitude": 21.6,
                  "longitude": 105.8},
                 {"id": "đèn số 7", "kind": "lamp", "address": "Đường Lương Ngọc Quyến"}]
        r = upload(d, json.dumps(items, ensure_ascii=False), "application/json; charset=utf-8")
        eq(r.status, 200, "JSON upload (%s)" % r.text)
        r = d.get("/api/v1/devices/" + urllib.parse.quote("đèn số 7"))
        eq(r.status, 200, "an id with spaces and accents, percent-encoded (%s)" % r.text)
        eq(r.json()["data"]["address"], "Đường Lương Ngọc Quyến", "address")
        # POST adds and updates; an update replaces the whole device.
        r = upload(d, json.dumps([{"device": "cam-1", "address": "new"}, {"device": "cam-2"}]),
                   "application/json", method="POST")
        eq(r.json()["data"], {"stored": 2, "rejected": 0, "removed": 0, "devices": 3, "errors": []},
           "update (%s)" % r.text)
        eq(registry(d)["cam-1"]["address"], "new", "updated")
        eq(registry(d)["cam-1"]["ward"], None, "the whole device is replaced")
        # PUT replaces: what it does not name is removed.
        r = upload(d, "device,ward\ncam-2,phu_xa\n")
        eq(r.json()["data"]["removed"], 2, "removed by the replacement")
        eq(list(registry(d)), ["cam-2"], "only what the PUT named")
        # The format from the body when the type says nothing (curl -d sends a form type).
        r = upload(d, '[{"device": "j-1"}]', "application/x-www-form-urlencoded", method="POST")
        eq(r.status, 200, "JSON without its type (%s)" % r.text)
        r = upload(d, "device\nc-1\n", None, method="POST")
        eq(r.status, 200, "CSV without a type (%s)" % r.text)
        eq(sorted(registry(d)), ["c-1", "cam-2", "j-1"], "both added")
        eq(upload(d, "<devices/>", "application/xml").status, 415, "XML")
        eq(upload(d, "device\nx\n", "text/csv; charset=windows-1258").status, 415, "not UTF-8")
        # gzip bodies are accepted.
        r = upload(d, gzip.compress(b"device,ward\nz-1,phu_xa\n"), "text/csv", method="POST",
                   headers={"Content-Encoding": "gzip"})
        eq(r.status, 200, "gzip (%s)" % r.text)
        check("z-1" in registry(d), "the gzip upload stored")


def test_bad_rows_are_rejected_with_line_numbers_and_the_rest_kept():
    with Daemon() as d:
        d.start()
        body = ("device,ward,latitude,longitude\n"   # 1
                "ok-1,phu_xa,21.6,105.8\n"            # 2
                "bad-lat,phu_xa,91,105.8\n"           # 3
                "short,phu_xa\n"                      # 4
                '"multi","line\n'                     # 5
                'ward",21.6,105.8\n'                  # 6: a line break in a ward
                "ok-2,gia_sang,,\n"                   # 7
                "ok-1,again,,\n"                      # 8
                ",phu_xa,,\n"                         # 9
                "comma,phu_xa,\"21,6\",105.8\n")      # 10
        r = upload(d, body)
        eq(r.status, 400, "partial")
        j = r.json()
        eq(j["status"], "error", "status")
        eq(j["errorType"], "bad_data", "type")
        eq(j["error"], "6 rows rejected, 2 stored", "message")
        eq((j["data"]["stored"], j["data"]["rejected"], j["data"]["devices"]), (2, 6, 2), "counts")
        lines = [(e["line"], e["reason"]) for e in j["data"]["errors"]]
        eq([n for n, _ in lines], [3, 4, 5, 8, 9, 10], "the lines")
        check("latitude 91 is out of range" in lines[0][1], lines[0][1])
        check("2 fields where the header has 4" in lines[1][1], lines[1][1])
        check("ward contains a control character" in lines[2][1], lines[2][1])
        check('"ok-1" is already on line 2' in lines[3][1], lines[3][1])
        check("no device id" in lines[4][1], lines[4][1])
        check("decimals take a point" in lines[5][1], lines[5][1])
        eq(sorted(registry(d)), ["ok-1", "ok-2"], "the valid rows are stored")
        check(metric(d.metrics(), "iocd_device_rows_rejected_total") >= 6, "rejections counted")
        # JSON: an item's line is where it starts.
        r = upload(d, '[\n{"device": "j-1"},\n{"device": "j-2",\n "latitude": "x", "longitude": 1}\n]',
                   "application/json", method="POST")
        eq(r.status, 400, "a bad item")
        eq([(e["line"]) for e in r.json()["data"]["errors"]], [3], "its line")
        check("item 2: latitude" in r.json()["data"]["errors"][0]["reason"], r.text)
        check("j-1" in registry(d), "the good item is stored")
        # A body that is unusable as a whole changes nothing.
        before = registry(d)
        for ctype, bad in (("text/csv", "name,ward\nx,y\n"), ("text/csv", ""),
                           ("application/json", '[{"device": "x"'),
                           ("application/json", '{"device": "x"}')):
            r = upload(d, bad, ctype)
            eq(r.status, 400, "%r refused" % bad)
            check(r.json()["error"], "a reason")
        eq(registry(d), before, "nothing changed")
        # A replacement in which every row is bad does not empty the registry.
        r = upload(d, "device,latitude,longitude\nx,95,0\n")
        eq((r.status, r.json()["data"]["stored"]), (400, 0), "all rows bad")
        eq(registry(d), before, "still nothing changed")


def test_body_cap_and_tokens():
    config = """return { tokens = {
      { name = "wall", token = "read-secret-0123456789", role = "read" },
      { name = "gis", token = "write-secret-0123456789", role = "write" } } }
"""
    read = {"Authorization": "Bearer read-secret-0123456789"}
    write = {"Authorization": "Bearer write-secret-0123456789"}
    with Daemon(config=config) as d:
        d.start()
        eq(upload(d, CSV).status, 401, "no token")
        eq(upload(d, CSV, headers=read).status, 403, "a read token cannot upload")
        eq(upload(d, CSV, method="POST", headers=read).status, 403, "nor POST")
        eq(d.request("DELETE", "/api/v1/devices/cam-31", headers=read).status, 403, "nor delete")
        eq(upload(d, CSV, headers=write).status, 200, "the write token can")
        eq(d.get("/api/v1/devices").status, 401, "reading needs a token")
        eq(sorted(registry(d, headers=read)), ["cam-31", "dr-7", "sl-0101"], "a read token reads")
        big = b"device\n" + b"x" * (16 * 1024 * 1024)
        r = upload(d, big, headers=write)
        eq(r.status, 413, "over 16 MiB (%s)" % r.text[:200])
        r = upload(d, gzip.compress(big), headers=dict(write, **{"Content-Encoding": "gzip"}))
        eq(r.status, 413, "over 16 MiB once inflated")
        eq(len(registry(d, headers=read)), 3, "unchanged")


def test_changes_survive_kill_9():
    with Daemon() as d:
        d.start()
        eq(upload(d, CSV).status, 200, "upload")
        want = registry(d)
        d.kill9()
        d.start()
        eq(registry(d), want, "after kill -9")
        eq(metric(d.metrics(), "iocd_devices"), 3, "gauge after restart")
        eq(upload(d, "device,address\ndr-7,Cống số 7\n", method="POST").status, 200, "update")
        eq(d.request("DELETE", "/api/v1/devices/sl-0101").status, 200, "delete")
        d.kill9()
        d.start()
        got = registry(d)
        eq(sorted(got), ["cam-31", "dr-7"], "the delete survived")
        eq(got["dr-7"]["address"], "Cống số 7", "the update survived")
        eq(got["cam-31"], want["cam-31"], "the rest as it was")


def test_rule_and_manual_incidents_are_enriched_through_to_kafka():
    k = MockKafka()
    try:
        with Daemon("--rules", EXAMPLES, "--kafka-brokers", k.bootstrap) as d:
            d.start()
            d.wait_log(r"rules loaded")
            eq(upload(d, CSV).status, 200, "upload")
            now = int(time.time() * 1000)
            camera(d, "cam-31", 0, now - 90000, 7)
            inc = wait_for(lambda: d.get("/api/v1/incidents?state=firing").json()["data"]["incidents"],
                           what="an incident")[0]
            eq(inc["rule"], "camera_offline", "rule")
            want = {"device": "cam-31", "device_kind": "camera",
                    "address": 'Số 12, đường "Hoàng Văn Thụ", Gia Sàng',
                    "latitude": 21.5942, "longitude": 105.8412}
            eq({f: inc[f] for f in want}, want, "the rule incident carries the registry's fields")
            detail = d.get("/api/v1/incidents/%d" % inc["id"]).json()["data"]
            eq({f: detail[f] for f in want}, want, "GET /api/v1/incidents/<id>")
            msgs = k.consume(1)
            eq(len(msgs), 1, "the firing event")
            ev = msgs[0]["event"]["incident"]
            eq({f: ev[f] for f in want}, want, "the Kafka event carries them")
            # A manual report about a device: its domain and ward come from the registry.
            r = post_json(d, "/api/v1/incidents", {"device": "dr-7", "description": "Cống bị tắc",
                                                   "reporter": "citizen-app"})
            eq(r.status, 201, "report (%s)" % r.text)
            rep = r.json()["data"]
            eq((rep["domain"], rep["ward"], rep["address"], rep["device_kind"]),
               ("drainage", "phu_xa", "Tổ 5, phường Phú Xá", "drain"), "the report is enriched")
            eq((rep["latitude"], rep["longitude"]), (21.5771, 105.8551), "position")
            eq(rep["labels"]["device"], "dr-7", "device label")
            msgs = k.consume(2)
            evs = [m["event"]["incident"] for m in msgs if m["event"]["incident"]["id"] == rep["id"]]
            eq(len(evs), 1, "the report's event")
            eq(evs[0]["address"], "Tổ 5, phường Phú Xá", "the report's event carries the address")
            # An unknown device: the incident names it and has no registry fields.
            r = post_json(d, "/api/v1/incidents", {"device": "nope", "domain": "water",
                                                   "description": "x"})
            eq((r.json()["data"]["device"], r.json()["data"]["address"]), ("nope", None), "unknown")
            eq(post_json(d, "/api/v1/incidents", {"device": "nope", "description": "x"}).status, 400,
               "no domain and an unknown device")
            ms = d.metrics()
            eq(metric(ms, "iocd_device_lookups_total", result="found"), 2, "found")
            eq(metric(ms, "iocd_device_lookups_total", result="unknown"), 2, "unknown")
            # Restart: the incident keeps what it was given.
            d.stop()
            d.start()
            detail = d.get("/api/v1/incidents/%d" % inc["id"]).json()["data"]
            eq({f: detail[f] for f in want}, want, "after a restart")
    finally:
        k.close()


if __name__ == "__main__":
    run(globals())
