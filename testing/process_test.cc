// Unit tests of testing/: the process helper against trivial children
// (/bin/sh, python3 for sockets), and the generated peer configs.
#include "testing/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "testing/peers.h"
#include "testing/skip.h"

namespace ringlab::testkit {
namespace {

// Alive and not a zombie waiting for a reaper (PID 1 in a container may
// never reap the orphans it inherits).
bool Alive(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)),
                   std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (text.empty() || close == std::string::npos || close + 2 >= text.size()) {
    return false;
  }
  return text[close + 2] != 'Z' && text[close + 2] != 'X';
}

bool EventuallyDead(pid_t pid) {
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (Alive(pid)) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

std::unique_ptr<Process> StartShell(const std::string& script,
                                    ProcessOptions options = {}) {
  options.argv = {"/bin/sh", "-c", script};
  absl::StatusOr<std::unique_ptr<Process>> p =
      Process::Start(std::move(options));
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

pid_t ParsePid(const std::string& line) {
  pid_t pid = 0;
  EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &pid)) << line;
  return pid;
}

TEST(TempDirTest, WritesFilesAndRemovesItself) {
  std::string path;
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("testkit-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    path = dir->path();
    absl::StatusOr<std::string> file = dir->WriteFile("a.conf", "x 1\n");
    ASSERT_TRUE(file.ok()) << file.status();
    std::ifstream in(*file);
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, "x 1");
    TempDir moved = std::move(*dir);
    EXPECT_EQ(moved.path(), path);
    EXPECT_TRUE(std::filesystem::is_directory(path));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(PortTest, PickedPortsCanBeBound) {
  for (PortKind kind : {PortKind::kTcp, PortKind::kUdp, PortKind::kTcpAndUdp}) {
    absl::StatusOr<uint16_t> port = PickFreePort(kind);
    ASSERT_TRUE(port.ok()) << port.status();
    EXPECT_GT(*port, 0);
    for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
      if ((kind == PortKind::kTcp && type == SOCK_DGRAM) ||
          (kind == PortKind::kUdp && type == SOCK_STREAM)) {
        continue;
      }
      const int fd = ::socket(AF_INET, type, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(*port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
          << "port " << *port << " type " << type;
      ::close(fd);
    }
  }
}

TEST(FindBinaryTest, FindsShellAndReportsMissingPeers) {
  absl::StatusOr<std::string> sh = FindBinary("sh");
  ASSERT_TRUE(sh.ok()) << sh.status();
  EXPECT_EQ(sh->front(), '/');
  absl::StatusOr<std::string> missing =
      FindBinary("ringlab-no-such-peer", "apt-get install nothing");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(IsMissingPeer(missing.status()));
  EXPECT_NE(missing.status().message().find("apt-get install nothing"),
            absl::string_view::npos);
  EXPECT_TRUE(IsMissingPeer(FindBinary("/nonexistent/peer").status()));
  // Other errors never look like a missing peer.
  EXPECT_FALSE(IsMissingPeer(absl::NotFoundError("x")));
  EXPECT_FALSE(IsMissingPeer(absl::InternalError("x")));
  absl::StatusOr<std::unique_ptr<Process>> p =
      Process::Start({.argv = {"ringlab-no-such-peer"}});
  EXPECT_TRUE(IsMissingPeer(p.status())) << p.status();
}

TEST(ProcessTest, CapturesOutputAndExitCode) {
  std::unique_ptr<Process> p =
      StartShell("echo out; echo err >&2; printf tail; exit 7");
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ExitStatus> exit = p->Wait(absl::Seconds(10));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->exited_normally());
  EXPECT_EQ(exit->code, 7);
  EXPECT_FALSE(exit->success());
  EXPECT_EQ(p->Stdout(), "out\ntail");
  EXPECT_EQ(p->Stderr(), "err\n");
  // After exit, the unterminated last line counts too.
  EXPECT_EQ(p->MatchingLines("^tail$").size(), 1u);
  EXPECT_EQ(p->Stop().code, 7);  // idempotent, keeps the status
}

TEST(ProcessTest, PassesEnvironmentAndWorkingDirectory) {
  absl::StatusOr<TempDir> dir = TempDir::Create("testkit-cwd");
  ASSERT_TRUE(dir.ok());
  ProcessOptions options;
  options.env = {{"RINGLAB_TESTKIT_VALUE", "forty two"}, {"HOME", "/nowhere"}};
  options.working_dir = dir->path();
  std::unique_ptr<Process> p = StartShell(
      "echo \"$RINGLAB_TESTKIT_VALUE|$HOME\"; pwd", std::move(options));
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->Wait(absl::Seconds(10)).ok());
  EXPECT_EQ(
      p->Stdout(),
      absl::StrCat("forty two|/nowhere\n",
                   std::filesystem::canonical(dir->path()).string(), "\n"));
}

