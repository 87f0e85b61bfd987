// Interop: mosquitto_pub / mosquitto_sub (-V mqttv311 and -V mqttv5)
// against our broker program on epoll and uring-fixed; and our client
// driver against a mosquitto the test starts on a free loopback port with
// its own config. Skipped (with the reason) when a binary is missing.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "mqtt/client_driver.h"
#include "mqtt/internal/test_support.h"
#include "testing/peers.h"
#include "testing/process.h"
#include "testing/skip.h"

namespace ringlab::mqtt {
namespace {

using internal::OurBroker;
using internal::StartOurBroker;
using testkit::Process;
using testkit::ProcessOptions;

struct Param {
  std::string backend;
  std::string version;  // mosquitto_* -V value
  int threads = 1;      // --threads (multi_broker.h)
};

class MosquittoClients : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    for (const char* c : {"mosquitto_sub", "mosquitto_pub"}) {
      RINGLAB_SKIP_IF_MISSING(
          testkit::FindBinary(c, "apt-get install mosquitto-clients").status());
    }
    std::vector<std::string> extra;
    if (GetParam().threads > 1) {
      extra.push_back(absl::StrCat("--threads=", GetParam().threads));
    }
    absl::StatusOr<OurBroker> b = StartOurBroker(GetParam().backend, extra);
    if (absl::IsUnimplemented(b.status())) GTEST_SKIP() << b.status().message();
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }

  std::vector<std::string> Common() const {
    return {"-h", "127.0.0.1",       "-p", absl::StrCat(broker_.port),
            "-V", GetParam().version};
  }

  // mosquitto_sub -d prints "received SUBACK"; after it no publish is
  // missed. `args` are extra flags; exits after `count` messages or 15 s.
  std::unique_ptr<Process> Sub(std::vector<std::string> args, int count,
                               int timeout_s = 15, bool wait_suback = true) {
    ProcessOptions o;
    o.argv = {"mosquitto_sub", "-d"};
    for (const std::string& a : Common()) o.argv.push_back(a);
    for (const std::string& a : args) o.argv.push_back(a);
    if (count > 0) {
      o.argv.push_back("-C");
      o.argv.push_back(absl::StrCat(count));
    }
    o.argv.push_back("-W");
    o.argv.push_back(absl::StrCat(timeout_s));
    o.line_buffered = true;
    absl::StatusOr<std::unique_ptr<Process>> p = Process::Start(std::move(o));
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    if (!wait_suback) return std::move(*p);
    absl::StatusOr<std::string> acked =
        (*p)->WaitForLine("received SUBACK", absl::Seconds(10));
    EXPECT_TRUE(acked.ok()) << acked.status() << (*p)->OutputTail();
    return acked.ok() ? std::move(*p) : nullptr;
  }

  void Pub(std::vector<std::string> args) {
    ProcessOptions o;
    o.argv = {"mosquitto_pub"};
    for (const std::string& a : Common()) o.argv.push_back(a);
    for (const std::string& a : args) o.argv.push_back(a);
    absl::StatusOr<testkit::ProcessResult> r =
        testkit::RunProcess(std::move(o), absl::Seconds(10));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->exit.success())
        << r->exit.ToString() << r->stdout_text << r->stderr_text;
  }

  // The payload lines of a finished mosquitto_sub (-d noise removed).
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

  OurBroker broker_;
};

INSTANTIATE_TEST_SUITE_P(
    BackendsAndVersions, MosquittoClients,
    testing::Values(Param{"epoll", "mqttv311"}, Param{"epoll", "mqttv5"},
                    Param{"uring-fixed", "mqttv311"},
                    Param{"uring-fixed", "mqttv5"}, Param{"epoll", "mqttv5", 2},
                    Param{"uring-fixed", "mqttv311", 2}),
    [](const auto& info) {
      std::string s = info.param.backend + "_" + info.param.version;
      if (info.param.threads > 1) {
        s += absl::StrCat("_threads", info.param.threads);
      }
      for (char& c : s) c = c == '-' ? '_' : c;
      return s;
    });

TEST_P(MosquittoClients, EveryQos) {
  std::unique_ptr<Process> sub = Sub({"-t", "q/#", "-q", "2", "-v"}, 3);
  ASSERT_NE(sub, nullptr);
  Pub({"-t", "q/0", "-q", "0", "-m", "zero"});
  Pub({"-t", "q/1", "-q", "1", "-m", "one"});
  Pub({"-t", "q/2", "-q", "2", "-m", "two"});
  EXPECT_EQ(Messages(*sub),
            (std::vector<std::string>{"q/0 zero", "q/1 one", "q/2 two"}));
}

TEST_P(MosquittoClients, Retained) {
  Pub({"-t", "r/state", "-r", "-q", "1", "-m", "kept"});
  // %r prints the retain flag, %t the topic, %p the payload.
  std::unique_ptr<Process> sub = Sub({"-t", "r/#", "-F", "%r %t %p"}, 1);
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(Messages(*sub), (std::vector<std::string>{"1 r/state kept"}));
  // An empty retained payload clears it: a new subscriber gets nothing.
  Pub({"-t", "r/state", "-r", "-n"});
  std::unique_ptr<Process> again = Sub({"-t", "r/#", "-F", "%t %p"}, 0, 2);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(Messages(*again).empty());
}

