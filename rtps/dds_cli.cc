// ringlab_dds: a DDS command line on the ringlab RTPS stack.
//
//   ringlab_dds ls [--watch] [--json] [--duration_s=S]    who is on the network
//   ringlab_dds pub TOPIC [--type=string|bytes] [--rate=HZ] [--count=N]
//                         [--size=BYTES] [QoS flags]      a quick publisher
//   ringlab_dds sub TOPIC [--type=string|bytes|raw] [--count=N] [QoS flags]
//   ringlab_dds <command> --help
//
// `ls` joins the domain as a silent observer (no user endpoints) and lists
// the participants it discovers, with vendor, GUID, locators, lease, and the
// process, pid and host where they advertise them (PID_PROPERTY_LIST, as
// Cyclone does, or ddsperf's USER_DATA), then the topics with their type
// names, the QoS of every writer and reader, and their participants.
// `--watch` prints discoveries and losses as they happen; `--json` prints
// one JSON document (or, with --watch, one JSON object per line).
//
// `pub`/`sub` use the built-in types of rtps/builtin_types.h
// ("ringlab::dds::String", "ringlab::dds::Bytes"); `--type-name` announces
// another type name, and `sub --type=raw` prints any topic's serialized
// bytes in hex.
//
// Exit codes: 0 ok; 1 usage error (bad command or flag, printed with the
// fix); 2 the run failed (no participant, a DDS call failed, nothing matched
// within --match_timeout_s); 3 the --backend preset cannot run here; 4 the
// goal was not reached in time (`ls --expect=N` saw fewer participants,
// `sub --count=N` got fewer samples).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "rtps/builtin_types.h"
#include "rtps/domain_participant.h"
#include "rtps/topic.h"

