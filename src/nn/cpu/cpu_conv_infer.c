/* The fused inference convolution on the CPU (backend.h, conv_infer_*).
 *
 * With oneDNN (BF_HAVE_DNNL): one oneDNN convolution primitive per layer
 * shape, NHWC activations used in place (no activation reorders), the
 * weights reordered once at creation into the layout oneDNN picks for the
 * shape (format_tag::any: blocked for its JIT kernels), bias in the primitive,
 * residual add (sum post-op) and ReLU (eltwise post-op) in its epilogue.
 * oneDNN's scratchpad is in user mode: it is the caller's workspace, so a
 * forward call allocates nothing of ours (oneDNN keeps small bookkeeping).
 * Why oneDNN rather than own kernels: measured against an own blocked direct
 * kernel and im2col + OpenBLAS on ResNet-50 layer shapes
 * (bench/conv_choice.sh, docs/benchmarks.md), it was fastest on every shape;
 * writing and tuning kernels per ISA is what it exists for.
 *
 * Without oneDNN (build option BF_DNNL off or library absent, e.g. the arm64
 * cross-build), and for a shape oneDNN declines: the training path's im2col
 * + OpenBLAS GEMM, accumulating onto the residual (GEMM beta = 1) and then
 * one bias (+ReLU) pass.
 *
 * Threads: oneDNN here is Debian's OpenMP build, so like OpenBLAS it runs on
 * the calling thread's OpenMP team, which cpu_enter sets to the context's. */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* The environment variable BF_CPU_CONV_INFER=im2col forces the fallback
 * (test_ops runs both paths; benches compare them); unset or "onednn": oneDNN
 * when built with it. */
static int want_fallback(int *out) {
  const char *v = getenv("BF_CPU_CONV_INFER");
  *out = v && !strcmp(v, "im2col");
  if (v && *v && !*out && strcmp(v, "onednn"))
    return bf_error(BF_EINVAL, "BF_CPU_CONV_INFER='%s': expected im2col or onednn", v);
  return BF_OK;
}

#ifdef BF_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

#define DNNL_CHECK(call)                                                                                \
  do {                                                                                                  \
    dnnl_status_t st_ = (call);                                                                         \
    if (st_ != dnnl_success)                                                                            \
      return bf_error(BF_EBACKEND, "conv_infer: %s failed: oneDNN status %d (%s:%d)", #call, (int)st_, \
                      __FILE__, __LINE__);                                                              \
  } while (0)
#endif

#ifdef BF_HAVE_DNNL
/* One layer's weights in a layout oneDNN picked, shared by every plan of that
 * layer that asks for the same layout: without it an engine planned for batch
 * sizes 1..8 held 8 packed copies of its weights. */
struct cpu_packed {
  struct cpu_packed *next;
  const float *w; /* the caller's OHWI weights it was packed from */
  dnnl_memory_desc_t md;
  dnnl_memory_t mem;
  int refs;
};
#endif

struct bf_conv_infer {
  bf_conv_desc d;
  int relu, has_residual;
  const float *w, *bias; /* fallback: the caller's OHWI weights, used as they are */
#ifdef BF_HAVE_DNNL
  dnnl_primitive_t prim; /* NULL: the fallback path */
  struct cpu_packed *packed; /* the packed weights (shared, refcounted) */
  dnnl_memory_t src, bia, dst, scratch;
  size_t scratch_bytes;
#endif
};

#ifdef BF_HAVE_DNNL
/* The context's oneDNN engine and stream, made on first use. */
static int dnnl_ctx(bf_backend *be, dnnl_engine_t *eng, dnnl_stream_t *strm) {
  cpu_impl *im = be->impl;
  if (!im->dnnl_engine) {
    dnnl_engine_t e;
    DNNL_CHECK(dnnl_engine_create(&e, dnnl_cpu, 0));
    dnnl_stream_t s;
    dnnl_status_t st = dnnl_stream_create(&s, e, dnnl_stream_default_flags);
    if (st != dnnl_success) {
      dnnl_engine_destroy(e);
      return bf_error(BF_EBACKEND, "conv_infer: dnnl_stream_create failed: oneDNN status %d", (int)st);
    }
    im->dnnl_engine = e, im->dnnl_stream = s;
  }
  *eng = im->dnnl_engine, *strm = im->dnnl_stream;
  return BF_OK;
}

/* Builds the primitive; returns BF_OK with p->prim NULL when oneDNN has no
 * implementation for the shape (the fallback then runs it). */
