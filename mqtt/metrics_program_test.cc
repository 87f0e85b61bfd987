// The broker program's metrics during a run, on epoll and uring-fixed, with
// one Loop and with --threads=2:
// known load over raw sockets, then a scrape of /metrics (checked against
// the load) and the $SYS tree as a subscriber sees it.
#include <sys/socket.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "mqtt/internal/test_support.h"

namespace ringlab::mqtt {
namespace {

using internal::OurBroker;
using internal::RawSocket;
using internal::StartOurBroker;

constexpr int kMessages = 50;

bool ConnectMqtt(RawSocket& s, uint16_t port, std::string_view id) {
  if (!s.Connect(port)) return false;
  Connect c;
  c.version = Version::k311;
  c.client_id = id;
  c.keep_alive_s = 0;
  std::vector<std::byte> ack;
  return s.SendPacket(c, Version::k311) && s.ReadPacket(&ack) &&
         ack.size() == 4 && ack[3] == std::byte(0);
}

bool SubscribeTo(RawSocket& s, std::string_view filter) {
  SubscribeEntry e{filter, {}};
  Subscribe sub;
  sub.packet_id = 1;
  sub.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
  std::vector<std::byte> ack;
  return s.SendPacket(sub, Version::k311) && s.ReadPacket(&ack) &&
         PacketType(uint8_t(ack[0]) >> 4) == PacketType::kSuback;
}

// One PUBLISH's topic and payload, or false.
bool ReadPublish(RawSocket& s, std::string* topic, std::string* payload) {
  std::vector<std::byte> bytes;
  if (!s.ReadPacket(&bytes)) return false;
  Frame f;
  size_t needed = 0;
  if (ParseFrame(bytes, kMaxPacketBytes, &f, &needed) != FrameResult::kFrame) {
    return false;
  }
  Packet p;
  if (!DecodePacket(f, Version::k311, &p).ok()) return false;
  const Publish* pub = std::get_if<Publish>(&p);
  if (pub == nullptr) return false;
  topic->assign(pub->topic);
  payload->assign(reinterpret_cast<const char*>(pub->payload.data()),
                  pub->payload.size());
  return true;
}

std::string HttpGet(uint16_t port, const char* path) {
  RawSocket s;
  if (!s.Connect(port)) return "";
  const std::string req =
      absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\n\r\n");
  if (!s.Send(AsBytes(req))) return "";
  std::string out;
  char buf[4096];
  while (true) {  // until the server's FIN (or the 5 s receive timeout)
    const ssize_t n = ::recv(s.fd(), buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

std::map<std::string, double> Figures(const std::string& response) {
  std::map<std::string, double> out;
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return out;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(response).substr(body + 4), '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    double v = 0;
    if (sp != absl::string_view::npos &&
        absl::SimpleAtod(line.substr(sp + 1), &v)) {
      out[std::string(line.substr(0, sp))] = v;
    }
  }
  return out;
}

// (backend, --threads): with 2 Loops the figures are the sums over both,
// served from a snapshot at most 250 ms old.
class MetricsProgram
    : public testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(MetricsProgram, ScrapeAndSysMatchTheLoad) {
  const auto& [backend, threads] = GetParam();
  absl::StatusOr<OurBroker> b =
      StartOurBroker(backend, {"--metrics_port=0", "--sys_interval_s=1",
                               absl::StrCat("--threads=", threads)});
  if (absl::IsUnimplemented(b.status())) GTEST_SKIP() << b.status().message();
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<std::string> line =
      b->process->WaitForLine("^METRICS ", absl::Seconds(5));
  ASSERT_TRUE(line.ok()) << line.status();
  int metrics_port = 0;
  ASSERT_TRUE(
      absl::SimpleAtoi(line->substr(line->rfind(':') + 1), &metrics_port));

  RawSocket sub, pub;
  ASSERT_TRUE(ConnectMqtt(sub, b->port, "sub"));
  ASSERT_TRUE(SubscribeTo(sub, "t/#"));
  ASSERT_TRUE(ConnectMqtt(pub, b->port, "pub"));
  for (int i = 0; i < kMessages; ++i) {
    Publish p;
    p.topic = "t/x";
    p.payload = AsBytes(std::string_view("0123456789"));
    ASSERT_TRUE(pub.SendPacket(p, Version::k311));
  }
  std::string topic, payload;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(ReadPublish(sub, &topic, &payload)) << i;
    EXPECT_EQ(topic, "t/x");
  }

  std::string response;
  std::map<std::string, double> m;
  // One Loop answers from its counters; several from the last snapshot, so
  // a scrape may come before it covers the load.
  for (int attempt = 0; attempt < 40; ++attempt) {
    response = HttpGet(uint16_t(metrics_port), "/metrics");
    ASSERT_EQ(response.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << response;
    m = Figures(response);
    if (threads == 1 || m["ringlab_mqtt_publish_sent_total"] == kMessages) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(m["ringlab_mqtt_clients_connected"], 2);
  EXPECT_EQ(m["ringlab_mqtt_subscriptions"], 1);
  EXPECT_EQ(m["ringlab_mqtt_publish_received_total"], kMessages);
  // Deliveries: ours, plus any $SYS publish (nobody subscribes to $SYS yet).
  EXPECT_EQ(m["ringlab_mqtt_publish_sent_total"], kMessages);
  // Each PUBLISH is 2 + 2 + 3 + 10 = 17 bytes.
  EXPECT_GE(m["ringlab_mqtt_bytes_received_total"], kMessages * 17);
  EXPECT_GT(m["ringlab_loop_kernel_entries_total"], 0);
  EXPECT_GT(m["ringlab_loop_completions_total"], 0);
  EXPECT_EQ(m.count("ringlab_loop_buffer_ring_misses_total"), 1u);
  EXPECT_EQ(HttpGet(uint16_t(metrics_port), "/nope").rfind("HTTP/1.1 404", 0),
            0u);

  // $SYS: retained, so a late subscriber gets the last figures at once, and
  // fresh ones every second.
  RawSocket sys;
  ASSERT_TRUE(ConnectMqtt(sys, b->port, "sys"));
  ASSERT_TRUE(SubscribeTo(sys, "$SYS/broker/publish/messages/received"));
  bool seen = false;
  for (int i = 0; i < 5 && !seen; ++i) {  // each read waits up to 5 s
    if (!ReadPublish(sys, &topic, &payload)) break;
    seen = payload == absl::StrCat(kMessages);
  }
  EXPECT_TRUE(seen) << "last $SYS payload: " << payload;
}

INSTANTIATE_TEST_SUITE_P(Backends, MetricsProgram,
                         testing::Combine(testing::Values("epoll",
                                                          "uring-fixed"),
                                          testing::Values(1, 2)),
                         [](const auto& info) {
                           std::string s = std::get<0>(info.param);
                           for (char& c : s) c = c == '-' ? '_' : c;
                           if (std::get<1>(info.param) > 1) {
                             absl::StrAppend(&s, "_threads",
                                             std::get<1>(info.param));
                           }
                           return s;
                         });

}  // namespace
}  // namespace ringlab::mqtt