TEST_P(MosquittoClients, Will) {
  std::unique_ptr<Process> watcher = Sub({"-t", "will/#", "-v"}, 1);
  ASSERT_NE(watcher, nullptr);
  // A client with a will, killed without a DISCONNECT.
  ProcessOptions o;
  o.argv = {"mosquitto_sub", "-d"};
  for (const std::string& a : Common()) o.argv.push_back(a);
  for (const char* a :
       {"-t", "nothing", "--will-topic", "will/dev", "--will-payload", "gone",
        "--will-qos", "1", "-k", "60"}) {
    o.argv.push_back(a);
  }
  o.line_buffered = true;
  o.stop_signal = 9;  // SIGKILL: no DISCONNECT
  absl::StatusOr<std::unique_ptr<Process>> victim = Process::Start(o);
  ASSERT_TRUE(victim.ok()) << victim.status();
  ASSERT_TRUE(
      (*victim)->WaitForLine("received SUBACK", absl::Seconds(10)).ok());
  (*victim)->Stop();
  EXPECT_EQ(Messages(*watcher), (std::vector<std::string>{"will/dev gone"}));
}

TEST_P(MosquittoClients, DollarTopics) {
  std::unique_ptr<Process> all = Sub({"-t", "#", "-v"}, 1);
  std::unique_ptr<Process> dollar = Sub({"-t", "$app/#", "-v"}, 1);
  ASSERT_NE(all, nullptr);
  ASSERT_NE(dollar, nullptr);
  Pub({"-t", "$app/x", "-m", "internal"});  // MQTT-4.7.2-1: not for "#"
  Pub({"-t", "app/x", "-m", "public"});
  EXPECT_EQ(Messages(*all), (std::vector<std::string>{"app/x public"}));
  EXPECT_EQ(Messages(*dollar), (std::vector<std::string>{"$app/x internal"}));
}

TEST_P(MosquittoClients, SharedSubscription) {
  // One Loop alternates between its two connected members, 2 each. Over
  // Loops the split depends on where the kernel put each client, so there
  // the subscribers run until their timeout and only the union is checked:
  // each job once (it was each job once per Loop before the Loops shared
  // the groups' member counts).
  const bool split = GetParam().threads > 1;
  const int count = split ? 0 : 2;
  const int timeout_s = split ? 6 : 15;
  std::unique_ptr<Process> a =
      Sub({"-t", "$share/workers/jobs", "-q", "1"}, count, timeout_s);
  std::unique_ptr<Process> b =
      Sub({"-t", "$share/workers/jobs", "-q", "1"}, count, timeout_s);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (int i = 0; i < 4; ++i) {
    Pub({"-t", "jobs", "-q", "1", "-m", absl::StrCat("job", i)});
  }
  std::vector<std::string> got = Messages(*a);
  std::vector<std::string> more = Messages(*b);
  got.insert(got.end(), more.begin(), more.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"job0", "job1", "job2", "job3"}));
}