TEST(ProcessTest, WaitForLineSeesOnlyCompleteLines) {
  // "READY 12" is written first, "34" later: a whole-line pattern must not
  // match the half-written line.
  std::unique_ptr<Process> p = StartShell(
      "printf 'READY 12'; sleep 0.3; printf '34\\n'; echo second >&2; "
      "echo second; exec sleep 30");
  ASSERT_NE(p, nullptr);
  absl::StatusOr<std::string> line =
      p->WaitForLine("^READY [0-9]+$", absl::Seconds(10));
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(*line, "READY 1234");
  // Both streams are searched; the second match is the stderr one.
  absl::StatusOr<std::string> nth =
      p->WaitForLine("^second$", absl::Seconds(10), 2);
  EXPECT_TRUE(nth.ok()) << nth.status();
}

TEST(ProcessTest, WaitForLineTimesOutAndNoticesExit) {
  std::unique_ptr<Process> sleeper = StartShell("exec sleep 30");
  ASSERT_NE(sleeper, nullptr);
  absl::StatusOr<std::string> none =
      sleeper->WaitForLine("never", absl::Milliseconds(100));
  EXPECT_TRUE(absl::IsDeadlineExceeded(none.status())) << none.status();

  std::unique_ptr<Process> quitter = StartShell("echo bye; exit 3");
  ASSERT_NE(quitter, nullptr);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> gone =
      quitter->WaitForLine("never", absl::Seconds(20));
  EXPECT_TRUE(absl::IsFailedPrecondition(gone.status())) << gone.status();
  EXPECT_NE(gone.status().message().find("bye"), absl::string_view::npos);
  EXPECT_NE(gone.status().message().find("exit code 3"),
            absl::string_view::npos);
  // It returned because the process ended, not at the 20 s timeout.
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

TEST(ProcessTest, StopTerminatesTheWholeGroup) {
  std::unique_ptr<Process> p = StartShell("sleep 30 & echo $!; echo $$; wait");
  ASSERT_NE(p, nullptr);
  absl::StatusOr<std::string> child =
      p->WaitForLine("^[0-9]+$", absl::Seconds(10), 1);
  absl::StatusOr<std::string> shell =
      p->WaitForLine("^[0-9]+$", absl::Seconds(10), 2);
  ASSERT_TRUE(child.ok() && shell.ok());
  const pid_t child_pid = ParsePid(*child);
  const pid_t shell_pid = ParsePid(*shell);
  EXPECT_TRUE(p->Running());
  const ExitStatus exit = p->Stop();
  // Both get the SIGTERM, but the shell may see its child die first and
  // exit from `wait` with the child's status (128 + SIGTERM) before its own
  // SIGTERM is taken (seen once in CI, exit code 143). Either way the group
  // ended on the first signal, not on the SIGKILL escalation.
  const bool terminated =
      exit.signal == SIGTERM ||
      (exit.exited_normally() && exit.code == 128 + SIGTERM);
  EXPECT_TRUE(terminated) << exit.ToString();
  EXPECT_FALSE(p->Running());
  EXPECT_TRUE(EventuallyDead(child_pid));
  EXPECT_TRUE(EventuallyDead(shell_pid));
}

TEST(ProcessTest, StopEscalatesToSigkill) {
  ProcessOptions options;
  options.stop_grace = absl::Milliseconds(300);
  // Without the `timeout` wrapper: a SIGTERM that reaches `timeout` before
  // its fork() has returned makes it exit 143 at once (about 1 run in 75
  // here), and this test is about the shell that ignores the signal.
  options.max_lifetime = absl::ZeroDuration();
  std::unique_ptr<Process> p =
      StartShell("trap '' TERM; echo $$; while :; do sleep 0.05; done",
                 std::move(options));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<std::string> pid_line =
      p->WaitForLine("^[0-9]+$", absl::Seconds(10));
  ASSERT_TRUE(pid_line.ok()) << pid_line.status();
  const ExitStatus exit = p->Stop();
  EXPECT_EQ(exit.signal, SIGKILL) << exit.ToString();
  EXPECT_TRUE(EventuallyDead(ParsePid(*pid_line)));
}

TEST(ProcessTest, StopGivesTheGroupItsGraceWhenTheLeaderEndsFirst) {
  absl::StatusOr<TempDir> dir = TempDir::Create("process-test");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string done = dir->path() + "/done";
  ProcessOptions options;
  options.max_lifetime = absl::ZeroDuration();
  // The leader dies of the SIGTERM at once; the member it started takes
  // 100 ms to finish its handler. Stop() used to SIGKILL the member as soon
  // as the leader was reaped.
  const std::string member =
      absl::StrCat("trap 'sleep 0.1; echo done > ", done,
                   "; exit 0' TERM; echo ready; while :; do sleep 0.01; done");
  std::unique_ptr<Process> p = StartShell(
      absl::StrCat("sh -c \"", member, "\" & wait"), std::move(options));
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->WaitForLine("^ready$", absl::Seconds(10)).ok());
  const ExitStatus exit = p->Stop();
  EXPECT_EQ(exit.signal, SIGTERM) << exit.ToString();
  std::ifstream in(done);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "done");
}

