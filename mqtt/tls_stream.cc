#include "mqtt/tls_stream.h"

#include <arpa/inet.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

namespace ringlab::mqtt {
namespace {

void PutBigEndian64(unsigned char* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
}

std::string AvailableUlps() {
  std::FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
  if (f == nullptr) return "?";
  char buf[256] = {0};
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "none" : s;
}

absl::Status AttachUlp(int fd) {
  if (::setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kernel TLS: setsockopt(TCP_ULP, \"tls\"): ENOENT: this kernel has "
          "no tls module (CONFIG_TLS is not set, or `modprobe tls` is "
          "needed); available ULPs: ",
          AvailableUlps()));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "kernel TLS: setsockopt(TCP_ULP, \"tls\"): ", std::strerror(err)));
  }
  return absl::OkStatus();
}

template <typename Info>
void FillCryptoInfo(const KtlsKeys& keys, const KtlsDirection& d, Info* ci,
                    uint16_t cipher_type) {
  std::memset(ci, 0, sizeof(*ci));
  ci->info.version = keys.version == 0x0304 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
  ci->info.cipher_type = cipher_type;
  std::memcpy(ci->key, d.key.data(), sizeof(ci->key));
  std::memcpy(ci->salt, d.iv.data(), sizeof(ci->salt));
  if (keys.version == 0x0304) {
    // RFC 8446 §5.3: the per-record nonce is the 12-byte IV xor the
    // sequence number; the kernel keeps it as salt (4) + iv (8).
    std::memcpy(ci->iv, d.iv.data() + 4, sizeof(ci->iv));
  } else {
    // RFC 5288 §3: the explicit nonce travels in each record and must not
    // repeat; starting it at the sequence number keeps it unique.
    PutBigEndian64(ci->iv, d.sequence);
  }
  PutBigEndian64(ci->rec_seq, d.sequence);
}

absl::Status InstallDirection(int fd, const KtlsKeys& keys, bool tx) {
  const KtlsDirection& d = tx ? keys.tx : keys.rx;
  const int which = tx ? TLS_TX : TLS_RX;
  int rc;
  if (d.key_bytes == 16) {
    tls12_crypto_info_aes_gcm_128 ci;
    FillCryptoInfo(keys, d, &ci, TLS_CIPHER_AES_GCM_128);
    rc = ::setsockopt(fd, SOL_TLS, which, &ci, sizeof(ci));
    OPENSSL_cleanse(&ci, sizeof(ci));
  } else if (d.key_bytes == 32) {
    tls12_crypto_info_aes_gcm_256 ci;
    FillCryptoInfo(keys, d, &ci, TLS_CIPHER_AES_GCM_256);
    rc = ::setsockopt(fd, SOL_TLS, which, &ci, sizeof(ci));
    OPENSSL_cleanse(&ci, sizeof(ci));
  } else {
    return absl::UnimplementedError("kernel TLS: AES-GCM 128/256 only");
  }
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("kernel TLS: setsockopt(SOL_TLS, ",
                                            tx ? "TLS_TX" : "TLS_RX",
                                            "): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ProbeOnce() {
  // A connected loopback pair: the ULP attaches only to an established
  // socket.
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return absl::InternalError("kernel TLS probe: socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int client = -1, server = -1;
  absl::Status status = absl::InternalError("kernel TLS probe: setup failed");
  if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::listen(listener, 1) == 0 &&
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client >= 0 &&
        ::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      status = AttachUlp(client);
    }
  }
  if (server >= 0) ::close(server);
  if (client >= 0) ::close(client);
  ::close(listener);
  return status;
}

}  // namespace

void TlsCounters::Count(TlsFailure f) {
  switch (f) {
    case TlsFailure::kNotTls:
      ++failed_not_tls;
      break;
    case TlsFailure::kPeerAlert:
      ++failed_peer_alert;
      break;
    case TlsFailure::kVerifyFailed:
      ++failed_verify;
      break;
    case TlsFailure::kNoPeerCert:
      ++failed_no_peer_cert;
      break;
    case TlsFailure::kProtocol:
    case TlsFailure::kNone:
      ++failed_protocol;
      break;
  }
}

absl::Status ProbeKernelTls() {
  static std::once_flag once;
  static absl::Status* result = nullptr;
  std::call_once(once, [] { result = new absl::Status(ProbeOnce()); });
  return *result;
}

absl::Status InstallKernelTls(int fd, const KtlsKeys& keys, bool tx, bool rx,
                              bool ulp_attached) {
  if (!ulp_attached) {
    if (absl::Status s = AttachUlp(fd); !s.ok()) return s;
  }
  if (tx) {
    if (absl::Status s = InstallDirection(fd, keys, true); !s.ok()) return s;
  }
  if (rx) {
    if (absl::Status s = InstallDirection(fd, keys, false); !s.ok()) return s;
  }
  return absl::OkStatus();
}

TlsStream::TlsStream(transport::Loop* loop, transport::SocketId socket,
                     std::unique_ptr<TlsSession> session, Options options,
                     TlsCounters* counters, std::span<std::byte> scratch)
    : loop_(loop),
      socket_(socket),
      session_(std::move(session)),
      options_(options),
      counters_(counters),
      scratch_(scratch) {
  ++counters_->handshakes_started;
}

int TlsStream::Start() {
  session_->Start();
  return FlushCiphertext();
}

