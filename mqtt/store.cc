#include "mqtt/store.h"

#include "absl/strings/str_cat.h"

namespace ringlab::mqtt {

std::string StoreLoadReport::ToString() const {
  return absl::StrCat(
      sessions, " sessions, ", subscriptions, " subscriptions, ", queued,
      " queued messages (", queued_expired, " expired while down, ", inflight,
      " in flight), ", awaiting_pubrel, " inbound QoS 2 awaiting PUBREL, ",
      retained, " retained messages (", retained_expired,
      " expired while down, ", retained_rejected, " refused by limits), ",
      rolled_back, " uncommitted QoS 2 copies rolled back");
}

}  // namespace ringlab::mqtt
