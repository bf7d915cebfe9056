/* Engine timing loops (measure.h). */
#include "measure.h"

#include <math.h>
#include <stdlib.h>

#include "bf_core.h"
#include "quant.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double nearest_rank(const double *sorted, int n, double p) {
  int k = (int)ceil(p * n);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

void bf_timing_summarize(double *t, int n, bf_timing *out) {
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  out->runs = n;
  out->median_ms = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  out->p10_ms = nearest_rank(t, n, 0.10);
  out->p90_ms = nearest_rank(t, n, 0.90);
  out->min_ms = t[0];
  out->max_ms = t[n - 1];
}

void bf_measure_fill_input(float *x, size_t n) {
  bf_rng r;
  bf_rng_seed(&r, 1234);
  for (size_t i = 0; i < n; i++) x[i] = (float)bf_rng_normal(&r);
}

int bf_measure_device_half(bf_engine *e, const float *in, float *feat, size_t rows, int c, uint8_t *q, int warmup,
                           int runs, double *t_total, double *t_quant, float *scale, int32_t *zp) {
  for (int i = -warmup; i < runs; i++) {
    double t0 = bf_now_sec();
    BF_TRY(bf_engine_run(e, in, feat));
    double t1 = bf_now_sec();
    bf_quant_params(feat, rows, c, 0, scale, zp);
    bf_quantize(feat, rows, c, 0, scale, zp, q);
    double t2 = bf_now_sec();
    if (i < 0) continue;
    t_total[i] = (t2 - t0) * 1e3;
    t_quant[i] = (t2 - t1) * 1e3;
  }
  return 0;
}

int bf_measure_engine(bf_engine *e, const float *in, float *out, int warmup, int runs, double *t) {
  for (int i = -warmup; i < runs; i++) {
    double t0 = bf_now_sec();
    BF_TRY(bf_engine_run(e, in, out));
    if (i >= 0) t[i] = (bf_now_sec() - t0) * 1e3;
  }
  return 0;
}
