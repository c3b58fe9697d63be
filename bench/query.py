"""bench/query.py - make bench-query: dashboard query latency, iocd beside VictoriaMetrics on
the same data in the same run, then what 50 concurrent dashboard queries cost ingest.

For each size (BENCH_SIZES, default "10000:360 100000:360": series x points at 10 s, ending
now), both servers get the IOC workload from bench/loadgen over HTTP line protocol, then each
query runs QUERY_REPS times (after 3 warm-ups, one keep-alive connection, one at a time) and
p50/p99 are printed with the ratio iocd/VictoriaMetrics. VictoriaMetrics runs with its result
cache off (-search.disableCache), so both compute every answer. Then, on a fresh iocd: the
ingest rate of loadgen paced at MIXED_RATE (1,000,000 samples/s) alone, and again with 50
clients issuing dashboard queries in a loop; the drop is printed (MIXED_RATE=0 skips it).
Requires build/iocd, build/bench/loadgen and victoria-metrics (Debian's package; `make
bench-query` installs it when missing)."""

import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IOCD = os.path.join(ROOT, "build", "iocd")
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
VM = shutil.which("victoria-metrics")
SIZES = os.environ.get("BENCH_SIZES", "10000:360 100000:360").split()
REPS = int(os.environ.get("QUERY_REPS", "30"))
MIXED_RATE = int(os.environ.get("MIXED_RATE", "1000000"))
IOCD_PORT, VM_PORT = 19490, 19491


def queries(end):
    h = end - 3600
    return [
        ("avg by (ward) (water_pressure_bar), 1 h at 60 s", "/api/v1/query_range",
         {"query": "avg by (ward) (water_pressure_bar)", "start": h, "end": end, "step": 60}),
        ("sum by (ward, domain) (rate(traffic_vehicles_total[5m])), 1 h", "/api/v1/query_range",
         {"query": "sum by (ward, domain) (rate(traffic_vehicles_total[5m]))", "start": h,
          "end": end, "step": 60}),
        ("max_over_time(camera_fps{ward=...}[10m]), instant", "/api/v1/query",
         {"query": 'max_over_time(camera_fps{ward="phan_dinh_phung"}[10m])', "time": end}),
        ("avg by (ward) (water_pressure_bar), 7 d at 1 h", "/api/v1/query_range",
         {"query": "avg by (ward) (water_pressure_bar)", "start": end - 7 * 86400, "end": end,
          "step": 3600}),
        ("/api/v1/series?match[]=water_pressure_bar", "/api/v1/series",
         {"match[]": "water_pressure_bar", "start": h, "end": end}),
        ("/api/v1/label/ward/values", "/api/v1/label/ward/values", {"start": h, "end": end}),
    ]


def wait_ready(port, path):
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("bench-query: the server on port %d did not start" % port)


def load(port, series, points, end_ms, rate=0):
    start = end_ms - (points - 1) * 10000
    args = [LOADGEN, "--url", "http://127.0.0.1:%d" % port, "--series", str(series),
            "--points", str(points), "--start-ms", str(start)]
    if rate > 0:
        args += ["--rate", str(rate)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800).stdout
    for line in out.splitlines():
        if line.startswith("samples_per_s"):
            return float(line.split()[1])
    return float("nan")


def timed(conn, path, params):
    q = urllib.parse.urlencode(params)
    t0 = time.perf_counter()
    conn.request("GET", path + "?" + q)
    r = conn.getresponse()
    body = r.read()
    dt = (time.perf_counter() - t0) * 1000
    if r.status != 200:
        raise RuntimeError("%s -> %d %s" % (path, r.status, body[:200]))
    return dt


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def measure(port, qs):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = []
    for _, path, params in qs:
        for _ in range(3):
            timed(conn, path, params)
        lat = [timed(conn, path, params) for _ in range(REPS)]
        out.append((pct(lat, 0.5), pct(lat, 0.99)))
    return out


def start_iocd(tmp, name):
    return subprocess.Popen([IOCD, "serve", "--data-dir", os.path.join(tmp, name), "--http",
                             "127.0.0.1:%d" % IOCD_PORT, "--influx-tcp", "", "--influx-udp", "",
                             "--log-level", "warn"], stderr=subprocess.DEVNULL)


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()


