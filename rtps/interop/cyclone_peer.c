// ringlab_cyclone_peer: a Cyclone DDS program that interop tests run beside
// ringlab's RTPS stack. It publishes, subscribes, echoes, pings or just
// watches discovery, and says what it sees in one machine-readable line per
// event on stdout (line-buffered):
//
//   READY participant=GUID domain=D mode=M topic=T type=TYPE
//   DISCOVERED participant GUID=G self=0|1
//   LOST participant GUID=G
//   DISCOVERED publication|subscription GUID=G participant=P topic=T type=Y
//   MATCHED writer|reader topic=T current=N total=N peer=G
//   SENT id=I seq=S size=N                (KeyedSample; Message: SENT seq=S
//   ...) RECV id=I seq=S size=N valid=0|1 text=TEXT ECHO id=I seq=S
//   (pingpong-echo) WARMUP seq=S                          (ping: the echo path
//   works) RTT seq=S ns=N                        (ping) DONE sent=N received=N
//   ERROR text
//   PONG seq=S keyval=K size=N answered=N (ddsperf-pong; first 3, then 1/10000)
//   INCOMPATIBLE writer|reader topic=T policy=NAME total=N  (offered /
//   requested incompatible QoS; NAME as the DDS spec spells it, e.g. DEADLINE)
//   DEADLINE_MISSED writer|reader topic=T total=N
//
// GUIDs are 32 hex digits in four groups of 8 (prefix, then entity id last).
// The domain is always configured from the program's own loopback-only
// Cyclone XML (multicast SPDP forced on `lo`, or unicast to 127.0.0.1 with
// --discovery=unicast) unless --config-from-env says to use CYCLONEDDS_URI.
//
// Exit codes: 0 success (count reached / everything sent and acknowledged),
// 1 not reached within --duration-s, 2 a DDS call failed, 3 bad arguments.
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dds/dds.h"
#include "ddsperf_pong.h"
#include "ringlab_interop.h"

#define MAX_TAKE 64

enum mode {
  MODE_PUB,
  MODE_SUB,
  MODE_ECHO,
  MODE_PING,
  MODE_DISCOVER,
  MODE_DDSPERF_PONG
};
enum type_kind { TYPE_KEYED, TYPE_MESSAGE };

struct options {
  enum mode mode;
  enum type_kind type;
  const char* topic;
  char echo_topic[256];
  const char* partition;
  const char* trace_file;
  bool reliable;
  bool transient_local;
  int history;  // <= 0: keep-all; else keep-last N; default keep-last 1
  long count;
  long keys;
  long size;
  long wait_match;
  long expect_participants;
  double interval_ms;
  double deadline_ms;  // 0: infinite
  double duration_s;
  double linger_s;
  int domain;
  bool unicast_discovery;
  bool config_from_env;
  bool ddsperf_user_data;
};

static void usage(void) {
  fprintf(
      stderr,
      "usage: ringlab_cyclone_peer\n"
      "  --mode=pub|sub|pingpong-echo|ping|discover|ddsperf-pong\n"
      "  [--topic=NAME] [--echo-topic=NAME] [--type=keyed|message]\n"
      "  [--reliable | --best-effort] [--transient-local] [--history=N|all]\n"
      "  [--partition=NAME] [--count=N] [--keys=N] [--size=BYTES]\n"
      "  [--wait-match=N] [--expect-participants=N] [--interval-ms=MS]\n"
      "  [--deadline-ms=MS] (DEADLINE QoS of the endpoint; default infinite)\n"
      "  [--duration-s=S] [--linger-s=S] [--domain=ID]\n"
      "  [--discovery=multicast|unicast] [--trace=FILE] [--config-from-env]\n"
      "  [--no-ddsperf-user-data]  (ddsperf-pong: answers `ddsperf ping`, see\n"
      "  DDSPERF.md; --reliable picks DDSPerfR*KS, else DDSPerfU*KS)\n"
      "Defaults: topic ringlab_interop, type keyed, best-effort, volatile,\n"
      "keep-last 1, count 10 (pub/ping; sub: 0 = until the duration ends),\n"
      "keys 1, size 16, wait-match 1, duration 20 s, linger 0.5 s, domain "
      "0.\n");
}

static bool flag_value(const char* arg, const char* name, const char** value) {
  const size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *value = arg + n + 1;
  return true;
}

static bool parse_long(const char* text, long* out) {
  char* end = NULL;
  const long v = strtol(text, &end, 10);
  if (end == text || *end != '\0') return false;
  *out = v;
  return true;
}

