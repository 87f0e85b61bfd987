// SimNetwork: an in-memory network with a virtual clock and seeded
// impairments, for testing sans-io protocol cores deterministically.
//
// Nodes are addressed by `Endpoint`. They exchange datagrams (unicast, or
// multicast to a group endpoint that nodes joined) and reliable in-order byte
// streams (TCP-like: connect, write, read, FIN, reset). Every directed link
// (from -> to) has an impairment model: Bernoulli loss, Gilbert-Elliott burst
// loss, delay + uniform jitter, reordering, duplication, one-bit corruption, a
// rate limit and a tail-drop queue limit. All randomness comes from a small
// built-in PRNG (xoshiro256** seeded by splitmix64), so one seed gives the
// same run on every platform and compiler.
//
// Nothing here reads a real clock. Time moves only when the caller advances
// it, which makes the usual harness loop:
//
//   SimNetwork::Options options;
//   options.seed = 42;
//   SimNetwork net(options);
//   Endpoint a = Endpoint::Loopback(1000), b = Endpoint::Loopback(2000);
//   if (absl::Status s = net.AddNode(a); !s.ok()) return s;
//   if (absl::Status s = net.AddNode(b); !s.ok()) return s;
//   SimImpairment lossy;
//   lossy.loss_probability = 0.1;
//   lossy.delay = std::chrono::milliseconds(5);
//   if (absl::Status s = net.SetLinkImpairment(a, b, lossy); !s.ok()) return s;
//
//   while (!done) {
//     Timestamp next = std::min({net.NextDeadline(), core_a.NextDeadline(),
//                                core_b.NextDeadline()});
//     if (next.is_never()) break;          // everyone idle
//     (void)net.AdvanceTo(next);           // delivers everything due by then
//     while (std::optional<SimDatagram> d = net.PollDatagram(b)) {
//       core_b.OnDatagram(d->bytes, d->from, net.now());
//     }
//     ... core_a.OnTimeout(net.now()); forward core_a.PollTransmit() with
//         net.SendDatagram(a, to, bytes) ...
//   }
//
// Stream flow control (for slow readers and backpressure on the virtual
// clock) is off by default. With Options::stream_receive_window_bytes a
// reader that does not read holds its peer to that many unread bytes; the
// rest waits in the sender's send buffer (StreamPendingBytes). With
// Options::stream_send_buffer_bytes that buffer is bounded too: StreamWrite()
// refuses a write that does not fit (ResourceExhausted, nothing written),
// StreamWriteSome() takes what fits, and a kWritable event follows once half
// of the buffer is free:
//
//   SimNetwork::Options options;
//   options.stream_receive_window_bytes = 64 * 1024;
//   options.stream_send_buffer_bytes = 256 * 1024;
//   ...
//   absl::StatusOr<size_t> n = net.StreamWriteSome(stream, bytes);
//   if (n.ok() && *n < bytes.size()) { /* keep the rest; wait kWritable */ }
//
// Memory and ownership: the simulator is a test tool, not a hot path. A sent
// datagram or stream write is copied into storage the network owns at send
// time, so the caller's span may be reused at once; a polled `SimDatagram`
// owns its bytes. Queues are unbounded unless a queue limit is configured.
//
// Errors: setup and control calls return absl::Status. Invalid configuration
// (a probability outside [0, 1] or NaN, a negative delay) is InvalidArgument
// and names the field; an unknown node or stream is NotFound. Bad input never
// crashes and never changes state. A datagram to an address that is neither a
// node nor a multicast group is counted as unroutable and dropped, like a real
// UDP send (the call still succeeds).
//
// Determinism: given the same seed and the same sequence of calls, the
// counters, the deliveries and the trace are identical. Events due at the same
// time are processed in the order they were scheduled. Each directed link has
// its own PRNG stream (derived from the seed and the nodes' insertion order),
// so traffic on one link does not change the randomness seen by another.
//
// Thread-safety: none; use one SimNetwork from one thread.
#ifndef RINGLAB_TRANSPORT_SIM_NETWORK_H_
#define RINGLAB_TRANSPORT_SIM_NETWORK_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/endpoint.h"
#include "transport/time.h"

