"""bench/compat.py - compares iocd's PromQL answers with Prometheus 2.42's on one data set.
Driven by bench/compat.sh (which starts both). Loads the IOC data set into both through remote
write, then runs every query of the corpus as instant queries at three times and as range
queries at two steps against both, and prints every answer that differs beyond float
tolerance (relative 1e-9). Differences listed in bench/compat_known.txt are counted as
explained. Last line: "compat: N queries, N checks, N differ, N explained".

Data: 4 wards x 3 pumps over 2 hours at 15 s: counters (with a reset and a 150 s gap), gauges
(one series goes stale for 7.5 minutes, with a staleness marker), and a histogram."""

import json
import math
import os
import random
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import snappy  # python3-snappy, installed by compat.sh

PROM, IOCD, CORPUS = sys.argv[1], sys.argv[2], sys.argv[3]
KNOWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat_known.txt")
END = (int(time.time()) // 60 - 5) * 60 * 1000
START = END - 2 * 3600 * 1000
STEP = 15000
STALE = struct.unpack("<d", struct.pack("<Q", 0x7ff0000000000002))[0]
random.seed(7)


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def label(n, v):
    return field(1, n.encode()) + field(2, v.encode())


def sample(v, t):
    return b"\x09" + struct.pack("<d", v) + b"\x10" + varint(t & (2 ** 64 - 1))


def dataset():
    series = []
    for w in ["phan_dinh_phung", "quang_trung", "tan_thinh", "gia_sang"]:
        for d in range(3):
            base = {"ward": w, "device": "pump-%02d" % d, "domain": "water", "job": "iot"}
            pts, c = [], random.randint(0, 100)
            for i, t in enumerate(range(START, END + 1, STEP)):
                if 100 <= i < 110 and d == 1:
                    continue  # a gap
                c += random.randint(0, 20)
                if i == 300 and d == 2:
                    c = random.randint(0, 5)  # a counter reset
                pts.append((t, float(c)))
            series.append((dict(base, __name__="water_pumped_total"), pts))
            pts = []
            for i, t in enumerate(range(START, END + 1, STEP)):
                v = round(2.0 + math.sin(i / 30 + d) * 0.5 + random.random() * 0.1, 3)
                if d == 0 and w == "tan_thinh" and 200 <= i < 230:
                    if i == 200:
                        pts.append((t, STALE))  # the series goes stale, then resumes
                    continue
                pts.append((t, v))
            series.append((dict(base, __name__="water_pressure_bar"), pts))
        for le in ["0.1", "0.5", "1", "+Inf"]:
            pts, c = [], 0
            for i, t in enumerate(range(START, END + 1, STEP)):
                c += {"0.1": 1, "0.5": 3, "1": 5, "+Inf": 6}[le] * random.randint(1, 3)
                pts.append((t, float(c)))
            series.append(({"__name__": "req_seconds_bucket", "ward": w, "le": le, "job": "iot"}, pts))
    return series


def send(url, series):
    body = b""
    for lbls, pts in series:
        ts = b"".join(field(1, label(k, v)) for k, v in sorted(lbls.items()))
        ts += b"".join(field(2, sample(v, t)) for t, v in pts)
        body += field(1, ts)
    req = urllib.request.Request(url + "/api/v1/write", data=snappy.compress(body), method="POST",
                                 headers={"Content-Encoding": "snappy",
                                          "Content-Type": "application/x-protobuf",
                                          "X-Prometheus-Remote-Write-Version": "0.1.0"})
    with urllib.request.urlopen(req, timeout=60) as r:
        if r.status // 100 != 2:
            sys.exit("compat: %s refused the data (%d)" % (url, r.status))


def query(base, path, params):
    try:
        with urllib.request.urlopen(base + path + "?" + urllib.parse.urlencode(params), timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "errorType": "http %d" % e.code, "error": body[:200]}


def norm(j):
    if j.get("status") != "success":
        return ("error", j.get("errorType"), None)
    d = j["data"]
    t, r = d["resultType"], d["result"]
    if t in ("scalar", "string"):
        return (t, r, None)
    out = {}
    for s in r:
        out[tuple(sorted(s["metric"].items()))] = s.get("values") or [s["value"]]
    return (t, out, [tuple(sorted(s["metric"].items())) for s in r])


def feq(a, b):
    a, b = float(a), float(b)
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) + 1e-12