static bool parse_double(const char* text, double* out) {
  char* end = NULL;
  const double v = strtod(text, &end);
  if (end == text || *end != '\0' || v < 0) return false;
  *out = v;
  return true;
}

static int parse_args(int argc, char** argv, struct options* o) {
  memset(o, 0, sizeof(*o));
  o->mode = MODE_SUB;
  o->type = TYPE_KEYED;
  o->topic = "ringlab_interop";
  o->history = 1;
  o->count = -1;
  o->keys = 1;
  o->size = 16;
  o->wait_match = 1;
  o->duration_s = 20;
  o->linger_s = 0.5;
  o->ddsperf_user_data = true;
  bool have_mode = false;
  const char* echo_topic = NULL;
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = NULL;
    long n = 0;
    if (flag_value(a, "--mode", &v)) {
      have_mode = true;
      if (strcmp(v, "pub") == 0)
        o->mode = MODE_PUB;
      else if (strcmp(v, "sub") == 0)
        o->mode = MODE_SUB;
      else if (strcmp(v, "pingpong-echo") == 0)
        o->mode = MODE_ECHO;
      else if (strcmp(v, "ping") == 0)
        o->mode = MODE_PING;
      else if (strcmp(v, "discover") == 0)
        o->mode = MODE_DISCOVER;
      else if (strcmp(v, "ddsperf-pong") == 0)
        o->mode = MODE_DDSPERF_PONG;
      else {
        fprintf(stderr, "unknown mode %s\n", v);
        return 3;
      }
    } else if (flag_value(a, "--type", &v)) {
      if (strcmp(v, "keyed") == 0)
        o->type = TYPE_KEYED;
      else if (strcmp(v, "message") == 0)
        o->type = TYPE_MESSAGE;
      else {
        fprintf(stderr, "unknown type %s\n", v);
        return 3;
      }
    } else if (flag_value(a, "--topic", &v)) {
      o->topic = v;
    } else if (flag_value(a, "--echo-topic", &v)) {
      echo_topic = v;
    } else if (flag_value(a, "--partition", &v)) {
      o->partition = v;
    } else if (flag_value(a, "--trace", &v)) {
      o->trace_file = v;
    } else if (strcmp(a, "--reliable") == 0) {
      o->reliable = true;
    } else if (strcmp(a, "--best-effort") == 0) {
      o->reliable = false;
    } else if (strcmp(a, "--transient-local") == 0) {
      o->transient_local = true;
    } else if (strcmp(a, "--config-from-env") == 0) {
      o->config_from_env = true;
    } else if (strcmp(a, "--no-ddsperf-user-data") == 0) {
      o->ddsperf_user_data = false;
    } else if (flag_value(a, "--history", &v)) {
      if (strcmp(v, "all") == 0)
        o->history = 0;
      else if (parse_long(v, &n) && n >= 1 && n < 1000000)
        o->history = (int)n;
      else {
        fprintf(stderr, "bad --history %s\n", v);
        return 3;
      }
    } else if (flag_value(a, "--discovery", &v)) {
      if (strcmp(v, "multicast") == 0)
        o->unicast_discovery = false;
      else if (strcmp(v, "unicast") == 0)
        o->unicast_discovery = true;
      else {
        fprintf(stderr, "bad --discovery %s\n", v);
        return 3;
      }
    } else if (flag_value(a, "--count", &v) && parse_long(v, &n) && n >= 0) {
      o->count = n;
    } else if (flag_value(a, "--keys", &v) && parse_long(v, &n) && n >= 1) {
      o->keys = n;
    } else if (flag_value(a, "--size", &v) && parse_long(v, &n) && n >= 0 &&
               n <= (1 << 24)) {
      o->size = n;
    } else if (flag_value(a, "--wait-match", &v) && parse_long(v, &n) &&
               n >= 0) {
      o->wait_match = n;
    } else if (flag_value(a, "--expect-participants", &v) &&
               parse_long(v, &n) && n >= 0) {
      o->expect_participants = n;
    } else if (flag_value(a, "--domain", &v) && parse_long(v, &n) && n >= 0 &&
               n <= 232) {
      o->domain = (int)n;
    } else if (flag_value(a, "--interval-ms", &v) &&
               parse_double(v, &o->interval_ms)) {
    } else if (flag_value(a, "--deadline-ms", &v) &&
               parse_double(v, &o->deadline_ms)) {
    } else if (flag_value(a, "--duration-s", &v) &&
               parse_double(v, &o->duration_s)) {
    } else if (flag_value(a, "--linger-s", &v) &&
               parse_double(v, &o->linger_s)) {
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage();
      exit(0);
    } else {
      fprintf(stderr, "bad argument: %s\n", a);
      usage();
      return 3;
    }
  }
  if (!have_mode) {
    fprintf(stderr, "--mode is required\n");
    usage();
    return 3;
  }
  if (o->count < 0)
    o->count = (o->mode == MODE_PUB || o->mode == MODE_PING) ? 10 : 0;
  snprintf(o->echo_topic, sizeof(o->echo_topic), "%s",
           echo_topic ? echo_topic : "");
  if (!echo_topic)
    snprintf(o->echo_topic, sizeof(o->echo_topic), "%s_echo", o->topic);
  return 0;
}

