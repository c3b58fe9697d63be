"""tests/integration/test_grafana.py - replays what Grafana's Prometheus data source (9.x/10.x)
sends, in the order a user meets it: "Save & test" (1+1 and buildinfo), the query editor's
metric and label autocomplete, the metric browser, a dashboard's range query with a
$__rate_interval window, a table's instant query and exemplars; each answer is checked the
way Grafana reads it (status, resultType, value shapes, sorted label values).

What Grafana sends (its backend client, pkg/tsdb/prometheus): queries as form-encoded POST
bodies (Content-Type application/x-www-form-urlencoded) or GET, per the data source's HTTP
method; start and end as Unix seconds (a fraction only when not whole), aligned down to a
multiple of the step; step in seconds; $__rate_interval resolved to max(interval + scrape
interval, 4 x scrape interval) in Go's duration format (a 60 s step with the default 15 s
scrape interval gives rate(x[1m15s])). Its health check is the instant query 1+1 over the
time range 1 s..4 s of the epoch, so time=4. The editor asks /api/v1/labels and
/api/v1/label/<name>/values with start, end and (since Prometheus 2.24) match[], and
/api/v1/series with match[]. Its buildinfo reader decodes version, revision, branch,
buildUser, buildDate and goVersion as strings and features as a string map (no features
means "Prometheus", not Mimir).

Every expected value below is worked out by hand from the data loaded, with Prometheus 2.42's
semantics: an instant selector takes the newest sample in [t - 5m, t]; range windows are
[t - range, t], both ends included; rate and increase extrapolate toward the window's edges
(by the distance when it is under 1.1 x the average sample spacing, else by half a spacing,
and never before the counter's zero) and correct counter resets."""

import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, Failure, check, eq, run  # noqa: E402

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
    return call(d, "GET", path + "?" + urllib.parse.urlencode(p, doseq=True))


def post(d, path, **p):
    return call(d, "POST", path, urllib.parse.urlencode(p, doseq=True).encode(), FORM)


