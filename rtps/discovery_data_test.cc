// SPDP/SEDP data as parameter lists (RTPS 2.5 §9.6.2.2): round trips, a
// hand-written Cyclone-style announcement, defaults, and rejection of
// malformed lists and unknown must-understand PIDs.
#include "rtps/discovery_data.h"

#include <gtest/gtest.h>

#include "rtps/qos.h"

namespace ringlab::rtps {
namespace {

std::vector<std::byte> B(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int x : v) out.push_back(std::byte(x));
  return out;
}

TEST(DiscoveryDataTest, ParticipantRoundTrip) {
  ParticipantData p;
  p.guid_prefix.bytes = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  p.vendor = kVendorRinglab;
  p.builtin_endpoints = 0x3f;
  p.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7410)};
  p.default_unicast = {Locator::UdpV4(0x7f000001, 7411)};
  p.metatraffic_multicast = {Locator::UdpV4(0xefff0001, 7400)};
  p.lease_duration_ns = 10'000'000'000;
  p.has_domain_id = true;
  p.domain_id = 3;
  p.user_data = "DDSPerf:0:42:host";
  p.entity_name = "ringlab";
  std::vector<std::byte> out;
  SerializeParticipant(p, &out);
  EXPECT_EQ(out[1], std::byte{3});  // PL_CDR_LE
  ParticipantData back;
  ASSERT_EQ(ParseParticipant(out, &back), DiscoveryParseError::kOk);
  EXPECT_EQ(back.guid_prefix, p.guid_prefix);
  EXPECT_EQ(back.builtin_endpoints, 0x3fu);
  EXPECT_EQ(back.metatraffic_unicast, p.metatraffic_unicast);
  EXPECT_EQ(back.default_unicast, p.default_unicast);
  EXPECT_EQ(back.metatraffic_multicast, p.metatraffic_multicast);
  EXPECT_EQ(back.lease_duration_ns, p.lease_duration_ns);
  EXPECT_EQ(back.domain_id, 3u);
  EXPECT_EQ(back.user_data, p.user_data);
  EXPECT_EQ(back.entity_name, "ringlab");
  EXPECT_EQ(back.vendor, kVendorRinglab);
}