namespace ringlab::rtps {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 1;
constexpr int kExitFailed = 2;
constexpr int kExitUnsupported = 3;
constexpr int kExitIncomplete = 4;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

// ---- Flags ------------------------------------------------------------------

const char* kTopUsage =
    "usage: ringlab_dds <command> [flags]\n"
    "commands:\n"
    "  ls             list participants and topics (add --watch, --json)\n"
    "  pub TOPIC      publish built-in string or bytes samples\n"
    "  sub TOPIC      subscribe and print samples\n"
    "  help           this text; `ringlab_dds <command> --help` for flags\n"
    "exit codes: 0 ok, 1 usage, 2 run failed, 3 backend unsupported,\n"
    "            4 goal not reached in time (ls --expect, sub --count)\n";

const char* kCommonFlags =
    "network:\n"
    "  --domain=N           DDS domain id (0)\n"
    "  --interface=A.B.C.D  address to use and send multicast from\n"
    "                       (127.0.0.1; auto = first non-loopback)\n"
    "  --no-multicast       no SPDP multicast (use --peer)\n"
    "  --peer=A.B.C.D[:P]   unicast SPDP peer (repeatable)\n"
    "  --backend=PRESET     transport preset (auto)\n";

const char* kQosFlags =
    "QoS:\n"
    "  --reliable | --best-effort      RELIABILITY (pub: reliable, sub: best"
    " effort)\n"
    "  --transient-local               DURABILITY TRANSIENT_LOCAL\n"
    "  --history=N|all                 HISTORY KEEP_LAST N (1) or KEEP_ALL\n"
    "  --partition=NAME                PARTITION (repeatable; wildcards)\n"
    "  --deadline_ms=MS                DEADLINE period\n"
    "  --lifespan_ms=MS                LIFESPAN (pub)\n"
    "  --latency_budget_ms=MS          LATENCY_BUDGET\n"
    "  --ownership=shared|exclusive    OWNERSHIP\n"
    "  --strength=N                    OWNERSHIP_STRENGTH (pub)\n"
    "  --liveliness=automatic|manual_by_participant|manual_by_topic\n"
    "  --liveliness_lease_ms=MS        LIVELINESS lease\n"
    "  --by_source_timestamp           DESTINATION_ORDER BY_SOURCE_TIMESTAMP\n";

const char* kLsUsage =
    "usage: ringlab_dds ls [--watch] [--json] [--duration_s=S] [--expect=N]\n"
    "  Lists the participants (vendor, GUID, locators, lease, process/host)\n"
    "  and topics (type, QoS, writers and readers) seen in the domain.\n"
    "  --duration_s=S  how long to listen (2; with --watch: until Ctrl-C,\n"
    "                  or S seconds if given)\n"
    "  --watch         print discoveries and losses as they happen\n"
    "  --json          JSON output (one document; one object per line with\n"
    "                  --watch)\n"
    "  --expect=N      exit 4 unless at least N participants were seen; stop\n"
    "                  listening as soon as they were\n";

const char* kPubUsage =
    "usage: ringlab_dds pub TOPIC [flags]\n"
    "  Publishes samples of a built-in type on TOPIC.\n"
    "  --type=string|bytes   ringlab::dds::String (default) or ::Bytes\n"
    "  --type-name=NAME      announce NAME as the type name instead\n"
    "  --message=TEXT        string payload (default \"hello <n>\")\n"
    "  --size=BYTES          payload size (string: padded/cut to BYTES)\n"
    "  --count=N             samples to write (10; 0 = until Ctrl-C)\n"
    "  --rate=HZ             samples per second (10; 0 = as fast as the\n"
    "                        history allows)\n"
    "  --wait_match=N        wait for N matched readers first (0)\n"
    "  --match_timeout_s=S   give up waiting for readers (10; exit 2)\n"
    "  --linger_s=S          stay after the last write (1; reliable writers\n"
    "                        wait for acknowledgements)\n"
    "  --duration_s=S        hard bound on the run (0 = none)\n"
    "  --quiet               no line per sample\n";

const char* kSubUsage =
    "usage: ringlab_dds sub TOPIC [flags]\n"
    "  Prints the samples published on TOPIC.\n"
    "  --type=string|bytes|raw  ringlab::dds::String (default), ::Bytes, or\n"
    "                           raw: any type, printed as hex\n"
    "  --type-name=NAME         the type name to match (raw: required)\n"
    "  --count=N                exit after N samples (0 = until Ctrl-C or\n"
    "                           --duration_s; exit 4 if fewer arrived)\n"
    "  --duration_s=S           stop after S seconds (0 = none)\n"
    "  --json                   one JSON object per sample\n"
    "  --quiet                  print only the summary\n";

struct Options {
  std::string command;
  std::string topic;
  // network
  uint32_t domain = 0;
  std::string interface_address = "127.0.0.1";
  bool multicast = true;
  std::vector<std::string> peers;
  std::string backend = "auto";
  // ls
  bool watch = false;
  bool json = false;
  double duration_s = -1;  // -1: the command's default
  int expect = 0;
  // pub/sub
  std::string type = "string";
  std::string type_name;
  std::string message;
  bool have_message = false;
  int64_t size = -1;
  int64_t count = -1;
  double rate_hz = 10;
  int wait_match = 0;
  double match_timeout_s = 10;
  double linger_s = 1;
  bool quiet = false;
  // QoS
  std::optional<bool> reliable;
  bool transient_local = false;
  int history = 1;  // 0 = keep all
  std::vector<std::string> partitions;
  int64_t deadline_ms = 0, lifespan_ms = 0, latency_budget_ms = 0;
  int64_t liveliness_lease_ms = 0;
  bool exclusive = false;
  int32_t strength = 0;
  LivelinessKind liveliness = LivelinessKind::kAutomatic;
  bool by_source = false;
};

// Parses `--name=value` / `--flag` arguments; false with *err set.
bool ParseFlags(int argc, char** argv, int first, Options* o,
                std::string* err) {
  const std::string& cmd = o->command;
  const bool data = cmd == "pub" || cmd == "sub";
  for (int i = first; i < argc; ++i) {
    absl::string_view a = argv[i];
    absl::string_view name = a, v;
    bool has_value = false;
    if (size_t eq = a.find('='); eq != absl::string_view::npos) {
      name = a.substr(0, eq);
      v = a.substr(eq + 1);
      has_value = true;
    }
    auto bad = [&](absl::string_view why) {
      *err = absl::StrCat("bad value in ", a, ": ", why);
      return false;
    };
    auto need_value = [&]() {
      if (!has_value)
        *err = absl::StrCat(name, " needs a value (", name, "=...)");
      return has_value;
    };
    auto no_value = [&]() {
      if (has_value) *err = absl::StrCat(name, " takes no value");
      return !has_value;
    };
    auto ms = [&](int64_t* out) {
      if (!need_value()) return false;
      double d = 0;
      if (!absl::SimpleAtod(v, &d) || d <= 0 || d > 1e12) {
        return bad("a positive number of milliseconds");
      }
      *out = static_cast<int64_t>(d * 1e6);  // ns
      return true;
    };
    if (name == "--domain") {
      if (!need_value()) return false;
      if (!absl::SimpleAtoi(v, &o->domain) || o->domain > 232) {
        return bad("a domain id in [0, 232]");
      }
    } else if (name == "--interface") {
      if (!need_value()) return false;
      o->interface_address = std::string(v);
    } else if (name == "--no-multicast") {
      if (!no_value()) return false;
      o->multicast = false;
    } else if (name == "--peer") {
      if (!need_value()) return false;
      o->peers.emplace_back(v);
    } else if (name == "--backend") {
      if (!need_value()) return false;
      o->backend = std::string(v);
    } else if (name == "--json" && (cmd == "ls" || cmd == "sub")) {
      if (!no_value()) return false;
      o->json = true;
    } else if (name == "--watch" && cmd == "ls") {
      if (!no_value()) return false;
      o->watch = true;
    } else if (name == "--expect" && cmd == "ls") {
      if (!need_value()) return false;
      if (!absl::SimpleAtoi(v, &o->expect) || o->expect < 0) {
        return bad("a participant count >= 0");
      }
    } else if (name == "--duration_s") {
      if (!need_value()) return false;
      if (!absl::SimpleAtod(v, &o->duration_s) || o->duration_s < 0) {
        return bad("seconds >= 0");
      }
    } else if (data && name == "--type") {
      if (!need_value()) return false;
      o->type = std::string(v);
      if (v != "string" && v != "bytes" && !(cmd == "sub" && v == "raw")) {
        return bad(cmd == "sub" ? "string, bytes or raw" : "string or bytes");
      }
    } else if (data && name == "--type-name") {
      if (!need_value()) return false;
      o->type_name = std::string(v);
      if (v.empty()) return bad("a non-empty type name");
    } else if (data && name == "--count") {
      if (!need_value()) return false;
      if (!absl::SimpleAtoi(v, &o->count) || o->count < 0) {
        return bad("a count >= 0");
      }
    } else if (data && name == "--quiet") {
      if (!no_value()) return false;
      o->quiet = true;
    } else if (cmd == "pub" && name == "--message") {
      if (!need_value()) return false;
      o->message = std::string(v);
      o->have_message = true;
    } else if (cmd == "pub" && name == "--size") {
      if (!need_value()) return false;
      if (!absl::SimpleAtoi(v, &o->size) || o->size < 0 ||
          o->size > (16 << 20) - 64) {
        return bad("bytes in [0, 16 MiB - 64]");
      }
    } else if (cmd == "pub" && name == "--rate") {
      if (!need_value()) return false;
      if (!absl::SimpleAtod(v, &o->rate_hz) || o->rate_hz < 0) {
        return bad("samples per second >= 0");
      }
    } else if (cmd == "pub" && name == "--wait_match") {
      if (!need_value()) return false;
      if (!absl::SimpleAtoi(v, &o->wait_match) || o->wait_match < 0) {
        return bad("a reader count >= 0");
      }
    } else if (cmd == "pub" && name == "--match_timeout_s") {
      if (!need_value()) return false;
      if (!absl::SimpleAtod(v, &o->match_timeout_s) || o->match_timeout_s < 0) {
        return bad("seconds >= 0");
      }
    } else if (cmd == "pub" && name == "--linger_s") {
      if (!need_value()) return false;
      if (!absl::SimpleAtod(v, &o->linger_s) || o->linger_s < 0) {
        return bad("seconds >= 0");
      }
    } else if (data && (name == "--reliable" || name == "--best-effort")) {
      if (!no_value()) return false;
      o->reliable = name == "--reliable";
    } else if (data && name == "--transient-local") {
      if (!no_value()) return false;
      o->transient_local = true;
    } else if (data && name == "--history") {
      if (!need_value()) return false;
      if (v == "all") {
        o->history = 0;
      } else if (!absl::SimpleAtoi(v, &o->history) || o->history < 1) {
        return bad("a depth >= 1 or all");
      }
    } else if (data && name == "--partition") {
      if (!need_value()) return false;
      o->partitions.emplace_back(v);
    } else if (data && name == "--deadline_ms") {
      if (!ms(&o->deadline_ms)) return false;
    } else if (cmd == "pub" && name == "--lifespan_ms") {
      if (!ms(&o->lifespan_ms)) return false;
    } else if (data && name == "--latency_budget_ms") {
      if (!ms(&o->latency_budget_ms)) return false;
    } else if (data && name == "--liveliness_lease_ms") {
      if (!ms(&o->liveliness_lease_ms)) return false;
    } else if (data && name == "--ownership") {
      if (!need_value()) return false;
      if (v != "shared" && v != "exclusive") return bad("shared or exclusive");
      o->exclusive = v == "exclusive";
    } else if (cmd == "pub" && name == "--strength") {
      if (!need_value()) return false;
      if (!absl::SimpleAtoi(v, &o->strength)) return bad("an integer");
    } else if (data && name == "--liveliness") {
      if (!need_value()) return false;
      if (v == "automatic") {
        o->liveliness = LivelinessKind::kAutomatic;
      } else if (v == "manual_by_participant") {
        o->liveliness = LivelinessKind::kManualByParticipant;
      } else if (v == "manual_by_topic") {
        o->liveliness = LivelinessKind::kManualByTopic;
      } else {
        return bad("automatic, manual_by_participant or manual_by_topic");
      }
    } else if (data && name == "--by_source_timestamp") {
      if (!no_value()) return false;
      o->by_source = true;
    } else if (absl::StartsWith(a, "-")) {
      *err = absl::StrCat("unknown flag ", name);
      return false;
    } else if (data && o->topic.empty()) {
      o->topic = std::string(a);
    } else {
      *err = absl::StrCat("unexpected argument ", a);
      return false;
    }
    if (!err->empty()) return false;
  }
  if (data && o->topic.empty()) {
    *err = "missing TOPIC";
    return false;
  }
  if (cmd == "sub" && o->type == "raw" && o->type_name.empty()) {
    *err = "--type=raw needs --type-name=NAME (the type to match)";
    return false;
  }
  return true;
}

EndpointQos MakeQos(const Options& o, bool writer) {
  EndpointQos q =
      writer ? EndpointQos::WriterDefaults() : EndpointQos::ReaderDefaults();
  if (o.reliable.has_value()) {
    q.reliability =
        *o.reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
  }
  if (o.transient_local) q.durability = DurabilityKind::kTransientLocal;
  if (o.history == 0) {
    q.history = HistoryKind::kKeepAll;
  } else {
    q.history_depth = o.history;
  }
  q.partitions = o.partitions;
  if (o.deadline_ms > 0) q.deadline_ns = o.deadline_ms;
  if (o.lifespan_ms > 0) q.lifespan_ns = o.lifespan_ms;
  if (o.latency_budget_ms > 0) q.latency_budget_ns = o.latency_budget_ms;
  if (o.liveliness_lease_ms > 0) q.liveliness_lease_ns = o.liveliness_lease_ms;
  q.liveliness = o.liveliness;
  if (o.exclusive) q.ownership = OwnershipKind::kExclusive;
  q.ownership_strength = o.strength;
  if (o.by_source) {
    q.destination_order = DestinationOrderKind::kBySourceTimestamp;
  }
  return q;
}

bool IsUnsupportedBackend(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition ||
         s.code() == absl::StatusCode::kPermissionDenied ||
         s.code() == absl::StatusCode::kUnimplemented;
}

// ---- Output helpers ---------------------------------------------------------

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string Printable(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

// OMG vendor ids (DDSI-RTPS 2.5 §8.3.3.1.3 and the OMG's published list).
std::string VendorName(VendorId v) {
  switch (v.value()) {
    case 0x0101:
      return "RTI Connext DDS";
    case 0x0102:
      return "ADLINK OpenSplice DDS";
    case 0x0103:
      return "OCI OpenDDS";
    case 0x0104:
      return "MilSoft";
    case 0x0105:
      return "Kongsberg InterCOM DDS";
    case 0x0106:
      return "TwinOaks CoreDX DDS";
    case 0x0107:
      return "Lakota Technical Solutions";
    case 0x0108:
      return "ICOUP Consulting";
    case 0x0109:
      return "ETRI Diamond DDS";
    case 0x010a:
      return "RTI Connext DDS Micro";
    case 0x010b:
      return "ADLINK Vortex Cafe";
    case 0x010c:
      return "PrismTech";
    case 0x010d:
      return "ADLINK Vortex Lite";
    case 0x010e:
      return "Technicolor Qeo";
    case 0x010f:
      return "eProsima Fast DDS";
    case 0x0110:
      return "Eclipse Cyclone DDS";
    case 0x0111:
      return "GurumNetworks GurumDDS";
    case 0x0112:
      return "Atostek RustDDS";
    case 0x01ff:
      return "ringlab";
    default:
      return "unknown";
  }
}

std::string DurationText(int64_t ns) {
  if (ns >= kInfiniteNanos) return "infinite";
  return absl::StrFormat("%.3gs", static_cast<double>(ns) / 1e9);
}

struct ProcessInfo {
  std::string process, pid, host;
};

// What a participant says about its process: PID_PROPERTY_LIST (Cyclone's
// __ProcessName/__Pid/__Hostname), else ddsperf's USER_DATA
// "DDSPerf:<r>:<pid>:<host>".
ProcessInfo ProcessOf(const ParticipantData& p) {
  ProcessInfo info;
  for (const auto& [k, v] : p.properties) {
    if (k == "__ProcessName") info.process = v;
    if (k == "__Pid") info.pid = v;
    if (k == "__Hostname") info.host = v;
  }
  if (info.pid.empty() && absl::StartsWith(p.user_data, "DDSPerf:")) {
    std::vector<std::string> parts = absl::StrSplit(p.user_data, ':');
    if (parts.size() >= 4) {
      info.process = "ddsperf";
      info.pid = parts[2];
      info.host = parts[3];
    }
  }
  return info;
}

std::string LocatorList(const std::vector<Locator>& ls) {
  std::vector<std::string> v;
  for (const Locator& l : ls) v.push_back(l.ToString());
  return absl::StrJoin(v, " ");
}

std::string JsonLocators(const std::vector<Locator>& ls) {
  std::vector<std::string> v;
  for (const Locator& l : ls) v.push_back(JsonString(l.ToString()));
  return absl::StrCat("[", absl::StrJoin(v, ","), "]");
}

const char* ReliabilityName(ReliabilityKind k) {
  return k == ReliabilityKind::kReliable ? "reliable" : "best_effort";
}
const char* DurabilityName(DurabilityKind k) {
  switch (k) {
    case DurabilityKind::kVolatile:
      return "volatile";
    case DurabilityKind::kTransientLocal:
      return "transient_local";
    case DurabilityKind::kTransient:
      return "transient";
    case DurabilityKind::kPersistent:
      return "persistent";
  }
  return "?";
}
const char* LivelinessName(LivelinessKind k) {
  switch (k) {
    case LivelinessKind::kAutomatic:
      return "automatic";
    case LivelinessKind::kManualByParticipant:
      return "manual_by_participant";
    case LivelinessKind::kManualByTopic:
      return "manual_by_topic";
  }
  return "?";
}

std::string QosText(const EndpointQos& q, bool writer) {
  std::string s = absl::StrCat(
      ReliabilityName(q.reliability), " ", DurabilityName(q.durability), " ",
      q.history == HistoryKind::kKeepAll
          ? std::string("keep_all")
          : absl::StrCat("keep_last ", q.history_depth));
  if (q.max_samples > 0) absl::StrAppend(&s, " max_samples ", q.max_samples);
  if (q.deadline_ns != kInfiniteNanos) {
    absl::StrAppend(&s, " deadline ", DurationText(q.deadline_ns));
  }
  if (q.latency_budget_ns != 0) {
    absl::StrAppend(&s, " latency_budget ", DurationText(q.latency_budget_ns));
  }
  if (q.lifespan_ns != kInfiniteNanos) {
    absl::StrAppend(&s, " lifespan ", DurationText(q.lifespan_ns));
  }
  if (q.liveliness != LivelinessKind::kAutomatic ||
      q.liveliness_lease_ns != kInfiniteNanos) {
    absl::StrAppend(&s, " liveliness ", LivelinessName(q.liveliness), " ",
                    DurationText(q.liveliness_lease_ns));
  }
  if (q.ownership == OwnershipKind::kExclusive) {
    absl::StrAppend(&s, " exclusive");
    if (writer) absl::StrAppend(&s, " strength ", q.ownership_strength);
  }
  if (q.destination_order == DestinationOrderKind::kBySourceTimestamp) {
    absl::StrAppend(&s, " by_source_timestamp");
  }
  if (!q.partitions.empty()) {
    absl::StrAppend(&s, " partition ", absl::StrJoin(q.partitions, ","));
  }
  return s;
}

std::string QosJson(const EndpointQos& q, bool writer) {
  std::vector<std::string> parts;
  auto dur = [](int64_t ns) -> std::string {
    return ns >= kInfiniteNanos ? "null" : absl::StrCat(ns / 1e9);
  };
  std::vector<std::string> part_names;
  for (const std::string& p : q.partitions) part_names.push_back(JsonString(p));
  std::string s = absl::StrCat(
      "{\"reliability\":", JsonString(ReliabilityName(q.reliability)),
      ",\"durability\":", JsonString(DurabilityName(q.durability)),
      ",\"history\":",
      q.history == HistoryKind::kKeepAll ? "\"keep_all\""
                                         : absl::StrCat(q.history_depth),
      ",\"max_samples\":", q.max_samples,
      ",\"deadline_s\":", dur(q.deadline_ns),
      ",\"latency_budget_s\":", q.latency_budget_ns / 1e9,
      ",\"lifespan_s\":", dur(q.lifespan_ns),
      ",\"liveliness\":", JsonString(LivelinessName(q.liveliness)),
      ",\"liveliness_lease_s\":", dur(q.liveliness_lease_ns), ",\"ownership\":",
      q.ownership == OwnershipKind::kExclusive ? "\"exclusive\"" : "\"shared\"",
      ",\"destination_order\":",
      q.destination_order == DestinationOrderKind::kBySourceTimestamp
          ? "\"by_source_timestamp\""
          : "\"by_reception_timestamp\"",
      ",\"partitions\":[", absl::StrJoin(part_names, ","), "]");
  if (writer) absl::StrAppend(&s, ",\"strength\":", q.ownership_strength);
  return s + "}";
}

// ---- The participant -------------------------------------------------------

int MakeParticipant(const Options& o, const std::string& entity_name,
                    std::unique_ptr<DomainParticipant>* out, uint32_t payload) {
  DomainParticipantOptions dpo;
  dpo.domain_id = o.domain;
  dpo.backend = o.backend;
  dpo.interface_address = o.interface_address;
  dpo.multicast = o.multicast;
  dpo.peers = o.peers;
  dpo.core.entity_name = entity_name;
  // Room for Cyclone's fragment trains and our own large samples.
  uint32_t need = std::max<uint32_t>(payload, 16384) + 1024;
  dpo.buffer_size = std::min<uint32_t>((need + 1023) & ~1023u, 65536);
  auto dp = DomainParticipant::Create(dpo);
  if (!dp.ok()) {
    std::fprintf(stderr, "ringlab_dds %s: %s\n", o.command.c_str(),
                 std::string(dp.status().message()).c_str());
    return IsUnsupportedBackend(dp.status()) ? kExitUnsupported : kExitFailed;
  }
  *out = std::move(*dp);
  return kExitOk;
}

Timestamp EndAfter(double seconds) {
  if (seconds <= 0) return Timestamp::Never();
  return MonotonicNow() +
         std::chrono::nanoseconds(static_cast<int64_t>(seconds * 1e9));
}

// ---- ls ---------------------------------------------------------------------

void PrintParticipantText(const RemoteParticipantInfo& info) {
  const ParticipantData& p = info.data;
  Guid g{p.guid_prefix, EntityId::Participant()};
  std::printf("  %s  %s (0x%04x)  lease %s\n", g.ToString().c_str(),
              VendorName(p.vendor).c_str(), p.vendor.value(),
              DurationText(p.lease_duration_ns).c_str());
  ProcessInfo pi = ProcessOf(p);
  if (!pi.process.empty() || !pi.pid.empty() || !pi.host.empty()) {
    std::printf("    process %s pid %s host %s\n",
                pi.process.empty() ? "?" : Printable(pi.process).c_str(),
                pi.pid.empty() ? "?" : Printable(pi.pid).c_str(),
                pi.host.empty() ? "?" : Printable(pi.host).c_str());
  }
  if (!p.entity_name.empty()) {
    std::printf("    name %s\n", Printable(p.entity_name).c_str());
  }
  if (!p.user_data.empty()) {
    std::printf("    user_data \"%s\"\n", Printable(p.user_data).c_str());
  }
  std::printf("    metatraffic %s%s%s\n",
              LocatorList(p.metatraffic_unicast).c_str(),
              p.metatraffic_multicast.empty() ? "" : " ",
              LocatorList(p.metatraffic_multicast).c_str());
  std::printf("    user %s%s%s\n", LocatorList(p.default_unicast).c_str(),
              p.default_multicast.empty() ? "" : " ",
              LocatorList(p.default_multicast).c_str());
}

std::string ParticipantJson(const RemoteParticipantInfo& info) {
  const ParticipantData& p = info.data;
  ProcessInfo pi = ProcessOf(p);
  Guid g{p.guid_prefix, EntityId::Participant()};
  auto opt = [](const std::string& s) {
    return s.empty() ? std::string("null") : JsonString(s);
  };
  return absl::StrCat(
      "{\"guid\":", JsonString(g.ToString()), ",\"vendor_id\":",
      JsonString(absl::StrFormat("0x%04x", p.vendor.value())),
      ",\"vendor\":", JsonString(VendorName(p.vendor)), ",\"protocol\":",
      JsonString(absl::StrCat(p.protocol_version.major, ".",
                              p.protocol_version.minor)),
      ",\"lease_s\":",
      p.lease_duration_ns >= kInfiniteNanos
          ? std::string("null")
          : absl::StrCat(p.lease_duration_ns / 1e9),
      ",\"process\":", opt(pi.process), ",\"pid\":", opt(pi.pid),
      ",\"host\":", opt(pi.host), ",\"name\":", opt(p.entity_name),
      ",\"user_data\":", opt(p.user_data), ",\"domain_id\":",
      p.has_domain_id ? absl::StrCat(p.domain_id) : std::string("null"),
      ",\"metatraffic_unicast\":", JsonLocators(p.metatraffic_unicast),
      ",\"metatraffic_multicast\":", JsonLocators(p.metatraffic_multicast),
      ",\"default_unicast\":", JsonLocators(p.default_unicast),
      ",\"default_multicast\":", JsonLocators(p.default_multicast), "}");
}

std::string EndpointJson(const EndpointData& e) {
  bool writer = e.guid.entity.is_writer();
  return absl::StrCat(
      "{\"kind\":", writer ? "\"writer\"" : "\"reader\"",
      ",\"guid\":", JsonString(e.guid.ToString()), ",\"participant\":",
      JsonString(Guid{e.guid.prefix, EntityId::Participant()}.ToString()),
      ",\"qos\":", QosJson(e.qos, writer), "}");
}

int RunLs(const Options& o) {
  std::unique_ptr<DomainParticipant> dp;
  if (int rc = MakeParticipant(o, "ringlab_dds ls", &dp, 0); rc != kExitOk) {
    return rc;
  }
  Participant& core = dp->core();
  const double duration = o.duration_s >= 0 ? o.duration_s : (o.watch ? 0 : 2);
  const Timestamp end = EndAfter(o.watch ? duration : std::max(duration, 0.1));
  std::set<GuidPrefix> seen;
  auto watch_line = [&](const Event& e) {
    const char* what = nullptr;
    bool added = true;
    switch (e.kind) {
      case Event::Kind::kParticipantDiscovered:
        what = "participant";
        break;
      case Event::Kind::kParticipantLost:
        what = "participant";
        added = false;
        break;
      case Event::Kind::kPublicationDiscovered:
        what = "writer";
        break;
      case Event::Kind::kPublicationLost:
        what = "writer";
        added = false;
        break;
      case Event::Kind::kSubscriptionDiscovered:
        what = "reader";
        break;
      case Event::Kind::kSubscriptionLost:
        what = "reader";
        added = false;
        break;
      default:
        return;
    }
    const double t = static_cast<double>(WallClockNanos()) / 1e9;
    if (o.json) {
      std::string detail = "null";
      if (added && e.kind == Event::Kind::kParticipantDiscovered) {
        if (const auto* info = core.FindParticipant(e.remote.prefix)) {
          detail = ParticipantJson(*info);
        }
      } else if (added) {
        if (const EndpointData* d = core.FindRemoteEndpoint(e.remote)) {
          detail = absl::StrCat("{\"topic\":", JsonString(d->topic_name),
                                ",\"type\":", JsonString(d->type_name),
                                ",\"endpoint\":", EndpointJson(*d), "}");
        }
      }
      std::printf(
          "{\"time\":%.6f,\"event\":\"%s_%s\",\"guid\":%s,\"detail\":%s}\n", t,
          what, added ? "discovered" : "lost",
          JsonString(e.remote.ToString()).c_str(), detail.c_str());
    } else if (e.kind == Event::Kind::kParticipantDiscovered) {
      std::printf("%.3f + participant\n", t);
      if (const auto* info = core.FindParticipant(e.remote.prefix)) {
        PrintParticipantText(*info);
      }
    } else if (added) {
      const EndpointData* d = core.FindRemoteEndpoint(e.remote);
      std::printf(
          "%.3f + %s %s  topic %s  type %s  %s\n", t, what,
          e.remote.ToString().c_str(),
          d ? Printable(d->topic_name).c_str() : "?",
          d ? Printable(d->type_name).c_str() : "?",
          d ? QosText(d->qos, e.remote.entity.is_writer()).c_str() : "");
    } else {
      std::printf("%.3f - %s %s\n", t, what, e.remote.ToString().c_str());
    }
    std::fflush(stdout);
  };
  while (!g_stop.load() && MonotonicNow() < end) {
    dp->RunOnce(std::chrono::milliseconds(50));
    while (auto e = core.PollEvent()) {
      if (e->kind == Event::Kind::kParticipantDiscovered) {
        seen.insert(e->remote.prefix);
      }
      if (o.watch) watch_line(*e);
    }
    if (!o.watch && o.expect > 0 &&
        core.remote_participant_count() >= static_cast<size_t>(o.expect)) {
      // Give SEDP a moment to bring the endpoints of the last one.
      dp->RunFor(std::chrono::milliseconds(300));
      break;
    }
  }
  if (o.watch) {
    return o.expect > 0 && seen.size() < static_cast<size_t>(o.expect)
               ? kExitIncomplete
               : kExitOk;
  }
  // The snapshot: participants, then topics with their endpoints.
  std::vector<const RemoteParticipantInfo*> participants;
  core.ForEachParticipant(
      [&](const RemoteParticipantInfo& p) { participants.push_back(&p); });
  std::sort(participants.begin(), participants.end(), [](auto* a, auto* b) {
    return a->data.guid_prefix < b->data.guid_prefix;
  });
  std::map<std::pair<std::string, std::string>,
           std::vector<const EndpointData*>>
      topics;
  core.ForEachRemoteEndpoint([&](const EndpointData& e) {
    topics[{e.topic_name, e.type_name}].push_back(&e);
  });
  for (auto& [k, v] : topics) {
    std::sort(v.begin(), v.end(),
              [](auto* a, auto* b) { return a->guid < b->guid; });
  }
  if (o.json) {
    std::vector<std::string> ps, ts;
    for (const auto* p : participants) ps.push_back(ParticipantJson(*p));
    for (const auto& [k, v] : topics) {
      std::vector<std::string> es;
      for (const EndpointData* e : v) es.push_back(EndpointJson(*e));
      ts.push_back(absl::StrCat(
          "{\"name\":", JsonString(k.first), ",\"type\":", JsonString(k.second),
          ",\"endpoints\":[", absl::StrJoin(es, ","), "]}"));
    }
    std::printf("{\"domain\":%u,\"participants\":[%s],\"topics\":[%s]}\n",
                o.domain, absl::StrJoin(ps, ",").c_str(),
                absl::StrJoin(ts, ",").c_str());
  } else {
    std::printf("participants (%zu):\n", participants.size());
    for (const auto* p : participants) PrintParticipantText(*p);
    std::printf("topics (%zu):\n", topics.size());
    for (const auto& [k, v] : topics) {
      std::printf("  %s  type %s\n", Printable(k.first).c_str(),
                  Printable(k.second).c_str());
      for (const EndpointData* e : v) {
        bool writer = e->guid.entity.is_writer();
        std::printf("    %s %s  %s\n", writer ? "writer" : "reader",
                    e->guid.ToString().c_str(),
                    QosText(e->qos, writer).c_str());
      }
    }
  }
  std::fflush(stdout);
  return o.expect > 0 && participants.size() < static_cast<size_t>(o.expect)
             ? kExitIncomplete
             : kExitOk;
}

// ---- pub --------------------------------------------------------------------

std::string TypeNameFor(const Options& o) {
  if (!o.type_name.empty()) return o.type_name;
  return std::string(o.type == "bytes" ? TopicType<DdsBytes>::kTypeName
                                       : TopicType<DdsString>::kTypeName);
}

void ReportIncompatible(const Options& o, const Event& e) {
  std::fprintf(stderr, "ringlab_dds %s: incompatible QoS %s with %s\n",
               o.command.c_str(), QosPolicyName(e.policy),
               e.remote.ToString().c_str());
}

int RunPub(const Options& o) {
  const int64_t size = o.size >= 0 ? o.size : -1;
  std::unique_ptr<DomainParticipant> dp;
  if (int rc =
          MakeParticipant(o, "ringlab_dds pub", &dp,
                          static_cast<uint32_t>(std::max<int64_t>(size, 0)));
      rc != kExitOk) {
    return rc;
  }
  Participant& core = dp->core();
  WriterConfig wc;
  wc.topic_name = o.topic;
  wc.type_name = TypeNameFor(o);
  wc.qos = MakeQos(o, true);
  auto w = core.CreateWriter(wc, dp->loop().now());
  if (!w.ok()) {
    std::fprintf(stderr, "ringlab_dds pub: %s\n",
                 std::string(w.status().message()).c_str());
    return kExitFailed;
  }
  dp->Flush();
  const Timestamp end = EndAfter(o.duration_s);
  auto events = [&] {
    while (auto e = core.PollEvent()) {
      if (e->kind == Event::Kind::kIncompatibleQos) ReportIncompatible(o, *e);
    }
  };
  if (o.wait_match > 0) {
    const Timestamp give_up = std::min(end, EndAfter(o.match_timeout_s));
    while (core.MatchedCount(*w) < static_cast<size_t>(o.wait_match)) {
      if (g_stop.load() || MonotonicNow() >= give_up) {
        std::fprintf(
            stderr,
            "ringlab_dds pub: %zu of %d readers matched within %.1f s\n",
            core.MatchedCount(*w), o.wait_match, o.match_timeout_s);
        return kExitFailed;
      }
      dp->RunOnce(std::chrono::milliseconds(20));
      events();
    }
    // Let the readers' side of the match settle (a reader may drop data
    // from a writer it has not finished matching).
    dp->RunFor(std::chrono::milliseconds(200));
  }
  const int64_t count = o.count >= 0 ? o.count : 10;
  const Duration period = o.rate_hz > 0
                              ? Duration(static_cast<int64_t>(1e9 / o.rate_hz))
                              : Duration(0);
  std::vector<std::byte> wire;
  uint64_t written = 0, bytes = 0, refused = 0;
  Timestamp next = MonotonicNow();
  const Timestamp t0 = next;
  while ((count == 0 || static_cast<int64_t>(written) < count) &&
         !g_stop.load() && MonotonicNow() < end) {
    Timestamp now = MonotonicNow();
    if (now < next) {
      dp->RunOnce(
          std::min<Duration>(next - now, std::chrono::milliseconds(50)));
      events();
      continue;
    }
    wire.clear();
    std::string text =
        o.have_message ? o.message : absl::StrCat("hello ", written + 1);
    bool ok = true;
    if (o.type == "bytes") {
      DdsBytes b;
      if (size >= 0) {
        b.data.resize(static_cast<size_t>(size));
        for (size_t i = 0; i < b.data.size(); ++i) {
          b.data[i] = static_cast<uint8_t>(written + i);
        }
      } else {
        b.data.assign(text.begin(), text.end());
      }
      ok = SerializeSample(b, Encoding::kCdrLe, &wire);
    } else {
      DdsString s{text};
      if (size >= 0) s.data.resize(static_cast<size_t>(size), '.');
      ok = SerializeSample(s, Encoding::kCdrLe, &wire);
    }
    if (!ok) {
      std::fprintf(stderr, "ringlab_dds pub: sample does not serialize\n");
      return kExitFailed;
    }
    absl::Status st =
        core.Write(*w, wire, KeyHash{}, WallClockNanos(), dp->loop().now());
    if (absl::IsResourceExhausted(st)) {
      // KEEP_ALL history full: let acknowledgements arrive.
      ++refused;
      dp->RunOnce(std::chrono::milliseconds(1));
      events();
      continue;
    }
    if (!st.ok()) {
      std::fprintf(stderr, "ringlab_dds pub: %s\n",
                   std::string(st.message()).c_str());
      return kExitFailed;
    }
    dp->Flush();
    ++written;
    bytes += wire.size();
    if (!o.quiet) {
      std::printf("sent %" PRIu64 " (%zu bytes) to %zu readers\n", written,
                  wire.size(), core.MatchedCount(*w));
      std::fflush(stdout);
    }
    next = period.count() > 0 ? next + period : MonotonicNow();
    // Keep the loop turning while publishing fast.
    dp->RunOnce(Duration(0));
    events();
  }
  // Linger: reliable writers wait (bounded) for acknowledgements.
  const Timestamp linger_end = std::min(end, EndAfter(o.linger_s));
  while (!g_stop.load() && MonotonicNow() < linger_end) {
    if (wc.qos.reliability == ReliabilityKind::kReliable &&
        core.AllAcknowledged(*w) && o.linger_s < 1e-9) {
      break;
    }
    dp->RunOnce(std::chrono::milliseconds(20));
    events();
  }
  const double secs = (MonotonicNow() - t0).count() / 1e9;
  std::fprintf(stderr,
               "ringlab_dds pub: %" PRIu64 " samples, %" PRIu64
               " bytes in %.2f s to %zu readers%s\n",
               written, bytes, secs, core.MatchedCount(*w),
               core.AllAcknowledged(*w) ? ", all acknowledged" : "");
  (void)refused;
  return kExitOk;
}

// ---- sub --------------------------------------------------------------------

std::string Hex(std::span<const std::byte> b, size_t max = 64) {
  std::string s;
  for (size_t i = 0; i < b.size() && i < max; ++i) {
    absl::StrAppendFormat(&s, "%02x", std::to_integer<int>(b[i]));
  }
  if (b.size() > max) s += "...";
  return s;
}

int RunSub(const Options& o) {
  std::unique_ptr<DomainParticipant> dp;
  if (int rc = MakeParticipant(o, "ringlab_dds sub", &dp, 0); rc != kExitOk) {
    return rc;
  }
  Participant& core = dp->core();
  ReaderConfig rc;
  rc.topic_name = o.topic;
  rc.type_name = TypeNameFor(o);
  rc.qos = MakeQos(o, false);
  rc.keyed = false;
  auto r = core.CreateReader(std::move(rc), dp->loop().now());
  if (!r.ok()) {
    std::fprintf(stderr, "ringlab_dds sub: %s\n",
                 std::string(r.status().message()).c_str());
    return kExitFailed;
  }
  dp->Flush();
  const int64_t count = o.count >= 0 ? o.count : 0;
  const Timestamp end = EndAfter(o.duration_s);
  uint64_t got = 0, bytes = 0, undecodable = 0;
  Timestamp first = Timestamp::Never(), last;
  DdsString str;
  DdsBytes bin;
  while (!g_stop.load() && MonotonicNow() < end &&
         (count == 0 || static_cast<int64_t>(got) < count)) {
    dp->RunOnce(std::chrono::milliseconds(50));
    while (auto e = core.PollEvent()) {
      if (e->kind == Event::Kind::kIncompatibleQos) ReportIncompatible(o, *e);
    }
    while (const ReceivedSample* s = core.Take(*r)) {
      if (!s->info.valid_data) continue;
      std::string text;
      bool ok = true;
      if (o.type == "string") {
        ok = DeserializeSample(s->payload, &str);
        text = ok ? (o.json ? JsonString(str.data) : Printable(str.data)) : "";
      } else if (o.type == "bytes") {
        ok = DeserializeSample(s->payload, &bin);
        if (ok) {
          std::span<const std::byte> v(
              reinterpret_cast<const std::byte*>(bin.data.data()),
              bin.data.size());
          text = Hex(v);
          if (o.json) text = JsonString(text);
        }
      } else {
        text = Hex(s->payload, 256);
        if (o.json) text = JsonString(text);
      }
      if (!ok) {
        ++undecodable;
        continue;
      }
      ++got;
      bytes += s->payload.size();
      last = MonotonicNow();
      if (first.is_never()) first = last;
      if (o.quiet) continue;
      const double ts = s->info.source_time_ns == kNoSourceTimestamp
                            ? 0
                            : static_cast<double>(s->info.source_time_ns) / 1e9;
      if (o.json) {
        std::printf("{\"n\":%" PRIu64
                    ",\"source_time\":%.6f,\"writer\":%s,\"sn\":%" PRId64
                    ",\"bytes\":%zu,\"data\":%s}\n",
                    got, ts, JsonString(s->info.writer.ToString()).c_str(),
                    s->info.sn, s->payload.size(), text.c_str());
      } else {
        std::printf("%.6f %s #%" PRId64 " %zuB %s\n", ts,
                    s->info.writer.ToString().c_str(), s->info.sn,
                    s->payload.size(), text.c_str());
      }
      std::fflush(stdout);
      if (count > 0 && static_cast<int64_t>(got) >= count) break;
    }
  }
  const double span =
      first.is_never() ? 0 : static_cast<double>((last - first).count()) / 1e9;
  std::fprintf(
      stderr,
      "ringlab_dds sub: %" PRIu64 " samples, %" PRIu64
      " bytes, %.1f samples/s, %zu writers matched%s\n",
      got, bytes, span > 0 ? (got - 1) / span : 0.0, core.MatchedCount(*r),
      undecodable > 0 ? absl::StrCat(", ", undecodable, " undecodable").c_str()
                      : "");
  if (count > 0 && static_cast<int64_t>(got) < count) return kExitIncomplete;
  return kExitOk;
}

}  // namespace
}  // namespace ringlab::rtps

