#include "mqtt/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace ringlab::mqtt {
namespace {

// OpenSSL's error queue as one line (and cleared).
std::string TakeOpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error recorded" : out;
}

int VersionFromName(const std::string& name) {
  if (name == "1.2") return TLS1_2_VERSION;
  if (name == "1.3") return TLS1_3_VERSION;
  return 0;
}

int SessionIndex() {
  static const int index =
      SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// TLS 1.3 traffic secrets reach us through the key log callback: OpenSSL
// 3.0 has no other public way to read them, and kTLS needs them.
void KeyLog(const SSL* ssl, const char* line) {
  auto* session =
      static_cast<TlsSession*>(SSL_get_ex_data(ssl, SessionIndex()));
  if (session == nullptr) return;
  // "LABEL <client random hex> <secret hex>"
  std::string_view l(line);
  const size_t a = l.find(' ');
  if (a == std::string_view::npos) return;
  const size_t b = l.find(' ', a + 1);
  if (b == std::string_view::npos) return;
  const std::string_view label = l.substr(0, a);
  const std::string_view hex = l.substr(b + 1);
  if (label != "CLIENT_TRAFFIC_SECRET_0" && label != "SERVER_TRAFFIC_SECRET_0")
    return;
  std::array<uint8_t, 64> secret{};
  const size_t n = std::min(hex.size() / 2, secret.size());
  for (size_t i = 0; i < n; ++i) {
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return 0;
    };
    secret[i] = uint8_t(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  session->NoteSecret(label, std::span<const uint8_t>(secret.data(), n));
  OPENSSL_cleanse(secret.data(), secret.size());
}

// RFC 8446 §7.1 HKDF-Expand-Label(secret, label, "", length), §7.3 keys.
bool HkdfExpandLabel(const EVP_MD* md, std::span<const uint8_t> secret,
                     std::string_view label, std::span<uint8_t> out) {
  std::array<uint8_t, 64> info{};
  size_t n = 0;
  info[n++] = uint8_t(out.size() >> 8);
  info[n++] = uint8_t(out.size());
  const std::string full = absl::StrCat("tls13 ", std::string(label));
  info[n++] = uint8_t(full.size());
  std::memcpy(info.data() + n, full.data(), full.size());
  n += full.size();
  info[n++] = 0;  // empty context
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return false;
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (kctx == nullptr) return false;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  const char* digest = EVP_MD_get0_name(md);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                       const_cast<char*>(digest), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<uint8_t*>(secret.data()),
                                        secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), n),
      OSSL_PARAM_construct_end()};
  const bool ok = EVP_KDF_derive(kctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(kctx);
  return ok;
}

// RFC 5246 §5 PRF(master_secret, "key expansion", server_random +
// client_random), §6.3 the key block.
bool Tls12KeyBlock(const EVP_MD* md, std::span<const uint8_t> master,
                   std::span<const uint8_t> seed, std::span<uint8_t> out) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "TLS1-PRF", nullptr);
  if (kdf == nullptr) return false;
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (kctx == nullptr) return false;
  const char* digest = EVP_MD_get0_name(md);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                       const_cast<char*>(digest), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET,
                                        const_cast<uint8_t*>(master.data()),
                                        master.size()),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_SEED, const_cast<uint8_t*>(seed.data()), seed.size()),
      OSSL_PARAM_construct_end()};
  const bool ok = EVP_KDF_derive(kctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(kctx);
  return ok;
}

// How many record headers start inside `bytes` (which starts at a record
// boundary).
uint64_t CountRecordStarts(std::span<const std::byte> bytes) {
  uint64_t n = 0;
  size_t pos = 0;
  while (pos < bytes.size()) {
    ++n;
    if (pos + 5 > bytes.size()) break;
    const size_t len = (size_t(uint8_t(bytes[pos + 3])) << 8) |
                       size_t(uint8_t(bytes[pos + 4]));
    pos += 5 + len;
  }
  return n;
}

}  // namespace

