#include "mqtt/topic.h"

#include "gtest/gtest.h"

namespace ringlab::mqtt {
namespace {

TEST(Topic, NamesAndFilters) {
  EXPECT_TRUE(IsValidTopicName("a"));
  EXPECT_TRUE(IsValidTopicName("/"));
  EXPECT_TRUE(IsValidTopicName("a//b"));
  EXPECT_TRUE(IsValidTopicName("$SYS/x"));
  EXPECT_FALSE(IsValidTopicName(""));
  EXPECT_FALSE(IsValidTopicName("a/+"));
  EXPECT_FALSE(IsValidTopicName("#"));
  for (const char* ok : {"#", "+", "a/#", "+/+", "/+", "a/+/b", "+/#", "/",
                         "sport/tennis/#", "$SYS/#"}) {
    EXPECT_TRUE(IsValidTopicFilter(ok)) << ok;
  }
  // §4.7.1.2 / §4.7.1.3 non-normative examples of invalid filters.
  for (const char* bad : {"", "sport/tennis#", "sport/tennis/#/ranking",
                          "sport+", "a/b+", "a/+b", "##", "a/#/", "+a"}) {
    EXPECT_FALSE(IsValidTopicFilter(bad)) << bad;
  }
}

TEST(Topic, SharedFilters) {
  SharedFilter s;
  ASSERT_TRUE(ParseSharedFilter("$share/consumer1/sport/tennis/+", &s));
  EXPECT_EQ(s.group, "consumer1");
  EXPECT_EQ(s.filter, "sport/tennis/+");
  ASSERT_TRUE(ParseSharedFilter("$share/g//a", &s));
  EXPECT_EQ(s.filter, "/a");
  for (const char* bad : {"$share/", "$share//a", "$share/g", "$share/g/",
                          "$share/g+/a", "$share/#/a", "$share/g/a#"}) {
    EXPECT_FALSE(ParseSharedFilter(bad, &s)) << bad;
  }
  EXPECT_TRUE(IsSharedFilter("$share/g/a"));
  EXPECT_FALSE(IsSharedFilter("$shared/g/a"));
}

TEST(Topic, MatchesSpecExamples) {
  struct Case {
    const char* filter;
    const char* topic;
    bool match;
  } cases[] = {
      // §4.7.1.2: "sport/tennis/player1/#".
      {"sport/tennis/player1/#", "sport/tennis/player1", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
      {"sport/#", "sport", true},
      {"#", "anything/at/all", true},
      // §4.7.1.3: "sport/tennis/+".
      {"sport/tennis/+", "sport/tennis/player1", true},
      {"sport/tennis/+", "sport/tennis/player2", true},
      {"sport/tennis/+", "sport/tennis/player1/ranking", false},
      {"sport/+", "sport", false},
      {"sport/+", "sport/", true},
      {"+/+", "/finance", true},
      {"/+", "/finance", true},
      {"+", "/finance", false},
      {"+/#", "a", true},
      {"a/b", "a/b", true},
      {"a/b", "a/b/c", false},
      {"a/b/c", "a/b", false},
      {"a//b", "a//b", true},
      {"a/+/b", "a//b", true},
      // MQTT-4.7.2-1 and §4.7.2 examples.
      {"#", "$SYS/monitor/Clients", false},
      {"+/monitor/Clients", "$SYS/monitor/Clients", false},
      {"$SYS/#", "$SYS/monitor/Clients", true},
      {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
      {"a/#", "a/$x", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(TopicMatches(c.filter, c.topic), c.match)
        << c.filter << " vs " << c.topic;
  }
}

}  // namespace
}  // namespace ringlab::mqtt
