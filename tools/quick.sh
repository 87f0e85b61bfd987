#!/usr/bin/env bash
# The README's main job: install what is missing, build the release preset,
# run the `quick` experiment suite (ringlab presets, sockperf and the floors;
# DDS, MQTT and reliable-UDP rows beside ddsperf, mosquitto and ENet)
# and print the report's path as the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake --preset release >/dev/null
# Every program the quick suite runs, so a stale binary is never measured
# (the runner itself only builds programs that are missing).
cmake --build --preset release -j2 --target ringlab_pingpong \
  ringlab_floor_pingpong ringlab_rudp_bench ringlab_enet_bench \
  ringlab_mqtt_broker ringlab_mqtt_bench ringlab_dds_pingpong >/dev/null
exec python3 experiments/run.py quick "$@"