static int dnnl_prepare(bf_backend *be, bf_conv_infer *p, size_t *ws_bytes) {
  const bf_conv_desc *d = &p->d;
  dnnl_engine_t eng = NULL;
  dnnl_stream_t strm = NULL;
  BF_TRY(dnnl_ctx(be, &eng, &strm));
  dnnl_memory_desc_t sd, dd, wany, wuser, bd;
  dnnl_dims_t sdims = {d->n, d->c, d->h, d->w}, ddims = {d->n, d->k, d->oh, d->ow},
              wdims = {d->k, d->c, d->kh, d->kw}, bdims = {d->k}, strides = {d->stride, d->stride},
              dil = {0, 0}, pad = {d->pad, d->pad};
  DNNL_CHECK(dnnl_memory_desc_init_by_tag(&sd, 4, sdims, dnnl_f32, dnnl_nhwc));
  DNNL_CHECK(dnnl_memory_desc_init_by_tag(&dd, 4, ddims, dnnl_f32, dnnl_nhwc));
  DNNL_CHECK(dnnl_memory_desc_init_by_tag(&wany, 4, wdims, dnnl_f32, dnnl_format_tag_any));
  DNNL_CHECK(dnnl_memory_desc_init_by_tag(&wuser, 4, wdims, dnnl_f32, dnnl_ohwi));
  DNNL_CHECK(dnnl_memory_desc_init_by_tag(&bd, 1, bdims, dnnl_f32, dnnl_a));
  dnnl_convolution_desc_t cd;
  /* the right padding makes oneDNN's output size equal ours (oh, ow) */
  dnnl_dims_t pad_r = {(d->oh - 1) * d->stride + d->kh - d->h - d->pad,
                       (d->ow - 1) * d->stride + d->kw - d->w - d->pad};
  DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &sd,
                                                        &wany, &bd, &dd, strides, dil, pad, pad_r));
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_primitive_desc_t pd = NULL;
  int rc = BF_OK;
  dnnl_status_t st = dnnl_post_ops_create(&po);
  if (st == dnnl_success && p->has_residual) st = dnnl_post_ops_append_sum(po, 1.0f);
  if (st == dnnl_success && p->relu) st = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
  if (st == dnnl_success) st = dnnl_primitive_attr_create(&attr);
  if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
  if (st == dnnl_success) st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  if (st != dnnl_success) rc = bf_error(BF_EBACKEND, "conv_infer: oneDNN attributes: status %d", (int)st);
  if (!rc) {
    st = dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL);
    if (st == dnnl_unimplemented) pd = NULL; /* fallback */
    else if (st != dnnl_success) rc = bf_error(BF_EBACKEND, "conv_infer: dnnl_primitive_desc_create: status %d", (int)st);
  }
  dnnl_memory_t wu = NULL;
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t reorder = NULL;
  if (!rc && pd) {
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *sq = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = sq ? dnnl_memory_desc_get_size(sq) : 0;
    cpu_impl *im = be->impl;
    for (struct cpu_packed *c = im->packed; c && !p->packed; c = c->next)
      if (c->w == p->w && dnnl_memory_desc_equal(&c->md, wq)) p->packed = c;
    if (p->packed) {
      p->packed->refs++;
    } else {
      struct cpu_packed *c = bf_calloc(1, sizeof *c, "packed weights");
      if (!c) rc = BF_ENOMEM;
      else {
        c->w = p->w, c->md = *wq, c->refs = 1;
        c->next = im->packed, im->packed = c, p->packed = c;
        st = dnnl_memory_create(&wu, &wuser, eng, (void *)p->w);
        if (st == dnnl_success) st = dnnl_memory_create(&c->mem, wq, eng, DNNL_MEMORY_ALLOCATE);
        if (st == dnnl_success) st = dnnl_reorder_primitive_desc_create(&rpd, &wuser, eng, wq, eng, NULL);
        if (st == dnnl_success) st = dnnl_primitive_create(&reorder, rpd);
        if (st == dnnl_success) {
          dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wu}, {DNNL_ARG_TO, c->mem}};
          st = dnnl_primitive_execute(reorder, strm, 2, ra);
        }
        if (st == dnnl_success) st = dnnl_stream_wait(strm);
      }
    }
    if (st == dnnl_success && !rc) st = dnnl_memory_create(&p->src, &sd, eng, DNNL_MEMORY_NONE);
    if (st == dnnl_success) st = dnnl_memory_create(&p->dst, &dd, eng, DNNL_MEMORY_NONE);
    if (st == dnnl_success) st = dnnl_memory_create(&p->bia, &bd, eng, (void *)p->bias);
    if (st == dnnl_success && sq) st = dnnl_memory_create(&p->scratch, sq, eng, DNNL_MEMORY_NONE);
    if (st == dnnl_success) st = dnnl_primitive_create(&p->prim, pd);
    if (st != dnnl_success && !rc)
      rc = bf_error(BF_EBACKEND, "conv_infer: oneDNN primitive/weight reorder: status %d", (int)st);
    *ws_bytes = p->scratch_bytes;
  }
  if (reorder) dnnl_primitive_destroy(reorder);
  if (rpd) dnnl_primitive_desc_destroy(rpd);
  if (wu) dnnl_memory_destroy(wu);
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (po) dnnl_post_ops_destroy(po);
  return rc;
}

