// Starting the real peers ringlab is tested against: mosquitto, Cyclone DDS
// (its loopback-only configuration) and ddsperf.
//
//   // A private mosquitto on a free loopback port; stopped with `broker`.
//   auto broker = testkit::StartMosquitto();
//   RINGLAB_SKIP_IF_MISSING(broker.status());
//   ASSERT_TRUE(broker.ok()) << broker.status();
//   Connect(..., (*broker)->port());
//
//   // ddsperf pong in a domain no other test uses, loopback only.
//   const int domain = testkit::PickDomainId();
//   auto pong = testkit::StartDdsperf({.args = {"pong"}, .domain_id = domain});
//
//   // Any Cyclone-based program: pass the loopback config in the env.
//   options.env.push_back({"CYCLONEDDS_URI",
//   testkit::CycloneLoopbackConfig()});
//
// Never the system's mosquitto service or its config: every broker gets its
// own config file in its own temp dir. Cyclone's default configuration sends
// SPDP multicast out of every interface; CycloneLoopbackConfig() restricts it
// to `lo` and forces multicast on there (Linux's `lo` lacks the MULTICAST
// flag, so Cyclone would otherwise not use multicast on it).
//
// Errors: a missing binary is a missing-peer NotFound (tests skip); a peer
// that exits or does not become ready in time is FailedPrecondition or
// DeadlineExceeded with its output tail.
#ifndef RINGLAB_TESTING_PEERS_H_
#define RINGLAB_TESTING_PEERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "testing/process.h"

namespace ringlab::testkit {

// ---------------------------------------------------------------- mosquitto

struct MosquittoOptions {
  // Appended verbatim to the generated config (e.g. "max_inflight_messages 1").
  std::vector<std::string> extra_config_lines{};
  absl::Duration ready_timeout = absl::Seconds(10);
};

// The config StartMosquitto writes: a listener on 127.0.0.1:`port` only,
// anonymous clients, TCP_NODELAY on accepted sockets (mosquitto's default is
// Nagle on), no persistence file, logging to stderr.
std::string MosquittoConfig(uint16_t port,
                            const std::vector<std::string>& extra_lines = {});

class MosquittoBroker {
 public:
  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  const std::string& config_path() const { return config_path_; }
  const std::string& dir() const { return dir_.path(); }
  Process& process() { return *process_; }

 private:
  friend absl::StatusOr<std::unique_ptr<MosquittoBroker>> StartMosquitto(
      const MosquittoOptions& options);
  explicit MosquittoBroker(TempDir dir) : dir_(std::move(dir)) {}
  TempDir dir_;  // destroyed after process_ (declared first)
  std::unique_ptr<Process> process_;
  uint16_t port_ = 0;
  std::string config_path_;
};

// Starts `mosquitto -c <generated config>` and waits until it listens. A port
// taken between picking and binding is retried with a fresh port.
absl::StatusOr<std::unique_ptr<MosquittoBroker>> StartMosquitto(
    const MosquittoOptions& options = {});

// ---------------------------------------------------------------- Cyclone DDS

struct CycloneConfigOptions {
  // true: SPDP over multicast on `lo` (239.255.0.1, forced on). false: no
  // multicast at all; participants find each other by unicast SPDP to
  // 127.0.0.1 (ParticipantIndex auto), which is what a peer without
  // multicast support needs.
  bool multicast = true;
  // Non-empty: Cyclone's full trace ("trace" category) goes to this file.
  std::string trace_file{};
  // Extra XML inserted inside <Domain> (e.g. "<Internal>...</Internal>").
  std::string extra_domain_xml{};
};

// A CYCLONEDDS_URI value (inline XML, for any domain id) that keeps all DDS
// traffic, discovery included, on 127.0.0.1.
std::string CycloneLoopbackConfig(const CycloneConfigOptions& options = {});

// A domain id in [1, 200] derived from the pid and the clock, so tests that
// run in parallel rarely share a domain (and so never see each other's
// participants). Domain 0, the default, is left to manual runs.
int PickDomainId();

// ------------------------------------------------------------------ ddsperf

struct DdsperfOptions {
  // ddsperf's own arguments, e.g. {"pong"} or {"-Qminmatch:1", "ping",
  // "100Hz", "size", "64"}. `-i DOMAIN` is prepended when domain_id >= 0.
  std::vector<std::string> args{};
  int domain_id = -1;
  // Empty: CycloneLoopbackConfig().
  std::string cyclone_config{};
  // Where its output files go; empty: the Process's own temp dir.
  std::string output_dir{};
};

// Starts ddsperf in the background (e.g. `pong`), with the loopback config.
absl::StatusOr<std::unique_ptr<Process>> StartDdsperf(DdsperfOptions options);
// Runs ddsperf to completion (give it `-D SECONDS`), stopped at `timeout`.
absl::StatusOr<ProcessResult> RunDdsperf(DdsperfOptions options,
                                         absl::Duration timeout);

}  // namespace ringlab::testkit

#endif  // RINGLAB_TESTING_PEERS_H_