std::string_view TlsFailureName(TlsFailure f) {
  switch (f) {
    case TlsFailure::kNone:
      return "none";
    case TlsFailure::kNotTls:
      return "not_tls";
    case TlsFailure::kPeerAlert:
      return "peer_alert";
    case TlsFailure::kVerifyFailed:
      return "verify_failed";
    case TlsFailure::kNoPeerCert:
      return "no_peer_certificate";
    case TlsFailure::kProtocol:
      return "protocol";
  }
  return "unknown";
}

// ---- Self-signed certificates
// -------------------------------------------------

absl::Status WriteSelfSignedCertificate(
    const std::string& cert_path, const std::string& key_path,
    const std::vector<std::string>& dns_names,
    const std::vector<std::string>& ip_addresses, int days) {
  ERR_clear_error();
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  auto cleanup = [&] {
    EVP_PKEY_free(key);
    X509_free(cert);
  };
  auto fail = [&](const char* what) {
    const absl::Status s = absl::InternalError(absl::StrCat(
        "tls: self-signed certificate: ", what, ": ", TakeOpenSslErrors()));
    cleanup();
    return s;
  };
  if (key == nullptr || cert == nullptr) return fail("key generation");
  std::string san;
  for (const std::string& d : dns_names) {
    absl::StrAppend(&san, san.empty() ? "" : ",", "DNS:", d);
  }
  for (const std::string& ip : ip_addresses) {
    absl::StrAppend(&san, san.empty() ? "" : ",", "IP:", ip);
  }
  const std::string cn = dns_names.empty() ? "ringlab" : dns_names[0];
  X509_NAME* name = X509_get_subject_name(cert);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext =
      san.empty() ? nullptr
                  : X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name,
                                        san.c_str());
  const bool ok =
      X509_set_version(cert, 2) == 1 &&
      ASN1_INTEGER_set(X509_get_serialNumber(cert), long(time(nullptr))) == 1 &&
      X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != nullptr &&
      X509_gmtime_adj(X509_getm_notAfter(cert), long(days) * 86400) !=
          nullptr &&
      X509_set_pubkey(cert, key) == 1 &&
      X509_NAME_add_entry_by_txt(
          name, "CN", MBSTRING_ASC,
          reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) == 1 &&
      X509_set_issuer_name(cert, name) == 1 &&
      (san.empty() || (ext != nullptr && X509_add_ext(cert, ext, -1) == 1)) &&
      X509_sign(cert, key, EVP_sha256()) > 0;
  if (ext != nullptr) X509_EXTENSION_free(ext);
  if (!ok) return fail("building");
  std::FILE* kf = std::fopen(key_path.c_str(), "w");
  if (kf == nullptr) {
    cleanup();
    return absl::InternalError(absl::StrCat("tls: cannot write ", key_path));
  }
  ::chmod(key_path.c_str(), 0600);
  const bool key_ok =
      PEM_write_PrivateKey(kf, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  std::fclose(kf);
  std::FILE* cf = std::fopen(cert_path.c_str(), "w");
  if (cf == nullptr) {
    cleanup();
    return absl::InternalError(absl::StrCat("tls: cannot write ", cert_path));
  }
  const bool cert_ok = PEM_write_X509(cf, cert) == 1;
  std::fclose(cf);
  if (!key_ok || !cert_ok) return fail("writing PEM");
  cleanup();
  return absl::OkStatus();
}

