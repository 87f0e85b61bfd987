// ringlab_mqtt_broker: the MQTT 3.1.1 / 5.0 broker (mqtt/broker.h) on one
// transport Loop, on any backend preset.
//
//   ringlab_mqtt_broker --backend=uring-fixed --listen=127.0.0.1:1883
//   ringlab_mqtt_broker --listen=127.0.0.1:0     # prints READY 127.0.0.1:PORT
//
// With --tls_listen=HOST:PORT (or --tls_port=PORT on the host of --listen)
// --cert=PEM --key=PEM [--cafile=PEM --require_certificate] [--ktls] a
// second listener speaks MQTT over TLS (mqtt/tls_listener.h); it prints
// "TLS_READY host:port" before READY.
//   ringlab_mqtt_broker --listen=127.0.0.1:1883 --tls_port=8883
//       --cert=server.crt --key=server.key --ktls
//
// Output: one "READY host:port" line once it listens; on SIGINT or SIGTERM
// it closes every connection (v5 clients get DISCONNECT 0x8B), stops, and
// prints one "SERVER_STATS {json}" line (schema ringlab.mqtt.broker/1:
// rusage CPU, Loop counters, broker and driver counters, `messages` =
// PUBLISH packets delivered, RSS, and the 50 ms `timeline` of the runner's
// program contract). --json writes the same object to a file.
// Exit codes: 0 ok, 1 run failed, 2 usage, 3 backend unsupported here.
//
// Durable state: --data-dir=DIR keeps retained messages and persistent
// sessions (with their subscriptions) in DIR/broker.db (SQLite, WAL);
// --fsync=always|batch|never and --fsync_batch_ms choose what a crash can
// cost (mqtt/store_sqlite.h). At startup it prints "STORE loaded ..." on
// stderr; a store it cannot read is an error (exit 1), never an empty one.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "mqtt/auth.h"
#include "mqtt/broker_driver.h"
#include "mqtt/metrics.h"
#include "mqtt/programs/broker_multi.h"
#include "mqtt/programs/broker_stats.h"
#include "mqtt/programs/program_support.h"
#include "mqtt/store_sqlite.h"
#include "mqtt/tls_listener.h"
#include "transport/loop.h"

