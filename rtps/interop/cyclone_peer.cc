#include "rtps/interop/cyclone_peer.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#ifndef RINGLAB_CYCLONE_PEER_BINARY
#define RINGLAB_CYCLONE_PEER_BINARY ""
#endif

namespace ringlab::testkit {

std::string CyclonePeerBinary() { return RINGLAB_CYCLONE_PEER_BINARY; }

std::vector<std::string> CyclonePeerArgs(const CyclonePeerOptions& o) {
  std::vector<std::string> args = {
      CyclonePeerBinary(),
      absl::StrCat("--mode=", o.mode),
      absl::StrCat("--topic=", o.topic),
      absl::StrCat("--type=", o.type),
      o.reliable ? "--reliable" : "--best-effort",
      absl::StrCat("--history=", o.history <= 0 ? std::string("all")
                                                : absl::StrCat(o.history)),
      absl::StrCat("--keys=", o.keys),
      absl::StrCat("--size=", o.size_bytes),
      absl::StrCat("--wait-match=", o.wait_match),
      absl::StrCat("--expect-participants=", o.expect_participants),
      absl::StrCat("--interval-ms=", o.interval_ms),
      absl::StrCat("--duration-s=", o.duration_s),
      absl::StrCat("--linger-s=", o.linger_s),
      absl::StrCat("--domain=", o.domain_id),
      o.multicast ? "--discovery=multicast" : "--discovery=unicast",
  };
  if (!o.echo_topic.empty()) args.push_back("--echo-topic=" + o.echo_topic);
  if (o.transient_local) args.push_back("--transient-local");
  if (!o.partition.empty()) args.push_back("--partition=" + o.partition);
  if (o.count >= 0) args.push_back(absl::StrCat("--count=", o.count));
  if (!o.trace_file.empty()) args.push_back("--trace=" + o.trace_file);
  if (o.deadline_ms > 0) {
    args.push_back(absl::StrCat("--deadline-ms=", o.deadline_ms));
  }
  args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
  return args;
}

absl::StatusOr<std::unique_ptr<Process>> StartCyclonePeer(
    const CyclonePeerOptions& options, absl::Duration ready_timeout) {
  if (CyclonePeerBinary().empty()) {
    return MissingPeerError(
        "ringlab_cyclone_peer was not built (needs cyclonedds-dev and idlc)");
  }
  ProcessOptions p;
  p.argv = CyclonePeerArgs(options);
  p.output_dir = options.output_dir;
  p.name = absl::StrCat("cyclone-peer-", options.mode);
  // The program bounds itself with --duration-s; this is the backstop.
  p.max_lifetime = absl::Seconds(options.duration_s + 30);
  absl::StatusOr<std::unique_ptr<Process>> peer = Process::Start(std::move(p));
  if (!peer.ok()) return peer.status();
  absl::StatusOr<std::string> ready =
      (*peer)->WaitForLine("^READY ", ready_timeout);
  if (!ready.ok()) return ready.status();
  return peer;
}

std::optional<PeerLine> ParsePeerLine(absl::string_view line) {
  std::vector<absl::string_view> words =
      absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (words.empty()) return std::nullopt;
  PeerLine out;
  out.kind = std::string(words[0]);
  for (size_t i = 1; i < words.size(); ++i) {
    const size_t eq = words[i].find('=');
    if (eq == absl::string_view::npos) {
      if (i == 1) out.what = std::string(words[i]);
      continue;
    }
    // text= is last and may hold spaces: it takes the rest of the line.
    if (words[i].substr(0, eq) == "text") {
      const size_t at = line.find(" text=");
      out.fields["text"] = std::string(line.substr(at + 6));
      break;
    }
    out.fields[std::string(words[i].substr(0, eq))] =
        std::string(words[i].substr(eq + 1));
  }
  return out;
}

std::vector<KeyedRecv> ReceivedSamples(const Process& peer) {
  std::vector<KeyedRecv> out;
  for (const std::string& line : peer.MatchingLines("^RECV id=")) {
    std::optional<PeerLine> parsed = ParsePeerLine(line);
    if (!parsed) continue;
    KeyedRecv r;
    bool ok = absl::SimpleAtoi(parsed->fields["id"], &r.id) &&
              absl::SimpleAtoi(parsed->fields["seq"], &r.seq) &&
              absl::SimpleAtoi(parsed->fields["size"], &r.size_bytes);
    if (!ok) continue;
    r.valid = parsed->fields["valid"] == "1";
    r.text = parsed->fields["text"];
    out.push_back(std::move(r));
  }
  return out;
}

std::string PeerParticipantGuid(const Process& peer) {
  for (const std::string& line : peer.MatchingLines("^READY ")) {
    std::optional<PeerLine> parsed = ParsePeerLine(line);
    if (parsed) return parsed->fields["participant"];
  }
  return "";
}

std::vector<std::string> DiscoveredParticipants(const Process& peer) {
  std::vector<std::string> out;
  for (const std::string& line :
       peer.MatchingLines("^DISCOVERED participant .* self=0$")) {
    std::optional<PeerLine> parsed = ParsePeerLine(line);
    if (parsed) out.push_back(parsed->fields["GUID"]);
  }
  return out;
}

}  // namespace ringlab::testkit