// ---- TlsContext ------------------------------------------------------------

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::Create(
    const TlsConfig& config) {
  const bool server = config.role == TlsRole::kServer;
  const int min_v = VersionFromName(config.min_version);
  const int max_v = VersionFromName(config.max_version);
  if (min_v == 0 || max_v == 0 || min_v > max_v) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls: versions must be 1.2 or 1.3 with min <= max (got ",
                     config.min_version, "..", config.max_version, ")"));
  }
  if (server && (config.cert_file.empty() || config.key_file.empty())) {
    return absl::InvalidArgumentError(
        "tls: a server needs a certificate and a key (--cert, --key)");
  }
  if (!server && config.verify_peer && config.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "tls: a client that verifies the server needs a CA file (--cafile)");
  }
  std::shared_ptr<TlsContext> c(new TlsContext(config));
  ERR_clear_error();
  c->ctx_ = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (c->ctx_ == nullptr) {
    return absl::InternalError(
        absl::StrCat("tls: SSL_CTX_new: ", TakeOpenSslErrors()));
  }
  SSL_CTX* ctx = c->ctx_;
  SSL_CTX_set_min_proto_version(ctx, min_v);
  SSL_CTX_set_max_proto_version(ctx, max_v);
  // No renegotiation (TLS 1.2) and no session tickets: see the header.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (config.ktls) {
    // The kernel's TLS module takes AES-GCM (linux/tls.h); keep to it.
    if (SSL_CTX_set_ciphersuites(
            ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384") != 1 ||
        SSL_CTX_set_cipher_list(
            ctx,
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384") != 1) {
      return absl::InternalError(
          absl::StrCat("tls: cipher suites: ", TakeOpenSslErrors()));
    }
    SSL_CTX_set_keylog_callback(ctx, KeyLog);
  }
  if (!config.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) !=
        1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls: certificate ", config.cert_file, ": ", TakeOpenSslErrors()));
    }
    const std::string& key =
        config.key_file.empty() ? config.cert_file : config.key_file;
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls: key ", key, ": ", TakeOpenSslErrors()));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls: key ", key, " does not match certificate ",
                       config.cert_file, ": ", TakeOpenSslErrors()));
    }
  }
  if (!config.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) !=
        1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls: CA file ", config.ca_file, ": ", TakeOpenSslErrors()));
    }
  }
  if (server) {
    if (!config.ca_file.empty()) {
      int mode = SSL_VERIFY_PEER;
      if (config.require_peer_cert) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      SSL_CTX_set_verify(ctx, mode, nullptr);
    } else if (config.require_peer_cert) {
      return absl::InvalidArgumentError(
          "tls: requiring client certificates needs a CA file (--cafile)");
    }
  } else {
    SSL_CTX_set_verify(ctx, config.verify_peer ? SSL_VERIFY_PEER : 0, nullptr);
  }
  return c;
}

TlsContext::~TlsContext() {
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

// ---- TlsRecordCounter -------------------------------------------------------

void TlsRecordCounter::Feed(std::span<const std::byte> bytes) {
  bytes_ += bytes.size();
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (body_left_ > 0) {
      const size_t n = std::min(body_left_, bytes.size() - pos);
      body_left_ -= n;
      pos += n;
      continue;
    }
    header_[header_have_++] = uint8_t(bytes[pos++]);
    if (header_have_ == 1) {
      // A record starts: RFC 8446 §5.1 ContentType 20 is change_cipher_spec.
      ++records_;
      ++since_mark_;
      if (header_[0] == 20) {
        since_ccs_ = 0;
      } else {
        ++since_ccs_;
      }
    }
    if (header_have_ == 5) {
      body_left_ = (size_t(header_[3]) << 8) | header_[4];
      header_have_ = 0;
    }
  }
}

