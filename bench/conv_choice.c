/* conv_choice: the measurement behind the CPU inference convolution choice
 * (docs/benchmarks.md, "Inference convolution"). Times one fused inference
 * conv (conv + bias + ReLU, NHWC, batch 1) on ResNet-50 layer shapes three
 * ways, same process, same threads:
 *   im2col  - the training path: im2col + OpenBLAS sgemm, then a bias+ReLU pass
 *   onednn  - oneDNN primitive, NHWC activations, weights reordered once into
 *             its preferred (format_tag::any) layout, bias + eltwise ReLU post-op
 *   direct  - a prototype blocked direct kernel: weights packed [K/16][kh][kw][C][16],
 *             6 output pixels x 32 output channels of accumulators, vector width
 *             chosen at run time (AVX-512, AVX2, portable C via GCC vectors)
 * and checks that all three agree. Built and run by bench/conv_choice.sh. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

typedef struct { const char *name; int h, w, c, k, ks, s, p; } shape;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static void *amalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 64)) { fprintf(stderr, "out of memory\n"); exit(1); }
  return p;
}
#define DN(x) do { dnnl_status_t st_ = (x); if (st_ != dnnl_success) { fprintf(stderr, "%s: %d\n", #x, (int)st_); exit(1); } } while (0)

/* ---- im2col + sgemm ---- */
static void run_im2col(const shape *S, int oh, int ow, const float *x, const float *w, const float *b, float *col,
                       float *y) {
  int rowlen = S->ks * S->ks * S->c;
  if (S->ks == 1 && S->s == 1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oh * ow, S->k, S->c, 1, x, S->c, w, S->c, 0, y, S->k);
  } else {
#pragma omp parallel for
    for (int i = 0; i < oh; i++)
      for (int j = 0; j < ow; j++) {
        float *d = col + ((size_t)i * ow + j) * rowlen;
        for (int u = 0; u < S->ks; u++)
          for (int v = 0; v < S->ks; v++, d += S->c) {
            int ih = i * S->s - S->p + u, iw = j * S->s - S->p + v;
            if (ih < 0 || ih >= S->h || iw < 0 || iw >= S->w) memset(d, 0, S->c * 4);
            else memcpy(d, x + ((size_t)ih * S->w + iw) * S->c, S->c * 4);
          }
      }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oh * ow, S->k, rowlen, 1, col, rowlen, w, rowlen, 0, y, S->k);
  }
#pragma omp parallel for
  for (int r = 0; r < oh * ow; r++)
    for (int k = 0; k < S->k; k++) {
      float v = y[(size_t)r * S->k + k] + b[k];
      y[(size_t)r * S->k + k] = v > 0 ? v : 0;
    }
}

