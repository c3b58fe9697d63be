#!/bin/sh
# tools/deps.sh - installs the Debian packages that building, testing and running iocd need.
# Does nothing (quickly) when all are present; otherwise runs apt-get update, then install.
# `tools/deps.sh test` adds what only the tests need: headless Chromium and its driver for the
# console's browser tests.
set -eu

PACKAGES="
pkg-config libc6-dev
libevent-dev liblmdb-dev librdkafka-dev libmicrohttpd-dev liblua5.4-dev
zlib1g-dev libzstd-dev libsnappy-dev libprotobuf-c-dev libpcre2-dev libcurl4-openssl-dev
python3 curl kcat lmdb-utils
clang clang-format libclang-rt-14-dev cppcheck
"
if [ "${1:-}" = test ]; then
    PACKAGES="$PACKAGES chromium chromium-driver python3-selenium"
fi

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
    *"ok installed"*) ;;
    *) missing="$missing $p" ;;
    esac
done

[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps: need root to install:$missing" >&2
    echo "deps: run as root: apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
