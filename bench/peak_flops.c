/* peak_flops: this CPU's fp32 fused-multiply-add peak, the ceiling every
 * convolution figure in docs/benchmarks.md and docs/bench-split.md is held
 * against. Each thread runs chains of independent vector FMAs on registers
 * (no memory traffic), more chains than FMA latency x FMA pipes, so the only
 * limit is how many FMAs the cores retire per second at the clock they hold
 * under this load. The widest ISA the CPU has is chosen at run time
 * (AVX-512, AVX2+FMA, else GCC's generic 128-bit vectors).
 *
 *   peak_flops [THREADS...]      (default: 1 and omp_get_max_threads())
 * prints one line per thread count:
 *   peak_gflops isa=avx512 threads=2 gflops=...
 * Built and run by bench/peak_flops.sh. Hand-written: it measures the
 * hardware, so it must not depend on any library's kernel. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 16 /* independent accumulators: Zen 4/5 and recent Intel need >= 8 (4-cycle latency, 2 pipes) */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Each kernel returns a value depending on every chain so nothing is dead
 * code; FLOPs per call = iters * CHAINS * lanes * 2. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static float fma_avx512(long iters, float seed) {
  __m512 acc[CHAINS], a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(seed + (float)i);
  for (long it = 0; it < iters; it++)
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long iters, float seed) {
  /* 12 of the 16 ymm registers: enough chains for 2 pipes x 4-5 cycles */
  enum { N = 12 };
  __m256 acc[N], a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < N; i++) acc[i] = _mm256_set1_ps(seed + (float)i);
  for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
    for (int i = 0; i < N; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < N; i++) s = _mm256_add_ps(s, acc[i]);
  float v[8];
  _mm256_storeu_ps(v, s);
  return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}
#endif

typedef float v4f __attribute__((vector_size(16)));
static float fma_generic(long iters, float seed) {
  v4f acc[CHAINS], a = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, b = {1e-7f, 1e-7f, 1e-7f, 1e-7f};
  for (int i = 0; i < CHAINS; i++) acc[i] = (v4f){seed + (float)i, seed, seed, seed};
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * a + b; /* contracted to FMA where the ISA has one */
  float s = 0;
  for (int i = 0; i < CHAINS; i++) s += acc[i][0] + acc[i][1] + acc[i][2] + acc[i][3];
  return s;
}

typedef float (*kernel_fn)(long, float);

static kernel_fn pick(const char **isa, double *flops_per_iter) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    *isa = "avx512", *flops_per_iter = CHAINS * 16 * 2;
    return fma_avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    *isa = "avx2", *flops_per_iter = 12 * 8 * 2;
    return fma_avx2;
  }
#endif
  *isa = "generic128", *flops_per_iter = CHAINS * 4 * 2;
  return fma_generic;
}

/* Best of REPS timed runs of every thread doing `iters` iterations at once. */
static double measure(kernel_fn f, double flops_per_iter, int threads, long iters, volatile float *sink) {
  double best = 0;
  for (int rep = 0; rep < 7; rep++) {
    double t0 = 0, t1 = 0;
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
#pragma omp barrier
#pragma omp master
      t0 = now();
      total += f(iters, (float)omp_get_thread_num());
#pragma omp barrier
#pragma omp master
      t1 = now();
    }
    *sink += total;
    double g = flops_per_iter * (double)iters * threads / (t1 - t0) * 1e-9;
    if (g > best) best = g;
  }
  return best;
}

int main(int argc, char **argv) {
  const char *isa;
  double fpi;
  kernel_fn f = pick(&isa, &fpi);
  volatile float sink = 0;
  /* about 0.1 s a run at 100 GFLOP/s per thread */
  const long iters = (long)(1e10 / fpi);
  int counts[8], n = 0;
  for (int i = 1; i < argc && n < 8; i++) {
    char *end;
    long t = strtol(argv[i], &end, 10);
    if (*end || t < 1 || t > 1024) {
      fprintf(stderr, "peak_flops: thread count '%s' (expected 1..1024)\n", argv[i]);
      return 2;
    }
    counts[n++] = (int)t;
  }
  if (!n) {
    counts[n++] = 1;
    if (omp_get_max_threads() > 1) counts[n++] = omp_get_max_threads();
  }
  f(1000, 0); /* wake the vector unit up before timing */
  for (int i = 0; i < n; i++)
    printf("peak_gflops isa=%s threads=%d gflops=%.1f\n", isa, counts[i],
           measure(f, fpi, counts[i], iters, &sink));
  return sink == 12345.0f; /* never true in practice; keeps the results live */
}
