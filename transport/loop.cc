#include "transport/loop.h"

#include "absl/strings/str_cat.h"
#include "transport/internal/loop_core.h"

namespace ringlab::transport {

namespace {

// Builds and sets up the backend `info` names. Errors carry the preset name.
absl::StatusOr<std::unique_ptr<internal::LoopCore>> Build(
    const LoopOptions& options, const BackendInfo& info) {
  if (info.flags.provided_buffers) {
    const uint32_t n = options.provided_buffers;
    if (n == 0 || (n & (n - 1)) != 0 || n > 32768 ||
        n > options.buffer_count / 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LoopOptions::provided_buffers (", n,
          ") must be a power of two, at most 32768 and at most half of "
          "buffer_count (",
          options.buffer_count, ")"));
    }
  }
  std::unique_ptr<internal::LoopCore> core = info.flags.io_uring
                                                 ? internal::MakeUringBackend()
                                                 : internal::MakeEpollBackend();
  absl::Status status = core->InitCore(options, info);
  if (status.ok()) status = core->InitBackend();
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("backend ", info.name, ": ",
                                                    status.message()));
  }
  return core;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Loop>> Loop::Create(const LoopOptions& options) {
  // Limits that change at run time (memlock, CAP_IPC_LOCK, what other Loops
  // of this process registered) are read again for every Loop.
  const Capabilities caps = CurrentCapabilities();
  const uint64_t pool_bytes =
      BufferPool::RegionBytesFor(options.buffer_size, options.buffer_count);
  if (options.backend != "auto") {
    absl::StatusOr<BackendInfo> info =
        ResolveBackend(options.backend, caps, pool_bytes);
    if (!info.ok()) return info.status();
    if (absl::Status f = ApplyFeatures(options.features, options.wait_batching,
                                       caps, false, &*info);
        !f.ok()) {
      return f;
    }
    absl::StatusOr<std::unique_ptr<internal::LoopCore>> core =
        Build(options, *info);
    if (!core.ok()) return core.status();
    return std::unique_ptr<Loop>(new Loop(*std::move(core)));
  }
  // `auto` tries the presets in order of preference and takes the first
  // whose probe passes *and* whose setup succeeds, saying why it passed over
  // the others (issue 6, fault 4: a setup failure used to end it).
  std::string passed_over;
  for (Preset preset : {Preset::kUringFixed, Preset::kUring, Preset::kEpoll}) {
    const std::string name(PresetName(preset));
    absl::StatusOr<BackendInfo> info = ResolveBackend(name, caps, pool_bytes);
    if (!info.ok()) {
      absl::StrAppend(&passed_over, name, " unavailable (",
                      info.status().message(), "); ");
      continue;
    }
    info->requested = "auto";
    if (absl::Status f = ApplyFeatures(options.features, options.wait_batching,
                                       caps, true, &*info);
        !f.ok()) {
      absl::StrAppend(&passed_over, name, " unavailable (", f.message(), "); ");
      continue;
    }
    absl::StatusOr<std::unique_ptr<internal::LoopCore>> core =
        Build(options, *info);
    if (!core.ok()) {
      absl::StrAppend(&passed_over, name, " setup failed (",
                      core.status().ToString(), "); ");
      continue;
    }
    (*core)->info.chosen_because =
        passed_over.empty()
            ? absl::StrCat("auto: ", name,
                           " (io_uring with buffer rings, multishot and "
                           "DEFER_TASKRUN) is available")
            : absl::StrCat("auto: ", passed_over, "using ", name);
    return std::unique_ptr<Loop>(new Loop(*std::move(core)));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("auto: no backend could be set up: ", passed_over));
}

Loop::Loop(std::unique_ptr<internal::LoopCore> core) : core_(std::move(core)) {}
Loop::~Loop() = default;

const BackendInfo& Loop::backend() const { return core_->info; }
const LoopCounters& Loop::counters() const { return core_->counters; }
Timestamp Loop::now() const { return core_->now; }
BufferPool& Loop::buffers() { return *core_->pool; }
size_t Loop::open_sockets() const { return core_->open_sockets; }

BufferLease Loop::AcquireBuffer() { return core_->AcquireForSend(); }

