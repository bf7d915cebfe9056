#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "batcher.h"
#include "bf_core.h"
#include "engine.h"
#include "net.h"
#include "quant.h"
#include "sha256.h"
#include "split.h"
#include "tls.h"

/* Written by a signal handler, read by every thread: a lock-free atomic is
 * both async-signal-safe and free of data races (volatile sig_atomic_t is
 * only the former). */
static atomic_int g_stop_signal = 0;
void bf_server_request_stop(void) { atomic_store(&g_stop_signal, 1); }

void bf_server_opts_init(bf_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->port = 7070;
  o->backend = "cpu";
  o->workers = 1;
  o->max_conns = 256;
  o->max_conns_per_peer = 64;
  o->evict_idle_ms = 1000;
  o->queue_cap = 128;
  o->max_batch = 8;
  o->batch_window_ms = 2.0;
  o->idle_timeout_ms = 60000;
  o->frame_timeout_ms = 10000;
  o->simulate_load = 1.0;
}

/* A split as STATUS reports it: the idle compute times profiled by worker 0
 * (server half) and by the first worker that loaded the whole model. */
typedef struct model_rt {
  const bf_deploy_split *ds;
  float base_ms, full_base_ms; /* under server.mu */
  int full_failed;             /* under server.mu: the whole model failed to load once; not retried */
} model_rt;

/* A split's engines on one worker's context. */
typedef struct engine_rt {
  bf_engine *srv, *full; /* full: loaded on this worker's first INFER_IMAGE */
  float base_ms, full_base_ms; /* profiled on this context: the load factor's base */
} engine_rt;

/* A compute worker: its own backend context (threads / workers threads) and
 * its own engines, so workers compute in parallel without a lock and each
 * stays within its share of --threads (contract in backend.h). */
typedef struct worker {
  struct server *s;
  bf_backend *be;
  engine_rt *eng; /* [n_models] */
  float *batch_in, *logits; /* a batch's gathered inputs (max_batch > 1) and its logits */
  pthread_t th;
} worker;

typedef struct job {
  bf_batch_item item; /* first: a queue item is its job */
  model_rt *m;
  int image;
  float *input;
  bf_result res;
  int rc;
  char err[512];
  int done;
  pthread_cond_t cv;
} job;

typedef struct conn {
  int fd;
  int state; /* 0 free, 1 running, 2 finished (to join) */
  pthread_t th;
  struct server *srv;
  /* under server.mu: */
  struct in_addr peer;
  int busy;          /* between a frame's first byte and its reply */
  int evicted;       /* no longer counted; its thread is ending */
  double idle_since; /* waiting for the next frame since (bf_now_sec) */
} conn;

typedef struct server {
  bf_server_opts o;
  bf_deploy dep;
  model_rt *models;
  int n_models;
  uint32_t max_body;
  int listen_fd;
  atomic_int stop;
  double t_start;
  pthread_mutex_t mu; /* stats, conns, job completion */
  bf_batcher bq;
  worker *workers; /* [o.workers] */
  int n_workers;   /* started */
  int ctx_threads; /* compute threads of each worker's context */
  conn *conns;
  int n_slots; /* 2 x max_conns: room for evicted connections still ending */
  int n_active;
  uint32_t served;
  float ewma_service_ms, ewma_load;
} server;