def call(d, method, path, body=None, headers=None):
    try:
        return d.request(method, path, body=body, headers=headers)
    except OSError as e:  # the daemon died or hung up: say so, with what it logged last
        try:
            d.proc.wait(2)  # a crash closes the socket a moment before the process is gone
            d.reader.join(2)
        except Exception:
            pass
        raise Failure("%s %s: %r; iocd %s; its log ends:\n%s" % (
            method, path[:200], e, "exited (%s)" % d.proc.returncode
            if d.proc.poll() is not None else "still runs", d.log_text()[-2000:]))


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
        # Grafana 10's backend health check: 1+1 at the end of the range 1 s..4 s, form POST.
        r = post(d, "/api/v1/query", query="1+1", time="4")
        eq(r.status, 200, "health check at time=4: %s" % r.text[:200])
        check((r.header("Content-Type") or "").startswith("application/json"),
              "JSON content type, got %r" % r.header("Content-Type"))
        eq(r.json(), {"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}},
           "the whole health check answer")
        # The same over GET (a data source set to the GET method), at a time with a fraction.
        eq(ok(get(d, "/api/v1/query", query="1+1", time="%d.25" % NOW), "GET health check"),
           {"resultType": "scalar", "result": [NOW + 0.25, "2"]}, "1+1 at a fractional time")
        # No time: evaluated now.
        t0 = time.time()
        data = ok(post(d, "/api/v1/query", query="1+1"), "1+1 without time")
        check(t0 - 1 <= data["result"][0] <= time.time() + 1, "evaluated now: %r" % data)
        info = ok(d.get("/api/v1/status/buildinfo"), "buildinfo")
        check(isinstance(info.get("version"), str) and info["version"], "a version string")
        # Grafana decodes these as strings and features as a map of strings; without features
        # it takes the server for Prometheus (with features, for Mimir with a ruler).
        for k in ("version", "revision", "branch", "buildUser", "buildDate", "goVersion"):
            check(k not in info or isinstance(info[k], str),
                  "buildinfo %s is a string: %r" % (k, info))
        check(not info.get("features"),
              "no features, or Grafana takes iocd for Mimir with a ruler: %r" % info)


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


# ---- a second data set, loaded through /api/v1/import, for the exact semantics ----------
#
# An hour at 15 s, minute-aligned, ending two minutes before the current minute:
# sample k (0..240) is at BASE + 15 k.
#   pump_starts_total (counters)     ws-1 (gia_sang) 100 + 30 k: 2/s
#                                    ws-2 (gia_sang) 45 k: 3/s, starting from zero
#                                    ws-3 (phu_xa)   15 k, reset at k = 120 (BASE + 1800) to
#                                                    15 (k - 119): still 1/s once corrected
#   water_pressure_bar (gauges)      ws-1 2.5; ws-2 3.5 with no samples for k = 81..119
#                                    (after BASE + 1200 until BASE + 1800); ws-3 1.25
#   lamp_on (line protocol)          tan_thinh, pole p-7: 1 every 60 s (other label names)

BASE = (int(time.time()) // 60 - 62) * 60
KS = range(241)


def ts(k):
    return BASE + 15 * k


def city_lines():
    def series(name, ward, device, values):
        pts = [(ts(k) * 1000, v) for k, v in values]
        return json.dumps({"metric": {"__name__": name, "ward": ward, "domain": "water",
                                      "device": device},
                           "values": [v for _, v in pts], "timestamps": [t for t, _ in pts]})
    # phu_xa first: label values must come back sorted, not in arrival order.
    return [
        series("pump_starts_total", "phu_xa", "ws-3",
               [(k, 15 * k if k < 120 else 15 * (k - 119)) for k in KS]),
        series("water_pressure_bar", "phu_xa", "ws-3", [(k, 1.25) for k in KS]),
        series("pump_starts_total", "gia_sang", "ws-1", [(k, 100 + 30 * k) for k in KS]),
        series("pump_starts_total", "gia_sang", "ws-2", [(k, 45 * k) for k in KS]),
        series("water_pressure_bar", "gia_sang", "ws-1", [(k, 2.5) for k in KS]),
        series("water_pressure_bar", "gia_sang", "ws-2",
               [(k, 3.5) for k in KS if not 81 <= k <= 119]),
    ]


def load_city(d):
    r = d.post("/api/v1/import", ("\n".join(city_lines()) + "\n").encode())
    eq(r.status, 204, "import (%s)" % r.text)
    lamps = "".join("lamp_on,ward=tan_thinh,pole=p-7 value=1 %d\n" % (ts(k) * 1000)
                    for k in KS if k % 4 == 0)
    r = d.post("/write?precision=ms", lamps.encode())
    eq(r.status, 204, "lamps (%s)" % r.text)


def values(series):
    """A matrix series' values as [(t, float)], checking each pair's shape on the way."""
    out = []
    for p in series["values"]:
        check(isinstance(p, list) and len(p) == 2, "a [time, value] pair: %r" % (p,))
        t, v = p
        check(isinstance(t, (int, float)) and not isinstance(t, bool),
              "time is a number: %r" % (p,))
        check(isinstance(v, str), "value is a string: %r" % (p,))
        out.append((t, float(v)))
    eq([t for t, _ in out], sorted(t for t, _ in out), "times ascending")
    return out


def near(got, want, what):
    check(abs(got - want) <= 1e-9 * max(1.0, abs(want)), "%s: got %r, want %r" % (what, got, want))


def by_label(result, label):
    return {s["metric"].get(label): s for s in result}


def fail(r, status, error_type, what):
    eq(r.status, status, "%s status (%s)" % (what, r.text[:200]))
    j = r.json()
    eq((j.get("status"), j.get("errorType")), ("error", error_type), what)
    check(isinstance(j.get("error"), str) and j["error"], "%s: an error text Grafana shows" % what)
    return j["error"]


def test_editor_metadata_requests_match_the_loaded_data():
    """The query editor and metric browser: label names (all, and for one metric), metric
    names, label values narrowed by match[], series for two selectors."""
    with Daemon() as d:
        d.start()
        load_city(d)
        rng = {"start": str(BASE), "end": str(ts(240))}
        eq(ok(get(d, "/api/v1/labels", **rng), "labels"),
           ["__name__", "device", "domain", "pole", "ward"], "every label name, sorted")
        eq(ok(post(d, "/api/v1/labels", **dict(rng, **{"match[]": "lamp_on"})),
              "labels of lamp_on"),
           ["__name__", "pole", "ward"], "label names of one metric (form POST with match[])")
        eq(ok(get(d, "/api/v1/label/__name__/values", **rng), "metric names"),
           ["lamp_on", "pump_starts_total", "water_pressure_bar"], "metric names, sorted")
        eq(ok(get(d, "/api/v1/label/ward/values", **rng), "wards"),
           ["gia_sang", "phu_xa", "tan_thinh"], "ward values, sorted")
        eq(ok(get(d, "/api/v1/label/ward/values", **dict(rng, **{"match[]": "lamp_on"})),
              "wards of lamp_on"), ["tan_thinh"], "values narrowed by match[]")
        eq(ok(get(d, "/api/v1/label/device/values",
                  **dict(rng, **{"match[]": 'water_pressure_bar{ward="gia_sang"}'})),
              "devices"), ["ws-1", "ws-2"], "values narrowed by a selector with a matcher")
        got = ok(get(d, "/api/v1/series", **dict(rng, **{"match[]": ["water_pressure_bar",
                                                                      '{ward="phu_xa"}']})),
                 "series")
        key = lambda m: sorted(m.items())  # noqa: E731
        eq(sorted(got, key=key), sorted([
            {"__name__": "water_pressure_bar", "ward": w, "domain": "water", "device": dev}
            for w, dev in (("gia_sang", "ws-1"), ("gia_sang", "ws-2"), ("phu_xa", "ws-3"))] + [
            {"__name__": "pump_starts_total", "ward": "phu_xa", "domain": "water",
             "device": "ws-3"}],
            key=key), "the union of two match[], each series once")
        fail(get(d, "/api/v1/series", **rng), 400, "bad_data", "series without match[]")
        eq(ok(post(d, "/api/v1/query_exemplars", query="pump_starts_total", start="%d.5" % BASE,
                   end=str(ts(240))), "exemplars"), [], "no exemplars: an empty list")
        check(isinstance(ok(get(d, "/api/v1/metadata"), "metadata"), dict), "metadata object")


def test_editor_requests_that_match_nothing_answer_empty_lists():
    """A typo in the editor or a template variable over a label a metric lacks: Grafana
    still asks, and an empty list (not null, not an error) is the answer."""
    with Daemon() as d:
        d.start()
        load_city(d)
        rng = {"start": str(BASE), "end": str(ts(240))}
        for path, params in (
                ("/api/v1/label/pole/values", {"match[]": "water_pressure_bar"}),
                ("/api/v1/label/no_such_label/values", {}),
                ("/api/v1/labels", {"match[]": "no_such_metric"}),
                ("/api/v1/series", {"match[]": "no_such_metric"})):
            eq(ok(get(d, path, **dict(rng, **params)), path), [], "%s %r" % (path, params))
        data = ok(post(d, "/api/v1/query", query="no_such_metric", time=str(ts(240))), "query")
        eq(data, {"resultType": "vector", "result": []}, "an empty vector")
        data = ok(post(d, "/api/v1/query_range", query="no_such_metric", start=str(ts(120)),
                       end=str(ts(240)), step="60"), "range query")
        eq(data, {"resultType": "matrix", "result": []}, "an empty matrix")


def test_panel_rate_with_rate_interval_across_a_counter_reset():
    """A 30-minute time series panel at a 60 s step: $__rate_interval is max(60 s + 15 s,
    4 x 15 s) = 1m15s. Every window [t - 75 s, t] holds six samples spanning it exactly, so no
    extrapolation: gia_sang is 2 + 3 = 5/s; phu_xa stays 1/s through its reset, e.g. at
    t = BASE + 1800 the window holds 1725, 1740, ..., 1785, 15: 15 - 1725 + 1785 = 75 in 75 s."""
    with Daemon() as d:
        d.start()
        load_city(d)
        q = dict(query="sum by (ward) (rate(pump_starts_total[1m15s]))",
                 start=str(ts(120)), end=str(ts(240)), step="60")
        data = ok(post(d, "/api/v1/query_range", **q), "range query (POST)")
        eq(data["resultType"], "matrix", "resultType")
        eq([s["metric"] for s in data["result"]], [{"ward": "gia_sang"}, {"ward": "phu_xa"}],
           "one series per ward, the metric name dropped")
        steps = list(range(ts(120), ts(240) + 1, 60))
        eq(len(steps), 31, "31 steps")
        for s, want in zip(data["result"], (5.0, 1.0)):
            got = values(s)
            eq([t for t, _ in got], steps, "a point at every step")
            for t, v in got:
                near(v, want, "%s at %d" % (s["metric"]["ward"], t))
        # The same request over GET gives the same answer.
        eq(ok(get(d, "/api/v1/query_range", **q), "range query (GET)"), data, "GET = POST")
        # And the reset is seen as one.
        data = ok(post(d, "/api/v1/query", query='resets(pump_starts_total{device="ws-3"}[1h])',
                       time=str(ts(240))), "resets")
        eq([s["value"] for s in data["result"]], [[ts(240), "1"]], "one reset in the hour")


def test_rate_extrapolates_at_the_start_of_a_series():
    """rate(x[1m]) at BASE + 30: the window [BASE - 30, BASE + 30] holds three samples
    30 s apart (average spacing 15 s). ws-1 (100, 130, 160): the first sample is 30 s from
    the window's start, over 1.1 x 15 s, so the increase of 60 is extrapolated by half a
    spacing, 7.5 s: 60 x 37.5 / 30 = 75, a rate of 1.25/s. ws-2 (0, 45, 90) started from zero,
    which caps the extrapolation at 0 s: increase 90, rate 1.5/s. At BASE + 600 the windows
    are full and the rates are the slopes, 2 and 3."""
    with Daemon() as d:
        d.start()
        load_city(d)
        rate = 'rate(pump_starts_total{ward="gia_sang"}[1m])'
        for expr, t, want in (
                (rate, ts(2), {"ws-1": 1.25, "ws-2": 1.5}),
                (rate.replace("rate", "increase"), ts(2), {"ws-1": 75.0, "ws-2": 90.0}),
                (rate, ts(40), {"ws-1": 2.0, "ws-2": 3.0})):
            data = ok(post(d, "/api/v1/query", query=expr, time=str(t)), expr)
            eq(data["resultType"], "vector", "resultType of " + expr)
            got = by_label(data["result"], "device")
            eq(sorted(got), sorted(want), "devices of " + expr)
            for dev, v in want.items():
                eq(got[dev]["metric"], {"ward": "gia_sang", "domain": "water", "device": dev},
                   "rate drops the metric name")
                eq(got[dev]["value"][0], t, "the sample time is the evaluation time")
                near(float(got[dev]["value"][1]), v, "%s %s at BASE + %d" % (expr, dev, t - BASE))


def test_lookback_and_window_edges_are_closed():
    """ws-2's gauge has its last sample before a gap at BASE + 1200 and the next at
    BASE + 1800. The 5-minute lookback includes its lower edge: an instant query at
    BASE + 1500 still sees 3.5, one a millisecond later sees nothing, and a 60 s range query
    across the gap has points from BASE + 1200 to BASE + 1500 and again at BASE + 1800.
    count_over_time(x[1m]) at a sample's time counts five samples (both edges), three at
    BASE + 30 where the window starts before the data."""
    with Daemon() as d:
        d.start()
        load_city(d)
        sel = 'water_pressure_bar{device="ws-2"}'
        data = ok(post(d, "/api/v1/query", query=sel, time=str(ts(100))), "at the edge")
        eq([s["value"] for s in data["result"]], [[ts(100), "3.5"]], "seen exactly 5 m later")
        data = ok(post(d, "/api/v1/query", query=sel, time="%d.001" % ts(100)), "past the edge")
        eq(data, {"resultType": "vector", "result": []}, "1 ms past the lookback: empty vector")
        data = ok(post(d, "/api/v1/query_range", query=sel, start=str(ts(80)), end=str(ts(120)),
                       step="60"), "range across the gap")
        eq(len(data["result"]), 1, "one series")
        eq(values(data["result"][0]),
           [(t, 3.5) for t in list(range(ts(80), ts(100) + 1, 60)) + [ts(120)]],
           "points only where a sample lies within 5 m")
        for t, want in ((ts(40), "5"), (ts(2), "3")):
            data = ok(post(d, "/api/v1/query",
                           query='count_over_time(water_pressure_bar{device="ws-1"}[1m])',
                           time=str(t)), "count_over_time")
            eq([s["value"] for s in data["result"]], [[t, want]],
               "samples in [t - 1m, t] at BASE + %d" % (t - BASE))


def test_table_and_stat_panels():
    """Instant queries as a table or stat panel sends them, and range points at a fractional
    start: avg by ward of the gauges is (2.5 + 3.5) / 2 = 3 and 1.25; the sum 7.25; division
    by zero gives Prometheus' "+Inf", "-Inf" and "NaN" strings."""
    with Daemon() as d:
        d.start()
        load_city(d)
        t = ts(240)
        data = ok(post(d, "/api/v1/query", query="avg by (ward) (water_pressure_bar)", time=str(t)),
                  "table")
        eq(data, {"resultType": "vector", "result": [
            {"metric": {"ward": "gia_sang"}, "value": [t, "3"]},
            {"metric": {"ward": "phu_xa"}, "value": [t, "1.25"]}]}, "avg by ward")
        data = ok(post(d, "/api/v1/query",
                       query='max_over_time(water_pressure_bar{ward="gia_sang"}[10m])',
                       time=str(t)), "max_over_time")
        eq({s["metric"]["device"]: s["value"] for s in data["result"]},
           {"ws-1": [t, "2.5"], "ws-2": [t, "3.5"]}, "max_over_time keeps the other labels")
        for expr, want in (('water_pressure_bar{device="ws-1"} / 0', "+Inf"),
                           ('-water_pressure_bar{device="ws-1"} / 0', "-Inf"),
                           ('(water_pressure_bar{device="ws-1"} - 2.5) / 0', "NaN")):
            data = ok(post(d, "/api/v1/query", query=expr, time=str(t)), expr)
            eq([s["value"][1] for s in data["result"]], [want], expr)
        # Steps at a fractional start: times are Unix seconds with the fraction.
        data = ok(post(d, "/api/v1/query_range", query="sum(water_pressure_bar)",
                       start="%d.5" % ts(40), end="%d.5" % ts(48), step="60"), "fractional start")
        eq(data["result"][0]["metric"], {}, "sum has no labels")
        eq(values(data["result"][0]), [(ts(k) + 0.5, 7.25) for k in (40, 44, 48)],
           "[unix seconds with a fraction, value] pairs")


def test_editor_errors_are_shown_as_prometheus_reports_them():
    """What Grafana displays under the editor: a 400 bad_data for what does not parse or a
    bad parameter, 422 execution for what cannot be evaluated."""
    with Daemon() as d:
        d.start()
        load_city(d)
        rng = dict(start=str(ts(120)), end=str(ts(240)), step="60")
        msg = fail(post(d, "/api/v1/query_range",
                        query="sum by (ward) (rate(pump_starts_total[5m])", **rng),
                   400, "bad_data", "an unclosed parenthesis")
        check("parse error" in msg, "a parse error: %r" % msg)
        fail(post(d, "/api/v1/query", query="rate(pump_starts_total[5x])", time=str(ts(240))),
             400, "bad_data", "a bad duration")
        fail(post(d, "/api/v1/query", query="no_such_function(pump_starts_total)",
                  time=str(ts(240))), 400, "bad_data", "an unknown function")
        fail(post(d, "/api/v1/query_range", query="pump_starts_total",
                  start=str(ts(240)), end=str(ts(120)), step="60"),
             400, "bad_data", "end before start")
        fail(post(d, "/api/v1/query_range", query="pump_starts_total",
                  start=str(ts(120)), end=str(ts(240)), step="0"), 400, "bad_data", "a zero step")
        fail(post(d, "/api/v1/query_range", query="pump_starts_total",
                  start=str(ts(0)), end=str(ts(0) + 11001), step="1"), 400, "bad_data",
             "(end - start) / step over 11,000")
        # gia_sang has two pumps on each side: many-to-many matching.
        fail(post(d, "/api/v1/query", query="pump_starts_total + on (ward) water_pressure_bar",
                  time=str(ts(240))), 422, "execution", "many-to-many matching")


def test_range_of_11000_steps_is_accepted():
    """Prometheus refuses a range query only when (end - start) / step exceeds 11,000, so
    11,000 steps (11,001 points) still answer; Grafana's safe-resolution step can ask for
    exactly that (an 11,000 s range at 1 s)."""
    with Daemon() as d:
        d.start()
        load_city(d)
        data = ok(post(d, "/api/v1/query_range", query='water_pressure_bar{device="ws-3"}',
                       start=str(ts(240) - 11000), end=str(ts(240)), step="1"), "11,001 points")
        got = values(data["result"][0])
        # Only the last 3,601 steps have samples (BASE to BASE + 3600, every 15 s, each
        # carried forward by the lookback), so 3,601 points.
        eq((len(got), got[0], got[-1]), (3601, (ts(0), 1.25), (ts(240), 1.25)),
           "points from BASE to BASE + 3600")



def test_alert_list_reads_rules_and_alerts():
    """Grafana's alert list reads a Prometheus data source's /api/v1/rules and
    /api/v1/alerts, and reports a 404 from them as an error ("Perhaps ruler API is not
    enabled?"). Without rules Prometheus answers empty lists; with rules each group has name,
    file, interval and rules, each rule name, query, type, health, state, labels, annotations,
    alerts and its evaluation time, and a firing alert its labels, state, activeAt and value."""
    with Daemon() as d:
        d.start()
        for path, key in (("/api/v1/rules", "groups"), ("/api/v1/alerts", "alerts")):
            r = get(d, path)
            eq(r.status, 200, path + " without rules")
            eq(r.json(), {"status": "success", "data": {key: []}}, path + " is empty")
    rules = os.path.join(os.environ.get("TMPDIR", "/tmp"), "grafana-rules-%d.lua" % os.getpid())
    with open(rules, "w") as f:
        f.write('rule "pressure_low" { select = \'water_pressure_bar\', when = "value < 1",\n'
                '  severity = "critical", domain = "water", summary = "Low {{ward}}" }\n')
    try:
        with Daemon("--rules", rules) as d:
            d.start()
            d.wait_log(r"rules loaded")
            now = int(time.time() * 1000)
            r = d.post("/write?precision=ms", ("water,ward=gia_sang,device=ws-1 pressure_bar=0.5 %d"
                                               % now).encode())
            eq(r.status, 204, "write")
            deadline = time.time() + 20
            while time.time() < deadline:
                alerts = get(d, "/api/v1/alerts").json()["data"]["alerts"]
                if alerts and alerts[0]["state"] == "firing":
                    break
                time.sleep(0.05)
            eq(len(alerts), 1, "one alert")
            a = alerts[0]
            eq((a["state"], a["labels"]["alertname"], a["labels"]["ward"], float(a["value"])),
               ("firing", "pressure_low", "gia_sang", 0.5), "the alert as Grafana lists it")
            check(isinstance(a["activeAt"], str) and a["activeAt"].endswith("Z"), "activeAt")
            groups = get(d, "/api/v1/rules").json()["data"]["groups"]
            eq(len(groups), 1, "one group per file")
            g = groups[0]
            for k in ("name", "file", "interval", "rules", "evaluationTime", "lastEvaluation"):
                check(k in g, "group has " + k)
            rule = g["rules"][0]
            for k in ("name", "query", "type", "health", "state", "labels", "annotations",
                      "alerts", "evaluationTime", "lastEvaluation"):
                check(k in rule, "rule has " + k)
            eq((rule["name"], rule["type"], rule["health"], rule["state"], len(rule["alerts"])),
               ("pressure_low", "alerting", "ok", "firing", 1), "the rule as Grafana lists it")
            eq(rule["labels"], {"severity": "critical", "domain": "water"}, "the rule's labels")
            eq(rule["annotations"], {"summary": "Low {{ward}}"}, "its annotation templates")
    finally:
        os.unlink(rules)


if __name__ == "__main__":
    run(globals())
