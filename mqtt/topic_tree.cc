#include "mqtt/topic_tree.h"

#include <algorithm>

namespace ringlab::mqtt {

SubscriptionTree::SubscriptionTree() : root_(std::make_unique<Node>()) {}
SubscriptionTree::~SubscriptionTree() = default;

SubscriptionTree::Node* SubscriptionTree::Find(std::string_view filter,
                                               bool create) {
  Node* n = root_.get();
  size_t pos = 0;
  while (true) {
    const size_t end = filter.find('/', pos);
    const bool last = end == std::string_view::npos;
    const std::string_view level =
        filter.substr(pos, last ? std::string_view::npos : end - pos);
    std::unique_ptr<Node>* slot = nullptr;
    if (level == "+") {
      slot = &n->plus;
    } else if (level == "#") {
      slot = &n->hash;
    } else {
      auto it = n->children.find(internal::AbslView(level));
      if (it != n->children.end()) {
        slot = &it->second;
      } else if (create) {
        slot = &n->children[std::string(level)];
      }
    }
    if (slot == nullptr) return nullptr;
    if (!*slot) {
      if (!create) return nullptr;
      *slot = std::make_unique<Node>();
      (*slot)->parent = n;
      (*slot)->key = std::string(level);
      ++nodes_;
    }
    n = slot->get();
    if (last) return n;
    pos = end + 1;
  }
}

bool SubscriptionTree::Add(std::string_view filter, std::string_view group,
                           const Entry& entry) {
  Node* n = Find(filter, /*create=*/true);
  std::vector<Entry>* list = &n->entries;
  if (!group.empty()) {
    auto g =
        std::find_if(n->groups.begin(), n->groups.end(),
                     [&](const SharedGroup& x) { return x.name == group; });
    if (g == n->groups.end()) {
      n->groups.push_back(SharedGroup{std::string(group), {}, 0, 0});
      g = n->groups.end() - 1;
    }
    list = &g->members;
  }
  for (Entry& e : *list) {
    if (e.subscriber == entry.subscriber) {
      e = entry;  // MQTT-3.8.4-3: replace, keeping one subscription
      return true;
    }
  }
  list->push_back(entry);
  ++subscriptions_;
  return false;
}

bool SubscriptionTree::Remove(std::string_view filter, std::string_view group,
                              uint32_t subscriber) {
  Node* n = Find(filter, /*create=*/false);
  if (n == nullptr) return false;
  bool removed = false;
  auto drop = [&](std::vector<Entry>& list) {
    auto it = std::find_if(list.begin(), list.end(), [&](const Entry& e) {
      return e.subscriber == subscriber;
    });
    if (it == list.end()) return;
    // Order among subscribers does not matter: swap-remove.
    *it = list.back();
    list.pop_back();
    removed = true;
  };
  if (group.empty()) {
    drop(n->entries);
  } else {
    auto g =
        std::find_if(n->groups.begin(), n->groups.end(),
                     [&](const SharedGroup& x) { return x.name == group; });
    if (g != n->groups.end()) {
      drop(g->members);
      if (g->members.empty()) n->groups.erase(g);
    }
  }
  if (!removed) return false;
  --subscriptions_;
  Prune(n);
  return true;
}

SubscriptionTree::SharedGroup* SubscriptionTree::FindGroup(
    std::string_view filter, std::string_view group) {
  Node* n = Find(filter, /*create=*/false);
  if (n == nullptr) return nullptr;
  for (SharedGroup& g : n->groups) {
    if (g.name == group) return &g;
  }
  return nullptr;
}

void SubscriptionTree::Prune(Node* n) {
  while (n != root_.get() && n->empty()) {
    Node* parent = n->parent;
    if (n->key == "+") {
      parent->plus.reset();
    } else if (n->key == "#") {
      parent->hash.reset();
    } else {
      // Find first: erasing by n->key would read a key being destroyed.
      auto it = parent->children.find(n->key);
      parent->children.erase(it);
    }
    --nodes_;
    n = parent;
  }
}

}  // namespace ringlab::mqtt