TEST(ProcessTest, DestructorStopsTheProcess) {
  pid_t pid = 0;
  {
    std::unique_ptr<Process> p = StartShell("echo $$; exec sleep 30");
    ASSERT_NE(p, nullptr);
    absl::StatusOr<std::string> line =
        p->WaitForLine("^[0-9]+$", absl::Seconds(10));
    ASSERT_TRUE(line.ok()) << line.status();
    pid = ParsePid(*line);
    EXPECT_TRUE(Alive(pid));
  }
  EXPECT_TRUE(EventuallyDead(pid));
}

TEST(ProcessTest, MaxLifetimeBoundsAForgottenChild) {
  ProcessOptions options;
  options.max_lifetime = absl::Seconds(1);
  std::unique_ptr<Process> p = StartShell("exec sleep 30", std::move(options));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ExitStatus> exit = p->Wait(absl::Seconds(10));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 124) << exit->ToString();  // coreutils timeout's code
}

TEST(ProcessTest, RunProcessBoundsItsTime) {
  absl::StatusOr<ProcessResult> done =
      RunProcess({.argv = {"/bin/sh", "-c", "echo hi"}}, absl::Seconds(10));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(done->timed_out);
  EXPECT_TRUE(done->exit.success());
  EXPECT_EQ(done->stdout_text, "hi\n");

  absl::StatusOr<ProcessResult> slow =
      RunProcess({.argv = {"/bin/sh", "-c", "echo started; exec sleep 30"}},
                 absl::Milliseconds(300));
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_TRUE(slow->timed_out);
  EXPECT_EQ(slow->exit.signal, SIGTERM);
  EXPECT_EQ(slow->stdout_text, "started\n");
}

// Sockets: a python3 child binds what the test asks; the checks read /proc
// and must see only sockets of the child's own group.
class SocketWaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> python = FindBinary("python3");
    RINGLAB_SKIP_IF_MISSING(python.status());
    python_ = *python;
  }
  std::unique_ptr<Process> Bind(const std::string& kind, uint16_t port,
                                const std::string& delay = "0.3") {
    const std::string script = absl::StrCat(
        "import socket, time\n", "time.sleep(", delay, ")\n",
        "s = socket.socket(socket.AF_INET, socket.SOCK_",
        kind == "tcp" ? "STREAM" : "DGRAM", ")\n", "s.bind(('127.0.0.1', ",
        port, "))\n", kind == "tcp" ? "s.listen()\n" : "",
        "print('bound', s.getsockname()[1], flush=True)\n", "time.sleep(30)\n");
    absl::StatusOr<std::unique_ptr<Process>> p =
        Process::Start({.argv = {python_, "-c", script}});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  std::string python_;
};