namespace ringlab::mqtt::programs {
namespace {

struct Config {
  std::string backend = "auto";
  std::string listen = "127.0.0.1:1883";
  uint32_t max_connections = 100000;
  uint32_t max_packet_bytes = 1 << 20;
  uint32_t max_queued_messages = 1000;
  uint32_t max_queued_qos0 = 1000;
  uint64_t max_queued_bytes = 16 << 20;
  uint64_t max_total_queued_bytes = uint64_t(1) << 32;
  uint64_t max_send_queue_bytes = 256 * 1024;
  uint32_t receive_maximum = 100;
  uint32_t max_inflight = 100;
  uint32_t topic_alias_maximum = 64;
  uint32_t max_retained = 100000;
  uint32_t server_keep_alive_s = 0;
  uint32_t connect_timeout_ms = 10000;
  std::string queue_full_policy = "drop";
  uint32_t buffer_size = 2048;
  uint32_t buffer_count = 2048;
  uint32_t provided_buffers = 512;
  uint32_t queue_depth = 512;
  int cpu = -1;
  int sqpoll_cpu = -1;
  std::string json_path;
  std::string password_file;
  std::string acl_file;
  bool allow_anonymous = false;
  RateLimits rate;
  uint32_t sys_interval_s = 0;
  int metrics_port = -1;
  std::string data_dir;
  std::string fsync = "batch";
  uint32_t fsync_batch_ms = 10;
  int fsync_thread_nice = 19;
  std::string tls_listen;
  int tls_port = -1;
  std::string cert;
  std::string key;
  std::string cafile;
  bool require_certificate = false;
  bool ktls = false;
  std::string tls_min_version = "1.2";
  std::string tls_max_version = "1.3";
  std::string tls_self_signed;
  uint32_t threads = 1;  // >1: broker_multi.h
  std::string cross_loop_notify = "auto";
};

// The TLS listener's options from the flags (--tls_port or --tls_listen,
// the certificate, kTLS), or nullopt when TLS is off. Returns the exit code
// (kExitOk when the flags are usable).
int TlsOptionsFromFlags(Config& cfg, const Endpoint& listen_ep,
                        std::optional<TlsListenerOptions>* out) {
  if (cfg.tls_port >= 0) {
    if (!cfg.tls_listen.empty() || cfg.tls_port > 65535) {
      std::fprintf(stderr,
                   "ringlab_mqtt_broker: --tls_port takes 0..65535 and "
                   "excludes --tls_listen\n");
      return kExitUsage;
    }
    Endpoint tls_ep = listen_ep;
    tls_ep.set_port(uint16_t(cfg.tls_port));
    cfg.tls_listen = tls_ep.ToString();
  }
  if (!cfg.tls_listen.empty()) {
    absl::StatusOr<Endpoint> tls_ep = Endpoint::Parse(cfg.tls_listen);
    if (!tls_ep.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: --tls_listen: %s\n",
                   std::string(tls_ep.status().message()).c_str());
      return kExitUsage;
    }
    if (!cfg.tls_self_signed.empty()) {
      cfg.cert = cfg.tls_self_signed + "/broker.crt";
      cfg.key = cfg.tls_self_signed + "/broker.key";
      if (absl::Status s = WriteSelfSignedCertificate(
              cfg.cert, cfg.key, {"localhost"}, {"127.0.0.1", "::1"});
          !s.ok()) {
        std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                     std::string(s.message()).c_str());
        return kExitRunFailed;
      }
    }
    TlsConfig tc;
    tc.role = TlsRole::kServer;
    tc.cert_file = cfg.cert;
    tc.key_file = cfg.key;
    tc.ca_file = cfg.cafile;
    tc.require_peer_cert = cfg.require_certificate;
    tc.ktls = cfg.ktls;
    tc.min_version = cfg.tls_min_version;
    tc.max_version = cfg.tls_max_version;
    absl::StatusOr<std::shared_ptr<TlsContext>> ctx = TlsContext::Create(tc);
    if (!ctx.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   std::string(ctx.status().message()).c_str());
      return kExitUsage;
    }
    if (cfg.ktls) {
      if (absl::Status k = ProbeKernelTls(); !k.ok()) {
        std::fprintf(stderr,
                     "ringlab_mqtt_broker: --ktls: %s; TLS stays in user "
                     "space\n",
                     std::string(k.message()).c_str());
      }
    }
    TlsListenerOptions to;
    to.listen = *tls_ep;
    to.context = *ctx;
    to.ktls = cfg.ktls;
    *out = std::move(to);
  }
  return kExitOk;
}

// --data_dir, --fsync, --fsync_batch_ms and --fsync_thread_nice as store
// options (one Loop's store, or the template of every Loop's). kExitUsage
// after printing why if --fsync names no policy.
int StoreOptionsFromFlags(const Config& cfg, SqliteStoreOptions* out) {
  absl::StatusOr<FsyncPolicy> policy = ParseFsyncPolicy(cfg.fsync);
  if (!policy.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: --fsync: %s\n",
                 std::string(policy.status().message()).c_str());
    return kExitUsage;
  }
  out->data_dir = cfg.data_dir;
  out->fsync = *policy;
  out->batch_window = std::chrono::milliseconds(cfg.fsync_batch_ms);
  out->sync_thread_nice = cfg.fsync_thread_nice;
  return kExitOk;
}

