// Unit tests for backend presets: name parsing, the documented flag table in
// preset.h, and capability checks against fabricated Capabilities so every
// error path (io_uring disabled, memlock too small, no SQPOLL) runs on any
// machine, whatever its real kernel offers.
#include "transport/preset.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ringlab::transport {
namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = 1024 * 1024;

std::string Lower(absl::string_view text) {
  std::string out(text.data(), text.size());
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

// All flags as a tuple so two PresetFlags compare field by field and a
// mismatch prints every field.
auto Tie(const PresetFlags& f) {
  return std::make_tuple(
      f.io_uring, f.busy_poll, f.registered_buffers, f.provided_buffers,
      f.multishot_accept, f.registered_files, f.defer_taskrun,
      f.registered_ring_fd, f.sqpoll, f.zero_copy_send, f.recvmmsg_batching,
      f.edge_triggered, f.wait_batching);
}

// A machine where everything io_uring offers is available and memlock is no
// obstacle.
Capabilities FullCaps() {
  Capabilities caps;
  caps.io_uring_available = true;
  caps.io_uring_disabled_sysctl = 0;
  caps.sqpoll = true;
  caps.defer_taskrun = true;
  caps.single_issuer = true;
  caps.registered_ring_fd = true;
  caps.buffer_ring = true;
  caps.multishot_recv = true;
  caps.multishot_accept = true;
  caps.send_zc = true;
  caps.ext_arg = true;
  caps.memlock_limit_bytes = 64 * kMiB;
  caps.cap_ipc_lock = false;
  caps.kernel_release = "6.18.0-test";
  return caps;
}

// io_uring refused by `sysctl kernel.io_uring_disabled=2`. io_uring_error is
// documented as "why not, with the fix", so it is filled in that way here.
Capabilities DisabledCaps() {
  Capabilities caps;
  caps.io_uring_available = false;
  caps.io_uring_error =
      "io_uring_setup: EPERM because kernel.io_uring_disabled=2; fix: sysctl "
      "-w kernel.io_uring_disabled=0";
  caps.io_uring_disabled_sysctl = 2;
  caps.memlock_limit_bytes = 8 * kMiB;
  caps.kernel_release = "6.18.0-test";
  return caps;
}

bool IsUringPreset(Preset p) { return FlagsFor(p).io_uring; }

bool IsSetupErrorCode(absl::StatusCode code) {
  return code == absl::StatusCode::kFailedPrecondition ||
         code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kResourceExhausted ||
         code == absl::StatusCode::kUnimplemented;
}

TEST(PresetTest, AllPresetsListsSixInReportOrder) {
  std::span<const Preset> all = AllPresets();
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[0], Preset::kEpoll);
  EXPECT_EQ(all[1], Preset::kEpollBusy);
  EXPECT_EQ(all[2], Preset::kUring);
  EXPECT_EQ(all[3], Preset::kUringFixed);
  EXPECT_EQ(all[4], Preset::kUringSqpoll);
  EXPECT_EQ(all[5], Preset::kUringBusy);
}

TEST(PresetTest, NamesAreTheDocumentedOnes) {
  EXPECT_EQ(PresetName(Preset::kEpoll), "epoll");
  EXPECT_EQ(PresetName(Preset::kEpollBusy), "epoll-busy");
  EXPECT_EQ(PresetName(Preset::kUring), "uring");
  EXPECT_EQ(PresetName(Preset::kUringFixed), "uring-fixed");
  EXPECT_EQ(PresetName(Preset::kUringSqpoll), "uring-sqpoll");
  EXPECT_EQ(PresetName(Preset::kUringBusy), "uring-busy");
}

TEST(PresetTest, ParseRoundTripsEveryName) {
  for (Preset p : AllPresets()) {
    std::optional<Preset> parsed = ParsePreset(PresetName(p));
    ASSERT_TRUE(parsed.has_value()) << PresetName(p);
    EXPECT_EQ(*parsed, p) << PresetName(p);
  }
}

TEST(PresetTest, ParseRejectsUnknownNames) {
  EXPECT_FALSE(ParsePreset("").has_value());
  EXPECT_FALSE(ParsePreset("bogus").has_value());
  EXPECT_FALSE(ParsePreset("uring-fixedx").has_value());
  EXPECT_FALSE(ParsePreset("epol").has_value());
  EXPECT_FALSE(ParsePreset("uring-").has_value());
}

TEST(PresetTest, ValidPresetNamesListsEveryPresetAndAuto) {
  const std::string names = ValidPresetNames();
  for (Preset p : AllPresets()) {
    EXPECT_THAT(names, HasSubstr(std::string(PresetName(p))));
  }
  EXPECT_THAT(names, HasSubstr("auto"));
}

