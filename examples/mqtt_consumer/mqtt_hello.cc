// Uses the installed ringlab::mqtt: starts a broker on a free loopback port
// and a client on the same Loop (preset argv[1], default "auto"); the
// client subscribes, publishes at QoS 1 to itself, and exits 0 once the
// message came back and the publish was acknowledged.
#include <cstdio>
#include <memory>
#include <string>

#include "mqtt/broker_driver.h"
#include "mqtt/client_driver.h"
#include "transport/loop.h"

namespace {

using ringlab::Endpoint;
using ringlab::MonotonicNow;
using ringlab::mqtt::AsBytes;
using ringlab::mqtt::AsString;
using ringlab::mqtt::BrokerDriver;
using ringlab::mqtt::BrokerDriverOptions;
using ringlab::mqtt::ClientDriver;
using ringlab::mqtt::ClientDriverOptions;
using ringlab::mqtt::ClientEvent;

class Hello : public ClientDriver::Listener {
 public:
  void OnClientEvent(ClientDriver& client, const ClientEvent& e) override {
    switch (e.kind) {
      case ClientEvent::Kind::kConnected:
        (void)client.Subscribe("hello/#", {.max_qos = 1});
        break;
      case ClientEvent::Kind::kSubscribed:
        (void)client.Publish("hello/world", AsBytes("hello from ringlab::mqtt"),
                             {.qos = 1});
        break;
      case ClientEvent::Kind::kMessage:
        received = std::string(AsString(e.message.payload));
        break;
      case ClientEvent::Kind::kPublished:
        acked = true;
        break;
      default:
        break;
    }
  }
  std::string received;
  bool acked = false;
};

}  // namespace

int main(int argc, char** argv) {
  ringlab::transport::LoopOptions lo;
  lo.backend = argc > 1 ? argv[1] : "auto";
  lo.max_sockets = 64;
  auto loop = ringlab::transport::Loop::Create(lo);
  if (!loop.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loop.status().message()).c_str());
    return 1;
  }
  BrokerDriverOptions bo;
  bo.listen = Endpoint::Loopback(0);
  auto broker = BrokerDriver::Start(loop->get(), bo);
  if (!broker.ok()) return 1;
  Hello hello;
  ClientDriverOptions co;
  co.server = (*broker)->local_endpoint();
  co.client.client_id = "hello";
  auto client = ClientDriver::Create(loop->get(), co, &hello);
  if (!client.ok() || !(*client)->Connect().ok()) return 1;
  const auto deadline = MonotonicNow() + std::chrono::seconds(5);
  while ((hello.received.empty() || !hello.acked) &&
         MonotonicNow() < deadline) {
    (*loop)->RunOnce(std::chrono::milliseconds(10));
  }
  std::printf("backend=%s received='%s' acked=%d\n",
              (*loop)->backend().name.c_str(), hello.received.c_str(),
              int(hello.acked));
  client->reset();
  broker->reset();
  return hello.received == "hello from ringlab::mqtt" && hello.acked ? 0 : 1;
}
