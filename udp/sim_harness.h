// Test harness: rudp Hosts on a SimNetwork with a virtual clock.
//
//   SimHarness sim(/*seed=*/7);
//   Host& a = sim.AddHost(Endpoint::Loopback(1), options);
//   Host& b = sim.AddHost(Endpoint::Loopback(2), options);
//   sim.SetLink(a_ep, b_ep, lossy);                 // both directions
//   sim.on_event = [&](Host& h, const Event& e) { ... };  // every event
//   ASSERT_TRUE(sim.RunUntil([&] { return done; }, std::chrono::seconds(60)));
//
// Each step delivers what the network has due, runs due timers, flushes
// every host's output into the network and hands every event to on_event
// (which may call Send/Close). Time jumps to the next deadline of the
// network or any host. RunUntil() fails (returns false and says why in
// failure()) at the time limit, when everything is idle, or on a livelock
// (a host that keeps reporting a deadline it does not consume).
//
// Test-only: it allocates freely. Not thread-safe.
#ifndef RINGLAB_UDP_SIM_HARNESS_H_
#define RINGLAB_UDP_SIM_HARNESS_H_

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "transport/sim_network.h"
#include "udp/host.h"

namespace ringlab::rudp::testing {

class SimHarness {
 public:
  explicit SimHarness(uint64_t seed) {
    transport::SimNetwork::Options options;
    options.seed = seed;
    net_ = std::make_unique<transport::SimNetwork>(options);
  }

  Host& AddHost(const Endpoint& address, HostOptions options) {
    if (!net_->AddNode(address).ok()) std::abort();
    auto host = Host::Create(options);
    if (!host.ok()) {
      failure_ = std::string(host.status().message());
      std::abort();
    }
    nodes_.push_back({address, std::move(*host)});
    return *nodes_.back().host;
  }

  // The same impairment on both directions between a and b.
  void SetLink(const Endpoint& a, const Endpoint& b,
               const transport::SimImpairment& impairment) {
    if (!net_->SetLinkImpairment(a, b, impairment).ok() ||
        !net_->SetLinkImpairment(b, a, impairment).ok()) {
      std::abort();
    }
  }

  transport::SimNetwork& net() { return *net_; }
  Timestamp now() const { return net_->now(); }
  const std::string& failure() const { return failure_; }
  Endpoint AddressOf(const Host& host) const {
    for (const Node& n : nodes_) {
      if (n.host.get() == &host) return n.address;
    }
    return Endpoint();
  }

  std::function<void(Host&, const Event&)> on_event;
  // Sees (and may rewrite or drop, by clearing) every datagram a host sends
  // before it enters the network.
  std::function<void(const Endpoint& from, const Endpoint& to,
                     std::vector<std::byte>& bytes)>
      on_send;
  // A host for which this returns true does not get its events polled: a
  // stalled reader (its receive window fills).
  std::function<bool(const Host&)> paused;

  // One step: see the header comment. Returns false when nothing at all is
  // scheduled any more.
  bool Step(Timestamp limit) {
    Flush();
    Timestamp next = net_->NextDeadline();
    for (Node& n : nodes_) next = std::min(next, n.host->NextDeadline());
    if (next.is_never()) return false;
    if (next > limit) next = limit;
    if (next < net_->now()) next = net_->now();
    if (next == last_step_time_) {
      if (++same_time_steps_ > 100000) {
        failure_ = absl::StrCat("livelock at t=", next.nanos(), " ns");
        return false;
      }
    } else {
      same_time_steps_ = 0;
      last_step_time_ = next;
    }
    if (!net_->AdvanceTo(next).ok()) std::abort();
    for (Node& n : nodes_) {
      while (auto d = net_->PollDatagram(n.address)) {
        n.host->OnDatagram(d->bytes, d->from, net_->now());
      }
    }
    for (Node& n : nodes_) {
      if (n.host->NextDeadline() <= net_->now()) n.host->OnTimeout(net_->now());
    }
    Flush();
    return true;
  }

  bool RunUntil(const std::function<bool()>& done, Duration limit) {
    const Timestamp end = net_->now() + limit;
    while (!done()) {
      if (net_->now() >= end) {
        failure_ = absl::StrCat(
            "time limit reached at t=", net_->now().nanos() / 1000000, " ms");
        return false;
      }
      if (!Step(end)) {
        if (failure_.empty()) failure_ = "everything went idle";
        return false;
      }
    }
    return true;
  }

  // Runs for `d` of virtual time regardless of any condition.
  void RunFor(Duration d) {
    const Timestamp end = net_->now() + d;
    while (net_->now() < end && Step(end)) {
    }
  }

  // Sends pending output and hands out pending events until both are quiet.
  void Flush() {
    for (int round = 0; round < 1000; ++round) {
      bool any = false;
      for (Node& n : nodes_) {
        while (auto t = n.host->PollTransmit(buffer_, net_->now())) {
          any = true;
          std::vector<std::byte> bytes(buffer_.begin(),
                                       buffer_.begin() + ptrdiff_t(t->size));
          if (on_send) on_send(n.address, t->destination, bytes);
          if (bytes.empty()) continue;
          if (!net_->SendDatagram(n.address, t->destination, bytes).ok()) {
            std::abort();
          }
        }
        if (paused && paused(*n.host)) continue;
        Event e;
        while (n.host->PollEvent(&e)) {
          any = true;
          if (on_event) on_event(*n.host, e);
        }
      }
      if (!any) return;
    }
  }

 private:
  struct Node {
    Endpoint address;
    std::unique_ptr<Host> host;
  };
  std::unique_ptr<transport::SimNetwork> net_;
  std::vector<Node> nodes_;
  std::array<std::byte, 65536> buffer_{};
  std::string failure_;
  Timestamp last_step_time_ = Timestamp::Never();
  int same_time_steps_ = 0;
};

// Deterministic message content: byte i of message n, so the receiver can
// check every byte without keeping a copy.
inline std::byte PatternByte(uint64_t message, size_t i) {
  uint64_t x = message * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return std::byte(x);
}

// A message of `size` bytes whose first 8 bytes carry `n` (when it fits).
inline std::vector<std::byte> PatternMessage(uint64_t n, size_t size) {
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) out[i] = PatternByte(n, i);
  for (size_t i = 0; i < 8 && i < size; ++i) out[i] = std::byte(n >> (8 * i));
  return out;
}

// Checks a received message against PatternMessage; returns its number or
// UINT64_MAX when the content is wrong.
inline uint64_t CheckPatternMessage(const MessageView& view,
                                    size_t expected_size_if_known = 0) {
  std::vector<std::byte> bytes(view.size());
  view.CopyTo(bytes);
  if (bytes.size() < 8) return UINT64_MAX;
  uint64_t n = 0;
  for (size_t i = 0; i < 8; ++i) n |= uint64_t(bytes[i]) << (8 * i);
  if (expected_size_if_known != 0 && bytes.size() != expected_size_if_known) {
    return UINT64_MAX;
  }
  for (size_t i = 8; i < bytes.size(); ++i) {
    if (bytes[i] != PatternByte(n, i)) return UINT64_MAX;
  }
  return n;
}

}  // namespace ringlab::rudp::testing

#endif  // RINGLAB_UDP_SIM_HARNESS_H_
