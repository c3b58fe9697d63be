"""bench/incidents.py - make bench-incidents: the time from a sample's arrival at iocd to its
incident event being readable by a Kafka consumer, with background ingest (the IOC load
generator, paced), and a burst of street lights going dark at once. Runs the release iocd
against a librdkafka mock cluster in its own process and reads the topic with a real
librdkafka consumer (build/tools/kafkatool).
  INC_RATE   background samples/s (500000)     INC_PROBES  crossing samples measured (200)
  INC_BURST  lamps going dark at once (10000)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import http.client

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IOCD = os.path.join(ROOT, "build", "iocd")
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
KAFKATOOL = os.path.join(ROOT, "build", "tools", "kafkatool")
RATE = int(os.environ.get("INC_RATE", "500000"))
PROBES = int(os.environ.get("INC_PROBES", "200"))
BURST = int(os.environ.get("INC_BURST", "10000"))

RULES = """
rule "probe_high" { select = 'bench_probe', when = "value > 90", group_by = { "device" },
  domain = "bench", severity = "critical", summary = "probe {{device}}" }
rule "ward_dark" { select = 'bench_lamp', when = "value < 1", group_by = { "ward" },
  domain = "lighting", summary = "lamps dark in {{ward}}" }
rule "lamp_dark" { select = 'bench_lamp2', when = "value < 1", group_by = { "ward", "device" },
  domain = "lighting", summary = "lamp {{device}} dark" }
"""


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")


def main():
    tmp = tempfile.mkdtemp(prefix="iocd-incbench-")
    procs = []
    try:
        mock = subprocess.Popen([KAFKATOOL, "mock"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        procs.append(mock)
        bootstrap = mock.stdout.readline().split()[1]
        with open(os.path.join(tmp, "bench.lua"), "w") as f:
            f.write(RULES)
        iocd = subprocess.Popen([IOCD, "serve", "--data-dir", os.path.join(tmp, "data"),
                                 "--http", "127.0.0.1:19480", "--influx-tcp", "", "--influx-udp", "",
                                 "--rules", os.path.join(tmp, "bench.lua"),
                                 "--kafka-brokers", bootstrap, "--log-level", "warn"],
                                stderr=open(os.path.join(tmp, "iocd.log"), "w"))
        procs.append(iocd)
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", 19480, timeout=30)
                conn.request("GET", "/-/ready")
                if conn.getresponse().read() and True:
                    break
            except OSError:
                time.sleep(0.05)
        # The mock broker holds an empty fetch for the consumer's whole fetch.wait.max.ms even
        # when a message arrives meanwhile (a real broker answers at once): 1 ms keeps that
        # artefact out of the figure.
        consumer = subprocess.Popen([KAFKATOOL, "consume", bootstrap, "iocd.incidents", "100000000",
                                     "100000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, env=dict(os.environ, KAFKATOOL_FETCH_WAIT_MS="1"))
        procs.append(consumer)
        arrivals = {}
        lock = threading.Lock()
        seen = threading.Event()

        def reader():
            for line in consumer.stdout:
                t = time.monotonic()
                try:
                    ev = json.loads(json.loads(line)["value"])
                except (ValueError, KeyError):
                    continue
                labels = ev["incident"]["labels"]
                key = (ev["incident"]["rule"], labels.get("device") or labels.get("ward"))
                with lock:
                    arrivals.setdefault(key, t)
                seen.set()
        threading.Thread(target=reader, daemon=True).start()

        def post(body):
            conn.request("POST", "/write?precision=ms", body.encode())
            r = conn.getresponse()
            r.read()
            return r.status

        # Warm up until the consumer has joined and sees events.
        post("bench,device=warmup probe=95 %d" % int(time.time() * 1000))
        deadline = time.monotonic() + 60
        while ("probe_high", "warmup") not in arrivals and time.monotonic() < deadline:
            time.sleep(0.05)
        load = None if RATE == 0 else subprocess.Popen([LOADGEN, "--url", "http://127.0.0.1:19480", "--series", "100000",
                                 "--points", str(max(1, RATE * 16 // 100000)), "--interval-ms", "1000",
                                 "--rate", str(RATE)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        if load is not None:
            procs.append(load)
            time.sleep(2)
        sent = {}
        acks = []
        for i in range(PROBES):
            dev = "p%d" % i
            t0 = time.monotonic()
            post("bench,device=%s probe=95 %d" % (dev, int(time.time() * 1000)))
            acks.append((time.monotonic() - t0) * 1000)
            sent[("probe_high", dev)] = t0
            time.sleep(0.05)
        time.sleep(2)
        lat = [(arrivals[k] - t) * 1000 for k, t in sent.items() if k in arrivals]
        ingest = load is None or load.poll() is None
        out = ""
        if load is not None:
            load.send_signal(signal.SIGINT)
            out = load.communicate(timeout=60)[0]
        print("# sample -> incident event on Kafka, %d probes, background ingest %d samples/s%s" %
              (PROBES, RATE, "" if ingest else " (the generator finished early)"))
        print("incident_latency_p50_ms %.2f" % pct(lat, 0.5))
        print("incident_latency_p99_ms %.2f" % pct(lat, 0.99))
        print("incident_latency_max_ms %.2f" % max(lat) if lat else "incident_latency_max_ms nan")
        print("probes_delivered %d/%d" % (len(lat), PROBES))
        # The share of that spent before the write was acknowledged (parse, group commit).
        print("probe_write_ack_p50_ms %.2f" % pct(acks, 0.5))
        print("probe_write_ack_p99_ms %.2f" % pct(acks, 0.99))
        for l in out.splitlines():
            if l.startswith("samples_per_s"):
                print("background_" + l)
        # The burst: BURST lamps of one ward go dark in one request; a ward-level rule.
        now = int(time.time() * 1000)
        before = len(arrivals)
        t0 = time.monotonic()
        lines = ["bench,ward=w1,device=l%d lamp=0 %d" % (i, now) for i in range(BURST)]
        post("\n".join(lines))
        lines = ["bench,ward=w2,device=l%d lamp2=0 %d" % (i, now) for i in range(BURST)]
        post("\n".join(lines))

        def count(rule):
            with lock:
                return sum(1 for k in arrivals if k[0] == rule)
        deadline = time.monotonic() + 300
        while (count("ward_dark") < 1 or count("lamp_dark") < BURST) and time.monotonic() < deadline:
            time.sleep(0.05)
        t_all = (time.monotonic() - t0) * 1000
        print("# burst: %d lamps dark at once" % BURST)
        print("burst_grouped_by_ward_incidents %d" % count("ward_dark"))
        print("burst_per_lamp_incidents %d" % count("lamp_dark"))
        print("burst_per_lamp_all_on_kafka_ms %.0f" % t_all)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