static void format_guid(const dds_guid_t* g, char out[40]) {
  snprintf(
      out, 40,
      "%02x%02x%02x%02x:%02x%02x%02x%02x:%02x%02x%02x%02x:%02x%02x%02x%02x",
      g->v[0], g->v[1], g->v[2], g->v[3], g->v[4], g->v[5], g->v[6], g->v[7],
      g->v[8], g->v[9], g->v[10], g->v[11], g->v[12], g->v[13], g->v[14],
      g->v[15]);
}

// The domain configuration: everything on 127.0.0.1 (see
// testing/peers.h, CycloneLoopbackConfig, for why each element is there).
static void loopback_config(const struct options* o, char* out, size_t size) {
  char tracing[512] = "";
  if (o->trace_file) {
    snprintf(tracing, sizeof(tracing),
             "<Tracing><Category>trace</Category><OutputFile>%s</OutputFile></"
             "Tracing>",
             o->trace_file);
  }
  if (o->unicast_discovery) {
    snprintf(out, size,
             "<CycloneDDS><Domain id=\"any\"><General><Interfaces>"
             "<NetworkInterface name=\"lo\"/></Interfaces>"
             "<AllowMulticast>false</AllowMulticast></General>"
             "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
             "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery>%s"
             "</Domain></CycloneDDS>",
             tracing);
  } else {
    snprintf(out, size,
             "<CycloneDDS><Domain id=\"any\"><General><Interfaces>"
             "<NetworkInterface name=\"lo\" multicast=\"true\"/></Interfaces>"
             "</General>%s</Domain></CycloneDDS>",
             tracing);
  }
}

static long g_sent = 0;
static long g_received = 0;

struct peer {
  struct options o;
  dds_entity_t participant;
  dds_entity_t waitset;
  dds_entity_t bt_participant;
  dds_entity_t bt_publication;
  dds_entity_t bt_subscription;
  dds_entity_t writer;  // pub: data; echo: echo topic; ping: data
  dds_entity_t reader;  // sub: data; echo: data; ping: echo topic
  const dds_topic_descriptor_t* desc;
  uint32_t writer_matched_total;
  uint32_t reader_matched_total;
  uint32_t writer_incompatible_total;
  uint32_t reader_incompatible_total;
  uint32_t writer_deadline_total;
  uint32_t reader_deadline_total;
  long participants_seen;
};

static dds_qos_t* endpoint_qos(const struct options* o) {
  dds_qos_t* q = dds_create_qos();
  dds_qset_reliability(
      q, o->reliable ? DDS_RELIABILITY_RELIABLE : DDS_RELIABILITY_BEST_EFFORT,
      DDS_SECS(10));
  dds_qset_durability(q, o->transient_local ? DDS_DURABILITY_TRANSIENT_LOCAL
                                            : DDS_DURABILITY_VOLATILE);
  const dds_history_kind_t kind =
      o->history <= 0 ? DDS_HISTORY_KEEP_ALL : DDS_HISTORY_KEEP_LAST;
  const int32_t depth = o->history <= 0 ? 0 : o->history;
  dds_qset_history(q, kind, depth);
  if (o->deadline_ms > 0) {
    dds_qset_deadline(q, (dds_duration_t)(o->deadline_ms * 1e6));
  }
  // Cyclone serves a transient-local late joiner from the writer's
  // DURABILITY_SERVICE history (default keep-last 1), not from its HISTORY;
  // align the two so --history=all means "the late joiner gets everything".
  if (o->transient_local) {
    dds_qset_durability_service(q, 0, kind, depth, DDS_LENGTH_UNLIMITED,
                                DDS_LENGTH_UNLIMITED, DDS_LENGTH_UNLIMITED);
  }
  return q;
}

