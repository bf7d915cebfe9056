/* Backend contexts run at the same time (the contract in backend.h).
 *
 * Two jobs, each a few ResNet-50 (+ butterfly) training steps on its own
 * context, seed and input, are run first one after the other (each context
 * created, used and destroyed in the main thread), then both at once in two
 * threads on contexts that the main thread created beforehand, as bf-serve
 * does. The logits, losses, parameters and BN statistics of the concurrent
 * runs must be bitwise equal to the sequential ones.
 *
 * The two contexts use different thread counts (1 and 3; the test runner's
 * OMP_NUM_THREADS is 2) because batch-norm partial sums and OpenBLAS's
 * partitioning depend on the thread count: a context that ran with the
 * thread count of the calling thread or of another context, instead of its
 * own, gives different bits; so does scratch shared between contexts.
 *
 * Usage: test_contexts [backend]   (default "cpu"). Exits 1 on a mismatch. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bf_core.h"
#include "model.h"

#define N 4
#define HW 32
#define CLASSES 10
#define STEPS 2

typedef struct job {
  /* inputs */
  int threads;
  uint64_t seed;
  bf_backend *be; /* concurrent runs: created by the main thread */
  /* outputs (host) */
  int rc;
  char err[512];
  float loss[STEPS];
  float *logits; /* [N, CLASSES] of the first forward */
  float *params, *stats;
  size_t n_params, n_stats;
} job;

static const char *g_backend = "cpu";
static pthread_barrier_t g_start;
static int g_use_barrier;

static int run(job *j) {
  bf_model *m = NULL;
  bf_model_config cfg = {CLASSES, 3, 16, 0};
  float *x = malloc((size_t)N * HW * HW * 3 * sizeof(float));
  int32_t y[N];
  bf_backend *be = j->be;
  int rc = x ? BF_OK : bf_error(BF_ENOMEM, "input");
  if (!rc) rc = bf_model_create(&m, be, &cfg);
  if (!rc) rc = bf_model_init(m, j->seed);
  if (!rc) rc = bf_model_plan(m, N, HW, HW);
  if (!rc) {
    bf_rng r;
    bf_rng_seed(&r, j->seed * 7919 + 1);
    for (size_t i = 0; i < (size_t)N * HW * HW * 3; i++) x[i] = (float)bf_rng_normal(&r);
    for (int i = 0; i < N; i++) y[i] = (int32_t)bf_rng_below(&r, CLASSES);
    rc = be->upload(be, bf_model_input(m), x, (size_t)N * HW * HW * 3 * sizeof(float));
  }
  if (!rc) rc = be->upload(be, bf_model_labels(m), y, sizeof y);
  if (g_use_barrier) pthread_barrier_wait(&g_start);
  bf_sgd_params hp = {0.05f, 0.9f, 1e-4f, 0};
  for (int s = 0; s < STEPS && !rc; s++) {
    rc = bf_model_forward(m, 1);
    if (!rc && s == 0) {
      j->logits = malloc((size_t)N * CLASSES * sizeof(float));
      rc = j->logits ? be->download(be, j->logits, bf_model_logits(m), (size_t)N * CLASSES * sizeof(float))
                     : bf_error(BF_ENOMEM, "logits");
    }
    if (!rc) rc = bf_model_loss(m, 0.1f, &j->loss[s]);
    if (!rc) rc = bf_model_backward(m);
    if (!rc) rc = bf_model_sgd(m, &hp, 1);
  }
  if (!rc) {
    j->n_params = bf_model_params_len(m);
    j->n_stats = bf_model_stats_len(m);
    j->params = malloc(j->n_params * sizeof(float));
    j->stats = malloc(j->n_stats * sizeof(float));
    if (!j->params || !j->stats) rc = bf_error(BF_ENOMEM, "results");
  }
  if (!rc) rc = be->download(be, j->params, bf_model_params(m), j->n_params * sizeof(float));
  if (!rc) rc = be->download(be, j->stats, bf_model_stats(m), j->n_stats * sizeof(float));
  if (!rc) rc = be->sync(be);
  if (rc) snprintf(j->err, sizeof j->err, "%s", bf_last_error());
  bf_model_free(m);
  free(x);
  j->rc = rc;
  return rc;
}

