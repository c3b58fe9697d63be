"""bench/compare.py - make compare: iocd beside VictoriaMetrics, Prometheus (+ Alertmanager)
and InfluxDB on the same IOC workload, on this machine, one server at a time, each with a
fresh data directory on 127.0.0.1 ports; writes bench/results/<date>.md and
bench/results/<date>-{ingest,bytes,memory,query,alert}.png. bench/README.md ("Side by
side") describes the method.

For each size, run and system (in that nesting, so one run's systems follow each other):
  1. start the server on a fresh data dir; replay the workload with build/bench/loadgen (HTTP
     line protocol, 4 connections, 5,000-line batches; Prometheus: remote write, each series
     on one connection in time order); sample VmRSS every 100 ms;
  2. ingest samples/s (loadgen's wall clock) and samples per server CPU-second (utime+stime
     from /proc/PID/stat over the replay); peak RSS (start to SETTLE s after the replay) and
     settled RSS (SETTLE s after the replay);
  3. the peer's documented flush/compaction, then count the stored samples with a query
     (must equal what loadgen sent), stop gracefully and measure the data dir (du);
  4. restart on the same data dir, ready to alert; run the dashboard queries of
     bench/query.py (PromQL; InfluxQL equivalents for InfluxDB), each answer checked first;
  5. alert latency (iocd; Prometheus, and VictoriaMetrics with vmalert, each notifying
     through Alertmanager): write samples that cross a threshold and time their
     notifications: iocd's incident read from Kafka (build/tools/kafkatool, as
     bench/incidents.py), Alertmanager's webhook served here.

Environment:
  COMPARE_SIZES        "series:points[:runs] ..." (default "10000:360 100000:360")
  COMPARE_RUNS         runs per size when the size does not say (default 3)
  COMPARE_SYSTEMS      comma list (default iocd,victoria-metrics,prometheus,influxdb)
  COMPARE_QUERY_REPS   timed runs of each query per connection after 3 warm-ups (default 20)
  COMPARE_QUERY_ROUNDS connections each query is timed on, by bench/qclient (default 5)
  COMPARE_SETTLE       seconds after the replay when settled RSS is read (default 10)
  COMPARE_PROBES       threshold crossings per run for Prometheus (default 30, ~2 s apart)
  COMPARE_IOCD_PROBES  threshold crossings per run for iocd (default 100, ~50 ms apart)
  COMPARE_ALERT_DEFAULTS  1 (default): also time Prometheus' default settings (1 m
                       evaluation, 30 s group_wait); 0 leaves that out (about 2 min a run)
  COMPARE_OUT          directory for the report and plots (default bench/results)
  COMPARE_DATE         date in the file names (default today)
  COMPARE_IOCD_ARGS    more flags for iocd serve, e.g. "--query-cache 0" to time iocd's queries
                       without its read cache, as VictoriaMetrics runs without its result cache
Exits non-zero, with the server's log tail, when a server does not start, refuses a write,
answers a query wrongly, loses samples or misses an alert."""

import http.client
import http.server
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no bench/__pycache__ left behind
import query as dashboard  # noqa: E402  bench/query.py: the dashboard requests

IOCD = os.path.join(ROOT, "build", "iocd")
IOCD_ARGS = os.environ.get("COMPARE_IOCD_ARGS", "").split()
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
KAFKATOOL = os.path.join(ROOT, "build", "tools", "kafkatool")

RUNS = int(os.environ.get("COMPARE_RUNS", "3"))
SIZES = []
for _s in os.environ.get("COMPARE_SIZES", "10000:360 100000:360").split():
    _p = _s.split(":")
    SIZES.append((int(_p[0]), int(_p[1]) if len(_p) > 1 else 360,
                  int(_p[2]) if len(_p) > 2 else RUNS))
SYSTEMS = [s.strip() for s in os.environ.get(
    "COMPARE_SYSTEMS", "iocd,victoria-metrics,prometheus,influxdb").split(",") if s.strip()]
SYSTEMS.sort(key=lambda s: s != "iocd")  # iocd first: the others' answers are checked against it
QUERY_REPS = int(os.environ.get("COMPARE_QUERY_REPS", "20"))
QUERY_ROUNDS = int(os.environ.get("COMPARE_QUERY_ROUNDS", "5"))
WARMUPS = 3
SETTLE = float(os.environ.get("COMPARE_SETTLE", "10"))
PROBES = int(os.environ.get("COMPARE_PROBES", "30"))
IOCD_PROBES = int(os.environ.get("COMPARE_IOCD_PROBES", "100"))
ALERT_DEFAULTS = os.environ.get("COMPARE_ALERT_DEFAULTS", "1") == "1"
OUT = os.environ.get("COMPARE_OUT") or os.path.join(ROOT, "bench", "results")
DATE = os.environ.get("COMPARE_DATE") or time.strftime("%Y-%m-%d")
WARD = dashboard.WARD
CONNS, BATCH = 4, 5000
INFLUX_DB = "bench"
TMP = None  # the run's scratch directory; shown as <tmp> in the report


class CompareError(Exception):
    pass


