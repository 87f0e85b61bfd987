// See ddsperf_pong.h. Every step names the DDSPERF.md section it follows.
#include "ddsperf_pong.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ddsperf_types.h"

#define MAX_PEERS 64

// DDSPERF.md "Partitions": a GUID as 4 groups of 8 lowercase hex digits
// joined by '_'.
static void partition_name(const dds_guid_t* g, char out[40]) {
  snprintf(
      out, 40,
      "%02x%02x%02x%02x_%02x%02x%02x%02x_%02x%02x%02x%02x_%02x%02x%02x%02x",
      g->v[0], g->v[1], g->v[2], g->v[3], g->v[4], g->v[5], g->v[6], g->v[7],
      g->v[8], g->v[9], g->v[10], g->v[11], g->v[12], g->v[13], g->v[14],
      g->v[15]);
}

struct pong_writer {
  dds_guid_t participant;
  dds_entity_t writer;
};

static struct pong_writer g_writers[MAX_PEERS];
static int g_nwriters = 0;

static dds_qos_t* keep_last_1(void) {
  dds_qos_t* q = dds_create_qos();
  dds_qset_history(q, DDS_HISTORY_KEEP_LAST, 1);
  return q;
}

// DDSPERF.md "Endpoints": one pong writer per pinging participant, in the
// partition named after that participant's GUID.
static dds_entity_t pong_writer_for(dds_entity_t pp, dds_entity_t topic,
                                    const dds_guid_t* peer) {
  for (int i = 0; i < g_nwriters; i++) {
    if (memcmp(&g_writers[i].participant, peer, sizeof(*peer)) == 0)
      return g_writers[i].writer;
  }
  if (g_nwriters == MAX_PEERS) return 0;
  char part[40];
  partition_name(peer, part);
  dds_qos_t* gq = dds_create_qos();
  dds_qset_partition1(gq, part);
  const dds_entity_t pub = dds_create_publisher(pp, gq, NULL);
  dds_delete_qos(gq);
  dds_qos_t* q = keep_last_1();
  const dds_entity_t wr = dds_create_writer(pub, topic, q, NULL);
  dds_delete_qos(q);
  if (pub < 0 || wr < 0) return 0;
  g_writers[g_nwriters].participant = *peer;
  g_writers[g_nwriters].writer = wr;
  g_nwriters++;
  printf("PONG_WRITER partition=%s\n", part);
  return wr;
}

