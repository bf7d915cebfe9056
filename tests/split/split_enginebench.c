/* Engine-level figures behind bf-serve's batching (bench/serve_bench.sh):
 *   split_enginebench SERVER_HALF THREADS FEAT_SIDE REPS
 * - BATCH n=1,2,4,8: median ms per image of a batch of n (the ceiling of
 *   what batching can give, without the network or the queue), and the
 *   half's GFLOP per image (to hold the rates against the CPU's FMA peak);
 * - LONE: a batch of one on an engine planned for 1 vs one planned for 8
 *   first and re-planned to 1 (what bf-serve does with batching on), the two
 *   runs interleaved REPS times so that other work on the machine falls on
 *   both; ratio of the medians. */
#include <stdio.h>
#include <stdlib.h>

#include "bf_core.h"
#include "engine.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

static double run_ms(bf_engine *e, const float *x, float *y, int *rc) {
  double t = bf_now_sec();
  if (!*rc) *rc = bf_engine_run(e, x, y);
  return (bf_now_sec() - t) * 1e3;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: split_enginebench SERVER_HALF THREADS FEAT_SIDE REPS\n");
    return 2;
  }
  int threads = atoi(argv[2]), side = atoi(argv[3]), reps = atoi(argv[4]);
  if (threads < 0 || side < 1 || reps < 2) {
    fprintf(stderr, "split_enginebench: bad THREADS/FEAT_SIDE/REPS\n");
    return 2;
  }
  enum { NMAX = 8 };
  bf_backend *be = NULL;
  bf_engine *a = NULL, *b = NULL;
  int rc = bf_backend_create(&be, "cpu", threads);
  if (!rc) rc = bf_engine_load(&a, be, (const char *[]){argv[1]}, 1);
  if (!rc) rc = bf_engine_load(&b, be, (const char *[]){argv[1]}, 1);
  int oc = 0;
  if (!rc) rc = bf_engine_plan(b, NMAX, side, side, NULL, NULL, &oc);
  size_t nin = (size_t)side * side * (a ? bf_engine_input_channels(a) : 0);
  float *x = malloc(NMAX * nin * sizeof(float)), *y = malloc((size_t)NMAX * (oc > 0 ? oc : 1) * sizeof(float));
  double *ta = malloc((size_t)reps * sizeof(double)), *tb = malloc((size_t)reps * sizeof(double));
  if (!rc && !(x && y && ta && tb)) rc = bf_error(BF_ENOMEM, "buffers");
  for (size_t i = 0; !rc && i < NMAX * nin; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f;
  /* the batch sizes take turns, round after round, so that a burst of other
   * work on the machine falls on all of them (plans are kept: switching is
   * cheap); each turn runs max(2, 8/n) batches and keeps all but the first, so
   * that every figure is of a warm engine, as in a server that keeps running
   * one batch size */
  enum { NS = 4 };
  int rounds = reps / 8 > 3 ? reps / 8 : 3, per = NMAX; /* samples per round at n = 1 (at most) */
  double *tn = malloc((size_t)NS * rounds * per * sizeof(double));
  int cnt[NS] = {0};
  if (!rc && !tn) rc = bf_error(BF_ENOMEM, "buffers");
  if (!rc) rc = bf_engine_plan(a, NMAX, side, side, NULL, NULL, NULL); /* the largest first: one arena */
  for (int i = 0; i < rounds && !rc; i++)
    for (int k = 0; k < NS && !rc; k++) {
      int n = 1 << k, runs = NMAX / n > 2 ? NMAX / n : 2;
      rc = bf_engine_plan(a, n, side, side, NULL, NULL, NULL);
      for (int j = 0; j < runs && !rc; j++) {
        double t = run_ms(a, x, y, &rc) / n;
        if (j) tn[k * rounds * per + cnt[k]++] = t;
      }
    }
  printf("BATCH");
  for (int k = 0; k < NS && !rc; k++) printf(" n%d_ms_per_image=%.2f", 1 << k, median(tn + k * rounds * per, cnt[k]));
  free(tn);
  if (!rc) printf(" gflop_per_image=%.3f", bf_engine_gflop_per_image(a));
  printf("\n");
  if (!rc) rc = bf_engine_plan(a, 1, side, side, NULL, NULL, NULL);
  if (!rc) rc = bf_engine_plan(b, 1, side, side, NULL, NULL, NULL);
  run_ms(a, x, y, &rc);
  run_ms(b, x, y, &rc);
  for (int i = 0; i < reps && !rc; i++) { /* alternate which goes first */
    if (i % 2) {
      ta[i] = run_ms(a, x, y, &rc);
      tb[i] = run_ms(b, x, y, &rc);
    } else {
      tb[i] = run_ms(b, x, y, &rc);
      ta[i] = run_ms(a, x, y, &rc);
    }
  }
  if (!rc) {
    double ma = median(ta, reps), mb = median(tb, reps);
    printf("LONE planned1_ms=%.2f planned%d_then1_ms=%.2f ratio=%.3f reps=%d\n", ma, NMAX, mb, mb / ma, reps);
  } else {
    fprintf(stderr, "split_enginebench: %s\n", bf_last_error());
  }
  free(x), free(y), free(ta), free(tb);
  bf_engine_free(a);
  bf_engine_free(b);
  if (be) bf_backend_destroy(be);
  return rc ? 1 : 0;
}