int main(int argc, char** argv) {
  using namespace ringlab::rtps;
  if (argc < 2) {
    std::fputs(kTopUsage, stderr);
    return kExitUsage;
  }
  Options o;
  o.command = argv[1];
  if (o.command == "help" || o.command == "--help" || o.command == "-h") {
    std::fputs(kTopUsage, stdout);
    return kExitOk;
  }
  const char* usage = o.command == "ls"    ? kLsUsage
                      : o.command == "pub" ? kPubUsage
                      : o.command == "sub" ? kSubUsage
                                           : nullptr;
  if (usage == nullptr) {
    std::fprintf(stderr, "ringlab_dds: unknown command '%s'\n%s",
                 o.command.c_str(), kTopUsage);
    return kExitUsage;
  }
  for (int i = 2; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" ||
        std::string_view(argv[i]) == "-h") {
      std::printf("%s%s%s", usage, kCommonFlags,
                  o.command == "ls" ? "" : kQosFlags);
      return kExitOk;
    }
  }
  std::string err;
  if (!ParseFlags(argc, argv, 2, &o, &err)) {
    std::fprintf(stderr, "ringlab_dds %s: %s (see ringlab_dds %s --help)\n",
                 o.command.c_str(), err.c_str(), o.command.c_str());
    return kExitUsage;
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGPIPE, SIG_IGN);
  if (o.command == "ls") return RunLs(o);
  if (o.command == "pub") return RunPub(o);
  return RunSub(o);
}
