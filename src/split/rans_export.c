/* bf-export's rANS tables: per-channel histograms of the codes bf-client
 * would send, over images of the training split, with and without spatial
 * prediction, normalised and chosen by bf_rans_tables_choose (rans.h). */
#include "rans_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "bf_data.h"
#include "engine.h"
#include "preprocess.h"
#include "quant.h"
#include "rans.h"

int bf_rans_data_open(const char *root, const bf_data_config *dc, bf_dataset **ds) {
  bf_data_config cfg;
  if (dc) cfg = *dc;
  else bf_data_config_init(&cfg);
  cfg.verbose = 0;
  cfg.threads = 1;
  int rc = bf_dataset_open(ds, root, &cfg);
  if (rc) return bf_error_wrap(rc, "rans tables (--rans-data)");
  if (bf_dataset_count(*ds, BF_SPLIT_TRAIN) == 0) {
    bf_dataset_close(*ds);
    *ds = NULL;
    return bf_error(BF_EINVAL, "rans tables: training data set %s has no training images", root);
  }
  return BF_OK;
}

/* Runs the device half on n images of `split`, evenly spaced in the split's
 * canonical order (class, then name: every class is seen, and the choice
 * depends on n alone), each prepared as bf-client prepares an image, and
 * hands each feature map to fn. */
typedef int (*feat_fn)(void *ctx, const float *feat, int oh, int ow, int oc);
static int each_image(const bf_dataset *ds, bf_split split, size_t n, const char *device_path, int size, int resize,
                      const float mean[3], const float std[3], feat_fn fn, void *ctx, size_t *used) {
  size_t count = bf_dataset_count(ds, split);
  if (n > count) n = count;
  bf_backend *be = NULL;
  bf_engine *e = NULL;
  float *x = NULL, *feat = NULL;
  uint8_t *rgb = NULL;
  int oh, ow, oc;
  int rc = bf_backend_create(&be, "cpu", 1);
  if (!rc) rc = bf_engine_load(&e, be, &device_path, 1);
  if (!rc) rc = bf_engine_plan(e, 1, size, size, &oh, &ow, &oc);
  if (rc) goto done;
  size_t px = (size_t)size * size, nf = (size_t)oh * ow * oc;
  x = bf_malloc(px * 3 * sizeof *x, "input");
  rgb = bf_malloc(px * 3, "image");
  feat = bf_malloc(nf * sizeof *feat, "features");
  if (!x || !rgb || !feat) {
    rc = BF_ENOMEM;
    goto done;
  }
  for (size_t k = 0; k < n && !rc; k++) {
    size_t i = (size_t)((uint64_t)k * count / n); /* n <= 1e6, count < 2^44 */
    bf_image img = {0};
    if ((rc = bf_dataset_load_image(ds, split, i, &img))) break;
    rc = bf_image_eval_crop(&img, resize, size, rgb);
    bf_image_free(&img);
    if (rc) break;
    bf_normalize_rgb(rgb, px, mean, std, x);
    if (!(rc = bf_engine_run(e, x, feat))) rc = fn(ctx, feat, oh, ow, oc);
  }
  if (!rc) *used = n;
done:
  if (e) bf_engine_free(e);
  if (be) bf_backend_destroy(be);
  free(x);
  free(rgb);
  free(feat);
  return rc ? bf_error_wrap(rc, "%s (%s split)", bf_dataset_root(ds), split == BF_SPLIT_TRAIN ? "train" : "test") : 0;
}

typedef struct count_ctx {
  bf_qscheme q;
  const bf_qfixed *fixed;
  int bits, oc;
  uint64_t *plain, *resid; /* [oc][2^bits] each (bf_rans_count), allocated at the first image */
} count_ctx;