static void logv(server *s, const char *fmt, ...) BF_PRINTF(2, 3);
#include <stdarg.h>
static void logv(server *s, const char *fmt, ...) {
  if (!s->o.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "bf-serve: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int stopping(server *s) { return atomic_load(&s->stop) || atomic_load(&g_stop_signal); }

/* ---------------- inference ---------------- */

static int profile(bf_engine *e, int h, int w, float *ms) {
  int oh, ow, oc;
  BF_TRY(bf_engine_plan(e, 1, h, w, &oh, &ow, &oc));
  size_t nin = (size_t)h * w * bf_engine_input_channels(e);
  float *in = calloc(nin, sizeof(float)), *out = malloc((size_t)oh * ow * oc * sizeof(float));
  int rc = (in && out) ? BF_OK : bf_error(BF_ENOMEM, "profile buffers");
  /* One warm-up run, then the best of five: the minimum is the estimator
   * least moved by other work on the machine, and the load factor divides by
   * it for as long as the server runs. */
  double best = 1e30;
  for (int i = 0; i < 6 && !rc; i++) {
    double t = bf_now_sec();
    rc = bf_engine_run(e, in, out);
    t = bf_now_sec() - t;
    if (i > 0 && t < best) best = t;
  }
  free(in);
  free(out);
  *ms = (float)(best * 1e3);
  return rc;
}

/* Runs n jobs of one model (an INFER_IMAGE job always alone) as one engine
 * call; each job gets its own row of the logits. */
static void run_batch(worker *wk, job **jobs, int n) {
  server *s = wk->s;
  model_rt *m = jobs[0]->m;
  engine_rt *er = &wk->eng[m - s->models];
  const bf_deploy_split *ds = m->ds;
  double t0 = bf_now_sec();
  int rc = BF_OK;
  bf_engine *e = er->srv;
  float base = er->base_ms;
  int h = ds->feat_h, w = ds->feat_w;
  if (jobs[0]->image) {
    if (!er->full) {
      pthread_mutex_lock(&s->mu);
      int failed = m->full_failed;
      pthread_mutex_unlock(&s->mu);
      const char *both[2] = {ds->device_path, ds->server_path};
      rc = failed ? bf_error(BF_EINVAL, "whole model failed to load before") : bf_deploy_verify(ds, 1, 0);
      if (!rc) rc = bf_engine_load(&er->full, wk->be, both, 2);
      if (!rc) rc = bf_deploy_check_engine(ds, er->full, "whole-model");
      if (!rc) rc = profile(er->full, ds->in_h, ds->in_w, &er->full_base_ms);
      pthread_mutex_lock(&s->mu);
      if (!rc && m->full_base_ms <= 0) m->full_base_ms = er->full_base_ms;
      if (rc && !failed) { /* once: the file does not heal by retrying on every request */
        m->full_failed = 1;
        fprintf(stderr, "bf-serve: split-%d: cannot load the whole model, INFER_IMAGE refused from now on: %s\n",
                ds->split_after, bf_last_error());
      }
      pthread_mutex_unlock(&s->mu);
      if (rc) {
        bf_engine_free(er->full);
        er->full = NULL;
      }
      t0 = bf_now_sec();
    }
    e = er->full, base = er->full_base_ms, h = ds->in_h, w = ds->in_w;
  }
  const float *in = jobs[0]->input;
  if (n > 1) { /* the engine takes one [n, h, w, D_r] tensor */
    size_t elems = (size_t)h * w * ds->d_r;
    for (int i = 0; i < n; i++) memcpy(wk->batch_in + i * elems, jobs[i]->input, elems * sizeof(float));
    in = wk->batch_in;
  }
  /* a batch size seen before switches to its kept plan (allocates nothing); a new size is planned
   * once, inside the arena of the largest batch planned at startup */
  if (!rc) rc = bf_engine_plan(e, n, h, w, NULL, NULL, NULL);
  if (!rc) rc = bf_engine_run(e, in, wk->logits);
  double compute = bf_now_sec() - t0;
  long after = s->o.simulate_load_after;
  pthread_mutex_lock(&s->mu);
  int loaded = s->o.simulate_load > 1.0 && (long)s->served >= after;
  pthread_mutex_unlock(&s->mu);
  if (!rc && loaded) { /* emulate a congested server: compute takes `factor` times longer */
    double extra = compute * (s->o.simulate_load - 1.0);
    struct timespec ts = {(time_t)extra, (long)((extra - (double)(time_t)extra) * 1e9)};
    nanosleep(&ts, NULL);
    compute = bf_now_sec() - t0;
  }
  if (rc && (!jobs[0]->image || er->full)) /* the details (file paths, backend messages) stay in the local log */
    fprintf(stderr, "bf-serve: split-%d: inference failed: %s\n", ds->split_after, bf_last_error());
  for (int i = 0; i < n; i++) {
    job *j = jobs[i];
    if (!rc) {
      bf_result_topk(wk->logits + (size_t)i * ds->num_classes, ds->num_classes, &j->res);
      j->res.compute_ms = (float)(compute * 1e3); /* the batch's: what this request waited for */
    } else {
      snprintf(j->err, sizeof j->err, "%s", j->image && !er->full ? "the whole model is not available on this server"
                                                                   : "inference failed (details in the server log)");
    }
    j->rc = rc;
  }
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < n; i++) {
    job *j = jobs[i];
    double service = (bf_now_sec() - j->item.t_enq) * 1e3;
    j->res.server_ms = (float)service;
    if (!rc) {
      float ratio = base > 0 ? (float)(compute * 1e3 / base) : 1.0f;
      s->ewma_load = s->served ? 0.6f * s->ewma_load + 0.4f * ratio : ratio;
      s->ewma_service_ms = s->served ? 0.6f * s->ewma_service_ms + 0.4f * (float)service : (float)service;
    }
    bf_batcher_done(&s->bq, 1); /* before the reply can reach the client: STATUS stays exact */
    j->done = 1;
    pthread_cond_signal(&j->cv);
  }
  pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *arg) {
  worker *wk = arg;
  server *s = wk->s;
  bf_batch_item *items[BF_BATCH_MAX];
  job *jobs[BF_BATCH_MAX];
  int n;
  while ((n = bf_batcher_next(&s->bq, (int)(wk - s->workers), items)) > 0) {
    for (int i = 0; i < n; i++) jobs[i] = (job *)items[i]; /* the item is the job's first member */
    run_batch(wk, jobs, n);
  }
  return NULL;
}

/* Queues a job and waits for it. Returns 0 or a BF_PERR code with j->err. */
static int submit(server *s, job *j) {
  pthread_cond_init(&j->cv, NULL);
  j->done = 0;
  j->item.key = (int)(j->m - s->models);
  j->item.batchable = !j->image; /* the whole model (cloud-only baseline) runs unbatched */
  int rc = atomic_load(&s->stop) ? BF_PERR_SHUTDOWN : bf_batcher_push(&s->bq, &j->item);
  if (rc) {
    pthread_cond_destroy(&j->cv);
    if (rc == BF_PERR_BUSY) snprintf(j->err, sizeof j->err, "request queue full (%d waiting)", s->o.queue_cap);
    else snprintf(j->err, sizeof j->err, "server is shutting down");
    return rc;
  }
  pthread_mutex_lock(&s->mu);
  while (!j->done) pthread_cond_wait(&j->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
  pthread_cond_destroy(&j->cv);
  return j->rc ? BF_PERR_INTERNAL : 0;
}

/* ---------------- connections ---------------- */

static int status_reply(server *s, int fd, const bf_frame *req) {
  bf_status st;
  memset(&st, 0, sizeof st);
  pthread_mutex_lock(&s->mu);
  st.queue_depth = (uint32_t)bf_batcher_depth(&s->bq);
  st.connections = (uint32_t)s->n_active;
  st.workers = (uint32_t)s->n_workers;
  st.served = s->served;
  st.recent_service_ms = s->ewma_service_ms;
  st.load_factor = s->served ? s->ewma_load : 1.0f;
  st.n_models = (uint32_t)(s->n_models < BF_STATUS_MAX_MODELS ? s->n_models : BF_STATUS_MAX_MODELS);
  for (uint32_t i = 0; i < st.n_models; i++) {
    memcpy(st.models[i].id, s->models[i].ds->id, BF_MODEL_ID_LEN);
    st.models[i].split_after = (uint16_t)s->models[i].ds->split_after;
    st.models[i].d_r = (uint16_t)s->models[i].ds->d_r;
    st.models[i].base_ms = s->models[i].base_ms;
    st.models[i].full_base_ms = s->models[i].full_base_ms;
  }
  pthread_mutex_unlock(&s->mu);
  uint8_t body[28 + 44 * BF_STATUS_MAX_MODELS];
  bf_status_pack(&st, body);
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_STATUS_REPLY;
  h.request_id = req->request_id;
  return bf_net_send_frame(fd, &h, body, bf_status_body_len(st.n_models), bf_now_sec() + s->o.frame_timeout_ms / 1e3,
                           0, NULL);
}

/* Checks an INFER / INFER_IMAGE header (model, shape, whole model usable,
 * queue room) before its body is read: a request that will be refused
 * costs no body buffer, float input or zstd buffer. */
static int check_request(server *s, int fd, const bf_frame *f, model_rt **out) {
  model_rt *m = NULL;
  for (int i = 0; i < s->n_models && !m; i++)
    if (!memcmp(s->models[i].ds->id, f->model_id, BF_MODEL_ID_LEN)) m = &s->models[i];
  if (!m) {
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", f->model_id[i]);
    return bf_error(BF_PERR_UNKNOWN_MODEL, "model %.16s... is not served here (export mismatch?)", hex);
  }
  int denied = bf_tls_authorize(fd, m->ds->split_after);
  if (denied) return denied;
  const bf_deploy_split *ds = m->ds;
  int image = f->type == BF_MSG_INFER_IMAGE;
  int want_h = image ? ds->in_h : ds->feat_h, want_w = image ? ds->in_w : ds->feat_w, want_c = image ? 3 : ds->d_r;
  if (f->n != 1 || f->h != want_h || f->w != want_w || f->c != want_c)
    return bf_error(BF_PERR_BAD_SHAPE, "%s shape %ux%ux%ux%u, model split-%d expects 1x%dx%dx%d", bf_msg_name(f->type),
                    f->n, f->h, f->w, f->c, ds->split_after, want_h, want_w, want_c);
  pthread_mutex_lock(&s->mu);
  int failed = image && m->full_failed;
  pthread_mutex_unlock(&s->mu);
  int full = bf_batcher_full(&s->bq);
  if (failed) return bf_error(BF_PERR_INTERNAL, "the whole model is not available on this server");
  if (full) return bf_error(BF_PERR_BUSY, "request queue full (%d waiting)", s->o.queue_cap);
  if (out) *out = m;
  return BF_OK;
}

static int header_check(void *ctx, const bf_frame *f) {
  if (f->type != BF_MSG_INFER && f->type != BF_MSG_INFER_IMAGE) return BF_OK;
  const conn *c = ctx;
  return check_request(c->srv, c->fd, f, NULL);
}

/* Handles one INFER / INFER_IMAGE. Returns 0 (reply sent) or a BF_PERR code
 * with a message (caller replies with ERROR and closes). */
static int infer(server *s, int fd, const bf_frame *f) {
  model_rt *m = NULL;
  BF_TRY(check_request(s, fd, f, &m));
  const bf_deploy_split *ds = m->ds;
  int image = f->type == BF_MSG_INFER_IMAGE;
  size_t elems = (size_t)f->h * f->w * f->c;
  job j;
  memset(&j, 0, sizeof j);
  j.m = m;
  j.image = image;
  j.input = malloc(elems * sizeof(float));
  if (!j.input) return bf_error(BF_PERR_INTERNAL, "out of memory");
  int rc = bf_features_decode_with(f, ds->rans, j.input);
  if (!rc && image)
    for (size_t i = 0; i < elems; i++) j.input[i] = (j.input[i] / 255.0f - ds->mean[i % 3]) / ds->std[i % 3];
  if (!rc) {
    rc = submit(s, &j);
    if (rc) bf_error(rc, "%s", j.err);
  }
  free(j.input);
  if (rc) return rc;
  uint8_t body[BF_RESULT_BODY];
  bf_result_pack(&j.res, body);
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_RESULT;
  h.request_id = f->request_id;
  memcpy(h.model_id, f->model_id, BF_MODEL_ID_LEN);
  /* A reply that cannot be sent (whole) leaves the stream out of step: the
   * caller ends the connection (rc < 0: no ERROR frame after it either). */
  BF_TRY(bf_net_send_frame(fd, &h, body, sizeof body, bf_now_sec() + s->o.frame_timeout_ms / 1e3, 0, NULL));
  pthread_mutex_lock(&s->mu);
  s->served++;
  if (s->o.max_requests > 0 && (long)s->served >= s->o.max_requests) atomic_store(&s->stop, 1);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* Waits for the first byte of the next frame. Meanwhile the connection is
 * idle and may be evicted (accept_one). Returns 1 if a frame starts, 0 if
 * the connection must end (after the error reply, if any). */
static int wait_next_frame(server *s, conn *c) {
  pthread_mutex_lock(&s->mu);
  c->busy = 0;
  c->idle_since = bf_now_sec();
  pthread_mutex_unlock(&s->mu);
  /* bf_net_wait, not poll(2): bytes a TLS session has already buffered count
   * as readable; an eviction's shutdown(2) still wakes it */
  int r = bf_net_wait(c->fd, 0, bf_now_sec() + s->o.idle_timeout_ms / 1e3);
  pthread_mutex_lock(&s->mu);
  int evicted = c->evicted;
  if (!evicted) c->busy = 1;
  pthread_mutex_unlock(&s->mu);
  if (evicted) {
    logv(s, "fd %d: evicted (idle while the server was full)", c->fd);
    bf_net_send_error(c->fd, 0, NULL, BF_PERR_TOO_MANY_CONN, "connection closed: idle while the server was full");
    return 0;
  }
  if (r == 0) {
    logv(s, "fd %d: idle for %d ms", c->fd, s->o.idle_timeout_ms);
    bf_net_send_error(c->fd, 0, NULL, BF_PERR_TIMEOUT, "idle timeout");
    return 0;
  }
  return 1; /* data, EOF or an error: the read says which */
}

static void *conn_main(void *arg) {
  conn *c = arg;
  server *s = c->srv;
  /* TLS is negotiated here, off the accept loop, within the frame timeout */
  int ok = bf_tls_accept(s->o.tls, c->fd, bf_now_sec() + s->o.frame_timeout_ms / 1e3) == BF_OK;
  if (!ok) logv(s, "fd %d: %s", c->fd, bf_last_error());
  while (ok && wait_next_frame(s, c)) {
    uint8_t *buf = NULL;
    size_t len;
    bf_frame f;
    int status = 0;
    int rc = bf_net_recv_frame_checked(c->fd, s->max_body, s->o.frame_timeout_ms, s->o.frame_timeout_ms, header_check,
                                       c, &buf, &len, &f, &status);
    if (rc < 0) {
      if (status == BF_NET_TIMEOUT) {
        logv(s, "fd %d: %s", c->fd, bf_last_error());
        bf_net_send_error(c->fd, 0, NULL, BF_PERR_TIMEOUT, "frame timeout");
      }
      break;
    }
    if (rc > 0) {
      logv(s, "fd %d: %s", c->fd, bf_last_error());
      bf_net_send_error(c->fd, f.request_id, f.model_id, (uint32_t)rc, bf_last_error());
      break;
    }
    if (stopping(s)) {
      bf_net_send_error(c->fd, f.request_id, f.model_id, BF_PERR_SHUTDOWN, "server is shutting down");
      free(buf);
      break;
    }
    if (f.type == BF_MSG_STATUS) {
      rc = status_reply(s, c->fd, &f);
    } else if (f.type == BF_MSG_INFER || f.type == BF_MSG_INFER_IMAGE) {
      rc = infer(s, c->fd, &f);
    } else {
      rc = bf_error(BF_PERR_BAD_FRAME, "message type %s is not a request", bf_msg_name(f.type));
    }
    if (rc) {
      logv(s, "fd %d: %s", c->fd, bf_last_error());
      /* rc < 0: a reply failed to go out whole; nothing more can be sent */
      if (rc > 0) bf_net_send_error(c->fd, f.request_id, f.model_id, (uint32_t)rc, bf_last_error());
      free(buf);
      break;
    }
    free(buf);
  }
  shutdown(c->fd, SHUT_RDWR);
  pthread_mutex_lock(&s->mu);
  c->state = 2;
  if (!c->evicted) s->n_active--;
  pthread_mutex_unlock(&s->mu);
  bf_batcher_sources(&s->bq, -1);
  return NULL;
}

static void reap(server *s, int all) {
  for (int i = 0; i < s->n_slots; i++) {
    conn *c = &s->conns[i];
    pthread_mutex_lock(&s->mu);
    int st = c->state;
    pthread_mutex_unlock(&s->mu);
    if (st == 2 || (all && st == 1)) {
      pthread_join(c->th, NULL);
      bf_net_close(c->fd);
      pthread_mutex_lock(&s->mu);
      c->state = 0;
      pthread_mutex_unlock(&s->mu);
    }
  }
}

/* Takes a slot for a connection from `peer`, under s->mu. At the per-peer
 * cap: refused. At the global cap: the connection idle the longest (at least
 * evict_idle_ms) is evicted for it, so idle sockets cannot lock others out.
 * Returns the slot or NULL with *why set. */
static conn *admit(server *s, struct in_addr peer, const char **why) {
  int same = 0;
  conn *free_slot = NULL, *victim = NULL;
  double now = bf_now_sec();
  for (int i = 0; i < s->n_slots; i++) {
    conn *c = &s->conns[i];
    if (c->state == 0 && !free_slot) free_slot = c;
    if (c->state != 1 || c->evicted) continue;
    same += c->peer.s_addr == peer.s_addr;
    if (!c->busy && now - c->idle_since >= s->o.evict_idle_ms / 1e3 && (!victim || c->idle_since < victim->idle_since))
      victim = c;
  }
  if (s->o.max_conns_per_peer > 0 && same >= s->o.max_conns_per_peer) {
    *why = "too many connections from your address";
    return NULL;
  }
  if (!free_slot || (s->n_active >= s->o.max_conns && (s->o.evict_idle_ms <= 0 || !victim))) {
    *why = "too many connections";
    return NULL;
  }
  if (s->n_active >= s->o.max_conns) {
    victim->evicted = 1;
    s->n_active--;
    shutdown(victim->fd, SHUT_RD); /* wakes its thread, which still sends the ERROR */
  }
  free_slot->state = 1;
  free_slot->peer = peer;
  free_slot->busy = 0;
  free_slot->evicted = 0;
  free_slot->idle_since = now;
  s->n_active++;
  return free_slot;
}

static void accept_one(server *s) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  memset(&sa, 0, sizeof sa);
  int fd = accept(s->listen_fd, (struct sockaddr *)&sa, &sl);
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      /* The pending connection stays in the backlog and poll keeps reporting
       * it: without a pause the listener would spin until a file is freed. */
      static double last_log;
      if (bf_now_sec() - last_log > 10) {
        fprintf(stderr, "bf-serve: accept: %s; retrying every 100 ms\n", strerror(errno));
        last_log = bf_now_sec();
      }
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    return;
  }
  const char *why = NULL;
  pthread_mutex_lock(&s->mu);
  conn *slot = admit(s, sa.sin_addr, &why);
  if (slot) {
    slot->fd = fd;
    slot->srv = s;
  }
  pthread_mutex_unlock(&s->mu);
  if (!slot) {
    logv(s, "refused a connection: %s", why);
    bf_net_send_error(fd, 0, NULL, BF_PERR_TOO_MANY_CONN, why);
    close(fd);
    return;
  }
  bf_batcher_sources(&s->bq, 1);
  if (pthread_create(&slot->th, NULL, conn_main, slot)) {
    bf_batcher_sources(&s->bq, -1);
    bf_net_send_error(fd, 0, NULL, BF_PERR_INTERNAL, "cannot start a connection thread");
    close(fd);
    pthread_mutex_lock(&s->mu);
    slot->state = 0;
    s->n_active--;
    pthread_mutex_unlock(&s->mu);
  }
}

int bf_server_run(const bf_server_opts *opts) {
  server *s = bf_calloc(1, sizeof *s, "server");
  if (!s) return BF_ENOMEM;
  s->o = *opts;
  if (s->o.workers < 1) s->o.workers = 1;
  if (s->o.max_conns < 1) s->o.max_conns = 1;
  if (s->o.queue_cap < 1) s->o.queue_cap = 1;
  if (s->o.batch_window_ms == 0) s->o.max_batch = 1; /* a zero window turns batching off */
  s->listen_fd = -1;
  pthread_mutex_init(&s->mu, NULL);
  /* --threads bounds all compute: each of the W workers gets a context of
   * threads / W threads. */
  int total = s->o.threads;
  if (total <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    total = n > 0 ? (int)n : 1;
  }
  s->ctx_threads = total / s->o.workers;
  int rc = s->ctx_threads >= 1 ? BF_OK
                               : bf_error(BF_EINVAL, "--workers %d needs at least %d compute threads, --threads is %d",
                                          s->o.workers, s->o.workers, total);
  if (!rc) rc = bf_batcher_init(&s->bq, s->o.queue_cap, s->o.max_batch, s->o.batch_window_ms, s->o.workers);
  if (!rc) rc = bf_deploy_open(&s->dep, s->o.deploy);
  if (!rc) {
    s->n_models = s->dep.n;
    s->models = bf_calloc((size_t)s->n_models, sizeof *s->models, "models");
    s->n_slots = 2 * s->o.max_conns;
    s->conns = bf_calloc((size_t)s->n_slots, sizeof *s->conns, "connections");
    s->workers = bf_calloc((size_t)s->o.workers, sizeof *s->workers, "workers");
    if (!s->models || !s->conns || !s->workers) rc = BF_ENOMEM;
  }
  for (int k = 0; k < s->o.workers && !rc; k++) {
    worker *wk = &s->workers[k];
    wk->s = s;
    wk->eng = bf_calloc((size_t)s->n_models, sizeof *wk->eng, "engines");
    rc = wk->eng ? bf_backend_create(&wk->be, s->o.backend, s->ctx_threads) : BF_ENOMEM;
  }
  uint64_t max_body = 1024;
  for (int i = 0; i < s->n_models && !rc; i++) {
    model_rt *m = &s->models[i];
    m->ds = &s->dep.splits[i];
    rc = bf_deploy_verify(m->ds, 0, 1);
    /* Each worker's engine is profiled on that worker's context, one worker
     * at a time (idle machine): the base of its load factor. */
    for (int k = 0; k < s->o.workers && !rc; k++) {
      engine_rt *er = &s->workers[k].eng[i];
      rc = bf_engine_load(&er->srv, s->workers[k].be, (const char *[]){m->ds->server_path}, 1);
      if (!rc) rc = bf_deploy_check_engine(m->ds, er->srv, "server-half");
      /* the largest batch first: its arena then holds every smaller one */
      if (!rc) rc = bf_engine_plan(er->srv, s->o.max_batch, m->ds->feat_h, m->ds->feat_w, NULL, NULL, NULL);
      if (!rc) rc = profile(er->srv, m->ds->feat_h, m->ds->feat_w, &er->base_ms);
    }
    if (rc) {
      bf_error_wrap(rc, "split-%d", m->ds->split_after);
      break;
    }
    m->base_ms = s->workers[0].eng[i].base_ms;
    uint64_t feat = (uint64_t)m->ds->feat_h * m->ds->feat_w * m->ds->d_r;
    uint64_t need = 8ull * m->ds->d_r + bf_frame_zstd_bound(feat * 4);
    uint64_t img = bf_frame_zstd_bound((uint64_t)m->ds->in_h * m->ds->in_w * 3);
    if (need > max_body) max_body = need;
    if (img > max_body) max_body = img;
    fprintf(stderr, "bf-serve: split-%d (D_r %d) model %.16s: server half %s, %.2f ms idle\n", m->ds->split_after,
            m->ds->d_r, m->ds->id_hex, bf_engine_describe(s->workers[0].eng[i].srv), m->base_ms);
  }
  s->max_body = (uint32_t)(max_body + 64);
  size_t max_in = 1, max_classes = 1;
  for (int i = 0; i < s->n_models; i++) {
    const bf_deploy_split *ds = &s->dep.splits[i];
    size_t in = (size_t)ds->feat_h * ds->feat_w * ds->d_r;
    if (in > max_in) max_in = in;
    if ((size_t)ds->num_classes > max_classes) max_classes = (size_t)ds->num_classes;
  }
  for (int k = 0; k < s->o.workers && !rc; k++) {
    worker *wk = &s->workers[k];
    wk->logits = bf_malloc((size_t)s->o.max_batch * max_classes * sizeof(float), "logits");
    if (s->o.max_batch > 1) wk->batch_in = bf_malloc((size_t)s->o.max_batch * max_in * sizeof(float), "batch");
    if (!wk->logits || (s->o.max_batch > 1 && !wk->batch_in)) rc = BF_ENOMEM;
  }
  int port = 0;
  if (!rc) rc = bf_net_listen(s->o.host, s->o.port, 128, &s->listen_fd, &port);
  if (!rc && s->o.port_file) {
    char b[32];
    int n = snprintf(b, sizeof b, "%d\n", port);
    rc = bf_write_file_atomic(s->o.port_file, b, (size_t)n);
  }
  for (int i = 0; i < s->o.workers && !rc; i++) {
    if (pthread_create(&s->workers[i].th, NULL, worker_main, &s->workers[i]))
      rc = bf_error(BF_EIO, "cannot start worker threads");
    else s->n_workers++;
  }
  if (!rc) {
    fprintf(stderr, "bf-serve: %d workers x %d compute threads (%s)\n", s->n_workers, s->ctx_threads, s->o.backend);
    if (s->o.max_batch > 1)
      fprintf(stderr, "bf-serve: batching INFER requests of one split: up to %d within %g ms\n", s->o.max_batch,
              s->o.batch_window_ms);
    else
      fprintf(stderr, "bf-serve: batching off\n");
    printf("bf-serve: listening on %s:%d (%d models, max frame body %u bytes, %d workers)\n", s->o.host, port,
           s->n_models, s->max_body, s->n_workers);
    fflush(stdout);
    s->t_start = bf_now_sec();
    while (!stopping(s)) {
      if (s->o.exit_after_sec > 0 && bf_now_sec() - s->t_start > s->o.exit_after_sec) break;
      struct pollfd p = {s->listen_fd, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) accept_one(s);
      reap(s, 0);
    }
    atomic_store(&s->stop, 1);
    pthread_mutex_lock(&s->mu);
    uint32_t served = s->served;
    pthread_mutex_unlock(&s->mu);
    fprintf(stderr, "bf-serve: stopping (%u requests served)\n", served);
  }
  /* shutdown: no new connections, wake readers, let queued jobs finish */
  if (s->listen_fd >= 0) close(s->listen_fd);
  if (s->conns) {
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_slots; i++)
      if (s->conns[i].state == 1) shutdown(s->conns[i].fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    reap(s, 1);
  }
  atomic_store(&s->stop, 1);
  if (s->bq.forming) bf_batcher_stop(&s->bq);
  for (int i = 0; i < s->n_workers; i++) pthread_join(s->workers[i].th, NULL);
  if (s->n_workers) { /* after the workers: the queued requests' batches count too */
    char sum[512];
    bf_batcher_summary(&s->bq, sum, sizeof sum);
    fprintf(stderr, "bf-serve: batches: %s\n", sum);
  }
  for (int k = 0; s->workers && k < s->o.workers; k++) {
    worker *wk = &s->workers[k];
    for (int i = 0; wk->eng && i < s->n_models; i++) {
      bf_engine_free(wk->eng[i].srv);
      bf_engine_free(wk->eng[i].full);
    }
    free(wk->eng);
    free(wk->batch_in);
    free(wk->logits);
    if (wk->be) bf_backend_destroy(wk->be);
  }
  free(s->models);
  free(s->conns);
  free(s->workers);
  bf_deploy_close(&s->dep);
  bf_batcher_destroy(&s->bq);
  pthread_mutex_destroy(&s->mu);
  free(s);
  return rc;
}
