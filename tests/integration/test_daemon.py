"""tests/integration/test_daemon.py - the daemon as an operator meets it: help, flags, the
config file and its errors, the data dir lock, ports, signals, logs, HTTP basics, tokens,
/metrics, and survival of hostile clients."""

import json
import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Daemon, check, eq, metric, parse_logfmt, run, run_iocd, wait_for)  # noqa: E402


# ---- help and version ----------------------------------------------------------------------

def test_help_lists_commands_and_serve_flags():
    rc, out, _ = run_iocd("--help")
    eq(rc, 0, "exit code")
    for word in ("serve", "version", "help"):
        check(word in out, "help lacks %s:\n%s" % (word, out))
    rc, out, _ = run_iocd("serve", "--help")
    eq(rc, 0, "serve --help exit code")
    for flag in ("--config", "--data-dir", "--http", "--influx-tcp", "--influx-udp", "--rules",
                 "--kafka-brokers", "--log-level", "--log-format", "--sync", "--retention"):
        check(flag in out, "serve --help lacks %s" % flag)
    check("127.0.0.1:9470" in out, "serve --help shows the default HTTP address")
    rc2, out2, _ = run_iocd("help", "serve")
    eq((rc2, out2), (0, out), "help serve == serve --help")
    rc, out, _ = run_iocd("help", "version")
    eq(rc, 0, "help version")


def test_version():
    rc, out, _ = run_iocd("version")
    eq(rc, 0, "exit code")
    check(out.startswith("iocd version "), out)


def test_unknown_command_is_usage_error():
    rc, _, err = run_iocd("frobnicate")
    eq(rc, 2, "exit code")
    check('unknown command "frobnicate"' in err, err)
    rc, _, err = run_iocd()
    eq(rc, 2, "no command")


# ---- flag and config errors ----------------------------------------------------------------

def serve_fails(*args, want_rc=2, config=None):
    tmp = tempfile.mkdtemp(prefix="iocd-it-")
    a = ["serve", "--data-dir", os.path.join(tmp, "data"), "--http", "127.0.0.1:0",
         "--influx-tcp", "127.0.0.1:0", "--influx-udp", "127.0.0.1:0"]
    if config is not None:
        path = os.path.join(tmp, "bad.lua")
        with open(path, "w") as f:
            f.write(config)
        a += ["--config", path]
    rc, out, err = run_iocd(*(a + list(args)))
    eq(rc, want_rc, "exit code (stderr: %s)" % err)
    return err


def test_flag_errors():
    check("unknown flag --bogus" in serve_fails("--bogus", "1"), "unknown flag")
    check("flag --log-level needs a value" in serve_fails("--log-level"), "missing value")
    err = serve_fails("--log-level", "loud")
    check("flag --log-level: invalid value \"loud\"" in err and "debug, info" in err, err)
    check("flag --http: invalid value" in serve_fails("--http", "nonsense"), "bad address")
    check("flag --retention: invalid value" in serve_fails("--retention", "ninety"), "bad dur")
    check("flag --http-body-max: invalid value" in serve_fails("--http-body-max", "lots"), "size")
    check("flag --http-threads: invalid value" in serve_fails("--http-threads", "-1"), "int")
    check("flag --sync: invalid value" in serve_fails("--sync", "sometimes"), "sync")
    check("unexpected argument \"extra\"" in serve_fails("extra"), "positional")
    check("flag --data-dir: must not be empty" in serve_fails("--data-dir="), "empty data dir")


def test_config_file_errors_name_file_key_and_line():
    err = serve_fails(config='return {\n  log_level = "info",\n  colour = "blue",\n}\n')
    check("bad.lua:3:" in err and "unknown key 'colour'" in err, err)
    err = serve_fails(config='return {\n  http_threads = "two",\n}\n')
    check("bad.lua:2:" in err and "key 'http_threads'" in err, err)
    err = serve_fails(config='return {\n  data_dir = { "a" },\n}\n')
    check("key 'data_dir'" in err and "table" in err, err)
    err = serve_fails(config='return {\n  log_level = "info"\n  oops\n}\n')
    check("bad.lua:3:" in err, "syntax error names the line: " + err)
    err = serve_fails(config='return 42\n')
    check("must return a table" in err, err)
    err = serve_fails(config='os.execute("touch /tmp/iocd-pwned")\nreturn {}\n')
    check("bad.lua:1:" in err, "sandboxed config cannot reach os: " + err)
    check(not os.path.exists("/tmp/iocd-pwned"), "sandbox escaped")
    err = serve_fails(config='while true do end\n')
    check("budget" in err or "instruction" in err, "runaway config is stopped: " + err)
    err = serve_fails(config='return { tokens = { { token = "abc" } } }\n')
    check("tokens[1] needs both token and role" in err, err)
    err = serve_fails(config='return { tokens = { { token = "abc", role = "boss" } } }\n')
    check("expected read, write or admin" in err, err)
    err = serve_fails("--config", "/nonexistent/iocd.lua", want_rc=2)
    check("config file /nonexistent/iocd.lua: no such file" in err, err)


