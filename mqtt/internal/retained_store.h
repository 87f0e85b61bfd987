// RetainedStore: retained messages by topic, in a trie of topic levels, so a
// new subscription finds the retained messages its filter matches without
// scanning every retained topic.
//
//   RetainedStore store;
//   store.Set("a/b", message);        // replaces any earlier one
//   store.Clear("a/b");               // MQTT-3.3.1-6
//   store.Match("a/+", [](const MessageRef& m) { ... });
//
// Filters that start with a wildcard skip topics starting with '$'
// (MQTT-4.7.2-1). Walks use explicit stacks (topics may be very deep).
// Not thread-safe.
#ifndef RINGLAB_MQTT_INTERNAL_RETAINED_STORE_H_
#define RINGLAB_MQTT_INTERNAL_RETAINED_STORE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "mqtt/internal/absl_view.h"
#include "mqtt/message.h"

namespace ringlab::mqtt::internal {

class RetainedStore {
 public:
  RetainedStore();
  ~RetainedStore();

  // Stores `message` for `topic`. Returns false, storing nothing, when the
  // topic is new and `limit` topics are already retained.
  bool Set(std::string_view topic, MessageRef message, size_t limit);
  void Clear(std::string_view topic);
  // Calls fn for each retained message whose topic matches `filter`.
  void Match(std::string_view filter,
             absl::FunctionRef<void(const MessageRef&)> fn);
  size_t size() const { return size_; }

 private:
  struct Node {
    Node* parent = nullptr;
    std::string key;
    absl::flat_hash_map<std::string, std::unique_ptr<Node>> children;
    MessageRef message;
  };
  static void EmitSubtree(Node* node,
                          absl::FunctionRef<void(const MessageRef&)> fn);

  std::unique_ptr<Node> root_;
  size_t size_ = 0;
};

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_RETAINED_STORE_H_
