// The pong role of Cyclone's ddsperf, reimplemented from DDSPERF.md so that
// the description is checked against the real `ddsperf ping`
// (ringlab_cyclone_peer --mode=ddsperf-pong).
#ifndef RINGLAB_RTPS_INTEROP_DDSPERF_PONG_H_
#define RINGLAB_RTPS_INTEROP_DDSPERF_PONG_H_

#include <stdbool.h>

#include "dds/dds.h"

struct ddsperf_pong_options {
  dds_domainid_t domain;
  bool reliable;   // topics DDSPerfR*KS, else DDSPerfU*KS
  bool user_data;  // announce the "DDSPerf:0:PID:HOST" USER_DATA
  double duration_s;
};

// Answers pings until the duration ends. Prints PONG lines; returns an exit
// code (0, or 2 when a DDS call fails).
int ddsperf_pong_run(const struct ddsperf_pong_options* options);

#endif  // RINGLAB_RTPS_INTEROP_DDSPERF_PONG_H_
