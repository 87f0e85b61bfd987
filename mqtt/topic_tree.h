// SubscriptionTree: the broker's routing table, a trie of topic filter
// levels with '+' and '#' branches and shared-subscription groups.
//
// Matching walks the topic's levels once; at each node it follows at most
// three branches (the exact level, '+', '#'), so a publish costs in
// proportion to the topic's levels and the number of matching subscriptions,
// not to how many subscriptions exist. Filters that start with a wildcard
// never match a topic starting with '$' (MQTT-4.7.2-1).
//
//   SubscriptionTree tree;
//   SubscriptionTree::Entry e{.subscriber = 7, .options = {.max_qos = 1}};
//   tree.Add("sport/+/score", /*group=*/"", e);
//   tree.Add("sport/#", /*group=*/"g1", e);       // $share/g1/sport/#
//   struct Visitor {
//     void OnEntry(const SubscriptionTree::Entry& e) { ... }
//     void OnGroup(SubscriptionTree::SharedGroup& g) { ... pick one ... }
//   } v;
//   tree.Match("sport/tennis/score", v);
//
// Filters must be valid (topic.h IsValidTopicFilter); the tree does not
// check them. Matching allocates nothing once its scratch stack has grown
// to the deepest topic seen. Not thread-safe.
#ifndef RINGLAB_MQTT_TOPIC_TREE_H_
#define RINGLAB_MQTT_TOPIC_TREE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "mqtt/internal/absl_view.h"
#include "mqtt/packets.h"

namespace ringlab::mqtt {

class SubscriptionTree {
 public:
  struct Entry {
    uint32_t subscriber = 0;
    SubscriptionOptions options;
    uint32_t subscription_id = 0;  // 0: none
  };
  struct SharedGroup {
    std::string name;
    std::vector<Entry> members;
    uint32_t next = 0;  // round-robin cursor, for the caller's choice
    // The caller's, kept with the group (the multi-Loop broker's handle
    // for the group's entry in its table of members per Loop); 0 when new.
    uint32_t slot = 0;
  };

  SubscriptionTree();
  ~SubscriptionTree();
  SubscriptionTree(const SubscriptionTree&) = delete;
  SubscriptionTree& operator=(const SubscriptionTree&) = delete;

  // Adds `entry` for `filter` (in shared group `group` when non-empty), or
  // replaces the subscriber's existing one there (MQTT-3.8.4-3). Returns
  // true if it replaced one.
  bool Add(std::string_view filter, std::string_view group, const Entry& entry);
  // Removes the subscriber's subscription; false if there was none.
  bool Remove(std::string_view filter, std::string_view group,
              uint32_t subscriber);
  // The shared group `group` of `filter`, or nullptr when it has no member.
  // Valid until the next Add or Remove.
  SharedGroup* FindGroup(std::string_view filter, std::string_view group);

  // Calls visitor.OnEntry(const Entry&) for each matching plain subscription
  // and visitor.OnGroup(SharedGroup&) for each matching shared group.
  template <typename Visitor>
  void Match(std::string_view topic, Visitor& visitor);

  size_t subscription_count() const { return subscriptions_; }
  size_t node_count() const { return nodes_; }

 private:
  struct Node {
    Node* parent = nullptr;
    std::string key;  // level text; "+" or "#" for the wildcard branches
    absl::flat_hash_map<std::string, std::unique_ptr<Node>> children;
    std::unique_ptr<Node> plus;
    std::unique_ptr<Node> hash;
    std::vector<Entry> entries;
    std::vector<SharedGroup> groups;
    bool empty() const {
      return children.empty() && !plus && !hash && entries.empty() &&
             groups.empty();
    }
  };
  struct Frame {
    Node* node;
    size_t pos;  // where the next topic level starts
    bool done;   // every level consumed
  };

  Node* Find(std::string_view filter, bool create);
  void Prune(Node* node);
  template <typename Visitor>
  static void Emit(Node* node, Visitor& visitor);

  std::unique_ptr<Node> root_;
  std::vector<Frame> stack_;
  size_t subscriptions_ = 0;
  size_t nodes_ = 1;
};

template <typename Visitor>
void SubscriptionTree::Emit(Node* node, Visitor& visitor) {
  for (const Entry& e : node->entries) visitor.OnEntry(e);
  for (SharedGroup& g : node->groups) visitor.OnGroup(g);
}

template <typename Visitor>
void SubscriptionTree::Match(std::string_view topic, Visitor& visitor) {
  // MQTT-4.7.2-1: '$' topics skip the root's wildcard branches.
  const bool dollar = !topic.empty() && topic[0] == '$';
  Node* const root = root_.get();
  stack_.clear();
  stack_.push_back({root, 0, false});
  // An explicit stack: a topic may have tens of thousands of levels.
  while (!stack_.empty()) {
    const Frame f = stack_.back();
    stack_.pop_back();
    Node* n = f.node;
    if (f.done) {
      Emit(n, visitor);
      if (n->hash) Emit(n->hash.get(), visitor);  // "a/#" matches "a"
      continue;
    }
    const bool wild_ok = !(dollar && n == root);
    if (n->hash && wild_ok) Emit(n->hash.get(), visitor);
    const size_t end = topic.find('/', f.pos);
    const bool last = end == std::string_view::npos;
    const std::string_view level =
        topic.substr(f.pos, last ? std::string_view::npos : end - f.pos);
    const size_t next = last ? topic.size() : end + 1;
    if (!n->children.empty()) {
      auto it = n->children.find(internal::AbslView(level));
      if (it != n->children.end())
        stack_.push_back({it->second.get(), next, last});
    }
    if (n->plus && wild_ok) stack_.push_back({n->plus.get(), next, last});
  }
}

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_TOPIC_TREE_H_