// Written out by hand the way Cyclone 0.10 lays SPDP out (big-endian here
// to cover PL_CDR_BE): GUID, vendor, a vendor-specific PID we must ignore,
// a locator and the lease.
TEST(DiscoveryDataTest, ParsesBigEndianWithVendorSpecificPid) {
  auto bytes = B(
      {0x00, 0x02, 0x00, 0x00,  // PL_CDR_BE
       0x00, 0x50, 0x00, 16,    // GUID
       1,    0x10, 3,    4,    5,    6,    7,    8,    9,    10, 11, 12,   0,
       0,    1,    0xc1, 0x00, 0x16, 0x00, 4,    0x01, 0x10, 0,  0,  // vendor
       0x80, 0x07, 0x00, 4,    0xde, 0xad, 0xbe, 0xef,  // vendor PID
       0x00, 0x32, 0x00, 24,                            // metatraffic
       0,    0,    0,    1,    0,    0,    0x1c, 0xf2, 0,    0,  0,  0,    0,
       0,    0,    0,    0,    0,    0,    0,    127,  0,    0,  1,  0x00, 0x02,
       0x00, 8,    0,    0,    0,    10,   0x80, 0,    0,    0,  // 10.5 s
       0x00, 0x01, 0x00, 0x00});                                 // sentinel
  ParticipantData p;
  ASSERT_EQ(ParseParticipant(bytes, &p), DiscoveryParseError::kOk);
  EXPECT_EQ(p.vendor, kVendorEclipseCyclone);
  ASSERT_EQ(p.metatraffic_unicast.size(), 1u);
  EXPECT_EQ(p.metatraffic_unicast[0].ToString(), "udp/127.0.0.1:7410");
  EXPECT_EQ(p.lease_duration_ns, 10'500'000'000);
  EXPECT_EQ(p.builtin_endpoints, 0u);
}

TEST(DiscoveryDataTest, RejectsUnknownMustUnderstandAndMalformed) {
  auto must = B({0x00, 0x03, 0x00, 0x00, 0x50, 0x00, 16, 0, 1, 2, 3, 4, 5, 6, 7,
                 8, 9, 10, 11, 12, 0, 0, 1, 0xc1, 0x01, 0x40, 4, 0, 0, 0, 0,
                 0,  // PID 0x4001: must
                     // understand
                 0x01, 0x00, 0x00, 0x00});
  ParticipantData p;
  EXPECT_EQ(ParseParticipant(must, &p),
            DiscoveryParseError::kUnknownMustUnderstand);
  auto no_sentinel =
      B({0x00, 0x03, 0x00, 0x00, 0x50, 0x00, 16, 0,  1, 2, 3, 4,
         5,    6,    7,    8,    9,    10,   11, 12, 0, 0, 1, 0xc1});
  EXPECT_EQ(ParseParticipant(no_sentinel, &p),
            DiscoveryParseError::kMalformedList);
  auto no_guid = B({0x00, 0x03, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00});
  EXPECT_EQ(ParseParticipant(no_guid, &p), DiscoveryParseError::kMissingGuid);
  auto cdr = B({0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00});
  EXPECT_EQ(ParseParticipant(cdr, &p), DiscoveryParseError::kBadEncapsulation);
  // A locator parameter shorter than a locator.
  auto short_loc =
      B({0x00, 0x03, 0x00, 0x00, 0x50, 0x00, 16, 0,  1,    2,    3,    4,
         5,    6,    7,    8,    9,    10,   11, 12, 0,    0,    1,    0xc1,
         0x32, 0x00, 4,    0,    1,    0,    0,  0,  0x01, 0x00, 0x00, 0x00});
  EXPECT_EQ(ParseParticipant(short_loc, &p), DiscoveryParseError::kBadValue);
}

TEST(DiscoveryDataTest, LocatorListsAreCapped) {
  ParticipantData p;
  p.guid_prefix.bytes[0] = 1;
  for (int i = 0; i < 20; ++i) {
    p.default_unicast.push_back(Locator::UdpV4(0x7f000001, 8000 + i));
  }
  std::vector<std::byte> out;
  SerializeParticipant(p, &out);
  ParticipantData back;
  ASSERT_EQ(ParseParticipant(out, &back), DiscoveryParseError::kOk);
  EXPECT_EQ(back.default_unicast.size(), kMaxLocators);
  EXPECT_EQ(back.locators_dropped, 20 - kMaxLocators);
}

TEST(DiscoveryDataTest, PropertyListRoundTrip) {
  ParticipantData p;
  p.guid_prefix.bytes[11] = 3;
  p.properties = {{"__ProcessName", "ringlab_dds"}, {"__Pid", "42"}};
  std::vector<std::byte> out;
  SerializeParticipant(p, &out);
  ParticipantData back;
  ASSERT_EQ(ParseParticipant(out, &back), DiscoveryParseError::kOk);
  EXPECT_EQ(back.properties, p.properties);
  // More than kMaxProperties: the rest is validated, not kept.
  p.properties.clear();
  for (int i = 0; i < 40; ++i) p.properties.push_back({"k", "v"});
  SerializeParticipant(p, &out);
  ParticipantData many;
  ASSERT_EQ(ParseParticipant(out, &many), DiscoveryParseError::kOk);
  EXPECT_EQ(many.properties.size(), kMaxProperties);
}

TEST(DiscoveryDataTest, EndpointRoundTripAndDefaults) {
  EndpointData e;
  e.guid.prefix.bytes[0] = 7;
  e.guid.entity = EntityId::Make(3, EntityId::kUserReaderWithKey);
  e.topic_name = "DDSPerfRPingKS";
  e.type_name = "KeyedSeq";
  e.qos = EndpointQos::ReaderDefaults();
  e.qos.reliability = ReliabilityKind::kReliable;
  e.qos.durability = DurabilityKind::kTransientLocal;
  e.qos.history = HistoryKind::kKeepAll;
  e.qos.max_samples = 100;
  e.qos.partitions = {"a", "b*"};
  e.qos.deadline_ns = 1'000'000'000;
  e.unicast = {Locator::UdpV4(0x7f000001, 7411)};
  std::vector<std::byte> out;
  SerializeEndpoint(e, &out);
  EndpointData back;
  ASSERT_EQ(ParseEndpoint(out, &back), DiscoveryParseError::kOk);
  EXPECT_EQ(back.guid, e.guid);
  EXPECT_EQ(back.topic_name, e.topic_name);
  EXPECT_EQ(back.type_name, e.type_name);
  EXPECT_EQ(back.qos.reliability, ReliabilityKind::kReliable);
  EXPECT_EQ(back.qos.durability, DurabilityKind::kTransientLocal);
  EXPECT_EQ(back.qos.history, HistoryKind::kKeepAll);
  EXPECT_EQ(back.qos.max_samples, 100);
  EXPECT_EQ(back.qos.partitions, e.qos.partitions);
  EXPECT_EQ(back.qos.deadline_ns, 1'000'000'000);
  EXPECT_EQ(back.unicast, e.unicast);
  EXPECT_EQ(back.participant_guid.prefix, e.guid.prefix);
  // Without PID_RELIABILITY a reader defaults to best effort (§9.6.2.2).
  auto minimal = B({0x00, 0x03, 0x00, 0x00, 0x5a, 0x00, 16,   0,   7, 0,
                    0,    0,    0,    0,    0,    0,    0,    0,   0, 0,
                    0,    0,    3,    0x07, 0x01, 0x00, 0x00, 0x00});
  ASSERT_EQ(ParseEndpoint(minimal, &back), DiscoveryParseError::kOk);
  EXPECT_EQ(back.qos.reliability, ReliabilityKind::kBestEffort);
}

TEST(QosTest, RequestOfferedRules) {
  EndpointQos w = EndpointQos::WriterDefaults();
  EndpointQos r = EndpointQos::ReaderDefaults();
  EXPECT_EQ(CheckCompatible(w, r), QosPolicyId::kNone);
  w.reliability = ReliabilityKind::kBestEffort;
  r.reliability = ReliabilityKind::kReliable;
  EXPECT_EQ(CheckCompatible(w, r), QosPolicyId::kReliability);
  EXPECT_STREQ(QosPolicyName(CheckCompatible(w, r)), "RELIABILITY");
  w = EndpointQos::WriterDefaults();
  r.durability = DurabilityKind::kTransientLocal;
  EXPECT_EQ(CheckCompatible(w, r), QosPolicyId::kDurability);
  w.durability = DurabilityKind::kTransientLocal;
  EXPECT_EQ(CheckCompatible(w, r), QosPolicyId::kNone);
  r.deadline_ns = 1000;
  EXPECT_EQ(CheckCompatible(w, r), QosPolicyId::kDeadline);
  r.deadline_ns = kInfiniteNanos;
  w.data_representation = {kXcdr2Representation};
  EXPECT_EQ(CheckCompatible(w, r), QosPolicyId::kDataRepresentation);
  EXPECT_TRUE(PartitionsMatch({}, {""}));
  EXPECT_TRUE(PartitionsMatch({"ab*"}, {"abc"}));
  EXPECT_FALSE(PartitionsMatch({"a"}, {"b"}));
  EXPECT_FALSE(PartitionsMatch({}, {"x"}));
  EndpointQos bad = EndpointQos::WriterDefaults();
  bad.history_depth = 0;
  EXPECT_FALSE(bad.Validate().ok());
  bad = EndpointQos::WriterDefaults();
  bad.history_depth = 5;
  bad.max_samples_per_instance = 2;
  EXPECT_FALSE(bad.Validate().ok());
}

}  // namespace
}  // namespace ringlab::rtps
