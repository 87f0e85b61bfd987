#include "mqtt/internal/retained_store.h"

#include <utility>

namespace ringlab::mqtt::internal {
namespace {

// The level starting at `pos` and where the next one starts (npos: none).
std::string_view Level(std::string_view s, size_t pos, size_t* next) {
  const size_t end = s.find('/', pos);
  if (end == std::string_view::npos) {
    *next = std::string_view::npos;
    return s.substr(pos);
  }
  *next = end + 1;
  return s.substr(pos, end - pos);
}

}  // namespace

RetainedStore::RetainedStore() : root_(std::make_unique<Node>()) {}
RetainedStore::~RetainedStore() = default;

bool RetainedStore::Set(std::string_view topic, MessageRef message,
                        size_t limit) {
  Node* n = root_.get();
  size_t pos = 0;
  // Walk without creating first: replacing an existing message must work
  // even at the limit.
  while (pos != std::string_view::npos) {
    size_t next;
    const std::string_view level = Level(topic, pos, &next);
    auto it = n->children.find(AbslView(level));
    if (it == n->children.end()) {
      if (size_ >= limit) return false;
      auto child = std::make_unique<Node>();
      child->parent = n;
      child->key = std::string(level);
      Node* raw = child.get();
      n->children.emplace(raw->key, std::move(child));
      n = raw;
    } else {
      n = it->second.get();
    }
    pos = next;
  }
  if (!n->message) {
    if (size_ >= limit) return false;
    ++size_;
  }
  n->message = std::move(message);
  return true;
}

void RetainedStore::Clear(std::string_view topic) {
  Node* n = root_.get();
  size_t pos = 0;
  while (pos != std::string_view::npos) {
    size_t next;
    auto it = n->children.find(AbslView(Level(topic, pos, &next)));
    if (it == n->children.end()) return;
    n = it->second.get();
    pos = next;
  }
  if (!n->message) return;
  n->message.Reset();
  --size_;
  // Prune nodes that hold nothing any more.
  while (n != root_.get() && !n->message && n->children.empty()) {
    Node* parent = n->parent;
    auto it = parent->children.find(n->key);
    parent->children.erase(it);
    n = parent;
  }
}

void RetainedStore::EmitSubtree(Node* node,
                                absl::FunctionRef<void(const MessageRef&)> fn) {
  std::vector<Node*> stack = {node};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->message) fn(n->message);
    for (auto& [key, child] : n->children) stack.push_back(child.get());
  }
}

void RetainedStore::Match(std::string_view filter,
                          absl::FunctionRef<void(const MessageRef&)> fn) {
  if (size_ == 0) return;
  struct Frame {
    Node* node;
    size_t pos;  // next filter level, npos when the filter is used up
  };
  std::vector<Frame> stack = {{root_.get(), 0}};
  while (!stack.empty()) {
    const Frame f = stack.back();
    stack.pop_back();
    Node* n = f.node;
    if (f.pos == std::string_view::npos) {
      if (n->message) fn(n->message);
      continue;
    }
    size_t next;
    const std::string_view level = Level(filter, f.pos, &next);
    const bool at_root = n == root_.get();
    if (level == "#") {
      // This level and everything below, and the parent itself ("a/#"
      // matches "a"); the root holds no message.
      if (!at_root && n->message) fn(n->message);
      for (auto& [key, child] : n->children) {
        // MQTT-4.7.2-1: a wildcard first level skips '$' topics.
        if (at_root && !key.empty() && key[0] == '$') continue;
        EmitSubtree(child.get(), fn);
      }
      continue;
    }
    if (level == "+") {
      for (auto& [key, child] : n->children) {
        if (at_root && !key.empty() && key[0] == '$') continue;
        stack.push_back({child.get(), next});
      }
      continue;
    }
    auto it = n->children.find(AbslView(level));
    if (it != n->children.end()) stack.push_back({it->second.get(), next});
  }
}

}  // namespace ringlab::mqtt::internal