static dds_qos_t* group_qos(const struct options* o) {
  dds_qos_t* q = dds_create_qos();
  if (o->partition) dds_qset_partition1(q, o->partition);
  return q;
}

static int make_endpoint(struct peer* p, const char* topic_name, bool writer,
                         dds_entity_t* out) {
  dds_qos_t* eq = endpoint_qos(&p->o);
  dds_qos_t* gq = group_qos(&p->o);
  dds_entity_t topic =
      dds_create_topic(p->participant, p->desc, topic_name, eq, NULL);
  if (topic < 0) {
    printf("ERROR dds_create_topic %s: %s\n", topic_name,
           dds_strretcode(topic));
    return 2;
  }
  dds_entity_t group = writer ? dds_create_publisher(p->participant, gq, NULL)
                              : dds_create_subscriber(p->participant, gq, NULL);
  dds_entity_t e = writer ? dds_create_writer(group, topic, eq, NULL)
                          : dds_create_reader(group, topic, eq, NULL);
  dds_delete_qos(eq);
  dds_delete_qos(gq);
  if (group < 0 || e < 0) {
    printf("ERROR create %s: %s\n", writer ? "writer" : "reader",
           dds_strretcode(e < 0 ? e : group));
    return 2;
  }
  dds_set_status_mask(e, writer ? DDS_PUBLICATION_MATCHED_STATUS
                                : (DDS_DATA_AVAILABLE_STATUS |
                                   DDS_SUBSCRIPTION_MATCHED_STATUS));
  dds_waitset_attach(p->waitset, e, e);
  *out = e;
  return 0;
}

static void fill_payload(dds_sequence_octet* s, uint8_t* buf, long size,
                         uint64_t seq) {
  for (long i = 0; i < size; i++)
    buf[i] = (uint8_t)((seq + (uint64_t)i) & 0xff);
  s->_buffer = buf;
  s->_length = (uint32_t)size;
  s->_maximum = (uint32_t)size;
  s->_release = false;
}

static bool payload_valid(const dds_sequence_octet* s, uint64_t seq) {
  for (uint32_t i = 0; i < s->_length; i++) {
    if (s->_buffer[i] != (uint8_t)((seq + i) & 0xff)) return false;
  }
  return true;
}

static int write_one(struct peer* p, dds_entity_t writer, int32_t id,
                     uint64_t seq, const dds_sequence_octet* echo_payload,
                     const char* echo_text, uint8_t* buf) {
  char text[64];
  snprintf(text, sizeof(text), "ringlab seq=%" PRIu64, seq);
  dds_return_t rc;
  if (p->o.type == TYPE_KEYED) {
    ringlab_interop_KeyedSample s;
    memset(&s, 0, sizeof(s));
    s.id = id;
    s.seq = seq;
    if (echo_payload)
      s.payload = *echo_payload;
    else
      fill_payload(&s.payload, buf, p->o.size, seq);
    s.text = (char*)(echo_text ? echo_text : text);
    rc = dds_write(writer, &s);
  } else {
    ringlab_interop_Message s;
    memset(&s, 0, sizeof(s));
    if (echo_payload)
      s.data = *echo_payload;
    else
      fill_payload(&s.data, buf, p->o.size, seq);
    s.text = (char*)(echo_text ? echo_text : text);
    rc = dds_write(writer, &s);
  }
  if (rc < 0) {
    printf("ERROR dds_write: %s\n", dds_strretcode(rc));
    return 2;
  }
  return 0;
}

static void print_endpoints(dds_entity_t reader, const char* kind) {
  void* samples[MAX_TAKE] = {NULL};
  dds_sample_info_t infos[MAX_TAKE];
  const dds_return_t n = dds_take(reader, samples, infos, MAX_TAKE, MAX_TAKE);
  for (dds_return_t i = 0; i < n; i++) {
    const dds_builtintopic_endpoint_t* e = samples[i];
    char guid[40];
    char part[40];
    format_guid(&e->key, guid);
    if (!infos[i].valid_data) {
      printf("LOST %s GUID=%s\n", kind, guid);
      continue;
    }
    format_guid(&e->participant_key, part);
    printf("DISCOVERED %s GUID=%s participant=%s topic=%s type=%s\n", kind,
           guid, part, e->topic_name, e->type_name);
  }
  if (n > 0) dds_return_loan(reader, samples, n);
}

