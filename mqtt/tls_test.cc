// TlsSession (mqtt/tls.h) in memory: handshakes on TLS 1.2 and 1.3, data
// both ways in any split, the refusals the listener counts (plaintext, a
// certificate from the wrong CA, a missing client certificate), and the
// kTLS key export, checked without a kernel: the exported key, IV and
// sequence number must decrypt the next record OpenSSL writes, with plain
// EVP AES-GCM (RFC 8446 §5.2-5.3, RFC 5288 §3).
#include "mqtt/tls.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/internal/tls_test_certs.h"
#include "mqtt/tls_stream.h"
#include "testing/skip.h"

namespace ringlab::mqtt {
namespace {

using internal::MakeTestCerts;
using internal::TestCerts;

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

class Tls : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TestCerts> c = MakeTestCerts();
    if (c.ok()) {
      certs_ = new TestCerts(std::move(*c));
    } else {
      status_ = new absl::Status(c.status());
    }
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
    delete status_;
    status_ = nullptr;
  }
  void SetUp() override {
    if (certs_ == nullptr) {
      RINGLAB_SKIP_IF_MISSING(*status_);
      FAIL() << *status_;
    }
  }

  TlsConfig Server() const {
    TlsConfig c;
    c.role = TlsRole::kServer;
    c.cert_file = certs_->server_cert;
    c.key_file = certs_->server_key;
    return c;
  }
  TlsConfig Client() const {
    TlsConfig c;
    c.role = TlsRole::kClient;
    c.ca_file = certs_->ca;
    c.server_name = "localhost";
    return c;
  }

  struct Pair {
    std::shared_ptr<TlsContext> sctx, cctx;
    std::unique_ptr<TlsSession> server, client;
  };
  Pair Make(const TlsConfig& s, const TlsConfig& c) {
    Pair p;
    absl::StatusOr<std::shared_ptr<TlsContext>> sc = TlsContext::Create(s);
    absl::StatusOr<std::shared_ptr<TlsContext>> cc = TlsContext::Create(c);
    EXPECT_TRUE(sc.ok()) << sc.status();
    EXPECT_TRUE(cc.ok()) << cc.status();
    if (!sc.ok() || !cc.ok()) return p;
    p.sctx = *sc;
    p.cctx = *cc;
    p.server = *TlsSession::Create(*p.sctx);
    p.client = *TlsSession::Create(*p.cctx);
    p.server->Start();
    p.client->Start();
    return p;
  }
  // Moves ciphertext between the two, `chunk` bytes at a time, until
  // neither has any.
  static void Exchange(TlsSession& a, TlsSession& b, size_t chunk = 1 << 20) {
    std::vector<std::byte> buf(chunk);
    for (int round = 0; round < 100; ++round) {
      bool moved = false;
      for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
        while (size_t n = from->TakeCiphertext(buf)) {
          moved = true;
          to->PutCiphertext(std::span<const std::byte>(buf.data(), n));
        }
      }
      if (!moved) return;
    }
  }
  static std::string ReadAll(TlsSession& s) {
    std::string out;
    std::vector<std::byte> buf(4096);
    while (size_t n = s.ReadPlaintext(buf)) {
      out.append(reinterpret_cast<const char*>(buf.data()), n);
    }
    return out;
  }

  static TestCerts* certs_;
  static absl::Status* status_;
};
TestCerts* Tls::certs_ = nullptr;
absl::Status* Tls::status_ = nullptr;

