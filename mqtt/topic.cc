#include "mqtt/topic.h"

#include <algorithm>

namespace ringlab::mqtt {

bool IsValidTopicName(std::string_view topic) {
  if (topic.empty()) return false;  // MQTT-4.7.3-1
  // MQTT-3.3.2-2: no wildcard characters in a topic name.
  return topic.find_first_of("+#") == std::string_view::npos;
}

bool IsValidTopicFilter(std::string_view filter) {
  if (filter.empty()) return false;  // MQTT-4.7.3-1
  for (size_t i = 0; i < filter.size(); ++i) {
    const char c = filter[i];
    if (c != '+' && c != '#') continue;
    // Both wildcards fill a whole level: preceded by '/' or the start...
    if (i > 0 && filter[i - 1] != '/') return false;
    if (c == '#') {
      // ...and '#' is the last character (5.0 MQTT-4.7.1-1).
      if (i + 1 != filter.size()) return false;
    } else if (i + 1 < filter.size() && filter[i + 1] != '/') {
      return false;  // '+' is followed by '/' or the end (MQTT-4.7.1-2)
    }
  }
  return true;
}

bool IsSharedFilter(std::string_view filter) {
  return filter.starts_with("$share/");
}

bool ParseSharedFilter(std::string_view text, SharedFilter* out) {
  constexpr std::string_view kPrefix = "$share/";
  if (!text.starts_with(kPrefix)) return false;
  std::string_view rest = text.substr(kPrefix.size());
  const size_t slash = rest.find('/');
  // MQTT-4.8.2-2: the ShareName is followed by '/' and a Topic Filter.
  if (slash == std::string_view::npos) return false;
  const std::string_view group = rest.substr(0, slash);
  if (group.empty()) return false;  // MQTT-4.8.2-1: at least one character
  // MQTT-4.8.2-2: no '/', '+' or '#' in the ShareName ('/' ended it).
  if (group.find_first_of("+#") != std::string_view::npos) return false;
  const std::string_view filter = rest.substr(slash + 1);
  if (!IsValidTopicFilter(filter)) return false;
  out->group = group;
  out->filter = filter;
  return true;
}

bool TopicMatches(std::string_view filter, std::string_view topic) {
  // MQTT-4.7.2-1: a wildcard first level never matches a '$' topic.
  if (!topic.empty() && topic[0] == '$' && !filter.empty() &&
      (filter[0] == '+' || filter[0] == '#')) {
    return false;
  }
  size_t f = 0, t = 0;
  while (true) {
    const size_t f_end = std::min(filter.find('/', f), filter.size());
    const std::string_view level = filter.substr(f, f_end - f);
    if (level == "#") return true;  // this level and everything below
    const size_t t_end = std::min(topic.find('/', t), topic.size());
    const std::string_view topic_level = topic.substr(t, t_end - t);
    if (level != "+" && level != topic_level) return false;
    const bool filter_done = f_end == filter.size();
    const bool topic_done = t_end == topic.size();
    if (filter_done && topic_done) return true;
    // "a/#" matches "a": the filter's one remaining level is '#'.
    if (topic_done) return filter.substr(f_end) == "/#";
    if (filter_done) return false;
    f = f_end + 1;
    t = t_end + 1;
  }
}

}  // namespace ringlab::mqtt
