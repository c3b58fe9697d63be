"""bench/query_rollup.py - long-range *_over_time queries with rollups on and off.
make bench-rollup runs it; bench/README.md describes the method.

For each size (ROLLUP_SIZES, default "10000:2160": series x points at 10 s, i.e. 6 hours
ending a minute or two before now) a fresh iocd gets the IOC workload from build/bench/loadgen
and is stopped (a graceful stop seals everything, so the data set is blocks and rollups).
Then iocd is started on that data dir twice, with the default --query-rollup-range (1h) and
with --query-rollup-range 0s (raw samples only); each time every query is checked to answer
200, run QUERY_REPS times (default 20) after 3 warm-ups on one keep-alive connection, and
p50/p99 latency is printed, with whether the two runs gave the same answer (count, min and
max must be equal; sum and avg within 1e-9 relative)."""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import query as qb  # noqa: E402 (the query benchmark's servers, loader and timers)

SIZES = os.environ.get("ROLLUP_SIZES", "10000:2160").split()
REPS = int(os.environ.get("QUERY_REPS", "20"))


def queries(end):
    """(name, path, params): long ranges over the data set, and one short range as a control."""
    first = (end - 6 * 3600) // 3600 * 3600 + 3600  # the first whole hour after the start
    last = end // 3600 * 3600
    return [
        ("max_over_time(water_pressure_bar[1h]), hours at 1 h step", "/api/v1/query_range",
         {"query": "max_over_time(water_pressure_bar[1h])", "start": first, "end": last,
          "step": 3600}),
        ("max_over_time(water_pressure_bar[1h]), 6 h to now at 1 h step", "/api/v1/query_range",
         {"query": "max_over_time(water_pressure_bar[1h])", "start": end - 5 * 3600, "end": end,
          "step": 3600}),
        ("avg_over_time(water_pressure_bar[1h]), 6 h to now at 5 m step", "/api/v1/query_range",
         {"query": "avg_over_time(water_pressure_bar[1h])", "start": end - 5 * 3600, "end": end,
          "step": 300}),
        ("sum by (ward) (count_over_time(camera_fps[4h])), instant", "/api/v1/query",
         {"query": "sum by (ward) (count_over_time(camera_fps[4h]))", "time": end - 1800}),
        ("min_over_time(water_pressure_bar[5h]), instant", "/api/v1/query",
         {"query": "min_over_time(water_pressure_bar[5h])", "time": end - 1800}),
        ("control: max_over_time(camera_fps[10m]), 1 h at 60 s", "/api/v1/query_range",
         {"query": "max_over_time(camera_fps[10m])", "start": end - 3600, "end": end,
          "step": 60}),
    ]


def start(data_dir, log, extra):
    s = qb.Server("iocd", [qb.IOCD, "serve", "--data-dir", data_dir, "--http", "127.0.0.1:0",
                           "--influx-tcp", "", "--influx-udp", ""] + extra, log)

    def ready():
        with open(s.log, errors="replace") as f:
            for line in f:
                if "msg=ready" in line:
                    for field in line.split():
                        if field.startswith("http="):
                            return field[5:]
        return None
    s.addr = s.wait(ready, "its ready line")
    s.wait(lambda: qb.status(s.addr, "/-/ready") == 200, "/-/ready")
    return s


def answers(srv, qs):
    c = qb.conn_to(srv.addr)
    out = []
    for name, path, params in qs:
        st, body, _ = qb.fetch(c, path, params)
        if st != 200:
            raise qb.BenchError("%s answered %d: %s" % (name, st, body[:300]))
        out.append(json.loads(body)["data"]["result"])
    c.close()
    return out


def same(a, b, exact):
    def key(r):
        return json.dumps(r["metric"], sort_keys=True)
    if len(a) != len(b):
        return False
    for x, y in zip(sorted(a, key=key), sorted(b, key=key)):
        if key(x) != key(y):
            return False
        px = x.get("values") or [x["value"]]
        py = y.get("values") or [y["value"]]
        if len(px) != len(py):
            return False
        for (tx, vx), (ty, vy) in zip(px, py):
            if tx != ty:
                return False
            if vx == vy:
                continue
            if exact:
                return False
            fx, fy = float(vx), float(vy)
            if abs(fx - fy) > 1e-9 * max(abs(fx), abs(fy), 1.0):
                return False
    return True


def bench_size(tmp, series, points, end_ms):
    end = end_ms // 1000
    qs = queries(end)
    data = os.path.join(tmp, "iocd-%d" % series)
    srv = start(data, os.path.join(tmp, "load.log"), [])
    try:
        rate = qb.load(srv.addr, series, points, end_ms)
    finally:
        srv.stop()  # seals everything
    res = {}
    for mode, extra in (("rollups", []), ("raw", ["--query-rollup-range", "0s"])):
        srv = start(data, os.path.join(tmp, "%s.log" % mode), extra)
        try:
            ans = answers(srv, qs)
            qb.REPS = REPS
            res[mode] = (ans, qb.sequential(srv, qs))
        finally:
            srv.stop()
    shutil.rmtree(data, ignore_errors=True)
    print("\n## %d series x %d points at 10 s (%d samples, %.1f h), loaded at %.2f M samples/s, "
          "sealed" % (series, points, series * points, points / 360.0, rate / 1e6))
    print("\none client, %d runs after %d warm-ups, ms:\n" % (REPS, qb.WARMUPS))
    rows = []
    for k, (name, _, params) in enumerate(qs):
        on, off = res["rollups"][1][k], res["raw"][1][k]
        exact = not any(f in params["query"] for f in ("sum_over_time", "avg_over_time"))
        n = len(res["raw"][0][k])
        rows.append([name, str(n), "%.1f" % on[0], "%.1f" % on[1], "%.1f" % off[0],
                     "%.1f" % off[1], "%.1fx" % (off[0] / on[0]) if on[0] > 0 else "-",
                     "yes" if same(res["rollups"][0][k], res["raw"][0][k], exact) else "NO"])
    qb.table(["query", "series", "rollups p50", "rollups p99", "raw p50", "raw p99",
              "speed-up p50", "same answer"], rows)


def main():
    for p in (qb.IOCD, qb.LOADGEN):
        if not os.access(p, os.X_OK):
            print("missing %s: run make bench-rollup" % p, file=sys.stderr)
            return 2
    with open("/proc/loadavg") as f:
        print("load average before: %s" % " ".join(f.read().split()[:3]))
    tmp = tempfile.mkdtemp(prefix="iocd-rollup-bench-")
    try:
        end_ms = (qb.time.time_ns() // 1000000 - 90000) // 10000 * 10000
        for size in SIZES:
            series, points = (int(x) for x in size.split(":"))
            bench_size(tmp, series, points, end_ms)
    except qb.BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
