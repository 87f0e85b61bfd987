// TLS interop: mosquitto_pub / mosquitto_sub with --cafile (and client
// certificates) against our broker program's TLS listener, on epoll and
// uring-fixed, with and without --ktls; refusals (a client that does not
// trust us, plaintext on the TLS port, a missing or foreign client
// certificate) end cleanly and show in SERVER_STATS; and our TLS client
// (ringlab_mqtt_bench --tls) against mosquitto's own TLS listener. The
// certificates are made in the test with `openssl req`.
#include <sys/stat.h>

#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "mqtt/internal/test_support.h"
#include "mqtt/internal/tls_test_certs.h"
#include "testing/peers.h"
#include "testing/process.h"
#include "testing/skip.h"

#ifndef RINGLAB_MQTT_BENCH_BINARY
#error "RINGLAB_MQTT_BENCH_BINARY must name the bench program"
#endif

namespace ringlab::mqtt {
namespace {

using internal::OurBroker;
using internal::StartOurBroker;
using testkit::Process;
using testkit::ProcessOptions;

struct Param {
  std::string backend;
  bool ktls;
  int threads = 1;  // >1: a TLS listener on every Loop, one port
};

// The value of "key":N in the first SERVER_STATS line, or -1.
int64_t Stat(const std::string& out, const std::string& key) {
  const size_t line = out.find("SERVER_STATS ");
  if (line == std::string::npos) return -1;
  const std::regex re("\"" + key + "\":([0-9]+)");
  std::smatch m;
  const std::string tail = out.substr(line);
  if (!std::regex_search(tail, m, re)) return -1;
  int64_t v = -1;
  return absl::SimpleAtoi(m[1].str(), &v) ? v : -1;
}

class TlsInterop : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    for (const char* c : {"mosquitto_sub", "mosquitto_pub"}) {
      RINGLAB_SKIP_IF_MISSING(
          testkit::FindBinary(c, "apt-get install mosquitto-clients").status());
    }
    absl::StatusOr<internal::TestCerts> c = internal::MakeTestCerts();
    RINGLAB_SKIP_IF_MISSING(c.status());
    ASSERT_TRUE(c.ok()) << c.status();
    certs_ = std::make_unique<internal::TestCerts>(std::move(*c));
  }

  // Our broker with a TLS listener; `extra` adds flags.
  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--tls_listen=127.0.0.1:0",
                                     "--cert=" + certs_->server_cert,
                                     "--key=" + certs_->server_key};
    if (GetParam().ktls) args.push_back("--ktls");
    if (GetParam().threads > 1) {
      args.push_back(absl::StrCat("--threads=", GetParam().threads));
    }
    for (std::string& a : extra) args.push_back(std::move(a));
    absl::StatusOr<OurBroker> b = StartOurBroker(GetParam().backend, args);
    if (absl::IsUnimplemented(b.status())) GTEST_SKIP() << b.status().message();
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
    const std::vector<std::string> lines =
        broker_.process->MatchingLines("^TLS_READY ");
    ASSERT_EQ(lines.size(), 1u) << broker_.process->OutputTail();
    uint32_t port = 0;
    ASSERT_TRUE(
        absl::SimpleAtoi(lines[0].substr(lines[0].rfind(':') + 1), &port));
    tls_port_ = uint16_t(port);
  }

  // Stops the broker and returns its stdout (SERVER_STATS).
  std::string Stop() {
    broker_.process->Stop();
    return broker_.process->Stdout();
  }

  std::vector<std::string> Tls(const std::string& version = "mqttv311") {
    return {"-h", "localhost", "-p",       absl::StrCat(tls_port_),
            "-V", version,     "--cafile", certs_->ca};
  }

  std::unique_ptr<Process> Sub(std::vector<std::string> args, int count) {
    ProcessOptions o;
    o.argv = {"mosquitto_sub", "-d", "-C", absl::StrCat(count), "-W", "15"};
    for (std::string& a : args) o.argv.push_back(std::move(a));
    o.line_buffered = true;
    absl::StatusOr<std::unique_ptr<Process>> p = Process::Start(std::move(o));
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    absl::StatusOr<std::string> acked =
        (*p)->WaitForLine("received SUBACK", absl::Seconds(10));
    EXPECT_TRUE(acked.ok()) << acked.status() << (*p)->OutputTail();
    return acked.ok() ? std::move(*p) : nullptr;
  }

  // mosquitto_pub; returns its exit status.
  testkit::ExitStatus Pub(std::vector<std::string> args) {
    ProcessOptions o;
    o.argv = {"mosquitto_pub"};
    for (std::string& a : args) o.argv.push_back(std::move(a));
    absl::StatusOr<testkit::ProcessResult> r =
        testkit::RunProcess(std::move(o), absl::Seconds(10));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->exit : testkit::ExitStatus{};
  }

  std::vector<std::string> Messages(Process& p) {
    absl::StatusOr<testkit::ExitStatus> e = p.Wait(absl::Seconds(20));
    EXPECT_TRUE(e.ok()) << e.status() << p.OutputTail();
    std::vector<std::string> out;
    for (absl::string_view line : absl::StrSplit(p.Stdout(), '\n')) {
      if (line.empty() || absl::StartsWith(line, "Client ") ||
          absl::StartsWith(line, "Subscribed")) {
        continue;
      }
      out.emplace_back(line);
    }
    return out;
  }

  std::unique_ptr<internal::TestCerts> certs_;
  OurBroker broker_;
  uint16_t tls_port_ = 0;
};