static void poll_discovery(struct peer* p) {
  void* samples[MAX_TAKE] = {NULL};
  dds_sample_info_t infos[MAX_TAKE];
  dds_guid_t self;
  dds_get_guid(p->participant, &self);
  const dds_return_t n =
      dds_take(p->bt_participant, samples, infos, MAX_TAKE, MAX_TAKE);
  for (dds_return_t i = 0; i < n; i++) {
    const dds_builtintopic_participant_t* s = samples[i];
    char guid[40];
    format_guid(&s->key, guid);
    const bool is_self = memcmp(&s->key, &self, sizeof(self)) == 0;
    if (infos[i].valid_data && infos[i].instance_state == DDS_IST_ALIVE) {
      printf("DISCOVERED participant GUID=%s self=%d\n", guid, is_self ? 1 : 0);
      if (!is_self) p->participants_seen++;
    } else if (infos[i].instance_state != DDS_IST_ALIVE) {
      printf("LOST participant GUID=%s\n", guid);
    }
  }
  if (n > 0) dds_return_loan(p->bt_participant, samples, n);
  print_endpoints(p->bt_publication, "publication");
  print_endpoints(p->bt_subscription, "subscription");
}

static void print_match(dds_entity_t e, bool writer, const char* topic,
                        uint32_t* total_seen) {
  if (e <= 0) return;
  uint32_t total;
  uint32_t current;
  dds_instance_handle_t last;
  if (writer) {
    dds_publication_matched_status_t st;
    if (dds_get_publication_matched_status(e, &st) < 0) return;
    total = st.total_count;
    current = st.current_count;
    last = st.last_subscription_handle;
  } else {
    dds_subscription_matched_status_t st;
    if (dds_get_subscription_matched_status(e, &st) < 0) return;
    total = st.total_count;
    current = st.current_count;
    last = st.last_publication_handle;
  }
  if (total == *total_seen) return;
  *total_seen = total;
  char guid[40] = "unknown";
  dds_builtintopic_endpoint_t* peer =
      writer ? dds_get_matched_subscription_data(e, last)
             : dds_get_matched_publication_data(e, last);
  if (peer) {
    format_guid(&peer->key, guid);
    dds_builtintopic_free_endpoint(peer);
  }
  printf("MATCHED %s topic=%s current=%" PRIu32 " total=%" PRIu32 " peer=%s\n",
         writer ? "writer" : "reader", topic, current, total, guid);
}

static uint32_t writer_current_matches(dds_entity_t writer) {
  dds_publication_matched_status_t st;
  if (dds_get_publication_matched_status(writer, &st) < 0) return 0;
  return st.current_count;
}

static uint32_t reader_current_matches(dds_entity_t reader) {
  dds_subscription_matched_status_t st;
  if (dds_get_subscription_matched_status(reader, &st) < 0) return 0;
  return st.current_count;
}

// Takes what the data reader holds; in echo mode writes each sample back.
// Returns the largest seq received in this call (ping mode), or -1.
static int64_t take_data(struct peer* p, bool echo, uint8_t* buf, int* error) {
  void* samples[MAX_TAKE] = {NULL};
  dds_sample_info_t infos[MAX_TAKE];
  int64_t last_seq = -1;
  const dds_return_t n =
      dds_take(p->reader, samples, infos, MAX_TAKE, MAX_TAKE);
  for (dds_return_t i = 0; i < n; i++) {
    if (!infos[i].valid_data) continue;
    g_received++;
    if (p->o.type == TYPE_KEYED) {
      const ringlab_interop_KeyedSample* s = samples[i];
      const bool valid = payload_valid(&s->payload, s->seq);
      if (echo) {
        if (write_one(p, p->writer, s->id, s->seq, &s->payload, s->text, buf) !=
            0)
          *error = 2;
        printf("ECHO id=%" PRId32 " seq=%" PRIu64 "\n", s->id, s->seq);
      } else {
        printf("RECV id=%" PRId32 " seq=%" PRIu64 " size=%" PRIu32
               " valid=%d text=%s\n",
               s->id, s->seq, s->payload._length, valid ? 1 : 0,
               s->text ? s->text : "");
      }
      last_seq = (int64_t)s->seq;
    } else {
      const ringlab_interop_Message* s = samples[i];
      if (echo) {
        if (write_one(p, p->writer, 0, 0, &s->data, s->text, buf) != 0)
          *error = 2;
        printf("ECHO text=%s\n", s->text ? s->text : "");
      } else {
        printf("RECV size=%" PRIu32 " text=%s\n", s->data._length,
               s->text ? s->text : "");
      }
      unsigned long long seq = 0;
      if (s->text && sscanf(s->text, "ringlab seq=%llu", &seq) == 1)
        last_seq = (int64_t)seq;
    }
  }
  if (n > 0) dds_return_loan(p->reader, samples, n);
  return last_seq;
}

