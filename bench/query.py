"""bench/query.py - the query benchmark: dashboard query latency of iocd, beside
VictoriaMetrics on the same data in the same run when it is installed, and what 50
concurrent dashboard clients cost ingest. make bench-query runs it (and installs the peer
when missing); bench/README.md describes the method.

For each size (BENCH_SIZES, default "10000:360 100000:360": series x points at 10 s, the
last point a minute or two before now), a fresh iocd (and a fresh VictoriaMetrics) gets the
IOC workload from build/bench/loadgen over HTTP line protocol. Each query is checked once
(it must answer 200 with something in it; the number of series is printed for both servers),
then timed by build/bench/qclient, a lean C client (so the figures are the servers' and not a
Python client's): QUERY_ROUNDS (default 5) keep-alive connections, each running it
QUERY_REPS times (default 50) one after another after 3 warm-ups; then by QUERY_CLIENTS
(default 50) Python clients at once, each QUERY_CLIENT_REPS (default 4) times on its own
connection. Latency is measured by the client: request sent to answer read. VictoriaMetrics runs with its result cache off (-search.disableCache), so both
compute every answer.

BENCH_MIXED=1 adds the ingest test, on a fresh iocd holding an hour of 10k series: loadgen
paced at MIXED_RATE samples/s (default 1,000,000) for about 10 s, alone and then with 50
clients issuing dashboard queries in a loop; both achieved rates and the drop are printed.
BENCH_MIXED defaults to 1; MIXED_RATE=0 or BENCH_MIXED=0 skips it.

BENCH_PEER: empty (use victoria-metrics when it is on the PATH) or "none" (iocd alone).
IOCD_ARGS: more flags for iocd serve, e.g. "--query-cache 0" (iocd without its read cache:
repeated queries then decode every block again, as VictoriaMetrics without its result cache
recomputes every answer).

Until the query engine is built in, /api/v1/query answers 404: the benchmark says so and
exits with status 3."""

import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
IOCD = os.path.join(ROOT, "build", "iocd")
IOCD_ARGS = os.environ.get("IOCD_ARGS", "").split()
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
QCLIENT = os.path.join(ROOT, "build", "bench", "qclient")
PEER = os.environ.get("BENCH_PEER", "")
VM = None if PEER == "none" else shutil.which("victoria-metrics")
SIZES = os.environ.get("BENCH_SIZES", "10000:360 100000:360").split()
REPS = int(os.environ.get("QUERY_REPS", "50"))
ROUNDS = int(os.environ.get("QUERY_ROUNDS", "5"))
WARMUPS = 3
CLIENTS = int(os.environ.get("QUERY_CLIENTS", "50"))
CLIENT_REPS = int(os.environ.get("QUERY_CLIENT_REPS", "4"))
MIXED = os.environ.get("BENCH_MIXED", "1") == "1"
MIXED_RATE = int(os.environ.get("MIXED_RATE", "1000000"))
WARD = "phan_dinh_phung"  # one of loadgen's 32 wards (sim/city.c)


# A request both servers answer with a constant: the HTTP round trip of this client alone.
FLOOR = ("buildinfo", "/api/v1/status/buildinfo", {})


class BenchError(Exception):
    pass


def queries(end):
    """(name, path, params) of what a city dashboard asks, over the hour ending at end."""
    h = end - 3600
    return [
        ("avg by (ward) (water_pressure_bar), 1 h at 60 s", "/api/v1/query_range",
         {"query": "avg by (ward) (water_pressure_bar)", "start": h, "end": end, "step": 60}),
        ("sum by (ward, domain) (rate(traffic_vehicles_total[5m])), 1 h at 60 s",
         "/api/v1/query_range",
         {"query": "sum by (ward, domain) (rate(traffic_vehicles_total[5m]))", "start": h,
          "end": end, "step": 60}),
        ('max_over_time(camera_fps{ward="%s"}[10m]), instant' % WARD, "/api/v1/query",
         {"query": 'max_over_time(camera_fps{ward="%s"}[10m])' % WARD, "time": end}),
        ("avg by (ward) (water_pressure_bar), 7 d at 1 h", "/api/v1/query_range",
         {"query": "avg by (ward) (water_pressure_bar)", "start": end - 7 * 86400, "end": end,
          "step": 3600}),
        ("/api/v1/series?match[]=water_pressure_bar", "/api/v1/series",
         {"match[]": "water_pressure_bar", "start": h, "end": end}),
        ("/api/v1/label/ward/values", "/api/v1/label/ward/values", {"start": h, "end": end}),
    ]