// ---- TlsSession -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TlsSession>> TlsSession::Create(
    const TlsContext& context) {
  std::unique_ptr<TlsSession> s(new TlsSession(context));
  ERR_clear_error();
  s->ssl_ = SSL_new(context.native());
  if (s->ssl_ == nullptr) {
    return absl::InternalError(
        absl::StrCat("tls: SSL_new: ", TakeOpenSslErrors()));
  }
  s->rbio_ = BIO_new(BIO_s_mem());
  s->wbio_ = BIO_new(BIO_s_mem());
  if (s->rbio_ == nullptr || s->wbio_ == nullptr) {
    if (s->rbio_ != nullptr) BIO_free(s->rbio_);
    if (s->wbio_ != nullptr) BIO_free(s->wbio_);
    s->rbio_ = s->wbio_ = nullptr;
    return absl::ResourceExhaustedError("tls: BIO_new failed");
  }
  // An empty memory BIO reads as "retry later", not as end of file.
  BIO_set_mem_eof_return(s->rbio_, -1);
  SSL_set_bio(s->ssl_, s->rbio_, s->wbio_);  // ssl_ owns both now
  SSL_set_ex_data(s->ssl_, SessionIndex(), s.get());
  const TlsConfig& config = context.config();
  if (config.role == TlsRole::kServer) {
    SSL_set_accept_state(s->ssl_);
  } else {
    SSL_set_connect_state(s->ssl_);
    if (!config.server_name.empty()) {
      in6_addr ip6;
      in_addr ip4;
      const bool is_ip =
          inet_pton(AF_INET, config.server_name.c_str(), &ip4) == 1 ||
          inet_pton(AF_INET6, config.server_name.c_str(), &ip6) == 1;
      if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl_),
                                      config.server_name.c_str());
      } else {
        SSL_set_tlsext_host_name(s->ssl_, config.server_name.c_str());
        SSL_set1_host(s->ssl_, config.server_name.c_str());
      }
    }
  }
  return s;
}

TlsSession::~TlsSession() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  OPENSSL_cleanse(client_secret_.data(), client_secret_.size());
  OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
}

void TlsSession::Start() {
  if (started_) return;
  started_ = true;
  if (context_.config().role == TlsRole::kClient) Advance();
}

void TlsSession::NoteSecret(std::string_view label,
                            std::span<const uint8_t> secret) {
  const size_t n = std::min(secret.size(), client_secret_.size());
  if (label == "CLIENT_TRAFFIC_SECRET_0") {
    std::memcpy(client_secret_.data(), secret.data(), n);
    client_secret_bytes_ = n;
  } else {
    std::memcpy(server_secret_.data(), secret.data(), n);
    server_secret_bytes_ = n;
  }
}

void TlsSession::Fail(TlsFailure kind, int ssl_error) {
  if (failed()) return;
  const unsigned long e = ERR_peek_error();
  if (kind == TlsFailure::kProtocol && e != 0) {
    const int reason = ERR_GET_REASON(e);
    if (reason >= SSL_AD_REASON_OFFSET) {
      kind = TlsFailure::kPeerAlert;  // "sslv3 alert bad certificate", ...
    } else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      kind = TlsFailure::kVerifyFailed;
    } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
      kind = TlsFailure::kNoPeerCert;
    }
  }
  failure_ = kind;
  error_ = absl::StrCat(std::string(TlsFailureName(kind)), " (SSL error ",
                        ssl_error, "): ", TakeOpenSslErrors());
  if (kind == TlsFailure::kVerifyFailed) {
    absl::StrAppend(&error_, " [",
                    X509_verify_cert_error_string(SSL_get_verify_result(ssl_)),
                    "]");
  }
}

void TlsSession::Advance() {
  if (open_ || failed()) return;
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    OnOpened();
    return;
  }
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
  Fail(TlsFailure::kProtocol, err);
}

void TlsSession::OnOpened() {
  open_ = true;
  // TLS 1.3 sequence numbers restart with the application traffic keys
  // (RFC 8446 §5.3): the records from here on, in both directions. What
  // the peer sent after its Finished may already sit unread in rbio.
  char* unread = nullptr;
  const long n = BIO_get_mem_data(rbio_, &unread);
  rx_app_base_ =
      n > 0 ? CountRecordStarts(std::span<const std::byte>(
                  reinterpret_cast<const std::byte*>(unread), size_t(n)))
            : 0;
  rx_records_.Mark();
  // Our own last handshake flight may still wait to be taken.
  tx_mark_bytes_ = tx_records_.bytes() + PendingCiphertext();
  tx_mark_armed_ = PendingCiphertext() > 0;
  if (!tx_mark_armed_) tx_records_.Mark();
}

