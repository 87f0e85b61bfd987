// TlsStream: a TlsSession (mqtt/tls.h) on one TCP socket of a Loop, and the
// kernel TLS (kTLS) hand-over. The MQTT drivers use it on both sides: the
// broker's TLS listener (mqtt/tls_listener.h) and the client driver
// (ClientDriverOptions::tls).
//
//   TlsStream tls(loop, socket, std::move(session), {.ktls = true},
//                 &counters, scratch);
//   tls.Start();                                   // client: ClientHello
//   // OnData:
//   auto st = tls.OnReceived(std::move(lease), [&](std::span<const std::byte>
//                                                  plain) {
//                                                  core.OnBytes(plain); });
//   // output: StreamWriter::Begin(socket, &tls) encrypts each lease
//
// User space: received leases are copied into the session (and released at
// once, so a provided-ring buffer goes back to the kernel), plaintext is
// handed to `deliver` from a scratch buffer, and each plaintext lease the
// writer queues becomes ciphertext leases on the socket.
//
// kTLS (Options::ktls, and the kernel's `tls` ULP present): once the
// handshake is done, the keys and the next record sequence numbers go to
// setsockopt(SOL_TLS, TLS_TX / TLS_RX), and from then on the Loop sends and
// receives plaintext: io_uring's sends and receives carry application
// bytes, the kernel does the record layer. The hand-over points:
//  - TX: when all ciphertext produced so far has left the Loop's send queue
//    (nothing in the Loop may be encrypted twice). Until then records are
//    still encrypted here, and counted.
//  - RX: only inside OnReceived, when every byte read so far is decrypted
//    and ends on a record boundary, and only on presets with one receive
//    outstanding per socket (epoll, uring). With a multishot receive
//    (uring-fixed family) the kernel may already have copied more
//    ciphertext into ring buffers whose completions wait in the CQ, so RX
//    stays in user space there (counted in ktls_rx_multishot).
//  - A control record under kTLS RX (an alert, a TLS 1.3 KeyUpdate) makes
//    the receive fail with EIO; ClassifyReadError() reads it with
//    recvmsg(TLS_GET_RECORD_TYPE) and tells a close_notify (an orderly
//    end) from anything else.
// If the kernel lacks the ULP (CONFIG_TLS off: setsockopt(TCP_ULP, "tls")
// fails with ENOENT), the stream stays in user space and counts it.
//
// Ownership: borrows the Loop and the counters; owns the session. The
// scratch span (plaintext staging, at least 16 KiB) is shared by the owner's
// streams on one thread. Threading: the Loop's thread. Errors: OnReceived
// returns kFailed when TLS failed (the alert, if any, is already queued on
// the socket; close it); SendLease returns a negative errno.
#ifndef RINGLAB_MQTT_TLS_STREAM_H_
#define RINGLAB_MQTT_TLS_STREAM_H_

#include <cstdint>
#include <memory>
#include <span>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "mqtt/internal/stream_writer.h"
#include "mqtt/tls.h"
#include "transport/loop.h"

namespace ringlab::mqtt {

struct TlsCounters {
  uint64_t handshakes_started = 0;
  uint64_t handshakes_completed = 0;
  uint64_t failed_not_tls = 0;       // plaintext on the TLS port
  uint64_t failed_peer_alert = 0;    // e.g. the peer rejected our certificate
  uint64_t failed_verify = 0;        // the peer's certificate did not verify
  uint64_t failed_no_peer_cert = 0;  // a client certificate was required
  uint64_t failed_protocol = 0;
  uint64_t peer_close_notify = 0;
  uint64_t ktls_tx = 0;  // connections whose TX went to the kernel
  uint64_t ktls_rx = 0;
  uint64_t ktls_unavailable = 0;   // the kernel has no tls ULP
  uint64_t ktls_failed = 0;        // setsockopt refused the keys
  uint64_t ktls_rx_multishot = 0;  // RX kept in user space (see above)
  uint64_t ktls_rx_not_at_boundary = 0;
  uint64_t ktls_control_records = 0;  // non-data records under kTLS RX
  uint64_t plaintext_bytes_in = 0;
  uint64_t plaintext_bytes_out = 0;
  uint64_t ciphertext_bytes_in = 0;
  uint64_t ciphertext_bytes_out = 0;
  uint64_t pool_empty = 0;  // ciphertext waited for a pool buffer
  void Count(TlsFailure f);
  uint64_t failures() const {
    return failed_not_tls + failed_peer_alert + failed_verify +
           failed_no_peer_cert + failed_protocol;
  }
};

// OK when the kernel's TLS ULP can be attached to a TCP socket (probed once
// per process on a loopback pair); FailedPrecondition with the reason
// otherwise (e.g. "CONFIG_TLS is not set").
absl::Status ProbeKernelTls();

// Attaches the ULP (once per socket) and installs the keys of the requested
// directions. Errors carry the setsockopt errno.
absl::Status InstallKernelTls(int fd, const KtlsKeys& keys, bool tx, bool rx,
                              bool ulp_attached);

class TlsStream final : public internal::StreamSink {
 public:
  struct Options {
    bool ktls = false;
  };
  enum class Status : uint8_t { kOk, kFailed, kPeerClosed };

  static constexpr size_t kMinScratchBytes = 16 * 1024;

  TlsStream(transport::Loop* loop, transport::SocketId socket,
            std::unique_ptr<TlsSession> session, Options options,
            TlsCounters* counters, std::span<std::byte> scratch);

  // A client sends its ClientHello; a server waits. Negative errno if the
  // bytes could not be queued.
  int Start();
  // What arrived on the socket (ciphertext; plaintext once RX is in the
  // kernel). Plaintext for the application goes to `deliver`, in order.
  Status OnReceived(
      transport::BufferLease data,
      absl::FunctionRef<void(std::span<const std::byte>)> deliver);
  // A send on the socket completed: ciphertext waiting for a buffer goes
  // out, and a pending TX hand-over to the kernel happens once the Loop's
  // queue is empty.
  void OnSendComplete();
  // The Loop reported the read side closed with `result`: under kTLS RX an
  // -EIO is a control record; returns 0 for close_notify (an orderly end),
  // the result otherwise.
  int ClassifyReadError(int result);
  // Queues a close_notify (user-space TX only; under kTLS TX the half-close
  // goes without one).
  void Close();

  // internal::StreamSink: a plaintext lease from the writer.
  int SendLease(transport::SocketId socket,
                transport::BufferLease plain) override;

  bool open() const { return session_->open(); }
  bool failed() const { return session_->failed(); }
  bool ktls_tx() const { return ktls_tx_; }
  bool ktls_rx() const { return ktls_rx_; }
  const TlsSession& session() const { return *session_; }

 private:
  // Session ciphertext into pool leases on the socket; 0 or the first
  // Send() error.
  int FlushCiphertext();
  void TryKernelTx();
  void TryKernelRx();
  bool KernelTlsUsable();

  transport::Loop* loop_;
  transport::SocketId socket_;
  std::unique_ptr<TlsSession> session_;
  Options options_;
  TlsCounters* counters_;
  std::span<std::byte> scratch_;
  bool counted_open_ = false;
  bool counted_failure_ = false;
  bool ulp_attached_ = false;
  bool ktls_off_ = false;  // unavailable or failed: stay in user space
  bool ktls_tx_ = false;
  bool ktls_rx_ = false;
  bool rx_decided_ = false;  // RX hand-over tried (once, at open)
  int send_error_ = 0;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_TLS_STREAM_H_
