// Metrics: the HTTP request reader's answers, the $SYS and Prometheus
// figures of a broker core after known load on a SimNetwork.
#include "mqtt/metrics.h"

#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "mqtt/internal/broker_sim.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::OwnedFrame;
using internal::RawClient;
using std::chrono::milliseconds;
using R = HttpRequestReader::Result;

R FeedAll(std::string_view text, size_t piece) {
  HttpRequestReader reader;
  R r = R::kNeedMore;
  for (size_t i = 0; i < text.size() && r == R::kNeedMore; i += piece) {
    r = reader.Feed(AsBytes(text.substr(i, piece)));
  }
  return r;
}

TEST(HttpRequestReaderTest, AnswersByPathAndMethod) {
  const std::string get =
      "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
  for (size_t piece : {1, 7, 1000}) {
    EXPECT_EQ(FeedAll(get, piece), R::kMetrics) << piece;
  }
  EXPECT_EQ(FeedAll("GET /metrics?x=1 HTTP/1.0\r\n\r\n", 5), R::kMetrics);
  EXPECT_EQ(FeedAll("GET /other HTTP/1.1\r\n\r\n", 100), R::kNotFound);
  EXPECT_EQ(FeedAll("POST /metrics HTTP/1.1\r\n\r\n", 100), R::kBadMethod);
  EXPECT_EQ(FeedAll("GET /metrics HTTP/2\r\n\r\n", 100), R::kBadRequest);
  EXPECT_EQ(FeedAll("GARBAGE\r\n\r\n", 100), R::kBadRequest);
  EXPECT_EQ(FeedAll("GET /metrics HTTP/1.1\r\n", 100), R::kNeedMore);
  EXPECT_EQ(FeedAll(std::string(20000, 'a'), 1000), R::kBadRequest);
  const std::string ok = HttpResponseFor(R::kMetrics, "a 1\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_NE(ok.find("Content-Length: 4\r\n"), std::string::npos);
  EXPECT_EQ(ok.substr(ok.size() - 4), "a 1\n");
  EXPECT_EQ(HttpResponseFor(R::kNotFound, "").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(HttpResponseFor(R::kBadMethod, "").rfind("HTTP/1.1 405", 0), 0u);
  EXPECT_EQ(HttpResponseFor(R::kBadRequest, "").rfind("HTTP/1.1 400", 0), 0u);
}

// Prometheus text -> name (with labels) -> value.
std::map<std::string, double> ParsePrometheus(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    double v = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(sp + 1), &v)) << line;
    out[std::string(line.substr(0, sp))] = v;
  }
  return out;
}

TEST(MetricsTest, FiguresMatchTheLoadSent) {
  BrokerSim sim;
  auto connect = [&](std::string_view id) -> RawClient& {
    RawClient& c = sim.AddClient();
    c.Open();
    Connect connect;
    connect.version = Version::k5;
    connect.client_id = id;
    connect.keep_alive_s = 0;
    c.Send(connect, Version::k5);
    sim.RunFor(milliseconds(1));
    OwnedFrame f;
    EXPECT_EQ(c.Expect<Connack>(Version::k5, &f).code, 0);
    return c;
  };
  RawClient& sub = connect("sub");
  RawClient& pub = connect("pub");
  SubscribeEntry e{"t/#", {}};
  mqtt::Subscribe s;
  s.packet_id = 1;
  s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
  sub.Send(s, Version::k5);
  constexpr int kMessages = 25;
  for (int i = 0; i < kMessages; ++i) {
    mqtt::Publish p;
    p.topic = "t/x";
    p.payload = AsBytes(std::string_view("0123456789"));
    p.retain = i == kMessages - 1;
    pub.Send(p, Version::k5);
  }
  sim.RunFor(milliseconds(10));
  int delivered = 0;
  while (sub.pending() > 0) {
    if (sub.Take().type() == PacketType::kPublish) ++delivered;
  }
  ASSERT_EQ(delivered, kMessages);

  transport::LoopCounters loop;
  loop.io_uring_enter = 7;
  loop.completions = 11;
  loop.buffer_ring_misses = 2;
  const BrokerMetrics m =
      CollectMetrics(sim.broker(), &loop, std::chrono::seconds(42));
  EXPECT_EQ(m.clients_connected, 2u);
  EXPECT_EQ(m.subscriptions, 1u);
  EXPECT_EQ(m.retained, 1u);
  EXPECT_EQ(m.publishes_received, uint64_t(kMessages));
  EXPECT_EQ(m.publishes_sent, uint64_t(kMessages));
  // 2 CONNECTs + 1 SUBSCRIBE + the publishes.
  EXPECT_EQ(m.packets_received, uint64_t(3 + kMessages));
  EXPECT_EQ(m.bytes_received, sim.broker().counters().bytes_received);
  EXPECT_GT(m.bytes_sent, uint64_t(kMessages) * 10);

  std::map<std::string, std::string> sys;
  ForEachSysTopic(m, [&](std::string_view topic, std::string_view payload) {
    sys[std::string(topic)] = std::string(payload);
  });
  EXPECT_EQ(sys["$SYS/broker/clients/connected"], "2");
  EXPECT_EQ(sys["$SYS/broker/publish/messages/received"], "25");
  EXPECT_EQ(sys["$SYS/broker/publish/messages/sent"], "25");
  EXPECT_EQ(sys["$SYS/broker/messages/received"], "28");
  EXPECT_EQ(sys["$SYS/broker/subscriptions/count"], "1");
  EXPECT_EQ(sys["$SYS/broker/retained messages/count"], "1");
  EXPECT_EQ(sys["$SYS/broker/uptime"], "42 seconds");
  EXPECT_EQ(sys["$SYS/broker/bytes/received"],
            std::to_string(m.bytes_received));

  std::map<std::string, double> prom = ParsePrometheus(RenderPrometheus(m));
  EXPECT_EQ(prom["ringlab_mqtt_publish_received_total"], kMessages);
  EXPECT_EQ(prom["ringlab_mqtt_publish_sent_total"], kMessages);
  EXPECT_EQ(prom["ringlab_mqtt_clients_connected"], 2);
  EXPECT_EQ(prom["ringlab_mqtt_retained_messages"], 1);
  EXPECT_EQ(prom["ringlab_mqtt_uptime_seconds"], 42);
  EXPECT_EQ(prom["ringlab_loop_kernel_entries_total"], 7);
  EXPECT_EQ(prom["ringlab_loop_kernel_entries_by_kind_total{kind=\"io_uring_"
                 "enter\"}"],
            7);
  EXPECT_EQ(prom["ringlab_loop_completions_total"], 11);
  EXPECT_EQ(prom["ringlab_loop_buffer_ring_misses_total"], 2);
  // Injected $SYS messages reach a $SYS subscriber and nobody else.
  SubscribeEntry se{"$SYS/#", {}};
  s.packet_id = 2;
  s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&se, 1));
  sub.Send(s, Version::k5);
  sim.RunFor(milliseconds(5));
  sub.Take();  // SUBACK
  ForEachSysTopic(m, [&](std::string_view topic, std::string_view payload) {
    InjectedMessage im;
    im.topic = topic;
    im.payload = AsBytes(payload);
    im.retain = true;
    sim.broker().PublishMessage(im, sim.now());
  });
  sim.RunFor(milliseconds(5));
  EXPECT_EQ(sub.pending(), sys.size());
  EXPECT_EQ(pub.pending(), 0u);
}

}  // namespace
}  // namespace ringlab::mqtt
