#include "rtps/internal/reassembly.h"

#include <algorithm>
#include <cstring>

namespace ringlab::rtps::internal {

const char* ReassemblyOutcomeName(ReassemblyOutcome o) {
  switch (o) {
    case ReassemblyOutcome::kAccepted:
      return "accepted";
    case ReassemblyOutcome::kCompleted:
      return "completed";
    case ReassemblyOutcome::kDuplicate:
      return "duplicate";
    case ReassemblyOutcome::kInconsistent:
      return "inconsistent";
    case ReassemblyOutcome::kTooLarge:
      return "too_large";
    case ReassemblyOutcome::kBadRange:
      return "bad_range";
    case ReassemblyOutcome::kNoMemory:
      return "no_memory";
    case ReassemblyOutcome::kRefused:
      return "refused";
  }
  return "?";
}

namespace {
size_t Held(const PartialSample& s) {
  return s.data.capacity() + s.have.capacity() * sizeof(uint64_t);
}
}  // namespace

FragmentReassembler::FragmentReassembler(ReassemblyBudget* budget,
                                         Limits limits)
    : budget_(budget), limits_(limits) {
  limits_.max_samples = std::max<size_t>(limits_.max_samples, 1);
  slots_.reserve(limits_.max_samples);
}

FragmentReassembler::~FragmentReassembler() {
  for (const PartialSample& s : slots_) budget_->used_bytes -= Held(s);
}

void FragmentReassembler::Clear() {
  for (PartialSample& s : slots_) {
    if (s.in_use()) Release(&s);
  }
}

PartialSample* FragmentReassembler::Find(SequenceNumber sn) {
  for (PartialSample& s : slots_) {
    if (s.sn == sn) return &s;
  }
  return nullptr;
}

void FragmentReassembler::Release(PartialSample* s) {
  if (s == nullptr || !s->in_use()) return;
  s->sn = 0;
  --active_;
  Trim(*s);
}

void FragmentReassembler::ReleaseInto(PartialSample* s,
                                      std::vector<std::byte>* out) {
  if (s == nullptr || !s->in_use()) return;
  // The budget counts what the slot holds: its old buffer leaves, the
  // caller's comes in (Trim below drops it if it is too large to keep).
  budget_->used_bytes -= Held(*s);
  s->data.resize(s->sample_size);  // shrinks: no allocation
  out->swap(s->data);
  budget_->used_bytes += Held(*s);
  Release(s);
}

// Large buffers are not worth keeping for a sample size that may never come
// back; everything below kKeepCapacityBytes is, so steady-state traffic
// reuses it.
void FragmentReassembler::Trim(PartialSample& s) {
  if (s.data.capacity() <= kKeepCapacityBytes) return;
  budget_->used_bytes -= Held(s);
  std::vector<std::byte>().swap(s.data);
  std::vector<uint64_t>().swap(s.have);
}

bool FragmentReassembler::Reserve(PartialSample& s, size_t bytes,
                                  size_t bitmap_words) {
  // The budget counts the fragment bitmap too (Held()), so both growths are
  // checked together; checking only the data let the bitmap push the total
  // over limit_bytes (found by reassembly_fuzzer).
  const size_t data_need =
      s.data.capacity() >= bytes ? 0 : bytes - s.data.capacity();
  const size_t bitmap_need =
      s.have.capacity() >= bitmap_words
          ? 0
          : (bitmap_words - s.have.capacity()) * sizeof(uint64_t);
  const size_t need = data_need + bitmap_need;
  if (need > 0 && budget_->used_bytes + need > budget_->limit_bytes) {
    // Give back what idle slots of this writer hold before refusing.
    for (PartialSample& o : slots_) {
      if (&o == &s || o.in_use()) continue;
      budget_->used_bytes -= Held(o);
      std::vector<std::byte>().swap(o.data);
      std::vector<uint64_t>().swap(o.have);
    }
    if (budget_->used_bytes + need > budget_->limit_bytes) return false;
  }
  const size_t before = Held(s);
  if (data_need > 0) s.data.reserve(bytes);  // exactly: resize may double
  if (s.data.size() < bytes) s.data.resize(bytes);
  if (bitmap_need > 0) s.have.reserve(bitmap_words);
  budget_->used_bytes += Held(s) - before;
  return true;
}

PartialSample* FragmentReassembler::Begin(const FragmentInput& in,
                                          Timestamp now,
                                          ReassemblyOutcome* why) {
  PartialSample* slot = nullptr;
  for (PartialSample& s : slots_) {
    if (!s.in_use()) {
      slot = &s;
      break;
    }
  }
  if (slot == nullptr && slots_.size() < limits_.max_samples) {
    slot = &slots_.emplace_back();
  }
  if (slot == nullptr) {
    // Every slot is taken: the policy decides who stays.
    PartialSample* victim = &slots_[0];
    for (PartialSample& s : slots_) {
      if (limits_.keep_lowest ? s.sn > victim->sn : s.sn < victim->sn) {
        victim = &s;
      }
    }
    bool wins = limits_.keep_lowest ? in.sn < victim->sn : in.sn > victim->sn;
    if (!wins) {
      *why = ReassemblyOutcome::kRefused;
      return nullptr;
    }
    Release(victim);
    ++evictions_;
    slot = victim;
  }
  size_t total =
      (size_t{in.sample_size} + in.fragment_size - 1) / in.fragment_size;
  size_t words = (total + 63) / 64;
  if (!Reserve(*slot, in.sample_size, words)) {
    *why = ReassemblyOutcome::kNoMemory;
    return nullptr;
  }
  slot->have.assign(words, 0);
  slot->sn = in.sn;
  slot->sample_size = in.sample_size;
  slot->fragment_size = in.fragment_size;
  slot->total_fragments = static_cast<uint32_t>(total);
  slot->received_fragments = 0;
  slot->last_progress = now;
  slot->meta = FragmentMeta{};
  slot->nacked = false;
  slot->nacked_upto = 0;
  ++active_;
  return slot;
}

ReassemblyOutcome FragmentReassembler::Add(const FragmentInput& in,
                                           Timestamp now,
                                           PartialSample** slot) {
  *slot = nullptr;
  // §8.3.7.3.3: fragmentStartingNum >= 1, fragmentSize > 0, and the
  // fragments lie inside sampleSize.
  if (in.sn < 1 || in.fragment_size == 0 || in.fragment_start == 0 ||
      in.fragment_count == 0 || in.sample_size == 0) {
    return ReassemblyOutcome::kBadRange;
  }
  if (in.sample_size > limits_.max_sample_bytes) {
    return ReassemblyOutcome::kTooLarge;
  }
  const uint64_t fs = in.fragment_size;
  const uint64_t total = (uint64_t{in.sample_size} + fs - 1) / fs;
  if (in.fragment_start > total) return ReassemblyOutcome::kBadRange;
  const uint64_t last = std::min<uint64_t>(
      total, uint64_t{in.fragment_start} + in.fragment_count - 1);
  // Only fragments wholly present in `bytes` count.
  uint64_t usable_last = in.fragment_start - 1;
  for (uint64_t fn = in.fragment_start; fn <= last; ++fn) {
    uint64_t off_in = (fn - in.fragment_start) * fs;
    uint64_t len = std::min<uint64_t>(fs, in.sample_size - (fn - 1) * fs);
    if (off_in + len > in.bytes.size()) break;
    usable_last = fn;
  }
  if (usable_last < in.fragment_start) return ReassemblyOutcome::kBadRange;

  PartialSample* s = Find(in.sn);
  if (s != nullptr) {
    if (s->sample_size != in.sample_size ||
        s->fragment_size != in.fragment_size) {
      return ReassemblyOutcome::kInconsistent;
    }
  } else {
    ReassemblyOutcome why = ReassemblyOutcome::kAccepted;
    s = Begin(in, now, &why);
    if (s == nullptr) return why;
  }
  uint32_t added = 0;
  for (uint64_t fn = in.fragment_start; fn <= usable_last; ++fn) {
    uint64_t& word = s->have[(fn - 1) / 64];
    uint64_t bit = uint64_t{1} << ((fn - 1) % 64);
    if (word & bit) continue;  // overlap: the first copy stays
    word |= bit;
    uint64_t off = (fn - 1) * fs;
    uint64_t len = std::min<uint64_t>(fs, in.sample_size - off);
    std::memcpy(s->data.data() + off,
                in.bytes.data() + (fn - in.fragment_start) * fs, len);
    bytes_copied_ += len;
    ++added;
  }
  *slot = s;
  if (added == 0) return ReassemblyOutcome::kDuplicate;
  s->received_fragments += added;
  s->last_progress = now;
  return s->complete() ? ReassemblyOutcome::kCompleted
                       : ReassemblyOutcome::kAccepted;
}

size_t FragmentReassembler::DropBelow(SequenceNumber sn) {
  size_t n = 0;
  for (PartialSample& s : slots_) {
    if (s.in_use() && s.sn < sn) {
      Release(&s);
      ++n;
    }
  }
  return n;
}

size_t FragmentReassembler::Expire(Timestamp now) {
  if (limits_.timeout_ns >= INT64_MAX) return 0;
  size_t n = 0;
  for (PartialSample& s : slots_) {
    if (s.in_use() && s.last_progress + Duration(limits_.timeout_ns) <= now) {
      Release(&s);
      ++n;
    }
  }
  return n;
}

Timestamp FragmentReassembler::NextExpiry() const {
  if (active_ == 0 || limits_.timeout_ns >= INT64_MAX) {
    return Timestamp::Never();
  }
  Timestamp next = Timestamp::Never();
  for (const PartialSample& s : slots_) {
    if (s.in_use()) {
      next = std::min(next, s.last_progress + Duration(limits_.timeout_ns));
    }
  }
  return next;
}

bool FragmentReassembler::Missing(const PartialSample& s, uint32_t from,
                                  uint32_t upto, FragmentNumberSet* out) const {
  upto = std::min(upto, s.total_fragments);
  from = std::max<uint32_t>(from, 1);
  uint32_t first = 0;
  for (uint32_t fn = from; fn <= upto && fn != 0; ++fn) {
    if (!s.Has(fn)) {
      first = fn;
      break;
    }
  }
  if (first == 0) return false;
  *out = FragmentNumberSet{};
  out->base = first;
  for (uint32_t i = 0; i < FragmentNumberSet{}.bitmap.size() * 32; ++i) {
    uint32_t fn = first + i;
    if (fn > upto || fn < first) break;
    if (!s.Has(fn)) out->Add(fn);
  }
  return true;
}

}  // namespace ringlab::rtps::internal
