// The connection settings ringlab_rudp_bench uses on loopback/LAN, shared
// with the SimNetwork goodput model (udp/goodput_model.cc) so that the model
// predicts exactly what the benchmark configures.
//
//   ConnectionOptions c = internal::LanBenchProfile(/*congestion_control=*/
//                                                   true, /*pacing=*/true,
//                                                   /*nack=*/false);
//
// Plain function returning a value; no state.
#ifndef RINGLAB_UDP_INTERNAL_BENCH_PROFILE_H_
#define RINGLAB_UDP_INTERNAL_BENCH_PROFILE_H_

#include "udp/types.h"

namespace ringlab::rudp::internal {

inline ConnectionOptions LanBenchProfile(bool congestion_control, bool pacing,
                                         bool nack) {
  ConnectionOptions c;
  // A LAN/loopback profile: a short first RTT guess and fine timers.
  c.initial_rtt = std::chrono::milliseconds(10);
  c.max_ack_delay = std::chrono::milliseconds(1);
  // Loopback round trips are tens of µs: RFC 9002's 1 ms kGranularity
  // would make every time-threshold loss wait ~20 RTTs.
  c.timer_granularity = std::chrono::microseconds(200);
  c.congestion_control = congestion_control;
  c.pacing = pacing;
  c.nack_on_gap = nack;
  c.receive_window_bytes = 8 << 20;
  c.send_buffer_bytes = 8 << 20;
  c.max_send_fragments = 16384;
  c.max_packets_in_flight = 16384;
  c.idle_timeout = std::chrono::seconds(30);
  return c;
}

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_BENCH_PROFILE_H_
