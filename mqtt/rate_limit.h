// TokenBucket: the rate limiter behind the broker's connection, message and
// byte limits (BrokerOptions::rate). Sans-io: `now` is an argument.
//
//   TokenBucket bucket(/*rate_per_s=*/100, /*burst=*/20);
//   if (!bucket.TryTake(1, now)) { /* over the rate: refuse, count */ }
//
// Semantics: the bucket holds up to `burst` tokens and starts full; it
// refills continuously at `rate_per_s`. TryTake(n) succeeds and removes n
// tokens only if n are there, so a request larger than `burst` never
// passes (callers size `burst` to at least their largest request). A
// default-constructed bucket (rate 0) is unlimited. Clock steps backwards
// are ignored (no refill). Threading: none. Allocation: none.
#ifndef RINGLAB_MQTT_RATE_LIMIT_H_
#define RINGLAB_MQTT_RATE_LIMIT_H_

#include "transport/time.h"

namespace ringlab::mqtt {

class TokenBucket {
 public:
  TokenBucket() = default;
  TokenBucket(double rate_per_s, double burst)
      : rate_per_s_(rate_per_s), burst_(burst), tokens_(burst) {}

  bool unlimited() const { return rate_per_s_ <= 0; }
  bool TryTake(double n, Timestamp now);
  // Tokens available at `now` (burst when unlimited).
  double Available(Timestamp now);

 private:
  void Refill(Timestamp now);

  double rate_per_s_ = 0;
  double burst_ = 0;
  double tokens_ = 0;
  bool started_ = false;
  Timestamp last_;
};

// The limits BrokerOptions carries; 0 turns a limit off.
struct RateLimits {
  // New connections per second, per listener (each listener the driver
  // names in OnConnectionOpened has its own bucket with these figures);
  // over it OnConnectionOpened refuses (the driver closes the socket).
  double connections_per_s = 0;
  double connection_burst = 0;  // 0: max(1, connections_per_s)
  // Inbound PUBLISH packets per second per connection, and their bytes
  // (whole packets). Over either, the connection is closed: v5 clients get
  // DISCONNECT 0x96 Message rate too high (messages) or 0x97 Quota
  // exceeded (bytes) first; 3.1.1 has no way to say it.
  double messages_per_s = 0;
  double message_burst = 0;  // 0: max(1, messages_per_s)
  double bytes_per_s = 0;
  double byte_burst = 0;  // 0: max(bytes_per_s, max_packet_bytes)
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_RATE_LIMIT_H_