INSTANTIATE_TEST_SUITE_P(
    Backends, TlsInterop,
    testing::Values(Param{"epoll", false}, Param{"epoll", true},
                    Param{"uring-fixed", false}, Param{"uring-fixed", true},
                    Param{"epoll", false, 2}, Param{"uring-fixed", true, 2}),
    [](const auto& info) {
      std::string s = info.param.backend + (info.param.ktls ? "_ktls" : "");
      if (info.param.threads > 1) {
        absl::StrAppend(&s, "_threads", info.param.threads);
      }
      for (char& c : s) c = c == '-' ? '_' : c;
      return s;
    });

TEST_P(TlsInterop, MosquittoClientsOverTls) {
  Start();
  for (const char* version : {"mqttv311", "mqttv5"}) {
    SCOPED_TRACE(version);
    std::vector<std::string> sub_args = Tls(version);
    for (const char* a : {"-t", "s/#", "-q", "2", "-v"}) sub_args.push_back(a);
    std::unique_ptr<Process> sub = Sub(sub_args, 3);
    ASSERT_NE(sub, nullptr);
    for (int qos = 0; qos < 3; ++qos) {
      std::vector<std::string> a = Tls(version);
      for (const std::string& x :
           {std::string("-t"), absl::StrCat("s/", qos), std::string("-q"),
            absl::StrCat(qos), std::string("-m"), absl::StrCat("tls", qos)}) {
        a.push_back(x);
      }
      EXPECT_TRUE(Pub(a).success());
    }
    EXPECT_EQ(Messages(*sub),
              (std::vector<std::string>{"s/0 tls0", "s/1 tls1", "s/2 tls2"}));
  }
  const std::string out = Stop();
  EXPECT_EQ(Stat(out, "handshakes_completed"), 8) << out;
  EXPECT_EQ(Stat(out, "failed_protocol"), 0);
  if (GetParam().ktls) {
    // Either the kernel took over, or each connection says it could not.
    EXPECT_EQ(Stat(out, "ktls_tx") + Stat(out, "ktls_unavailable"), 8) << out;
  }
}

TEST_P(TlsInterop, RefusalsAreCleanAndCounted) {
  Start();
  // A client that does not trust our certificate.
  std::vector<std::string> a = Tls();
  a[a.size() - 1] = certs_->other_ca;
  for (const char* x : {"-t", "r", "-m", "x"}) a.push_back(x);
  EXPECT_FALSE(Pub(a).success());
  // Plaintext MQTT on the TLS port.
  EXPECT_FALSE(Pub({"-h", "127.0.0.1", "-p", absl::StrCat(tls_port_), "-t", "r",
                    "-m", "x"})
                   .success());
  // The plain listener and the TLS one still serve.
  EXPECT_TRUE(internal::StillServed(broker_.port));
  a = Tls();
  for (const char* x : {"-t", "r", "-m", "ok", "-q", "1"}) a.push_back(x);
  EXPECT_TRUE(Pub(a).success());
  const std::string out = Stop();
  EXPECT_GE(Stat(out, "failed_peer_alert"), 1) << out;
  EXPECT_EQ(Stat(out, "failed_not_tls"), 1) << out;
  EXPECT_EQ(Stat(out, "handshakes_completed"), 1) << out;
}