bool TlsSession::PutCiphertext(std::span<const std::byte> bytes) {
  if (failed()) return false;
  if (bytes.empty()) return true;
  if (!saw_first_bytes_) {
    saw_first_bytes_ = true;
    // RFC 8446 §5.1: a TLS stream starts with a handshake record (22). A
    // plaintext MQTT CONNECT starts with 0x10.
    if (uint8_t(bytes[0]) != 22) {
      failure_ = TlsFailure::kNotTls;
      error_ =
          absl::StrCat("not_tls: first byte 0x", absl::Hex(uint8_t(bytes[0])),
                       " is not a TLS handshake record");
      return false;
    }
  }
  rx_records_.Feed(bytes);
  BIO_write(rbio_, bytes.data(), int(bytes.size()));
  if (!open_) Advance();
  return !failed();
}

size_t TlsSession::ReadPlaintext(std::span<std::byte> out) {
  if (!open_ || failed() || peer_closed_ || out.empty()) return 0;
  ERR_clear_error();
  size_t got = 0;
  const int rc = SSL_read_ex(ssl_, out.data(), out.size(), &got);
  if (rc == 1) return got;
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_ZERO_RETURN) {
    peer_closed_ = true;  // close_notify
  } else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
    Fail(TlsFailure::kProtocol, err);
  }
  return 0;
}

bool TlsSession::WritePlaintext(std::span<const std::byte> plain) {
  if (!open_ || failed()) return false;
  if (plain.empty()) return true;
  ERR_clear_error();
  size_t written = 0;
  // Memory BIOs never refuse, so the whole span is written or it failed.
  const int rc = SSL_write_ex(ssl_, plain.data(), plain.size(), &written);
  if (rc == 1 && written == plain.size()) return true;
  Fail(TlsFailure::kProtocol, SSL_get_error(ssl_, rc));
  return false;
}

size_t TlsSession::PendingCiphertext() const {
  return wbio_ != nullptr ? BIO_ctrl_pending(wbio_) : 0;
}

size_t TlsSession::TakeCiphertext(std::span<std::byte> out) {
  if (out.empty() || PendingCiphertext() == 0) return 0;
  const int n = BIO_read(wbio_, out.data(), int(out.size()));
  if (n <= 0) return 0;
  std::span<const std::byte> taken(out.data(), size_t(n));
  if (tx_mark_armed_ && tx_records_.bytes() + taken.size() >= tx_mark_bytes_) {
    // The application epoch (TLS 1.3) starts inside what was taken.
    const size_t before = size_t(tx_mark_bytes_ - tx_records_.bytes());
    tx_records_.Feed(taken.first(before));
    tx_records_.Mark();
    tx_mark_armed_ = false;
    taken = taken.subspan(before);
  }
  tx_records_.Feed(taken);
  return size_t(n);
}

void TlsSession::Close() {
  if (!open_ || failed()) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // queues close_notify; the peer's is not awaited
}

std::string_view TlsSession::version_name() const {
  return open_ ? SSL_get_version(ssl_) : "";
}

std::string_view TlsSession::cipher_name() const {
  return open_ ? SSL_get_cipher_name(ssl_) : "";
}

bool TlsSession::TxAtBoundary() const {
  return open_ && !failed() && PendingCiphertext() == 0 &&
         tx_records_.at_boundary();
}

bool TlsSession::RxAtBoundary() const {
  return open_ && !failed() && BIO_ctrl_pending(rbio_) == 0 &&
         rx_records_.at_boundary() && SSL_has_pending(ssl_) == 0;
}

