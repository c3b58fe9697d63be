"""tests/integration/test_rules.py - alert rules in the real daemon: the example rules fire from
written samples and show in /api/v1/alerts and /api/v1/rules; reloads (POST /-/reload and
SIGHUP) swap a checked set and refuse a broken one with file:line; `iocd rules check` catches
mistakes and forbidden calls; a rule that runs away or errs is disabled and reported while the
daemon and the other rules go on."""

import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import IOCD, Daemon, check, eq, metric, run, wait_for  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples", "rules")
NOW_MS = int(time.time() * 1000) // 1000 * 1000


def write(d, lines):
    r = d.post("/write?precision=ms", "\n".join(lines).encode())
    eq(r.status, 204, "write (%s)" % r.text)


def alerts(d):
    r = d.get("/api/v1/alerts")
    eq(r.status, 200, "alerts status")
    return r.json()["data"]["alerts"]


def firing(d, name):
    return [a for a in alerts(d) if a["labels"]["alertname"] == name and a["state"] == "firing"]


def rules_check(*paths):
    p = subprocess.run([IOCD, "rules", "check"] + list(paths), capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_example_rules_fire_and_resolve():
    with Daemon("--rules", EXAMPLES) as d:
        d.start()
        d.wait_log(r"rules loaded")
        start = NOW_MS - 120000
        # A camera offline for 60 s of sample time (hold 30 s), another one healthy.
        write(d, ['camera,ward=phan_dinh_phung,device=cam-001 online=0i %d' % (start + i * 10000)
                  for i in range(7)] +
              ['camera,ward=phan_dinh_phung,device=cam-002 online=1i %d' % (start + i * 10000)
               for i in range(7)])
        got = wait_for(lambda: firing(d, "camera_offline"), what="camera_offline firing")
        eq(len(got), 1, "one alert")
        a = got[0]
        eq(a["labels"]["device"], "cam-001", "device")
        eq(a["labels"]["ward"], "phan_dinh_phung", "ward")
        eq(a["labels"]["severity"], "warning", "severity")
        eq(a["labels"]["domain"], "cameras", "domain")
        eq(a["annotations"]["summary"], "Camera cam-001 offline in phan_dinh_phung", "summary")
        # Back online: it resolves.
        write(d, ['camera,ward=phan_dinh_phung,device=cam-001 online=1i %d' % (start + 80000)])
        wait_for(lambda: not firing(d, "camera_offline"), what="camera_offline resolved")
        groups = d.get("/api/v1/rules").json()["data"]["groups"]
        names = {r["name"]: r for g in groups for r in g["rules"]}
        for want in ("camera_offline", "street_light_off_at_night", "junction_jam",
                     "water_pressure_low", "drain_overflow_risk", "ward:water_pressure_bar:avg"):
            check(want in names, "rule %s listed" % want)
        eq(names["camera_offline"]["health"], "ok", "health")
        eq(names["camera_offline"]["type"], "alerting", "type")
        eq(names["ward:water_pressure_bar:avg"]["type"], "recording", "type")
        eq(names["camera_offline"]["duration"], 30, "hold as duration")
        # What the console shows of a streaming rule: its conditions and its evaluations.
        eq(names["camera_offline"]["when"], "value < 1", "the when condition's text")
        eq(names["water_pressure_low"]["clear"], "avg > 1.8", "the clear condition's text")
        check(names["camera_offline"]["evaluations"] >= 15,
              "every camera sample evaluated: %r" % names["camera_offline"]["evaluations"])
        wait_for(lambda: [r for g in d.get("/api/v1/rules").json()["data"]["groups"]
                          for r in g["rules"] if r["name"] == "camera_offline" and
                          r["lastEvaluation"][:4] == time.strftime("%Y", time.gmtime())],
                 what="a streaming rule's last evaluation")


def test_alert_state_survives_kill_9():
    with Daemon("--rules", EXAMPLES, "--log-level", "debug") as d:
        d.start()
        d.wait_log(r"rules loaded")
        start = NOW_MS - 120000
        write(d, ['camera,ward=gia_sang,device=cam-077 online=0i %d' % (start + i * 10000)
                  for i in range(7)])
        a = wait_for(lambda: firing(d, "camera_offline"), what="firing")[0]
        d.wait_log(r"alert state saved")  # at the end of the round that fired it
        d.kill9()
        d.start()
        d.wait_log(r"alert state restored")
        # No new sample is written: the alert must come back from the saved state alone.
        got = wait_for(lambda: firing(d, "camera_offline"), what="the restored alert in the view")
        eq(len(got), 1, "still firing after kill -9, before any new sample")
        eq(got[0]["activeAt"], a["activeAt"], "same activeAt")
        eq(got[0]["labels"]["device"], "cam-077", "same alert")


def test_backtest_replays_history_while_the_daemon_runs():
    with Daemon() as d:
        d.start()
        start = NOW_MS - 3600000
        lines = []
        for i in range(360):  # an hour at 10 s; pressure dips between minutes 20 and 30
            t = start + i * 10000
            v = 1.1 if 120 <= i < 180 else 2.4
            lines.append("water,ward=phu_xa,device=ps-1 pressure_bar=%s %d" % (v, t))
        write(d, lines)
        p = subprocess.run([IOCD, "rules", "backtest", "--rules", EXAMPLES,
                            "--from", str(start // 1000), "--to", str(NOW_MS // 1000),
                            "--data-dir", d.data_dir], capture_output=True, text=True, timeout=120)
        eq(p.returncode, 0, "backtest exit (%s)" % p.stderr)
        fired = [l for l in p.stdout.splitlines() if "firing" in l and "water_pressure_low" in l]
        resolved = [l for l in p.stdout.splitlines()
                    if "resolved" in l and "water_pressure_low" in l]
        eq(len(fired), 1, "fired once:\n%s" % p.stdout)
        eq(len(resolved), 1, "resolved once:\n%s" % p.stdout)
        check('ward="phu_xa"' in fired[0], fired[0])
        check("consistent copy" in p.stderr, "read a copy while the daemon holds the dir")
        # Nothing was written to the store by the backtest: no recording rule series.
        r = d.get("/api/v1/label/__name__/values")
        check("ward:water_pressure_bar:avg" not in r.json()["data"], "no records written")


def test_reload_swaps_a_checked_set_and_refuses_a_broken_one():
    with Daemon() as d0:
        rules_dir = os.path.join(d0.tmp, "rules")
        shutil.copytree(EXAMPLES, rules_dir)
        with Daemon("--rules", rules_dir, tmp=d0.tmp) as d:
            d.start()
            d.wait_log(r"rules loaded")
            with open(os.path.join(rules_dir, "water.lua"), "a") as f:
                f.write('\nrule "broken" { select = "x", when = "value >", }\n')
            r = d.post("/-/reload")
            eq(r.status, 422, "bad set refused (%s)" % r.text)
            check("water.lua:" in r.json()["error"], "names the file: %s" % r.json()["error"])
            names = [r["name"] for g in d.get("/api/v1/rules").json()["data"]["groups"]
                     for r in g["rules"]]
            check("camera_offline" in names and "broken" not in names, "old set kept")
            with open(os.path.join(rules_dir, "extra.lua"), "w") as f:
                f.write('rule "pump_flood" { select = "water_flow_m3h", when = "value > 500" }\n')
            os.remove(os.path.join(rules_dir, "water.lua"))
            d.send(signal.SIGHUP)
            d.wait_log(r"rules reloaded")

            def has_new():
                ns = [r["name"] for g in d.get("/api/v1/rules").json()["data"]["groups"]
                      for r in g["rules"]]
                return "pump_flood" in ns and "water_pressure_low" not in ns
            wait_for(has_new, what="new set after SIGHUP")


def test_rules_check_reports_file_line_and_forbidden_calls():
    rc, out = rules_check(EXAMPLES)
    eq(rc, 0, "examples check (%s)" % out)
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "iocd-rules-check-%d" % os.getpid())
    os.makedirs(tmp, exist_ok=True)
    try:
        cases = {
            "typo.lua": ('rule "a" { select = "x", when = "value > 1", hodl = "1m" }',
                         "typo.lua:1: rule \"a\": unknown field 'hodl' (did you mean 'hold'?)"),
            "dur.lua": ('\nrule "a" { select = "x", when = "value > 1", hold = "5 min" }',
                        "dur.lua:2:"),
            "sel.lua": ('rule "a" { select = "x{", when = "value > 1" }', "select: 1:"),
            "promql.lua": ('rule "a" { expr = "rate(x)" }', "expected type range vector"),
            "tmpl.lua": ('rule "a" { select = "x", when = "value > 1", summary = "{{ward" }',
                         "unclosed {{"),
            "none.lua": ("local x = 1", "defines no rule"),
            "os.lua": ('os.execute("touch /tmp/pwned")', "os"),
            "io.lua": ('io.open("/etc/passwd")', "io"),
            "load.lua": ('load("return 1")()', "load"),
            "debug.lua": ("debug.getinfo(1)", "debug"),
            "strmeta.lua": ('getmetatable("").__index.upper = nil', "getmetatable"),
            "loop.lua": ("while true do end", "instruction budget exceeded"),
            "bomb.lua": ('local s = string.rep("x", 1 << 30)', "memory"),
            "deep.lua": ("local function f(n) return f(n + 1) + 1 end f(1)",
                         ("stack overflow", "memory limit exceeded")),
        }
        for name, (src, want) in cases.items():
            p = os.path.join(tmp, name)
            with open(p, "w") as f:
                f.write(src + "\n")
            rc, out = rules_check(p)
            eq(rc, 1, "%s exit code (%s)" % (name, out))
            wants = want if isinstance(want, tuple) else (want,)
            check(any(w in out for w in wants), "%s: want %r in %r" % (name, wants, out))
        check(not os.path.exists("/tmp/pwned"), "os.execute did not run")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_failing_rule_is_disabled_and_reported_others_go_on():
    with Daemon() as d0:
        rules_dir = os.path.join(d0.tmp, "rules")
        os.makedirs(rules_dir)
        with open(os.path.join(rules_dir, "bad.lua"), "w") as f:
            f.write('rule "spins" { select = "probe", when = function(s) while true do end end }\n'
                    'rule "errs" { select = "probe", when = function(s) return s.nope.x end }\n'
                    'rule "eats" { select = "probe",\n'
                    '  when = function(s) local t = {} for i = 1, 1e9 do t[i] = i end end }\n'
                    'rule "fine" { select = "probe", when = "value > 5" }\n')
        with Daemon("--rules", rules_dir, tmp=d0.tmp) as d:
            d.start()
            d.wait_log(r"rules loaded")
            write(d, ["probe value=9 %d" % (NOW_MS - 1000)])
            wait_for(lambda: firing(d, "fine"), what="the healthy rule fires")

            def health():
                return {r["name"]: (r["health"], r["lastError"])
                        for g in d.get("/api/v1/rules").json()["data"]["groups"]
                        for r in g["rules"]}
            h = wait_for(lambda: (lambda x: x if x["spins"][0] == "err" and x["errs"][0] == "err"
                                  and x["eats"][0] == "err" else None)(health()),
                         what="the bad rules reported")
            check("instruction budget" in h["spins"][1], h["spins"][1])
            check("nope" in h["errs"][1], h["errs"][1])
            check("memory" in h["eats"][1], h["eats"][1])
            eq(h["fine"][0], "ok", "the good rule stays healthy")
            check(metric(d.metrics(), "iocd_rule_failures_total") >= 3, "failures counted")
            eq(d.get("/-/healthy").status, 200, "daemon alive")


if __name__ == "__main__":
    run(globals())