// Message expiry is an MQTT 5 property: this suite runs with -V mqttv5 only.
class MosquittoClientsV5 : public MosquittoClients {};
INSTANTIATE_TEST_SUITE_P(Backends, MosquittoClientsV5,
                         testing::Values(Param{"epoll", "mqttv5"},
                                         Param{"uring-fixed", "mqttv5"}),
                         [](const auto& info) {
                           std::string s = info.param.backend;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

TEST_P(MosquittoClientsV5, MessageExpiry) {
  // A persistent session that goes offline (-E: exit once subscribed).
  std::vector<std::string> session = {"-c", "-i", "expiring", "-x", "60",
                                      "-q", "1",  "-t",       "exp"};
  {
    std::vector<std::string> args = session;
    args.push_back("-E");
    std::unique_ptr<Process> first = Sub(args, 0);
    ASSERT_NE(first, nullptr);
    ASSERT_TRUE(first->Wait(absl::Seconds(10)).ok());
  }
  Pub({"-t", "exp", "-q", "1", "-m", "short", "-D", "publish",
       "message-expiry-interval", "1"});
  Pub({"-t", "exp", "-q", "1", "-m", "long", "-D", "publish",
       "message-expiry-interval", "120"});
  absl::SleepFor(absl::Milliseconds(2100));
  // The queued message may arrive before the SUBACK, and -C 1 then exits:
  // do not wait for the SUBACK line.
  std::unique_ptr<Process> back = Sub(session, 1, 15, /*wait_suback=*/false);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(Messages(*back), (std::vector<std::string>{"long"}));
}

// ---- Our client against mosquitto
// --------------------------------------------

class Collector : public ClientDriver::Listener {
 public:
  void OnClientEvent(ClientDriver&, const ClientEvent& e) override {
    events.push_back(e.kind);
    if (e.kind == ClientEvent::Kind::kConnected) {
      session_present = e.session_present;
    }
    if (e.kind == ClientEvent::Kind::kMessage) {
      messages.push_back(std::string(AsString(e.message.payload)));
      qos.push_back(e.message.qos);
    }
    if (e.kind == ClientEvent::Kind::kPublished) ++published;
    if (e.kind == ClientEvent::Kind::kSubscribed) ++subscribed;
  }
  size_t Count(ClientEvent::Kind k) const {
    return std::count(events.begin(), events.end(), k);
  }
  std::vector<ClientEvent::Kind> events;
  std::vector<std::string> messages;
  std::vector<int> qos;
  int published = 0;
  int subscribed = 0;
  bool session_present = false;
};

class OurClientAgainstMosquitto : public testing::TestWithParam<Version> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testkit::MosquittoBroker>> b =
        testkit::StartMosquitto();
    RINGLAB_SKIP_IF_MISSING(b.status());
    ASSERT_TRUE(b.ok()) << b.status();
    mosquitto_ = std::move(*b);
    transport::LoopOptions lo;
    lo.backend = "epoll";
    absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
        transport::Loop::Create(lo);
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
  }
  void TearDown() override {
    clients_.clear();  // before the Loop
  }

  ClientDriver& NewClient(Collector* c, std::string id, bool clean = true,
                          uint32_t expiry = 0) {
    ClientDriverOptions o;
    o.server = Endpoint::Loopback(mosquitto_->port());
    o.client.version = GetParam();
    o.client.client_id = std::move(id);
    o.client.clean_start = clean;
    o.client.session_expiry_s = expiry;
    absl::StatusOr<std::unique_ptr<ClientDriver>> d =
        ClientDriver::Create(loop_.get(), o, c);
    EXPECT_TRUE(d.ok());
    clients_.push_back(std::move(*d));
    return *clients_.back();
  }
  // Runs the Loop until `done` or 10 s.
  bool RunUntil(const std::function<bool()>& done) {
    const Timestamp deadline = MonotonicNow() + std::chrono::seconds(10);
    while (!done()) {
      if (MonotonicNow() > deadline) return false;
      loop_->RunOnce(std::chrono::milliseconds(10));
    }
    return true;
  }

  std::unique_ptr<testkit::MosquittoBroker> mosquitto_;
  std::unique_ptr<transport::Loop> loop_;
  std::vector<std::unique_ptr<ClientDriver>> clients_;
};

INSTANTIATE_TEST_SUITE_P(Versions, OurClientAgainstMosquitto,
                         testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

TEST_P(OurClientAgainstMosquitto, PublishSubscribeEveryQos) {
  Collector sc, pc;
  ClientDriver& sub = NewClient(&sc, "ours-sub");
  ClientDriver& pub = NewClient(&pc, "ours-pub");
  ASSERT_TRUE(sub.Connect().ok());
  ASSERT_TRUE(pub.Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return sub.connected() && pub.connected(); }));
  ASSERT_TRUE(sub.Subscribe("t/#", {.max_qos = 2}).ok());
  ASSERT_TRUE(RunUntil([&] { return sc.subscribed == 1; }));
  for (uint8_t q = 0; q <= 2; ++q) {
    ASSERT_TRUE(
        pub.Publish("t/x", AsBytes(absl::StrCat("m", q)), {.qos = q}).ok());
  }
  ASSERT_TRUE(
      RunUntil([&] { return sc.messages.size() == 3 && pc.published == 2; }));
  EXPECT_EQ(sc.messages, (std::vector<std::string>{"m0", "m1", "m2"}));
  EXPECT_EQ(sc.qos, (std::vector<int>{0, 1, 2}));
  sub.Disconnect();
  pub.Disconnect();
  EXPECT_TRUE(
      RunUntil([&] { return !sub.transport_open() && !pub.transport_open(); }));
}

TEST_P(OurClientAgainstMosquitto, PersistentSession) {
  Collector sc, pc;
  ClientDriver& sub = NewClient(&sc, "ours-durable", /*clean=*/false, 300);
  ClientDriver& pub = NewClient(&pc, "ours-pub2");
  ASSERT_TRUE(sub.Connect().ok());
  ASSERT_TRUE(pub.Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return sub.connected() && pub.connected(); }));
  ASSERT_TRUE(sub.Subscribe("d", {.max_qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return sc.subscribed == 1; }));
  sub.Disconnect();
  ASSERT_TRUE(RunUntil([&] { return !sub.transport_open(); }));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        pub.Publish("d", AsBytes(absl::StrCat("offline", i)), {.qos = 1}).ok());
  }
  ASSERT_TRUE(RunUntil([&] { return pc.published == 3; }));
  ASSERT_TRUE(sub.Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return sc.messages.size() == 3; }));
  EXPECT_TRUE(sc.session_present);
  EXPECT_EQ(sc.messages,
            (std::vector<std::string>{"offline0", "offline1", "offline2"}));
}

}  // namespace
}  // namespace ringlab::mqtt