namespace ringlab::transport {

// Deterministic PRNG: xoshiro256** seeded through splitmix64. Exposed so tests
// and harnesses can draw reproducible numbers the same way the network does.
class SimRandom {
 public:
  explicit SimRandom(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1) with 53 bits of precision.
  double NextDouble();
  // Uniform integer in [0, bound_inclusive]; exact (rejection sampling).
  uint64_t Uniform(uint64_t bound_inclusive);
  // True with probability `p`; consumes no draw when p <= 0 or p >= 1.
  bool Bernoulli(double p);

 private:
  uint64_t s_[4];
};

// Impairments of one directed link. The defaults are a perfect link: no loss,
// zero delay, unlimited rate and queue.
struct SimImpairment {
  // Independent loss per packet.
  double loss_probability = 0.0;

  // Gilbert-Elliott two-state burst loss. Before each packet the link's state
  // moves good->bad with `ge_good_to_bad` or bad->good with `ge_bad_to_good`,
  // then the packet is lost with the loss probability of the new state. The
  // mean burst length (with ge_loss_in_bad = 1, ge_loss_in_good = 0) is
  // 1 / ge_bad_to_good; the mean loss rate is
  // p_gb / (p_gb + p_bg) * loss_bad + p_bg / (p_gb + p_bg) * loss_good.
  bool gilbert_elliott = false;
  double ge_good_to_bad = 0.0;
  double ge_bad_to_good = 1.0;
  double ge_loss_in_good = 0.0;
  double ge_loss_in_bad = 1.0;

  // One-way delay: each copy takes `delay` plus a uniform draw from
  // [0, jitter] (inclusive). Like netem, jitter alone can reorder packets.
  Duration delay{0};
  Duration jitter{0};

  // With `reorder_probability`, a packet is held back an extra
  // `reorder_delay` (> 0 required) so later packets overtake it.
  double reorder_probability = 0.0;
  Duration reorder_delay{0};

  // With `duplicate_probability`, a surviving packet is delivered twice; the
  // copy gets its own delay, jitter, reordering and corruption draws.
  double duplicate_probability = 0.0;

  // With `corrupt_probability`, exactly one uniformly chosen bit of the copy
  // is flipped. Empty datagrams are never corrupted.
  double corrupt_probability = 0.0;

  // Serialization rate in bytes per second; 0 = unlimited. Packets on the
  // link leave one after another, each taking size / rate.
  uint64_t rate_bytes_per_sec = 0;

  // Packets the link may hold at once (queued for serialization or still
  // propagating); 0 = unlimited. A copy that finds the link full is
  // tail-dropped. Lost packets never enter the queue.
  uint32_t queue_limit_packets = 0;

  // OK, or InvalidArgument naming the offending field.
  absl::Status Validate() const;
};

// A delivered datagram. Owns its bytes.
struct SimDatagram {
  Endpoint from;
  Endpoint to;  // the address it was sent to: the node, or the group
  std::vector<std::byte> bytes;
  Timestamp sent_at;
  Timestamp delivered_at;  // the scheduled arrival time, <= now()
};

// Every counter the network keeps. Datagram counters are per link traversal:
// a multicast to three members counts three in `datagrams_sent`. At any time
//   datagrams_sent + datagrams_duplicated ==
//       datagrams_delivered + dropped_loss + dropped_burst + dropped_queue +
//       datagrams_in_flight
struct SimCounters {
  uint64_t datagrams_sent = 0;
  uint64_t datagrams_delivered = 0;  // moved into a node's inbox
  uint64_t datagrams_in_flight = 0;
  uint64_t dropped_loss = 0;        // Bernoulli loss
  uint64_t dropped_burst = 0;       // Gilbert-Elliott loss
  uint64_t dropped_queue = 0;       // queue limit tail drop
  uint64_t dropped_unroutable = 0;  // no such node (not in datagrams_sent)
  uint64_t datagrams_duplicated = 0;
  uint64_t datagrams_corrupted = 0;
  uint64_t datagrams_reordered = 0;  // copies given the extra reorder delay
  uint64_t bytes_sent = 0;           // datagram payload bytes, per traversal
  uint64_t bytes_delivered = 0;
  uint64_t multicast_sends = 0;  // SendDatagram calls to a group address

