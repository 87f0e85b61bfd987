// libFuzzer target: parameter lists (RTPS 2.5 §9.4.2.11) and the SPDP/SEDP
// data decoded from them, in both byte orders, plus inline QoS.
// fuzz-deps: rtps/parameter_list.cc rtps/discovery_data.cc
// fuzz-deps: rtps/cdr.cc rtps/qos.cc rtps/types.cc transport/endpoint.cc
#include <cstddef>
#include <cstdint>
#include <span>

#include "rtps/discovery_data.h"
#include "rtps/parameter_list.h"

using namespace ringlab::rtps;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data),
                                   size);
  for (Endian e : {Endian::kLittle, Endian::kBig}) {
    ParameterListReader r(bytes, e);
    Parameter p;
    while (r.Next(&p)) {
      CdrReader v = ParameterValueReader(p, e);
      std::string s;
      (void)v.ReadString(&s);
    }
    bool has_key = false;
    KeyHash key;
    uint32_t status = 0;
    (void)ParseInlineQos(bytes, e, &has_key, &key, &status);
  }
  ParticipantData pd;
  if (ParseParticipant(bytes, &pd) == DiscoveryParseError::kOk) {
    std::vector<std::byte> again;
    SerializeParticipant(pd, &again);
    ParticipantData back;
    if (ParseParticipant(again, &back) != DiscoveryParseError::kOk)
      __builtin_trap();
  }
  EndpointData ed;
  if (ParseEndpoint(bytes, &ed) == DiscoveryParseError::kOk) {
    std::vector<std::byte> again;
    SerializeEndpoint(ed, &again);
    EndpointData back;
    if (ParseEndpoint(again, &back) != DiscoveryParseError::kOk)
      __builtin_trap();
    (void)ed.qos.Validate();
  }
  return 0;
}
