"""tests/integration/test_demo.py - the demo city as `make run` starts it: iocd with the example
rules, fed by `iocd simulate`; the first incident must be listed within 45 seconds of the
simulator starting, and a ward power cut must keep that ward's lamps and cameras from opening
incidents of their own."""

import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import IOCD, Daemon, check, eq, metric, run, wait_for  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "rules")


def test_first_incident_within_45_seconds():
    with Daemon("--rules", EXAMPLES) as d:
        d.start()
        d.wait_log(r"rules loaded")
        sim = subprocess.Popen([IOCD, "simulate", "--url", "http://" + d.http_addr,
                                "--devices", "500", "--interval", "2s"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            t0 = time.monotonic()
            first = wait_for(lambda: d.get("/api/v1/incidents").json()["data"]["incidents"],
                             timeout=45, what="the first incident")
            took = time.monotonic() - t0
            check(took < 45, "first incident after %.1f s" % took)
            print("first incident after %.1f s" % took)
            eq(first[-1]["state"], "firing", "firing")
            # The second fault is a ward power cut: its incident opens, and its ward's dark
            # lamps and cameras are held back.
            cut = wait_for(lambda: [i for i in d.get("/api/v1/incidents").json()["data"]["incidents"]
                                    if i["rule"] == "ward_power_cut"], timeout=45, what="power cut")
            wait_for(lambda: metric(d.metrics(), "iocd_alerts_inhibited_total") >= 1, timeout=90,
                     what="its ward's lamps and cameras inhibited")
            ward = cut[0]["ward"]
            others = [i for i in d.get("/api/v1/incidents").json()["data"]["incidents"]
                      if i["ward"] == ward and i["rule"] in ("camera_offline", "street_light_off_at_night")]
            eq(others, [], "no lamp or camera incidents in the ward without power")
        finally:
            sim.terminate()
            out = sim.communicate(timeout=20)[0]
        check("fault:" in out, "the simulator announced its faults: %r" % out[:300])


def test_backfill_gives_charts_an_hour_of_history():
    """make run starts the simulator with --backfill 1h on a new data dir: the last hour of
    the healthy city, a point every 30 s, arrives before the live feed starts."""
    with Daemon() as d:
        d.start()
        sim = subprocess.Popen([IOCD, "simulate", "--url", "http://" + d.http_addr,
                                "--devices", "60", "--backfill", "1h", "--interval", "2s"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = wait_for(lambda: sim.stdout.readline(), what="the simulator's output")
            while "backfilled" not in line:
                check(sim.poll() is None or line, "the simulator exited before backfilling")
                line = sim.stdout.readline()
            r = d.get("/api/v1/query?" + urllib.parse.urlencode(
                {"query": "min(count_over_time(water_pressure_bar[1h]))"}))
            n = float(r.json()["data"]["result"][0]["value"][1])
            check(n >= 115, "every water station has ~118 points of the last hour, got %s" % n)
            r = d.get("/api/v1/query?" + urllib.parse.urlencode(
                {"query": "count(max_over_time(power_feed_on[1h]) == 1)"}))
            eq(r.json()["data"]["result"][0]["value"][1], "32", "the 32 wards' power feeds")
        finally:
            sim.terminate()
            sim.communicate(timeout=20)


def test_a_backfill_is_not_mistaken_for_silent_devices():
    """Absence rules measure silence by arrival: the backfilled hour (a point every 30 s, its
    newest a minute old) must not open a "camera silent" incident for every camera."""
    with Daemon("--rules", EXAMPLES) as d:
        d.start()
        d.wait_log(r"rules loaded")
        sim = subprocess.Popen([IOCD, "simulate", "--url", "http://" + d.http_addr,
                                "--devices", "2000", "--backfill", "1h", "--interval", "10s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # The first fault (a rising drain) comes 3 s after the live feed starts.
            wait_for(lambda: [i for i in d.get("/api/v1/incidents").json()["data"]["incidents"]
                              if i["rule"].startswith("drain")], timeout=60,
                     what="the first fault's incident")
            silent = [i["rule"] for i in
                      d.get("/api/v1/incidents?limit=1000").json()["data"]["incidents"]
                      if i["rule"] in ("camera_silent", "traffic_counter_silent")]
            eq(silent, [], "no absence incidents from the backfill")
        finally:
            sim.terminate()
            sim.wait(20)


if __name__ == "__main__":
    run(globals())