# ---- servers ----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, argv, log, addr=None):
        self.name, self.log, self.addr = name, log, addr
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)

    def log_tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-15:])
        except OSError:
            return ""

    def wait(self, cond, what, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("%s exited (%d) before %s; its log ends:\n%s"
                                 % (self.name, self.proc.returncode, what, self.log_tail()))
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        raise BenchError("%s: timed out waiting for %s; its log ends:\n%s"
                         % (self.name, what, self.log_tail()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_iocd(tmp, tag):
    s = Server("iocd", [IOCD, "serve", "--data-dir", os.path.join(tmp, "iocd-" + tag),
                        "--http", "127.0.0.1:0", "--influx-tcp", "", "--influx-udp", ""]
               + IOCD_ARGS, os.path.join(tmp, "iocd-%s.log" % tag))

    def ready():
        with open(s.log, errors="replace") as f:
            for line in f:
                if "msg=ready" in line:
                    for field in line.split():
                        if field.startswith("http="):
                            return field[5:]
        return None
    s.addr = s.wait(ready, "its ready line")
    s.wait(lambda: status(s.addr, "/-/ready") == 200, "/-/ready")
    return s


def start_vm(tmp, tag):
    addr = "127.0.0.1:%d" % free_port()
    s = Server("VictoriaMetrics", [VM, "-storageDataPath", os.path.join(tmp, "vm-" + tag),
                                   "-httpListenAddr", addr, "-search.disableCache",
                                   "-retentionPeriod", "1y", "-loggerLevel", "ERROR"],
               os.path.join(tmp, "vm-%s.log" % tag), addr)
    s.wait(lambda: status(addr, "/health") == 200, "/health")
    return s


# ---- HTTP -------------------------------------------------------------------------------

def conn_to(addr, timeout=300):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def status(addr, path):
    try:
        c = conn_to(addr, 5)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return None


def fetch(conn, path, params):
    """One GET; returns (status, body bytes, seconds)."""
    url = path + "?" + urllib.parse.urlencode(params)
    t0 = time.perf_counter()
    conn.request("GET", url)
    r = conn.getresponse()
    body = r.read()
    return r.status, body, time.perf_counter() - t0


def answer_size(body):
    """Series in a query answer, or entries in a series/labels answer."""
    data = json.loads(body)["data"]
    return len(data["result"]) if isinstance(data, dict) and "result" in data else len(data)


def check_query_api(srv):
    c = conn_to(srv.addr, 30)
    st, body, _ = fetch(c, "/api/v1/query", {"query": "1+1"})
    c.close()
    if st == 404:
        raise BenchError("%s answers 404 on /api/v1/query: the query engine is not in this "
                         "build yet. Nothing to measure; rebuild (make) once it has landed."
                         % srv.name)
    if st != 200:
        raise BenchError("%s: /api/v1/query?query=1+1 answered %d: %s"
                         % (srv.name, st, body[:300].decode("utf-8", "replace")))


# ---- load -------------------------------------------------------------------------------

def load(addr, series, points, end_ms, rate=0):
    """Replays the IOC workload ending at end_ms; returns loadgen's samples/s."""
    start = end_ms - (points - 1) * 10000
    argv = [LOADGEN, "--url", "http://" + addr, "--series", str(series), "--points",
            str(points), "--start-ms", str(start)]
    if rate > 0:
        argv += ["--rate", str(rate)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    out = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    if p.returncode != 0 or out.get("errors", "0") != "0":
        raise BenchError("loadgen into %s failed (exit %d, errors %s): %s %s" % (
            addr, p.returncode, out.get("errors"), out.get("first_error", ""),
            p.stderr.strip()[-300:]))
    return float(out.get("samples_per_s", "nan"))


def wait_searchable(vm, want):
    """VictoriaMetrics makes fresh samples searchable within a few seconds: wait until it
    counts as many water_pressure_bar samples in the hour as iocd does."""
    c = conn_to(vm.addr, 60)
    fetch(c, "/internal/force_flush", {})

    def same():
        st, body, _ = fetch(c, "/api/v1/query", want[0])
        return st == 200 and json.loads(body)["data"]["result"] == want[1]
    vm.wait(same, "the loaded samples to be searchable", timeout=120)
    c.close()


# ---- measurement ------------------------------------------------------------------------

def pct(v, p):
    """Nearest-rank percentile (p99 of 50 runs is the slowest)."""
    v = sorted(v)
    return v[max(0, math.ceil(p * len(v)) - 1)]


def sizes_of(srv, qs):
    c = conn_to(srv.addr)
    out = []
    for name, path, params in qs:
        st, body, _ = fetch(c, path, params)
        if st != 200:
            raise BenchError("%s: %s answered %d: %s" % (srv.name, name, st,
                                                         body[:300].decode("utf-8", "replace")))
        out.append(answer_size(body))
    c.close()
    return out


def qclient_times(addr, url, rounds, reps, warmups):
    """Times GET url with build/bench/qclient, a lean C client (so the figures are the
    server's round trip and not a Python client's own overhead): rounds times a fresh
    connection (and client process) asks reps times after warmups. Returns the latencies in
    ms, or raises BenchError naming the first failure. Below a tenth of a millisecond a
    connection's figures depend on whether the client and the server's thread share a core
    (on two cores each wake-up across them costs tens of microseconds), which is decided per
    connection: hence several rounds."""
    lat = []
    for _ in range(rounds):
        p = subprocess.run([QCLIENT, addr, url, str(reps), str(warmups)], capture_output=True,
                           text=True, timeout=3600)
        rows = [line.split() for line in p.stdout.splitlines()]
        if p.returncode != 0 or len(rows) != reps:
            raise BenchError("qclient failed (exit %d): %s" % (p.returncode,
                                                              p.stderr.strip()[-300:]))
        bad = [r[0] for r in rows if r[0] != "200"]
        if bad:
            raise BenchError("answered %s" % bad[0])
        lat += [int(r[2]) / 1000 for r in rows]
    return lat


def sequential(srv, qs):
    """One client, ROUNDS connections of REPS runs each (qclient_times): [(p50, p99) ms]."""
    out = []
    for name, path, params in qs:
        url = path + "?" + urllib.parse.urlencode(params)
        try:
            lat = qclient_times(srv.addr, url, ROUNDS, REPS, WARMUPS)
        except BenchError as e:
            raise BenchError("%s: %s: %s" % (srv.name, name, e))
        out.append((pct(lat, 0.5), pct(lat, 0.99)))
    return out


def concurrent(srv, qs):
    """Per query: CLIENTS clients at once, CLIENT_REPS requests each. Returns
    [(p50 ms, p99 ms, answers/s, errors, first error)]."""
    out = []
    for name, path, params in qs:
        lat, errors, first = [], [0], [None]
        lock = threading.Lock()
        barrier = threading.Barrier(CLIENTS + 1)

        def client():
            c = conn_to(srv.addr)
            barrier.wait()
            for _ in range(CLIENT_REPS):
                try:
                    st, body, dt = fetch(c, path, params)
                except OSError as e:
                    st, body, dt = -1, repr(e).encode(), 0
                    c.close()
                    c = conn_to(srv.addr)
                with lock:
                    if st == 200:
                        lat.append(dt * 1000)
                    else:
                        errors[0] += 1
                        first[0] = first[0] or "%d %s" % (st, body[:120].decode("utf-8", "replace"))
            c.close()
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if not lat:
            raise BenchError("%s: every concurrent %s failed: %s" % (srv.name, name, first[0]))
        out.append((pct(lat, 0.5), pct(lat, 0.99), len(lat) / elapsed, errors[0], first[0]))
    return out


# ---- report -----------------------------------------------------------------------------

def table(head, rows):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def ms(v):
    """Milliseconds, with a third digit below one."""
    return "%.3f" % v if v < 1 else "%.1f" % v


def ratio(a, b):
    return "%.2f" % (a / b) if b > 0 else "-"


def bench_size(tmp, series, points, end_ms):
    end = end_ms // 1000
    qs = queries(end)
    tag = str(series)
    res, count_probe = {}, None
    for kind in ("iocd", "vm") if VM else ("iocd",):
        srv = start_iocd(tmp, tag) if kind == "iocd" else start_vm(tmp, tag)
        try:
            if kind == "iocd":
                check_query_api(srv)
            rate = load(srv.addr, series, points, end_ms)
            if kind == "vm":
                wait_searchable(srv, count_probe)
            else:
                count_probe = samples_probe(srv, end)
            res[kind] = (rate, sizes_of(srv, qs), sequential(srv, qs), concurrent(srv, qs),
                         sequential(srv, [FLOOR])[0])
        finally:
            srv.stop()
            shutil.rmtree(os.path.join(tmp, "%s-%s" % (kind, tag)), ignore_errors=True)
    print("\n## %d series x %d points at 10 s (%d samples); loaded at %.2f M samples/s by iocd%s"
          % (series, points, series * points, res["iocd"][0] / 1e6,
             ", %.2f M by VictoriaMetrics" % (res["vm"][0] / 1e6) if VM else ""))
    i_size, i_seq, i_conc, i_floor = res["iocd"][1:]
    for k, n in enumerate(i_size):
        if n == 0:
            print("WARNING: iocd answered nothing to %s: the figures below measure an empty answer"
                  % qs[k][0])
    print("\none client (build/bench/qclient), %d connections of %d runs after %d warm-ups, ms:\n"
          % (ROUNDS, REPS, WARMUPS))
    if VM:
        v_size, v_seq, v_conc, v_floor = res["vm"][1:]
        table(["query", "series (iocd/VM)", "iocd p50", "iocd p99", "VM p50", "VM p99",
               "iocd/VM p50", "iocd/VM p99"],
              [[qs[k][0], "%d/%d" % (i_size[k], v_size[k]), ms(i_seq[k][0]),
                ms(i_seq[k][1]), ms(v_seq[k][0]), ms(v_seq[k][1]),
                ratio(i_seq[k][0], v_seq[k][0]), ratio(i_seq[k][1], v_seq[k][1])]
               for k in range(len(qs))])
    else:
        table(["query", "series", "iocd p50", "iocd p99"],
              [[qs[k][0], str(i_size[k]), ms(i_seq[k][0]), ms(i_seq[k][1])]
               for k in range(len(qs))])
    print("\nThe same client's floor, a constant answer (%s): iocd p50 %s ms%s."
          % (FLOOR[1], ms(i_floor[0]), ", VictoriaMetrics p50 %s ms" % ms(v_floor[0]) if VM else ""))
    print("\n%d clients at once, %d requests each, ms and answers/s:\n" % (CLIENTS, CLIENT_REPS))
    head = ["query", "iocd p50", "iocd p99", "iocd answers/s"]
    if VM:
        head += ["VM p50", "VM p99", "VM answers/s", "iocd/VM p50", "iocd/VM p99"]
    rows = []
    for k in range(len(qs)):
        r = [qs[k][0], "%.1f" % i_conc[k][0], "%.1f" % i_conc[k][1], "%.0f" % i_conc[k][2]]
        if VM:
            r += ["%.1f" % v_conc[k][0], "%.1f" % v_conc[k][1], "%.0f" % v_conc[k][2],
                  ratio(i_conc[k][0], v_conc[k][0]), ratio(i_conc[k][1], v_conc[k][1])]
        rows.append(r)
    table(head, rows)
    for kind in res:
        for k, c in enumerate(res[kind][3]):
            if c[3]:
                print("%s: %d concurrent %s failed (first: %s)"
                      % (kind, c[3], qs[k][0], c[4]))


def samples_probe(srv, end):
    """The query (and iocd's answer) that tells when the peer can search all it was sent."""
    params = {"query": "sum(count_over_time(water_pressure_bar[2h]))", "time": end}
    c = conn_to(srv.addr)
    st, body, _ = fetch(c, "/api/v1/query", params)
    c.close()
    if st != 200:
        raise BenchError("iocd: the sample count query answered %d" % st)
    return params, json.loads(body)["data"]["result"]


def mixed(tmp, end_ms):
    """Ingest paced at MIXED_RATE into 100k series for about 10 s, alone and with CLIENTS
    clients looping over the dashboard queries on an hour of history."""
    points = max(1, MIXED_RATE * 10 // 100000)
    hist_end = end_ms - points * 10000
    qs = queries(hist_end // 1000)[:3]
    print("\n## ingest paced at %d samples/s (100k series x %d points), alone and with %d "
          "clients querying" % (MIXED_RATE, points, CLIENTS))
    rates = []
    for with_queries in (False, True):
        srv = start_iocd(tmp, "mixed-%d" % with_queries)
        try:
            check_query_api(srv)
            load(srv.addr, 10000, 360, hist_end)  # the hour of history the dashboards read
            stop = threading.Event()
            done, failed = [0], [0]

            def client(k):
                c = conn_to(srv.addr)
                while not stop.is_set():
                    _, path, params = qs[k % len(qs)]
                    k += 1
                    try:
                        st, _, _ = fetch(c, path, params)
                    except OSError:
                        st = -1
                        c.close()
                        c = conn_to(srv.addr)
                    if st == 200:
                        done[0] += 1
                    else:
                        failed[0] += 1
                c.close()
            threads = [threading.Thread(target=client, args=(k,))
                       for k in range(CLIENTS if with_queries else 0)]
            for t in threads:
                t.start()
            t0 = time.perf_counter()
            rate = load(srv.addr, 100000, points, end_ms, MIXED_RATE)
            elapsed = time.perf_counter() - t0
            stop.set()
            for t in threads:
                t.join()
        finally:
            srv.stop()
            shutil.rmtree(os.path.join(tmp, "iocd-mixed-%d" % with_queries), ignore_errors=True)
        rates.append(rate)
        if with_queries:
            print("with %d clients querying: ingest %.0f samples/s; %d answers (%.0f/s), %d "
                  "failed" % (CLIENTS, rate, done[0], done[0] / elapsed, failed[0]))
        else:
            print("alone: ingest %.0f samples/s" % rate)
    print("ingest drop with %d clients querying: %.1f%%"
          % (CLIENTS, 100.0 * (1 - rates[1] / rates[0])))


def main():
    for path in (IOCD, LOADGEN):
        if not os.access(path, os.X_OK):
            sys.exit("bench/query.py: %s is missing: run make, then make build/bench/loadgen"
                     % os.path.relpath(path, ROOT))
    tmp = tempfile.mkdtemp(prefix="iocd-qbench-")
    try:
        # The data ends on a whole minute at least a minute ago (VictoriaMetrics hides the
        # last 30 s by default, -search.latencyOffset).
        end_ms = (int(time.time()) // 60 - 1) * 60000
        print("# query benchmark: %d CPUs; iocd%s; peer: %s" % (
            os.cpu_count(), " " + " ".join(IOCD_ARGS) if IOCD_ARGS else " (defaults)",
            ("VictoriaMetrics (%s, -search.disableCache)" % VM) if VM else "none"))
        for size in SIZES:
            series, _, points = size.partition(":")
            bench_size(tmp, int(series), int(points or 360), end_ms)
        if MIXED and MIXED_RATE > 0:
            mixed(tmp, end_ms)
    except BenchError as e:
        print("bench/query.py: %s" % e, file=sys.stderr)
        sys.exit(3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
