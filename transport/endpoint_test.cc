#include "transport/endpoint.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash_testing.h"
#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace ringlab {
namespace {

Endpoint MustParse(std::string_view text) {
  absl::StatusOr<Endpoint> ep = Endpoint::Parse(text);
  EXPECT_TRUE(ep.ok()) << text << ": " << ep.status();
  return ep.ok() ? *ep : Endpoint();
}

TEST(EndpointTest, DefaultIsUnspecified) {
  Endpoint ep;
  EXPECT_FALSE(ep.valid());
  EXPECT_EQ(ep.family(), AF_UNSPEC);
  EXPECT_EQ(ep.port(), 0);
  EXPECT_EQ(ep.socklen(), 0u);
  EXPECT_FALSE(ep.is_multicast());
  EXPECT_FALSE(ep.is_ipv4());
  EXPECT_EQ(ep.ipv4_host_order(), 0u);
  EXPECT_EQ(ep.ToString(), "unspecified");
  ep.set_port(80);  // no family: nothing to set
  EXPECT_EQ(ep.port(), 0);
  EXPECT_EQ(Endpoint(), Endpoint());
}

TEST(EndpointTest, ParsesIpv4) {
  const Endpoint ep = MustParse("127.0.0.1:7400");
  EXPECT_TRUE(ep.valid());
  EXPECT_TRUE(ep.is_ipv4());
  EXPECT_EQ(ep.family(), AF_INET);
  EXPECT_EQ(ep.port(), 7400);
  EXPECT_EQ(ep.ipv4_host_order(), 0x7f000001u);
  EXPECT_EQ(ep.socklen(), sizeof(sockaddr_in));
  EXPECT_EQ(ep.ToString(), "127.0.0.1:7400");
  EXPECT_EQ(ep.HostString(), "127.0.0.1");
  // The sockaddr is ready for the kernel: network byte order.
  const auto* sin = reinterpret_cast<const sockaddr_in*>(ep.sockaddr());
  EXPECT_EQ(sin->sin_family, AF_INET);
  EXPECT_EQ(ntohs(sin->sin_port), 7400);
  EXPECT_EQ(ntohl(sin->sin_addr.s_addr), 0x7f000001u);
}

TEST(EndpointTest, ParsesIpv6) {
  const Endpoint ep = MustParse("[::1]:9000");
  EXPECT_TRUE(ep.valid());
  EXPECT_FALSE(ep.is_ipv4());
  EXPECT_EQ(ep.family(), AF_INET6);
  EXPECT_EQ(ep.port(), 9000);
  EXPECT_EQ(ep.ipv4_host_order(), 0u);
  EXPECT_EQ(ep.socklen(), sizeof(sockaddr_in6));
  EXPECT_EQ(ep.ToString(), "[::1]:9000");
  EXPECT_EQ(ep.HostString(), "::1");
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ep.sockaddr());
  EXPECT_EQ(ntohs(sin6->sin6_port), 9000);
  EXPECT_EQ(sin6->sin6_addr.s6_addr[15], 1);

  const Endpoint full = MustParse("[2001:db8:0:0:0:0:0:1]:1");
  EXPECT_EQ(full.ToString(), "[2001:db8::1]:1");  // canonical form
  const Endpoint mapped = MustParse("[::ffff:10.1.2.3]:5");
  EXPECT_EQ(mapped.family(), AF_INET6);
}

