"""tests/integration/test_grafana.py - replays what Grafana's Prometheus data source (9.x/10.x)
sends, in the order a user meets it: "Save & test" (1+1 and buildinfo), the query editor's
metric and label autocomplete, the metric browser, a dashboard's range query with a
$__rate_interval window, a table's instant query and exemplars; each answer is checked the
way Grafana reads it (status, resultType, value shapes, sorted label values)."""

import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, run  # noqa: E402

NOW = int(time.time())
END = NOW // 15 * 15
START = END - 3600
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def load(d):
    lines = []
    for i, t in enumerate(range(START * 1000, END * 1000 + 1, 15000)):
        for k, w in enumerate(["gia_sang", "phu_xa"]):
            lines.append("traffic,ward=%s,device=tc-%d vehicles_total=%di,avg_speed_kmh=%d %d"
                         % (w, k, 30 * i * (k + 1), 40 - k * 10, t))
    r = d.post("/write?precision=ms", "\n".join(lines).encode())
    eq(r.status, 204, "load (%s)" % r.text)


def get(d, path, **p):
    return d.get(path + "?" + urllib.parse.urlencode(p, doseq=True))


def post(d, path, **p):
    return d.post(path, urllib.parse.urlencode(p, doseq=True).encode(), headers=FORM)


def ok(r, what):
    eq(r.status, 200, "%s: %s" % (what, r.text[:200]))
    j = r.json()
    eq(j["status"], "success", what)
    return j["data"]


def test_save_and_test():
    with Daemon() as d:
        d.start()
        data = ok(post(d, "/api/v1/query", query="1+1", time=str(NOW)), "health check")
        eq(data["resultType"], "scalar", "1+1 is a scalar")
        eq(data["result"][1], "2", "1+1 = 2")
        info = ok(d.get("/api/v1/status/buildinfo"), "buildinfo")
        check(isinstance(info.get("version"), str) and info["version"], "a version string")


def test_query_editor_autocomplete_and_metric_browser():
    with Daemon() as d:
        d.start()
        load(d)
        names = ok(get(d, "/api/v1/label/__name__/values", start=START, end=END), "metric names")
        eq(names, ["traffic_avg_speed_kmh", "traffic_vehicles_total"], "metric names, sorted")
        labels = ok(post(d, "/api/v1/labels", start=START, end=END), "label names")
        eq(labels, ["__name__", "device", "ward"], "label names")
        wards = ok(get(d, "/api/v1/label/ward/values", start=START, end=END,
                       **{"match[]": "traffic_vehicles_total"}), "ward values for a metric")
        eq(wards, ["gia_sang", "phu_xa"], "values")
        series = ok(get(d, "/api/v1/series", start=START, end=END,
                        **{"match[]": 'traffic_vehicles_total{ward="phu_xa"}'}), "series")
        eq(series, [{"__name__": "traffic_vehicles_total", "device": "tc-1", "ward": "phu_xa"}],
           "the metric browser's series")
        meta = ok(get(d, "/api/v1/metadata"), "metadata")
        check(isinstance(meta, dict), "metadata is an object")


def test_dashboard_range_query_with_rate_interval():
    with Daemon() as d:
        d.start()
        load(d)
        # Grafana expands $__rate_interval to e.g. 1m0s and sends step in seconds.
        data = ok(post(d, "/api/v1/query_range", query="sum by (ward) (rate(traffic_vehicles_total[1m0s]))",
                       start=str(END - 1800), end=str(END), step="60"), "range query")
        eq(data["resultType"], "matrix", "matrix")
        eq([s["metric"] for s in data["result"]], [{"ward": "gia_sang"}, {"ward": "phu_xa"}], "series")
        for s, want in zip(data["result"], (2.0, 4.0)):  # 30 and 60 vehicles per 15 s
            eq(len(s["values"]), 31, "31 steps")
            for t, v in s["values"]:
                check(isinstance(t, int) and isinstance(v, str), "[unix seconds, \"value\"] pairs")
                check(abs(float(v) - want) < 1e-9, "rate %s, want %s" % (v, want))
        # A table panel's instant query, and exemplars for the same panel.
        data = ok(post(d, "/api/v1/query", query="avg by (ward) (traffic_avg_speed_kmh)", time=str(END)),
                  "instant query")
        eq(data["resultType"], "vector", "vector")
        eq({s["metric"]["ward"]: s["value"][1] for s in data["result"]}, {"gia_sang": "40", "phu_xa": "30"},
           "values")
        eq(ok(get(d, "/api/v1/query_exemplars", query="traffic_vehicles_total", start=START, end=END),
              "exemplars"), [], "no exemplars")
        # A typo in the editor: Grafana shows the error text.
        r = post(d, "/api/v1/query_range", query="sum(rate(traffic_vehicles_total[1m])",
                 start=str(START), end=str(END), step="60")
        eq(r.status, 400, "bad query")
        eq(r.json()["errorType"], "bad_data", "errorType")


if __name__ == "__main__":
    run(globals())
