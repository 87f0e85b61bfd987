// Password files written by the real mosquitto_passwd (skipped when it is
// not installed), their parser's errors, and the broker core's CONNACK for
// each authentication outcome on 3.1.1 and v5.
#include "mqtt/auth.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/internal/broker_sim.h"
#include "testing/process.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::OwnedFrame;
using internal::RawClient;

std::span<const std::byte> Bytes(std::string_view s) { return AsBytes(s); }

// Runs mosquitto_passwd with `args` (user-controlled test strings only) on
// `file`; false when the tool is missing.
bool MosquittoPasswd(const std::string& args) {
  absl::StatusOr<std::string> bin = testkit::FindBinary("mosquitto_passwd");
  if (!bin.ok()) return false;
  const std::string cmd = absl::StrCat(*bin, " ", args, " >/dev/null 2>&1");
  return std::system(cmd.c_str()) == 0;
}

struct Generated {
  std::optional<testkit::TempDir> dir;
  std::string path;
};

// alice/secret and bob/"p:w d" in $7$ (PBKDF2), carol/pw6 in $6$ (SHA-512).
Generated GeneratePasswordFile() {
  Generated g;
  absl::StatusOr<testkit::TempDir> dir = testkit::TempDir::Create("mqtt_auth");
  if (!dir.ok()) return g;
  g.path = dir->path() + "/passwd";
  g.dir.emplace(*std::move(dir));
  const std::string six = g.path + ".6";
  if (!MosquittoPasswd(absl::StrCat("-c -b ", g.path, " alice secret")) ||
      !MosquittoPasswd(absl::StrCat("-b ", g.path, " bob 'p:w d'")) ||
      !MosquittoPasswd(absl::StrCat("-H sha512 -c -b ", six, " carol pw6")) ||
      std::system(absl::StrCat("cat ", six, " >> ", g.path).c_str()) != 0) {
    g.path.clear();
  }
  return g;
}

TEST(PasswordFileTest, VerifiesMosquittoPasswdOutput) {
  Generated g = GeneratePasswordFile();
  if (g.path.empty()) GTEST_SKIP() << "mosquitto_passwd is not installed";
  absl::StatusOr<PasswordFile> file = PasswordFile::Load(g.path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->size(), 3u);
  EXPECT_TRUE(file->Verify("alice", Bytes("secret")));
  EXPECT_TRUE(file->Verify("bob", Bytes("p:w d")));
  EXPECT_TRUE(file->Verify("carol", Bytes("pw6")));  // $6$, read-only
  EXPECT_FALSE(file->Verify("alice", Bytes("Secret")));
  EXPECT_FALSE(file->Verify("alice", Bytes("")));
  EXPECT_FALSE(file->Verify("bob", Bytes("secret")));
  EXPECT_FALSE(file->Verify("carol", Bytes("pw7")));
  EXPECT_FALSE(file->Verify("mallory", Bytes("secret")));
}