TlsStream::Status TlsStream::OnReceived(
    transport::BufferLease data,
    absl::FunctionRef<void(std::span<const std::byte>)> deliver) {
  if (ktls_rx_) {
    // The kernel decrypted it already.
    counters_->plaintext_bytes_in += data.size();
    deliver(data.bytes());
    return Status::kOk;
  }
  counters_->ciphertext_bytes_in += data.size();
  session_->PutCiphertext(data.bytes());
  // Copied into the session: the buffer (a ring buffer on the uring-fixed
  // family) goes back before any work is done on the bytes.
  data.Release();
  if (session_->open() && !counted_open_) {
    counted_open_ = true;
    ++counters_->handshakes_completed;
  }
  while (!session_->failed()) {
    const size_t n = session_->ReadPlaintext(scratch_);
    if (n == 0) break;
    counters_->plaintext_bytes_in += n;
    deliver(std::span<const std::byte>(scratch_.data(), n));
  }
  // Handshake flights and alerts.
  FlushCiphertext();
  if (session_->failed()) {
    if (!counted_failure_) {
      counted_failure_ = true;
      counters_->Count(session_->failure());
    }
    return Status::kFailed;
  }
  if (session_->peer_closed()) {
    ++counters_->peer_close_notify;
    return Status::kPeerClosed;
  }
  if (session_->open()) {
    TryKernelRx();
    TryKernelTx();
  }
  return Status::kOk;
}

void TlsStream::OnSendComplete() {
  if (session_->PendingCiphertext() > 0) FlushCiphertext();
  if (session_->open() && !ktls_tx_) TryKernelTx();
}

int TlsStream::SendLease(transport::SocketId socket,
                         transport::BufferLease plain) {
  if (send_error_ != 0) return send_error_;
  counters_->plaintext_bytes_out += plain.size();
  if (ktls_tx_) return loop_->Send(socket_, std::move(plain));
  if (!session_->WritePlaintext(plain.bytes())) {
    send_error_ = -EPROTO;
    return send_error_;
  }
  plain.Release();
  return FlushCiphertext();
}

int TlsStream::FlushCiphertext() {
  if (send_error_ != 0) return send_error_;
  while (session_->PendingCiphertext() > 0) {
    transport::BufferLease lease = loop_->AcquireBuffer();
    if (!lease) {
      // Retried when a send completes (or with the next bytes either way).
      ++counters_->pool_empty;
      return 0;
    }
    const size_t n = session_->TakeCiphertext(lease.writable());
    lease.set_size(n);
    counters_->ciphertext_bytes_out += n;
    const int rc = loop_->Send(socket_, std::move(lease));
    if (rc < 0) {
      send_error_ = rc;
      return rc;
    }
  }
  return 0;
}

void TlsStream::Close() {
  if (!session_->open() || session_->failed() || ktls_tx_) return;
  session_->Close();
  FlushCiphertext();
}

bool TlsStream::KernelTlsUsable() {
  if (ktls_off_) return false;
  if (!ProbeKernelTls().ok()) {
    ktls_off_ = true;
    ++counters_->ktls_unavailable;
    return false;
  }
  return true;
}

void TlsStream::TryKernelTx() {
  if (!options_.ktls || ktls_off_ || ktls_tx_ || !session_->TxAtBoundary()) {
    return;
  }
  // Nothing already encrypted may still wait in the Loop's queue.
  if (loop_->QueuedSendBytes(socket_) != 0) return;
  if (!KernelTlsUsable()) return;
  absl::StatusOr<KtlsKeys> keys = session_->ExportKtls();
  absl::Status s =
      keys.ok() ? InstallKernelTls(loop_->NativeHandle(socket_), *keys,
                                   /*tx=*/true, /*rx=*/false, ulp_attached_)
                : keys.status();
  if (!s.ok()) {
    ktls_off_ = true;
    ++counters_->ktls_failed;
    return;
  }
  ulp_attached_ = true;
  ktls_tx_ = true;
  ++counters_->ktls_tx;
}

void TlsStream::TryKernelRx() {
  if (rx_decided_) return;
  rx_decided_ = true;
  if (!options_.ktls || !KernelTlsUsable()) return;
  if (loop_->backend().flags.provided_buffers) {
    ++counters_->ktls_rx_multishot;
    return;
  }
  if (!session_->RxAtBoundary()) {
    ++counters_->ktls_rx_not_at_boundary;
    return;
  }
  absl::StatusOr<KtlsKeys> keys = session_->ExportKtls();
  absl::Status s =
      keys.ok() ? InstallKernelTls(loop_->NativeHandle(socket_), *keys,
                                   /*tx=*/false, /*rx=*/true, ulp_attached_)
                : keys.status();
  if (!s.ok()) {
    ktls_off_ = true;
    ++counters_->ktls_failed;
    return;
  }
  ulp_attached_ = true;
  ktls_rx_ = true;
  ++counters_->ktls_rx;
}

int TlsStream::ClassifyReadError(int result) {
  if (!ktls_rx_ || result != -EIO) return result;
  // The Loop's receive ended on a record that is not application data; no
  // receive is armed any more, so reading the socket here races with
  // nothing. RFC 8446 §6: an alert is 2 bytes (level, description).
  unsigned char body[64];
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(unsigned char))];
  iovec iov{body, sizeof(body)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = ::recvmsg(loop_->NativeHandle(socket_), &msg, MSG_DONTWAIT);
  int type = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) {
      type = *CMSG_DATA(c);
    }
  }
  if (type == 21 && n >= 2 && body[1] == 0) {  // alert: close_notify
    ++counters_->peer_close_notify;
    return 0;
  }
  ++counters_->ktls_control_records;
  return -EPROTO;
}

}  // namespace ringlab::mqtt
