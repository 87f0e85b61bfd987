#include "mqtt/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "mqtt/internal/absl_view.h"

namespace ringlab::mqtt {
namespace {

constexpr size_t kSha512Bytes = 64;

// One password hash of `kind` over (password, salt); false if OpenSSL
// fails (never expected, but a failed hash must not read as a match).
bool ComputeHash(bool pbkdf2, int iterations, std::span<const std::byte> pw,
                 std::string_view salt, unsigned char out[kSha512Bytes]) {
  if (pbkdf2) {
    return PKCS5_PBKDF2_HMAC(
               reinterpret_cast<const char*>(pw.data()), int(pw.size()),
               reinterpret_cast<const unsigned char*>(salt.data()),
               int(salt.size()), iterations, EVP_sha512(), kSha512Bytes,
               out) == 1;
  }
  // The $6$ format: SHA-512(password || salt).
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return false;
  unsigned int len = 0;
  const bool ok = EVP_DigestInit_ex(ctx, EVP_sha512(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, pw.data(), pw.size()) == 1 &&
                  EVP_DigestUpdate(ctx, salt.data(), salt.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx, out, &len) == 1 &&
                  len == kSha512Bytes;
  EVP_MD_CTX_free(ctx);
  return ok;
}

}  // namespace

absl::StatusOr<PasswordFile> PasswordFile::Parse(std::string_view text) {
  PasswordFile file;
  int line_no = 0;
  // Debian's abseil has its own string_view: parse in absl::string_view.
  for (absl::string_view line :
       absl::StrSplit(internal::AbslView(text), '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("password file line ", line_no, ": ", why));
    };
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return bad("expected user:hash");
    }
    const absl::string_view user = line.substr(0, colon);
    const absl::string_view hash = line.substr(colon + 1);
    // "$6$salt$hash" splits into "", "6", salt, hash; "$7$" has iterations.
    std::vector<absl::string_view> parts = absl::StrSplit(hash, '$');
    Entry e;
    absl::string_view salt64, hash64;
    if (parts.size() == 4 && parts[0].empty() && parts[1] == "6") {
      e.kind = Entry::Kind::kSha512;
      salt64 = parts[2];
      hash64 = parts[3];
    } else if (parts.size() == 5 && parts[0].empty() && parts[1] == "7") {
      e.kind = Entry::Kind::kPbkdf2Sha512;
      if (!absl::SimpleAtoi(parts[2], &e.iterations) || e.iterations < 1) {
        return bad("bad iteration count");
      }
      salt64 = parts[3];
      hash64 = parts[4];
    } else {
      return bad(
          "not a $6$ or $7$ hash (plain-text passwords are not accepted; "
          "run mosquitto_passwd -U)");
    }
    if (!absl::Base64Unescape(salt64, &e.salt) || e.salt.empty()) {
      return bad("salt is not base64");
    }
    if (!absl::Base64Unescape(hash64, &e.hash) ||
        e.hash.size() != kSha512Bytes) {
      return bad("hash is not a base64 SHA-512 value");
    }
    if (!file.users_.emplace(std::string(user), std::move(e)).second) {
      return bad(absl::StrCat("user '", user, "' listed twice"));
    }
  }
  return file;
}

absl::StatusOr<PasswordFile> PasswordFile::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<PasswordFile> file = Parse(text.str());
  if (!file.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", file.status().message()));
  }
  return file;
}

bool PasswordFile::Contains(std::string_view user) const {
  return users_.contains(internal::AbslView(user));
}

bool PasswordFile::Verify(std::string_view user,
                          std::span<const std::byte> password) const {
  auto it = users_.find(internal::AbslView(user));
  if (it == users_.end()) return false;
  const Entry& e = it->second;
  unsigned char computed[kSha512Bytes];
  if (!ComputeHash(e.kind == Entry::Kind::kPbkdf2Sha512, e.iterations, password,
                   e.salt, computed)) {
    return false;
  }
  return CRYPTO_memcmp(computed, e.hash.data(), kSha512Bytes) == 0;
}

ReasonCode FileAuthenticator::Authenticate(const Connect& connect) {
  if (connect.username && options_.passwords) {
    const std::span<const std::byte> password =
        connect.password.value_or(std::span<const std::byte>());
    // A missing password is checked like an empty one: it fails unless the
    // file really holds the hash of "" for this user.
    if (options_.passwords->Verify(*connect.username, password)) {
      ++counters_.accepted_user;
      return ReasonCode::kSuccess;
    }
    ++counters_.refused_password;
    return ReasonCode::kBadUserNameOrPassword;  // 0x86; 3.1.1 code 4
  }
  if (options_.allow_anonymous) {
    ++counters_.accepted_anonymous;
    return ReasonCode::kSuccess;
  }
  ++counters_.refused_anonymous;
  return ReasonCode::kNotAuthorized;  // 0x87; 3.1.1 code 5
}

bool FileAuthenticator::MayPublish(const ClientIdentity& client,
                                   std::string_view topic) {
  if (!options_.acl) return true;
  if (options_.acl->Allows(client, topic, AclFile::kWrite)) return true;
  ++counters_.publish_denied;
  return false;
}

bool FileAuthenticator::MaySubscribe(const ClientIdentity& client,
                                     std::string_view filter) {
  if (!options_.acl) return true;
  if (options_.acl->AllowsSubscribe(client, filter)) return true;
  ++counters_.subscribe_denied;
  return false;
}

bool FileAuthenticator::MayReceive(const ClientIdentity& client,
                                   std::string_view topic) {
  if (!options_.acl) return true;
  if (options_.acl->Allows(client, topic, AclFile::kRead)) return true;
  ++counters_.receive_denied;
  return false;
}

}  // namespace ringlab::mqtt