def mixed(tmp, end_ms, end):
    print("\n## ingest paced at %d samples/s, alone and with 50 concurrent dashboard queries"
          % MIXED_RATE)
    rates = []
    for with_queries in (False, True):
        iocd = start_iocd(tmp, "mixed-%d" % with_queries)
        wait_ready(IOCD_PORT, "/-/ready")
        load(IOCD_PORT, 10000, 360, end_ms - 3600 * 1000)  # an hour of history to query
        stop_flag = threading.Event()
        done = [0]

        def client():
            c = http.client.HTTPConnection("127.0.0.1", IOCD_PORT, timeout=120)
            qs = queries(end - 3600)
            k = 0
            while not stop_flag.is_set():
                _, path, params = qs[k % 3]
                try:
                    timed(c, path, params)
                    done[0] += 1
                except (OSError, RuntimeError):
                    c = http.client.HTTPConnection("127.0.0.1", IOCD_PORT, timeout=120)
                k += 1
        threads = [threading.Thread(target=client) for _ in range(50 if with_queries else 0)]
        for t in threads:
            t.start()
        t0 = time.time()
        r = load(IOCD_PORT, 100000, max(1, MIXED_RATE * 10 // 100000), end_ms, MIXED_RATE)
        elapsed = time.time() - t0
        stop_flag.set()
        for t in threads:
            t.join()
        stop(iocd)
        rates.append(r)
        print("%s: ingest %.0f samples/s%s" % (
            "with queries" if with_queries else "alone", r,
            ", %d queries answered (%.0f/s)" % (done[0], done[0] / elapsed) if with_queries else ""))
    print("ingest_drop_with_50_queries %.1f%%" % (100.0 * (1 - rates[1] / rates[0])))


def main():
    tmp = tempfile.mkdtemp(prefix="iocd-qbench-")
    try:
        end_ms = int(time.time()) // 60 * 60 * 1000
        end = end_ms // 1000
        print("# query latency, ms (p50 / p99 over %d runs); one client; VictoriaMetrics %s" %
              (REPS, "with -search.disableCache" if VM else "not installed"))
        for size in SIZES:
            series, points = (int(x) for x in size.split(":"))
            qs = queries(end)
            iocd = start_iocd(tmp, "iocd-%d" % series)
            wait_ready(IOCD_PORT, "/-/ready")
            rate_i = load(IOCD_PORT, series, points, end_ms)
            res_i = measure(IOCD_PORT, qs)
            stop(iocd)
            res_v = None
            if VM:
                vm = subprocess.Popen([VM, "-storageDataPath", os.path.join(tmp, "vm-%d" % series),
                                       "-httpListenAddr", "127.0.0.1:%d" % VM_PORT,
                                       "-search.disableCache", "-loggerLevel", "ERROR"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_ready(VM_PORT, "/health")
                load(VM_PORT, series, points, end_ms)
                c = http.client.HTTPConnection("127.0.0.1", VM_PORT, timeout=60)
                c.request("GET", "/internal/force_flush")
                c.getresponse().read()
                time.sleep(2)  # VictoriaMetrics makes fresh data searchable within about a second
                res_v = measure(VM_PORT, qs)
                stop(vm)
            print("\n## %d series x %d points (iocd ingested the load at %.2f M samples/s)" %
                  (series, points, rate_i / 1e6))
            print("| query | iocd p50 | iocd p99 | VM p50 | VM p99 | iocd/VM p50 |")
            print("|---|---|---|---|---|---|")
            for k, (name, _, _) in enumerate(qs):
                i50, i99 = res_i[k]
                if res_v:
                    v50, v99 = res_v[k]
                    print("| %s | %.1f | %.1f | %.1f | %.1f | %.2f |" %
                          (name, i50, i99, v50, v99, i50 / v50))
                else:
                    print("| %s | %.1f | %.1f | - | - | - |" % (name, i50, i99))
        if MIXED_RATE > 0:
            mixed(tmp, end_ms, end)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