TEST(PasswordFileTest, RejectsLinesItCannotCheck) {
  const std::string good =
      "alice:$6$lQhxv1AZOxz/Q2Iv$bPLIfxX0MpPWfuBr7iol0aq1pwcAWRb+UnIfPo9NbUoX"
      "W52yxr4ifqILTrhxkDFse2+x61OHNLkI3hkDZeEmfw==";
  EXPECT_TRUE(PasswordFile::Parse("# comment\n\n" + good + "\r\n").ok());
  for (const std::string& bad : {
           std::string("alice:plaintext"),         // not hashed
           std::string("alice"),                   // no colon
           std::string(":$6$AAAA$AAAA"),           // no user
           std::string("alice:$6$!!!$") + "AAAA",  // salt not base64
           std::string("alice:$6$AAAA$AAAA"),      // hash too short
           std::string("alice:$7$x$AAAA$AAAA"),    // iterations
           std::string("alice:$5$AAAA$AAAA"),      // unknown scheme
           good + "\n" + good,                     // duplicate user
       }) {
    absl::StatusOr<PasswordFile> f = PasswordFile::Parse(bad);
    EXPECT_FALSE(f.ok()) << bad;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(PasswordFile::Load("/nonexistent/passwd").status().code(),
            absl::StatusCode::kNotFound);
}

// The CONNACK code a broker with `auth` gives this CONNECT.
uint8_t ConnackCode(FileAuthenticator& auth, Version v,
                    std::optional<std::string_view> user,
                    std::optional<std::string_view> password) {
  BrokerSim sim({}, std::chrono::microseconds(50), &auth);
  RawClient& c = sim.AddClient();
  c.Open();
  Connect connect;
  connect.version = v;
  connect.client_id = "c1";
  connect.username = user;
  if (password) connect.password = Bytes(*password);
  c.Send(connect, v);
  sim.RunFor(std::chrono::milliseconds(5));
  OwnedFrame f;
  const Connack ack = c.Expect<Connack>(v, &f);
  if (ack.code != 0) {
    sim.RunFor(std::chrono::milliseconds(5));
    EXPECT_TRUE(c.closed());  // a refusal closes the connection
    EXPECT_EQ(sim.broker().session_count(), 0u);
  }
  return ack.code;
}

TEST(FileAuthenticatorTest, ConnackForEachOutcome) {
  Generated g = GeneratePasswordFile();
  if (g.path.empty()) GTEST_SKIP() << "mosquitto_passwd is not installed";
  for (bool anonymous : {false, true}) {
    FileAuthenticator::Options o;
    o.passwords = *PasswordFile::Load(g.path);
    o.allow_anonymous = anonymous;
    FileAuthenticator auth(std::move(o));
    for (Version v : {Version::k311, Version::k5}) {
      SCOPED_TRACE(absl::StrCat("v", int(v), " anonymous ", anonymous));
      const bool v5 = v == Version::k5;
      EXPECT_EQ(ConnackCode(auth, v, "alice", "secret"), 0);
      EXPECT_EQ(ConnackCode(auth, v, "carol", "pw6"), 0);
      // MQTT-3.2.2 / §3.2.2.2: bad user name or password is 4 / 0x86,
      // whatever allow_anonymous says.
      EXPECT_EQ(ConnackCode(auth, v, "alice", "wrong"), v5 ? 0x86 : 4);
      EXPECT_EQ(ConnackCode(auth, v, "mallory", "secret"), v5 ? 0x86 : 4);
      EXPECT_EQ(ConnackCode(auth, v, "alice", std::nullopt), v5 ? 0x86 : 4);
      // No user name: Not authorized (5 / 0x87) unless anonymous is on.
      EXPECT_EQ(ConnackCode(auth, v, std::nullopt, std::nullopt),
                anonymous ? 0 : (v5 ? 0x87 : 5));
    }
    EXPECT_EQ(auth.counters().accepted_user, 4u);
    EXPECT_EQ(auth.counters().refused_password, 6u);
    EXPECT_EQ(auth.counters().accepted_anonymous, anonymous ? 2u : 0u);
    EXPECT_EQ(auth.counters().refused_anonymous, anonymous ? 0u : 2u);
  }
}

TEST(FileAuthenticatorTest, NoPasswordFileMeansAnonymousRules) {
  FileAuthenticator closed({});  // allow_anonymous is off by default
  EXPECT_EQ(ConnackCode(closed, Version::k5, "alice", "x"), 0x87);
  EXPECT_EQ(ConnackCode(closed, Version::k311, std::nullopt, std::nullopt), 5);
  FileAuthenticator::Options o;
  o.allow_anonymous = true;
  FileAuthenticator open(std::move(o));
  EXPECT_EQ(ConnackCode(open, Version::k5, "alice", "x"), 0);
  EXPECT_EQ(ConnackCode(open, Version::k311, std::nullopt, std::nullopt), 0);
}

}  // namespace
}  // namespace ringlab::mqtt
