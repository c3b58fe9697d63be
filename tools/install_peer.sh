#!/usr/bin/env bash
# tools/install_peer.sh PACKAGE... - installs peer systems for benchmarks (victoria-metrics,
# prometheus, influxdb, ...) from Debian without starting their packaged services, which
# would listen on all addresses: a policy-rc.d refuses service starts during the install.
set -euo pipefail
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
made=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d > /dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made=1
fi
echo "install_peer: $*"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q > /dev/null # a new machine's lists may be stale
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" > /dev/null
[ "$made" -eq 0 ] || $SUDO rm -f /usr/sbin/policy-rc.d