// The table in preset.h's header comment, written out flag by flag.
TEST(PresetTest, FlagsMatchTheDocumentedTable) {
  PresetFlags epoll;
  epoll.edge_triggered = true;
  epoll.recvmmsg_batching = true;
  PresetFlags epoll_busy = epoll;
  epoll_busy.busy_poll = true;

  PresetFlags uring;
  uring.io_uring = true;

  PresetFlags fixed;
  fixed.io_uring = true;
  fixed.registered_buffers = true;
  fixed.provided_buffers = true;
  fixed.multishot_accept = true;
  fixed.registered_files = true;
  fixed.defer_taskrun = true;
  fixed.registered_ring_fd = true;

  PresetFlags sqpoll = fixed;
  sqpoll.sqpoll = true;
  sqpoll.defer_taskrun = false;  // the kernel forbids it with SQPOLL

  PresetFlags busy = fixed;  // keeps DEFER_TASKRUN (+ TASKRUN_FLAG)
  busy.busy_poll = true;

  EXPECT_EQ(Tie(FlagsFor(Preset::kEpoll)), Tie(epoll));
  EXPECT_EQ(Tie(FlagsFor(Preset::kEpollBusy)), Tie(epoll_busy));
  EXPECT_EQ(Tie(FlagsFor(Preset::kUring)), Tie(uring));
  EXPECT_EQ(Tie(FlagsFor(Preset::kUringFixed)), Tie(fixed));
  EXPECT_EQ(Tie(FlagsFor(Preset::kUringSqpoll)), Tie(sqpoll));
  EXPECT_EQ(Tie(FlagsFor(Preset::kUringBusy)), Tie(busy));
}

TEST(PresetTest, NoPresetTurnsOnWaitBatching) {
  // wait_batching delays one-way send completions (issue 6, fault 6), so it
  // comes only from LoopOptions.
  for (Preset p : AllPresets()) {
    EXPECT_FALSE(FlagsFor(p).wait_batching) << PresetName(p);
  }
}

TEST(PresetTest, NoPresetTurnsOnZeroCopy) {
  // zero_copy_send comes from LoopOptions, never from a preset.
  for (Preset p : AllPresets()) {
    EXPECT_FALSE(FlagsFor(p).zero_copy_send) << PresetName(p);
  }
}

TEST(PresetTest, FlagsToStringListsOnlyTheFlagsThatAreOn) {
  const std::string fixed = FlagsFor(Preset::kUringFixed).ToString();
  EXPECT_THAT(fixed, HasSubstr("registered_buffers"));
  EXPECT_THAT(fixed, HasSubstr("provided_buffer"));
  EXPECT_THAT(fixed, HasSubstr("defer_taskrun"));
  EXPECT_THAT(fixed, Not(HasSubstr("sqpoll")));
  EXPECT_THAT(fixed, Not(HasSubstr("busy_poll")));
  EXPECT_THAT(fixed, Not(HasSubstr("edge_triggered")));

  const std::string sqpoll = FlagsFor(Preset::kUringSqpoll).ToString();
  EXPECT_THAT(sqpoll, HasSubstr("sqpoll"));
  EXPECT_THAT(sqpoll, Not(HasSubstr("defer_taskrun")));

  const std::string epoll = FlagsFor(Preset::kEpoll).ToString();
  EXPECT_THAT(epoll, HasSubstr("edge_triggered"));
  EXPECT_THAT(epoll, Not(HasSubstr("registered_buffers")));

  EXPECT_EQ(FlagsFor(Preset::kUring).ToString().find("registered"),
            std::string::npos);
}

TEST(PresetTest, EverythingIsSupportedWithFullCapabilities) {
  const Capabilities caps = FullCaps();
  for (Preset p : AllPresets()) {
    EXPECT_TRUE(CheckPresetSupported(p, caps, 4 * kMiB).ok())
        << PresetName(p) << ": " << CheckPresetSupported(p, caps, 4 * kMiB);
  }
}

TEST(PresetTest, EpollIsAlwaysSupported) {
  Capabilities nothing;  // io_uring unavailable, memlock 0, no features
  for (const Capabilities& caps : {nothing, DisabledCaps(), FullCaps()}) {
    EXPECT_TRUE(CheckPresetSupported(Preset::kEpoll, caps, 64 * kMiB).ok());
    EXPECT_TRUE(CheckPresetSupported(Preset::kEpollBusy, caps, 64 * kMiB).ok());
  }
}