TEST_F(SocketWaitTest, TcpListening) {
  absl::StatusOr<uint16_t> port = PickFreePort(PortKind::kTcp);
  ASSERT_TRUE(port.ok());
  std::unique_ptr<Process> p = Bind("tcp", *port);
  ASSERT_NE(p, nullptr);
  absl::Status ready = p->WaitForTcpListening(*port, absl::Seconds(10));
  EXPECT_TRUE(ready.ok()) << ready;
  EXPECT_EQ(p->MatchingLines("^bound ").size(), 1u);
  // A port the child does not listen on is not ready.
  absl::StatusOr<uint16_t> other = PickFreePort(PortKind::kTcp);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      p->WaitForTcpListening(*other, absl::Milliseconds(100))));
}

TEST_F(SocketWaitTest, ListenerOfAnotherProcessDoesNotCount) {
  // The test itself listens, on a socket without close-on-exec; the child
  // binds nothing on that port and must not inherit the test's socket.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::unique_ptr<Process> p = StartShell("exec sleep 30");
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      p->WaitForTcpListening(ntohs(addr.sin_port), absl::Milliseconds(200))));
  ::close(fd);
}

TEST_F(SocketWaitTest, UdpBoundOnAPortAndAnyPort) {
  absl::StatusOr<uint16_t> port = PickFreePort(PortKind::kUdp);
  ASSERT_TRUE(port.ok());
  std::unique_ptr<Process> p = Bind("udp", *port);
  ASSERT_NE(p, nullptr);
  absl::StatusOr<std::vector<uint16_t>> bound =
      p->WaitForUdpBound(*port, absl::Seconds(10));
  ASSERT_TRUE(bound.ok()) << bound.status();
  EXPECT_EQ(*bound, std::vector<uint16_t>{*port});

  std::unique_ptr<Process> any = Bind("udp", 0);
  ASSERT_NE(any, nullptr);
  absl::StatusOr<std::vector<uint16_t>> any_bound =
      any->WaitForUdpBound(0, absl::Seconds(10));
  ASSERT_TRUE(any_bound.ok()) << any_bound.status();
  ASSERT_EQ(any_bound->size(), 1u);
  absl::StatusOr<std::string> line =
      any->WaitForLine("^bound ", absl::Seconds(5));
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(*line, absl::StrCat("bound ", (*any_bound)[0]));
}

TEST_F(SocketWaitTest, ExitBeforeBindingIsReported) {
  std::unique_ptr<Process> p = StartShell("echo no socket today; exit 1");
  ASSERT_NE(p, nullptr);
  absl::StatusOr<std::vector<uint16_t>> bound =
      p->WaitForUdpBound(0, absl::Seconds(10));
  EXPECT_TRUE(absl::IsFailedPrecondition(bound.status())) << bound.status();
  EXPECT_NE(bound.status().message().find("no socket today"),
            absl::string_view::npos);
}

TEST(PeerConfigTest, MosquittoConfigIsLoopbackOnlyWithNodelay) {
  const std::string config = MosquittoConfig(18830, {"max_keepalive 60"});
  EXPECT_NE(config.find("listener 18830 127.0.0.1\n"), std::string::npos);
  EXPECT_NE(config.find("set_tcp_nodelay true\n"), std::string::npos);
  EXPECT_NE(config.find("persistence false\n"), std::string::npos);
  EXPECT_NE(config.find("allow_anonymous true\n"), std::string::npos);
  EXPECT_NE(config.find("max_keepalive 60\n"), std::string::npos);
  // No other listener (a bare "port" line would listen on every address).
  EXPECT_EQ(config.find("\nport "), std::string::npos);
  EXPECT_EQ(config.find("listener", config.find("listener") + 1),
            std::string::npos);
}

TEST(PeerConfigTest, CycloneConfigPinsLoopback) {
  const std::string multicast = CycloneLoopbackConfig();
  EXPECT_NE(
      multicast.find("<NetworkInterface name=\"lo\" multicast=\"true\"/>"),
      std::string::npos);
  const std::string unicast =
      CycloneLoopbackConfig({.multicast = false, .trace_file = "/tmp/x.log"});
  EXPECT_NE(unicast.find("<AllowMulticast>false</AllowMulticast>"),
            std::string::npos);
  EXPECT_NE(unicast.find("<Peer address=\"127.0.0.1\"/>"), std::string::npos);
  EXPECT_NE(unicast.find("<OutputFile>/tmp/x.log</OutputFile>"),
            std::string::npos);
  for (int i = 0; i < 100; ++i) {
    const int domain = PickDomainId();
    EXPECT_GE(domain, 1);
    EXPECT_LE(domain, 200);
  }
}

}  // namespace
}  // namespace ringlab::testkit
