// Starting ringlab_cyclone_peer (cyclone_peer.c) from a test, and reading
// what it printed.
//
// The peer is a real Cyclone DDS participant on the loopback-only
// configuration. An RTPS interop test starts one, runs our participant
// beside it in the same domain, and checks the peer's lines:
//
//   const int domain = testkit::PickDomainId();
//   auto sub = testkit::StartCyclonePeer({.mode = "sub", .topic = "t1",
//                                         .reliable = true, .count = 10,
//                                         .domain_id = domain});
//   RINGLAB_SKIP_IF_MISSING(sub.status());
//   ASSERT_TRUE(sub.ok()) << sub.status();   // it printed READY
//   ... our writer publishes 10 KeyedSamples on "t1" ...
//   ASSERT_TRUE((*sub)->Wait(absl::Seconds(20)).ok());
//   std::vector<testkit::KeyedRecv> got = testkit::ReceivedSamples(**sub);
//
// Wire types (ringlab_interop.idl, @final, so XCDR1 little-endian from
// Cyclone 0.10): "ringlab::interop::KeyedSample" { @key int32 id; uint64
// seq; sequence<octet> payload; string text } with payload byte i ==
// (seq + i) & 0xff, and "ringlab::interop::Message" { string text;
// sequence<octet> data }. Pub writes id = seq % keys and text
// "ringlab seq=S"; pingpong-echo writes each sample back unchanged on
// `echo_topic` (default "<topic>_echo"); ping writes on `topic` and waits for
// the same seq on `echo_topic`, after warm-up pings (id -1, seq >= 1e9)
// until one comes back: a best-effort reader drops samples of a writer it
// has not discovered yet, even when that writer already matched it, so the
// first samples of a best-effort pub may be lost too. "ddsperf-pong" answers
// `ddsperf ping` the way DDSPERF.md says a partner must (topics
// DDSPerf{R|U}{Ping|Pong}KS, USER_DATA, per-GUID partitions, echoed
// timestamps); --reliable picks the R topics.
//
// QoS: --history applies to both HISTORY and, with --transient-local, the
// DURABILITY_SERVICE history, because Cyclone serves transient-local late
// joiners from the latter (default keep-last 1 per instance). A reader with
// the default keep-last 1 keeps only the newest sample per key: tests that
// count samples use history = 0 (keep-all). A take returns samples grouped
// by instance, so RECV lines are in order per key, not across keys.
//
// Errors: the program missing (Cyclone not installed, so not built) is a
// missing-peer NotFound; a peer that exits before READY is
// FailedPrecondition with its output. Threading: none.
#ifndef RINGLAB_RTPS_INTEROP_CYCLONE_PEER_H_
#define RINGLAB_RTPS_INTEROP_CYCLONE_PEER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "testing/process.h"

namespace ringlab::testkit {

struct CyclonePeerOptions {
  // "pub" | "sub" | "pingpong-echo" | "ping" | "discover" | "ddsperf-pong"
  std::string mode{};
  std::string topic = "ringlab_interop";
  std::string echo_topic{};    // empty: "<topic>_echo"
  std::string type = "keyed";  // or "message"
  bool reliable = false;
  bool transient_local = false;
  int history = 1;  // keep-last N; 0 = keep-all
  std::string partition{};
  int count = -1;  // -1: the program's default (10 for pub/ping, 0 for sub)
  int keys = 1;
  int size_bytes = 16;
  int wait_match = 1;           // pub/ping: readers to wait for before writing
  int expect_participants = 0;  // discover: exit once this many are seen
  double interval_ms = 0;
  double deadline_ms = 0;  // DEADLINE QoS; 0 = infinite
  double duration_s = 20;  // hard bound on the program's run
  double linger_s = 0.5;
  int domain_id = 0;
  bool multicast = true;     // false: unicast SPDP to 127.0.0.1 only
  std::string trace_file{};  // Cyclone's trace of everything it sent/received
  std::vector<std::string> extra_args{};
  std::string output_dir{};
};

// The program's path, as built by this tree ("" when it was not built).
std::string CyclonePeerBinary();
// The command line StartCyclonePeer runs (argv[0] is the binary).
std::vector<std::string> CyclonePeerArgs(const CyclonePeerOptions& options);
// Starts the peer and waits (up to `ready_timeout`) for its READY line.
absl::StatusOr<std::unique_ptr<Process>> StartCyclonePeer(
    const CyclonePeerOptions& options,
    absl::Duration ready_timeout = absl::Seconds(10));

// One output line split into its keyword ("RECV", "MATCHED", ...), an
// optional second word ("participant", "writer"), and key=value fields.
struct PeerLine {
  std::string kind{};
  std::string what{};
  std::map<std::string, std::string> fields{};
};
std::optional<PeerLine> ParsePeerLine(absl::string_view line);

struct KeyedRecv {
  int32_t id = 0;
  uint64_t seq = 0;
  uint32_t size_bytes = 0;
  bool valid = false;
  std::string text{};
};
// Every RECV line of a KeyedSample peer, in arrival order.
std::vector<KeyedRecv> ReceivedSamples(const Process& peer);
// The GUID on the READY line ("" before it).
std::string PeerParticipantGuid(const Process& peer);
// The GUIDs of DISCOVERED participant lines with self=0.
std::vector<std::string> DiscoveredParticipants(const Process& peer);

}  // namespace ringlab::testkit

#endif  // RINGLAB_RTPS_INTEROP_CYCLONE_PEER_H_
