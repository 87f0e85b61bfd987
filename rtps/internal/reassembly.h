// FragmentReassembler: DATA_FRAG reassembly for one remote writer (DDSI-RTPS
// 2.5 §8.3.7.3, §8.4.14.1), bounded in samples per writer, in bytes across
// all writers of a participant (ReassemblyBudget), and in time (a partial
// sample that makes no progress for `timeout_ns` is dropped).
//
//   ReassemblyBudget budget{.limit_bytes = 64 << 20};
//   FragmentReassembler r(&budget, {.max_samples = 8});
//   FragmentInput in{sn, sample_size, fragment_size, first_fragment,
//                    fragment_count, bytes};
//   PartialSample* s = nullptr;
//   switch (r.Add(in, now, &s)) {
//     case ReassemblyOutcome::kCompleted: deliver(s->bytes()); r.Release(s);
//     ...
//   }
//   FragmentNumberSet missing;
//   if (r.Missing(*s, 1, s->total_fragments, &missing)) send NACK_FRAG(missing)
//
// A fragment is accepted only if it agrees with the partial sample it joins
// (same sampleSize and fragmentSize, §8.3.7.3.3) and lies inside it;
// overlapping fragments keep the bytes that came first. When every slot is
// taken, `keep_lowest` (reliable readers: the sample closest to delivery
// wins) evicts the highest sequence number for a lower one, otherwise (best
// effort: newer data wins) the lowest is evicted.
//
// Memory: slot buffers keep their capacity for reuse (no allocation per
// sample in steady state) up to kKeepCapacityBytes; the budget counts the
// capacity every slot holds, so the total never exceeds limit_bytes.
// Errors: outcomes, never exceptions. Threading: none.
#ifndef RINGLAB_RTPS_INTERNAL_REASSEMBLY_H_
#define RINGLAB_RTPS_INTERNAL_REASSEMBLY_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "rtps/types.h"
#include "transport/time.h"

namespace ringlab::rtps::internal {

// Shared by every reassembler of one participant.
struct ReassemblyBudget {
  size_t limit_bytes = 64 << 20;
  size_t used_bytes = 0;  // capacity held by all slots
};

struct FragmentInput {
  SequenceNumber sn = 0;
  uint32_t sample_size = 0;
  uint16_t fragment_size = 0;
  uint32_t fragment_start = 0;  // 1-based
  uint16_t fragment_count = 0;
  std::span<const std::byte> bytes;
};

// What a partial sample carries besides its bytes (from the submessages'
// inline QoS and INFO_TS); the caller fills it.
struct FragmentMeta {
  bool has_key_hash = false;
  KeyHash key_hash;
  uint32_t status_info = 0;
  bool key_only = false;
  int64_t source_time_ns = INT64_MIN;
};

struct PartialSample {
  SequenceNumber sn = 0;  // 0: the slot is free
  uint32_t sample_size = 0;
  uint16_t fragment_size = 0;
  uint32_t total_fragments = 0;
  uint32_t received_fragments = 0;
  Timestamp last_progress;
  FragmentMeta meta;
  // The reader's last NACK_FRAG round for this sample (the caller's
  // bookkeeping, reset with the slot): when, and up to which fragment.
  bool nacked = false;
  Timestamp nacked_at;
  uint32_t nacked_upto = 0;
  std::vector<std::byte> data;  // sample_size bytes while in use
  std::vector<uint64_t> have;   // a bit per fragment

  bool in_use() const { return sn != 0; }
  bool complete() const {
    return in_use() && received_fragments == total_fragments;
  }
  bool Has(uint32_t fn) const {
    return fn >= 1 && fn <= total_fragments &&
           ((have[(fn - 1) / 64] >> ((fn - 1) % 64)) & 1u);
  }
  std::span<const std::byte> bytes() const {
    return std::span<const std::byte>(data).first(sample_size);
  }
};

enum class ReassemblyOutcome : uint8_t {
  kAccepted,      // new fragments stored, sample still incomplete
  kCompleted,     // the sample is complete: deliver it, then Release()
  kDuplicate,     // every fragment was already there (or sample complete)
  kInconsistent,  // sampleSize/fragmentSize differ from the partial sample
  kTooLarge,      // sampleSize above max_sample_bytes
  kBadRange,      // fragment numbers or lengths outside the sample
  kNoMemory,      // the budget cannot hold the sample
  kRefused,       // every slot holds a sample that wins over this one
};
const char* ReassemblyOutcomeName(ReassemblyOutcome o);

class FragmentReassembler {
 public:
  struct Limits {
    size_t max_samples = 8;
    size_t max_sample_bytes = 16 << 20;
    int64_t timeout_ns = 5'000'000'000;
    bool keep_lowest = true;
  };
  static constexpr size_t kKeepCapacityBytes = 4 << 20;

  FragmentReassembler(ReassemblyBudget* budget, Limits limits);
  ~FragmentReassembler();
  FragmentReassembler(const FragmentReassembler&) = delete;
  FragmentReassembler& operator=(const FragmentReassembler&) = delete;

  // Adds the fragments of `in`. `*slot` is the sample they joined (for
  // kAccepted, kCompleted and kDuplicate), else nullptr.
  ReassemblyOutcome Add(const FragmentInput& in, Timestamp now,
                        PartialSample** slot);
  PartialSample* Find(SequenceNumber sn);
  // Frees a slot (after delivery or to drop the sample).
  void Release(PartialSample* s);
  // Delivers a complete sample without copying it: swaps its buffer with
  // `*out` (which then holds exactly sample_size bytes; the slot keeps
  // `*out`'s old buffer for the next sample, counted in the budget), then
  // frees the slot.
  void ReleaseInto(PartialSample* s, std::vector<std::byte>* out);
  // Bytes Add() copied into slot buffers so far.
  uint64_t bytes_copied() const { return bytes_copied_; }
  // Drops every sample with sn < `sn`; returns how many.
  size_t DropBelow(SequenceNumber sn);
  // Drops samples without progress for timeout_ns; returns how many.
  size_t Expire(Timestamp now);
  Timestamp NextExpiry() const;
  // The first window of up to 256 missing fragments in [from, upto], based
  // at the first missing one; false if none is missing there.
  bool Missing(const PartialSample& s, uint32_t from, uint32_t upto,
               FragmentNumberSet* out) const;
  size_t active() const { return active_; }
  // Samples evicted for a winning newcomer (see the file comment).
  uint64_t evictions() const { return evictions_; }
  void Clear();

  template <typename Fn>
  void ForEach(Fn fn) {
    for (PartialSample& s : slots_) {
      if (s.in_use()) fn(s);
    }
  }

 private:
  PartialSample* Begin(const FragmentInput& in, Timestamp now,
                       ReassemblyOutcome* why);
  // Grows `s` to hold `bytes` of data and `bitmap_words` of fragment bitmap
  // within the budget; false (nothing grown) if the budget cannot give it.
  bool Reserve(PartialSample& s, size_t bytes, size_t bitmap_words);
  void Trim(PartialSample& s);

  ReassemblyBudget* budget_;
  Limits limits_;
  std::vector<PartialSample> slots_;
  size_t active_ = 0;
  uint64_t bytes_copied_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace ringlab::rtps::internal

#endif  // RINGLAB_RTPS_INTERNAL_REASSEMBLY_H_
