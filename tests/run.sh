#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine of this
# kind (system tools through apt-get when missing, the package with its test
# extra) and runs the whole suite. The README's test command; .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in ip:iproute2 ping:iputils-ping curl:curl socat:socat radvd:radvd ndisc6:ndisc6 tcpdump:tcpdump dnsmasq:dnsmasq-base; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
exec python3 -m pytest "$@"
