// Typed DDS entities over a DomainParticipant: Topic<T>, DataWriter<T> and
// DataReader<T> for any T described by CdrType<T> and TopicType<T> (see
// rtps/cdr.h).
//
//   Topic<KeyedSeq> topic("DDSPerfRPingKS");
//   EndpointQos qos = EndpointQos::WriterDefaults();
//   absl::StatusOr<std::unique_ptr<DataWriter<KeyedSeq>>> w =
//       DataWriter<KeyedSeq>::Create(dp, topic, qos);
//   (*w)->Write(sample);                          // serialize + send now
//   auto r = DataReader<KeyedSeq>::Create(dp, topic, reader_qos);
//   KeyedSeq got; SampleInfo info;
//   while ((*r)->Take(&got, &info)) { ... }       // reuses got's buffers
//
// Samples are written as XCDR1 little endian (what Cyclone DDS 0.10 writes
// and expects for @final types). Readers accept every plain encoding the
// CDR reader knows (XCDR1 and XCDR2, both orders).
//
// Ownership: entities borrow the DomainParticipant, which must outlive them.
// Steady-state Write/Take allocate nothing: Write serializes straight into
// the core's write buffer (swapped into the history, buffers are reused),
// and Take() reuses the caller's object's capacity.
// Errors: Create returns the core's status (bad QoS, empty names); Write
// returns ResourceExhausted when a KEEP_ALL history is full.
#ifndef RINGLAB_RTPS_TOPIC_H_
#define RINGLAB_RTPS_TOPIC_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rtps/cdr.h"
#include "rtps/domain_participant.h"

namespace ringlab::rtps {

template <typename T>
class Topic {
 public:
  explicit Topic(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }
  std::string_view type_name() const { return TopicType<T>::kTypeName; }

 private:
  std::string name_;
};

// The key hash of a serialized T, for readers of keyed topics (peers send
// none). If TopicType<T> has
//   static bool ReadKey(CdrReader& payload, CdrWriter& key_be_xcdr2);
// (read the payload up to the last key member, write the key members), only
// the key is decoded; otherwise the whole sample is, into a scratch T.
template <typename T>
KeyHashFunction MakeKeyHashFunction() {
  if constexpr (requires(CdrReader & r, CdrWriter & w) {
                  TopicType<T>::ReadKey(r, w);
                }) {
    return [](std::span<const std::byte> payload, KeyHash* out) {
      if (payload.size() < 4) return false;
      uint16_t id =
          static_cast<uint16_t>(std::to_integer<uint16_t>(payload[0]) << 8 |
                                std::to_integer<uint16_t>(payload[1]));
      EncodingInfo info;
      if (!DescribeEncoding(id, &info) || info.parameter_list) return false;
      CdrReader r(payload.subspan(4), info.endian, info.version);
      if (info.delimited) {
        uint32_t len = 0;
        if (!r.ReadDHeader(&len)) return false;
      }
      std::array<std::byte, 64> key;
      CdrWriter w(std::span<std::byte>(key), Endian::kBig, CdrVersion::kXcdr2);
      if (!TopicType<T>::ReadKey(r, w) || !w.ok()) return false;
      *out = KeyHashFromSerializedKey(std::span(key).first(w.size()),
                                      TopicType<T>::kMaxKeyBytes <= 16);
      return true;
    };
  } else {
    auto scratch = std::make_shared<T>();
    return [scratch](std::span<const std::byte> payload, KeyHash* out) {
      if (!DeserializeSample(payload, scratch.get())) return false;
      *out = ComputeKeyHash(*scratch);
      return true;
    };
  }
}

template <typename T>
class DataWriter {
 public:
  static absl::StatusOr<std::unique_ptr<DataWriter>> Create(
      DomainParticipant& dp, const Topic<T>& topic,
      EndpointQos qos = EndpointQos::WriterDefaults()) {
    WriterConfig c;
    c.topic_name = topic.name();
    c.type_name = std::string(topic.type_name());
    c.qos = std::move(qos);
    c.keyed = TopicType<T>::kKeyed;
    absl::StatusOr<EndpointHandle> h =
        dp.core().CreateWriter(std::move(c), dp.loop().now());
    if (!h.ok()) return h.status();
    dp.Flush();
    return std::unique_ptr<DataWriter>(new DataWriter(dp, *h));
  }

  // Writes `value` with the given source timestamp (wall clock ns).
  // The sample is serialized once, into a buffer the core then takes into
  // its history without copying (Participant::WriteBuffered).
  absl::Status Write(const T& value, int64_t source_time_ns) {
    Participant& core = dp_.core();
    if (!SerializeSample(value, Encoding::kCdrLe, core.WriteBuffer())) {
      return absl::InvalidArgumentError("sample does not serialize");
    }
    absl::Status s = core.WriteBuffered(handle_, ComputeKeyHash(value),
                                        source_time_ns, dp_.loop().now());
    if (s.ok()) dp_.Flush();
    return s;
  }
  absl::Status Write(const T& value) { return Write(value, WallClockNanos()); }

  EndpointHandle handle() const { return handle_; }
  size_t matched() const { return dp_.core().MatchedCount(handle_); }
  bool all_acknowledged() const { return dp_.core().AllAcknowledged(handle_); }

 private:
  DataWriter(DomainParticipant& dp, EndpointHandle h) : dp_(dp), handle_(h) {}
  DomainParticipant& dp_;
  EndpointHandle handle_;
};

template <typename T>
class DataReader {
 public:
  static absl::StatusOr<std::unique_ptr<DataReader>> Create(
      DomainParticipant& dp, const Topic<T>& topic,
      EndpointQos qos = EndpointQos::ReaderDefaults()) {
    ReaderConfig c;
    c.topic_name = topic.name();
    c.type_name = std::string(topic.type_name());
    c.qos = std::move(qos);
    c.keyed = TopicType<T>::kKeyed;
    if (c.keyed) c.key_hash_from_payload = MakeKeyHashFunction<T>();
    absl::StatusOr<EndpointHandle> h =
        dp.core().CreateReader(std::move(c), dp.loop().now());
    if (!h.ok()) return h.status();
    dp.Flush();
    return std::unique_ptr<DataReader>(new DataReader(dp, *h));
  }

  // The next sample with data, decoded into *out. Samples without data
  // (dispose/unregister) and undecodable ones are skipped; `skipped()`
  // counts the latter.
  bool Take(T* out, SampleInfo* info = nullptr) {
    while (const ReceivedSample* s = dp_.core().Take(handle_)) {
      if (!s->info.valid_data) continue;
      if (!DeserializeSample(s->payload, out)) {
        ++undecodable_;
        continue;
      }
      if (info != nullptr) *info = s->info;
      return true;
    }
    return false;
  }
  size_t available() const { return dp_.core().Available(handle_); }
  EndpointHandle handle() const { return handle_; }
  size_t matched() const { return dp_.core().MatchedCount(handle_); }
  uint64_t undecodable() const { return undecodable_; }

 private:
  DataReader(DomainParticipant& dp, EndpointHandle h) : dp_(dp), handle_(h) {}
  DomainParticipant& dp_;
  EndpointHandle handle_;
  uint64_t undecodable_ = 0;
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_TOPIC_H_