static void wait_a_little(struct peer* p, dds_duration_t max) {
  dds_waitset_wait(p->waitset, NULL, 0, max);
}

static const char* policy_name(dds_qos_policy_id_t id) {
  switch (id) {
    case DDS_DURABILITY_QOS_POLICY_ID:
      return "DURABILITY";
    case DDS_PRESENTATION_QOS_POLICY_ID:
      return "PRESENTATION";
    case DDS_DEADLINE_QOS_POLICY_ID:
      return "DEADLINE";
    case DDS_LATENCYBUDGET_QOS_POLICY_ID:
      return "LATENCY_BUDGET";
    case DDS_OWNERSHIP_QOS_POLICY_ID:
      return "OWNERSHIP";
    case DDS_LIVELINESS_QOS_POLICY_ID:
      return "LIVELINESS";
    case DDS_RELIABILITY_QOS_POLICY_ID:
      return "RELIABILITY";
    case DDS_DESTINATIONORDER_QOS_POLICY_ID:
      return "DESTINATION_ORDER";
    case DDS_DATA_REPRESENTATION_QOS_POLICY_ID:
      return "DATA_REPRESENTATION";
    default:
      return "OTHER";
  }
}

// Offered/requested incompatible QoS and deadline-missed statuses, one line
// each time a total grows.
static void print_qos_statuses(struct peer* p) {
  if (p->writer > 0) {
    dds_offered_incompatible_qos_status_t st;
    if (dds_get_offered_incompatible_qos_status(p->writer, &st) == 0 &&
        st.total_count != p->writer_incompatible_total) {
      p->writer_incompatible_total = st.total_count;
      printf("INCOMPATIBLE writer topic=%s policy=%s total=%" PRIu32 "\n",
             p->o.mode == MODE_ECHO ? p->o.echo_topic : p->o.topic,
             policy_name(st.last_policy_id), st.total_count);
    }
    dds_offered_deadline_missed_status_t dl;
    if (dds_get_offered_deadline_missed_status(p->writer, &dl) == 0 &&
        dl.total_count != p->writer_deadline_total) {
      p->writer_deadline_total = dl.total_count;
      printf("DEADLINE_MISSED writer topic=%s total=%" PRIu32 "\n", p->o.topic,
             dl.total_count);
    }
  }
  if (p->reader > 0) {
    dds_requested_incompatible_qos_status_t st;
    if (dds_get_requested_incompatible_qos_status(p->reader, &st) == 0 &&
        st.total_count != p->reader_incompatible_total) {
      p->reader_incompatible_total = st.total_count;
      printf("INCOMPATIBLE reader topic=%s policy=%s total=%" PRIu32 "\n",
             p->o.mode == MODE_PING ? p->o.echo_topic : p->o.topic,
             policy_name(st.last_policy_id), st.total_count);
    }
    dds_requested_deadline_missed_status_t dl;
    if (dds_get_requested_deadline_missed_status(p->reader, &dl) == 0 &&
        dl.total_count != p->reader_deadline_total) {
      p->reader_deadline_total = dl.total_count;
      printf("DEADLINE_MISSED reader topic=%s total=%" PRIu32 "\n", p->o.topic,
             dl.total_count);
    }
  }
}

