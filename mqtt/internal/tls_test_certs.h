// Test certificates made with the `openssl` command line in a fresh temp
// dir: a CA, a server certificate for localhost / 127.0.0.1 signed by it, a
// client certificate signed by it, and a second CA with a client
// certificate of its own (trusted by nobody). EC P-256 keys, valid 2 days.
//
//   absl::StatusOr<TestCerts> certs = MakeTestCerts();
//   RINGLAB_SKIP_IF_MISSING(certs.status());      // no openssl binary
//   ASSERT_TRUE(certs.ok()) << certs.status();
//   ... certs->ca, certs->server_cert, certs->server_key ...
#ifndef RINGLAB_MQTT_INTERNAL_TLS_TEST_CERTS_H_
#define RINGLAB_MQTT_INTERNAL_TLS_TEST_CERTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "testing/process.h"

namespace ringlab::mqtt::internal {

struct TestCerts {
  explicit TestCerts(testkit::TempDir d) : dir(std::move(d)) {}
  testkit::TempDir dir;
  std::string ca, ca_key;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  std::string other_ca;
  std::string other_client_cert, other_client_key;
};

inline absl::Status RunOpenssl(const std::string& cwd,
                               std::vector<std::string> args) {
  testkit::ProcessOptions o;
  o.argv = {"openssl"};
  for (std::string& a : args) o.argv.push_back(std::move(a));
  o.working_dir = cwd;
  absl::StatusOr<testkit::ProcessResult> r =
      testkit::RunProcess(std::move(o), absl::Seconds(20));
  if (!r.ok()) return r.status();
  if (!r->exit.success()) {
    return absl::InternalError(absl::StrCat(
        "openssl failed: ", r->exit.ToString(), ": ", r->stderr_text));
  }
  return absl::OkStatus();
}

inline absl::StatusOr<TestCerts> MakeTestCerts() {
  if (absl::StatusOr<std::string> bin =
          testkit::FindBinary("openssl", "apt-get install openssl");
      !bin.ok()) {
    return bin.status();
  }
  absl::StatusOr<testkit::TempDir> dir = testkit::TempDir::Create("tlscerts");
  if (!dir.ok()) return dir.status();
  const std::string d = dir->path();
  absl::StatusOr<std::string> ext = dir->WriteFile(
      "server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  if (!ext.ok()) return ext.status();
  auto ca = [&](const std::string& name, const std::string& cn) {
    return RunOpenssl(
        d, {"req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
            "/CN=" + cn, "-keyout", name + ".key", "-out", name + ".crt"});
  };
  auto leaf = [&](const std::string& name, const std::string& cn,
                  const std::string& issuer, bool server) -> absl::Status {
    if (absl::Status s = RunOpenssl(
            d, {"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=" + cn, "-keyout", name + ".key",
                "-out", name + ".csr"});
        !s.ok()) {
      return s;
    }
    std::vector<std::string> args = {"x509",
                                     "-req",
                                     "-in",
                                     name + ".csr",
                                     "-CA",
                                     issuer + ".crt",
                                     "-CAkey",
                                     issuer + ".key",
                                     "-CAcreateserial",
                                     "-days",
                                     "2",
                                     "-out",
                                     name + ".crt"};
    if (server) {
      args.push_back("-extfile");
      args.push_back("server.ext");
    }
    return RunOpenssl(d, std::move(args));
  };
  for (absl::Status s :
       {ca("ca", "ringlab-test-ca"), leaf("server", "localhost", "ca", true),
        leaf("client", "ringlab-client", "ca", false),
        ca("other", "ringlab-other-ca"),
        leaf("stranger", "ringlab-stranger", "other", false)}) {
    if (!s.ok()) return s;
  }
  TestCerts c(std::move(*dir));
  c.ca = d + "/ca.crt";
  c.ca_key = d + "/ca.key";
  c.server_cert = d + "/server.crt";
  c.server_key = d + "/server.key";
  c.client_cert = d + "/client.crt";
  c.client_key = d + "/client.key";
  c.other_ca = d + "/other.crt";
  c.other_client_cert = d + "/stranger.crt";
  c.other_client_key = d + "/stranger.key";
  return c;
}

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_TLS_TEST_CERTS_H_
