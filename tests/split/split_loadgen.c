/* Closed-loop load for bf-serve: N concurrent clients, each on its own
 * connection, send R INFER requests one after another (as bf-client does:
 * features quantised and coded as the manifest says) and wait for each reply.
 * Every request carries distinct features, numbered id = client * R + r and
 * made from (seed, id) alone, so two runs with different client counts send
 * the same inputs under the same ids.
 *   split_loadgen DEPLOY SPLIT HOST:PORT CLIENTS REQUESTS SEED [RESULTS] [--warmup] [--lat FILE]
 * Prints one line: LOAD clients= requests= wall_s= throughput_rps= p50_ms= p99_ms= mean_ms=
 * (latency = send to reply, per request; wall = all clients' first send to the
 * last reply). RESULTS gets "id class:logit,..." per request (top-5).
 * --warmup: each client first sends one unrecorded request (connections,
 * server threads and caches warm) before all start together.
 * --lat FILE: every request's latency in ms, one a line (to pool several runs). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "client.h"
#include "quant.h"
#include "split.h"

typedef struct lg {
  const bf_deploy_split *ds;
  const char *server;
  int clients, requests, warmup;
  uint64_t seed;
  pthread_barrier_t start;
  double t_start;
  bf_result *res; /* [clients * requests] */
  double *lat_ms;
  int failed;
} lg;

typedef struct client_arg {
  lg *g;
  int c;
} client_arg;

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Nonnegative, ReLU-like features with a per-id scale and sparsity. */
static void features(const lg *g, uint64_t id, float *x, size_t n) {
  uint64_t st = mix(g->seed * 1000003u + id);
  float scale = 0.5f + (float)(mix(st) % 1000) / 500.0f;
  for (size_t i = 0; i < n; i++) {
    st = mix(st);
    float u = (float)(st >> 40) / (float)(1 << 24);
    x[i] = u > 0.3f ? (u - 0.3f) * scale : 0.0f;
  }
}

static int request(lg *g, bf_conn *conn, uint64_t id, float *x, bf_result *res, double *ms) {
  const bf_deploy_split *ds = g->ds;
  features(g, id, x, (size_t)ds->feat_h * ds->feat_w * ds->d_r);
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_INFER;
  memcpy(h.model_id, ds->id, BF_MODEL_ID_LEN);
  uint8_t *body;
  size_t blen;
  BF_TRY(bf_features_encode(x, ds->feat_h, ds->feat_w, ds->d_r, ds->qscheme, ds->codec, ds->zstd_level, &h, &body,
                            &blen));
  double t = bf_now_sec();
  int rc = bf_conn_infer(conn, &h, body, blen, (uint32_t)ds->num_classes, res, NULL, NULL);
  *ms = (bf_now_sec() - t) * 1e3;
  free(body);
  return rc;
}