/* Drops one plan's reference to its packed weights. */
static void packed_release(cpu_impl *im, struct cpu_packed *c) {
  if (!c || --c->refs > 0) return;
  for (struct cpu_packed **q = &im->packed; *q; q = &(*q)->next)
    if (*q == c) {
      *q = c->next;
      break;
    }
  if (c->mem) dnnl_memory_destroy(c->mem);
  free(c);
}

void cpu_dnnl_release(cpu_impl *im) {
  if (im->dnnl_stream) dnnl_stream_destroy(im->dnnl_stream);
  if (im->dnnl_engine) dnnl_engine_destroy(im->dnnl_engine);
  im->dnnl_stream = im->dnnl_engine = NULL;
}
#else
void cpu_dnnl_release(cpu_impl *im) { (void)im; }
#endif

void cpu_conv_infer_free(bf_backend *be, bf_conv_infer *p) {
  (void)be;
  if (!p) return;
#ifdef BF_HAVE_DNNL
  if (p->prim) dnnl_primitive_destroy(p->prim);
  dnnl_memory_t mems[4] = {p->src, p->bia, p->dst, p->scratch};
  for (int i = 0; i < 4; i++)
    if (mems[i]) dnnl_memory_destroy(mems[i]);
  packed_release(be->impl, p->packed);
#endif
  free(p);
}

int cpu_conv_infer_create(bf_backend *be, const bf_conv_desc *d, const float *w, const float *bias, int relu,
                          int has_residual, bf_conv_infer **out, size_t *ws_bytes) {
  *out = NULL;
  cpu_enter(be); /* oneDNN sizes its kernels' partitioning by the thread count */
  bf_conv_infer *p = bf_calloc(1, sizeof *p, "conv_infer plan");
  if (!p) return BF_ENOMEM;
  p->d = *d, p->relu = relu, p->has_residual = has_residual, p->w = w, p->bias = bias;
  int fallback = 0;
  int rc = want_fallback(&fallback);
#ifdef BF_HAVE_DNNL
  if (!rc && !fallback) rc = dnnl_prepare(be, p, ws_bytes);
  if (!rc && p->prim) {
    *out = p;
    return BF_OK;
  }
#endif
  if (!rc) rc = cpu_conv2d_workspace(be, d, ws_bytes);
  if (rc) {
    cpu_conv_infer_free(be, p);
    return rc;
  }
  *out = p;
  return BF_OK;
}

int cpu_conv_infer_forward(bf_backend *be, bf_conv_infer *p, const float *x, const float *residual, float *y,
                           void *ws, size_t ws_bytes) {
  cpu_enter(be);
  const bf_conv_desc *d = &p->d;
  if (!residual != !p->has_residual)
    return bf_error(BF_EINVAL, "conv_infer_forward: planned %s a residual, called %s one",
                    p->has_residual ? "with" : "without", residual ? "with" : "without");
  const size_t ny = (size_t)d->n * d->oh * d->ow * d->k;
  /* both paths accumulate onto the residual held in y */
  if (residual && residual != y) memcpy(y, residual, ny * sizeof(float));
#ifdef BF_HAVE_DNNL
  if (p->prim) {
    if (p->scratch_bytes && (!ws || ws_bytes < p->scratch_bytes))
      return bf_error(BF_EINVAL, "conv_infer_forward: workspace of %zu bytes given, %zu needed", ws_bytes,
                      p->scratch_bytes);
    cpu_impl *im = be->impl;
    DNNL_CHECK(dnnl_memory_set_data_handle(p->src, (void *)x));
    DNNL_CHECK(dnnl_memory_set_data_handle(p->dst, y));
    dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, p->src},
                            {DNNL_ARG_WEIGHTS, p->packed->mem},
                            {DNNL_ARG_BIAS, p->bia},
                            {DNNL_ARG_DST, p->dst},
                            {DNNL_ARG_SCRATCHPAD, p->scratch}};
    if (p->scratch) DNNL_CHECK(dnnl_memory_set_data_handle(p->scratch, ws));
    DNNL_CHECK(dnnl_primitive_execute(p->prim, im->dnnl_stream, p->scratch ? 5 : 4, a));
    DNNL_CHECK(dnnl_stream_wait(im->dnnl_stream));
    return BF_OK;
  }
#endif
  BF_TRY(cpu_conv2d_forward_beta(be, d, x, p->w, y, residual ? 1.0f : 0.0f, ws, ws_bytes));
  return cpu_bias_act_forward(be, (int)((size_t)d->n * d->oh * d->ow), d->k, y, p->bias, NULL, p->relu, y);
}