static int count_codes(void *ctx, const float *feat, int oh, int ow, int oc) {
  count_ctx *cc = ctx;
  int a = 1 << cc->bits;
  size_t nf = (size_t)oh * ow * oc;
  if (!cc->plain) {
    if (!(cc->plain = bf_calloc((size_t)oc * a * 2, sizeof *cc->plain, "histograms"))) return BF_ENOMEM;
    cc->resid = cc->plain + (size_t)oc * a;
    cc->oc = oc;
  }
  /* the codes bf-client sends: its own encoder, raw */
  bf_frame f;
  memset(&f, 0, sizeof f);
  uint8_t *body = NULL;
  size_t blen = 0;
  BF_TRY(bf_features_encode_ex(feat, oh, ow, oc, cc->q, cc->fixed, BF_CODEC_RAW, 1, NULL, &f, &body, &blen));
  int rc = bf_rans_count(oc, cc->bits, body + (blen - nf), nf, ow, cc->plain, cc->resid);
  free(body);
  return rc ? bf_error_wrap(rc, "rans tables") : BF_OK;
}

int bf_rans_estimate(const bf_dataset *ds, const char *device_path, const bf_export_opts *o, const bf_qfixed *fixed,
                     bf_rans_tables *t, int *n_images) {
  memset(t, 0, sizeof *t);
  if (o->qscheme != BF_Q_U8_TENSOR && o->qscheme != BF_Q_U8_CHANNEL)
    return bf_error(BF_EINVAL, "rans tables: need 8-bit features (--quant per-tensor or per-channel)");
  if (o->input_h != o->input_w)
    return bf_error(BF_EINVAL, "rans tables: input %dx%d is not square", o->input_h, o->input_w);
  size_t n = o->rans_images > 0 ? (size_t)o->rans_images : BF_RANS_IMAGES_DEFAULT, used = 0;
  count_ctx cc = {o->qscheme, fixed, bf_qfixed_bits(fixed), 0, NULL, NULL};
  int rc = each_image(ds, BF_SPLIT_TRAIN, n, device_path, o->input_h, o->resize, o->mean, o->std, count_codes, &cc,
                      &used);
  if (rc) rc = bf_error_wrap(rc, "rans tables");
  else rc = bf_rans_tables_choose(t, cc.oc, cc.bits, cc.plain, cc.resid);
  if (!rc) *n_images = (int)used;
  free(cc.plain);
  return rc;
}

typedef struct bytes_ctx {
  const bf_deploy_split *ds;
  double sum[3];
} bytes_ctx;

static int frame_bytes(void *ctx, const float *feat, int oh, int ow, int oc) {
  bytes_ctx *bc = ctx;
  const bf_deploy_split *ds = bc->ds;
  for (int c = BF_CODEC_RAW; c <= BF_CODEC_RANS; c++) {
    if (c == BF_CODEC_RANS && !ds->rans) continue;
    bf_frame f;
    memset(&f, 0, sizeof f);
    uint8_t *body = NULL;
    size_t blen = 0;
    bf_qfixed fx;
    BF_TRY(bf_features_encode_ex(feat, oh, ow, oc, ds->qscheme, bf_deploy_qfixed(ds, &fx), (bf_codec)c, ds->zstd_level,
                                 ds->rans, &f, &body, &blen));
    free(body);
    bc->sum[c] += (double)bf_frame_len(blen);
  }
  return BF_OK;
}

int bf_codec_bytes(const bf_deploy_split *ds, const bf_dataset *data, bf_split split, int n, double bytes[3],
                   int *n_used) {
  if (ds->qscheme != BF_Q_U8_TENSOR && ds->qscheme != BF_Q_U8_CHANNEL)
    return bf_error(BF_EINVAL, "%s: bytes per codec need 8-bit features", ds->dir);
  if (ds->in_h != ds->in_w) return bf_error(BF_EINVAL, "%s: input %dx%d is not square", ds->dir, ds->in_h, ds->in_w);
  bytes_ctx bc = {ds, {0, 0, 0}};
  size_t used = 0;
  BF_TRY(each_image(data, split, (size_t)n, ds->device_path, ds->in_h, ds->resize, ds->mean, ds->std, frame_bytes, &bc,
                    &used));
  if (!used) return bf_error(BF_EINVAL, "%s: no %s images", bf_dataset_root(data), split == BF_SPLIT_TRAIN ? "train" : "test");
  for (int c = 0; c < 3; c++) bytes[c] = bc.sum[c] / (double)used;
  *n_used = (int)used;
  return BF_OK;
}
