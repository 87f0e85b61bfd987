// libFuzzer target: the DATA_FRAG reassembler (DDSI-RTPS 2.5 §8.4.14.1)
// driven by a script of fragments (honest ones cut from a reference
// sample, and overlapping, out-of-range, inconsistent-sampleSize and
// garbage ones), releases, drops and time-outs. Checks: no crash, the budget
// never exceeds its limit and returns to zero, counts stay consistent, and a
// sample completed only from honest fragments equals the reference.
// fuzz-deps: rtps/internal/reassembly.cc
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <vector>

#include "rtps/internal/reassembly.h"

using namespace ringlab;
using namespace ringlab::rtps;
using namespace ringlab::rtps::internal;

namespace {

class Script {
 public:
  Script(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool more() const { return i_ < n_; }
  uint8_t U8() { return i_ < n_ ? d_[i_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | U8() << 8); }
  uint32_t U32() { return U16() | static_cast<uint32_t>(U16()) << 16; }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t i_ = 0;
};

// The reference bytes of sample `sn` at `offset`.
std::byte Ref(SequenceNumber sn, size_t offset) {
  return std::byte(static_cast<uint8_t>(sn * 37 + offset * 11 + (offset >> 8)));
}

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Script in(data, size);
  ReassemblyBudget budget{.limit_bytes = 1u << (12 + in.U8() % 8)};
  {
    FragmentReassembler::Limits limits;
    limits.max_samples = 1 + in.U8() % 4;
    limits.max_sample_bytes = 1 + in.U16() * 4u;
    limits.timeout_ns = 1 + in.U16();
    limits.keep_lowest = in.U8() & 1;
    FragmentReassembler r(&budget, limits);
    // Per sequence number: the sample geometry honest fragments use, and
    // whether a dishonest fragment was accepted into it.
    std::map<SequenceNumber, bool> tainted;
    std::vector<std::byte> bytes;
    int64_t now_ns = 0;
    while (in.more()) {
      now_ns += in.U8();
      const Timestamp now = Timestamp::FromNanos(now_ns);
      const uint8_t op = in.U8() % 8;
      const SequenceNumber sn = 1 + in.U8() % 6;
      if (op <= 4) {
        FragmentInput f;
        f.sn = sn;
        // Honest geometry depends on sn only; ops 3 and 4 lie about it.
        uint32_t sample_size = 1 + static_cast<uint32_t>(sn * 997 % 3000);
        uint16_t fs = static_cast<uint16_t>(1 + sn * 131 % 500);
        bool honest = op <= 2;
        if (op == 3) sample_size = in.U32() % 100000;
        if (op == 4) fs = in.U16();
        f.sample_size = sample_size;
        f.fragment_size = fs;
        f.fragment_start = op == 2 ? in.U32() : 1 + in.U16() % 16;
        f.fragment_count = static_cast<uint16_t>(in.U8() % 5);
        size_t len = in.U16() % 4000;
        bytes.resize(len);
        for (size_t i = 0; i < len; ++i) {
          size_t off = size_t{f.fragment_start > 0 ? f.fragment_start - 1 : 0} *
                           (fs ? fs : 1) +
                       i;
          bytes[i] = honest ? Ref(sn, off) : std::byte(in.U8());
        }
        f.bytes = bytes;
        const size_t active_before = r.active();
        PartialSample* s = nullptr;
        ReassemblyOutcome o = r.Add(f, now, &s);
        Check(budget.used_bytes <= budget.limit_bytes);
        Check(r.active() <= limits.max_samples);
        switch (o) {
          case ReassemblyOutcome::kAccepted:
          case ReassemblyOutcome::kCompleted:
          case ReassemblyOutcome::kDuplicate: {
            Check(s != nullptr && s->sn == sn);
            Check(s->received_fragments <= s->total_fragments);
            if (o == ReassemblyOutcome::kCompleted) Check(s->complete());
            if (o == ReassemblyOutcome::kAccepted) Check(!s->complete());
            if (active_before == r.active() - 1 || !tainted.contains(sn)) {
              tainted[sn] = false;
            }
            if (!honest && o != ReassemblyOutcome::kDuplicate) {
              tainted[sn] = true;
            }
            if (o == ReassemblyOutcome::kCompleted) {
              if (!tainted[sn]) {
                std::span<const std::byte> b = s->bytes();
                for (size_t i = 0; i < b.size(); ++i) Check(b[i] == Ref(sn, i));
              }
              FragmentNumberSet m;
              Check(!r.Missing(*s, 1, s->total_fragments, &m));
              r.Release(s);
              tainted.erase(sn);
            }
            break;
          }
          default:
            Check(s == nullptr);
            break;
        }
      } else if (op == 5) {
        if (PartialSample* s = r.Find(sn)) {
          FragmentNumberSet m;
          if (r.Missing(*s, in.U16(), in.U16(), &m)) {
            Check(m.num_bits >= 1 && m.num_bits <= 256);
            Check(m.Contains(m.base) && !s->Has(m.base));
          }
          if (in.U8() & 1) {
            r.Release(s);
            tainted.erase(sn);
          }
        }
      } else if (op == 6) {
        r.DropBelow(sn);
        for (auto it = tainted.begin(); it != tainted.end();) {
          it = it->first < sn ? tainted.erase(it) : std::next(it);
        }
      } else {
        size_t n = r.Expire(now);
        Check(n <= limits.max_samples);
        Check(r.NextExpiry() > now || r.active() == 0);
        for (auto it = tainted.begin(); it != tainted.end();) {
          it = r.Find(it->first) == nullptr ? tainted.erase(it) : std::next(it);
        }
      }
    }
  }
  Check(budget.used_bytes == 0);
  return 0;
}
