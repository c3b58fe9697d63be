"""tests/integration/test_write.py - the write path as gateways and agents use it: line protocol
over HTTP, TCP and UDP, Prometheus remote write, JSON-lines import and export, partial writes
with line numbers, caps, and durability across kill -9."""

import gzip
import json
import os
import random
import struct
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, Failure, check, eq, metric, run, wait_for  # noqa: E402

NOW_MS = int(time.time() * 1000) // 1000 * 1000
PIECE_BYTES = 256 * 1024  # collector/ingest.c: a line-protocol body is cut into pieces this big


def export(d, match, start=None, end=None):
    """Returns {series-labels-tuple: [(t_ms, v), ...]} from /api/v1/export."""
    q = [("match[]", m) for m in ([match] if isinstance(match, str) else match)]
    if start is not None:
        q.append(("start", str(start)))
    if end is not None:
        q.append(("end", str(end)))
    r = d.get("/api/v1/export?" + urllib.parse.urlencode(q))
    eq(r.status, 200, "export status (%s)" % r.text[:300])
    out = {}
    for line in r.text.split("\n"):
        if not line:
            continue
        j = json.loads(line)
        eq(len(j["values"]), len(j["timestamps"]), "values/timestamps length")
        key = tuple(sorted(j["metric"].items()))
        check(key not in out, "series %r exported twice" % (key,))
        out[key] = list(zip(j["timestamps"], j["values"]))
    return out


def series_key(name, **labels):
    return tuple(sorted(dict(labels, __name__=name).items()))


# ---- line protocol over HTTP -------------------------------------------------------------