static void *thread_main(void *arg) {
  run(arg);
  return NULL;
}

static void release(job *j) {
  free(j->logits);
  free(j->params);
  free(j->stats);
}

/* 0 if equal; prints the first difference otherwise. */
static int same(const char *what, const job *a, const job *b) {
  struct {
    const char *name;
    const void *x, *y;
    size_t bytes;
  } parts[] = {{"logits", a->logits, b->logits, (size_t)N * CLASSES * sizeof(float)},
               {"losses", a->loss, b->loss, sizeof a->loss},
               {"parameters", a->params, b->params, a->n_params * sizeof(float)},
               {"BN statistics", a->stats, b->stats, a->n_stats * sizeof(float)}};
  int bad = 0;
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    if (memcmp(parts[i].x, parts[i].y, parts[i].bytes)) {
      const float *x = parts[i].x, *y = parts[i].y;
      size_t k = 0;
      while (k < parts[i].bytes / sizeof(float) && !memcmp(&x[k], &y[k], sizeof(float))) k++;
      fprintf(stderr, "test_contexts: %s: %s differ from the sequential run (first at %zu: %.9g vs %.9g)\n", what,
              parts[i].name, k, (double)x[k], (double)y[k]);
      bad = 1;
    }
  }
  return bad;
}

int main(int argc, char **argv) {
  if (argc > 1) g_backend = argv[1];
  int count = 0;
  if (bf_backend_device_count(g_backend, &count) || count < 1) {
    fprintf(stderr, "test_contexts: backend %s unavailable: %s\n", g_backend, bf_last_error());
    return 77;
  }
  const int threads[2] = {1, 3};
  const uint64_t seeds[2] = {11, 22};
  job seq[2], con[2];
  memset(seq, 0, sizeof seq);
  memset(con, 0, sizeof con);
  int fail = 0;

  /* one after the other, each context alone in the process */
  for (int i = 0; i < 2 && !fail; i++) {
    seq[i].threads = threads[i];
    seq[i].seed = seeds[i];
    if (bf_backend_create(&seq[i].be, g_backend, threads[i])) {
      fprintf(stderr, "test_contexts: %s\n", bf_last_error());
      return 1;
    }
    if (run(&seq[i])) {
      fprintf(stderr, "test_contexts: sequential job %d: %s\n", i, seq[i].err);
      fail = 1;
    }
    bf_backend_destroy(seq[i].be);
    seq[i].be = NULL;
  }
  if (fail) return 1;
  printf("sequential: losses %.6f %.6f (threads %d) | %.6f %.6f (threads %d)\n", (double)seq[0].loss[0],
         (double)seq[0].loss[1], threads[0], (double)seq[1].loss[0], (double)seq[1].loss[1], threads[1]);

  /* both at once: contexts created up front by this thread, run by two others */
  for (int i = 0; i < 2; i++) {
    con[i].threads = threads[i];
    con[i].seed = seeds[i];
    if (bf_backend_create(&con[i].be, g_backend, threads[i])) {
      fprintf(stderr, "test_contexts: %s\n", bf_last_error());
      return 1;
    }
  }
  g_use_barrier = 1;
  pthread_barrier_init(&g_start, NULL, 2);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    if (pthread_create(&th[i], NULL, thread_main, &con[i])) {
      fprintf(stderr, "test_contexts: cannot start a thread\n");
      return 1;
    }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&g_start);
  for (int i = 0; i < 2; i++) {
    bf_backend_destroy(con[i].be);
    if (con[i].rc) {
      fprintf(stderr, "test_contexts: concurrent job %d: %s\n", i, con[i].err);
      fail = 1;
    }
  }
  for (int i = 0; i < 2 && !fail; i++) {
    char what[64];
    snprintf(what, sizeof what, "concurrent job %d (threads %d)", i, threads[i]);
    fail |= same(what, &con[i], &seq[i]);
  }
  for (int i = 0; i < 2; i++) {
    release(&seq[i]);
    release(&con[i]);
  }
  printf("%s\n", fail ? "FAIL" : "concurrent runs bitwise equal to sequential runs");
  return fail;
}
