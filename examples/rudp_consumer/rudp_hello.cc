// Uses the installed ringlab::rudp: a server and a client endpoint on one
// Loop (preset argv[1], default "auto"), the client connects, sends one
// reliable message through 20% in-process loss, and the server answers it.
// Exit 0 when the answer came back, 1 otherwise.
#include <cstdio>
#include <cstring>
#include <string>

#include "transport/loop.h"
#include "udp/loop_endpoint.h"

namespace {

using ringlab::Endpoint;
using ringlab::MonotonicNow;
using namespace ringlab::rudp;

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string Text(const MessageView& m) {
  std::string s(m.size(), '\0');
  m.CopyTo({reinterpret_cast<std::byte*>(s.data()), s.size()});
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  ringlab::transport::LoopOptions loop_options;
  loop_options.backend = argc > 1 ? argv[1] : "auto";
  auto loop = ringlab::transport::Loop::Create(loop_options);
  if (!loop.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loop.status().message()).c_str());
    return 1;
  }
  LoopEndpointOptions options;
  options.host.connection.initial_rtt = std::chrono::milliseconds(10);
  ringlab::transport::SimImpairment lossy;
  lossy.loss_probability = 0.2;
  options.impairment = lossy;
  auto server = LoopEndpoint::Create(loop->get(), options);
  options.impairment_seed = 2;
  auto client = LoopEndpoint::Create(loop->get(), options);
  if (!server.ok() || !client.ok()) return 1;

  const std::string question = "hello from an installed rudp";
  std::string answer;
  (*server)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kMessage) {
      const std::string reply = "re: " + Text(e.message);
      (*server)->Send(e.connection, 0, Bytes(reply));
    }
  });
  (*client)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kConnected) {
      (*client)->Send(e.connection, 0, Bytes(question));
    }
    if (e.type == EventType::kMessage) answer = Text(e.message);
  });
  auto connection = (*client)->Connect((*server)->local_endpoint());
  if (!connection.ok()) return 1;
  const auto deadline = MonotonicNow() + std::chrono::seconds(10);
  while (answer.empty() && MonotonicNow() < deadline) {
    (*loop)->RunOnce(std::chrono::milliseconds(10));
  }
  std::printf("backend=%s answer='%s' lost_in_impairment=%llu\n",
              (*loop)->backend().name.c_str(), answer.c_str(),
              (unsigned long long)((*client)->stats().impairment_dropped +
                                   (*server)->stats().impairment_dropped));
  return answer == "re: " + question ? 0 : 1;
}
