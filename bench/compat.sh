#!/usr/bin/env bash
# bench/compat.sh - `make compat`: iocd's PromQL against Debian's Prometheus 2.42 on one data
# set (bench/compat.py), then promtool against iocd. Installs prometheus and python3-snappy when
# missing (with a policy-rc.d so the packaged service does not start). Runs both on free
# loopback ports with fresh data directories. Exits non-zero on an unexplained difference.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v prometheus > /dev/null || need+=(prometheus)
/usr/bin/python3 -c 'import snappy' 2> /dev/null || need+=(python3-snappy)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d > /dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    echo "compat: installing ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" > /dev/null
    [ "$made_policy" -eq 0 ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; wait 2> /dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
pp=$(free_port); ip=$(free_port)
printf 'global:\n  scrape_interval: 1h\n' > "$tmp/prometheus.yml"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom" \
    --web.listen-address="127.0.0.1:$pp" --web.enable-remote-write-receiver \
    --storage.tsdb.retention.time=10y > "$tmp/prometheus.log" 2>&1 &
pids+=($!)
build/iocd serve --data-dir "$tmp/iocd" --http "127.0.0.1:$ip" --influx-tcp "" --influx-udp "" \
    > "$tmp/iocd.log" 2>&1 &
pids+=($!)
for url in "http://127.0.0.1:$pp/-/ready" "http://127.0.0.1:$ip/-/ready"; do
    for _ in $(seq 1 300); do curl -fs "$url" > /dev/null 2>&1 && break; sleep 0.1; done
done
echo "compat: $(prometheus --version 2>&1 | head -1)"
echo "compat: iocd $(build/iocd version)"
rc=0
/usr/bin/python3 bench/compat.py "http://127.0.0.1:$pp" "http://127.0.0.1:$ip" bench/compat_queries.txt || rc=1

# promtool, as an operator would point it at iocd.
t=$(( $(date +%s) / 60 * 60 - 600 ))
promtool query instant --time="$t" "http://127.0.0.1:$ip" 'sum by (ward) (water_pressure_bar)' > "$tmp/pt1"
promtool query range --start=$((t - 3600)) --end="$t" --step=5m "http://127.0.0.1:$ip" 'avg(water_pressure_bar)' > "$tmp/pt2"
promtool query series --match='water_pressure_bar{ward="gia_sang"}' "http://127.0.0.1:$ip" > "$tmp/pt3"
promtool query labels "http://127.0.0.1:$ip" ward > "$tmp/pt4"
if [ "$(wc -l < "$tmp/pt1")" -eq 4 ] && grep -q '@\[' "$tmp/pt2" && [ "$(wc -l < "$tmp/pt3")" -eq 3 ] &&
    grep -q gia_sang "$tmp/pt4"; then
    echo "compat: promtool query instant, range, series and labels against iocd: ok"
else
    echo "compat: promtool against iocd FAILED"; cat "$tmp"/pt*; rc=1
fi
exit $rc