  uint64_t streams_opened = 0;   // Connect calls accepted by a listener
  uint64_t streams_refused = 0;  // Connect to a port nobody listens on
  uint64_t streams_reset = 0;    // connections ended by a reset
  uint64_t stream_bytes_written = 0;
  uint64_t stream_bytes_delivered = 0;  // arrived in the peer's buffer
  uint64_t stream_fins = 0;             // FINs that reached the peer
  // Flow control only: writes refused or cut short by a full send buffer,
  // and times a sender had bytes to send but the peer's window was closed.
  uint64_t stream_writes_refused = 0;
  uint64_t stream_window_stalls = 0;
};

// One record of the optional event trace. Nodes are given by index (their
// order of AddNode, see NodeEndpoint()). `bytes_hash` is FNV-1a 64 of the
// bytes involved (0 for events without bytes).
struct SimTraceEvent {
  // In `from`/`to` when there is no node: an unroutable destination, or the
  // server of a connection to an address without a node.
  static constexpr uint32_t kNoNode = 0xffffffffu;
  enum class Kind : uint8_t {
    kSend,           // datagram accepted on a link (before impairments)
    kDropLoss,       // Bernoulli loss
    kDropBurst,      // Gilbert-Elliott loss
    kDropQueue,      // tail drop
    kDuplicate,      // an extra copy was made
    kCorrupt,        // a copy had a bit flipped
    kReorder,        // a copy was held back
    kDeliver,        // a copy reached its node's inbox
    kUnroutable,     // no node at the destination address
    kStreamOpen,     // connection reached the listener (from=client)
    kStreamRefused,  // connection refused (from=server, to=client)
    kStreamData,     // stream bytes reached the peer
    kStreamFin,      // FIN reached the peer
    kStreamReset,    // reset took effect at `to`
  };
  int64_t time_ns = 0;
  Kind kind = Kind::kSend;
  uint32_t from = 0;
  uint32_t to = 0;
  uint32_t size_bytes = 0;
  uint64_t bytes_hash = 0;

  friend bool operator==(const SimTraceEvent&, const SimTraceEvent&) = default;
  std::string ToString() const;
};

// Identifies one end of a stream connection. 0 is never a valid id.
using SimStreamId = uint64_t;

// Stream notifications, polled per node.
struct SimStreamEvent {
  enum class Kind : uint8_t {
    kIncoming,   // a new connection at a listener; `stream` is the server end
    kConnected,  // the client end is established and may send
    kReadable,   // new bytes arrived
    kFin,        // the peer closed its direction; reads end after the data
    kReset,      // the connection was reset; reads and writes now fail
    kRefused,    // nobody listened at the server address (client end)
    // Flow control only: a write on this end was refused or cut short
    // because its send buffer was full, and at least half of it is free
    // again.
    kWritable,
  };
  Kind kind;
  SimStreamId stream;
  Endpoint peer;
};

struct SimStreamReadResult {
  size_t bytes = 0;
  // True once the peer's FIN arrived and every byte before it was read.
  bool eof = false;
};

class SimNetwork {
 public:
  struct Options {
    uint64_t seed = 1;
    // Record a SimTraceEvent per event (see trace()).
    bool trace = false;
    // Whether a node that joined a group receives its own multicast sends.
    bool multicast_loopback = false;
    // With a rate limit, streams are carved into segments of this size so
    // bytes arrive progressively. Must be > 0.
    uint32_t stream_segment_bytes = 1460;
    // Stream flow control, off by default (0 = unlimited: every write is
    // accepted and sent at once, the behaviour of earlier versions).
    // Receive window: the most bytes a stream end lets its peer send that it
    // has not read yet. The peer learns of reads one link delay later (a
    // window update travels back like an ACK); until then the bytes wait in
    // the sender's send buffer.
    uint32_t stream_receive_window_bytes = 0;
    // Send buffer: the most bytes a stream end holds written but not yet
    // sent (the window was closed). A StreamWrite() that does not fit is
    // refused with ResourceExhausted and writes nothing; StreamWriteSome()
    // writes what fits. Either way the end gets a kWritable event once half
    // of the buffer is free again. 0 = unlimited.
    uint32_t stream_send_buffer_bytes = 0;
    // Impairments of every link without its own override.
    SimImpairment default_impairment;
  };

