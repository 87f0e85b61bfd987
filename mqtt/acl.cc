#include "mqtt/acl.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "mqtt/internal/absl_view.h"
#include "mqtt/topic.h"

namespace ringlab::mqtt {
namespace {

// Walks the '/'-separated levels of a topic or filter without copying;
// "a/" has two levels, "a" and "".
class Levels {
 public:
  explicit Levels(std::string_view text) : rest_(text) {}
  bool more() const { return more_; }
  std::string_view next() {
    const size_t slash = rest_.find('/');
    std::string_view level;
    if (slash == std::string_view::npos) {
      level = rest_;
      more_ = false;
    } else {
      level = rest_.substr(0, slash);
      rest_.remove_prefix(slash + 1);
    }
    return level;
  }

 private:
  std::string_view rest_;
  bool more_ = true;
};

bool UsableSubstitute(std::string_view value) {
  return value.find_first_of("+#/") == std::string_view::npos;
}

// One rule level against one topic (or filter) level. In a pattern, %c and
// %u stand for the client id and user name.
bool LevelEquals(std::string_view rule, std::string_view level, bool pattern,
                 const ClientIdentity& who) {
  if (!pattern || rule.find('%') == std::string_view::npos) {
    return rule == level;
  }
  size_t at = 0;
  for (size_t i = 0; i < rule.size(); ++i) {
    if (rule[i] == '%' && i + 1 < rule.size() &&
        (rule[i + 1] == 'c' || rule[i + 1] == 'u')) {
      std::string_view value;
      if (rule[i + 1] == 'c') {
        value = who.client_id;
      } else {
        if (!who.username) return false;
        value = *who.username;
      }
      if (!UsableSubstitute(value)) return false;
      if (level.substr(at, value.size()) != value) return false;
      at += value.size();
      ++i;
      continue;
    }
    if (at >= level.size() || level[at] != rule[i]) return false;
    ++at;
  }
  return at == level.size();
}

bool StartsWithWildcard(std::string_view s) {
  return !s.empty() && (s[0] == '+' || s[0] == '#');
}

// True if the rule filter matches topic name `topic` (§4.7.1).
bool Covers(std::string_view rule, bool pattern, std::string_view topic,
            const ClientIdentity& who) {
  // MQTT-4.7.2-1: wildcards at the first level do not match '$' topics.
  if (!topic.empty() && topic[0] == '$' && StartsWithWildcard(rule)) {
    return false;
  }
  Levels r(rule), t(topic);
  while (r.more()) {
    const std::string_view rl = r.next();
    if (rl == "#") return true;  // this level and below, and the parent
    if (!t.more()) return false;
    const std::string_view tl = t.next();
    if (rl == "+") continue;
    if (!LevelEquals(rl, tl, pattern, who)) return false;
  }
  return !t.more();
}

// True if every topic that filter `sub` matches is also matched by the rule
// filter: the subscription lies inside the rule.
bool Contains(std::string_view rule, bool pattern, std::string_view sub,
              const ClientIdentity& who) {
  if (!sub.empty() && sub[0] == '$' && StartsWithWildcard(rule)) return false;
  Levels r(rule), f(sub);
  while (r.more()) {
    const std::string_view rl = r.next();
    if (rl == "#") return true;
    if (!f.more()) return false;
    const std::string_view fl = f.next();
    if (fl == "#") return false;  // the subscription reaches further
    if (rl == "+") continue;
    if (fl == "+") return false;  // the rule names one value only
    if (!LevelEquals(rl, fl, pattern, who)) return false;
  }
  return !f.more();
}

}  // namespace

absl::StatusOr<AclFile> AclFile::Parse(std::string_view text) {
  AclFile acl;
  std::vector<Rule>* current = &acl.anonymous_;
  int line_no = 0;
  // Debian's abseil has its own string_view: parse in absl::string_view.
  for (absl::string_view line :
       absl::StrSplit(internal::AbslView(text), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("acl file line ", line_no, ": ", why));
    };
    // Split off one word; the rest of the line is one argument (topics and
    // user names may hold spaces).
    auto word = [](absl::string_view& s) {
      const size_t end = s.find_first_of(" \t");
      absl::string_view w = s.substr(0, end);
      s = end == absl::string_view::npos
              ? absl::string_view()
              : absl::StripLeadingAsciiWhitespace(s.substr(end));
      return w;
    };
    absl::string_view rest = line;
    const absl::string_view keyword = word(rest);
    if (keyword == "user") {
      if (rest.empty()) return bad("user needs a name");
      current = &acl.by_user_[std::string(rest)];
      continue;
    }
    if (keyword != "topic" && keyword != "pattern") {
      return bad(absl::StrCat("unknown keyword '", keyword, "'"));
    }
    Rule rule;
    rule.pattern = keyword == "pattern";
    absl::string_view probe = rest;
    const absl::string_view access = word(probe);
    if (!probe.empty()) {
      if (access == "read") {
        rule.access = kRead;
      } else if (access == "write") {
        rule.access = kWrite;
      } else if (access == "readwrite") {
        rule.access = kReadWrite;
      } else if (access == "deny") {
        rule.access = kDeny;
      } else {
        return bad(absl::StrCat("unknown access '", access, "'"));
      }
      rest = probe;
    }
    if (rest.empty() ||
        !IsValidTopicFilter(std::string_view(rest.data(), rest.size()))) {
      return bad("missing or invalid topic filter");
    }
    rule.filter = std::string(rest);
    (rule.pattern ? acl.patterns_ : *current).push_back(std::move(rule));
  }
  return acl;
}

absl::StatusOr<AclFile> AclFile::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<AclFile> acl = Parse(text.str());
  if (!acl.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", acl.status().message()));
  }
  return acl;
}

template <typename F>
void AclFile::ForRules(const ClientIdentity& client, F&& f) const {
  if (client.username) {
    auto it = by_user_.find(internal::AbslView(*client.username));
    if (it != by_user_.end()) {
      for (const Rule& r : it->second) f(r);
    }
  } else {
    for (const Rule& r : anonymous_) f(r);
  }
  for (const Rule& r : patterns_) f(r);
}

bool AclFile::Allows(const ClientIdentity& client, std::string_view topic,
                     Access access) const {
  bool allowed = false;
  bool denied = false;
  ForRules(client, [&](const Rule& r) {
    if (denied || !Covers(r.filter, r.pattern, topic, client)) return;
    if (r.access == kDeny) {
      denied = true;
    } else if ((r.access & access) != 0) {
      allowed = true;
    }
  });
  return allowed && !denied;
}

bool AclFile::AllowsSubscribe(const ClientIdentity& client,
                              std::string_view filter) const {
  SharedFilter shared;
  if (IsSharedFilter(filter) && ParseSharedFilter(filter, &shared)) {
    filter = shared.filter;
  }
  bool allowed = false;
  bool denied = false;
  ForRules(client, [&](const Rule& r) {
    if (denied || !Contains(r.filter, r.pattern, filter, client)) return;
    if (r.access == kDeny) {
      denied = true;
    } else if ((r.access & kRead) != 0) {
      allowed = true;
    }
  });
  return allowed && !denied;
}

size_t AclFile::rule_count() const {
  size_t n = anonymous_.size() + patterns_.size();
  for (const auto& [user, rules] : by_user_) n += rules.size();
  return n;
}

}  // namespace ringlab::mqtt