absl::StatusOr<KtlsKeys> TlsSession::ExportKtls() const {
  if (!context_.config().ktls) {
    return absl::FailedPreconditionError(
        "tls: the context was not created with ktls");
  }
  if (!open_ || failed()) {
    return absl::FailedPreconditionError("tls: the session is not open");
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  const int nid = cipher != nullptr ? SSL_CIPHER_get_cipher_nid(cipher) : 0;
  size_t key_bytes = 0;
  if (nid == NID_aes_128_gcm) key_bytes = 16;
  if (nid == NID_aes_256_gcm) key_bytes = 32;
  if (key_bytes == 0) {
    return absl::UnimplementedError(
        absl::StrCat("tls: kTLS takes AES-GCM; this session uses ",
                     std::string(cipher_name())));
  }
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(cipher);
  if (md == nullptr) return absl::InternalError("tls: no handshake digest");
  const bool server = context_.config().role == TlsRole::kServer;
  KtlsKeys keys;
  keys.role = context_.config().role;
  keys.tx.key_bytes = keys.rx.key_bytes = key_bytes;
  const int version = SSL_version(ssl_);
  if (version == TLS1_3_VERSION) {
    keys.version = 0x0304;
    if (client_secret_bytes_ == 0 || server_secret_bytes_ == 0) {
      return absl::InternalError("tls: traffic secrets were not logged");
    }
    const std::span<const uint8_t> client(client_secret_.data(),
                                          client_secret_bytes_);
    const std::span<const uint8_t> srv(server_secret_.data(),
                                       server_secret_bytes_);
    const std::span<const uint8_t> tx = server ? srv : client;
    const std::span<const uint8_t> rx = server ? client : srv;
    if (!HkdfExpandLabel(md, tx, "key", {keys.tx.key.data(), key_bytes}) ||
        !HkdfExpandLabel(md, tx, "iv", keys.tx.iv) ||
        !HkdfExpandLabel(md, rx, "key", {keys.rx.key.data(), key_bytes}) ||
        !HkdfExpandLabel(md, rx, "iv", keys.rx.iv)) {
      return absl::InternalError(
          absl::StrCat("tls: HKDF-Expand-Label: ", TakeOpenSslErrors()));
    }
    keys.tx.sequence = tx_records_.since_mark();
    keys.rx.sequence = rx_app_base_ + rx_records_.since_mark();
  } else if (version == TLS1_2_VERSION) {
    keys.version = 0x0303;
    std::array<uint8_t, 48> master{};
    const size_t master_bytes = SSL_SESSION_get_master_key(
        SSL_get_session(ssl_), master.data(), master.size());
    std::array<uint8_t, 13 + 64> seed{};
    std::memcpy(seed.data(), "key expansion", 13);
    if (SSL_get_server_random(ssl_, seed.data() + 13, 32) != 32 ||
        SSL_get_client_random(ssl_, seed.data() + 45, 32) != 32 ||
        master_bytes == 0) {
      return absl::InternalError("tls: no TLS 1.2 master secret");
    }
    // AEAD key block (RFC 5288 §3): client key, server key, client salt,
    // server salt; no MAC keys.
    std::array<uint8_t, 72> block{};
    const size_t block_bytes = 2 * key_bytes + 8;
    const bool ok = Tls12KeyBlock(md, {master.data(), master_bytes}, seed,
                                  {block.data(), block_bytes});
    OPENSSL_cleanse(master.data(), master.size());
    if (!ok) {
      return absl::InternalError(
          absl::StrCat("tls: TLS1-PRF: ", TakeOpenSslErrors()));
    }
    const uint8_t* client_key = block.data();
    const uint8_t* server_key = block.data() + key_bytes;
    const uint8_t* client_salt = block.data() + 2 * key_bytes;
    const uint8_t* server_salt = client_salt + 4;
    std::memcpy(keys.tx.key.data(), server ? server_key : client_key,
                key_bytes);
    std::memcpy(keys.rx.key.data(), server ? client_key : server_key,
                key_bytes);
    std::memcpy(keys.tx.iv.data(), server ? server_salt : client_salt, 4);
    std::memcpy(keys.rx.iv.data(), server ? client_salt : server_salt, 4);
    OPENSSL_cleanse(block.data(), block.size());
    // RFC 5246 §6.1: sequence numbers restart at each ChangeCipherSpec;
    // the Finished that follows it is record 0.
    keys.tx.sequence = tx_records_.since_ccs();
    keys.rx.sequence = rx_records_.since_ccs();
  } else {
    return absl::UnimplementedError("tls: kTLS needs TLS 1.2 or 1.3");
  }
  return keys;
}

}  // namespace ringlab::mqtt
