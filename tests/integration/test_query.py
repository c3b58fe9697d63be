"""tests/integration/test_query.py - the Prometheus query API of the real daemon: instant and
range queries over written data, GET and form POST, the error shapes and status codes
Prometheus clients rely on (400 bad_data with the position, 422 execution), limits, series,
labels, label values, status/tsdb, and queries running while ingest goes on."""

import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, check, eq, metric, run, wait_for  # noqa: E402

# The data: a minute-aligned hour ending two minutes ago, one sample per 10 s.
END_MS = (int(time.time()) // 60 - 2) * 60000
START_MS = END_MS - 3600000
WARDS = ["phan_dinh_phung", "quang_trung", "tan_thinh"]


def load(d):
    lines = []
    for i, t in enumerate(range(START_MS, END_MS + 1, 10000)):
        for k, w in enumerate(WARDS):
            lines.append("water,ward=%s,domain=water pressure_bar=%d,pumped_total=%di %d"
                         % (w, k + 1, i * (k + 1), t))
    body = "\n".join(lines).encode()
    r = d.post("/write?precision=ms", body)
    eq(r.status, 204, "write status (%s)" % r.text)


def get(d, path, **params):
    q = urllib.parse.urlencode(params, doseq=True)
    return d.get(path + ("?" + q if q else ""))


def post_form(d, path, **params):
    body = urllib.parse.urlencode(params, doseq=True).encode()
    return d.post(path, body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def success(r, what):
    eq(r.status, 200, "%s status (%s)" % (what, r.text[:300]))
    j = r.json()
    eq(j["status"], "success", what)
    return j["data"]


def test_instant_and_range_queries():
    with Daemon() as d:
        d.start()
        load(d)
        t = END_MS / 1000
        data = success(get(d, "/api/v1/query", query="sum(water_pressure_bar)", time=str(t)),
                       "instant sum")
        eq(data["resultType"], "vector", "result type")
        eq(len(data["result"]), 1, "one series")
        eq(data["result"][0]["metric"], {}, "sum has no labels")
        eq(data["result"][0]["value"], [t if t != int(t) else int(t), "6"], "sum value")
        # Form POST, as Grafana sends it; RFC 3339 times; a duration step.
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(END_MS / 1000 - 600))
        data = success(post_form(d, "/api/v1/query_range",
                                 query="avg by (ward) (water_pressure_bar)", start=start,
                                 end=str(END_MS / 1000), step="1m"), "range avg")
        eq(data["resultType"], "matrix", "range result type")
        eq([s["metric"]["ward"] for s in data["result"]], sorted(WARDS), "series sorted by labels")
        for k, s in enumerate(data["result"]):
            eq(len(s["values"]), 11, "11 steps in 10 minutes at 1m")
            eq(s["values"][0][0], END_MS // 1000 - 600, "first step time")
            check(all(v == str(k + 1) for _, v in s["values"]), "values %r" % s["values"][:3])
        # rate over an evenly spaced counter is its exact slope.
        data = success(get(d, "/api/v1/query",
                           query='rate(water_pumped_total{ward="tan_thinh"}[5m])', time=str(t)),
                       "rate")
        eq(data["result"][0]["metric"], {"domain": "water", "ward": "tan_thinh"}, "rate labels")
        check(abs(float(data["result"][0]["value"][1]) - 0.3) < 1e-9,
              "rate value %r" % data["result"][0]["value"])
        # A scalar and a string.
        data = success(get(d, "/api/v1/query", query="1+1", time="1700000000.5"), "scalar")
        eq(data, {"resultType": "scalar", "result": [1700000000.5, "2"]}, "scalar answer")
        data = success(get(d, "/api/v1/query", query='"hi"', time="1700000000"), "string")
        eq(data, {"resultType": "string", "result": [1700000000, "hi"]}, "string answer")


def test_errors_have_prometheus_shapes():
    with Daemon() as d:
        d.start()
        load(d)
        r = get(d, "/api/v1/query", query="sum(rate(x[5m])")
        eq(r.status, 400, "parse error status")
        j = r.json()
        eq(j["status"], "error", "status")
        eq(j["errorType"], "bad_data", "errorType")
        check(j["error"].startswith('invalid parameter "query": 1:'), "message %r" % j["error"])
        r = get(d, "/api/v1/query", query="1", time="yesterday")
        eq((r.status, r.json()["errorType"]), (400, "bad_data"), "bad time")
        check('"time"' in r.json()["error"], r.json()["error"])
        r = get(d, "/api/v1/query_range", query="1", start="10", end="5", step="1")
        eq(r.status, 400, "end before start")
        r = get(d, "/api/v1/query_range", query="1", start="0", end="100000", step="1")
        eq(r.status, 400, "too many points")
        check("exceeded maximum resolution" in r.json()["error"], r.json()["error"])
        r = get(d, "/api/v1/query_range", query="1", start="0", end="10", step="0")
        eq(r.status, 400, "zero step")
        r = get(d, "/api/v1/query_range", query="1", start="0", end="10")
        eq(r.status, 400, "missing step")
        # Execution errors: 422.
        r = get(d, "/api/v1/query",
                query="water_pressure_bar + on(domain) water_pumped_total", time=str(END_MS / 1000))
        eq((r.status, r.json()["errorType"]), (422, "execution"), "many-to-many")
        check("many-to-many matching not allowed" in r.json()["error"], r.json()["error"])
        r = get(d, "/api/v1/query_range", query="water_pressure_bar[5m]", start="0", end="10",
                step="1")
        eq((r.status, r.json()["errorType"]), (422, "execution"), "matrix in range query")
        r = get(d, "/api/v1/series")
        eq((r.status, r.json()["errorType"]), (400, "bad_data"), "series without match[]")


def test_limits_answer_422_not_oom():
    with Daemon("--query-max-series", "2", "--query-max-samples", "3000") as d:
        d.start()
        load(d)
        r = get(d, "/api/v1/query", query="water_pressure_bar", time=str(END_MS / 1000))
        eq(r.status, 422, "series limit (%s)" % r.text)
        check("over the limit of 2" in r.json()["error"], r.json()["error"])
        r = get(d, "/api/v1/query_range", query='water_pressure_bar{ward="tan_thinh"}',
                start=str(START_MS / 1000), end=str(END_MS / 1000), step="1")
        eq(r.status, 422, "samples limit (%s)" % r.text[:200])
        check("too many samples" in r.json()["error"], r.json()["error"])
        # The daemon is fine afterwards.
        success(get(d, "/api/v1/query", query='water_pressure_bar{ward="tan_thinh"}',
                    time=str(END_MS / 1000)), "after limits")


def test_small_instant_queries_answer_on_the_http_thread():
    """An instant query with equality selectors over few series is answered by the HTTP thread;
    past 256 series, a range query, a regex or an error found early: a query worker, with the
    same answers and errors."""
    with Daemon("--query-max-series", "300") as d:
        d.start()
        load(d)
        lines = ["many,ward=w%03d v=%d %d" % (i, i, END_MS) for i in range(280)]
        eq(d.post("/write?precision=ms", "\n".join(lines).encode()).status, 204, "write")
        t = str(END_MS / 1000)

        def inline():
            return metric(d.metrics(), "iocd_queries_inline_total")

        n0 = inline()
        data = success(get(d, "/api/v1/query", query='max_over_time(water_pressure_bar'
                           '{ward="tan_thinh"}[10m])', time=t), "small")
        eq(data["result"][0]["value"][1], "3", "small answer")
        eq(inline(), n0 + 1, "answered inline")
        data = success(get(d, "/api/v1/query", query="sum(many_v)", time=t), "280 series")
        eq(data["result"][0]["value"][1], str(sum(range(280))), "280 series answer")
        eq(inline(), n0 + 1, "280 series: a worker")
        data = success(get(d, "/api/v1/query", query='count(many_v{ward=~"w00.*"})', time=t),
                       "regex")
        eq(data["result"][0]["value"][1], "10", "regex answer")
        eq(inline(), n0 + 1, "regex: a worker")
        r = get(d, "/api/v1/query", query="water_pressure_bar + on(domain) water_pumped_total",
                time=t)
        eq((r.status, r.json()["errorType"]), (422, "execution"), "many-to-many inline")
        eq(inline(), n0 + 2, "an execution error is answered inline")
        r = get(d, "/api/v1/query", query="many_v{ward!=\"x\"} > 0 or many_v", time=t)
        eq(r.status, 200, "not bounded (%s)" % r.text[:200])
        eq(len(r.json()["data"]["result"]), 280, "280 series through a worker")
        r = get(d, "/api/v1/query", query="many_v", time=t)
        eq(len(r.json()["data"]["result"]), 280, "past the inline series cap: a worker")
        eq(inline(), n0 + 2, "only the small ones inline")


def test_series_labels_values_and_tsdb():
    with Daemon() as d:
        d.start()
        load(d)
        data = success(post_form(d, "/api/v1/series", **{"match[]": ['water_pressure_bar{ward=~"q.*"}',
                                                                     "water_pumped_total{ward='tan_thinh'}"]}),
                       "series")
        eq(sorted((s["__name__"], s["ward"]) for s in data),
           [("water_pressure_bar", "quang_trung"), ("water_pumped_total", "tan_thinh")], "series")
        eq(success(get(d, "/api/v1/labels"), "labels"), ["__name__", "domain", "ward"], "labels")
        eq(success(get(d, "/api/v1/labels", **{"match[]": "water_pressure_bar"}), "labels m"),
           ["__name__", "domain", "ward"], "labels with match")
        eq(success(get(d, "/api/v1/label/ward/values"), "values"), sorted(WARDS), "ward values")
        eq(success(get(d, "/api/v1/label/__name__/values"), "names"),
           ["water_pressure_bar", "water_pumped_total"], "metric names")
        eq(success(get(d, "/api/v1/label/ward/values", **{"match[]": '{ward="tan_thinh"}'}), "v"),
           ["tan_thinh"], "values with match")
        eq(success(get(d, "/api/v1/label/nothing/values"), "none"), [], "unknown label")
        eq(get(d, "/api/v1/label/1bad/values").status, 400, "invalid label name")
        eq(success(get(d, "/api/v1/query_exemplars", query="x"), "exemplars"), [], "exemplars")
        eq(success(get(d, "/api/v1/metadata"), "metadata"), {}, "metadata")
        tsdb = success(get(d, "/api/v1/status/tsdb"), "tsdb")
        eq(tsdb["headStats"]["numSeries"], 6, "series count")
        eq(tsdb["seriesCountByMetricName"][0]["value"], 3, "top metric count")
        eq(tsdb["labelValueCountByLabelName"][0], {"name": "ward", "value": 3}, "top label")


def test_queries_run_while_ingesting():
    with Daemon() as d:
        d.start()
        load(d)
        stop = threading.Event()
        errors = []

        def writer():
            i = 0
            while not stop.is_set():
                t = END_MS + 10000 + i * 1000
                r = d.post("/write?precision=ms", ("live,ward=w v=%d %d" % (i, t)).encode())
                if r.status != 204:
                    errors.append("write %d" % r.status)
                i += 1

        def reader():
            for _ in range(20):
                r = get(d, "/api/v1/query_range", query="sum by (ward) (rate(water_pumped_total[5m]))",
                        start=str(START_MS / 1000), end=str(END_MS / 1000), step="60")
                if r.status != 200 or len(r.json()["data"]["result"]) != 3:
                    errors.append("query %d %s" % (r.status, r.text[:100]))

        w = threading.Thread(target=writer)
        w.start()
        readers = [threading.Thread(target=reader) for _ in range(4)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        stop.set()
        w.join()
        eq(errors, [], "errors")
        ms = d.metrics()
        check(metric(ms, "iocd_query_samples_loaded_total") > 0, "samples loaded counted")


if __name__ == "__main__":
    run(globals())
