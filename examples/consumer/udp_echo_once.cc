// Uses the installed ringlab::transport: sends one datagram to itself on the
// preset named by argv[1] (default "auto") and prints what the Loop chose.
// Exit 0 when the datagram came back, 1 otherwise.
#include <cstdio>
#include <cstring>
#include <string>

#include "transport/loop.h"

namespace {

using ringlab::Endpoint;
using ringlab::MonotonicNow;
using ringlab::transport::BufferLease;
using ringlab::transport::Loop;
using ringlab::transport::LoopOptions;
using ringlab::transport::SocketHandler;
using ringlab::transport::SocketId;
using ringlab::transport::UdpOptions;

class Receiver : public SocketHandler {
 public:
  void OnDatagram(SocketId, const Endpoint&, BufferLease data) override {
    received =
        std::string(reinterpret_cast<const char*>(data.data()), data.size());
  }
  std::string received;
};

}  // namespace

int main(int argc, char** argv) {
  LoopOptions options;
  options.backend = argc > 1 ? argv[1] : "auto";
  auto loop = Loop::Create(options);
  if (!loop.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loop.status().message()).c_str());
    return 1;
  }
  Receiver receiver;
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  auto socket = (*loop)->OpenUdp(udp, &receiver);
  if (!socket.ok()) return 1;
  auto self = (*loop)->LocalEndpoint(*socket);
  if (!self.ok()) return 1;
  const char kMessage[] = "hello from an installed ringlab";
  BufferLease lease = (*loop)->AcquireBuffer();
  std::memcpy(lease.data(), kMessage, sizeof(kMessage) - 1);
  lease.set_size(sizeof(kMessage) - 1);
  (*loop)->SendTo(*socket, std::move(lease), *self);
  const auto deadline = MonotonicNow() + std::chrono::seconds(5);
  while (receiver.received.empty() && MonotonicNow() < deadline) {
    (*loop)->RunOnce(std::chrono::milliseconds(10));
  }
  std::printf(
      "backend=%s flags=%s received='%s'\n", (*loop)->backend().name.c_str(),
      (*loop)->backend().flags.ToString().c_str(), receiver.received.c_str());
  return receiver.received == kMessage ? 0 : 1;
}