TEST(EndpointTest, PortRange) {
  EXPECT_EQ(MustParse("1.2.3.4:0").port(), 0);
  EXPECT_EQ(MustParse("1.2.3.4:65535").port(), 65535);
  EXPECT_EQ(MustParse("[::]:65535").port(), 65535);
  for (const char* bad :
       {"1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:99999999999", "[::1]:70000"}) {
    const absl::StatusOr<Endpoint> ep = Endpoint::Parse(bad);
    EXPECT_EQ(ep.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(EndpointTest, BadInputsAreInvalidArgumentNamingTheInput) {
  const std::vector<std::string> bad = {
      "",
      "127.0.0.1",
      "127.0.0.1:",
      ":80",
      "localhost:80",
      "example.com:443",
      "256.0.0.1:80",
      "1.2.3:80",
      "1.2.3.4.5:80",
      "1.2.3.4:80x",
      "1.2.3.4:x80",
      "[::1]",
      "[::1]80",
      "[::1:80",
      "[::1]:",
      "[]:80",
      "[::g]:80",
      "[",
      "]:80",
      "1.2.3.4::80",
  };
  for (const std::string& text : bad) {
    const absl::StatusOr<Endpoint> ep = Endpoint::Parse(text);
    ASSERT_FALSE(ep.ok()) << "accepted '" << text << "' as " << ep->ToString();
    EXPECT_EQ(ep.status().code(), absl::StatusCode::kInvalidArgument) << text;
    if (!text.empty()) {
      // Either the whole input or the bad host part is named.
      const std::string message(ep.status().message());
      std::string host = text.substr(0, text.rfind(':'));
      if (!host.empty() && host.front() == '[') host.erase(0, 1);
      if (!host.empty() && host.back() == ']') host.pop_back();
      const bool names_input = message.find(text) != std::string::npos ||
                               message.find(host) != std::string::npos;
      EXPECT_TRUE(names_input) << "'" << text << "' -> " << message;
    }
  }
}

// The port must be plain digits. absl::SimpleAtoi (endpoint.cc, Parse) also
// accepts surrounding whitespace and a '+' sign, so these slip through.
TEST(EndpointTest, RejectsLenientPortSyntax) {
  for (const char* text :
       {"127.0.0.1: 80", "127.0.0.1:80 ", "127.0.0.1:+80", "[::1]: 80"}) {
    const absl::StatusOr<Endpoint> ep = Endpoint::Parse(text);
    EXPECT_FALSE(ep.ok()) << "accepted '" << text << "' as "
                          << (ep.ok() ? ep->ToString() : "");
  }
}

// The header documents "[v6]:port". Without brackets "::1:80" is itself a
// valid IPv6 address, so reading the last group as a port is a guess.
TEST(EndpointTest, RejectsUnbracketedIpv6WithPort) {
  const absl::StatusOr<Endpoint> ep = Endpoint::Parse("::1:80");
  EXPECT_FALSE(ep.ok()) << "accepted as " << (ep.ok() ? ep->ToString() : "");
}

TEST(EndpointTest, RejectsBracketedIpv4) {
  const absl::StatusOr<Endpoint> ep = Endpoint::Parse("[1.2.3.4]:80");
  EXPECT_FALSE(ep.ok()) << "accepted as " << (ep.ok() ? ep->ToString() : "");
}

// A string_view with an embedded NUL must not be cut short at the NUL.
TEST(EndpointTest, RejectsEmbeddedNul) {
  const std::string_view host("1.2.3.4\0junk", 12);
  const absl::StatusOr<Endpoint> ep = Endpoint::FromHostPort(host, 5);
  EXPECT_FALSE(ep.ok()) << "accepted as " << (ep.ok() ? ep->ToString() : "");
}

TEST(EndpointTest, FromHostPort) {
  absl::StatusOr<Endpoint> v4 = Endpoint::FromHostPort("10.1.2.3", 5);
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->ToString(), "10.1.2.3:5");
  absl::StatusOr<Endpoint> v6 = Endpoint::FromHostPort("fe80::1", 6);
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->ToString(), "[fe80::1]:6");
  EXPECT_EQ(Endpoint::FromHostPort("", 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status named = Endpoint::FromHostPort("example.com", 1).status();
  EXPECT_EQ(named.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(named.message()).find("example.com"),
            std::string::npos);
}

TEST(EndpointTest, Ipv4AndLoopbackConstructors) {
  const Endpoint ep = Endpoint::Ipv4(0xc0a80101, 53);
  EXPECT_EQ(ep.ToString(), "192.168.1.1:53");
  EXPECT_EQ(ep.ipv4_host_order(), 0xc0a80101u);
  EXPECT_EQ(Endpoint::Loopback(8080), MustParse("127.0.0.1:8080"));
}

TEST(EndpointTest, SetPort) {
  Endpoint v4 = MustParse("1.2.3.4:1");
  v4.set_port(65535);
  EXPECT_EQ(v4.port(), 65535);
  EXPECT_EQ(v4.ToString(), "1.2.3.4:65535");
  Endpoint v6 = MustParse("[::1]:1");
  v6.set_port(443);
  EXPECT_EQ(v6.ToString(), "[::1]:443");
}

TEST(EndpointTest, ToStringRoundTrips) {
  for (const char* text :
       {"0.0.0.0:0", "127.0.0.1:7400", "255.255.255.255:65535",
        "239.255.0.1:7400", "[::]:0", "[::1]:9000", "[2001:db8::1]:1",
        "[ff02::1]:7400", "[::ffff:10.1.2.3]:5", "[fe80::1:2:3:4]:12345"}) {
    const Endpoint ep = MustParse(text);
    EXPECT_EQ(ep.ToString(), text);
    EXPECT_EQ(MustParse(ep.ToString()), ep) << text;
  }
}

TEST(EndpointTest, FromSockaddr) {
  const Endpoint original = MustParse("10.0.0.7:1234");
  const Endpoint copy =
      Endpoint::FromSockaddr(original.sockaddr(), original.socklen());
  EXPECT_EQ(copy, original);
  const Endpoint v6 = MustParse("[2001:db8::7]:99");
  EXPECT_EQ(Endpoint::FromSockaddr(v6.sockaddr(), v6.socklen()), v6);

  EXPECT_FALSE(Endpoint::FromSockaddr(nullptr, 0).valid());
  // Too short for its family.
  EXPECT_FALSE(Endpoint::FromSockaddr(original.sockaddr(), 4).valid());
  EXPECT_FALSE(
      Endpoint::FromSockaddr(v6.sockaddr(), sizeof(sockaddr_in)).valid());
  // Unknown family.
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  EXPECT_FALSE(
      Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&un), sizeof(un))
          .valid());
  // Copy into a mutable endpoint the way recvfrom would.
  Endpoint target;
  std::memcpy(target.mutable_sockaddr(), original.sockaddr(),
              original.socklen());
  EXPECT_EQ(target, original);
}

// Equality is about address and port: the sin_zero padding of a
// kernel-provided sockaddr_in carries no meaning, and the hash already
// ignores it.
TEST(EndpointTest, EqualityIgnoresSinZeroPadding) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(80);
  sin.sin_addr.s_addr = htonl(0x7f000001);
  std::memset(sin.sin_zero, 0xab, sizeof(sin.sin_zero));
  const Endpoint ep =
      Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
  EXPECT_TRUE(ep == Endpoint::Loopback(80))
      << ep.ToString() << " differs from 127.0.0.1:80 only in sin_zero";
}