int Run(int argc, char** argv) {
  Config cfg;
  Flags flags("ringlab_mqtt_broker",
              "An MQTT 3.1.1 and 5.0 broker on one ringlab transport Loop "
              "(one thread).\nPrints READY host:port when listening and a "
              "SERVER_STATS JSON line on SIGINT/SIGTERM.");
  flags.Add("backend",
            "transport preset: epoll, epoll-busy, uring, uring-fixed, "
            "uring-sqpoll, uring-busy or auto",
            &cfg.backend);
  flags.Add("threads",
            "Loops (threads) sharing the port with SO_REUSEPORT; publishes "
            "cross Loops by message passing (mqtt/README.md, --threads). 1: "
            "the single-thread broker",
            &cfg.threads);
  flags.Add("cross_loop_notify",
            "with --threads>1, how a Loop wakes another: auto (MSG_RING on "
            "io_uring, else eventfd), eventfd, msg_ring",
            &cfg.cross_loop_notify);
  flags.Add("listen", "HOST:PORT to listen on; port 0 picks a free port",
            &cfg.listen);
  flags.Add("max_connections", "connections open at once; more are refused",
            &cfg.max_connections);
  flags.Add("max_packet_bytes",
            "largest packet accepted (advertised Maximum Packet Size); larger "
            "ones close the connection with 0x95",
            &cfg.max_packet_bytes);
  flags.Add("max_queued_messages",
            "QoS 1/2 messages queued per session (online or offline) before "
            "--queue_full_policy applies",
            &cfg.max_queued_messages);
  flags.Add("max_queued_qos0",
            "QoS 0 messages queued per connected session; more are dropped "
            "and counted (a slow subscriber)",
            &cfg.max_queued_qos0);
  flags.Add("max_queued_bytes", "QoS 1/2 bytes queued per session",
            &cfg.max_queued_bytes);
  flags.Add("max_total_queued_bytes",
            "QoS 1/2 bytes queued across all sessions (a global limit; "
            "--queue_full_policy applies)",
            &cfg.max_total_queued_bytes);
  flags.Add("max_send_queue_bytes",
            "bytes queued on one socket before the broker stops writing to "
            "it until sends complete",
            &cfg.max_send_queue_bytes);
  flags.Add("receive_maximum",
            "QoS 1/2 publishes a client may have unacknowledged (v5 Receive "
            "Maximum; excess gets DISCONNECT 0x93)",
            &cfg.receive_maximum);
  flags.Add("max_inflight",
            "outgoing QoS 1/2 window per client (capped by its Receive "
            "Maximum)",
            &cfg.max_inflight);
  flags.Add("topic_alias_maximum",
            "topic aliases accepted from and used towards v5 clients",
            &cfg.topic_alias_maximum);
  flags.Add("max_retained", "retained messages kept", &cfg.max_retained);
  flags.Add("server_keep_alive_s",
            "0: use the client's keep alive; else override it (v5 Server "
            "Keep Alive) when the client asks for 0 or more",
            &cfg.server_keep_alive_s);
  flags.Add("connect_timeout_ms",
            "a CONNECT must arrive within this time of the TCP connection",
            &cfg.connect_timeout_ms);
  flags.Add("queue_full_policy",
            "drop: a full QoS 1/2 queue drops the new message for that "
            "subscriber; disconnect: also disconnects it (0x97)",
            &cfg.queue_full_policy);
  flags.Add("buffer_size", "transport buffer size in bytes", &cfg.buffer_size);
  flags.Add("buffer_count", "transport buffers in the pool", &cfg.buffer_count);
  flags.Add("provided_buffers",
            "buffers lent to the kernel (uring-fixed family), a power of two",
            &cfg.provided_buffers);
  flags.Add("queue_depth", "io_uring SQ entries / epoll events per wait",
            &cfg.queue_depth);
  flags.Add("cpu", "pin the broker thread to this CPU (-1: no pinning)",
            &cfg.cpu);
  flags.Add("sqpoll_cpu", "CPU of the SQPOLL thread (uring-sqpoll)",
            &cfg.sqpoll_cpu);
  flags.Add("json", "also write the SERVER_STATS object to this file",
            &cfg.json_path);
  flags.Add("password_file",
            "mosquitto_passwd file ($7$ PBKDF2-SHA512, $6$ SHA-512); a user "
            "name with a wrong password gets 4 / 0x86",
            &cfg.password_file);
  flags.Add("acl_file", "mosquitto acl_file (user, topic, pattern lines)",
            &cfg.acl_file);
  flags.Add("allow_anonymous",
            "admit clients without a verified user name; without "
            "--password_file and --acl_file the broker is open anyway",
            &cfg.allow_anonymous);
  flags.Add("max_connections_per_s",
            "new connections per second, per listener (the plain and the "
            "TLS listener each get this rate; token bucket; 0: off); over it "
            "the socket is closed at accept",
            &cfg.rate.connections_per_s);
  flags.Add("connection_burst", "connection bucket size (0: one second)",
            &cfg.rate.connection_burst);
  flags.Add("max_messages_per_s",
            "inbound PUBLISH packets per second per client (0: off); over it "
            "the client is disconnected (v5: DISCONNECT 0x96)",
            &cfg.rate.messages_per_s);
  flags.Add("message_burst", "message bucket size (0: one second)",
            &cfg.rate.message_burst);
  flags.Add("max_bytes_per_s",
            "inbound PUBLISH bytes per second per client (0: off); over it "
            "the client is disconnected (v5: DISCONNECT 0x97)",
            &cfg.rate.bytes_per_s);
  flags.Add("byte_burst",
            "byte bucket size (0: one second, at least --max_packet_bytes)",
            &cfg.rate.byte_burst);
  flags.Add("sys_interval_s",
            "publish the $SYS/broker/... tree (retained) every N seconds; 0: "
            "off",
            &cfg.sys_interval_s);
  flags.Add("metrics_port",
            "serve Prometheus text on http://LISTEN_HOST:PORT/metrics (0: a "
            "free port, printed as METRICS host:port; -1: off)",
            &cfg.metrics_port);
  flags.Add("data_dir",
            "keep retained messages and persistent sessions in this "
            "directory (SQLite); empty: in memory only",
            &cfg.data_dir);
  flags.Add("data-dir", "the same as --data_dir", &cfg.data_dir);
  flags.Add("fsync",
            "with --data_dir: always (fsync every change), batch (one "
            "commit per --fsync_batch_ms; a crash loses that window) or "
            "never (no fsync; a power cut may lose or corrupt)",
            &cfg.fsync);
  flags.Add("fsync_batch_ms", "the batch commit window, ms",
            &cfg.fsync_batch_ms);
  flags.Add("fsync_thread_nice",
            "batch: nice value of the store's sync thread (0: the Loop's; "
            "higher lets the Loop keep a shared CPU, windows grow under load)",
            &cfg.fsync_thread_nice);
  flags.Add("tls_listen",
            "HOST:PORT of a second listener speaking MQTT over TLS (port 0 "
            "picks one; printed as TLS_READY host:port); needs --cert, --key",
            &cfg.tls_listen);
  flags.Add("tls_port",
            "the TLS listener's port on the host of --listen (0 picks one); "
            "instead of --tls_listen",
            &cfg.tls_port);
  flags.Add("cert", "TLS: PEM certificate (chain) of the broker", &cfg.cert);
  flags.Add("key", "TLS: PEM private key of --cert", &cfg.key);
  flags.Add("cafile",
            "TLS: PEM CA bundle; when given, clients are asked for a "
            "certificate, which must verify against it",
            &cfg.cafile);
  flags.Add("require_certificate",
            "TLS: refuse clients without a certificate (needs --cafile)",
            &cfg.require_certificate);
  flags.Add("ktls",
            "TLS: hand the record layer to the kernel after the handshake "
            "(setsockopt SOL_TLS; AES-GCM only); where the kernel has no tls "
            "module the connections stay in user space and SERVER_STATS "
            "counts ktls_unavailable",
            &cfg.ktls);
  flags.Add("tls_self_signed",
            "TLS: make a throw-away key and self-signed certificate for "
            "localhost / 127.0.0.1 in this directory (broker.key, broker.crt) "
            "and use them; clients trust DIR/broker.crt (--cafile); instead "
            "of --cert/--key, for benchmarks",
            &cfg.tls_self_signed);
  flags.Add("tls_min_version", "TLS: 1.2 or 1.3", &cfg.tls_min_version);
  flags.Add("tls_max_version", "TLS: 1.2 or 1.3", &cfg.tls_max_version);
  if (absl::Status s = flags.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  if (flags.help()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return kExitOk;
  }
  absl::StatusOr<Endpoint> listen = Endpoint::Parse(cfg.listen);
  if (!listen.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: --listen: %s\n",
                 std::string(listen.status().message()).c_str());
    return kExitUsage;
  }
  if (cfg.queue_full_policy != "drop" &&
      cfg.queue_full_policy != "disconnect") {
    std::fprintf(stderr,
                 "ringlab_mqtt_broker: --queue_full_policy must be drop or "
                 "disconnect\n");
    return kExitUsage;
  }
  // Auth: with neither file the broker is open (nothing to check against,
  // like mosquitto 2.0 without a configuration); once a file is given,
  // anonymous clients are refused unless --allow_anonymous.
  std::unique_ptr<FileAuthenticator> auth;
  if (!cfg.password_file.empty() || !cfg.acl_file.empty()) {
    FileAuthenticator::Options ao;
    ao.allow_anonymous = cfg.allow_anonymous;
    if (!cfg.password_file.empty()) {
      absl::StatusOr<PasswordFile> pw = PasswordFile::Load(cfg.password_file);
      if (!pw.ok()) {
        std::fprintf(stderr, "ringlab_mqtt_broker: --password_file: %s\n",
                     std::string(pw.status().message()).c_str());
        return kExitUsage;
      }
      ao.passwords = *std::move(pw);
    }
    if (!cfg.acl_file.empty()) {
      absl::StatusOr<AclFile> acl = AclFile::Load(cfg.acl_file);
      if (!acl.ok()) {
        std::fprintf(stderr, "ringlab_mqtt_broker: --acl_file: %s\n",
                     std::string(acl.status().message()).c_str());
        return kExitUsage;
      }
      ao.acl = *std::move(acl);
    }
    auth = std::make_unique<FileAuthenticator>(std::move(ao));
  }
  InstallStopHandlers();
  if (cfg.cpu >= 0) {
    if (absl::Status s = bench::PinThisThreadToCpu(cfg.cpu); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   std::string(s.message()).c_str());
      return kExitUsage;
    }
  }

  // Every connection is a file descriptor (and, on the uring-fixed family,
  // a slot in the registered file table): raise the soft limit as far as
  // the hard limit allows, and size the Loop to what is possible.
  const uint64_t fd_limit = RaiseFileLimit(uint64_t(cfg.max_connections) + 256);
  if (fd_limit < uint64_t(cfg.max_connections) + 256) {
    std::fprintf(
        stderr,
        "ringlab_mqtt_broker: RLIMIT_NOFILE is %llu; "
        "--max_connections lowered to %llu\n",
        static_cast<unsigned long long>(fd_limit),
        static_cast<unsigned long long>(fd_limit > 256 ? fd_limit - 256 : 0));
    cfg.max_connections = uint32_t(fd_limit > 256 ? fd_limit - 256 : 0);
  }
  transport::LoopOptions lo;
  lo.backend = cfg.backend;
  lo.buffer_size = cfg.buffer_size;
  lo.buffer_count = cfg.buffer_count;
  lo.provided_buffers = cfg.provided_buffers;
  lo.queue_depth = cfg.queue_depth;
  lo.max_sockets = cfg.max_connections + 64;
  lo.sqpoll_cpu = cfg.sqpoll_cpu;
  absl::StatusOr<std::unique_ptr<transport::Loop>> created =
      transport::Loop::Create(lo);
  if (!created.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: backend %s: %s\n",
                 cfg.backend.c_str(), created.status().ToString().c_str());
    return IsUnsupportedBackend(created.status()) ? kExitUnsupportedBackend
                                                  : kExitRunFailed;
  }
  transport::Loop& loop = **created;

  BrokerDriverOptions options;
  options.listen = *listen;
  options.authenticator = auth.get();
  options.max_send_queue_bytes = cfg.max_send_queue_bytes;
  BrokerOptions& b = options.broker;
  b.max_connections = cfg.max_connections;
  b.max_packet_bytes = cfg.max_packet_bytes;
  b.max_queued_messages = cfg.max_queued_messages;
  b.max_queued_qos0 = cfg.max_queued_qos0;
  b.max_queued_bytes = cfg.max_queued_bytes;
  b.max_total_queued_bytes = cfg.max_total_queued_bytes;
  b.receive_maximum =
      uint16_t(std::clamp<uint32_t>(cfg.receive_maximum, 1, 65535));
  b.max_inflight_messages =
      uint16_t(std::clamp<uint32_t>(cfg.max_inflight, 1, 65535));
  b.topic_alias_maximum =
      uint16_t(std::min<uint32_t>(cfg.topic_alias_maximum, 65535));
  b.max_outgoing_topic_aliases = b.topic_alias_maximum;
  b.max_retained_messages = cfg.max_retained;
  b.server_keep_alive_s =
      uint16_t(std::min<uint32_t>(cfg.server_keep_alive_s, 65535));
  b.connect_timeout = std::chrono::milliseconds(cfg.connect_timeout_ms);
  b.rate = cfg.rate;
  b.queue_full_policy = cfg.queue_full_policy == "disconnect"
                            ? QueueFullPolicy::kDisconnect
                            : QueueFullPolicy::kDropNewest;
  std::optional<TlsListenerOptions> tls_options;
  if (int rc = TlsOptionsFromFlags(cfg, *listen, &tls_options); rc != kExitOk) {
    return rc;
  }
  // /metrics listens on the MQTT listener's address, on its own port.
  if (cfg.metrics_port > 65535) {
    std::fprintf(stderr, "ringlab_mqtt_broker: --metrics_port out of range\n");
    return kExitUsage;
  }
  std::optional<Endpoint> metrics_listen;
  if (cfg.metrics_port >= 0) {
    metrics_listen = *listen;
    metrics_listen->set_port(uint16_t(cfg.metrics_port));
  }
  if (cfg.threads != 1) {
    // N Loops on N threads (broker_multi.h); this Loop becomes Loop 0.
    if (cfg.threads == 0 || cfg.threads > 64) {
      std::fprintf(stderr, "ringlab_mqtt_broker: --threads takes 1..64\n");
      return kExitUsage;
    }
    MultiLoopConfig mc;
    if (!cfg.data_dir.empty()) {
      SqliteStoreOptions so;
      if (int rc = StoreOptionsFromFlags(cfg, &so); rc != kExitOk) return rc;
      mc.store = so;
      mc.fsync_name = cfg.fsync;
    }
    mc.tls = tls_options;
    mc.metrics_listen = metrics_listen;
    mc.threads = cfg.threads;
    mc.notify = cfg.cross_loop_notify;
    mc.json_path = cfg.json_path;
    mc.sys_interval_s = cfg.sys_interval_s;
    mc.first_cpu = cfg.cpu;
    if (auth != nullptr) {
      // The file authenticator keeps per-thread counters: one per Loop.
      mc.make_authenticator = [&]() -> std::unique_ptr<BrokerAuthenticator> {
        FileAuthenticator::Options ao;
        ao.allow_anonymous = cfg.allow_anonymous;
        if (!cfg.password_file.empty()) {
          absl::StatusOr<PasswordFile> pw =
              PasswordFile::Load(cfg.password_file);
          if (!pw.ok()) return nullptr;
          ao.passwords = *std::move(pw);
        }
        if (!cfg.acl_file.empty()) {
          absl::StatusOr<AclFile> acl = AclFile::Load(cfg.acl_file);
          if (!acl.ok()) return nullptr;
          ao.acl = *std::move(acl);
        }
        return std::make_unique<FileAuthenticator>(std::move(ao));
      };
    }
    return RunMultiLoop(std::move(*created), lo, options, mc);
  }
  absl::StatusOr<std::unique_ptr<BrokerDriver>> driver =
      BrokerDriver::Start(&loop, options);
  if (!driver.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: cannot listen on %s: %s\n",
                 cfg.listen.c_str(), driver.status().ToString().c_str());
    return kExitRunFailed;
  }
  BrokerDriver& broker = **driver;

  // Durable state: loaded before the Loop runs, so before any client.
  std::unique_ptr<SqliteStore> store;
  if (!cfg.data_dir.empty()) {
    SqliteStoreOptions so;
    if (int rc = StoreOptionsFromFlags(cfg, &so); rc != kExitOk) return rc;
    absl::StatusOr<std::unique_ptr<SqliteStore>> opened = SqliteStore::Open(so);
    if (!opened.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   opened.status().ToString().c_str());
      return kExitRunFailed;
    }
    store = std::move(*opened);
    absl::StatusOr<StoreLoadReport> loaded =
        store->Load(&broker.broker(), MonotonicNow());
    if (!loaded.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   loaded.status().ToString().c_str());
      return kExitRunFailed;
    }
    std::fprintf(stderr, "STORE loaded %s from %s (fsync=%s)\n",
                 loaded->ToString().c_str(), store->path().c_str(),
                 cfg.fsync.c_str());
    broker.broker().set_store(store.get());
    if (so.fsync == FsyncPolicy::kBatch) {
      // Group commit: the acks of every commit the store's sync thread has
      // made durable go out as soon as it says so (a Post per commit), not
      // at the next tick.
      auto release = [&store, &broker] {
        store->Poll();
        broker.broker().OnStoreDurable(MonotonicNow());
        broker.Flush();
      };
      store->set_durable_notifier(
          [&loop, release] { loop.Post([release] { release(); }); });
      // The tick checks the window's deadline four times per window, so a
      // window is committed at most 1.25 x --fsync_batch_ms after its first
      // change (a tick of one window made that up to 2 x).
      const Duration window =
          std::chrono::milliseconds(std::max<uint32_t>(cfg.fsync_batch_ms, 1));
      const Duration tick =
          std::max<Duration>(window / 4, std::chrono::milliseconds(1));
      loop.AddTimer(MonotonicNow() + tick, tick, [&, release](Timestamp now) {
        if (now >= store->NextFlushDeadline()) store->Flush();
        release();
      });
    }
  }
  // Metrics: $SYS on a timer and /metrics on demand, both from counters.
  const Timestamp started_at = loop.now();
  auto snapshot = [&] {
    return CollectMetrics(broker.broker(), &loop.counters(),
                          loop.now() - started_at);
  };
  std::unique_ptr<MetricsServer> metrics;
  if (metrics_listen.has_value()) {
    metrics = StartMetricsServerOrReport(
        &loop, *metrics_listen, [&] { return RenderPrometheus(snapshot()); });
    if (metrics == nullptr) return kExitRunFailed;
  }
  if (cfg.sys_interval_s > 0) {
    const Duration every = std::chrono::seconds(cfg.sys_interval_s);
    loop.AddTimer(loop.now() + every, every, [&](Timestamp) {
      ForEachSysTopic(snapshot(),
                      [&](std::string_view topic, std::string_view payload) {
                        InjectedMessage m;
                        m.topic = topic;
                        m.payload = AsBytes(payload);
                        m.retain = true;
                        broker.Publish(m);
                      });
    });
  }
  std::unique_ptr<TlsListener> tls;
  if (tls_options.has_value()) {
    absl::StatusOr<std::unique_ptr<TlsListener>> started =
        TlsListener::Start(&loop, &broker, *tls_options);
    if (!started.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: cannot listen on %s: %s\n",
                   cfg.tls_listen.c_str(), started.status().ToString().c_str());
      return kExitRunFailed;
    }
    tls = std::move(*started);
  }

  const uint64_t rss_start = ResidentBytes();
  const transport::LoopCounters counters_start = loop.counters();
  const bench::CpuTime cpu_start = bench::CpuTime::Now();
  const Timestamp time_start = MonotonicNow();
  // The runner cuts this timeline at the client's measured phase
  // (experiments/README.md, "Server metrics over the client's measured
  // phase"): cumulative CPU, deliveries and kernel entries since READY.
  Timeline timeline;
  auto sample = [&](bool force) {
    const BrokerCounters& c = broker.broker().counters();
    Timeline::Sample s;
    s.t_ns = MonotonicNow().nanos();
    s.cpu_us = (bench::CpuTime::Now() - cpu_start).total_us();
    s.messages =
        c.publishes_sent[0] + c.publishes_sent[1] + c.publishes_sent[2];
    s.kernel_entries = loop.counters().Delta(counters_start).kernel_entries();
    s.rss_kib = ResidentBytes() / 1024;
    s.connections = broker.broker().connection_count();
    timeline.Add(s, force);
  };
  sample(true);  // before any client: the RSS baseline
  constexpr int kTickMs = 50;

  // Signals only set a flag; this timer notices it on the Loop's thread,
  // shuts the broker down, and lets the goodbyes drain before stopping.
  bool stopping = false;
  Timestamp stop_at = Timestamp::Never();
  loop.AddTimer(MonotonicNow() + std::chrono::milliseconds(kTickMs),
                std::chrono::milliseconds(kTickMs), [&](Timestamp now) {
                  if (!stopping) sample(false);
                  if (!stopping && stop_requested()) {
                    stopping = true;
                    sample(true);  // the last point before shutting down
                    if (tls != nullptr) tls->Shutdown();
                    broker.Shutdown();
                    stop_at = now + std::chrono::milliseconds(200);
                  }
                  if (stopping && now >= stop_at) loop.Stop();
                });
  if (tls != nullptr) {
    std::printf("TLS_READY %s\n", tls->local_endpoint().ToString().c_str());
  }
  std::printf("READY %s\n", broker.local_endpoint().ToString().c_str());
  std::fflush(stdout);

  const absl::Status run = stop_requested() ? absl::OkStatus() : loop.Run();
  const Timestamp time_end = MonotonicNow();
  const bench::CpuTime cpu = bench::CpuTime::Now() - cpu_start;
  const transport::LoopCounters lc = loop.counters().Delta(counters_start);
  if (!run.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: loop failed: %s\n",
                 run.ToString().c_str());
  }

  const BrokerCounters& bc = broker.broker().counters();
  const uint64_t delivered = PublishesSent(bc);
  const uint64_t received = PublishesReceived(bc);
  bench::JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.mqtt.broker/1");
  json.Key("program").String("ringlab_mqtt_broker");
  json.Key("role").String("server");
  json.Key("protocol").String("mqtt");
  AppendBackend(json, loop.backend());
  json.Key("listen").String(broker.local_endpoint().ToString());
  json.Key("duration_s").Number((time_end - time_start).count() / 1e9);
  json.Key("cpu_us").Int(cpu.total_us());
  json.Key("cpu_user_us").Int(cpu.user_us);
  json.Key("cpu_system_us").Int(cpu.system_us);
  json.Key("messages").Uint(delivered);
  json.Key("messages_received").Uint(received);
  json.Key("kernel_entries").Uint(lc.kernel_entries());
  json.Key("connections_accepted").Uint(broker.counters().accepted);
  json.Key("rss_bytes_start").Uint(rss_start);
  json.Key("rss_kib_ready").Uint(rss_start / 1024);
  json.Key("rss_bytes_end").Uint(ResidentBytes());
  json.Key("timeline");
  timeline.AppendJson(json, kTickMs);
  json.Key("counters");
  AppendCounters(json, lc);
  json.Key("broker");
  AppendBrokerCounters(json, bc);
  json.Key("driver");
  AppendDriverCounters(json, broker.counters());
  if (store != nullptr) {
    store->Flush();
    json.Key("store").BeginObject();
    json.Key("writes").Uint(store->counters().writes);
    json.Key("commits").Uint(store->counters().commits);
    json.Key("write_errors").Uint(store->counters().write_errors);
    json.Key("queued_coalesced").Uint(store->counters().queued_coalesced);
    json.Key("updates_coalesced").Uint(store->counters().updates_coalesced);
    json.EndObject();
  }
  if (tls != nullptr) {
    json.Key("tls_listen").String(tls->local_endpoint().ToString());
    json.Key("ktls_requested").Bool(cfg.ktls);
    const absl::Status k = ProbeKernelTls();
    json.Key("ktls_available").Bool(k.ok());
    if (!k.ok()) json.Key("ktls_note").String(std::string(k.message()));
    json.Key("tls");
    AppendTlsCounters(json, tls->counters());
  }
  json.Key("cpu").Int(cfg.cpu);
  json.EndObject();
  int exit_code = EmitServerStats(json.str(), cfg.json_path,
                                  run.ok() ? kExitOk : kExitRunFailed);
  if (store != nullptr && !store->status().ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                 store->status().ToString().c_str());
    exit_code = kExitRunFailed;
  }
  // The driver goes before the Loop: it closes its sockets on the Loop;
  // the store goes after the broker that reports to it.
  // The TLS listener goes before the driver (it forwards to it), the driver
  // before the Loop: each closes its sockets on the Loop.
  tls.reset();
  driver->reset();
  store.reset();
  return exit_code;
}

}  // namespace
}  // namespace ringlab::mqtt::programs

int main(int argc, char** argv) {
  return ringlab::mqtt::programs::Run(argc, argv);
}