def say(msg):
    print("compare: " + msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shown(argv):
    """A command line as the report shows it: program name only, scratch paths as <tmp>."""
    out = [os.path.basename(argv[0])]
    for a in argv[1:]:
        a = a.replace(TMP, "<tmp>") if TMP else a
        out.append(a if a and " " not in a and '"' not in a else json.dumps(a))
    return " ".join(out)


# ---- processes ---------------------------------------------------------------------------

LIVE = []  # every process started here, stopped at exit


class Proc:
    """A server (or helper) process with its log file."""

    def __init__(self, name, argv, log, addr=None, stdin=subprocess.DEVNULL):
        self.name, self.argv, self.log, self.addr = name, argv, log, addr
        self.logf = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        LIVE.append(self)

    def log_tail(self, n=20):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def fail(self, what):
        raise CompareError("%s: %s\n--- its log ends:\n%s" % (self.name, what, self.log_tail()))

    def wait_for(self, cond, what, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail("exited (status %d) before %s" % (self.proc.returncode, what))
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out after %d s waiting for %s" % (timeout, what))

    def stop(self, timeout=120, graceful=True):
        """SIGTERM and wait; a server that does not stop in time is an error when graceful."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if graceful:
                    self.fail("did not stop within %d s of SIGTERM (killed)" % timeout)
        self.logf.close()
        if self in LIVE:
            LIVE.remove(self)


def stop_all():
    for p in list(reversed(LIVE)):
        try:
            p.stop(timeout=20, graceful=False)
        except CompareError:
            pass


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """VmRSS and RssAnon of a process every 100 ms; the peaks since start."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_rss, self.peak_anon = pid, 0, 0
        self.halt = threading.Event()
        self.start()

    def run(self):
        while not self.halt.is_set():
            self.peak_rss = max(self.peak_rss, status_kib(self.pid, "VmRSS"))
            self.peak_anon = max(self.peak_anon, status_kib(self.pid, "RssAnon"))
            self.halt.wait(0.1)

    def finish(self):
        self.halt.set()
        self.join()


def du(path, exclude=()):
    """Allocated bytes under path (as du: st_blocks, hard links once); top-level names in
    exclude are left out."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        if dirpath == path:
            dirnames[:] = [d for d in dirnames if d not in exclude]
            filenames = [f for f in filenames if f not in exclude]
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    st = os.lstat(path)
    return total + st.st_blocks * 512


# ---- HTTP ---------------------------------------------------------------------------------

def http_req(addr, method, path, params=None, body=None, headers=None, timeout=300):
    """One request on a fresh connection: (status, body bytes)."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        c.request(method, url, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def http_status(addr, path):
    try:
        return http_req(addr, "GET", path, timeout=5)[0]
    except OSError:
        return None


def get_json(srv, path, params=None, method="GET"):
    try:
        st, body = http_req(srv.addr, method, path, params)
    except OSError as e:
        srv.fail("%s %s failed: %r" % (method, path, e))
    if st // 100 != 2:
        srv.fail("%s %s %s answered %d: %s" % (method, path, params or "", st,
                                               body[:400].decode("utf-8", "replace")))
    try:
        return json.loads(body) if body else None
    except ValueError:
        srv.fail("%s %s answered something that is not JSON: %r" % (method, path, body[:200]))


# ---- Prometheus remote write from here (probes): protobuf and snappy by hand ---------------

def _varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field(num, data):
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def remote_write_body(series):
    """series: [(labels dict, value, timestamp ms)] -> snappy-compressed WriteRequest."""
    req = b""
    for labels, value, ts in series:
        ts_msg = b""
        for k in sorted(labels):
            ts_msg += _field(1, _field(1, k.encode()) + _field(2, labels[k].encode()))
        sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(ts)
        ts_msg += _field(2, sample)
        req += _field(1, ts_msg)
    # Snappy block format, literals only (valid, uncompressed).
    out = bytearray(_varint(len(req)))
    for i in range(0, len(req), 65536):
        chunk = req[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
    return bytes(out)


# ---- the load ---------------------------------------------------------------------------------

def loadgen(srv, series, points, end_ms, extra):
    argv = [LOADGEN, "--url", "http://" + srv.addr, "--series", str(series), "--points",
            str(points), "--start-ms", str(end_ms - (points - 1) * 10000), "--conns",
            str(CONNS), "--batch", str(BATCH)] + extra
    p = subprocess.run(argv, capture_output=True, text=True, timeout=7200)
    out = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    if p.returncode != 0 or out.get("errors", "0") != "0" or "samples_per_s" not in out:
        srv.fail("loadgen (%s) failed: exit %d, %s errors, first: %s %s" % (
            shown(argv), p.returncode, out.get("errors"), out.get("first_error", ""),
            p.stderr.strip()[-300:]))
    out["argv"] = shown(argv)
    return out


def promql_count(srv, end_s):
    """Samples stored in the 2 h before end_s, summed over every metric name."""
    names = get_json(srv, "/api/v1/label/__name__/values")["data"]
    total = 0
    for n in names:
        r = get_json(srv, "/api/v1/query", {"query": "sum(count_over_time(%s[2h]))" % n,
                                            "time": end_s})["data"]["result"]
        total += int(float(r[0]["value"][1])) if r else 0
    return total


# ---- the systems --------------------------------------------------------------------------

IOCD_RULES = """-- bench/compare.py: one streaming rule, the threshold the probes cross
rule "water_pressure_low" { select = 'water_pressure_bar', when = "value < 1",
  group_by = { "device" }, domain = "water", severity = "critical",
  summary = "low water pressure at {{device}}" }
"""

PROM_RULES = """groups:
  - name: fast
    interval: 1s
    rules:
      - alert: WaterPressureLowFast
        expr: water_pressure_bar < 1
  - name: default
    rules:
      - alert: WaterPressureLow
        expr: water_pressure_bar < 1
"""

AM_CONFIG = """route:
  receiver: hook
  group_by: ['...']
  routes:
    - matchers: ['alertname="WaterPressureLowFast"']
      group_wait: 0s
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:%d/
        send_resolved: false
"""

INFLUX_CONF = """reporting-enabled = false
bind-address = "127.0.0.1:%(rpc)d"
[meta]
  dir = "%(dir)s/meta"
[data]
  dir = "%(dir)s/data"
  wal-dir = "%(dir)s/wal"
  cache-snapshot-write-cold-duration = "10s"
  compact-full-write-cold-duration = "10s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:%(http)d"
"""


def pkg_version(pkg):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


class System:
    name = label = short = ""
    promql = True
    alerts = False

    def start(self, d, tag, alerting, ctx):
        raise NotImplementedError

    def ingest_args(self):
        return []

    def prepare(self, srv):
        pass

    def flush(self, srv, d, info):
        """The documented way to get the data compacted on disk; notes go in info."""

    def count(self, srv, end_s):
        return promql_count(srv, end_s)

    def disk(self, d, info):
        return du(d)


class Iocd(System):
    name, label, short = "iocd", "iocd", "iocd"
    alerts = True

    def version(self):
        v = subprocess.run([IOCD, "version"], capture_output=True, text=True).stdout.strip()
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        return "%s; tree at %s" % (v, rev)

    def start(self, d, tag, alerting, ctx):
        argv = [IOCD, "serve", "--data-dir", d, "--http", "127.0.0.1:0", "--influx-tcp", "",
                "--influx-udp", ""] + IOCD_ARGS
        if alerting:
            rules = os.path.join(TMP, "iocd-rules.lua")
            with open(rules, "w") as f:
                f.write(IOCD_RULES)
            mock = Proc("kafkatool mock", [KAFKATOOL, "mock"],
                        os.path.join(TMP, "kafka-%s.log" % tag), stdin=subprocess.PIPE)

            def bootstrap():
                with open(mock.log, errors="replace") as f:
                    for line in f:
                        if line.startswith("bootstrap "):
                            return line.split()[1]
            ctx["kafka"] = mock
            ctx["bootstrap"] = mock.wait_for(bootstrap, "its bootstrap line", 30)
            argv += ["--rules", rules, "--kafka-brokers", ctx["bootstrap"]]
        srv = Proc("iocd", argv, os.path.join(TMP, "iocd-%s.log" % tag))
        srv.shown = shown(argv).replace(ctx.get("bootstrap", "\0"), "<mock kafka>")

        def ready():
            with open(srv.log, errors="replace") as f:
                for line in f:
                    if "msg=ready" in line:
                        for field in line.split():
                            if field.startswith("http="):
                                return field[5:]
        srv.addr = srv.wait_for(ready, "its ready line")
        srv.wait_for(lambda: http_status(srv.addr, "/-/ready") == 200, "/-/ready")
        return srv

    def alert(self, srv, ctx, run_tag):
        """Probes cross the rule's threshold; the incident is read from Kafka."""
        proc = subprocess.Popen([KAFKATOOL, "consume", ctx["bootstrap"], "iocd.incidents",
                                 "100000000", "7200"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        arrivals, lock = {}, threading.Lock()

        def reader():
            for line in proc.stdout:
                t = time.monotonic()
                try:
                    ev = json.loads(json.loads(line)["value"])
                    dev = ev["incident"]["labels"].get("device")
                except (ValueError, KeyError, TypeError):
                    continue
                with lock:
                    arrivals.setdefault(dev, t)
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            probe = line_prober(srv, lambda st: st == 204)
            warm = "warmup-%s" % run_tag
            probe(warm)
            deadline = time.monotonic() + 60
            while warm not in arrivals and time.monotonic() < deadline:
                time.sleep(0.05)
            if warm not in arrivals:
                srv.fail("no incident on Kafka within 60 s of a threshold crossing")
            rnd = random.Random(run_tag)
            sent = {}
            for i in range(IOCD_PROBES):
                dev = "probe-%s-%d" % (run_tag, i)
                sent[dev] = time.monotonic()
                probe(dev)
                time.sleep(0.03 + 0.04 * rnd.random())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lock:
                    if all(k in arrivals for k in sent):
                        break
                time.sleep(0.05)
            missing = [k for k in sent if k not in arrivals]
            if missing:
                srv.fail("%d of %d incidents never reached Kafka (first: %s)"
                         % (len(missing), len(sent), missing[0]))
            lat = [(arrivals[k] - t) * 1000 for k, t in sent.items()]
            return {"fast": lat, "default": lat}
        finally:
            proc.kill()
            proc.wait()


def line_prober(srv, ok):
    """probe(device): writes one threshold-crossing sample as a line (now, ms precision) on
    one keep-alive connection; a status ok() refuses stops the comparison."""
    host, port = srv.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def probe(dev):
        line = "water,ward=probe,domain=water,device=%s pressure_bar=0.5 %d" % (
            dev, int(time.time() * 1000))
        conn.request("POST", "/write?precision=ms", line.encode())
        r = conn.getresponse()
        r.read()
        if not ok(r.status):
            srv.fail("probe write answered %d" % r.status)
    return probe


def start_alertmanager(tag, ctx):
    """Alertmanager with AM_CONFIG, notifying a Webhook; returns its address."""
    rules = os.path.join(TMP, "prometheus-rules.yml")
    with open(rules, "w") as f:
        f.write(PROM_RULES)
    ctx["rules"] = rules
    hook = Webhook()
    ctx["hook"] = hook
    am_addr = "127.0.0.1:%d" % free_port()
    am_cfg = os.path.join(TMP, "alertmanager.yml")
    with open(am_cfg, "w") as f:
        f.write(AM_CONFIG % hook.port)
    am_argv = [shutil.which("prometheus-alertmanager"), "--config.file", am_cfg,
               "--storage.path", os.path.join(TMP, "am-" + tag), "--web.listen-address",
               am_addr, "--cluster.listen-address=", "--log.level=info"]
    am = Proc("Alertmanager", am_argv, os.path.join(TMP, "am-%s.log" % tag), am_addr)
    am.wait_for(lambda: http_status(am_addr, "/-/ready") == 200, "/-/ready")
    ctx["am"] = am
    ctx["am_shown"] = shown(am_argv).replace(str(hook.port), "<hook port>")
    return am_addr


def alert_through_am(srv, ctx, run_tag, probe, evaluator):
    """PROBES threshold crossings written with probe(device); the latency of each to its
    Alertmanager webhook notification, per rule group ("fast", "default")."""
    hook = ctx["hook"]
    rnd = random.Random(run_tag)
    warm = "warmup-%s" % run_tag
    probe(warm)
    if not hook.wait({("WaterPressureLowFast", warm)}, 90):
        srv.fail("no webhook notification within 90 s of a threshold crossing; %s's log "
                 "ends:\n%s\nAlertmanager's log ends:\n%s" % (
                     evaluator.name, evaluator.log_tail(), ctx["am"].log_tail()))
    sent = {}
    for i in range(PROBES):
        dev = "probe-%s-%d" % (run_tag, i)
        sent[dev] = time.monotonic()
        probe(dev)
        time.sleep(1.5 + rnd.random())
    out = {}
    modes = [("fast", "WaterPressureLowFast", 60)]
    if ALERT_DEFAULTS:
        modes.append(("default", "WaterPressureLow", 60 + 30 + 60 + 30))
    for mode, alertname, wait_s in modes:
        keys = {(alertname, d) for d in sent}
        if not hook.wait(keys, wait_s):
            got = sum(1 for k in keys if k in hook.arrivals)
            srv.fail("only %d of %d %s notifications arrived; Alertmanager's log ends:\n%s"
                     % (got, len(keys), alertname, ctx["am"].log_tail()))
        out[mode] = [(hook.arrivals[(alertname, d)] - t) * 1000 for d, t in sent.items()]
    return out


class VictoriaMetrics(System):
    name, label, short = "victoria-metrics", "VictoriaMetrics", "VM"
    alerts = True

    def version(self):
        a = subprocess.run(["prometheus-alertmanager", "--version"], capture_output=True,
                           text=True)
        return "victoria-metrics and vmalert %s (Debian); %s" % (
            pkg_version("victoria-metrics"), (a.stdout or a.stderr).splitlines()[0])

    def start(self, d, tag, alerting, ctx):
        addr = "127.0.0.1:%d" % free_port()
        argv = [shutil.which("victoria-metrics"), "-storageDataPath", d, "-httpListenAddr", addr,
                "-search.disableCache", "-retentionPeriod", "1y", "-loggerLevel", "ERROR"]
        if alerting:
            # By default the last 30 s of data are hidden from queries (and so from vmalert);
            # its smallest setting is the fastest alerting VictoriaMetrics offers.
            argv += ["-search.latencyOffset", "1s"]
        srv = Proc("VictoriaMetrics", argv, os.path.join(TMP, "vm-%s.log" % tag), addr)
        srv.shown = shown(argv)
        srv.wait_for(lambda: http_status(addr, "/health") == 200, "/health")
        if alerting:
            am_addr = start_alertmanager(tag, ctx)
            va_addr = "127.0.0.1:%d" % free_port()
            va_argv = [shutil.which("vmalert"), "-datasource.url", "http://" + addr,
                       "-notifier.url", "http://" + am_addr, "-rule", ctx["rules"],
                       "-httpListenAddr", va_addr, "-loggerLevel", "INFO"]
            va = Proc("vmalert", va_argv, os.path.join(TMP, "vmalert-%s.log" % tag), va_addr)
            va.wait_for(lambda: http_status(va_addr, "/health") == 200, "/health")
            ctx["vmalert"] = va
            ctx["am_shown"] += "\nvmalert: " + shown(va_argv).replace(
                ctx["rules"], "<rule file>")
        return srv

    def alert(self, srv, ctx, run_tag):
        probe = line_prober(srv, lambda st: st // 100 == 2)
        return alert_through_am(srv, ctx, run_tag, probe, ctx["vmalert"])

    def flush(self, srv, d, info):
        get_json(srv, "/internal/force_flush")
        months = sorted({time.strftime("%Y_%m", time.gmtime(t))
                         for t in (info["start_ms"] // 1000, info["end_ms"] // 1000)})
        for m in months:
            get_json(srv, "/internal/force_merge", {"partition_prefix": m})
        time.sleep(1)

        def merged():
            st, body = http_req(srv.addr, "GET", "/metrics")
            active = [line for line in body.decode().splitlines()
                      if line.startswith("vm_active_merges")]
            return st == 200 and active and all(line.endswith(" 0") for line in active)
        srv.wait_for(merged, "its merges to finish", 600)

    def count(self, srv, end_s):
        # Flushed samples become searchable within a second or so: wait for all of them.
        got = [0]

        def complete():
            got[0] = promql_count(srv, end_s)
            return got[0] >= self.want
        try:
            srv.wait_for(complete, "every sample to be searchable", 120)
        except CompareError:
            pass
        return got[0]

    def disk(self, d, info):
        info["vm_cache_bytes"] = du(os.path.join(d, "cache")) if os.path.isdir(
            os.path.join(d, "cache")) else 0
        return du(d, exclude=("cache",))


class Prometheus(System):
    name, label, short = "prometheus", "Prometheus", "Prom"
    alerts = True

    def version(self):
        v = subprocess.run(["prometheus", "--version"], capture_output=True, text=True)
        a = subprocess.run(["prometheus-alertmanager", "--version"], capture_output=True,
                           text=True)
        return "%s; %s" % ((v.stdout or v.stderr).splitlines()[0],
                           (a.stdout or a.stderr).splitlines()[0])

    def ingest_args(self):
        return ["--mode", "remote-write", "--ordered"]

    def start(self, d, tag, alerting, ctx):
        addr = "127.0.0.1:%d" % free_port()
        cfg = os.path.join(TMP, "prometheus-%s.yml" % ("alerting" if alerting else "plain"))
        text = "global:\n  scrape_interval: 1h\n"
        if alerting:
            am_addr = start_alertmanager(tag, ctx)
            text += ("rule_files:\n  - %s\nalerting:\n  alertmanagers:\n    - static_configs:\n"
                     "        - targets: ['%s']\n" % (ctx["rules"], am_addr))
        with open(cfg, "w") as f:
            f.write(text)
        argv = [shutil.which("prometheus"), "--config.file", cfg, "--storage.tsdb.path", d,
                "--web.listen-address", addr, "--web.enable-remote-write-receiver",
                "--web.enable-admin-api", "--log.level=info"]
        srv = Proc("Prometheus", argv, os.path.join(TMP, "prometheus-%s.log" % tag), addr)
        srv.shown = shown(argv)
        srv.config = text.replace(TMP, "<tmp>")
        srv.wait_for(lambda: http_status(addr, "/-/ready") == 200, "/-/ready", 600)
        if alerting:  # alerts sent before Alertmanager is discovered are dropped
            srv.wait_for(lambda: get_json(srv, "/api/v1/alertmanagers")["data"][
                "activeAlertmanagers"], "Alertmanager to be discovered", 60)
        return srv

    def flush(self, srv, d, info):
        # The head stays in memory and the WAL until it spans 3 h; a snapshot writes it out
        # as the block compaction would, so its size is reported beside the WAL's.
        snap = get_json(srv, "/api/v1/admin/tsdb/snapshot", method="POST")["data"]["name"]
        path = os.path.join(d, "snapshots", snap)
        info["prom_block_bytes"] = du(path)
        shutil.rmtree(os.path.join(d, "snapshots"), ignore_errors=True)

    def disk(self, d, info):
        info["prom_wal_bytes"] = du(os.path.join(d, "wal"))
        return du(d, exclude=("snapshots",))

    def alert(self, srv, ctx, run_tag):
        def probe(dev):
            body = remote_write_body([({"__name__": "water_pressure_bar", "ward": "probe",
                                        "domain": "water", "device": dev}, 0.5,
                                       int(time.time() * 1000))])
            st, resp = http_req(srv.addr, "POST", "/api/v1/write", body=body, headers={
                "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                "X-Prometheus-Remote-Write-Version": "0.1.0"})
            if st // 100 != 2:
                srv.fail("probe remote write answered %d: %s" % (st, resp[:200]))
        return alert_through_am(srv, ctx, run_tag, probe, srv)


class InfluxDB(System):
    name, label, short = "influxdb", "InfluxDB", "Influx"
    promql = False

    def version(self):
        v = subprocess.run(["influxd", "version"], capture_output=True, text=True).stdout.strip()
        return "%s (Debian %s)" % (v, pkg_version("influxdb"))

    def ingest_args(self):
        return ["--path", "/write?db=%s&precision=ms" % INFLUX_DB]

    def start(self, d, tag, alerting, ctx):
        port, rpc = free_port(), free_port()
        cfg = os.path.join(TMP, "influxdb-%s.conf" % tag)
        text = INFLUX_CONF % {"rpc": rpc, "http": port, "dir": d}
        with open(cfg, "w") as f:
            f.write(text)
        addr = "127.0.0.1:%d" % port
        argv = [shutil.which("influxd"), "run", "-config", cfg]
        srv = Proc("InfluxDB", argv, os.path.join(TMP, "influxdb-%s.log" % tag), addr)
        srv.shown = shown(argv)
        srv.config = text.replace(TMP, "<tmp>")
        srv.wait_for(lambda: http_status(addr, "/ping") == 204, "/ping", 600)
        return srv

    def prepare(self, srv):
        get_json(srv, "/query", {"q": "CREATE DATABASE %s" % INFLUX_DB}, method="POST")

    def flush(self, srv, d, info):
        # No API forces it: the cache is written to TSM files once a shard has been cold for
        # cache-snapshot-write-cold-duration, then fully compacted after
        # compact-full-write-cold-duration (both 10 s here). Wait for both to be done.
        stable = {"n": 0, "last": None}

        def done():
            v = get_json(srv, "/debug/vars")
            def of(kind):  # shard path -> its statistics
                return {k.split(":", 1)[1]: x["values"] for k, x in v.items()
                        if k.startswith(kind + ":")}
            engines, files, caches = of("tsm1_engine"), of("tsm1_filestore"), of("tsm1_cache")
            cached = [c.get("memBytes", 0) for c in caches.values()]
            busy = any(e.get(k, 0) for e in engines.values() for k in e if k.endswith("Active"))
            # Compacted: one TSM file per shard, or a full compaction done.
            full = engines and all(files.get(k, {}).get("numFiles", 0) <= 1 or
                                   e.get("tsmFullCompactions", 0) >= 1
                                   for k, e in engines.items())
            state = (du(os.path.join(d, "wal")), du(os.path.join(d, "data")),
                     sorted((k, f.get("numFiles")) for k, f in files.items()))
            stable["n"] = stable["n"] + 1 if state == stable["last"] else 0
            stable["last"] = state
            return not busy and full and not any(cached) and stable["n"] >= 4
        srv.wait_for(lambda: done() or time.sleep(0.5), "the cache snapshot and full "
                     "compaction", 900)

    def count(self, srv, end_s):
        r = get_json(srv, "/query", {"db": INFLUX_DB, "q": "SELECT count(*) FROM /.*/ WHERE "
                                     "time >= %ds AND time <= %ds" % (end_s - 7200, end_s)})
        total = 0
        for s in r["results"][0].get("series", []):
            for row in s["values"]:
                total += sum(v for v in row[1:] if isinstance(v, (int, float)))
        return total


def influx_queries(end):
    """InfluxQL a Grafana dashboard would send for the same panels as bench/query.py's."""
    h, w = end - 3600, WARD
    rng = "time >= %ds AND time <= %ds" % (h, end)
    return [
        'SELECT mean("pressure_bar") FROM "water" WHERE %s GROUP BY time(60s), "ward" fill(none)'
        % rng,
        'SELECT sum("r") FROM (SELECT non_negative_derivative(last("vehicles_total"), 1s) AS "r" '
        'FROM "traffic" WHERE time >= %ds AND time <= %ds GROUP BY time(60s), "device", "ward", '
        '"domain") WHERE %s GROUP BY time(60s), "ward", "domain" fill(none)' % (h - 300, end, rng),
        'SELECT max("fps") FROM "camera" WHERE "ward" = \'%s\' AND time > %ds AND time <= %ds '
        'GROUP BY "device"' % (w, end - 600, end),
        'SELECT mean("pressure_bar") FROM "water" WHERE time >= %ds AND time <= %ds GROUP BY '
        'time(1h), "ward" fill(none)' % (end - 7 * 86400, end),
        'SHOW SERIES FROM "water"',
        'SHOW TAG VALUES WITH KEY = "ward"',
    ]


def influx_size(body, k):
    res = json.loads(body)["results"][0]
    if "error" in res:
        raise ValueError(res["error"])
    series = res.get("series", [])
    if k == 4:
        return sum(len(s["values"]) for s in series)
    if k == 5:
        return len({row[1] for s in series for row in s["values"]})
    return len(series)


ALL = {s.name: s for s in (Iocd(), VictoriaMetrics(), Prometheus(), InfluxDB())}


# ---- Alertmanager's webhook ------------------------------------------------------------------

class Webhook:
    """Alertmanager's webhook receiver: the first arrival of each (alertname, device)."""

    def __init__(self):
        self.arrivals, self.lock = {}, threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                t = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.end_headers()
                try:
                    alerts = json.loads(body).get("alerts", [])
                except ValueError:
                    return
                with hook.lock:
                    for a in alerts:
                        lb = a.get("labels", {})
                        hook.arrivals.setdefault((lb.get("alertname"), lb.get("device")), t)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, keys, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(k in self.arrivals for k in keys):
                    return True
            time.sleep(0.02)
        return False

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- one run of one system ---------------------------------------------------------------------

def pct(v, p):
    """Nearest rank (the p99 of 20 runs is the slowest)."""
    v = sorted(v)
    return v[max(0, math.ceil(p * len(v)) - 1)]


def time_queries(sys_, srv, end, ref_sizes):
    """Each dashboard request checked once, then timed by bench/qclient: QUERY_ROUNDS
    keep-alive connections of WARMUPS + QUERY_REPS runs (query.qclient_times): [(p50 ms,
    p99 ms)], and the answers' sizes."""
    host, port = srv.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    if sys_.promql:
        reqs = [(path, params) for _, path, params in dashboard.queries(end)]
    else:
        reqs = [("/query", {"db": INFLUX_DB, "q": q, "epoch": "ms"}) for q in influx_queries(end)]
    names = [n for n, _, _ in dashboard.queries(end)]
    sizes, out = [], []
    for k, (path, params) in enumerate(reqs):
        url = path + "?" + urllib.parse.urlencode(params)
        conn.request("GET", url)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            srv.fail("%s answered %d: %s" % (names[k], r.status,
                                             body[:400].decode("utf-8", "replace")))
        try:
            n = dashboard.answer_size(body) if sys_.promql else influx_size(body, k)
        except (ValueError, KeyError, TypeError) as e:
            srv.fail("%s: unreadable answer (%s): %s" % (names[k], e, body[:300]))
        if n == 0:
            srv.fail("%s answered nothing: %s" % (names[k], body[:300]))
        if ref_sizes and ref_sizes[k] != n:
            srv.fail("%s answered %d series where iocd answered %d"
                     % (names[k], n, ref_sizes[k]))
        sizes.append(n)
        try:
            lat = dashboard.qclient_times(srv.addr, url, QUERY_ROUNDS, QUERY_REPS, WARMUPS)
        except dashboard.BenchError as e:
            srv.fail("%s: %s" % (names[k], e))
        out.append((pct(lat, 0.5), pct(lat, 0.99)))
    conn.close()
    return out, sizes


def run_one(sys_, series, points, run, ref):
    """One system, one size, one run: a dict of figures."""
    tag = "%s-%d-%d" % (sys_.name, series, run)
    d = os.path.join(TMP, "data-" + tag)
    res = {"samples": 0}
    ctx = {}
    srv = sys_.start(d, tag, False, ctx)
    res["cmd_load"] = srv.shown
    res["config_load"] = getattr(srv, "config", None)
    try:
        sys_.prepare(srv)
        sampler = RssSampler(srv.pid)
        end_ms = (int(time.time()) // 60 - 1) * 60000
        res["start_ms"], res["end_ms"] = end_ms - (points - 1) * 10000, end_ms
        c0 = cpu_seconds(srv.pid)
        lg = loadgen(srv, series, points, end_ms, sys_.ingest_args())
        c1 = cpu_seconds(srv.pid)
        res["loadgen"] = lg["argv"]
        res["samples"] = want = int(lg["generated_samples"])
        res["ingest"] = float(lg["samples_per_s"])
        res["ingest_s"] = float(lg["elapsed_seconds"])
        res["cpu_load_s"] = max(c1 - c0, 1.0 / os.sysconf("SC_CLK_TCK"))
        res["per_cpu"] = want / res["cpu_load_s"]
        time.sleep(SETTLE)
        res["rss_settled"] = status_kib(srv.pid, "VmRSS") * 1024
        res["anon_settled"] = status_kib(srv.pid, "RssAnon") * 1024
        sampler.finish()
        res["rss_peak"], res["anon_peak"] = sampler.peak_rss * 1024, sampler.peak_anon * 1024
        c2 = cpu_seconds(srv.pid)
        t = time.monotonic()
        sys_.flush(srv, d, res)
        res["flush_s"], res["cpu_flush_s"] = time.monotonic() - t, cpu_seconds(srv.pid) - c2
        sys_.want = want
        got = sys_.count(srv, end_ms // 1000)
        if got != want:
            srv.fail("stored %d samples of the %d loadgen sent (counted with a query)"
                     % (got, want))
        srv.stop()
        res["disk"] = sys_.disk(d, res)
        res["bytes_per_sample"] = res["disk"] / want
        # Restarted ready to alert: the dashboard queries, then the alert latency.
        t = time.monotonic()
        srv = sys_.start(d, tag + "-q", sys_.alerts, ctx)
        res["restart_s"] = time.monotonic() - t
        res["cmd_query"] = srv.shown
        res["config_query"] = getattr(srv, "config", None)
        res["am_cmd"] = ctx.get("am_shown")
        res["queries"], res["sizes"] = time_queries(sys_, srv, end_ms // 1000, ref.get(
            (series, run)))
        if sys_.name == "iocd":
            ref[(series, run)] = res["sizes"]
        if sys_.alerts:
            res["alert"] = sys_.alert(srv, ctx, "%d-%d" % (series, run))
        srv.stop()
    finally:
        if "hook" in ctx:
            ctx["hook"].close()
        for k in ("vmalert", "am", "kafka"):
            if k in ctx:
                ctx[k].stop(timeout=30, graceful=False)
        srv.stop(timeout=30, graceful=False)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(os.path.join(TMP, "am-" + tag + "-q"), ignore_errors=True)
    return res


# ---- the report --------------------------------------------------------------------------------

def med(vals):
    return statistics.median(vals) if vals else float("nan")


def fmt(v, kind):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "rate":
        return "%.2f M" % (v / 1e6) if v >= 1e5 else "%.0f k" % (v / 1e3)
    if kind == "bytes":
        return "%.2f" % v
    if kind == "mib":
        return "%.0f" % (v / 2**20)
    if kind == "ms":
        return "%.0f" % v if v >= 100 else "%.1f" % v if v >= 1 else "%.2f" % v
    return str(v)


def cell(vals, kind):
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt(vals[0], kind)
    return "%s (%s – %s)" % (fmt(med(vals), kind), fmt(min(vals), kind), fmt(max(vals), kind))


QUERY_SHORT = ["avg by ward, 1 h", "sum of rates, 1 h", "max_over_time, instant",
               "avg by ward, 7 d", "series", "label values"]


def rows_for(results, systems, size):
    """[(label, kind, higher_is_better, {system: [values per run]})]."""
    rs = {s: results[(size, s)] for s in systems}
    rows = []

    def add(label, kind, higher, get):
        vals = {}
        for s in systems:
            v = [get(r) for r in rs[s]]
            vals[s] = [x for x in v if x is not None]
        rows.append((label, kind, higher, vals))
    add("ingest, samples/s", "rate", True, lambda r: r["ingest"])
    add("samples per server CPU-second", "rate", True, lambda r: r["per_cpu"])
    add("bytes per sample on disk", "bytes", False, lambda r: r["bytes_per_sample"])
    add("peak RSS, MiB", "mib", False, lambda r: r["rss_peak"])
    add("settled RSS, MiB (%g s after)" % SETTLE, "mib", False, lambda r: r["rss_settled"])
    for k, q in enumerate(QUERY_SHORT):
        add("query %s: p50 ms" % q, "ms", False, lambda r, k=k: r["queries"][k][0])
        add("query %s: p99 ms" % q, "ms", False, lambda r, k=k: r["queries"][k][1])
    for mode, what in (("fast", "fastest settings"), ("default", "defaults")):
        if mode == "default" and not ALERT_DEFAULTS:
            continue
        for p, pn in ((0.5, "p50"), (0.99, "p99")):
            add("alert latency, %s: %s ms" % (what, pn), "ms", False,
                lambda r, p=p, mode=mode: pct(r["alert"][mode], p) if "alert" in r else None)
    return rows


def ratio(a, b):
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    r = a / b
    return "%.2f" % r if r >= 0.01 else "1/%s" % format(round(b / a), ",")


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    df = subprocess.run(["df", "-hT", TMP], capture_output=True, text=True).stdout.splitlines()
    fs = df[-1].split() if len(df) > 1 else ["?"] * 7
    dev = os.path.basename(fs[0])
    rot = "?"
    for cand in (dev, dev.rstrip("0123456789")):
        try:
            with open("/sys/block/%s/queue/rotational" % cand) as f:
                rot = "the kernel says %srotational" % ("" if f.read().strip() == "1" else "non-")
            break
        except OSError:
            pass
    return ("%d cores (%s), %.1f GiB memory, data dirs on a %s %s file system (%s, %s); "
            "Linux %s" % (os.cpu_count(), model, mem / 2**30, fs[2] if len(fs) > 2 else "?",
                          fs[1], dev, rot, os.uname().release))


def report(results, systems, versions, settings, started, elapsed):
    peers = [s for s in systems if s != "iocd"]
    L = []
    L.append("# iocd side by side with its peers: %s" % DATE)
    L.append("")
    L.append("`make compare` (bench/compare.py), COMPARE_SIZES=\"%s\"; %s." % (
        " ".join("%d:%d:%d" % s for s in SIZES),
        "runs per size as given there (series:points:runs)"))
    L.append("Started %s, took %.0f min. Each figure is the median of the runs, with (min – max)"
             " when there is more than one; ratios are iocd/peer of the medians, each run's "
             "servers measured one after the other in the same run." % (started, elapsed / 60))
    L.append("")
    L.append("- **Machine**: %s. The load generator and this script share the cores with the "
             "server under test." % machine())
    L.append("- **Versions**: " + "; ".join("%s: %s" % (ALL[s].label, versions[s])
                                            for s in systems))
    L.append("")
    for size in SIZES:
        series, points, runs = size
        n = results[(size, systems[0])][0]["samples"]
        L.append("## %s series × %d points at 10 s (%s samples), %d run%s" % (
            format(series, ","), points, format(n, ","), runs, "s" if runs > 1 else ""))
        L.append("")
        head = ["", "iocd"]
        for p in peers:
            head += [ALL[p].label, "iocd/" + ALL[p].short]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for label, kind, higher, vals in rows_for(results, systems, size):
            if not any(vals.values()):
                continue
            r = ["%s %s" % (label, "↑" if higher else "↓"), cell(vals.get("iocd", []), kind)]
            for p in peers:
                r += [cell(vals[p], kind), ratio(med(vals.get("iocd", [])), med(vals[p]))
                      if vals[p] else "-"]
            L.append("| " + " | ".join(r) + " |")
        L.append("")
        L.append("↑ higher is better, ↓ lower is better. " + notes_for(results, systems, size))
        L.append("")
        L.extend(behind(results, systems, size))
        L.append("")
    L.append("## Plots")
    L.append("")
    for p in ("ingest", "bytes", "memory", "query", "alert"):
        L.append("![%s](%s-%s.png)" % (p, DATE, p))
    L.append("")
    L.append("## Every run")
    L.append("")
    L.append("| size | run | system | ingest samples/s | samples/CPU-s | B/sample | peak RSS MiB "
             "| settled RSS MiB | peak RssAnon MiB | replay s | flush s (CPU s) | restart s |")
    L.append("|" + "---|" * 12)
    for size in SIZES:
        for s in systems:
            for i, r in enumerate(results[(size, s)]):
                L.append("| %d | %d | %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.1f | "
                         "%.1f (%.1f) | %.1f |" % (
                             size[0], i + 1, ALL[s].label, r["ingest"], r["per_cpu"],
                             r["bytes_per_sample"], r["rss_peak"] / 2**20,
                             r["rss_settled"] / 2**20, r["anon_peak"] / 2**20, r["ingest_s"],
                             r["flush_s"], r["cpu_flush_s"], r["restart_s"]))
    L.append("")
    L.extend(method_text(settings, systems))
    return "\n".join(L) + "\n"


def notes_for(results, systems, size):
    out = []
    if "prometheus" in systems:
        rs = results[(size, "prometheus")]
        blk = [r["prom_block_bytes"] / r["samples"] for r in rs]
        wal = [r["prom_wal_bytes"] / r["samples"] for r in rs]
        out.append("Prometheus' bytes are its data dir after the stop: the WAL (%s B/sample) and "
                   "the memory-mapped head chunks, since an hour of data is never compacted "
                   "into a block (that needs 3 h); the same data as a block (an admin-API "
                   "snapshot taken before the stop) takes %s B/sample%s (medians)." % (
                       fmt(med(wal), "bytes"), fmt(med(blk), "bytes"),
                       " (iocd/Prom %s)" % ratio(med([r["bytes_per_sample"] for r in
                                                      results[(size, "iocd")]]), med(blk))
                       if "iocd" in systems else ""))
    if "victoria-metrics" in systems:
        rs = results[(size, "victoria-metrics")]
        out.append("VictoriaMetrics' bytes leave out the caches it writes to cache/ when it "
                   "stops (%s B/sample more, median)." % fmt(
                       med([r["vm_cache_bytes"] / r["samples"] for r in rs]), "bytes"))
    if "influxdb" in systems:
        out.append("InfluxDB answers InfluxQL (the queries are in \"Settings\"); its series and "
                   "label answers count devices and measurements' tag values.")
    if "iocd" in systems:
        out.append("iocd's alert latency is one figure for both rows: it has no evaluation "
                   "interval or grouping delay to set.")
    out.append("InfluxDB has no alert latency here: its alerting (Kapacitor) is not in Debian.")
    return " ".join(out)


def behind(results, systems, size):
    """Where iocd is behind a peer (on the medians), and issue 9's bar."""
    if "iocd" not in systems:
        return []
    out = []
    for label, kind, higher, vals in rows_for(results, systems, size):
        a = med(vals.get("iocd", []))
        for p in systems:
            if p == "iocd" or not vals[p] or math.isnan(a):
                continue
            b = med(vals[p])
            worse = a < b if higher else a > b
            f = (b / a if higher else a / b) if a and b else 0
            if worse and f >= 1.01:
                out.append("- %s: iocd %s vs %s %s (%.2f× %s)" % (
                    label, fmt(a, kind), ALL[p].label, fmt(b, kind), f,
                    "slower" if kind in ("rate", "ms") else "more"))
    text = ["**Where iocd is behind** (medians):", ""] + (out or ["- nowhere"])
    if "victoria-metrics" in systems:
        rows = {r[0]: r for r in rows_for(results, systems, size)}

        def rt(label):
            v = rows[label][3]
            return med(v["iocd"]) / med(v["victoria-metrics"])
        bar = [("ingest ≥ 1.5× VictoriaMetrics'", rt("ingest, samples/s"), lambda x: x >= 1.5),
               ("bytes per sample ≤ 0.9×", rt("bytes per sample on disk"), lambda x: x <= 0.9),
               ("peak RSS ≤ 0.5×", rt("peak RSS, MiB"), lambda x: x <= 0.5)]
        for q in QUERY_SHORT:
            bar.append(("query %s p50 ≤ 0.5×" % q, rt("query %s: p50 ms" % q),
                        lambda x: x <= 0.5))
        text += ["", "**Issue 9's bar** against VictoriaMetrics: " + "; ".join(
            "%s: %.2f %s" % (n, v, "met" if ok(v) else "**not met**") for n, v, ok in bar)
            + "."]
    return text


def method_text(settings, systems):
    L = ["## Method and exact settings", ""]
    L.append("- Workload: build/bench/loadgen, the IOC city (cameras, street lights, traffic "
             "counters, water stations in 32 wards), 360 points at 10 s per series ending on a "
             "whole minute at least a minute before the run, %d connections, %d-line batches. "
             "Line protocol over HTTP for iocd, VictoriaMetrics (`/write?precision=ms`) and "
             "InfluxDB (`/write?db=%s&precision=ms`); Prometheus gets the same samples by "
             "remote write (`--mode remote-write --ordered`: each device's series on one "
             "connection in time order, as an agent's remote-write shards send them; "
             "Prometheus refuses a whole request with one out-of-order sample)." % (
                 CONNS, BATCH, INFLUX_DB))
    L.append("- Ingest samples/s: loadgen's wall clock for the replay (every request answered "
             "2xx). Samples per server CPU-second: utime+stime of the server from /proc over "
             "the replay only (later compaction is in \"flush\" above).")
    L.append("- Memory: VmRSS every 100 ms; peak from the start to %g s after the replay, "
             "settled at %g s after it (before any flush or query)." % (SETTLE, SETTLE))
    L.append("- Disk: allocated bytes of the data dir (du) after each system's flush and a "
             "graceful stop, divided by the samples sent. iocd: nothing to force, stop. "
             "VictoriaMetrics: `/internal/force_flush`, `/internal/force_merge?partition_prefix="
             "YYYY_MM` and waiting for `vm_active_merges` to be 0. Prometheus: stop (WAL and "
             "head chunks). InfluxDB: waiting for the cache snapshot and a full compaction "
             "(cold durations set to 10 s), then stop.")
    L.append("- Before the stop, every system must count all samples sent: the sum of "
             "`sum(count_over_time(NAME[2h]))` over every metric name, or InfluxQL "
             "`SELECT count(*) FROM /.*/` over the 2 h.")
    L.append("- Queries: each server restarted on its data, ready to alert; each request "
             "answered once and checked (200, not empty, the same number of series as iocd), "
             "then timed by bench/qclient (a lean C client): %d keep-alive connections, each "
             "%d warm-ups and %d timed runs; p50 and p99 over all timed runs (nearest rank). "
             "Client latency, request sent to answer read." % (QUERY_ROUNDS, WARMUPS, QUERY_REPS))
    L.append("- Alert latency: a sample crossing the threshold (water_pressure_bar = 0.5 for a "
             "new device) written to the server, to the notification's arrival. iocd: a "
             "streaming rule; the incident event read from Kafka (a librdkafka mock cluster, "
             "build/tools/kafkatool consuming), %d crossings 30–70 ms apart after a warm-up. "
             "Prometheus: remote write of the sample; two rule groups with "
             "`expr: water_pressure_bar < 1`, one evaluated every 1 s whose alerts Alertmanager "
             "routes with `group_wait: 0s`, one at the defaults (`evaluation_interval` 1 m, "
             "`group_wait` 30 s); `group_by: ['...']` so each device notifies on its own; a "
             "webhook served by compare.py timestamps arrival. %d crossings 1.5–2.5 s apart "
             "(random, so they fall at every phase of the evaluation cycle). "
             "VictoriaMetrics: the sample written as a line; vmalert evaluates the same two "
             "groups against it (the default group at vmalert's default `-evaluationInterval` "
             "1 m) and notifies the same Alertmanager; VictoriaMetrics restarted for this with "
             "`-search.latencyOffset 1s` (by default it hides the last 30 s of data from "
             "queries, which would add ~30 s to both rows)." % (IOCD_PROBES, PROBES))
    L.append("")
    for s in systems:
        st = settings.get(s, {})
        L.append("**%s**" % ALL[s].label)
        L.append("")
        L.append("```")
        L.append("ingest:  " + st.get("cmd_load", ""))
        L.append("loadgen: " + st.get("loadgen", ""))
        L.append("queries and alerts: " + st.get("cmd_query", ""))
        if st.get("am_cmd"):
            L.append("alertmanager: " + st["am_cmd"])
        L.append("```")
        for k in ("config_load", "config_query"):
            if st.get(k):
                L.append("")
                L.append("%s:" % ("config while ingesting" if k == "config_load" else
                                  "config for queries and alerts"))
                L.append("")
                L.append("```")
                L.append(st[k].rstrip())
                L.append("```")
        if s == "iocd":
            L += ["", "rule file:", "", "```lua", IOCD_RULES.rstrip(), "```"]
        if s in ("prometheus", "victoria-metrics"):
            L += ["", "rule file:", "", "```yaml", PROM_RULES.rstrip(), "```", "",
                  "alertmanager.yml:", "", "```yaml",
                  (AM_CONFIG % 0).replace("127.0.0.1:0", "127.0.0.1:<hook port>").rstrip(),
                  "```"]
        if s == "influxdb":
            L += ["", "InfluxQL for the six dashboard requests (S/E: the hour's start and "
                  "end):", "", "```sql"]
            for q in influx_queries(10**9):
                L.append(q.replace("%ds" % (10**9 - 3600 - 300), "S-5m").replace(
                    "%ds" % (10**9 - 3600), "S").replace("%ds" % (10**9 - 600), "E-10m")
                    .replace("%ds" % (10**9 - 7 * 86400), "E-7d").replace("%ds" % 10**9, "E"))
            L.append("```")
        L.append("")
    return L


def plots(results, systems):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"iocd": "#1f77b4", "victoria-metrics": "#ff7f0e", "prometheus": "#d62728",
              "influxdb": "#2ca02c"}
    labels = ["%dk series" % (s[0] // 1000) if s[0] >= 1000 else "%d series" % s[0]
              for s in SIZES]
    files = []

    def bars(ax, get, scale=1.0, log=False):
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            meds, lo, hi = [], [], []
            for size in SIZES:
                v = [get(r) / scale for r in results[(size, s)]]
                v = [x for x in v if x is not None]
                m = med(v) if v else 0
                meds.append(m)
                lo.append(m - min(v) if v else 0)
                hi.append(max(v) - m if v else 0)
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(SIZES))]
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=ALL[s].label,
                   color=colors[s])
        ax.set_xticks(range(len(SIZES)))
        ax.set_xticklabels(labels)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    def save(fig, name):
        path = os.path.join(OUT, "%s-%s.png" % (DATE, name))
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bars(axes[0], lambda r: r["ingest"], 1e6)
    axes[0].set_title("ingest, M samples/s (higher is better)")
    bars(axes[1], lambda r: r["per_cpu"], 1e6)
    axes[1].set_title("M samples per server CPU-second")
    axes[0].legend(fontsize=8)
    save(fig, "ingest")

    fig, ax = plt.subplots(figsize=(6, 4))
    bars(ax, lambda r: r["bytes_per_sample"])
    ax.set_title("bytes per sample on disk (lower is better)")
    ax.legend(fontsize=8)
    save(fig, "bytes")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bars(axes[0], lambda r: r["rss_peak"], 2**20)
    axes[0].set_title("peak RSS, MiB (lower is better)")
    bars(axes[1], lambda r: r["rss_settled"], 2**20)
    axes[1].set_title("settled RSS, MiB (%g s after ingest)" % SETTLE)
    axes[0].legend(fontsize=8)
    save(fig, "memory")

    fig, axes = plt.subplots(1, len(SIZES), figsize=(6 * len(SIZES), 4.5), squeeze=False)
    for j, size in enumerate(SIZES):
        ax = axes[0][j]
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            meds, lo, hi = [], [], []
            for k in range(len(QUERY_SHORT)):
                v = [r["queries"][k][0] for r in results[(size, s)]]
                m = med(v)
                meds.append(m)
                lo.append(m - min(v))
                hi.append(max(v) - m)
            xs = [k + (i - (len(systems) - 1) / 2) * width for k in range(len(QUERY_SHORT))]
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=2, label=ALL[s].label,
                   color=colors[s])
        ax.set_xticks(range(len(QUERY_SHORT)))
        ax.set_xticklabels(QUERY_SHORT, rotation=25, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_title("query p50, ms, %s (lower is better)" % labels[j])
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, "query")

    fig, ax = plt.subplots(figsize=(7, 4))
    groups = []
    if "iocd" in systems:
        groups.append(("iocd (streaming rule)", "iocd", "fast", colors["iocd"]))
    if "prometheus" in systems:
        groups.append(("Prometheus 1 s + AM group_wait 0 s", "prometheus", "fast",
                       colors["prometheus"]))
        if ALERT_DEFAULTS:
            groups.append(("Prometheus + AM defaults", "prometheus", "default", "#ff9896"))
    if "victoria-metrics" in systems:
        groups.append(("VM + vmalert 1 s + AM group_wait 0 s", "victoria-metrics", "fast",
                       colors["victoria-metrics"]))
        if ALERT_DEFAULTS:
            groups.append(("VM + vmalert + AM defaults", "victoria-metrics", "default",
                           "#aec7e8"))
    width = 0.8 / max(1, len(groups))
    for i, (name, s, mode, col) in enumerate(groups):
        meds, lo, hi = [], [], []
        for size in SIZES:
            v = [pct(r["alert"][mode], 0.5) for r in results[(size, s)]]
            m = med(v)
            meds.append(m)
            lo.append(m - min(v))
            hi.append(max(v) - m)
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(SIZES))]
        ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=name, color=col)
        for x, m in zip(xs, meds):
            ax.text(x, m, fmt(m, "ms"), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(SIZES)))
    ax.set_xticklabels(labels)
    ax.set_yscale("log")
    ax.set_title("alert latency p50, ms: sample to notification (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "alert")
    return files


# ---- main ----------------------------------------------------------------------------------------

def main():
    global TMP
    for s in SYSTEMS:
        if s not in ALL:
            sys.exit("compare: unknown system %r (known: %s)" % (s, ", ".join(ALL)))
    need = {"iocd": [IOCD, KAFKATOOL],
            "victoria-metrics": ["victoria-metrics", "vmalert", "prometheus-alertmanager"],
            "prometheus": ["prometheus", "prometheus-alertmanager"], "influxdb": ["influxd"]}
    missing = [p for s in SYSTEMS for p in need[s] if not (
        os.access(p, os.X_OK) if os.sep in p else shutil.which(p))]
    if not os.access(LOADGEN, os.X_OK):
        missing.append(LOADGEN)
    if missing:
        sys.exit("compare: missing %s: run make compare (it builds iocd, loadgen and kafkatool "
                 "and installs the peers)" % ", ".join(os.path.relpath(m, ROOT) if os.sep in m
                                                        else m for m in missing))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("compare: python3-matplotlib is missing (make compare installs it)")
    TMP = tempfile.mkdtemp(prefix="iocd-compare-")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    started, t_start = time.strftime("%Y-%m-%d %H:%M %Z"), time.monotonic()
    results, settings, ref = {}, {}, {}
    versions = {s: ALL[s].version() for s in SYSTEMS}
    rc = 0
    try:
        for size in SIZES:
            series, points, runs = size
            for run in range(runs):
                for s in SYSTEMS:
                    say("%s: %d series x %d points, run %d of %d" % (ALL[s].label, series,
                                                                     points, run + 1, runs))
                    r = run_one(ALL[s], series, points, run, ref)
                    results.setdefault((size, s), []).append(r)
                    settings.setdefault(s, r)
                    say("  ingest %.0f samples/s, %.0f per CPU-s, %.2f B/sample, peak RSS %.0f "
                        "MiB, settled %.0f MiB, query p50s %s ms%s" % (
                            r["ingest"], r["per_cpu"], r["bytes_per_sample"],
                            r["rss_peak"] / 2**20, r["rss_settled"] / 2**20,
                            "/".join(fmt(q[0], "ms") for q in r["queries"]),
                            "; alert p50 %s" % ", ".join(
                                "%s %s ms" % (m, fmt(pct(v, 0.5), "ms"))
                                for m, v in r["alert"].items()) if "alert" in r else ""))
        os.makedirs(OUT, exist_ok=True)
        text = report(results, SYSTEMS, versions, settings, started,
                      time.monotonic() - t_start)
        path = os.path.join(OUT, DATE + ".md")
        with open(path, "w") as f:
            f.write(text)
        files = plots(results, SYSTEMS)
        print(text)
        say("wrote %s and %s" % (os.path.relpath(path, ROOT), ", ".join(
            os.path.relpath(p, ROOT) for p in files)))
    except CompareError as e:
        print("compare: FAILED: %s" % e, file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("compare: interrupted", file=sys.stderr)
        rc = 130
    finally:
        stop_all()
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