absl::StatusOr<SocketId> Loop::OpenUdp(const UdpOptions& options,
                                       SocketHandler* handler) {
  if (handler == nullptr) return absl::InvalidArgumentError("null handler");
  return core_->OpenUdp(options, handler);
}
absl::Status Loop::JoinMulticast(SocketId socket, const Endpoint& group,
                                 const Endpoint& interface_address) {
  return core_->Multicast(socket, group, interface_address, true);
}
absl::Status Loop::LeaveMulticast(SocketId socket, const Endpoint& group,
                                  const Endpoint& interface_address) {
  return core_->Multicast(socket, group, interface_address, false);
}
int Loop::SendTo(SocketId socket, BufferLease data, const Endpoint& to,
                 uint64_t tag) {
  return core_->SendTo(socket, std::move(data), to, tag);
}
int Loop::SendTo(SocketId socket, const SharedBuffer& payload,
                 const Endpoint& to, std::span<const std::byte> header,
                 uint64_t tag) {
  return core_->SendShared(socket, payload, header, &to, tag);
}
int Loop::Send(SocketId socket, const SharedBuffer& payload,
               std::span<const std::byte> header, uint64_t tag) {
  return core_->SendShared(socket, payload, header, nullptr, tag);
}
SharedBuffer Loop::Share(BufferLease lease) {
  return core_->Share(std::move(lease));
}
absl::StatusOr<SocketId> Loop::ListenTcp(const Endpoint& bind,
                                         SocketHandler* handler,
                                         const TcpOptions& options) {
  if (handler == nullptr) return absl::InvalidArgumentError("null handler");
  return core_->ListenTcp(bind, handler, options);
}
absl::StatusOr<SocketId> Loop::ConnectTcp(const Endpoint& peer,
                                          SocketHandler* handler,
                                          const TcpOptions& options) {
  if (handler == nullptr) return absl::InvalidArgumentError("null handler");
  return core_->ConnectTcp(peer, handler, options);
}
int Loop::Send(SocketId socket, BufferLease data, uint64_t tag) {
  return core_->Send(socket, std::move(data), tag);
}
size_t Loop::QueuedSendBytes(SocketId socket) const {
  return core_->QueuedSendBytes(socket);
}
int Loop::PauseReceive(SocketId socket) {
  return core_->SetReceivePaused(socket, true);
}
int Loop::ResumeReceive(SocketId socket) {
  return core_->SetReceivePaused(socket, false);
}
absl::Status Loop::ShutdownWrite(SocketId socket) {
  return core_->ShutdownWrite(socket);
}
void Loop::Close(SocketId socket) { core_->Close(socket); }
void Loop::Abandon(SocketId socket) { core_->Abandon(socket); }
absl::StatusOr<Endpoint> Loop::LocalEndpoint(SocketId socket) const {
  return core_->LocalEndpoint(socket);
}
absl::StatusOr<SocketBuffers> Loop::GetSocketBuffers(SocketId socket) const {
  return core_->GetSocketBuffers(socket);
}
int Loop::NativeHandle(SocketId socket) const {
  return core_->NativeHandle(socket);
}
uint64_t Loop::AddTimer(Timestamp deadline, Duration period,
                        TimerHandler* handler, void* context, Duration slack) {
  return core_->timers.Add(deadline, period, handler, context, slack);
}
uint64_t Loop::AddTimer(Timestamp deadline, Duration period, TimerFn fn,
                        void* context, Duration slack) {
  return core_->timers.Add(deadline, period, fn, context, slack);
}
uint64_t Loop::AddTimer(Timestamp deadline, Duration period,
                        absl::AnyInvocable<void(Timestamp now)> callback,
                        Duration slack) {
  return core_->timers.Add(deadline, period, std::move(callback), slack);
}
bool Loop::RescheduleTimer(uint64_t timer_id, Timestamp deadline) {
  return core_->timers.Reschedule(timer_id, deadline);
}
bool Loop::CancelTimer(uint64_t timer_id) {
  return core_->timers.Cancel(timer_id);
}
absl::Status Loop::Run() { return core_->Run(); }
int Loop::RunOnce(Duration timeout) { return core_->RunOnce(timeout); }
void Loop::Stop() { core_->Stop(); }
void Loop::Wakeup() { core_->Wakeup(); }
void Loop::Post(absl::AnyInvocable<void()> fn) { core_->Post(std::move(fn)); }

}  // namespace ringlab::transport
