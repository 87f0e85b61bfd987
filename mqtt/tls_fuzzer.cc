// libFuzzer target: the TLS listener's view of hostile bytes. A server
// TlsSession (mqtt/tls.h, a kTLS-ready context on a throw-away self-signed
// certificate) is fed the input as ciphertext, split where the input's first
// byte says; output is taken with varying buffers and plaintext read
// whenever there is any. Checks: nothing crashes; a session never reports
// open and failed at once; TlsRecordCounter counts the same records and
// bytes whatever the split (the kTLS sequence numbers depend on it); and
// ExportKtls() on a session that is not open refuses.
// fuzz-deps: mqtt/tls.cc
// fuzz-libs: -lssl -lcrypto
#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>

#include "mqtt/tls.h"

namespace {

using ringlab::mqtt::TlsConfig;
using ringlab::mqtt::TlsContext;
using ringlab::mqtt::TlsRecordCounter;
using ringlab::mqtt::TlsRole;
using ringlab::mqtt::TlsSession;

std::shared_ptr<TlsContext> MakeServerContext() {
  char dir[] = "/tmp/ringlab_tls_fuzzer.XXXXXX";
  if (mkdtemp(dir) == nullptr) abort();
  const std::string cert = std::string(dir) + "/s.crt";
  const std::string key = std::string(dir) + "/s.key";
  if (!ringlab::mqtt::WriteSelfSignedCertificate(cert, key, {"localhost"},
                                                 {"127.0.0.1"})
           .ok()) {
    abort();
  }
  TlsConfig c;
  c.role = TlsRole::kServer;
  c.cert_file = cert;
  c.key_file = key;
  c.ktls = true;
  auto ctx = TlsContext::Create(c);
  if (!ctx.ok()) abort();
  // The context has read the files; they are not needed any more.
  std::remove(cert.c_str());
  std::remove(key.c_str());
  std::remove(dir);
  return *ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<TlsContext> ctx = MakeServerContext();
  if (size == 0) return 0;
  const size_t chunk = size_t(data[0] % 64) + 1;
  const auto input = std::as_bytes(std::span(data + 1, size - 1));

  // The record counter: one piece vs. `chunk`-sized pieces.
  TlsRecordCounter whole, split;
  whole.Feed(input);
  for (size_t pos = 0; pos < input.size(); pos += chunk) {
    split.Feed(input.subspan(pos, std::min(chunk, input.size() - pos)));
  }
  if (whole.records() != split.records() || whole.bytes() != split.bytes() ||
      whole.at_boundary() != split.at_boundary() ||
      whole.since_ccs() != split.since_ccs()) {
    abort();
  }

  auto session = TlsSession::Create(*ctx);
  if (!session.ok()) abort();
  TlsSession& s = **session;
  s.Start();
  std::byte out[700];
  for (size_t pos = 0; pos < input.size(); pos += chunk) {
    const bool ok = s.PutCiphertext(
        input.subspan(pos, std::min(chunk, input.size() - pos)));
    if (!ok && !s.failed()) abort();
    if (s.open() && s.failed()) abort();
    while (s.TakeCiphertext(std::span(out, 1 + pos % sizeof(out))) > 0) {
    }
    if (s.open()) {
      while (s.ReadPlaintext(out) > 0) {
      }
    }
    if (s.failed()) break;
  }
  // Random bytes cannot finish a handshake (they would need our key).
  if (s.open()) abort();
  if (s.ExportKtls().ok()) abort();
  return 0;
}
