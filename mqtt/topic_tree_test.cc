// Property tests: the subscription trie and the retained-message trie give
// the same answers as the brute-force matcher (topic.h TopicMatches) on
// random filters and topics, through adds and removals.
#include "mqtt/topic_tree.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/internal/retained_store.h"
#include "mqtt/topic.h"
#include "transport/sim_network.h"

namespace ringlab::mqtt {
namespace {

const char* const kLevels[] = {"a", "b", "c", "", "$x", "$SYS", "long-level"};

std::string RandomTopic(transport::SimRandom& r) {
  std::string t;
  const int levels = 1 + int(r.Uniform(4));
  for (int i = 0; i < levels; ++i) {
    if (i > 0) t += '/';
    std::string_view l = kLevels[r.Uniform(std::size(kLevels) - 1)];
    if (i > 0 && !l.empty() && l[0] == '$' && r.Bernoulli(0.5)) l = "a";
    t += l;
  }
  return t.empty() ? "a" : t;  // a topic has at least one character
}

std::string RandomFilter(transport::SimRandom& r) {
  std::string f;
  const int levels = 1 + int(r.Uniform(4));
  for (int i = 0; i < levels; ++i) {
    if (i > 0) f += '/';
    const uint64_t k = r.Uniform(9);
    if (k == 0) {
      f += '#';
      break;  // '#' ends a filter
    }
    if (k <= 2) {
      f += '+';
    } else {
      f += kLevels[r.Uniform(std::size(kLevels) - 1)];
    }
  }
  return f.empty() ? "b" : f;
}

struct Collect {
  std::multiset<uint32_t> got;
  void OnEntry(const SubscriptionTree::Entry& e) { got.insert(e.subscriber); }
  void OnGroup(SubscriptionTree::SharedGroup& g) {
    for (const auto& m : g.members) got.insert(1000000 + m.subscriber);
  }
};

TEST(SubscriptionTree, MatchesBruteForce) {
  transport::SimRandom r(2024);
  for (int round = 0; round < 20; ++round) {
    SubscriptionTree tree;
    struct Sub {
      std::string filter;
      uint32_t id;
      bool shared;
    };
    std::vector<Sub> subs;
    for (uint32_t i = 0; i < 150; ++i) {
      Sub s{RandomFilter(r), i, r.Bernoulli(0.2)};
      ASSERT_TRUE(IsValidTopicFilter(s.filter)) << s.filter;
      SubscriptionTree::Entry e;
      e.subscriber = i;
      tree.Add(s.filter, s.shared ? "g" : "", e);
      subs.push_back(s);
    }
    EXPECT_EQ(tree.subscription_count(), subs.size());
    auto check = [&]() {
      for (int t = 0; t < 200; ++t) {
        const std::string topic = RandomTopic(r);
        ASSERT_TRUE(IsValidTopicName(topic)) << topic;
        std::multiset<uint32_t> want;
        for (const Sub& s : subs) {
          if (TopicMatches(s.filter, topic)) {
            want.insert(s.shared ? 1000000 + s.id : s.id);
          }
        }
        Collect c;
        tree.Match(topic, c);
        // A shared group reports all its members each time it matches;
        // compare as sets for those, exactly for the plain ones.
        std::set<uint32_t> got_set(c.got.begin(), c.got.end());
        std::set<uint32_t> want_set(want.begin(), want.end());
        EXPECT_EQ(got_set, want_set) << "topic " << topic;
        EXPECT_EQ(std::count_if(c.got.begin(), c.got.end(),
                                [](uint32_t x) { return x < 1000000; }),
                  std::count_if(want.begin(), want.end(),
                                [](uint32_t x) { return x < 1000000; }))
            << "topic " << topic;
      }
    };
    check();
    // Remove half, in random order, then check again.
    for (size_t k = 0; k < subs.size() / 2; ++k) {
      const size_t i = r.Uniform(subs.size() - 1);
      EXPECT_TRUE(
          tree.Remove(subs[i].filter, subs[i].shared ? "g" : "", subs[i].id));
      EXPECT_FALSE(
          tree.Remove(subs[i].filter, subs[i].shared ? "g" : "", subs[i].id));
      subs.erase(subs.begin() + i);
    }
    check();
    for (const Sub& s : subs) tree.Remove(s.filter, s.shared ? "g" : "", s.id);
    EXPECT_EQ(tree.subscription_count(), 0u);
    EXPECT_EQ(tree.node_count(), 1u);  // pruned back to the root
  }
}

TEST(SubscriptionTree, ReplaceKeepsOneEntry) {
  SubscriptionTree tree;
  SubscriptionTree::Entry e;
  e.subscriber = 3;
  e.options.max_qos = 0;
  EXPECT_FALSE(tree.Add("a/+", "", e));
  e.options.max_qos = 2;
  EXPECT_TRUE(tree.Add("a/+", "", e));  // MQTT-3.8.4-3
  EXPECT_EQ(tree.subscription_count(), 1u);
  struct V {
    int n = 0;
    uint8_t qos = 0;
    void OnEntry(const SubscriptionTree::Entry& e) {
      ++n;
      qos = e.options.max_qos;
    }
    void OnGroup(SubscriptionTree::SharedGroup&) {}
  } v;
  tree.Match("a/b", v);
  EXPECT_EQ(v.n, 1);
  EXPECT_EQ(v.qos, 2);
}

TEST(SubscriptionTree, DeepTopicDoesNotRecurse) {
  SubscriptionTree tree;
  SubscriptionTree::Entry e;
  tree.Add("#", "", e);
  std::string deep;
  for (int i = 0; i < 30000; ++i) deep += "/+";
  // A topic name of 60,000 levels: matching uses an explicit stack.
  std::string topic(60000, '/');
  struct V {
    int n = 0;
    void OnEntry(const SubscriptionTree::Entry&) { ++n; }
    void OnGroup(SubscriptionTree::SharedGroup&) {}
  } v;
  tree.Match(topic, v);
  EXPECT_EQ(v.n, 1);
  tree.Add(std::string_view(deep).substr(1), "", e);  // "+/+/.../+"
  v.n = 0;
  tree.Match(std::string(29999, '/'), v);
  EXPECT_EQ(v.n, 2);
}

TEST(RetainedStore, MatchesBruteForce) {
  transport::SimRandom r(99);
  MessagePool pool;
  internal::RetainedStore store;
  std::set<std::string> topics;
  for (int i = 0; i < 300; ++i) {
    const std::string t = RandomTopic(r);
    const std::byte payload[1] = {std::byte(1)};
    ASSERT_TRUE(store.Set(
        t,
        pool.Create(t, 0, true, {}, payload, Timestamp::Never(), kNoPublisher),
        1000));
    topics.insert(t);
    if (r.Bernoulli(0.2)) {
      const std::string gone = RandomTopic(r);
      store.Clear(gone);
      topics.erase(gone);
    }
  }
  EXPECT_EQ(store.size(), topics.size());
  for (int k = 0; k < 300; ++k) {
    const std::string filter = RandomFilter(r);
    std::set<std::string> want;
    for (const std::string& t : topics) {
      if (TopicMatches(filter, t)) want.insert(t);
    }
    std::multiset<std::string> got;
    store.Match(filter, [&](const MessageRef& m) {
      got.insert(std::string(m->topic()));
    });
    EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want) << filter;
    EXPECT_EQ(got.size(), want.size()) << filter;  // each once
  }
  // The limit refuses new topics but not replacements.
  const std::byte p[1] = {std::byte(2)};
  const std::string existing = *topics.begin();
  EXPECT_TRUE(store.Set(
      existing,
      pool.Create(existing, 0, true, {}, p, Timestamp::Never(), kNoPublisher),
      store.size()));
  EXPECT_FALSE(store.Set("brand/new/topic",
                         pool.Create("brand/new/topic", 0, true, {}, p,
                                     Timestamp::Never(), kNoPublisher),
                         store.size()));
}

}  // namespace
}  // namespace ringlab::mqtt