static void poll_all(struct peer* p) {
  poll_discovery(p);
  print_qos_statuses(p);
  print_match(p->writer, true,
              p->o.mode == MODE_ECHO ? p->o.echo_topic : p->o.topic,
              &p->writer_matched_total);
  print_match(p->reader, false,
              p->o.mode == MODE_PING ? p->o.echo_topic : p->o.topic,
              &p->reader_matched_total);
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct peer p;
  memset(&p, 0, sizeof(p));
  const int arg_rc = parse_args(argc, argv, &p.o);
  if (arg_rc != 0) return arg_rc;
  const struct options* o = &p.o;
  p.desc = o->type == TYPE_KEYED ? &ringlab_interop_KeyedSample_desc
                                 : &ringlab_interop_Message_desc;

  if (!o->config_from_env) {
    static char config[2048];
    loopback_config(o, config, sizeof(config));
    const dds_entity_t domain =
        dds_create_domain((dds_domainid_t)o->domain, config);
    if (domain < 0) {
      printf("ERROR dds_create_domain: %s\n", dds_strretcode(domain));
      return 2;
    }
  }
  if (o->mode == MODE_DDSPERF_PONG) {
    const struct ddsperf_pong_options po = {.domain = (dds_domainid_t)o->domain,
                                            .reliable = o->reliable,
                                            .user_data = o->ddsperf_user_data,
                                            .duration_s = o->duration_s};
    const int pong_rc = ddsperf_pong_run(&po);
    dds_delete(DDS_CYCLONEDDS_HANDLE);
    return pong_rc;
  }
  p.participant = dds_create_participant((dds_domainid_t)o->domain, NULL, NULL);
  if (p.participant < 0) {
    printf("ERROR dds_create_participant: %s\n", dds_strretcode(p.participant));
    return 2;
  }
  p.waitset = dds_create_waitset(p.participant);
  p.bt_participant = dds_create_reader(
      p.participant, DDS_BUILTIN_TOPIC_DCPSPARTICIPANT, NULL, NULL);
  p.bt_publication = dds_create_reader(
      p.participant, DDS_BUILTIN_TOPIC_DCPSPUBLICATION, NULL, NULL);
  p.bt_subscription = dds_create_reader(
      p.participant, DDS_BUILTIN_TOPIC_DCPSSUBSCRIPTION, NULL, NULL);
  const dds_entity_t builtins[] = {p.bt_participant, p.bt_publication,
                                   p.bt_subscription};
  for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
    if (builtins[i] < 0) {
      printf("ERROR built-in reader: %s\n", dds_strretcode(builtins[i]));
      return 2;
    }
    dds_set_status_mask(builtins[i], DDS_DATA_AVAILABLE_STATUS);
    dds_waitset_attach(p.waitset, builtins[i], builtins[i]);
  }

  int rc = 0;
  switch (o->mode) {
    case MODE_PUB:
      rc = make_endpoint(&p, o->topic, true, &p.writer);
      break;
    case MODE_SUB:
      rc = make_endpoint(&p, o->topic, false, &p.reader);
      break;
    case MODE_ECHO:
      rc = make_endpoint(&p, o->topic, false, &p.reader);
      if (rc == 0) rc = make_endpoint(&p, o->echo_topic, true, &p.writer);
      break;
    case MODE_PING:
      rc = make_endpoint(&p, o->topic, true, &p.writer);
      if (rc == 0) rc = make_endpoint(&p, o->echo_topic, false, &p.reader);
      break;
    case MODE_DISCOVER:
    case MODE_DDSPERF_PONG:
      break;
  }
  if (rc != 0) {
    dds_delete(p.participant);
    return rc;
  }
  dds_guid_t self;
  char self_guid[40];
  dds_get_guid(p.participant, &self);
  format_guid(&self, self_guid);
  static const char* mode_names[] = {"pub",  "sub",      "pingpong-echo",
                                     "ping", "discover", "ddsperf-pong"};
  printf("READY participant=%s domain=%d mode=%s topic=%s type=%s\n", self_guid,
         o->domain, mode_names[o->mode], o->topic, p.desc->m_typename);

  uint8_t* buf = malloc((size_t)o->size + 1);
  const dds_time_t start = dds_time();
  const dds_time_t deadline = start + (dds_duration_t)(o->duration_s * 1e9);
  int exit_code = 1;
  int error = 0;

  if (o->mode == MODE_PUB || o->mode == MODE_PING) {
    // Wait for readers first, so a volatile sample is not written to nobody;
    // ping also waits for the echo writer, or the first answer could be
    // written before the echo side knows our reader.
    while (dds_time() < deadline &&
           (writer_current_matches(p.writer) < (uint32_t)o->wait_match ||
            (o->mode == MODE_PING &&
             reader_current_matches(p.reader) < (uint32_t)o->wait_match))) {
      wait_a_little(&p, DDS_MSECS(20));
      poll_all(&p);
    }
    if (writer_current_matches(p.writer) < (uint32_t)o->wait_match) {
      printf("ERROR only %" PRIu32 " of %ld readers matched within %.1f s\n",
             writer_current_matches(p.writer), o->wait_match, o->duration_s);
      goto done;
    }
  }

  switch (o->mode) {
    case MODE_PUB: {
      for (long i = 0; i < o->count && !error; i++) {
        const int32_t id = (int32_t)(i % o->keys);
        if (write_one(&p, p.writer, id, (uint64_t)i, NULL, NULL, buf) != 0) {
          error = 2;
          break;
        }
        g_sent++;
        if (o->type == TYPE_KEYED) {
          printf("SENT id=%" PRId32 " seq=%ld size=%ld\n", id, i, o->size);
        } else {
          printf("SENT seq=%ld size=%ld\n", i, o->size);
        }
        poll_all(&p);
        if (o->interval_ms > 0)
          dds_sleepfor(DDS_USECS((int64_t)(o->interval_ms * 1000)));
      }
      if (!error && o->reliable) {
        const dds_duration_t left = deadline - dds_time();
        const dds_return_t acked =
            dds_wait_for_acks(p.writer, left > 0 ? left : 0);
        if (acked < 0) {
          printf("ERROR dds_wait_for_acks: %s\n", dds_strretcode(acked));
          goto done;
        }
      }
      exit_code = error ? error : 0;
      break;
    }
    case MODE_SUB:
    case MODE_ECHO:
      while (dds_time() < deadline && !error) {
        wait_a_little(&p, DDS_MSECS(20));
        take_data(&p, o->mode == MODE_ECHO, buf, &error);
        poll_all(&p);
        if (o->count > 0 && g_received >= o->count) break;
      }
      exit_code = error                                       ? error
                  : (o->count == 0 || g_received >= o->count) ? 0
                                                              : 1;
      break;
    case MODE_PING: {
      // A writer matches as soon as it knows the reader, but the reader drops
      // data from a writer it has not discovered yet: with best-effort the
      // first pings could vanish. Warm-up pings (id -1, seq from
      // kWarmupSeq), one per 50 ms until one comes back, make sure the echo
      // path works both ways before the counted pings.
      const uint64_t kWarmupSeq = 1000000000ull;
      bool warm = false;
      for (uint64_t k = 0; !warm && dds_time() < deadline && !error; k++) {
        if (write_one(&p, p.writer, -1, kWarmupSeq + k, NULL, NULL, buf) != 0) {
          error = 2;
          break;
        }
        const dds_time_t sent_at = dds_time();
        while (!warm && dds_time() - sent_at < DDS_MSECS(50)) {
          wait_a_little(&p, DDS_MSECS(10));
          const int64_t seq = take_data(&p, false, buf, &error);
          if (seq >= (int64_t)kWarmupSeq) {
            printf("WARMUP seq=%" PRId64 "\n", seq);
            warm = true;
          }
        }
      }
      g_received = 0;
      // One ping at a time; a ping not answered within a second is lost.
      long answered = 0;
      for (long i = 0; i < o->count && dds_time() < deadline && !error; i++) {
        const dds_time_t sent_at = dds_time();
        if (write_one(&p, p.writer, (int32_t)(i % o->keys), (uint64_t)i, NULL,
                      NULL, buf) != 0) {
          error = 2;
          break;
        }
        g_sent++;
        bool got = false;
        while (!got && dds_time() - sent_at < DDS_SECS(1) &&
               dds_time() < deadline) {
          wait_a_little(&p, DDS_MSECS(20));
          const int64_t seq = take_data(&p, false, buf, &error);
          if (seq == (int64_t)i) {
            printf("RTT seq=%ld ns=%" PRId64 "\n", i, dds_time() - sent_at);
            got = true;
            answered++;
          }
        }
        if (!got) printf("LOST seq=%ld\n", i);
        poll_all(&p);
      }
      exit_code = error ? error : answered == o->count ? 0 : 1;
      break;
    }
    case MODE_DDSPERF_PONG:
      break;
    case MODE_DISCOVER:
      while (dds_time() < deadline) {
        wait_a_little(&p, DDS_MSECS(20));
        poll_all(&p);
        if (o->expect_participants > 0 &&
            p.participants_seen >= o->expect_participants)
          break;
      }
      exit_code = p.participants_seen >= o->expect_participants ? 0 : 1;
      break;
  }

  // Linger: keeps a transient-local history available to late joiners and
  // lets reliable repairs finish before the participant goes away.
  {
    const dds_time_t linger_end =
        dds_time() + (dds_duration_t)(o->linger_s * 1e9);
    while (dds_time() < linger_end) {
      wait_a_little(&p, DDS_MSECS(20));
      if (o->mode == MODE_ECHO) take_data(&p, true, buf, &error);
      poll_all(&p);
    }
  }

done:
  printf("DONE sent=%ld received=%ld\n", g_sent, g_received);
  free(buf);
  // Deletes the domain created above too, so the participant's departure is
  // announced (SPDP dispose) before the process exits.
  dds_delete(DDS_CYCLONEDDS_HANDLE);
  return exit_code;
}