static void *client_main(void *arg) {
  client_arg *a = arg;
  lg *g = a->g;
  const bf_deploy_split *ds = g->ds;
  bf_conn conn;
  float *x = malloc((size_t)ds->feat_h * ds->feat_w * ds->d_r * sizeof(float));
  int rc = x ? bf_conn_open(&conn, g->server, 60000, 0) : BF_ENOMEM;
  int open = !rc;
  if (!rc && g->warmup) {
    bf_result r;
    double ms;
    rc = request(g, &conn, 1000000000ull + (uint64_t)a->c, x, &r, &ms);
  }
  if (rc) fprintf(stderr, "split_loadgen: client %d: %s\n", a->c, bf_last_error());
  pthread_barrier_wait(&g->start); /* every thread reaches it, also after a failure */
  if (!rc && a->c == 0) g->t_start = bf_now_sec();
  for (int r = 0; r < g->requests && !rc; r++) {
    size_t id = (size_t)a->c * g->requests + r;
    rc = request(g, &conn, id, x, &g->res[id], &g->lat_ms[id]);
    if (rc) fprintf(stderr, "split_loadgen: client %d request %zu: %s\n", a->c, id, bf_last_error());
  }
  if (rc) __atomic_store_n(&g->failed, 1, __ATOMIC_SEQ_CST);
  if (open) bf_conn_close(&conn);
  free(x);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int warmup = 0, na = 0;
  const char *pos[7] = {0}, *lat_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--warmup")) warmup = 1;
    else if (!strcmp(argv[i], "--lat") && i + 1 < argc) lat_path = argv[++i];
    else if (na < 7) pos[na++] = argv[i];
    else na++;
  }
  if (na < 6 || na > 7) {
    fprintf(stderr,
            "usage: split_loadgen DEPLOY SPLIT HOST:PORT CLIENTS REQUESTS SEED [RESULTS] [--warmup] [--lat FILE]\n");
    return 2;
  }
  lg g;
  memset(&g, 0, sizeof g);
  int split = atoi(pos[1]);
  g.server = pos[2];
  g.clients = atoi(pos[3]);
  g.requests = atoi(pos[4]);
  g.seed = strtoull(pos[5], NULL, 10);
  g.warmup = warmup;
  if (g.clients < 1 || g.clients > 1024 || g.requests < 1 || g.requests > 100000) {
    fprintf(stderr, "split_loadgen: CLIENTS 1..1024, REQUESTS 1..100000\n");
    return 2;
  }
  bf_deploy dep;
  if (bf_deploy_open(&dep, pos[0])) {
    fprintf(stderr, "split_loadgen: %s\n", bf_last_error());
    return 1;
  }
  g.ds = bf_deploy_find(&dep, split);
  if (!g.ds) {
    fprintf(stderr, "split_loadgen: %s has no split-%d\n", pos[0], split);
    bf_deploy_close(&dep);
    return 1;
  }
  size_t total = (size_t)g.clients * g.requests;
  g.res = calloc(total, sizeof *g.res);
  g.lat_ms = calloc(total, sizeof *g.lat_ms);
  pthread_t *th = calloc((size_t)g.clients, sizeof *th);
  client_arg *args = calloc((size_t)g.clients, sizeof *args);
  if (!g.res || !g.lat_ms || !th || !args || pthread_barrier_init(&g.start, NULL, (unsigned)g.clients)) {
    fprintf(stderr, "split_loadgen: out of memory\n");
    return 1;
  }
  int started = 0;
  for (int c = 0; c < g.clients; c++) {
    args[c].g = &g, args[c].c = c;
    if (pthread_create(&th[c], NULL, client_main, &args[c])) {
      /* the barrier counts every client: without all of them nobody starts */
      fprintf(stderr, "split_loadgen: cannot start client thread %d\n", c);
      return 1;
    }
    started++;
  }
  for (int c = 0; c < started; c++) pthread_join(th[c], NULL);
  double wall = bf_now_sec() - g.t_start;
  int rc = g.failed;
  if (!rc) {
    double *lat = malloc(total * sizeof *lat), sum = 0;
    memcpy(lat, g.lat_ms, total * sizeof *lat);
    qsort(lat, total, sizeof *lat, cmp_double);
    for (size_t i = 0; i < total; i++) sum += lat[i];
    /* nearest rank */
    size_t i50 = (total * 50 + 99) / 100, i99 = (total * 99 + 99) / 100;
    printf("LOAD clients=%d requests=%zu wall_s=%.3f throughput_rps=%.2f p50_ms=%.2f p99_ms=%.2f mean_ms=%.2f\n",
           g.clients, total, wall, (double)total / wall, lat[i50 ? i50 - 1 : 0], lat[i99 ? i99 - 1 : 0],
           sum / (double)total);
    free(lat);
    if (lat_path) {
      FILE *f = fopen(lat_path, "w");
      for (size_t i = 0; f && i < total; i++) fprintf(f, "%.3f\n", g.lat_ms[i]);
      if (!f || fclose(f)) {
        fprintf(stderr, "split_loadgen: cannot write %s\n", lat_path);
        rc = 1;
      }
    }
    if (na == 7) {
      FILE *f = fopen(pos[6], "w");
      if (!f) {
        fprintf(stderr, "split_loadgen: cannot write %s\n", pos[6]);
        rc = 1;
      }
      for (size_t i = 0; f && i < total; i++) {
        fprintf(f, "%zu ", i);
        for (uint32_t k = 0; k < g.res[i].k; k++)
          fprintf(f, "%s%u:%.9g", k ? "," : "", g.res[i].cls[k], (double)g.res[i].logit[k]);
        fputc('\n', f);
      }
      if (f && fclose(f)) {
        fprintf(stderr, "split_loadgen: cannot write %s\n", pos[6]);
        rc = 1;
      }
    }
  }
  pthread_barrier_destroy(&g.start);
  free(g.res);
  free(g.lat_ms);
  free(th);
  free(args);
  bf_deploy_close(&dep);
  return rc ? 1 : 0;
}
