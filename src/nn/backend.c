#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bf_conv_desc_init(bf_conv_desc *d, int n, int h, int w, int c, int k, int kh, int kw, int stride, int pad) {
  if (n <= 0 || h <= 0 || w <= 0 || c <= 0 || k <= 0 || kh <= 0 || kw <= 0 || stride <= 0 || pad < 0)
    return bf_error(BF_EINVAL, "conv2d: bad shape n=%d h=%d w=%d c=%d k=%d kernel=%dx%d stride=%d pad=%d", n, h, w,
                    c, k, kh, kw, stride, pad);
  d->n = n, d->h = h, d->w = w, d->c = c, d->k = k, d->kh = kh, d->kw = kw, d->stride = stride, d->pad = pad;
  d->oh = (h + 2 * pad - kh) / stride + 1;
  d->ow = (w + 2 * pad - kw) / stride + 1;
  if (h + 2 * pad < kh || w + 2 * pad < kw || d->oh <= 0 || d->ow <= 0)
    return bf_error(BF_EINVAL, "conv2d: input %dx%d too small for kernel %dx%d with padding %d", h, w, kh, kw, pad);
  return BF_OK;
}

int bf_pool_desc_init(bf_pool_desc *d, int n, int h, int w, int c, int kernel, int stride, int pad) {
  if (n <= 0 || h <= 0 || w <= 0 || c <= 0 || kernel <= 0 || stride <= 0 || pad < 0 || 2 * pad > kernel)
    return bf_error(BF_EINVAL, "pool: bad shape n=%d h=%d w=%d c=%d kernel=%d stride=%d pad=%d", n, h, w, c, kernel,
                    stride, pad);
  d->n = n, d->h = h, d->w = w, d->c = c, d->kernel = kernel, d->stride = stride, d->pad = pad;
  d->oh = (h + 2 * pad - kernel) / stride + 1;
  d->ow = (w + 2 * pad - kernel) / stride + 1;
  if (h + 2 * pad < kernel || w + 2 * pad < kernel)
    return bf_error(BF_EINVAL, "pool: input %dx%d too small for kernel %d", h, w, kernel);
  return BF_OK;
}

const char *bf_backend_list(void) {
#ifdef BF_HAVE_CUDA
  return "cpu,cuda";
#else
  return "cpu";
#endif
}

int bf_backend_device_count(const char *name, int *count) {
  *count = 0;
  if (!name || strcmp(name, "cpu") == 0) {
    *count = 1;
    return BF_OK;
  }
  if (strcmp(name, "cuda") == 0) {
#ifdef BF_HAVE_CUDA
    return bf_backend_cuda_device_count(count);
#else
    return bf_error(BF_EUNSUP, "backend 'cuda' is not compiled in (this build has: %s)", bf_backend_list());
#endif
  }
  return bf_error(BF_EINVAL, "unknown backend '%s' (this build has: %s)", name, bf_backend_list());
}

int bf_backend_create(bf_backend **out, const char *name, int threads) {
  return bf_backend_create_precision(out, name, threads, NULL);
}

int bf_backend_create_precision(bf_backend **out, const char *name, int threads, const char *precision) {
  *out = NULL;
  if (!name || strcmp(name, "cpu") == 0) {
    if (precision && strcmp(precision, "fp32") != 0)
      return bf_error(BF_EUNSUP, "precision = %s: the cpu backend computes in fp32 only (%s needs backend = cuda)",
                      precision, precision);
    return bf_backend_cpu_create(out, threads);
  }
  if (strcmp(name, "cuda") == 0) {
#ifdef BF_HAVE_CUDA
    return bf_backend_cuda_create(out, threads, precision);
#else
    return bf_error(BF_EUNSUP, "backend 'cuda' is not compiled in (this build has: %s); rebuild with -DBF_CUDA=ON",
                    bf_backend_list());
#endif
  }
  return bf_error(BF_EINVAL, "unknown backend '%s' (this build has: %s)", name, bf_backend_list());
}

void bf_backend_destroy(bf_backend *be) {
  if (be && be->destroy) be->destroy(be);
}

int bf_backend_per_process_device(const char *name) { return name && strcmp(name, "cuda") == 0; }

int bf_backend_worker_placement(const char *name, bf_backend_placement *out) {
  memset(out, 0, sizeof *out);
  if (!bf_backend_per_process_device(name)) {
    int count;
    return bf_backend_device_count(name, &count); /* checks the name */
  }
  out->per_process_device = 1;
  out->env = "CUDA_VISIBLE_DEVICES";
  const char *v = getenv(out->env);
  if (v && *v) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && out->n < BF_BACKEND_MAX_WORKER_DEVICES;
         t = strtok_r(NULL, ",", &sv))
      snprintf(out->ids[out->n++], sizeof out->ids[0], "%s", t);
  } else {
    int count = 0;
    BF_TRY(bf_backend_device_count(name, &count));
    for (int i = 0; i < count && i < BF_BACKEND_MAX_WORKER_DEVICES; i++)
      snprintf(out->ids[out->n++], sizeof out->ids[0], "%d", i);
  }
  if (!out->n) return bf_error(BF_EBACKEND, "backend %s: no device visible", name);
  return BF_OK;
}
