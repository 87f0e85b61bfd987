// dds_hello: two DDS participants in one process, on loopback, exchange a
// keyed sample through SPDP/SEDP discovery, using only the installed
// ringlab::rtps package.
//
//   dds_hello [backend] [domain]      # e.g. dds_hello epoll 42
//
// Exits 0 once the reader got the sample, 1 on error or after 10 s.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "rtps/ddsperf_types.h"
#include "rtps/domain_participant.h"
#include "rtps/topic.h"

using namespace ringlab;
using namespace ringlab::rtps;

int main(int argc, char** argv) {
  DomainParticipantOptions options;
  options.backend = argc > 1 ? argv[1] : "epoll";
  options.domain_id = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 77;
  options.interface_address = "127.0.0.1";  // keep SPDP multicast on lo
  auto a = DomainParticipant::Create(options);
  auto b = DomainParticipant::Create(options);
  if (!a.ok() || !b.ok()) {
    std::fprintf(
        stderr, "dds_hello: %s\n",
        std::string((a.ok() ? b.status() : a.status()).message()).c_str());
    return 1;
  }
  Topic<KeyedSeq> topic("HelloKS");
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.durability = DurabilityKind::kTransientLocal;  // late joiners get it
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  rq.durability = DurabilityKind::kTransientLocal;
  auto writer = DataWriter<KeyedSeq>::Create(**a, topic, wq);
  auto reader = DataReader<KeyedSeq>::Create(**b, topic, rq);
  if (!writer.ok() || !reader.ok()) return 1;
  KeyedSeq hello{1, 42, {'h', 'e', 'l', 'l', 'o'}};
  if (!(*writer)->Write(hello).ok()) return 1;
  const Timestamp end = MonotonicNow() + std::chrono::seconds(10);
  KeyedSeq got;
  SampleInfo info;
  while (MonotonicNow() < end) {
    (*a)->RunOnce(std::chrono::milliseconds(5));
    (*b)->RunOnce(std::chrono::milliseconds(5));
    if ((*reader)->Take(&got, &info)) {
      std::printf("dds_hello: got seq %u key %u \"%.*s\" from %s on %s\n",
                  got.seq, got.keyval, static_cast<int>(got.baggage.size()),
                  reinterpret_cast<const char*>(got.baggage.data()),
                  info.writer.ToString().c_str(),
                  (*b)->loop().backend().name.c_str());
      return got.keyval == 42 ? 0 : 1;
    }
  }
  std::fprintf(stderr, "dds_hello: no sample within 10 s\n");
  return 1;
}