  // Construction never fails: invalid `options` are reported by status(),
  // and every later setup call (AddNode, Listen, ...) returns that status.
  explicit SimNetwork(Options options);
  SimNetwork() : SimNetwork(Options{}) {}
  SimNetwork(const SimNetwork&) = delete;
  SimNetwork& operator=(const SimNetwork&) = delete;

  // OK unless the constructor's options were invalid.
  const absl::Status& status() const { return options_status_; }

  // ---- Topology and configuration ------------------------------------------
  // InvalidArgument for an invalid or multicast endpoint; AlreadyExists for a
  // duplicate.
  absl::Status AddNode(const Endpoint& node);
  bool HasNode(const Endpoint& node) const;
  size_t node_count() const { return nodes_.size(); }
  // The endpoint of node `index` (trace events use indices); invalid if out
  // of range.
  Endpoint NodeEndpoint(uint32_t index) const;

  // `group` must be a multicast address; `node` a known node. Joining twice is
  // OK (no duplicate deliveries). Leaving a group not joined is NotFound.
  absl::Status JoinGroup(const Endpoint& node, const Endpoint& group);
  absl::Status LeaveGroup(const Endpoint& node, const Endpoint& group);

  // Replaces the default of links without an override. Gilbert-Elliott state
  // of existing links is kept.
  absl::Status SetDefaultImpairment(const SimImpairment& impairment);
  // Overrides one directed link; both ends must be nodes. Resets that link's
  // Gilbert-Elliott state to good.
  absl::Status SetLinkImpairment(const Endpoint& from, const Endpoint& to,
                                 const SimImpairment& impairment);
  absl::Status ClearLinkImpairment(const Endpoint& from, const Endpoint& to);
  // The impairment in effect for a link (the default when not overridden).
  SimImpairment LinkImpairment(const Endpoint& from, const Endpoint& to) const;

  // ---- Clock ---------------------------------------------------------------
  Timestamp now() const { return now_; }
  // Earliest pending event, or Timestamp::Never() when nothing is in flight.
  Timestamp NextDeadline() const;
  // Processes every event due at or before `t`, in time order, then sets
  // now() = t. InvalidArgument if `t` < now() or `t` is Never().
  absl::Status AdvanceTo(Timestamp t);
  absl::Status AdvanceBy(Duration d) { return AdvanceTo(now_ + d); }
  // Advances to NextDeadline() and processes it. False when idle.
  bool Step();
  // Steps until idle or `max_events` events ran; returns events processed.
  size_t RunUntilIdle(size_t max_events = 100'000'000);

  // ---- Datagrams -----------------------------------------------------------
  // Sends a copy of `bytes` from node `from` to a node or a multicast group.
  // NotFound if `from` is not a node; InvalidArgument if `to` is invalid.
  // Loss, queue drops and unknown destinations are not errors (counted).
  absl::Status SendDatagram(const Endpoint& from, const Endpoint& to,
                            std::span<const std::byte> bytes);
  // Oldest datagram delivered to `node`, or nullopt (also for unknown nodes).
  std::optional<SimDatagram> PollDatagram(const Endpoint& node);
  // Datagrams waiting in `node`'s inbox.
  size_t PendingDatagrams(const Endpoint& node) const;

