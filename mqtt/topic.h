// Topic names and topic filters (MQTT 5.0 §4.7, 3.1.1 §4.7) and shared
// subscriptions (5.0 §4.8.2): syntax checks and a reference matcher.
//
//   if (!IsValidTopicFilter("sport/+/player1")) { /* SUBACK 0x8F */ }
//   TopicMatches("sport/#", "sport");            // true
//   TopicMatches("+/monitor", "$SYS/monitor");   // false, MQTT-4.7.2-1
//   SharedFilter shared;
//   if (ParseSharedFilter("$share/g1/a/+", &shared)) {
//     // shared.group == "g1", shared.filter == "a/+"
//   }
//
// Strings are views; nothing allocates. UTF-8 validity is the codec's job
// (wire.h); these functions check the topic grammar only.
#ifndef RINGLAB_MQTT_TOPIC_H_
#define RINGLAB_MQTT_TOPIC_H_

#include <string_view>

namespace ringlab::mqtt {

// A topic name in a PUBLISH: at least one character (MQTT-4.7.3-1) and no
// wildcard characters (MQTT-3.3.2-2; 3.1.1 MQTT-4.7.1-1).
bool IsValidTopicName(std::string_view topic);

// A topic filter: at least one character (MQTT-4.7.3-1); '#' alone at the
// last level (5.0 MQTT-4.7.1-1, 3.1.1 MQTT-4.7.1-2); '+' a whole level (5.0
// MQTT-4.7.1-2, 3.1.1 MQTT-4.7.1-3). A "$share/..." filter is checked as a
// plain filter here; see ParseSharedFilter.
bool IsValidTopicFilter(std::string_view filter);

// True if `filter` starts with "$share/" (5.0 §4.8.2).
bool IsSharedFilter(std::string_view filter);

struct SharedFilter {
  std::string_view group;   // the ShareName
  std::string_view filter;  // the Topic Filter after it
};
// Splits "$share/{ShareName}/{filter}". False unless the ShareName has at
// least one character (MQTT-4.8.2-1), none of '/', '+', '#', is followed by
// a '/' and then a valid topic filter (MQTT-4.8.2-2).
bool ParseSharedFilter(std::string_view text, SharedFilter* out);

// True if a topic name matches a (non-shared) filter, level by level (§4.7):
// '+' one level, '#' this level and all below (including the parent: "a/#"
// matches "a"). Filters starting with a wildcard do not match topics that
// start with '$' (MQTT-4.7.2-1). A straightforward reference: the broker's
// SubscriptionTree gives the same answers faster.
bool TopicMatches(std::string_view filter, std::string_view topic);

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_TOPIC_H_
