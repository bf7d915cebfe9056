/* Timing of the folded engine, shared by bf-search's in-process profiling
 * (src/search/profile.c) and bf-profile (hwprofile.c): warm-up runs, then
 * `runs` timed runs summarised by their median and 10th/90th percentiles.
 * The loops allocate nothing, so what is timed is the inference alone. */
#ifndef BF_MEASURE_H
#define BF_MEASURE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct bf_timing {
  double median_ms, p10_ms, p90_ms, min_ms, max_ms;
  int runs;
} bf_timing;

/* Summary of t[0..n) (n >= 1; sorts t in place). Median: the mean of the two
 * middle values for even n; p10/p90: nearest rank (the ceil(p*n)-th value). */
void bf_timing_summarize(double *t, int n, bf_timing *out);

/* The profiling input: n pseudo-random N(0, 1) values from a fixed seed, the
 * same on every machine (bf_rng), so two hosts time the same numbers. */
void bf_measure_fill_input(float *x, size_t n);

/* The device half as the client runs it: the engine (input -> features
 * [rows, c]), then the per-tensor 8-bit quantisation into q. t_total[i] is
 * engine + quantisation, t_quant[i] the quantisation (ms), for the `runs`
 * timed runs after `warmup` untimed ones; *scale, *zp: the last run's pair. */
int bf_measure_device_half(bf_engine *e, const float *in, float *feat, size_t rows, int c, uint8_t *q, int warmup,
                           int runs, double *t_total, double *t_quant, float *scale, int32_t *zp);

/* A plain engine run (server half, whole model): t[i] in ms for `runs` timed
 * runs after `warmup` untimed ones. */
int bf_measure_engine(bf_engine *e, const float *in, float *out, int warmup, int runs, double *t);

#endif
