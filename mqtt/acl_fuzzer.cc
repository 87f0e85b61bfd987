// libFuzzer target for the password-file and ACL-file parsers, and for the
// ACL matchers on whatever rules parse: the input is split at the first NUL
// into a file and a topic/filter to check.
// fuzz-deps: mqtt/acl.cc mqtt/auth.cc mqtt/topic.cc
// fuzz-libs: -lcrypto
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mqtt/acl.h"
#include "mqtt/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ringlab::mqtt::AclFile;
  using ringlab::mqtt::ClientIdentity;
  using ringlab::mqtt::PasswordFile;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view file = input.substr(0, nul);
  const std::string_view topic =
      nul == std::string_view::npos ? "a/b" : input.substr(nul + 1);
  absl::StatusOr<PasswordFile> pw = PasswordFile::Parse(file);
  if (pw.ok()) {
    (void)pw->Verify(
        "user",
        std::span<const std::byte>(
            reinterpret_cast<const std::byte*>(topic.data()), topic.size()));
  }
  absl::StatusOr<AclFile> acl = AclFile::Parse(file);
  if (acl.ok()) {
    for (const ClientIdentity& who :
         {ClientIdentity{"c", std::nullopt}, ClientIdentity{topic, topic}}) {
      (void)acl->Allows(who, topic, AclFile::kRead);
      (void)acl->Allows(who, topic, AclFile::kWrite);
      (void)acl->AllowsSubscribe(who, topic);
    }
  }
  return 0;
}