def test_config_file_values_apply_and_flags_win():
    config = 'return {\n  log_format = "json",\n  log_level = "warn",\n  retention = "30d",\n}\n'
    with Daemon("--log-level", "info", config=config) as d:
        d.start()
        line = d.find_log(r'"msg":"ready"')
        check(line is not None, "json format from the file:\n" + d.log_text())
        json.loads(line)  # one JSON object per line
        # --log-level info on the command line beats warn in the file: info lines appear.
        check(d.find_log(r'"level":"info"') is not None, "flag wins over file")
        eq(d.stop(), 0, "exit code")


# ---- startup refusals ----------------------------------------------------------------------

def test_lock_file_refuses_second_daemon_and_survives_kill9():
    with Daemon() as d:
        d.start()
        with Daemon(tmp=d.tmp) as d2:
            d2.start(wait=False)
            rc = d2.proc.wait(30)
            d2.reader.join(5)
            eq(rc, 1, "second daemon exit code")
            check("in use by another iocd (pid %d)" % d.proc.pid in d2.log_text(), d2.log_text())
        # The first one still serves.
        eq(d.get("/-/healthy").status, 200, "first daemon healthy")
        d.kill9()
        # The kernel released the lock with the process: a restart works at once.
        d.start()
        eq(d.get("/-/ready").status, 200, "restarted after kill -9")
        eq(d.stop(), 0, "exit code")


def test_port_in_use_is_refused_clearly():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        for flag in ("--http", "--influx-tcp"):
            with Daemon(**{"http" if flag == "--http" else "tcp": "127.0.0.1:%d" % port}) as d:
                d.start(wait=False)
                eq(d.proc.wait(30), 1, "exit code for %s" % flag)
                d.reader.join(5)
                check("address already in use" in d.log_text().lower() or
                      "address in use" in d.log_text().lower(), d.log_text())
                check(str(port) in d.log_text(), "the message names the port")
    finally:
        s.close()


def test_unwritable_data_dir_is_refused():
    tmp = tempfile.mkdtemp(prefix="iocd-it-")
    blocker = os.path.join(tmp, "file")
    with open(blocker, "w") as f:
        f.write("x")
    with Daemon(data_dir=os.path.join(blocker, "data")) as d:
        d.start(wait=False)
        eq(d.proc.wait(30), 1, "exit code")
        d.reader.join(5)
        check("data dir" in d.log_text() and blocker in d.log_text(), d.log_text())


def test_foreign_data_file_is_refused_untouched():
    tmp = tempfile.mkdtemp(prefix="iocd-it-")
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    junk = b"this is not an LMDB file" * 1000
    with open(os.path.join(data, "iocd.mdb"), "wb") as f:
        f.write(junk)
    with Daemon(data_dir=data) as d:
        d.start(wait=False)
        eq(d.proc.wait(30), 1, "exit code")
        d.reader.join(5)
        check("iocd.mdb" in d.log_text(), d.log_text())
    with open(os.path.join(data, "iocd.mdb"), "rb") as f:
        eq(f.read(), junk, "file untouched")


# ---- signals and logs ------------------------------------------------------------------------

def test_sigterm_and_sigint_stop_gracefully():
    for sig in (signal.SIGTERM, signal.SIGINT):
        with Daemon() as d:
            d.start()
            t0 = time.monotonic()
            eq(d.stop(sig), 0, "exit code after signal %d" % sig)
            check(time.monotonic() - t0 < 10, "stopped within 10 s")
            check(d.find_log(r"msg=stopped") is not None, d.log_text())


def test_startup_logs_bound_addresses_in_logfmt():
    with Daemon() as d:
        d.start()
        for line in d.log():
            f = parse_logfmt(line)
            for key in ("time", "level", "module", "msg"):
                check(key in f, "log line lacks %s: %r" % (key, line))
        check(d.find_log(r'msg="http listening" addr=127\.0\.0\.1:\d+') is not None, d.log_text())
        check(d.find_log(r'msg="influx tcp listening" addr=127\.0\.0\.1:\d+'), d.log_text())
        check(d.find_log(r'msg="influx udp listening" addr=127\.0\.0\.1:\d+'), d.log_text())
        check(not d.http_addr.endswith(":0"), "a real port was chosen")
        eq(d.stop(), 0, "exit code")


