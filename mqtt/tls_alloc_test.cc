// Counting-allocator test for the TLS record path, on TLS 1.2 and 1.3: once
// a session pair is open and warmed up, encrypting a message, moving its
// ciphertext and decrypting it allocates nothing in our code (operator
// new). OpenSSL is watched too (CRYPTO_set_mem_functions, installed before
// it allocates anything): OpenSSL 3.0's record writer builds each record
// with a WPACKET, which allocates small bookkeeping blocks (crypto/packet.c,
// 40 bytes: 2 per record on TLS 1.2, 4 on TLS 1.3) and frees them before
// the write returns. That is outside our control, so the test pins it down
// instead of hiding it: per record at most 4 blocks of at most 64 bytes,
// all freed again, and no reallocation (no buffer grows in steady state).
//
// This binary links testing/counting_allocator (the global operator new)
// and replaces OpenSSL's allocator; both count only between
// counting_allocator::Start() and Stop().
#include <openssl/crypto.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/tls.h"
#include "testing/counting_allocator.h"
#include "testing/process.h"

namespace {
size_t g_openssl_allocations = 0;

size_t g_openssl_reallocations = 0;
size_t g_openssl_frees = 0;
size_t g_openssl_largest_bytes = 0;

void* CountingMalloc(size_t n, const char*, int) {
  if (ringlab::counting_allocator::Counting()) {
    ++g_openssl_allocations;
    g_openssl_largest_bytes = std::max(g_openssl_largest_bytes, n);
  }
  return std::malloc(n);
}
void* CountingRealloc(void* p, size_t n, const char*, int) {
  if (ringlab::counting_allocator::Counting()) ++g_openssl_reallocations;
  return std::realloc(p, n);
}
void CountingFree(void* p, const char*, int) {
  if (ringlab::counting_allocator::Counting() && p != nullptr)
    ++g_openssl_frees;
  std::free(p);
}

// Before main(), so before OpenSSL's first allocation (it refuses a change
// after that).
const bool g_openssl_hooked =
    CRYPTO_set_mem_functions(CountingMalloc, CountingRealloc, CountingFree) ==
    1;
}  // namespace

namespace ringlab::mqtt {
namespace {

class TlsSteadyState : public testing::TestWithParam<std::string> {};

TEST_P(TlsSteadyState, NothingOursAndOpenSslBounded) {
  ASSERT_TRUE(g_openssl_hooked) << "OpenSSL allocated before main()";
  absl::StatusOr<testkit::TempDir> dir = testkit::TempDir::Create("tls_alloc");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string crt = dir->path() + "/s.crt", key = dir->path() + "/s.key";
  ASSERT_TRUE(
      WriteSelfSignedCertificate(crt, key, {"localhost"}, {"127.0.0.1"}).ok());
  TlsConfig sc;
  sc.role = TlsRole::kServer;
  sc.cert_file = crt;
  sc.key_file = key;
  sc.min_version = sc.max_version = GetParam();
  sc.ktls = true;  // the record counting kTLS needs runs too
  TlsConfig cc;
  cc.role = TlsRole::kClient;
  cc.ca_file = crt;
  cc.server_name = "localhost";
  auto sctx = TlsContext::Create(sc);
  auto cctx = TlsContext::Create(cc);
  ASSERT_TRUE(sctx.ok()) << sctx.status();
  ASSERT_TRUE(cctx.ok()) << cctx.status();
  std::unique_ptr<TlsSession> server = *TlsSession::Create(**sctx);
  std::unique_ptr<TlsSession> client = *TlsSession::Create(**cctx);
  server->Start();
  client->Start();

  std::vector<std::byte> wire(64 * 1024), plain(16 * 1024);
  // Moves all ciphertext from `a` to `b`; returns the plaintext bytes `b`
  // had ready afterwards.
  auto move = [&](TlsSession& a, TlsSession& b) {
    while (size_t n = a.TakeCiphertext(wire)) {
      b.PutCiphertext(std::span<const std::byte>(wire.data(), n));
    }
    size_t got = 0;
    while (size_t n = b.ReadPlaintext(plain)) got += n;
    return got;
  };
  for (int i = 0; i < 10 && !(client->open() && server->open()); ++i) {
    move(*client, *server);
    move(*server, *client);
  }
  ASSERT_TRUE(client->open() && server->open())
      << client->error() << " / " << server->error();

  // A PUBLISH-sized message each way per round.
  std::vector<std::byte> msg(200, std::byte{0x30});
  size_t received = 0;
  auto round = [&] {
    EXPECT_TRUE(client->WritePlaintext(msg));
    received += move(*client, *server);
    EXPECT_TRUE(server->WritePlaintext(msg));
    received += move(*server, *client);
  };
  for (int i = 0; i < 100; ++i) round();  // warm-up: buffers reach size
  received = 0;
  g_openssl_allocations = 0;
  g_openssl_reallocations = g_openssl_frees = g_openssl_largest_bytes = 0;
  constexpr size_t kRounds = 1000;
  counting_allocator::Start();
  for (size_t i = 0; i < kRounds; ++i) round();
  const size_t cxx_allocations = counting_allocator::Stop();
  EXPECT_EQ(received, 2 * kRounds * msg.size());
  EXPECT_EQ(cxx_allocations, 0u);
  // Two records per round (one each way).
  EXPECT_LE(g_openssl_allocations, 4 * 2 * kRounds);
  EXPECT_EQ(g_openssl_frees, g_openssl_allocations);
  EXPECT_EQ(g_openssl_reallocations, 0u);
  EXPECT_LE(g_openssl_largest_bytes, 64u);
  std::printf("OpenSSL blocks per record (TLS %s): %.2f\n", GetParam().c_str(),
              double(g_openssl_allocations) / double(2 * kRounds));
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsSteadyState,
                         testing::Values("1.2", "1.3"), [](const auto& info) {
                           return info.param == "1.2" ? "tls12" : "tls13";
                         });

TEST(TlsCountingAllocator, SeesOpenSslAllocations) {
  g_openssl_allocations = 0;
  counting_allocator::Start();
  void* p = OPENSSL_malloc(16);
  counting_allocator::Stop();
  OPENSSL_free(p);
  EXPECT_EQ(g_openssl_allocations, 1u);
}

}  // namespace
}  // namespace ringlab::mqtt
