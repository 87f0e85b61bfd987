// Debian's abseil is built with its own absl::string_view (not an alias of
// std::string_view), so heterogeneous lookups in string-keyed absl maps need
// this conversion to avoid building a std::string per lookup.
#ifndef RINGLAB_MQTT_INTERNAL_ABSL_VIEW_H_
#define RINGLAB_MQTT_INTERNAL_ABSL_VIEW_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace ringlab::mqtt::internal {

inline absl::string_view AbslView(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_ABSL_VIEW_H_