def test_sighup_reloads_log_level():
    config_path = None
    with Daemon(config='return { log_level = "info" }\n') as d:
        config_path = d.config_path
        d.start()
        with open(config_path, "w") as f:
            f.write('return { log_level = "debug" }\n')
        d.send(signal.SIGHUP)
        d.wait_log(r'msg="config reloaded"')
        # A bad file on reload keeps the daemon running with the old settings.
        with open(config_path, "w") as f:
            f.write('return { log_level = "chatty" }\n')
        d.send(signal.SIGHUP)
        d.wait_log(r'msg="reload failed, keeping the running config"')
        eq(d.get("/-/healthy").status, 200, "still serving")
        eq(d.stop(), 0, "exit code")


def test_disabled_listeners():
    with Daemon(tcp="", udp="") as d:
        d.start()
        eq(d.tcp_addr, None, "tcp disabled")
        eq(d.udp_addr, None, "udp disabled")
        eq(d.stop(), 0, "exit code")


def test_public_address_without_tokens_warns():
    with Daemon(http="0.0.0.0:0") as d:
        d.start(wait=False)
        d.wait_log(r"level=warn .*(token|open)")
        eq(d.stop(), 0, "exit code")


# ---- HTTP --------------------------------------------------------------------------------------

def test_http_basics_and_error_shapes():
    with Daemon() as d:
        d.start()
        r = d.get("/-/healthy")
        eq(r.status, 200, "healthy")
        r = d.get("/-/ready")
        eq(r.status, 200, "ready")
        r = d.get("/no/such/path")
        eq(r.status, 404, "404")
        j = r.json()
        eq((j["status"], j["errorType"]), ("error", "not_found"), "404 body")
        eq(r.body.decode(), json.dumps(j, separators=(",", ":"), ensure_ascii=False),
           "compact JSON")
        r = d.request("DELETE", "/-/healthy")
        eq(r.status, 405, "405")
        eq(r.json()["status"], "error", "405 body")
        r = d.get("/api/v1/status/buildinfo")
        eq(r.status, 200, "buildinfo")
        j = r.json()
        eq(j["status"], "success", "buildinfo status")
        check(j["data"]["version"], "version present")
        eq(d.stop(), 0, "exit code")


def test_metrics_exposition_is_valid():
    with Daemon() as d:
        d.start()
        d.get("/-/healthy")
        d.get("/nope")
        ms = d.metrics()
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_open_fds", "process_start_time_seconds"):
            check(any(k[0] == name for k in ms), "/metrics lacks %s" % name)
        check(any(k[0] == "iocd_build_info" for k in ms), "build info")
        check(metric(ms, "iocd_http_requests_total", handler="/-/healthy", code="200") >= 1,
              "request counter by handler and code")
        check(any(k[0] == "iocd_http_request_duration_seconds_bucket" for k in ms), "histogram")
        start = metric(ms, "process_start_time_seconds")
        check(abs(start - time.time()) < 600, "start time is now-ish: %r" % start)
        eq(d.stop(), 0, "exit code")


TOKENS = '''return {
  tokens = {
    { name = "dash", token = "read-secret-0123456789", role = "read" },
    { name = "gateway", token = "write-secret-0123456789", role = "write" },
    { name = "ops", token = "admin-secret-0123456789", role = "admin" },
  },
}
'''


def bearer(t):
    return {"Authorization": "Bearer " + t}


def test_tokens_401_403():
    with Daemon(config=TOKENS) as d:
        d.start()
        eq(d.get("/-/healthy").status, 200, "health is public")
        r = d.get("/metrics")
        eq(r.status, 401, "no token")
        check(r.header("WWW-Authenticate") is not None, "WWW-Authenticate header")
        eq(r.json()["status"], "error", "401 body")
        eq(d.get("/metrics", headers=bearer("wrong")).status, 401, "bad token")
        eq(d.get("/metrics", headers=bearer("read-secret-0123456789")).status, 200, "read ok")
        eq(d.get("/metrics", headers=bearer("admin-secret-0123456789")).status, 200, "admin ok")
        r = d.get("/metrics", headers=bearer("write-secret-0123456789"))
        eq(r.status, 403, "write token cannot read")
        eq(r.json()["errorType"], "forbidden", "403 body")
        eq(d.stop(), 0, "exit code")


# ---- hostile clients -------------------------------------------------------------------------