TEST(PresetTest, DisabledSysctlNamesTheSysctl) {
  const Capabilities caps = DisabledCaps();
  for (Preset p : AllPresets()) {
    absl::Status status = CheckPresetSupported(p, caps, 1 * kMiB);
    if (!IsUringPreset(p)) {
      EXPECT_TRUE(status.ok()) << PresetName(p) << ": " << status;
      continue;
    }
    ASSERT_FALSE(status.ok()) << PresetName(p);
    EXPECT_TRUE(IsSetupErrorCode(status.code())) << status;
    // Cause and fix in one word: the sysctl to change.
    EXPECT_THAT(std::string(status.message()), HasSubstr("io_uring_disabled"))
        << PresetName(p);
    EXPECT_THAT(std::string(status.message()), HasSubstr(caps.io_uring_error))
        << "the probe's explanation should reach the user";
  }
}

TEST(PresetTest, TinyMemlockBlocksRegisteredBuffers) {
  Capabilities caps = FullCaps();
  caps.memlock_limit_bytes = 64 * 1024;
  caps.cap_ipc_lock = false;
  const uint64_t registered_bytes = 4 * kMiB;
  for (Preset p : AllPresets()) {
    absl::Status status = CheckPresetSupported(p, caps, registered_bytes);
    if (!FlagsFor(p).registered_buffers) {
      // epoll and plain uring register nothing, so memlock is irrelevant.
      EXPECT_TRUE(status.ok()) << PresetName(p) << ": " << status;
      continue;
    }
    ASSERT_FALSE(status.ok()) << PresetName(p);
    EXPECT_TRUE(IsSetupErrorCode(status.code())) << status;
    const std::string message = Lower(status.message());
    EXPECT_THAT(message, AnyOf(HasSubstr("memlock"), HasSubstr("ulimit -l")))
        << status;
  }
}

// Issue 6, fault 5: the kernel charges registered buffers per user, so the
// Loops this process already registered count against the limit.
TEST(PresetTest, MemlockCountsWhatOtherLoopsRegistered) {
  Capabilities caps = FullCaps();
  caps.memlock_limit_bytes = 8 * kMiB;
  caps.cap_ipc_lock = false;
  EXPECT_TRUE(CheckPresetSupported(Preset::kUringFixed, caps, 4 * kMiB).ok());
  caps.memlock_charged_bytes = 5 * kMiB;
  caps.memlock_charged_loops = 1;
  absl::Status status =
      CheckPresetSupported(Preset::kUringFixed, caps, 4 * kMiB);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("RLIMIT_MEMLOCK"), HasSubstr("per user"),
                    HasSubstr("5242880 bytes registered by 1 other Loop"),
                    HasSubstr("--ulimit memlock=-1:-1")))
      << status;
  EXPECT_TRUE(CheckPresetSupported(Preset::kUringFixed, caps, 2 * kMiB).ok());
  EXPECT_TRUE(CheckPresetSupported(Preset::kUring, caps, 4 * kMiB).ok());
  caps.cap_ipc_lock = true;
  EXPECT_TRUE(CheckPresetSupported(Preset::kUringFixed, caps, 4 * kMiB).ok());
}

TEST(PresetTest, CapIpcLockLiftsTheMemlockLimit) {
  Capabilities caps = FullCaps();
  caps.memlock_limit_bytes = 64 * 1024;
  caps.cap_ipc_lock = true;
  for (Preset p : AllPresets()) {
    EXPECT_TRUE(CheckPresetSupported(p, caps, 4 * kMiB).ok()) << PresetName(p);
  }
}

TEST(PresetTest, MissingSqpollOnlyBlocksTheSqpollPreset) {
  Capabilities caps = FullCaps();
  caps.sqpoll = false;
  for (Preset p : AllPresets()) {
    absl::Status status = CheckPresetSupported(p, caps, 1 * kMiB);
    if (p != Preset::kUringSqpoll) {
      EXPECT_TRUE(status.ok()) << PresetName(p) << ": " << status;
      continue;
    }
    ASSERT_FALSE(status.ok());
    EXPECT_TRUE(IsSetupErrorCode(status.code())) << status;
    EXPECT_THAT(Lower(status.message()), HasSubstr("sqpoll")) << status;
  }
}

TEST(PresetTest, MissingDeferTaskrunBlocksUringFixed) {
  Capabilities caps = FullCaps();
  caps.defer_taskrun = false;
  absl::Status status =
      CheckPresetSupported(Preset::kUringFixed, caps, 1 * kMiB);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(Lower(status.message()), HasSubstr("defer_taskrun")) << status;
  // uring-busy spins on DEFER_TASKRUN's pending-work flag, so it needs it
  // too; SQPOLL does not use it.
  EXPECT_FALSE(CheckPresetSupported(Preset::kUringBusy, caps, kMiB).ok());
  EXPECT_TRUE(CheckPresetSupported(Preset::kUringSqpoll, caps, kMiB).ok());
  EXPECT_TRUE(CheckPresetSupported(Preset::kUring, caps, kMiB).ok());
}