TEST_F(Tls, HandshakeAndDataOnBothVersions) {
  for (const char* v : {"1.2", "1.3"}) {
    SCOPED_TRACE(v);
    TlsConfig s = Server(), c = Client();
    s.min_version = s.max_version = v;
    Pair p = Make(s, c);
    ASSERT_NE(p.server, nullptr);
    Exchange(*p.client, *p.server, 7);  // handshake in 7-byte pieces
    ASSERT_TRUE(p.client->open()) << p.client->error();
    ASSERT_TRUE(p.server->open()) << p.server->error();
    EXPECT_EQ(p.server->version_name(), std::string("TLSv") + v);
    const std::string big(100'000, 'x');  // several records
    ASSERT_TRUE(p.client->WritePlaintext(Bytes("CONNECT")));
    ASSERT_TRUE(p.client->WritePlaintext(Bytes(big)));
    Exchange(*p.client, *p.server, 1000);
    EXPECT_EQ(ReadAll(*p.server), "CONNECT" + big);
    ASSERT_TRUE(p.server->WritePlaintext(Bytes("CONNACK")));
    Exchange(*p.client, *p.server);
    EXPECT_EQ(ReadAll(*p.client), "CONNACK");
    p.client->Close();
    Exchange(*p.client, *p.server);
    ReadAll(*p.server);
    EXPECT_TRUE(p.server->peer_closed());
    EXPECT_FALSE(p.server->failed());
  }
}

TEST_F(Tls, PlaintextOnTheTlsPortIsRefused) {
  absl::StatusOr<std::shared_ptr<TlsContext>> ctx =
      TlsContext::Create(Server());
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  std::unique_ptr<TlsSession> s = *TlsSession::Create(**ctx);
  const std::string connect("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 14);
  EXPECT_FALSE(s->PutCiphertext(Bytes(connect)));
  EXPECT_EQ(s->failure(), TlsFailure::kNotTls);
  EXPECT_FALSE(s->open());
}

TEST_F(Tls, ServerFromAnotherCaIsRefusedByTheClient) {
  TlsConfig c = Client();
  c.ca_file = certs_->other_ca;
  Pair p = Make(Server(), c);
  ASSERT_NE(p.server, nullptr);
  Exchange(*p.client, *p.server);
  EXPECT_EQ(p.client->failure(), TlsFailure::kVerifyFailed)
      << p.client->error();
  EXPECT_EQ(p.server->failure(), TlsFailure::kPeerAlert) << p.server->error();
}

TEST_F(Tls, WrongServerNameIsRefused) {
  TlsConfig c = Client();
  c.server_name = "not-the-server.example";
  Pair p = Make(Server(), c);
  ASSERT_NE(p.server, nullptr);
  Exchange(*p.client, *p.server);
  EXPECT_EQ(p.client->failure(), TlsFailure::kVerifyFailed)
      << p.client->error();
  // The certificate names 127.0.0.1 too.
  c.server_name = "127.0.0.1";
  Pair q = Make(Server(), c);
  Exchange(*q.client, *q.server);
  EXPECT_TRUE(q.client->open()) << q.client->error();
}

TEST_F(Tls, ClientCertificates) {
  TlsConfig s = Server();
  s.ca_file = certs_->ca;
  s.require_peer_cert = true;
  for (const char* v : {"1.2", "1.3"}) {
    SCOPED_TRACE(v);
    s.min_version = s.max_version = v;
    {
      Pair p = Make(s, Client());  // no certificate
      Exchange(*p.client, *p.server);
      ReadAll(*p.client);  // TLS 1.3: the client learns it on reading
      EXPECT_EQ(p.server->failure(), TlsFailure::kNoPeerCert)
          << p.server->error();
      EXPECT_TRUE(p.client->failed());
    }
    {
      TlsConfig c = Client();
      c.cert_file = certs_->other_client_cert;
      c.key_file = certs_->other_client_key;
      Pair p = Make(s, c);
      Exchange(*p.client, *p.server);
      ReadAll(*p.client);
      EXPECT_EQ(p.server->failure(), TlsFailure::kVerifyFailed)
          << p.server->error();
      EXPECT_TRUE(p.client->failed());
    }
    {
      TlsConfig c = Client();
      c.cert_file = certs_->client_cert;
      c.key_file = certs_->client_key;
      Pair p = Make(s, c);
      Exchange(*p.client, *p.server);
      EXPECT_TRUE(p.server->open()) << p.server->error();
      EXPECT_TRUE(p.client->open()) << p.client->error();
    }
  }
}

TEST(TlsContextTest, BadFilesAreInvalidArgument) {
  TlsConfig s;
  s.role = TlsRole::kServer;
  EXPECT_TRUE(absl::IsInvalidArgument(TlsContext::Create(s).status()));
  s.cert_file = "/nonexistent.crt";
  s.key_file = "/nonexistent.key";
  EXPECT_TRUE(absl::IsInvalidArgument(TlsContext::Create(s).status()));
  TlsConfig c;
  c.role = TlsRole::kClient;  // verifying without a CA
  EXPECT_TRUE(absl::IsInvalidArgument(TlsContext::Create(c).status()));
}

TEST(TlsRecordCounterTest, CountsRecordsInAnySplit) {
  // Three records: handshake (22, 3 bytes), change_cipher_spec (20, 1),
  // application data (23, 2).
  const uint8_t stream[] = {22, 3, 3, 0,  3, 1, 2, 3, 20, 3, 3,
                            0,  1, 1, 23, 3, 3, 0, 2, 9,  9};
  for (size_t split = 1; split <= sizeof(stream); ++split) {
    TlsRecordCounter c;
    for (size_t i = 0; i < sizeof(stream); i += split) {
      const size_t n = std::min(split, sizeof(stream) - i);
      c.Feed({reinterpret_cast<const std::byte*>(stream + i), n});
      if (i == 0 && n <= 5) {
        EXPECT_FALSE(c.at_boundary());
      }
    }
    EXPECT_EQ(c.records(), 3u);
    EXPECT_EQ(c.since_ccs(), 1u);
    EXPECT_TRUE(c.at_boundary());
  }
}

// Decrypts one TLS application-data record with the exported direction
// `d`; empty on failure. TLS 1.3: RFC 8446 §5.2 (inner type after the
// content) and §5.3 (nonce = iv xor sequence). TLS 1.2: RFC 5288 §3
// (nonce = salt + explicit nonce from the record; AAD = sequence, type,
// version, length).
std::string DecryptRecord(uint16_t version, const KtlsDirection& d,
                          std::span<const std::byte> record) {
  if (record.size() < 5 + 16) return "";
  const uint8_t* r = reinterpret_cast<const uint8_t*>(record.data());
  const size_t len = (size_t(r[3]) << 8) | r[4];
  if (record.size() != 5 + len || r[0] != 23) return "";
  uint8_t nonce[12];
  std::vector<uint8_t> aad;
  const uint8_t* ct = r + 5;
  size_t ct_len = len - 16;
  if (version == 0x0304) {
    std::memcpy(nonce, d.iv.data(), 12);
    for (int i = 0; i < 8; ++i)
      nonce[4 + i] ^= uint8_t(d.sequence >> (56 - 8 * i));
    aad.assign(r, r + 5);
  } else {
    std::memcpy(nonce, d.iv.data(), 4);
    std::memcpy(nonce + 4, ct, 8);
    ct += 8;
    ct_len -= 8;
    for (int i = 0; i < 8; ++i)
      aad.push_back(uint8_t(d.sequence >> (56 - 8 * i)));
    aad.push_back(23);
    aad.push_back(r[1]);
    aad.push_back(r[2]);
    aad.push_back(uint8_t(ct_len >> 8));
    aad.push_back(uint8_t(ct_len));
  }
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  const EVP_CIPHER* cipher =
      d.key_bytes == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
  std::vector<uint8_t> out(ct_len + 16);
  int n = 0, m = 0;
  bool ok =
      EVP_DecryptInit_ex(ctx, cipher, nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) == 1 &&
      EVP_DecryptInit_ex(ctx, nullptr, nullptr, d.key.data(), nonce) == 1 &&
      EVP_DecryptUpdate(ctx, nullptr, &n, aad.data(), int(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx, out.data(), &n, ct, int(ct_len)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16,
                          const_cast<uint8_t*>(ct + ct_len)) == 1 &&
      EVP_DecryptFinal_ex(ctx, out.data() + n, &m) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) return "";
  size_t plain = size_t(n + m);
  if (version == 0x0304) {
    // Strip the padding and the inner content type (must be 23).
    while (plain > 0 && out[plain - 1] == 0) --plain;
    if (plain == 0 || out[plain - 1] != 23) return "";
    --plain;
  }
  return std::string(reinterpret_cast<const char*>(out.data()), plain);
}

TEST_F(Tls, KtlsKeysDecryptTheNextRecords) {
  struct Case {
    const char* version;
    const char* suite;  // TLS 1.3 ciphersuite or TLS 1.2 cipher list
    size_t key_bytes;
  };
  for (const Case& k : {Case{"1.3", "TLS_AES_128_GCM_SHA256", 16},
                        Case{"1.3", "TLS_AES_256_GCM_SHA384", 32},
                        Case{"1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", 16},
                        Case{"1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", 32}}) {
    SCOPED_TRACE(std::string(k.version) + " " + k.suite);
    TlsConfig s = Server(), c = Client();
    s.ktls = c.ktls = true;
    s.min_version = s.max_version = k.version;
    Pair p = Make(s, c);
    ASSERT_NE(p.server, nullptr);
    if (std::string(k.version) == "1.3") {
      ASSERT_EQ(SSL_CTX_set_ciphersuites(p.sctx->native(), k.suite), 1);
    } else {
      ASSERT_EQ(SSL_CTX_set_cipher_list(p.sctx->native(), k.suite), 1);
    }
    // The context changed after the sessions were made: make new ones.
    p.server = *TlsSession::Create(*p.sctx);
    p.client = *TlsSession::Create(*p.cctx);
    p.client->Start();
    Exchange(*p.client, *p.server, 11);
    ASSERT_TRUE(p.server->open()) << p.server->error();
    ASSERT_TRUE(p.client->open()) << p.client->error();
    // Some traffic first, so the sequence numbers are not trivially 0/1.
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(p.client->WritePlaintext(Bytes("ping")));
      Exchange(*p.client, *p.server);
      EXPECT_EQ(ReadAll(*p.server), "ping");
      ASSERT_TRUE(p.server->WritePlaintext(Bytes("pong")));
      ASSERT_TRUE(p.server->WritePlaintext(Bytes("pong2")));
      Exchange(*p.client, *p.server);
      EXPECT_EQ(ReadAll(*p.client), "pongpong2");
    }
    ASSERT_TRUE(p.server->TxAtBoundary());
    ASSERT_TRUE(p.server->RxAtBoundary());
    absl::StatusOr<KtlsKeys> sk = p.server->ExportKtls();
    absl::StatusOr<KtlsKeys> ck = p.client->ExportKtls();
    ASSERT_TRUE(sk.ok()) << sk.status();
    ASSERT_TRUE(ck.ok()) << ck.status();
    EXPECT_EQ(sk->tx.key_bytes, k.key_bytes);
    // The two ends agree: my TX is your RX.
    EXPECT_EQ(sk->tx.key, ck->rx.key);
    EXPECT_EQ(sk->rx.key, ck->tx.key);
    EXPECT_EQ(sk->tx.sequence, ck->rx.sequence);
    EXPECT_EQ(sk->rx.sequence, ck->tx.sequence);
    EXPECT_NE(sk->tx.key, sk->rx.key);
    // The next record each side writes decrypts with the exported state.
    std::vector<std::byte> rec(4096);
    ASSERT_TRUE(p.client->WritePlaintext(Bytes("client secret")));
    size_t n = p.client->TakeCiphertext(rec);
    EXPECT_EQ(DecryptRecord(sk->version, sk->rx, {rec.data(), n}),
              "client secret");
    ASSERT_TRUE(p.server->WritePlaintext(Bytes("server secret")));
    n = p.server->TakeCiphertext(rec);
    EXPECT_EQ(DecryptRecord(sk->version, sk->tx, {rec.data(), n}),
              "server secret");
    // The record after that one has the next sequence number; the stale
    // one must not decrypt it (so the check above can fail).
    KtlsDirection next = sk->tx;
    ASSERT_TRUE(p.server->WritePlaintext(Bytes("again")));
    n = p.server->TakeCiphertext(rec);
    EXPECT_EQ(DecryptRecord(sk->version, next, {rec.data(), n}), "");
    next.sequence += 1;
    EXPECT_EQ(DecryptRecord(sk->version, next, {rec.data(), n}), "again");
  }
}

TEST_F(Tls, KtlsExportNeedsTheKtlsContext) {
  Pair p = Make(Server(), Client());
  Exchange(*p.client, *p.server);
  ASSERT_TRUE(p.server->open());
  EXPECT_TRUE(absl::IsFailedPrecondition(p.server->ExportKtls().status()));
}

TEST(KernelTls, ProbeNamesWhatIsMissing) {
  const absl::Status s = ProbeKernelTls();
  if (s.ok()) {
    SUCCEED() << "the kernel has the tls ULP";
    return;
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find("TCP_ULP"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace ringlab::mqtt