int ddsperf_pong_run(const struct ddsperf_pong_options* o) {
  // DDSPERF.md "Participant": USER_DATA "DDSPerf:<has data
  // reader>:<pid>:<host>".
  dds_qos_t* pq = dds_create_qos();
  if (o->user_data) {
    char udata[256];
    char host[128] = "?";
    gethostname(host, sizeof(host) - 1);
    snprintf(udata, sizeof(udata), "DDSPerf:0:%ld:%s", (long)getpid(), host);
    dds_qset_userdata(pq, udata, strlen(udata));
  }
  const dds_entity_t pp = dds_create_participant(o->domain, pq, NULL);
  dds_delete_qos(pq);
  if (pp < 0) {
    printf("ERROR dds_create_participant: %s\n", dds_strretcode(pp));
    return 2;
  }
  // DDSPERF.md "Topics": DDSPerf{R|U}{Ping|Pong}KS, type KeyedSeq, RELIABLE
  // (max blocking 10 s) or BEST_EFFORT.
  const char rel = o->reliable ? 'R' : 'U';
  char ping_name[32];
  char pong_name[32];
  snprintf(ping_name, sizeof(ping_name), "DDSPerf%cPingKS", rel);
  snprintf(pong_name, sizeof(pong_name), "DDSPerf%cPongKS", rel);
  dds_qos_t* tq = dds_create_qos();
  dds_qset_reliability(
      tq, o->reliable ? DDS_RELIABILITY_RELIABLE : DDS_RELIABILITY_BEST_EFFORT,
      DDS_SECS(10));
  const dds_entity_t tp_ping =
      dds_create_topic(pp, &KeyedSeq_desc, ping_name, tq, NULL);
  const dds_entity_t tp_pong =
      dds_create_topic(pp, &KeyedSeq_desc, pong_name, tq, NULL);
  dds_delete_qos(tq);
  if (tp_ping < 0 || tp_pong < 0) {
    printf("ERROR dds_create_topic\n");
    return 2;
  }
  // DDSPERF.md "Endpoints": ping reader and ping writer in the default
  // partition (ddsperf counts a participant as matched only when all four
  // ping/pong endpoints matched), pong reader in our own GUID's partition.
  dds_qos_t* q = keep_last_1();
  const dds_entity_t rd_ping = dds_create_reader(pp, tp_ping, q, NULL);
  const dds_entity_t wr_ping = dds_create_writer(pp, tp_ping, q, NULL);
  dds_guid_t self;
  dds_get_guid(pp, &self);
  char own_part[40];
  partition_name(&self, own_part);
  dds_qos_t* sq = dds_create_qos();
  dds_qset_partition1(sq, own_part);
  const dds_entity_t sub_pong = dds_create_subscriber(pp, sq, NULL);
  dds_delete_qos(sq);
  const dds_entity_t rd_pong = dds_create_reader(sub_pong, tp_pong, q, NULL);
  dds_delete_qos(q);
  if (rd_ping < 0 || wr_ping < 0 || rd_pong < 0) {
    printf("ERROR creating ping/pong endpoints\n");
    return 2;
  }
  char self_str[40];
  partition_name(&self, self_str);
  printf(
      "READY participant=%s domain=%d mode=ddsperf-pong topic=%s "
      "type=KeyedSeq\n",
      self_str, (int)o->domain, ping_name);

  // DDSPERF.md "Matching": pong writers are made as soon as a ddsperf
  // participant is discovered, not on its first ping: `ddsperf ping
  // -Qminmatch` sends nothing until our pong writer matched its pong reader.
  const dds_entity_t rd_pp =
      dds_create_reader(pp, DDS_BUILTIN_TOPIC_DCPSPARTICIPANT, NULL, NULL);
  const dds_entity_t ws = dds_create_waitset(pp);
  dds_set_status_mask(rd_pp, DDS_DATA_AVAILABLE_STATUS);
  dds_waitset_attach(ws, rd_pp, rd_pp);
  dds_set_status_mask(rd_ping, DDS_DATA_AVAILABLE_STATUS);
  dds_waitset_attach(ws, rd_ping, rd_ping);
  long answered = 0;
  const dds_time_t deadline =
      dds_time() + (dds_duration_t)(o->duration_s * 1e9);
  while (dds_time() < deadline) {
    dds_waitset_wait(ws, NULL, 0, DDS_MSECS(100));
    {
      void* ps[8] = {NULL};
      dds_sample_info_t pi[8];
      const dds_return_t np = dds_take(rd_pp, ps, pi, 8, 8);
      for (dds_return_t i = 0; i < np; i++) {
        const dds_builtintopic_participant_t* part = ps[i];
        if (!pi[i].valid_data || pi[i].instance_state != DDS_IST_ALIVE)
          continue;
        if (memcmp(&part->key, &self, sizeof(self)) == 0) continue;
        void* ud = NULL;
        size_t ud_size = 0;
        if (dds_qget_userdata(part->qos, &ud, &ud_size) && ud_size >= 8 &&
            memcmp(ud, "DDSPerf:", 8) == 0) {
          pong_writer_for(pp, tp_pong, &part->key);
        }
        dds_free(ud);
      }
      if (np > 0) dds_return_loan(rd_pp, ps, np);
    }
    void* samples[16] = {NULL};
    dds_sample_info_t infos[16];
    const dds_return_t n = dds_take(rd_ping, samples, infos, 16, 16);
    for (dds_return_t i = 0; i < n; i++) {
      if (!infos[i].valid_data) continue;
      dds_builtintopic_endpoint_t* pub = dds_get_matched_publication_data(
          rd_ping, infos[i].publication_handle);
      if (pub == NULL) continue;
      const dds_entity_t wr =
          pong_writer_for(pp, tp_pong, &pub->participant_key);
      dds_builtintopic_free_endpoint(pub);
      if (wr == 0) continue;
      // DDSPERF.md "Timestamps": the pong carries the ping's source
      // timestamp with bit 0 set; the pinger's RTT is now - that stamp.
      const KeyedSeq* s = samples[i];
      const dds_return_t rc =
          dds_write_ts(wr, s, infos[i].source_timestamp | 1);
      if (rc < 0 && rc != DDS_RETCODE_TIMEOUT) {
        printf("ERROR dds_write_ts: %s\n", dds_strretcode(rc));
        return 2;
      }
      dds_write_flush(wr);
      answered++;
      if (answered <= 3 || answered % 10000 == 0) {
        printf("PONG seq=%" PRIu32 " keyval=%" PRIu32 " size=%" PRIu32
               " answered=%ld\n",
               s->seq, s->keyval, s->baggage._length + 12, answered);
      }
    }
    if (n > 0) dds_return_loan(rd_ping, samples, n);
  }
  printf("DONE sent=%ld received=%ld\n", answered, answered);
  return 0;
}
