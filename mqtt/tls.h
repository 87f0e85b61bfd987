// TLS for the MQTT drivers (issue 12): OpenSSL (TLS 1.2 and 1.3) over memory
// BIOs, so ciphertext moves through the Loop's leases like any other stream
// bytes and nothing ever blocks; and the key export kernel TLS (kTLS) needs
// to take the record layer over once the handshake is done.
//
// TlsSession is sans-io: it never touches a socket, a clock or a thread.
// The caller feeds it what arrived and sends what it produced:
//
//   absl::StatusOr<std::shared_ptr<TlsContext>> ctx = TlsContext::Create({
//       .role = TlsRole::kServer, .cert_file = "s.crt", .key_file = "s.key"});
//   std::unique_ptr<TlsSession> tls = *TlsSession::Create(**ctx);
//   tls->PutCiphertext(received);          // handshake advances by itself
//   while (size_t n = tls->TakeCiphertext(out)) send(out.first(n));
//   if (tls->open()) {
//     size_t n = tls->ReadPlaintext(plain);  // application bytes
//     tls->WritePlaintext(reply);            // then take + send again
//   }
//   if (tls->failed()) close(tls->error());
//
// Renegotiation is off (SSL_OP_NO_RENEGOTIATION; TLS 1.3 has none), session
// tickets are off (the broker does not resume sessions, and a ticket sent
// after the handshake would consume a record sequence number that kTLS must
// know). With TlsConfig::ktls the cipher suites are limited to AES-GCM (what
// the kernel's TLS module takes) and the traffic secrets are kept so that
// ExportKtls() can fill the kernel's crypto_info; the session counts the
// records it sent and received after the key change so that the sequence
// numbers are exact.
//
// Ownership: a TlsContext (SSL_CTX) is shared by sessions and, being
// immutable after Create(), by every Loop thread; a TlsSession belongs to
// one connection on one thread. Errors: Create() returns InvalidArgument
// (bad files, key not matching the certificate) with OpenSSL's reason;
// a session that fails reports it through failed()/error()/failure() and
// produces the alert to send (take it before closing). Allocation: our
// code allocates nothing per record; OpenSSL 3.0 allocates handshake state,
// and per record written 2 (TLS 1.2) or 4 (TLS 1.3) 40-byte blocks that it
// frees before returning (mqtt/tls_alloc_test.cc pins this down).
#ifndef RINGLAB_MQTT_TLS_H_
#define RINGLAB_MQTT_TLS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// OpenSSL types, so users of this header need not include OpenSSL's.
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace ringlab::mqtt {

enum class TlsRole : uint8_t { kServer, kClient };

struct TlsConfig {
  TlsRole role = TlsRole::kServer;
  // PEM files. The server needs a certificate and its key; a client needs
  // them only for mutual TLS.
  std::string cert_file;
  std::string key_file;
  // PEM CA bundle. Client: verifies the server's certificate (required
  // unless verify_peer is false). Server: verifies client certificates,
  // which are then requested (and required when require_peer_cert).
  std::string ca_file;
  bool verify_peer = true;         // client: check the server's certificate
  bool require_peer_cert = false;  // server: a client without one is refused
  // Client: SNI and the name the server's certificate must carry (a DNS
  // name or an IP address); empty: no name check.
  std::string server_name;
  // "1.2" or "1.3".
  std::string min_version = "1.2";
  std::string max_version = "1.3";
  // Prepare sessions for kernel TLS: AES-GCM suites only, secrets kept.
  bool ktls = false;
};

class TlsContext {
 public:
  static absl::StatusOr<std::shared_ptr<TlsContext>> Create(
      const TlsConfig& config);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  const TlsConfig& config() const { return config_; }
  SSL_CTX* native() const { return ctx_; }

 private:
  explicit TlsContext(TlsConfig config) : config_(std::move(config)) {}
  TlsConfig config_;
  SSL_CTX* ctx_ = nullptr;
};

// Writes a fresh EC P-256 key (mode 0600) and a self-signed certificate for
// it, valid `days` from now, naming `dns_names` and `ip_addresses` (subject
// CN = the first DNS name). A client trusts it by using the certificate as
// its CA file. For benchmarks and tests that need a TLS broker without a
// PKI (ringlab_mqtt_broker --tls_self_signed=DIR). InternalError with
// OpenSSL's reason, or the file error.
absl::Status WriteSelfSignedCertificate(
    const std::string& cert_path, const std::string& key_path,
    const std::vector<std::string>& dns_names,
    const std::vector<std::string>& ip_addresses, int days = 30);

// Why a session failed; the TLS listener counts each.
enum class TlsFailure : uint8_t {
  kNone,
  kNotTls,        // the peer's first bytes are not a TLS record (plaintext)
  kPeerAlert,     // the peer refused us with an alert (e.g. bad certificate)
  kVerifyFailed,  // the peer's certificate did not verify
  kNoPeerCert,    // require_peer_cert and the client sent none
  kProtocol,      // anything else OpenSSL refused
};
std::string_view TlsFailureName(TlsFailure f);

// What the kernel needs for one direction (linux/tls.h crypto_info).
struct KtlsDirection {
  std::array<uint8_t, 32> key{};
  size_t key_bytes = 0;  // 16 (AES-128-GCM) or 32 (AES-256-GCM)
  // TLS 1.3: the 12-byte IV (salt = first 4, iv = last 8). TLS 1.2: the
  // 4-byte implicit salt in iv[0..4) (the explicit nonce travels in each
  // record; the sender's first one is the sequence number).
  std::array<uint8_t, 12> iv{};
  uint64_t sequence = 0;  // the next record's sequence number
};
struct KtlsKeys {
  uint16_t version = 0;  // 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3)
  TlsRole role = TlsRole::kServer;
  KtlsDirection tx;
  KtlsDirection rx;
};

// Counts records in one direction of a TLS byte stream (5-byte headers,
// RFC 8446 §5.1 / RFC 5246 §6.2), for the sequence numbers kTLS needs.
class TlsRecordCounter {
 public:
  void Feed(std::span<const std::byte> bytes);
  // Marks the current position: records starting from here on are counted
  // in since_mark().
  void Mark() { since_mark_ = 0; }
  uint64_t records() const { return records_; }
  uint64_t since_mark() const { return since_mark_; }
  // Records after the last ChangeCipherSpec record (TLS 1.2's epoch).
  uint64_t since_ccs() const { return since_ccs_; }
  bool at_boundary() const { return header_have_ == 0 && body_left_ == 0; }
  uint64_t bytes() const { return bytes_; }

 private:
  std::array<uint8_t, 5> header_{};
  size_t header_have_ = 0;
  size_t body_left_ = 0;
  uint64_t records_ = 0;
  uint64_t since_mark_ = 0;
  uint64_t since_ccs_ = 0;
  uint64_t bytes_ = 0;
};

class TlsSession {
 public:
  static absl::StatusOr<std::unique_ptr<TlsSession>> Create(
      const TlsContext& context);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // A client produces its ClientHello (take it and send it); a server does
  // nothing until the peer speaks.
  void Start();
  // Ciphertext from the peer (any split). Advances the handshake. False
  // once the session failed (take the alert, then close).
  bool PutCiphertext(std::span<const std::byte> bytes);
  // Decrypted application bytes, up to out.size(); 0 when none is ready.
  // A close_notify from the peer sets peer_closed().
  size_t ReadPlaintext(std::span<std::byte> out);
  // Encrypts `plain` (only once open()). False on failure.
  bool WritePlaintext(std::span<const std::byte> plain);
  // Ciphertext waiting to be sent, and taking it.
  size_t PendingCiphertext() const;
  size_t TakeCiphertext(std::span<std::byte> out);
  // Queues a close_notify alert.
  void Close();

  bool open() const { return open_; }
  bool failed() const { return failure_ != TlsFailure::kNone; }
  bool peer_closed() const { return peer_closed_; }
  TlsFailure failure() const { return failure_; }
  const std::string& error() const { return error_; }
  // "TLSv1.3", cipher "TLS_AES_128_GCM_SHA256", ... (after open()).
  std::string_view version_name() const;
  std::string_view cipher_name() const;

  // The keys, IVs and next sequence numbers for kernel TLS, as of now.
  // FailedPrecondition unless the context had ktls, the session is open,
  // every byte produced was taken, every byte received was consumed and
  // decrypted (both directions at a record boundary); Unimplemented for a
  // suite the kernel path does not take.
  absl::StatusOr<KtlsKeys> ExportKtls() const;
  // Whether a direction is quiet enough to hand to the kernel now.
  bool TxAtBoundary() const;
  bool RxAtBoundary() const;

  // Called by the keylog callback (TLS 1.3 traffic secrets).
  void NoteSecret(std::string_view label, std::span<const uint8_t> secret);

 private:
  explicit TlsSession(const TlsContext& context) : context_(context) {}
  void Advance();
  void Fail(TlsFailure kind, int ssl_error);
  void OnOpened();

  const TlsContext& context_;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
  bool started_ = false;
  bool open_ = false;
  bool peer_closed_ = false;
  bool saw_first_bytes_ = false;
  TlsFailure failure_ = TlsFailure::kNone;
  std::string error_;
  TlsRecordCounter tx_records_;  // ciphertext taken
  TlsRecordCounter rx_records_;  // ciphertext put
  // TLS 1.3: records of the application epoch already counted when open()
  // became true (received bytes still unread in rbio then).
  uint64_t rx_app_base_ = 0;
  uint64_t tx_mark_bytes_ = 0;  // TLS 1.3: where the application epoch starts
  bool tx_mark_armed_ = false;  // ... in ciphertext not taken yet
  std::array<uint8_t, 48> client_secret_{};
  std::array<uint8_t, 48> server_secret_{};
  size_t client_secret_bytes_ = 0;
  size_t server_secret_bytes_ = 0;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_TLS_H_
