// AclFile: topic access rules in mosquitto's acl_file format.
//
//   absl::StatusOr<AclFile> acl = AclFile::Parse(
//       "topic read $SYS/#\n"          // anonymous clients
//       "user alice\n"
//       "topic readwrite sensors/#\n"  // alice only
//       "pattern write devices/%c/status\n");  // everyone, by client id
//   ClientIdentity who{.client_id = "d1", .username = "alice"};
//   acl->Allows(who, "sensors/t1", AclFile::kWrite);    // true
//   acl->AllowsSubscribe(who, "sensors/+");              // true
//
// Format (one rule a line; '#' starts a comment line; blank lines skipped):
//   topic [read|write|readwrite|deny] <filter>
//   user <username>
//   pattern [read|write|readwrite|deny] <filter>
// The access word is optional (readwrite). `topic` lines before the first
// `user` line apply to anonymous clients (no user name); after a `user` line
// they apply to that user until the next one. `pattern` lines apply to every
// client; in them, a level made of %c or %u (or containing them) is
// compared with the client id or user name substituted. A substituted value
// holding '+', '#' or '/' never matches (it would widen the rule). A client
// without a user name never matches a %u pattern.
//
// Decisions:
// - PUBLISH to topic T (kWrite) and delivery of T (kRead): denied if any
//   applicable `deny` rule's filter matches T, else allowed if some
//   applicable rule with that access matches T, else denied.
// - SUBSCRIBE to filter F: denied if F lies inside a `deny` rule's filter,
//   else allowed if F lies inside (every topic F matches also matches) the
//   filter of an applicable rule with read access. A shared subscription
//   "$share/<group>/F" is checked as F. Delivery is checked again per topic
//   (kRead), so `deny` lines narrower than a subscription still hold.
// - Wildcard rules follow the '$' rule (MQTT-4.7.2-1): "#" does not cover
//   "$SYS/...".
//
// Errors: Parse/Load return InvalidArgument naming the line for an unknown
// keyword, a bad access word or an invalid filter. Threading: immutable
// after Parse; checks do not allocate (they run once per delivery).
#ifndef RINGLAB_MQTT_ACL_H_
#define RINGLAB_MQTT_ACL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "mqtt/broker.h"

namespace ringlab::mqtt {

class AclFile {
 public:
  enum Access : uint8_t { kDeny = 0, kRead = 1, kWrite = 2, kReadWrite = 3 };

  static absl::StatusOr<AclFile> Parse(std::string_view text);
  static absl::StatusOr<AclFile> Load(const std::string& path);

  // kRead or kWrite on a topic name.
  bool Allows(const ClientIdentity& client, std::string_view topic,
              Access access) const;
  bool AllowsSubscribe(const ClientIdentity& client,
                       std::string_view filter) const;

  size_t rule_count() const;

 private:
  struct Rule {
    std::string filter;
    Access access = kReadWrite;
    bool pattern = false;  // %c / %u substitution
  };
  // Calls f(rule) for the rules that apply to `client`.
  template <typename F>
  void ForRules(const ClientIdentity& client, F&& f) const;

  std::vector<Rule> anonymous_;
  absl::flat_hash_map<std::string, std::vector<Rule>> by_user_;
  std::vector<Rule> patterns_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_ACL_H_