  // ---- Streams -------------------------------------------------------------
  // Streams use the link's `delay` and `rate_bytes_per_sec` only: like TCP
  // they hide loss, duplication, corruption and reordering, and jitter and
  // queue limits do not apply. Connection setup takes one round trip: the
  // listener sees kIncoming after one delay, the client kConnected after two.
  // A client may write at once; its bytes leave when it is established.

  // `server` must be a node. AlreadyExists if already listening.
  absl::Status Listen(const Endpoint& server);
  absl::Status StopListening(const Endpoint& server);
  // Opens a connection from node `client` to `server`. Returns the client
  // end. A server nobody listens on gives kRefused after one round trip.
  absl::StatusOr<SimStreamId> Connect(const Endpoint& client,
                                      const Endpoint& server);
  // Next stream notification for `node`, or nullopt.
  std::optional<SimStreamEvent> PollStreamEvent(const Endpoint& node);
  // Queues a copy of `bytes`; without a send buffer limit all of them are
  // accepted. With Options::stream_send_buffer_bytes, a write that does not
  // fit is refused with ResourceExhausted (nothing is written; a kWritable
  // event follows when room opens). FailedPrecondition after Close() or a
  // reset, NotFound for an unknown id.
  absl::Status StreamWrite(SimStreamId stream,
                           std::span<const std::byte> bytes);
  // Like StreamWrite(), but writes as much as fits and returns how many
  // bytes it took (fewer than bytes.size(), possibly 0, when the send buffer
  // is full; a kWritable event follows then).
  absl::StatusOr<size_t> StreamWriteSome(SimStreamId stream,
                                         std::span<const std::byte> bytes);
  // Flow control: bytes written on this end and not yet sent (waiting for
  // the peer's window), and bytes a write could take now (SIZE_MAX when the
  // send buffer is unlimited). 0 for unknown or reset streams.
  size_t StreamPendingBytes(SimStreamId stream) const;
  size_t StreamWritableBytes(SimStreamId stream) const;
  // Copies up to out.size() received bytes. Aborted after a reset (unread
  // bytes are discarded, as TCP does); NotFound for an unknown id.
  absl::StatusOr<SimStreamReadResult> StreamRead(SimStreamId stream,
                                                 std::span<std::byte> out);
  // Bytes received and not yet read.
  size_t StreamReadable(SimStreamId stream) const;
  // Half-close: a FIN follows the queued bytes. Idempotent.
  absl::Status StreamClose(SimStreamId stream);
  // Application abort (RST): this end is reset now, the peer one delay later
  // (after bytes already sent ahead of it).
  absl::Status StreamAbort(SimStreamId stream);
  // A reset injected by the network (a middlebox or cut): both ends are reset
  // now and every byte in flight is discarded.
  absl::Status InjectStreamReset(SimStreamId stream);

  // ---- Observation ---------------------------------------------------------
  const SimCounters& counters() const { return counters_; }
  const std::vector<SimTraceEvent>& trace() const { return trace_; }
  // FNV-1a 64 over every trace record: one number to compare two runs.
  uint64_t TraceDigest() const;
  void ClearTrace() { trace_.clear(); }