TEST(PresetTest, MissingBufferRingBlocksTheFixedFamily) {
  Capabilities caps = FullCaps();
  caps.buffer_ring = false;
  for (Preset p : AllPresets()) {
    absl::Status status = CheckPresetSupported(p, caps, 1 * kMiB);
    EXPECT_EQ(status.ok(), !FlagsFor(p).provided_buffers)
        << PresetName(p) << ": " << status;
  }
}

TEST(PresetTest, ResolveAutoPrefersUringWhenAvailable) {
  absl::StatusOr<BackendInfo> info = ResolveBackend("auto", FullCaps(), kMiB);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->flags.io_uring) << info->name;
  EXPECT_EQ(info->preset, Preset::kUringFixed) << info->name;
  EXPECT_EQ(info->name, PresetName(info->preset));
  EXPECT_EQ(info->requested, "auto");
  EXPECT_FALSE(info->chosen_because.empty());
  EXPECT_EQ(Tie(info->flags), Tie(FlagsFor(info->preset)));
}

TEST(PresetTest, ResolveAutoFallsBackToEpollAndSaysWhy) {
  absl::StatusOr<BackendInfo> info =
      ResolveBackend("auto", DisabledCaps(), kMiB);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->preset, Preset::kEpoll);
  EXPECT_EQ(info->name, "epoll");
  EXPECT_EQ(info->requested, "auto");
  EXPECT_FALSE(info->chosen_because.empty());
  EXPECT_FALSE(info->flags.io_uring);
}

TEST(PresetTest, ResolveAutoAlwaysPicksASupportedPreset) {
  // Whatever is missing, `auto` must land on something that can run.
  std::vector<Capabilities> machines = {FullCaps(), DisabledCaps(),
                                        Capabilities()};
  Capabilities tiny_memlock = FullCaps();
  tiny_memlock.memlock_limit_bytes = 16 * 1024;
  machines.push_back(tiny_memlock);
  Capabilities no_ring = FullCaps();
  no_ring.buffer_ring = false;
  no_ring.multishot_recv = false;
  machines.push_back(no_ring);
  Capabilities no_defer = FullCaps();
  no_defer.defer_taskrun = false;
  machines.push_back(no_defer);
  for (const Capabilities& caps : machines) {
    absl::StatusOr<BackendInfo> info = ResolveBackend("auto", caps, 4 * kMiB);
    ASSERT_TRUE(info.ok()) << caps.ToString() << ": " << info.status();
    EXPECT_TRUE(CheckPresetSupported(info->preset, caps, 4 * kMiB).ok())
        << info->name << " chosen for " << caps.ToString();
    EXPECT_FALSE(info->chosen_because.empty()) << caps.ToString();
  }
}

TEST(PresetTest, ResolveNamedPresetNeverDegrades) {
  // Asking for a preset the machine lacks is an error, not a quiet fallback.
  absl::StatusOr<BackendInfo> info =
      ResolveBackend("uring-fixed", DisabledCaps(), kMiB);
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(IsSetupErrorCode(info.status().code())) << info.status();
  EXPECT_THAT(std::string(info.status().message()),
              HasSubstr("io_uring_disabled"));

  for (Preset p : AllPresets()) {
    absl::StatusOr<BackendInfo> named =
        ResolveBackend(PresetName(p), FullCaps(), kMiB);
    ASSERT_TRUE(named.ok()) << PresetName(p) << ": " << named.status();
    EXPECT_EQ(named->preset, p);
    EXPECT_EQ(named->name, PresetName(p));
    EXPECT_EQ(named->requested, PresetName(p));
    EXPECT_EQ(Tie(named->flags), Tie(FlagsFor(p))) << PresetName(p);
  }
}

TEST(PresetTest, ResolveUnknownNameListsValidNames) {
  absl::StatusOr<BackendInfo> info = ResolveBackend("turbo", FullCaps(), kMiB);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(info.status().message());
  for (Preset p : AllPresets()) {
    EXPECT_THAT(message, HasSubstr(std::string(PresetName(p))));
  }
  EXPECT_THAT(message, HasSubstr("auto"));
}

TEST(PresetTest, ProbeIsCachedAndDescribable) {
  const Capabilities& first = ProbeCapabilities();
  const Capabilities& second = ProbeCapabilities();
  EXPECT_EQ(&first, &second);
  EXPECT_FALSE(first.ToString().empty());
  if (!first.io_uring_available) {
    // When io_uring is missing the probe must say why.
    EXPECT_FALSE(first.io_uring_error.empty());
  }
}

}  // namespace
}  // namespace ringlab::transport