TEST(EndpointTest, MulticastDetection) {
  for (const char* yes : {"224.0.0.0:1", "224.0.0.1:1", "239.255.0.1:7400",
                          "239.255.255.255:1", "[ff02::1]:1", "[ff0e::5]:1"}) {
    EXPECT_TRUE(MustParse(yes).is_multicast()) << yes;
  }
  for (const char* no :
       {"223.255.255.255:1", "240.0.0.1:1", "127.0.0.1:1", "0.0.0.0:1",
        "[::1]:1", "[fe80::1]:1", "[::ffff:224.0.0.1]:1"}) {
    EXPECT_FALSE(MustParse(no).is_multicast()) << no;
  }
}

TEST(EndpointTest, EqualityAndHash) {
  const Endpoint a = MustParse("10.0.0.1:80");
  EXPECT_EQ(a, MustParse("10.0.0.1:80"));
  EXPECT_NE(a, MustParse("10.0.0.1:81"));
  EXPECT_NE(a, MustParse("10.0.0.2:80"));
  EXPECT_NE(a, MustParse("[::ffff:10.0.0.1]:80"));  // other family
  EXPECT_NE(a, Endpoint());
  EXPECT_NE(MustParse("[::1]:80"), MustParse("[::2]:80"));

  EXPECT_TRUE(absl::VerifyTypeImplementsAbslHashCorrectly({
      Endpoint(),
      MustParse("10.0.0.1:80"),
      MustParse("10.0.0.1:81"),
      MustParse("10.0.0.2:80"),
      MustParse("[::ffff:10.0.0.1]:80"),
      MustParse("[::1]:80"),
      MustParse("[::2]:80"),
      MustParse("[2001:db8::1]:80"),
      MustParse("[2001:db8::1:0:0:0]:80"),
  }));

  absl::flat_hash_set<Endpoint> set;
  for (uint16_t port = 0; port < 1000; ++port) {
    set.insert(Endpoint::Loopback(port));
    set.insert(Endpoint::Loopback(port));
  }
  EXPECT_EQ(set.size(), 1000u);
  EXPECT_TRUE(set.contains(MustParse("127.0.0.1:999")));
  EXPECT_FALSE(set.contains(MustParse("127.0.0.1:1000")));
}

}  // namespace
}  // namespace ringlab
