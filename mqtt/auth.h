// Password files in mosquitto_passwd's format, and FileAuthenticator: the
// BrokerAuthenticator the broker program uses (password file, ACL file,
// allow_anonymous).
//
//   absl::StatusOr<PasswordFile> passwords =
//       PasswordFile::Load("/etc/ringlab/passwd");  // mosquitto_passwd -c
//   if (!passwords.ok()) return passwords.status();
//   FileAuthenticator::Options o;
//   o.passwords = *std::move(passwords);
//   o.allow_anonymous = false;            // the default
//   FileAuthenticator auth(std::move(o));
//   Broker broker(BrokerOptions{}, &auth);  // auth outlives the broker
//
// File format (mosquitto 2.0's mosquitto_passwd output), one user a line:
//   user:$7$<iterations>$<salt, base64>$<hash, base64>
//     PBKDF2-HMAC-SHA512 of the password with that salt and iteration count
//     (64-byte hash), what mosquitto_passwd 2.0 writes.
//   user:$6$<salt, base64>$<hash, base64>
//     SHA-512 of password || salt, mosquitto 1.x's format, accepted for
//     reading so old files keep working.
// Empty lines and lines starting with '#' are skipped; a trailing '\r' is
// ignored. Any other line (plain-text passwords included) makes Load() fail
// with InvalidArgument naming the line: a broker never starts with half a
// password file. Hashes are computed with OpenSSL (PKCS5_PBKDF2_HMAC,
// EVP SHA-512) and compared in constant time (CRYPTO_memcmp).
//
// CONNECT outcomes (FileAuthenticator::Authenticate):
// - no user name: accepted only with allow_anonymous, else Not authorized
//   (3.1.1 return code 5, v5 0x87);
// - a user name with a password file: the password must verify, else Bad
//   User Name or Password (3.1.1 return code 4, v5 0x86); an unknown user
//   gets the same answer, so a client cannot probe for names;
// - a user name and no password file: treated as anonymous for admission
//   (allow_anonymous decides), but the name is still used by the ACL.
// Authorization goes to the AclFile when one is set (mqtt/acl.h); without
// one every topic is allowed.
//
// Threading: none; immutable after construction except for counters, so
// one instance serves one Broker on one thread. Verification of a $7$ entry
// costs `iterations` HMAC rounds per CONNECT (101 by default).
#ifndef RINGLAB_MQTT_AUTH_H_
#define RINGLAB_MQTT_AUTH_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "mqtt/acl.h"
#include "mqtt/broker.h"

namespace ringlab::mqtt {

class PasswordFile {
 public:
  static absl::StatusOr<PasswordFile> Parse(std::string_view text);
  static absl::StatusOr<PasswordFile> Load(const std::string& path);

  // True if `user` is listed and `password` matches its hash.
  bool Verify(std::string_view user, std::span<const std::byte> password) const;
  bool Contains(std::string_view user) const;
  size_t size() const { return users_.size(); }

 private:
  struct Entry {
    enum class Kind : uint8_t { kSha512, kPbkdf2Sha512 };
    Kind kind = Kind::kPbkdf2Sha512;
    int iterations = 0;
    std::string salt;
    std::string hash;
  };
  absl::flat_hash_map<std::string, Entry> users_;
};

struct AuthCounters {
  uint64_t accepted_user = 0;       // user name and good password
  uint64_t accepted_anonymous = 0;  // admitted without a verified password
  uint64_t refused_anonymous = 0;   // 0x87 / 5
  uint64_t refused_password = 0;    // 0x86 / 4 (bad password, unknown user)
  uint64_t publish_denied = 0;
  uint64_t subscribe_denied = 0;
  uint64_t receive_denied = 0;
};

class FileAuthenticator : public BrokerAuthenticator {
 public:
  struct Options {
    std::optional<PasswordFile> passwords;
    std::optional<AclFile> acl;
    bool allow_anonymous = false;
  };
  explicit FileAuthenticator(Options options) : options_(std::move(options)) {}

  ReasonCode Authenticate(const Connect& connect) override;
  bool MayPublish(const ClientIdentity& client,
                  std::string_view topic) override;
  bool MaySubscribe(const ClientIdentity& client,
                    std::string_view filter) override;
  bool MayReceive(const ClientIdentity& client,
                  std::string_view topic) override;

  const AuthCounters& counters() const { return counters_; }

 private:
  Options options_;
  AuthCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_AUTH_H_
