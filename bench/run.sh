#!/usr/bin/env bash
# bench/run.sh - `make bench`: the write-path benchmark. For each size it starts the release
# iocd on a fresh data dir, replays the IOC workload with bench/loadgen over HTTP (4
# connections, 5000-line batches), stops iocd gracefully and prints: ingest samples/s,
# samples per daemon CPU-second, bytes per sample on disk (allocated size of the whole data
# dir after the stop), peak anonymous memory (RssAnon) and p50/p99 write latency; then two
# runs paced at BENCH_RATE samples/s for the latency under load: the same replay, and a live
# stream (samples 10 ms apart ending now).
# BENCH_SIZES="series:points ..." (default "10000:360 100000:360"), BENCH_RATE (1000000),
# IOCD_ARGS (extra flags for iocd serve, e.g. "--chunk 5m").
set -euo pipefail
cd "$(dirname "$0")/.."
IOCD=${IOCD:-build/iocd}
LOADGEN=build/bench/loadgen
SIZES=${BENCH_SIZES:-"10000:360 100000:360"}
RATE=${BENCH_RATE:-1000000}
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

start_iocd() { # data-dir
    # shellcheck disable=SC2086
    "$IOCD" serve --data-dir "$1" --http 127.0.0.1:0 --influx-tcp "" --influx-udp "" \
        --log-level info ${IOCD_ARGS:-} 2>"$tmp/iocd.log" &
    pid=$!
    for _ in $(seq 1 200); do
        addr=$(sed -n 's/.*msg=ready http=\([0-9.:]*\).*/\1/p' "$tmp/iocd.log")
        [ -n "$addr" ] && return 0
        sleep 0.05
    done
    echo "iocd did not start:"; cat "$tmp/iocd.log"; exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

peak_anon() { # pid, output file: samples RssAnon every 100 ms while pid lives
    local max=0 v
    while kill -0 "$1" 2>/dev/null; do
        v=$(awk '/RssAnon/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
        [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v && echo "$max" >"$2"
        sleep 0.1
    done
}

printf "\n%-8s %-6s %-10s %-12s %-14s %-10s %-10s %-10s %-9s %-9s\n" series points samples \
    "samples/s" "samples/cpu-s" "B/sample" "anon MiB" "B/series" "p50 ms" "p99 ms"
for size in $SIZES; do
    series=${size%%:*}
    points=${size##*:}
    rm -rf "$tmp/data"
    start_iocd "$tmp/data"
    echo 0 >"$tmp/peak"
    peak_anon "$pid" "$tmp/peak" &
    sampler=$!
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks "$pid")
    "$LOADGEN" --url "http://$addr" --series "$series" --points "$points" >"$tmp/lg.out"
    c1=$(cpu_ticks "$pid")
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
    wait "$sampler" 2>/dev/null || true
    get() { awk -v k="$1" '$1 == k {print $2}' "$tmp/lg.out"; }
    samples=$(get generated_samples)
    rate=$(get samples_per_s)
    elapsed=$(get elapsed_seconds)
    disk=$(du -s --block-size=1 "$tmp/data" | cut -f1)
    peak=$(cat "$tmp/peak")
    awk -v s="$series" -v p="$points" -v n="$samples" -v r="$rate" -v c0="$c0" -v c1="$c1" \
        -v hz="$hz" -v d="$disk" -v pk="$peak" -v p50="$(get latency_p50_ms)" \
        -v p99="$(get latency_p99_ms)" 'BEGIN {
            cpu = (c1 - c0) / hz; if (cpu <= 0) cpu = 1 / hz;
            printf "%-8d %-6d %-10d %-12.0f %-14.0f %-10.3f %-10.1f %-10.0f %-9s %-9s\n",
                s, p, n, r, n / cpu, d / n, pk / 1024, pk * 1024 / s, p50, p99 }'
    [ "$(get errors)" = 0 ] || { echo "write errors: $(grep first_error "$tmp/lg.out")"; exit 1; }
done

# Latency while ingesting at a steady rate.
first=${SIZES%% *}
rm -rf "$tmp/data"
start_iocd "$tmp/data"
"$LOADGEN" --url "http://$addr" --series "${first%%:*}" --points "${first##*:}" \
    --rate "$RATE" >"$tmp/lg.out"
kill -TERM "$pid"; wait "$pid" || true; pid=""
echo
echo "paced at $RATE samples/s: achieved $(awk '$1=="samples_per_s"{print $2}' "$tmp/lg.out") samples/s," \
    "write latency p50 $(awk '$1=="latency_p50_ms"{print $2}' "$tmp/lg.out") ms," \
    "p99 $(awk '$1=="latency_p99_ms"{print $2}' "$tmp/lg.out") ms"
# The same rate as a live stream: the samples' times are 10 ms apart and end now, so the
# run spans seconds of data, not an hour (the replay above seals four periods and compacts
# an hour within 3.6 s, a thousand times more often than live data at this rate).
rm -rf "$tmp/data"
start_iocd "$tmp/data"
"$LOADGEN" --url "http://$addr" --series "${first%%:*}" --points "${first##*:}" \
    --interval-ms 10 --rate "$RATE" >"$tmp/lg.out"
kill -TERM "$pid"; wait "$pid" || true; pid=""
echo "paced at $RATE samples/s, live timestamps: achieved" \
    "$(awk '$1=="samples_per_s"{print $2}' "$tmp/lg.out") samples/s, write latency p50" \
    "$(awk '$1=="latency_p50_ms"{print $2}' "$tmp/lg.out") ms," \
    "p99 $(awk '$1=="latency_p99_ms"{print $2}' "$tmp/lg.out") ms"

# The same workload through Prometheus remote write (snappy + protobuf), and raw TCP lines.
for mode in remote-write tcp; do
    rm -rf "$tmp/data"
    if [ "$mode" = tcp ]; then
        "$IOCD" serve --data-dir "$tmp/data" --http 127.0.0.1:0 --influx-tcp 127.0.0.1:0 \
            --influx-udp "" --log-level info 2>"$tmp/iocd.log" &
        pid=$!
        for _ in $(seq 1 200); do
            grep -q "msg=ready" "$tmp/iocd.log" && break
            sleep 0.05
        done
        tcp=$(sed -n 's/.*msg=ready .*influx_tcp=\([0-9.:]*\).*/\1/p' "$tmp/iocd.log")
        "$LOADGEN" --url "http://$tcp" --mode tcp --series "${first%%:*}" \
            --points "${first##*:}" >"$tmp/lg.out"
    else
        start_iocd "$tmp/data"
        "$LOADGEN" --url "http://$addr" --mode "$mode" --series "${first%%:*}" \
            --points "${first##*:}" >"$tmp/lg.out"
    fi
    kill -TERM "$pid"; wait "$pid" || true; pid=""
    echo "$mode: $(awk '$1=="samples_per_s"{print $2}' "$tmp/lg.out") samples/s sent," \
        "errors $(awk '$1=="errors"{print $2}' "$tmp/lg.out")"
done
