#!/usr/bin/env bash
# tools/run.sh - `make run`: iocd with the example rules and an in-process Kafka mock, fed by
# the demo city (`iocd simulate`). Prints where to look; Ctrl-C stops both cleanly.
#   RUN_ARGS  extra flags for iocd serve     SIM_ARGS  extra flags for iocd simulate
set -u
cd "$(dirname "$0")/.."
# A new data dir gets the last hour of the healthy city first, so charts have history.
backfill=
[ -n "$(ls -A data 2> /dev/null | grep -v '^iocd.log$')" ] || backfill="--backfill 1h"
mkdir -p data
log=data/iocd.log
: > "$log"
build/iocd serve --data-dir data --rules examples/rules --kafka-brokers mock ${RUN_ARGS:-} \
    > >(tee -a "$log") 2>&1 &
iocd=$!
sim=
stop() {
    trap - INT TERM
    echo
    echo "run: stopping"
    [ -n "$sim" ] && kill -TERM "$sim" 2> /dev/null
    kill -TERM "$iocd" 2> /dev/null
    wait "$iocd" 2> /dev/null
    exit 0
}
trap stop INT TERM
for _ in $(seq 1 300); do
    curl -fs http://127.0.0.1:9470/-/ready > /dev/null 2>&1 && break
    kill -0 "$iocd" 2> /dev/null || { echo "run: iocd did not start (see above)"; exit 1; }
    sleep 0.1
done
bootstrap=$(sed -n 's/.*mock kafka cluster started" bootstrap=\([^ ]*\).*/\1/p' "$log" | head -1)
cat << MSG

  iocd is running, fed by a live demo city (faults arrive every 20 s):
    console             http://127.0.0.1:9470/   (open it in a browser)
    API                 http://127.0.0.1:9470   (Prometheus query API, /api/v1/incidents)
    incidents           curl -s http://127.0.0.1:9470/api/v1/incidents
    alerts              curl -s http://127.0.0.1:9470/api/v1/alerts
    incidents on Kafka  kcat -C -b ${bootstrap:-<see the log>} -t iocd.incidents
    metrics             curl -s http://127.0.0.1:9470/metrics
  Stop with Ctrl-C.

MSG
build/iocd simulate --url http://127.0.0.1:9470 $backfill ${SIM_ARGS:-} &
sim=$!
wait "$iocd"
