"""tests/integration/harness.py - starts the real iocd on free loopback ports with a temporary
data directory, talks to it with real clients (HTTP, TCP, UDP), and stops it (SIGTERM or
SIGKILL). Tests are plain functions named test_*; run(globals()) runs them one by one, each
with a timeout, and prints "N passed, N failed" last.

Waiting is always on a condition (a log line, an HTTP answer), never a fixed sleep."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

IOCD = os.environ.get("IOCD_BIN", os.path.join(os.path.dirname(__file__), "../../build/asan/iocd"))
DEFAULT_TIMEOUT = 30.0


class Failure(AssertionError):
    pass


def check(cond, msg="check failed"):
    if not cond:
        raise Failure(msg)


def eq(a, b, what="value"):
    if a != b:
        raise Failure("%s: got %r, want %r" % (what, a, b))


def wait_for(pred, timeout=DEFAULT_TIMEOUT, what="condition", interval=0.01):
    """Polls pred() until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def parse_logfmt(line):
    """Parses one logfmt line into a dict (values unquoted and unescaped)."""
    out = {}
    for m in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', line):
        key, raw, quoted = m.group(1), m.group(2), m.group(3)
        if quoted is not None:
            val = json.loads('"' + quoted + '"')
        else:
            val = raw
        out[key] = val
    return out


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


class Daemon:
    """One iocd process. Ports default to 0 (any free one); the bound addresses are read from
    the startup log."""

    def __init__(self, *args, config=None, tmp=None, data_dir=None, http="127.0.0.1:0",
                 tcp="127.0.0.1:0", udp="127.0.0.1:0", env=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="iocd-it-")
        self.own_tmp = tmp is None
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.args = list(args)
        self.http_flag, self.tcp_flag, self.udp_flag = http, tcp, udp
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.tmp, "iocd.lua")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.lines = []
        self.lock = threading.Lock()
        self.http_addr = self.tcp_addr = self.udp_addr = None

    # ---- process ------------------------------------------------------------------------
    def argv(self):
        a = [IOCD, "serve", "--data-dir", self.data_dir]
        if self.http_flag is not None:
            a += ["--http", self.http_flag]
        if self.tcp_flag is not None:
            a += ["--influx-tcp", self.tcp_flag]
        if self.udp_flag is not None:
            a += ["--influx-udp", self.udp_flag]
        if self.config_path:
            a += ["--config", self.config_path]
        return a + self.args

    def start(self, wait=True):
        self.lines = []
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if wait:
            self.wait_ready()
        return self

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if os.environ.get("IOCD_TEST_VERBOSE"):
                sys.stderr.write("    | " + line + "\n")
            with self.lock:
                self.lines.append(line)

    def log(self):
        with self.lock:
            return list(self.lines)

    def log_text(self):
        return "\n".join(self.log())

    def find_log(self, pattern):
        rx = re.compile(pattern)
        for line in self.log():
            if rx.search(line):
                return line
        return None

    def wait_log(self, pattern, timeout=DEFAULT_TIMEOUT):
        def found():
            if self.proc.poll() is not None:
                self.reader.join(2)
                line = self.find_log(pattern)
                if line:
                    return line
                raise Failure("iocd exited (%s) before logging %r; log:\n%s"
                              % (self.proc.returncode, pattern, self.log_text()[-3000:]))
            return self.find_log(pattern)
        return wait_for(found, timeout, "log line %r" % pattern)

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        line = self.wait_log(r"msg=ready\b|\"msg\":\"ready\"", timeout)
        fields = parse_logfmt(line) if not line.startswith("{") else json.loads(line)
        self.http_addr = fields.get("http") or None
        self.tcp_addr = fields.get("influx_tcp") or None
        self.udp_addr = fields.get("influx_udp") or None
        if self.http_addr:
            wait_for(lambda: self.get("/-/ready").status == 200, timeout, "/-/ready")
        return self

    def send(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends sig and waits for exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("iocd did not stop within %ss after signal %d" % (timeout, sig))
        self.reader.join(5)
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- clients --------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=DEFAULT_TIMEOUT):
        host, port = split_addr(self.http_addr)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, body=b"", headers=None):
        return self.request("POST", path, body=body, headers=headers)

    def metrics(self, headers=None):
        r = self.get("/metrics", headers=headers)
        eq(r.status, 200, "/metrics status")
        return parse_metrics(r.text)

    def tcp_send(self, data):
        host, port = split_addr(self.tcp_addr)
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(data)

    def udp_send(self, data):
        host, port = split_addr(self.udp_addr)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, (host, port))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def run_iocd(*args, timeout=30, env=None):
    """Runs iocd to completion; returns (exit code, stdout, stderr) as text."""
    p = subprocess.run([IOCD] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})?'
    r' (NaN|[+-]Inf|[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)( -?[0-9]+)?$')


def parse_metrics(text):
    """Parses the text exposition format 0.0.4 strictly. Returns {(name, labels): value} where
    labels is a sorted tuple of (k, v). Raises Failure on any malformed line, on a sample
    without a preceding TYPE for its family, or on a family described twice."""
    out = {}
    typed = {}
    helped = set()
    for n, line in enumerate(text.split("\n"), 1):
        if line == "":
            continue
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            check(name not in helped, "line %d: second HELP for %s" % (n, name))
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            check(len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary",
                                                     "untyped"), "line %d: bad TYPE %r" % (n, line))
            check(parts[2] not in typed, "line %d: second TYPE for %s" % (n, parts[2]))
            typed[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        check(m is not None, "line %d: malformed sample %r" % (n, line))
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        check(family in typed, "line %d: %s has no TYPE" % (n, name))
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(3) or "")))
        v = m.group(4)
        out[(name, labels)] = float(v.replace("Inf", "inf"))
    return out


def metric(ms, name, **labels):
    """The value of one sample from parse_metrics' result (0 when absent)."""
    want = tuple(sorted(labels.items()))
    return ms.get((name, want), 0.0)


def run(ns):
    tests = [(k, v) for k, v in ns.items() if k.startswith("test_") and callable(v)]
    only = sys.argv[1:]
    passed = failed = 0
    for name, fn in tests:
        if only and not any(o in name for o in only):
            continue
        t0 = time.monotonic()
        ok = True
        timer = threading.Timer(180, lambda: os._exit(3))  # a hung test must not hang CI
        timer.start()
        try:
            fn()
        except Exception:
            ok = False
            msg = traceback.format_exc()
        finally:
            timer.cancel()
        dt = (time.monotonic() - t0) * 1000
        print("%s %s (%.0f ms)" % ("ok  " if ok else "FAIL", name, dt), flush=True)
        if ok:
            passed += 1
        else:
            failed += 1
            print("    " + msg.replace("\n", "\n    "), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(0 if failed == 0 else 1)
