// GoogleTest glue for tests that need a peer binary.
//
//   absl::StatusOr<std::unique_ptr<testkit::MosquittoBroker>> broker =
//       testkit::StartMosquitto();
//   RINGLAB_SKIP_IF_MISSING(broker.status());  // skip: "mosquitto not found"
//   ASSERT_TRUE(broker.ok()) << broker.status();  // any other error fails
//
// Only a status for which testkit::IsMissingPeer() is true skips; a peer
// that is installed but fails to start fails the test.
#ifndef RINGLAB_TESTING_SKIP_H_
#define RINGLAB_TESTING_SKIP_H_

#include "gtest/gtest.h"
#include "testing/process.h"

#define RINGLAB_SKIP_IF_MISSING(status_expr)                              \
  do {                                                                    \
    const ::absl::Status ringlab_skip_status_ = (status_expr);            \
    if (::ringlab::testkit::IsMissingPeer(ringlab_skip_status_)) {        \
      GTEST_SKIP() << "peer missing: " << ringlab_skip_status_.message(); \
    }                                                                     \
  } while (0)

#endif  // RINGLAB_TESTING_SKIP_H_