 private:
  struct Node {
    Endpoint endpoint;
    std::deque<SimDatagram> inbox;
    std::deque<SimStreamEvent> stream_events;
    bool listening = false;
  };
  struct Link {
    explicit Link(uint64_t seed) : random(seed) {}
    SimImpairment impairment;  // used when `overridden`
    bool overridden = false;
    bool ge_bad = false;
    SimRandom random;
    Timestamp datagram_busy_until;  // rate limit: when the wire frees up
    Timestamp stream_busy_until;
    Timestamp stream_last_arrival;  // keeps stream arrivals in order
    uint32_t in_flight = 0;
  };
  enum class EventType : uint8_t {
    kDatagram,
    kStreamSyn,      // client -> server
    kStreamSynAck,   // server -> client: established
    kStreamRefused,  // -> client
    kStreamData,
    kStreamFin,
    kStreamRst,
    kStreamWindow,  // flow control: `credit` bytes were read at `from`
  };
  struct Event {
    Timestamp at;
    uint64_t sequence;  // FIFO among equal times
    EventType type;
    uint32_t from;
    uint32_t to;
    uint64_t connection;   // stream events
    uint32_t generation;   // stream events: stale after an injected reset
    uint8_t to_side;       // stream events: receiving end (0 client, 1 server)
    Endpoint destination;  // datagrams: the address sent to
    Timestamp sent_at;
    std::vector<std::byte> bytes;
    uint64_t credit = 0;  // kStreamWindow
  };
  struct StreamEnd {
    uint32_t node = 0;
    bool open = false;  // the server end opens when the SYN arrives
    bool established = false;
    bool write_closed = false;  // our FIN queued
    bool peer_fin = false;      // peer's FIN arrived
    bool reset = false;
    std::deque<std::byte> received;
    // Client bytes written before the handshake finished, and a FIN or
    // abort requested meanwhile; sent on kStreamSynAck.
    std::vector<std::byte> unsent;
    bool fin_pending = false;
    // Flow control (see Options): written and not yet sent, bytes sent that
    // the peer has not reported read, a FIN to send once `pending` drains,
    // and whether a refused write waits for kWritable.
    std::deque<std::byte> pending;
    uint64_t sent_unread = 0;
    bool fin_after_pending = false;
    bool writable_wanted = false;
  };
  struct Connection {
    StreamEnd end[2];  // 0: client, 1: server
    uint32_t generation = 0;
    Timestamp client_established_at = Timestamp::Never();
    bool refused = false;
  };

  static bool EventLater(const Event& a, const Event& b);
  std::optional<uint32_t> FindNode(const Endpoint& e) const;
  Link& GetLink(uint32_t from, uint32_t to);
  void Schedule(Event event);
  void Process(Event& event);
  void Record(SimTraceEvent::Kind kind, uint32_t from, uint32_t to,
              std::span<const std::byte> bytes);
  void SendCopy(uint32_t from, uint32_t to, const Endpoint& destination,
                std::span<const std::byte> bytes);
  // Splits a stream id into connection index and side; nullptr if unknown.
  Connection* FindStream(SimStreamId id, int* side);
  const Connection* FindStream(SimStreamId id, int* side) const;
  void ScheduleStream(uint64_t connection, int from_side, EventType type,
                      std::span<const std::byte> bytes);
  void ResetEnd(uint64_t connection, int side, uint32_t other_node);
  bool flow_control() const {
    return options_.stream_receive_window_bytes > 0 ||
           options_.stream_send_buffer_bytes > 0;
  }
  size_t SendBufferRoom(const StreamEnd& end) const;
  // Flow control: sends what the peer's window allows from `pending`, then
  // the FIN if one waits, then kWritable if one is owed.
  void Pump(uint64_t connection, int side);
  const SimImpairment& Effective(const Link& link) const {
    return link.overridden ? link.impairment : options_.default_impairment;
  }
  size_t ProcessDue(Timestamp t, size_t max_events);

  Options options_;
  absl::Status options_status_;
  Timestamp now_ = Timestamp::Zero();
  uint64_t next_sequence_ = 0;
  std::vector<Node> nodes_;
  absl::flat_hash_map<Endpoint, uint32_t> node_index_;
  // Members in join order; vectors keep fan-out order deterministic.
  absl::flat_hash_map<Endpoint, std::vector<uint32_t>> groups_;
  absl::flat_hash_map<uint64_t, Link> links_;
  std::vector<Event> events_;  // a min-heap by (at, sequence)
  std::vector<Connection> connections_;
  SimCounters counters_;
  std::vector<SimTraceEvent> trace_;
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_SIM_NETWORK_H_