TEST_P(TlsInterop, ClientCertificates) {
  Start({"--cafile=" + certs_->ca, "--require_certificate"});
  auto pub = [&](const std::string& cert, const std::string& key) {
    std::vector<std::string> a = Tls();
    if (!cert.empty()) {
      for (const std::string& x :
           {std::string("--cert"), cert, std::string("--key"), key}) {
        a.push_back(x);
      }
    }
    for (const char* x : {"-t", "c", "-m", "x", "-q", "1"}) a.push_back(x);
    return Pub(a).success();
  };
  EXPECT_FALSE(pub("", ""));
  EXPECT_FALSE(pub(certs_->other_client_cert, certs_->other_client_key));
  EXPECT_TRUE(pub(certs_->client_cert, certs_->client_key));
  const std::string out = Stop();
  EXPECT_EQ(Stat(out, "failed_no_peer_cert"), 1) << out;
  EXPECT_EQ(Stat(out, "failed_verify"), 1) << out;
  EXPECT_EQ(Stat(out, "handshakes_completed"), 1) << out;
}

TEST_P(TlsInterop, OurTlsClientAgainstOurBroker) {
  Start();
  ProcessOptions o;
  o.argv = {RINGLAB_MQTT_BENCH_BINARY,
            "--backend=" + GetParam().backend,
            absl::StrCat("--server=127.0.0.1:", tls_port_),
            "--tls",
            "--cafile=" + certs_->ca,
            "--mode=rtt",
            "--qos=1",
            "--samples=300",
            "--warmup=30",
            "--timeout_s=20"};
  if (GetParam().ktls) o.argv.push_back("--ktls");
  absl::StatusOr<testkit::ProcessResult> r =
      testkit::RunProcess(std::move(o), absl::Seconds(25));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->exit.success()) << r->stdout_text << r->stderr_text;
  EXPECT_NE(r->stdout_text.find("\"samples\":300"), std::string::npos)
      << r->stdout_text;
  EXPECT_NE(r->stdout_text.find("\"tls_handshakes\":2"), std::string::npos)
      << r->stdout_text;
}

TEST(TlsMosquitto, OurTlsClientAgainstMosquitto) {
  absl::StatusOr<internal::TestCerts> certs = internal::MakeTestCerts();
  RINGLAB_SKIP_IF_MISSING(certs.status());
  ASSERT_TRUE(certs.ok()) << certs.status();
  // mosquitto started as root drops to its own user before it reads the
  // files: let it read them (test keys only).
  ::chmod(certs->dir.path().c_str(), 0755);
  for (const std::string& f :
       {certs->ca, certs->server_cert, certs->server_key}) {
    ::chmod(f.c_str(), 0644);
  }
  testkit::MosquittoOptions mo;
  mo.extra_config_lines = {"cafile " + certs->ca,
                           "certfile " + certs->server_cert,
                           "keyfile " + certs->server_key};
  absl::StatusOr<std::unique_ptr<testkit::MosquittoBroker>> m =
      testkit::StartMosquitto(mo);
  RINGLAB_SKIP_IF_MISSING(m.status());
  ASSERT_TRUE(m.ok()) << m.status();
  for (const char* version : {"1.2", "1.3"}) {
    SCOPED_TRACE(version);
    ProcessOptions o;
    o.argv = {RINGLAB_MQTT_BENCH_BINARY,
              "--backend=epoll",
              "--server=" + (*m)->address(),
              "--tls",
              "--cafile=" + certs->ca,
              std::string("--tls_version=") + version,
              "--mode=rtt",
              "--qos=2",
              "--samples=200",
              "--warmup=20",
              "--timeout_s=20"};
    absl::StatusOr<testkit::ProcessResult> r =
        testkit::RunProcess(std::move(o), absl::Seconds(25));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->exit.success()) << r->stdout_text << r->stderr_text;
    EXPECT_NE(r->stdout_text.find("\"samples\":200"), std::string::npos);
    EXPECT_NE(
        r->stdout_text.find(absl::StrCat("\"tls_version\":\"TLSv", version)),
        std::string::npos)
        << r->stdout_text;
  }
}

}  // namespace
}  // namespace ringlab::mqtt
