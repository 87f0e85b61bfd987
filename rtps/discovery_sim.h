// Test/benchmark-only: N participants start at once on a SimNetwork (virtual
// clock) and run until every one knows every other and has matched all of
// their endpoints; reports the discovery traffic and the time each took.
// Used by gossip_sim_test.cc and by ringlab_rtps_discovery_experiment (the
// SPDP-vs-gossip table of issue 11; see rtps/GOSSIP.md).
//
//   DiscoveryRun run;
//   run.participants = 100;
//   run.mode = DiscoveryMode::kGossip;
//   run.loss = 0.05;
//   DiscoveryResult r = RunDiscovery(run);
//   if (r.complete) printf("%lld\n", r.full_ns_max);
//
// Every participant has one best-effort writer and one best-effort reader
// (so no user-data heartbeats are counted) on the
// same topic, so "full knowledge" is: N-1 remote participants, and N-1
// matches on each endpoint. Gossip participants know one seed (node 0) and
// announce SPDP (for non-ringlab peers) only after `gossip_spdp_delay_ns`.
// Not installed; single-threaded; deterministic for a given seed.
#ifndef RINGLAB_RTPS_DISCOVERY_SIM_H_
#define RINGLAB_RTPS_DISCOVERY_SIM_H_

#include <cstdint>
#include <vector>

#include "rtps/participant.h"

namespace ringlab::rtps {

struct DiscoveryRun {
  int participants = 10;
  DiscoveryMode mode = DiscoveryMode::kSpdp;
  double loss = 0.0;  // independent loss on every link, both ways
  uint64_t seed = 1;
  int64_t limit_ns = 120'000'000'000;  // virtual time before giving up
  int64_t link_delay_ns = 100'000;
  int64_t gossip_period_ns = 100'000'000;
  int64_t gossip_spdp_delay_ns = 30'000'000'000;
};

struct DiscoveryResult {
  bool complete = false;
  int complete_count = 0;  // participants with full knowledge at the end
  // Time from start to full knowledge, over the participants that got it.
  int64_t full_ns_p50 = -1, full_ns_max = -1;
  // Until the last participant had full knowledge (or the limit), divided
  // by the number of participants. Received counts each multicast copy.
  double datagrams_sent_per_participant = 0;
  double bytes_sent_per_participant = 0;
  double datagrams_received_per_participant = 0;
  double bytes_received_per_participant = 0;
  uint64_t prefix_collisions = 0;
};

DiscoveryResult RunDiscovery(const DiscoveryRun& run);

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_DISCOVERY_SIM_H_