def same_points(a, b):
    return len(a) == len(b) and all(ta == tb and feq(va, vb) for (ta, va), (tb, vb) in zip(a, b))


def values_by_step(res):
    steps = {}
    for pts in res.values():
        for t, v in pts:
            steps.setdefault(t, []).append(float(v))
    return {t: sorted(v) for t, v in steps.items()}


def compare(q, a, b):
    """None when equal, else a short description of the first difference."""
    if a[0] != b[0]:
        return "result types: prometheus %s (%s), iocd %s (%s)" % (a[0], str(a[1])[:80], b[0], str(b[1])[:80])
    if a[0] == "error":
        return None
    if a[0] == "scalar":
        return None if a[1][0] == b[1][0] and feq(a[1][1], b[1][1]) else "scalar %r vs %r" % (a[1], b[1])
    if a[0] == "string":
        return None if a[1] == b[1] else "string %r vs %r" % (a[1], b[1])
    if "topk" in q or "bottomk" in q:
        # Ties may pick different, equally valid series: compare the chosen values per step.
        va, vb = values_by_step(a[1]), values_by_step(b[1])
        if va.keys() != vb.keys():
            return "topk/bottomk steps differ"
        for t in va:
            if len(va[t]) != len(vb[t]) or not all(feq(x, y) for x, y in zip(va[t], vb[t])):
                return "topk/bottomk values at %s: %s vs %s" % (t, va[t][:4], vb[t][:4])
        return None
    ka, kb = set(a[1]), set(b[1])
    if ka != kb:
        return "series only in prometheus: %s; only in iocd: %s" % (sorted(ka - kb)[:2], sorted(kb - ka)[:2])
    for k in sorted(ka):
        if not same_points(a[1][k], b[1][k]):
            return "%s: prometheus %s (%d points), iocd %s (%d points)" % (
                dict(k), a[1][k][:3], len(a[1][k]), b[1][k][:3], len(b[1][k]))
    if a[0] == "vector" and q.replace(" ", "").startswith(("sort(", "sort_desc(")) and a[2] != b[2]:
        sa = [float(a[1][k][0][1]) for k in a[2]]
        sb = [float(b[1][k][0][1]) for k in b[2]]
        if not all(feq(x, y) for x, y in zip(sa, sb)):
            return "sort order differs"
    return None


def main():
    known = set()
    if os.path.exists(KNOWN):
        for line in open(KNOWN):
            if line.strip() and not line.startswith("#"):
                known.add(line.split("\t")[0].strip())
    series = dataset()
    send(PROM, series)
    send(IOCD, series)
    want = norm(query(PROM, "/api/v1/query", {"query": "count({__name__=~\".+\"})", "time": END / 1000}))
    deadline = time.time() + 60
    while time.time() < deadline:
        got = norm(query(IOCD, "/api/v1/query", {"query": "count({__name__=~\".+\"})", "time": END / 1000}))
        if got == want:
            break
        time.sleep(0.2)
    times = [END / 1000, (START + 3600 * 1000) / 1000, (START + 232 * STEP) / 1000]
    n_q = n_checks = n_diff = n_known = 0
    for line in open(CORPUS):
        q = line.strip()
        if not q or q.startswith("#"):
            continue
        n_q += 1
        checks = [("/api/v1/query", {"query": q, "time": str(t)}) for t in times]
        checks.append(("/api/v1/query_range", {"query": q, "start": str(START / 1000 + 600),
                                               "end": str(END / 1000), "step": "60"}))
        checks.append(("/api/v1/query_range", {"query": q, "start": str(START / 1000 + 601),
                                               "end": str(END / 1000), "step": "37"}))
        for path, params in checks:
            n_checks += 1
            why = compare(q, norm(query(PROM, path, params)), norm(query(IOCD, path, params)))
            if why is None:
                continue
            if q in known:
                n_known += 1
                break
            n_diff += 1
            print("DIFF %s  [%s %s]\n     %s" % (q, path.split("/")[-1], params.get("time", params.get("step")), why))
            break
    print("compat: %d queries, %d checks, %d differ, %d explained" % (n_q, n_checks, n_diff, n_known))
    sys.exit(1 if n_diff else 0)


if __name__ == "__main__":
    main()