/* ---- direct prototype ---- */
#define RW 6
#define DEFINE_DIRECT(NAME, ATTR, V)                                                                            \
  typedef float NAME##_v __attribute__((vector_size(V * 4), aligned(4)));                                     \
  ATTR static void NAME(const shape *S, int oh, int ow, const float *x, const float *wp, const float *b,       \
                        float *y) {                                                                            \
    const int KB = S->k / (2 * V), C = S->c;                                                                   \
    _Pragma("omp parallel for collapse(2) schedule(static)") for (int kb = 0; kb < KB; kb++) for (int i = 0;    \
                                                                                                  i < oh; i++) { \
      const float *wk = wp + (size_t)kb * S->ks * S->ks * C * 2 * V;                                           \
      for (int j0 = 0; j0 < ow; j0 += RW) {                                                                    \
        int nj = ow - j0 < RW ? ow - j0 : RW;                                                                  \
        NAME##_v acc[RW][2];                                                                                   \
        for (int r = 0; r < RW; r++) acc[r][0] = acc[r][1] = *(const NAME##_v *)(b + kb * 2 * V) * 0 +          \
                                                           *(const NAME##_v *)(b + kb * 2 * V) * 0;            \
        for (int r = 0; r < RW; r++) {                                                                         \
          memcpy(&acc[r][0], b + kb * 2 * V, V * 4);                                                           \
          memcpy(&acc[r][1], b + kb * 2 * V + V, V * 4);                                                       \
        }                                                                                                      \
        for (int u = 0; u < S->ks; u++) {                                                                      \
          int ih = i * S->s - S->p + u;                                                                        \
          if (ih < 0 || ih >= S->h) continue;                                                                  \
          for (int v = 0; v < S->ks; v++) {                                                                    \
            const float *xp[RW];                                                                               \
            int ok[RW];                                                                                        \
            for (int r = 0; r < RW; r++) {                                                                     \
              int iw = (j0 + r) * S->s - S->p + v;                                                             \
              ok[r] = r < nj && iw >= 0 && iw < S->w;                                                          \
              xp[r] = ok[r] ? x + ((size_t)ih * S->w + iw) * C : x;                                            \
            }                                                                                                  \
            const float *wv = wk + (size_t)(u * S->ks + v) * C * 2 * V;                                        \
            if (ok[0] & ok[1] & ok[2] & ok[3] & ok[4] & ok[5]) {                                               \
              for (int c = 0; c < C; c++) {                                                                    \
                NAME##_v w0, w1;                                                                               \
                memcpy(&w0, wv + (size_t)c * 2 * V, V * 4);                                                    \
                memcpy(&w1, wv + (size_t)c * 2 * V + V, V * 4);                                                \
                for (int r = 0; r < RW; r++) {                                                                 \
                  float xs = xp[r][c];                                                                         \
                  acc[r][0] += xs * w0;                                                                        \
                  acc[r][1] += xs * w1;                                                                        \
                }                                                                                              \
              }                                                                                                \
            } else {                                                                                           \
              for (int c = 0; c < C; c++) {                                                                    \
                NAME##_v w0, w1;                                                                               \
                memcpy(&w0, wv + (size_t)c * 2 * V, V * 4);                                                    \
                memcpy(&w1, wv + (size_t)c * 2 * V + V, V * 4);                                                \
                for (int r = 0; r < RW; r++) {                                                                 \
                  float xs = ok[r] ? xp[r][c] : 0.0f;                                                          \
                  acc[r][0] += xs * w0;                                                                        \
                  acc[r][1] += xs * w1;                                                                        \
                }                                                                                              \
              }                                                                                                \
            }                                                                                                  \
          }                                                                                                    \
        }                                                                                                      \
        for (int r = 0; r < nj; r++) {                                                                         \
          float *yp = y + ((size_t)i * ow + j0 + r) * S->k + kb * 2 * V;                                       \
          for (int h = 0; h < 2; h++)                                                                          \
            for (int l = 0; l < V; l++) yp[h * V + l] = acc[r][h][l] > 0 ? acc[r][h][l] : 0;                   \
        }                                                                                                      \
      }                                                                                                        \
    }                                                                                                          \
  }
DEFINE_DIRECT(direct512, __attribute__((target("avx512f"))), 16)
DEFINE_DIRECT(direct256, __attribute__((target("avx2,fma"))), 8)
DEFINE_DIRECT(direct128, , 4)

static int VW; /* chosen vector width (floats) */
static void pack_direct(const shape *S, const float *w, float *wp) {
  int B = 2 * VW, C = S->c, KK = S->ks * S->ks;
  for (int k = 0; k < S->k; k++)
    for (int t = 0; t < KK; t++)
      for (int c = 0; c < C; c++)
        wp[(((size_t)(k / B) * KK + t) * C + c) * B + k % B] = w[((size_t)k * KK + t) * C + c];
}
static void run_direct(const shape *S, int oh, int ow, const float *x, const float *wp, const float *b, float *y) {
  if (VW == 16) direct512(S, oh, ow, x, wp, b, y);
  else if (VW == 8) direct256(S, oh, ow, x, wp, b, y);
  else direct128(S, oh, ow, x, wp, b, y);
}

/* ---- oneDNN ---- */
typedef struct { dnnl_primitive_t prim; dnnl_memory_t src, wei, bia, dst; } dnn_conv;
static void dnn_make(dnnl_engine_t eng, dnnl_stream_t strm, const shape *S, int oh, int ow, const float *w_ohwi,
                     const float *b, dnn_conv *o) {
  dnnl_memory_desc_t sd, wd_any, wd_user, bd, dd;
  dnnl_dims_t sdims = {1, S->c, S->h, S->w}, wdims = {S->k, S->c, S->ks, S->ks}, bdims = {S->k},
              ddims = {1, S->k, oh, ow}, st = {S->s, S->s}, pad = {S->p, S->p}, dil = {0, 0};
  DN(dnnl_memory_desc_init_by_tag(&sd, 4, sdims, dnnl_f32, dnnl_nhwc));
  DN(dnnl_memory_desc_init_by_tag(&dd, 4, ddims, dnnl_f32, dnnl_nhwc));
  DN(dnnl_memory_desc_init_by_tag(&wd_any, 4, wdims, dnnl_f32, dnnl_format_tag_any));
  DN(dnnl_memory_desc_init_by_tag(&wd_user, 4, wdims, dnnl_f32, dnnl_ohwi));
  DN(dnnl_memory_desc_init_by_tag(&bd, 1, bdims, dnnl_f32, dnnl_a));
  dnnl_convolution_desc_t cd;
  DN(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &sd, &wd_any,
                                                &bd, &dd, st, dil, pad, pad));
  dnnl_post_ops_t po;
  DN(dnnl_post_ops_create(&po));
  DN(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
  dnnl_primitive_attr_t attr;
  DN(dnnl_primitive_attr_create(&attr));
  DN(dnnl_primitive_attr_set_post_ops(attr, po));
  dnnl_primitive_desc_t pd;
  DN(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL));
  const char *impl = NULL;
  DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
  printf("    onednn impl for %s: %s\n", S->name, impl);
  const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  dnnl_memory_t wu;
  DN(dnnl_memory_create(&wu, &wd_user, eng, (void *)w_ohwi));
  DN(dnnl_memory_create(&o->wei, wq, eng, DNNL_MEMORY_ALLOCATE));
  dnnl_primitive_desc_t rpd;
  dnnl_primitive_t rp;
  DN(dnnl_reorder_primitive_desc_create(&rpd, &wd_user, eng, wq, eng, NULL));
  DN(dnnl_primitive_create(&rp, rpd));
  dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wu}, {DNNL_ARG_TO, o->wei}};
  DN(dnnl_primitive_execute(rp, strm, 2, ra));
  DN(dnnl_stream_wait(strm));
  dnnl_primitive_destroy(rp);
  dnnl_primitive_desc_destroy(rpd);
  dnnl_memory_destroy(wu);
  DN(dnnl_memory_create(&o->src, &sd, eng, DNNL_MEMORY_NONE));
  DN(dnnl_memory_create(&o->dst, &dd, eng, DNNL_MEMORY_NONE));
  DN(dnnl_memory_create(&o->bia, &bd, eng, (void *)b));
  DN(dnnl_primitive_create(&o->prim, pd));
  dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_attr_destroy(attr);
  dnnl_post_ops_destroy(po);
}
static void dnn_run(dnnl_stream_t strm, dnn_conv *o, const float *x, float *y) {
  DN(dnnl_memory_set_data_handle(o->src, (void *)x));
  DN(dnnl_memory_set_data_handle(o->dst, y));
  dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, o->src}, {DNNL_ARG_WEIGHTS, o->wei}, {DNNL_ARG_BIAS, o->bia},
                          {DNNL_ARG_DST, o->dst}};
  DN(dnnl_primitive_execute(o->prim, strm, 4, a));
  DN(dnnl_stream_wait(strm));
}

