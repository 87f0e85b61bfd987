#!/usr/bin/env bash
# Installs ringlab's Debian 12 build, test and benchmark dependencies.
# Idempotent and quiet when everything is present; needs root (or sudo) only
# when something is missing.
set -euo pipefail

packages=(
  # build
  cmake g++ make pkg-config
  # core libraries
  liburing-dev libgtest-dev libgmock-dev libbenchmark-dev libabsl-dev
  # peers measured beside us, plots, runner
  sockperf gnuplot-nox python3
  # libFuzzer targets
  clang libclang-rt-14-dev
  # network namespaces for the multihost suite; nftables input-hook drops
  # inside a test's own namespace (netem is missing on the target kernel)
  iproute2 nftables
  # interop peers, each started by its own test on a free loopback port:
  # MQTT (broker + clients), Cyclone DDS (ddsperf, idlc, C library), ENet
  mosquitto mosquitto-clients cyclonedds-tools cyclonedds-dev libenet-dev
  # TLS and key derivation for the MQTT broker; SQLite if it is the store
  libssl-dev libsqlite3-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "ringlab: installing ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
