/* bf-export's rANS tables: per-channel histograms of the codes bf-client
 * would send, over images of the training split, normalised by
 * bf_rans_tables_from_counts (rans.h). */
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

int bf_rans_data_open(const char *root, bf_dataset **ds) {
  bf_data_config cfg;
  bf_data_config_init(&cfg);
  cfg.verbose = 0;
  cfg.threads = 1;
  int rc = bf_dataset_open(ds, root, &cfg);
  if (rc) return bf_error_wrap(rc, "rans tables: training data set %s", root);
  if (bf_dataset_count(*ds, BF_SPLIT_TRAIN) == 0) {
    bf_dataset_close(*ds);
    *ds = NULL;
    return bf_error(BF_EINVAL, "rans tables: training data set %s has no training images", root);
  }
  return BF_OK;
}

int bf_rans_estimate(const bf_dataset *ds, const char *device_path, const bf_export_opts *o, int bits,
                     bf_rans_tables *t, int *n_images) {
  memset(t, 0, sizeof *t);
  if (o->qscheme != BF_Q_U8_TENSOR && o->qscheme != BF_Q_U8_CHANNEL)
    return bf_error(BF_EINVAL, "rans tables: need 8-bit features (--quant per-tensor or per-channel)");
  if (o->input_h != o->input_w)
    return bf_error(BF_EINVAL, "rans tables: input %dx%d is not square", o->input_h, o->input_w);
  size_t count = bf_dataset_count(ds, BF_SPLIT_TRAIN);
  size_t n = o->rans_images > 0 ? (size_t)o->rans_images : BF_RANS_IMAGES_DEFAULT;
  if (n > count) n = count;
  bf_backend *be = NULL;
  bf_engine *e = NULL;
  float *x = NULL, *feat = NULL;
  uint8_t *rgb = NULL;
  uint64_t *counts = NULL;
  int oh, ow, oc, a = 1 << bits;
  int rc = bf_backend_create(&be, "cpu", 1);
  if (!rc) rc = bf_engine_load(&e, be, &device_path, 1);
  if (!rc) rc = bf_engine_plan(e, 1, o->input_h, o->input_w, &oh, &ow, &oc);
  if (rc) goto done;
  size_t px = (size_t)o->input_h * o->input_w, nf = (size_t)oh * ow * oc;
  x = bf_malloc(px * 3 * sizeof *x, "input");
  rgb = bf_malloc(px * 3, "image");
  feat = bf_malloc(nf * sizeof *feat, "features");
  counts = bf_calloc((size_t)oc * a, sizeof *counts, "histograms");
  if (!x || !rgb || !feat || !counts) {
    rc = BF_ENOMEM;
    goto done;
  }
  for (size_t k = 0; k < n && !rc; k++) {
    /* evenly spaced over the split's canonical order (class, then name):
     * every class is seen, and the choice depends on nothing but n */
    size_t i = (size_t)((uint64_t)k * count / n); /* n <= 1e6, count < 2^44 */
    bf_image img = {0};
    if ((rc = bf_dataset_load_image(ds, BF_SPLIT_TRAIN, i, &img))) break;
    rc = bf_image_eval_crop(&img, o->resize, o->input_h, rgb);
    bf_image_free(&img);
    if (rc) break;
    bf_normalize_rgb(rgb, px, o->mean, o->std, x);
    if ((rc = bf_engine_run(e, x, feat))) break;
    /* the codes bf-client sends: its own encoder, raw */
    bf_frame f;
    memset(&f, 0, sizeof f);
    uint8_t *body = NULL;
    size_t blen = 0;
    if ((rc = bf_features_encode(feat, oh, ow, oc, o->qscheme, BF_CODEC_RAW, 1, &f, &body, &blen))) break;
    const uint8_t *code = body + (blen - nf);
    for (size_t j = 0; j < nf && !rc; j++) {
      if (code[j] >= a) rc = bf_error(BF_EINVAL, "rans tables: code %d outside %d bits", code[j], bits);
      else counts[(j % oc) * a + code[j]]++;
    }
    free(body);
  }
  if (rc) rc = bf_error_wrap(rc, "rans tables: %s", bf_dataset_root(ds));
  else rc = bf_rans_tables_from_counts(t, oc, bits, counts);
  if (!rc) *n_images = (int)n;
done:
  if (e) bf_engine_free(e);
  if (be) bf_backend_destroy(be);
  free(x);
  free(rgb);
  free(feat);
  free(counts);
  return rc;
}