def test_survives_garbage_and_abandoned_requests():
    with Daemon() as d:
        d.start()
        host, port = d.http_addr.rsplit(":", 1)
        junk = [bytes(range(256)) * 40, b"\x00" * 5000, b"GET / HTTP/1.1\r\n" + b"X" * 200000,
                b"POST /-/healthy HTTP/1.1\r\nContent-Length: 100000\r\n\r\npartial",
                b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n", b"\r\n\r\n\r\n", b"GE"]
        for blob in junk:
            s = socket.create_connection((host, int(port)), timeout=10)
            try:
                s.sendall(blob)
            except OSError:
                pass  # the server may close on us mid-send: that is fine
            s.close()
        # Slowloris-style: many idle half-open connections do not stop others.
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
        for s in idle:
            s.sendall(b"GET /-/healthy HTTP/1.1\r\n")
        eq(d.get("/-/healthy").status, 200, "still serving with idle connections")
        for s in idle:
            s.close()
        # Garbage on the line-protocol ports too.
        d.tcp_send(bytes(range(256)) * 100)
        d.udp_send(bytes(range(256)))
        eq(d.get("/-/healthy").status, 200, "still healthy")
        eq(d.stop(), 0, "graceful exit after abuse")


def test_tcp_and_udp_bytes_are_received():
    with Daemon() as d:
        d.start()
        d.tcp_send(b"water,ward=w1 level_m=1.5 1700000000000000000\n" * 100)
        d.udp_send(b"water,ward=w1 level_m=1.5 1700000000000000000\n")
        wait_for(lambda: metric(d.metrics(), "iocd_ingest_bytes_total", proto="influx_tcp")
                 >= 4600 and metric(d.metrics(), "iocd_ingest_bytes_total",
                                    proto="influx_udp") >= 46, what="bytes counted")
        eq(d.stop(), 0, "exit code")


# ---- shipped config and docs ----------------------------------------------------------------

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_example_config_is_valid():
    example = os.path.join(ROOT, "iocd.example.lua")
    with Daemon("--config", example, "--kafka-brokers", "", "--rules", "") as d:
        d.start()
        # The example's tokens are in force: /metrics needs one.
        eq(d.get("/metrics").status, 401, "tokens from the example apply")
        eq(d.get("/metrics", headers=bearer("change-me-read-0123456789")).status, 200,
           "read token from the example")
        eq(d.stop(), 0, "exit code")


def test_config_doc_lists_every_key():
    rc, out, _ = run_iocd("help", "config")
    eq(rc, 0, "help config")
    with open(os.path.join(ROOT, "docs", "CONFIG.md")) as f:
        doc = f.read()
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    check(len(rows) >= 15, "config reference has rows: %r" % out[:200])
    for row in rows:
        check(row in doc, "docs/CONFIG.md lacks or differs from: %s" % row)


def test_backup_and_check_while_running():
    with Daemon() as d:
        d.start()
        now = int(time.time()) * 1000
        body = "".join("lighting,ward=w%d,device=l%d power_w=%d %d\n" % (i % 7, i, i, now)
                       for i in range(500))
        eq(d.post("/write?precision=ms", body.encode()).status, 204, "write")
        dest = os.path.join(d.tmp, "backup")
        rc, out, err = run_iocd("backup", "--data-dir", d.data_dir, dest)
        eq(rc, 0, "backup exit code: " + err)
        rc, out, err = run_iocd("backup", "--data-dir", d.data_dir, dest)
        eq(rc, 1, "refuses to overwrite a backup")
        rc, out, err = run_iocd("check", d.data_dir)
        eq(rc, 0, "check of the live store: " + out + err)
        check("0 problems" in out, out)
        eq(d.stop(), 0, "exit code")
        rc, out, err = run_iocd("check", dest)
        eq(rc, 0, "check of the backup: " + out + err)
        with Daemon(data_dir=dest) as d2:
            d2.start()
            r = d2.get("/api/v1/export?match[]=lighting_power_w")
            eq(r.status, 200, "export from the backup")
            eq(len([l for l in r.text.split("\n") if l]), 500, "all series in the backup")
            eq(d2.stop(), 0, "exit code")
        rc, out, err = run_iocd("check", os.path.join(d.tmp, "nowhere"))
        eq(rc, 1, "check of a missing store")
        check("no iocd data file" in err, err)


def test_kafka_mock_cluster_speaks_the_real_protocol():
    import shutil
    import subprocess
    with Daemon("--kafka-brokers", "mock") as d:
        d.start()
        line = d.find_log(r'msg="mock kafka cluster started" bootstrap=')
        check(line is not None, d.log_text())
        bootstrap = parse_logfmt(line)["bootstrap"]
        check(bootstrap.startswith("127.0.0.1:"), bootstrap)
        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        check(kcat is not None, "kcat is installed by make deps")
        out = subprocess.run([kcat, "-L", "-b", bootstrap, "-m", "10"], capture_output=True,
                             timeout=30)
        eq(out.returncode, 0, "kcat -L against the mock: " + out.stderr.decode())
        check(b"3 brokers" in out.stdout, out.stdout.decode())
        eq(d.stop(), 0, "exit code")


if __name__ == "__main__":
    run(globals())