static double maxrel(const float *a, const float *b, size_t n) {
  double m = 0, s = 0;
  for (size_t i = 0; i < n; i++) s = fmax(s, fabs(b[i]));
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
  return m / (s > 0 ? s : 1);
}

/* OpenBLAS sgemm peak: the best of a few large square products. */
static void sgemm_peak(int iters) {
  const int n = 2048;
  float *a = amalloc((size_t)n * n * 4), *b = amalloc((size_t)n * n * 4), *c = amalloc((size_t)n * n * 4);
  for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 13) * 0.1f, b[i] = (float)(i % 7) * 0.1f;
  double best = 1e9;
  for (int it = 0; it < iters + 1; it++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double t = now() - t0;
    if (it) best = fmin(best, t);
  }
  printf("sgemm_gflops=%.1f\n", 2.0 * n * n * n / best * 1e-9);
  free(a), free(b), free(c);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "sgemm")) { /* conv_choice sgemm ITERS THREADS */
    omp_set_num_threads(argc > 3 ? atoi(argv[3]) : 2);
    sgemm_peak(argc > 2 ? atoi(argv[2]) : 5);
    return 0;
  }
  int iters = argc > 1 ? atoi(argv[1]) : 30;
  int threads = argc > 2 ? atoi(argv[2]) : 2;
  omp_set_num_threads(threads);
  VW = __builtin_cpu_supports("avx512f") ? 16 : __builtin_cpu_supports("avx2") ? 8 : 4;
  static const shape shapes[] = {
      {"stem 7x7/2 224x224x3->64", 224, 224, 3, 64, 7, 2, 3},
      {"RB1 3x3 56x56x64->64", 56, 56, 64, 64, 3, 1, 1},
      {"RB5 3x3/2 56x56x128->128", 56, 56, 128, 128, 3, 2, 1},
      {"RB9 3x3 14x14x256->256", 14, 14, 256, 256, 3, 1, 1},
      {"RB15 3x3 7x7x512->512", 7, 7, 512, 512, 3, 1, 1},
      {"RB9 1x1 14x14x1024->256", 14, 14, 1024, 256, 1, 1, 0},
  };
  dnnl_engine_t eng;
  dnnl_stream_t strm;
  DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
  DN(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
  printf("threads=%d direct vector width=%d floats\n", threads, VW);
  printf("| layer | GFLOP | im2col+sgemm ms | oneDNN ms | direct ms | oneDNN GFLOP/s | direct/oneDNN max rel diff |\n");
  printf("|---|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
    const shape *S = &shapes[si];
    int oh = (S->h + 2 * S->p - S->ks) / S->s + 1, ow = (S->w + 2 * S->p - S->ks) / S->s + 1;
    size_t nx = (size_t)S->h * S->w * S->c, nw = (size_t)S->k * S->ks * S->ks * S->c, ny = (size_t)oh * ow * S->k;
    float *x = amalloc(nx * 4), *w = amalloc(nw * 4), *wp = amalloc(nw * 4), *b = amalloc(S->k * 4);
    float *col = amalloc((size_t)oh * ow * S->ks * S->ks * S->c * 4);
    float *y1 = amalloc(ny * 4), *y2 = amalloc(ny * 4), *y3 = amalloc(ny * 4);
    unsigned r = 1;
    for (size_t i = 0; i < nx; i++) x[i] = (float)((r = r * 1103515245 + 12345) >> 16 & 1023) / 512.0f - 1.0f;
    for (size_t i = 0; i < nw; i++) w[i] = ((float)((r = r * 1103515245 + 12345) >> 16 & 1023) / 512.0f - 1.0f) * 0.05f;
    for (int i = 0; i < S->k; i++) b[i] = 0.01f * (i % 7);
    pack_direct(S, w, wp);
    dnn_conv dc;
    dnn_make(eng, strm, S, oh, ow, w, b, &dc);
    double best[3] = {1e9, 1e9, 1e9};
    for (int it = 0; it < iters + 3; it++) {
      double t0 = now();
      run_im2col(S, oh, ow, x, w, b, col, y1);
      double t1 = now();
      dnn_run(strm, &dc, x, y2);
      double t2 = now();
      run_direct(S, oh, ow, x, wp, b, y3);
      double t3 = now();
      if (it >= 3) { /* median would be nicer; best-of keeps a loaded machine's noise out */
        best[0] = fmin(best[0], t1 - t0), best[1] = fmin(best[1], t2 - t1), best[2] = fmin(best[2], t3 - t2);
      }
    }
    double gf = 2.0 * ny * S->ks * S->ks * S->c * 1e-9;
    printf("| %s | %.3f | %.3f | %.3f | %.3f | %.0f | %.1e / %.1e |\n", S->name, gf, best[0] * 1e3, best[1] * 1e3,
           best[2] * 1e3, gf / best[1], maxrel(y3, y1, ny), maxrel(y2, y1, ny));
    dnnl_primitive_destroy(dc.prim);
    dnnl_memory_destroy(dc.src), dnnl_memory_destroy(dc.wei), dnnl_memory_destroy(dc.bia), dnnl_memory_destroy(dc.dst);
    free(x), free(w), free(wp), free(b), free(col), free(y1), free(y2), free(y3);
  }
  dnnl_stream_destroy(strm);
  dnnl_engine_destroy(eng);
  return 0;
}
