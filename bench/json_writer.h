// JsonWriter: a minimal append-only JSON builder for benchmark results.
//
// Benchmark programs emit one JSON object per run (see
// /work/briefs/pingpong-spec.md for the ping-pong schema). This writer
// produces compact, valid JSON with correctly escaped strings and finite
// numbers (NaN and infinities become null). It is for the control path only:
// it appends to a std::string.
//
//   JsonWriter json;
//   json.BeginObject();
//   json.Key("schema").String("ringlab.pingpong/1");
//   json.Key("rtt_us").BeginObject().Key("p50").Number(11.9).EndObject();
//   json.EndObject();
//   std::cout << json.str() << "\n";
//
// Misuse (a value without a key inside an object) is not detected; callers
// build fixed shapes.
#ifndef RINGLAB_BENCH_JSON_WRITER_H_
#define RINGLAB_BENCH_JSON_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringlab::bench {

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Number(double value);  // 10 significant digits
  JsonWriter& Int(int64_t value);
  JsonWriter& Uint(uint64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();

  const std::string& str() const { return out_; }

 private:
  void BeforeValue();
  void AppendEscaped(std::string_view text);

  std::string out_;
  // One entry per open container: true once it holds an element.
  std::vector<bool> has_element_;
  bool after_key_ = false;
};

}  // namespace ringlab::bench

#endif  // RINGLAB_BENCH_JSON_WRITER_H_