def test_influx_http_write_and_export_roundtrip():
    with Daemon() as d:
        d.start()
        t = NOW_MS * 1000000
        body = ("water,ward=phan_dinh_phung,device=wp-1 pressure_bar=2.347,pump_on=true,"
                "flow_m3h=120i,note=\"ok, fine\" %d\n"
                "camera,ward=gia_sang,device=c1 value=25 %d\n" % (t, t))
        r = d.post("/write", body.encode())
        eq(r.status, 204, "write status: " + r.text)
        got = export(d, '{ward=~".+"}')
        eq(got[series_key("water_pressure_bar", ward="phan_dinh_phung", device="wp-1")],
           [(NOW_MS, 2.347)], "float field")
        eq(got[series_key("water_pump_on", ward="phan_dinh_phung", device="wp-1")],
           [(NOW_MS, 1)], "boolean becomes 1")
        eq(got[series_key("water_flow_m3h", ward="phan_dinh_phung", device="wp-1")],
           [(NOW_MS, 120)], "integer field")
        eq(got[series_key("camera", ward="gia_sang", device="c1")], [(NOW_MS, 25)],
           "field 'value' is the bare measurement")
        check(not any(dict(k)["__name__"] == "water_note" for k in got), "strings are skipped")
        # precision=s and the v2 endpoint with gzip.
        body = b"lighting,ward=w2,device=l1 lux=1032.2 %d\n" % (NOW_MS // 1000)
        r = d.post("/api/v2/write?org=city&bucket=ioc&precision=s", gzip.compress(body),
                   headers={"Content-Encoding": "gzip"})
        eq(r.status, 204, "v2 gzip write: " + r.text)
        got = export(d, 'lighting_lux')
        eq(list(got.values()), [[(NOW_MS, 1032.2)]], "v2 + gzip + precision=s")
        eq(d.stop(), 0, "exit code")


def test_partial_write_reports_line_numbers_and_keeps_good_lines():
    with Daemon() as d:
        d.start()
        t = NOW_MS * 1000000
        body = ("# a comment\n"
                "traffic,ward=w1,device=t1 avg_speed_kmh=31.5 %d\n"
                "traffic,ward=w1,device=t1 avg_speed_kmh=abc %d\n"
                "\n"
                "traffic,ward=w1,device=t2 avg_speed_kmh=12 %d\n"
                "this line is broken\n" % (t, t, t))
        r = d.post("/write", body.encode())
        eq(r.status, 400, "partial write status")
        j = r.json()
        eq(j.get("written"), 2, "written count in %r" % j)
        eq(j.get("rejected"), 2, "rejected count in %r" % j)
        lines = [e["line"] for e in j["errors"]]
        eq(lines, [3, 6], "line numbers of the errors")
        check(all(e["reason"] for e in j["errors"]), "each error has a reason")
        got = export(d, 'traffic_avg_speed_kmh')
        eq(len(got), 2, "the good lines were stored")
        eq(d.stop(), 0, "exit code")


def test_large_bodies_parsed_in_pieces_keep_order_and_line_numbers():
    """A body of over a megabyte is cut into pieces parsed on several threads at once: every
    good line is stored, the errors are the body's first ones with their true line numbers,
    and a timestamp repeated at the end of the body keeps the last line's value."""
    with Daemon("--ingest-threads", "3") as d:
        d.start()
        lines, bad = [], []
        for i in range(20000):
            if i % 997 == 500:
                lines.append("water,ward=w%d,device=d%d pressure_bar=oops %d" % (i % 7, i, NOW_MS))
                bad.append(i + 1)
            else:
                lines.append("water,ward=w%d,device=d%d pressure_bar=%d.5,level_m=%d %d"
                             % (i % 7, i, i, i % 13, NOW_MS))
        # The same series and timestamp again at the very end: the last value wins.
        lines.append("water,ward=w0,device=d0 pressure_bar=-1 %d" % NOW_MS)
        body = ("\n".join(lines) + "\n").encode()
        check(len(body) > 1 << 20, "the body is large enough to be cut (%d bytes)" % len(body))
        for enc in ("identity", "gzip"):
            data = gzip.compress(body) if enc == "gzip" else body
            r = d.post("/write?precision=ms", data, headers={"Content-Encoding": enc})
            eq(r.status, 400, "partial write (%s)" % enc)
            j = r.json()
            eq(j["rejected"], len(bad), "rejected lines (%s)" % enc)
            eq(j["written"], 2 * (20000 - len(bad)) + 1, "samples written (%s)" % enc)
            eq([e["line"] for e in j["errors"]], bad[:8], "the first errors, in order (%s)" % enc)
        got = export(d, "water_pressure_bar")
        eq(len(got), 20000 - len(bad), "every good series")
        eq(got[series_key("water_pressure_bar", ward="w0", device="d0")], [(NOW_MS, -1)],
           "a repeated timestamp keeps the body's last value")
        eq(got[series_key("water_pressure_bar", ward="w%d" % (19999 % 7), device="d19999")],
           [(NOW_MS, 19999.5)], "the body's last line")
        eq(d.stop(), 0, "exit code")


def test_a_repeated_timestamp_keeps_the_last_value_across_pieces():
    """The first piece of a cut body costs far more to parse than the second (lines of 40
    fields against a few long lines), so the second is parsed first; its value for the
    repeated sample must still win, as it comes later in the body."""
    fields = ",".join("f%d=1" % i for i in range(40))
    pad = "x" * 3000
    with Daemon("--ingest-threads", "2") as d:
        d.start()
        for attempt in range(3):
            t = NOW_MS - attempt * 1000
            first, size = [], 0
            while size < PIECE_BYTES - 2000:
                first.append("m2,k=a %s %d" % (fields, t))
                size += len(first[-1]) + 1
            # This line ends the first piece (it crosses its PIECE_BYTES mark); the next
            # begins the second.
            first.append("dup,k=a,pad=%s v=1 %d" % (pad, t))
            second = ["dup,k=a,pad=%s v=2 %d" % (pad, t)]
            second += ["m,k=a,pad=%s v=%d %d" % ("y" * 4000, i, t)
                       for i in range(PIECE_BYTES // 4000 + 8)]
            body = ("\n".join(first + second) + "\n").encode()
            r = d.post("/write?precision=ms", body)
            eq(r.status, 204, "write: " + r.text)
            got = export(d, "dup_v", start=t / 1000, end=t / 1000)
            eq(list(got.values()), [[(t, 2)]], "the later line's value (attempt %d)" % attempt)
        eq(d.stop(), 0, "exit code")


def test_bad_bodies_get_clear_errors():
    with Daemon("--http-body-max", "64KiB") as d:
        d.start()
        r = d.post("/write", b"x" * 100000)
        eq(r.status, 413, "over the cap")
        r = d.post("/write", b"not gzip at all", headers={"Content-Encoding": "gzip"})
        eq(r.status, 400, "bad gzip")
        check("gzip" in r.text, r.text)
        bomb = gzip.compress(b"a" * (10 << 20))
        r = d.post("/write", bomb, headers={"Content-Encoding": "gzip"})
        eq(r.status, 413, "gzip bomb over the cap once inflated")
        r = d.post("/write?precision=fortnights", b"m v=1\n")
        eq(r.status, 400, "bad precision")
        r = d.post("/api/v1/write", b"\xff\xfe garbage",
                   headers={"Content-Encoding": "snappy",
                            "Content-Type": "application/x-protobuf"})
        eq(r.status, 400, "undecodable remote write")
        check("snappy" in r.text or "protobuf" in r.text, r.text)
        r = d.post("/api/v1/import", b'{"metric":{"__name__":"m"},"values":[1],'
                                      b'"timestamps":[%d]}\n{oops\n' % NOW_MS)
        eq(r.status, 400, "partial import")
        eq(r.json()["errors"][0]["line"], 2, "import error line")
        eq(d.get("/-/healthy").status, 200, "still healthy")
        eq(d.stop(), 0, "exit code")


# ---- TCP and UDP --------------------------------------------------------------------------

def test_tcp_and_udp_lines_are_stored_with_auto_precision():
    with Daemon() as d:
        d.start()
        # Milliseconds, seconds and nanoseconds are recognised by magnitude on TCP/UDP.
        lines = [b"water,device=a level_m=1.5 %d" % NOW_MS,
                 b"water,device=b level_m=2.5 %d" % (NOW_MS // 1000),
                 b"water,device=c level_m=3.5 %d" % (NOW_MS * 1000000),
                 b"garbage line"]
        # Send in pieces so lines are split across reads.
        blob = b"\n".join(lines) + b"\n"
        host, port = d.tcp_addr.rsplit(":", 1)
        import socket
        with socket.create_connection((host, int(port))) as s:
            for i in range(0, len(blob), 7):
                s.sendall(blob[i:i + 7])
        d.udp_send(b"water,device=u level_m=4.5 %d\nwater,device=v level_m=5.5 %d"
                   % (NOW_MS, NOW_MS))
        got = wait_for(lambda: (lambda e: e if len(e) == 5 else None)(export(d, "water_level_m")),
                       what="5 series stored")
        for k, v in got.items():
            eq(v[0][0], NOW_MS, "timestamp of %r" % (k,))
        ms = d.metrics()
        check(metric(ms, "iocd_ingest_samples_total", proto="influx_tcp") >= 3, "tcp counted")
        check(sum(v for k, v in ms.items() if k[0] == "iocd_ingest_rejected_total") >= 1,
              "the garbage line was counted as rejected")
        eq(d.stop(), 0, "exit code")


# ---- remote write and import ---------------------------------------------------------------

def pb_varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def pb_field(num, wire, payload):
    if wire == 2:
        return pb_varint(num << 3 | 2) + pb_varint(len(payload)) + payload
    if wire == 1:
        return pb_varint(num << 3 | 1) + payload
    return pb_varint(num << 3 | 0) + pb_varint(payload)


def write_request(series):
    """series: [(labels dict, [(t_ms, v)])] -> protobuf WriteRequest bytes."""
    out = b""
    for labels, samples in series:
        ts = b""
        for k, v in labels.items():
            ts += pb_field(1, 2, pb_field(1, 2, k.encode()) + pb_field(2, 2, v.encode()))
        for t, v in samples:
            ts += pb_field(2, 2, pb_field(1, 1, struct.pack("<d", v)) + pb_field(2, 0, t))
        out += pb_field(1, 2, ts)
    return out


def snappy_literal(data):
    """A valid snappy block made only of literals (no compression needed to be valid)."""
    out = bytearray(pb_varint(len(data)))
    for i in range(0, len(data), 60000):
        chunk = data[i:i + 60000]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2, n & 0xFF, n >> 8])
        out += chunk
    return bytes(out)


def test_remote_write_and_staleness_marker_bit_exact():
    with Daemon() as d:
        d.start()
        stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
        body = write_request([
            ({"__name__": "drain_level_m", "ward": "cam_gia", "device": "dr-1"},
             [(NOW_MS - 20000, 0.41), (NOW_MS - 10000, 0.43), (NOW_MS, stale)]),
        ])
        r = d.post("/api/v1/write", snappy_literal(body),
                   headers={"Content-Encoding": "snappy",
                            "Content-Type": "application/x-protobuf",
                            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        eq(r.status, 204, "remote write: " + r.text)
        got = export(d, "drain_level_m")
        (vals,) = got.values()
        eq([t for t, _ in vals], [NOW_MS - 20000, NOW_MS - 10000, NOW_MS], "timestamps")
        eq(vals[:2], [(NOW_MS - 20000, 0.41), (NOW_MS - 10000, 0.43)], "values")
        check(vals[2][1] != vals[2][1] or vals[2][1] in ("NaN",), "NaN exported")
        eq(d.stop(), 0, "exit code")


def test_import_export_roundtrip_and_time_range():
    with Daemon() as d:
        d.start()
        ts = [NOW_MS - 30000, NOW_MS - 20000, NOW_MS - 10000, NOW_MS]
        lines = []
        for i in range(50):
            lines.append(json.dumps({"metric": {"__name__": "traffic_vehicles",
                                                "ward": "w%d" % (i % 5), "device": "t%d" % i},
                                     "values": [i, i + 1, None, i + 3], "timestamps": ts}))
        r = d.post("/api/v1/import", ("\n".join(lines) + "\n").encode())
        eq(r.status, 204, "import: " + r.text)
        got = export(d, "traffic_vehicles")
        eq(len(got), 50, "series")
        eq(got[series_key("traffic_vehicles", ward="w2", device="t7")],
           [(ts[0], 7), (ts[1], 8), (ts[3], 10)], "null skipped")
        # start/end as Unix seconds and RFC 3339.
        got = export(d, 'traffic_vehicles{device="t7"}', start=(ts[1]) / 1000.0,
                     end=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((ts[3] - 1) / 1000.0)))
        eq(list(got.values()), [[(ts[1], 8)]], "time range")
        # Export output re-imports to the same data in a fresh daemon.
        r = d.get("/api/v1/export?match[]=traffic_vehicles")
        with Daemon() as d2:
            d2.start()
            eq(d2.post("/api/v1/import", r.body).status, 204, "re-import")
            eq(export(d2, "traffic_vehicles"), export(d, "traffic_vehicles"), "same data")
            eq(d2.stop(), 0, "exit code")
        eq(d.stop(), 0, "exit code")


# ---- durability --------------------------------------------------------------------------

def test_acknowledged_writes_survive_kill9_many_times():
    """Writers post batches concurrently; after some are acknowledged the daemon is killed
    with SIGKILL. After each restart, every acknowledged sample is there exactly once."""
    rng = random.Random(7)
    acked = {}  # device -> set of t
    with Daemon() as d:
        base = NOW_MS - 3000000
        next_t = [0]
        lock = threading.Lock()
        for round_no in range(5):
            d.start()
            stop = threading.Event()
            n_acked = [0]

            def writer(wid):
                while not stop.is_set():
                    with lock:
                        i = next_t[0]
                        next_t[0] += 1
                    t = base + i * 10
                    body = "".join("soak,device=d%d v=%d %d\n" % (k, i, t * 1000000)
                                   for k in range(20))
                    try:
                        r = d.post("/write", body.encode())
                    except Exception:
                        return  # the daemon died under us: this batch was not acknowledged
                    if r.status == 204:
                        with lock:
                            for k in range(20):
                                acked.setdefault("d%d" % k, set()).add(t)
                            n_acked[0] += 1

            threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
            for th in threads:
                th.start()
            target = 20 + rng.randrange(60)
            wait_for(lambda: n_acked[0] >= target, what="%d acknowledged batches" % target)
            d.kill9()
            stop.set()
            for th in threads:
                th.join(30)
            d.start()
            got = export(d, "soak_v")
            for dev, ts in acked.items():
                have = [t for t, _ in got.get(series_key("soak_v", device=dev), [])]
                eq(len(have), len(set(have)), "no duplicates for %s" % dev)
                missing = ts - set(have)
                check(not missing, "round %d: %d acknowledged samples of %s lost, e.g. %r"
                      % (round_no, len(missing), dev, sorted(missing)[:3]))
            d.kill9()
        eq(sum(len(v) for v in acked.values()) > 0, True, "something was acknowledged")


def test_disk_full_answers_503_keeps_data_and_recovers():
    """A file-size limit on the daemon stands in for a full disk (mounting a small tmpfs may
    be refused here). Writes past it get 503 with Retry-After; what was acknowledged stays;
    once the limit is lifted, ingest resumes by itself."""
    import resource
    with Daemon() as d:
        d.start()
        acked = []
        big = resource.RLIM_INFINITY
        resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (4 << 20, big))
        got_503 = None
        for i in range(400):
            body = "".join("disk,device=d%d,batch=b%d v=%d %d\n" % (k, i, k, NOW_MS)
                           for k in range(200))
            r = d.post("/write?precision=ms", body.encode())
            if r.status == 204:
                acked.append(i)
            elif r.status == 503:
                got_503 = r
                break
            else:
                raise Failure("unexpected status %d: %s" % (r.status, r.text))
        check(got_503 is not None, "the limit was reached")
        check(got_503.header("Retry-After") is not None, "503 carries Retry-After")
        check("space" in got_503.text, got_503.text)
        eq(d.get("/-/healthy").status, 200, "still serving")
        resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (big, big))
        r = d.post("/write?precision=ms", b"disk,device=after v=1 %d\n" % NOW_MS)
        eq(r.status, 204, "ingest resumes once space returns: " + r.text)
        d.kill9()
        d.start()
        got = export(d, "disk_v")
        for i in acked:
            check(series_key("disk_v", device="d0", batch="b%d" % i) in got,
                  "acknowledged batch %d survived" % i)
        check(series_key("disk_v", device="after") in got, "the write after recovery")
        eq(d.stop(), 0, "exit code")


def test_kill9_while_seals_are_in_progress_loses_nothing():
    """10,000 series over many 5-minute periods, so periods are sealed while writes go on,
    each seal spread over several group commits (a few thousand series each), and every round
    also sends each series a late sample 6m40s back, into the period being sealed; the daemon
    is killed with SIGKILL after a random number of rounds. After each restart every
    acknowledged sample is there exactly once, sealed or not."""
    rng = random.Random(11)
    n_series, step_ms = 10000, 20000
    base = NOW_MS - 60 * 60 * 1000
    acked = []  # the round numbers acknowledged
    with Daemon("--chunk", "5m") as d:
        next_round = 0
        for _ in range(3):
            d.start()
            stop_at = next_round + 15 + rng.randrange(15)
            for rnd in range(next_round, stop_at):
                t = base + rnd * step_ms
                body = "".join("seal,device=s%d v=%d %d\nseal,device=s%d v=%d %d\n"
                               % (k, rnd, t, k, rnd, t - 400000 + 7) for k in range(n_series))
                eq(d.post("/write?precision=ms", body.encode()).status, 204, "round %d" % rnd)
                acked.append(rnd)
            next_round = stop_at
            sealed = metric(d.metrics(), "iocd_sealed_blocks_total")
            d.kill9()
            d.start()
            got = export(d, "seal_v")
            eq(len(got), n_series, "every series")
            want = sorted([base + r * step_ms for r in acked] +
                          [base + r * step_ms - 400000 + 7 for r in acked])
            for dev in ("s0", "s4097", "s9999"):
                have = [t for t, _ in got[series_key("seal_v", device=dev)]]
                eq(have, want, "every acknowledged sample of %s once, in order" % dev)
            total = sum(len(v) for v in got.values())
            eq(total, n_series * len(acked) * 2, "every sample once")
            d.kill9()
        check(sealed > 0, "periods were sealed during the run")


def test_graceful_stop_compacts_the_free_pages_the_wal_leaves():
    """Sealing deletes WAL records, leaving free pages in the data file; a graceful stop
    rewrites the file without them when they are a fifth or more of it, and every sample is
    there afterwards. With --compact-at-stop 0 the file keeps them."""
    start = NOW_MS - 50 * 60 * 1000
    lines = ["water,ward=w%d,device=ws-%d pressure_bar=%.3f %d" % (i % 4, i, 2 + (k % 97) / 1000,
                                                                 start + k * 10000)
             for k in range(300) for i in range(100)]
    sizes = {}
    for flag in ("1GiB", "0"):
        with Daemon("--chunk", "5m", "--compact-at-stop", flag) as d:
            d.start()
            for k in range(0, len(lines), 5000):
                eq(d.post("/write?precision=ms", "\n".join(lines[k:k + 5000]).encode()).status,
                   204, "write")
            eq(d.stop(), 0, "graceful stop")
            path = os.path.join(d.data_dir, "iocd.mdb")
            sizes[flag] = os.path.getsize(path)
            compacted = d.find_log(r"data file compacted at stop") is not None
            eq(compacted, flag != "0", "compacted at stop with --compact-at-stop %s" % flag)
            d.start()
            got = export(d, "water_pressure_bar")
            eq((len(got), sum(len(v) for v in got.values())), (100, 30000),
               "every series and sample after the restart")
    check(sizes["1GiB"] < sizes["0"] * 0.8,
          "compacted file %d bytes vs %d without" % (sizes["1GiB"], sizes["0"]))


def test_delete_series_needs_admin_and_survives_restart():
    config = """return { tokens = {
      { name = "gw", token = "write-0123456789abcdef", role = "write" },
      { name = "ops", token = "admin-0123456789abcdef", role = "admin" } } }
"""
    with Daemon(config=config) as d:
        d.start()
        w = {"Authorization": "Bearer write-0123456789abcdef"}
        a = {"Authorization": "Bearer admin-0123456789abcdef"}
        body = "".join("camera,ward=w%d,device=c%d fps=25 %d\n" % (i % 3, i, NOW_MS)
                       for i in range(30))
        eq(d.post("/write?precision=ms", body.encode(), headers=w).status, 204, "write")
        q = "/api/v1/admin/tsdb/delete_series?" + urllib.parse.urlencode(
            [("match[]", 'camera_fps{ward="w1"}')])
        eq(d.post(q, headers=w).status, 403, "a write token cannot delete")
        eq(d.post(q, headers=a).status, 204, "admin deletes")
        def exp():
            r = d.get("/api/v1/export?match[]=camera_fps", headers=a)
            eq(r.status, 200, "export")
            return [json.loads(l)["metric"]["ward"] for l in r.text.split("\n") if l]
        wards = exp()
        eq(len(wards), 20, "10 of 30 series deleted")
        check("w1" not in wards, "no w1 series left")
        # Same labels again: a new series that starts empty.
        eq(d.post("/write?precision=ms", b"camera,ward=w1,device=c1 fps=5 %d\n" % (NOW_MS + 1000),
                  headers=w).status, 204, "rewrite")
        d.kill9()
        d.start()
        wards = exp()
        eq(len(wards), 21, "deletion survived kill -9; the new series is there")
        eq(d.stop(), 0, "exit code")


def test_cardinality_and_label_limits_refuse_clearly():
    with Daemon("--max-series", "3", "--max-labels", "3", "--max-label-length", "16") as d:
        d.start()
        body = "".join("pump,device=p%d on=1i %d\n" % (i, NOW_MS) for i in range(5))
        r = d.post("/write?precision=ms", body.encode())
        eq(r.status, 400, "partial write over the series limit")
        j = r.json()
        eq((j["written"], j["rejected"]), (3, 2), "3 series kept, 2 refused: %r" % j)
        check(any("cardinality_limit" in e["reason"] for e in j["errors"]), r.text)
        # Existing series keep flowing.
        eq(d.post("/write?precision=ms", b"pump,device=p0 on=0i %d\n" % (NOW_MS + 1)).status, 204,
           "an existing series still accepts samples")
        r = d.post("/write?precision=ms", b"m,a=1,b=2,c=3 v=1 %d\n" % NOW_MS)
        eq(r.status, 400, "too many labels")
        check("too many tags" in r.text, r.text)
        r = d.post("/write?precision=ms", b"m,a=%s v=1 %d\n" % (b"x" * 40, NOW_MS))
        eq(r.status, 400, "label too long")
        ms = d.metrics()
        check(metric(ms, "iocd_store_rejected_samples_total", reason="cardinality_limit") >= 2,
              "refusals counted per reason")
        eq(d.stop(), 0, "exit code")


if __name__ == "__main__":
    run(globals())
