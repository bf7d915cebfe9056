/* Export + folded engine vs the unfolded training model (eval mode):
 * - device half (folded BN) == bf_model_split_features
 * - device + server halves with float features == model logits (1e-4)
 * - the whole-model engine (both files) == model logits
 * - the engine folded in memory (bf_engine_from_model) == the one from the files, bit for bit
 * - 8-bit features (per tensor at RB2, per channel at RB9): top-1 agreement >= 99% over 100 images
 * - batches: each row of a batch == that input alone (1e-5 rel.); once every batch size was planned,
 *   switching between them allocates nothing and creates no conv plan (bf-serve switches per batch)
 * Usage: test_split_engine WORKDIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "quant.h"
#include "split.h"
#include "split_testutil.h"

#define S 64
#define CLASSES 10

static int argmax(const float *v, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (v[i] > v[b]) b = i;
  return b;
}

static int run_split(bf_backend *be, const char *work, int k, int d_r, int n_exact, int n_quant) {
  char ckpt[512], dev[600], srv[600], out[512];
  snprintf(ckpt, sizeof ckpt, "%s/model_k%d.safetensors", work, k);
  snprintf(out, sizeof out, "%s/deploy", work);
  TU_CHECK(!tu_make_model(be, ckpt, CLASSES, k, d_r, 1000 + k), "make model: %s", bf_last_error());
  bf_export_opts o;
  bf_export_opts_init(&o);
  o.input_h = o.input_w = S;
  TU_CHECK(!bf_split_export(ckpt, out, &o, NULL, 0), "export: %s", bf_last_error());
  snprintf(dev, sizeof dev, "%s/split-%d/device.safetensors", out, k);
  snprintf(srv, sizeof srv, "%s/split-%d/server.safetensors", out, k);
  bf_deploy d;
  TU_CHECK(!bf_deploy_open(&d, out), "deploy: %s", bf_last_error());
  const bf_deploy_split *ds = bf_deploy_find(&d, k);
  TU_CHECK(ds && ds->d_r == d_r && ds->feat_h == bf_feature_size(S, k), "manifest split %d", k);
  TU_CHECK(!bf_deploy_verify(ds, 1, 1), "verify: %s", bf_last_error());
  bf_deploy_close(&d);

  bf_model_config cfg = {CLASSES, k, d_r, 0};
  bf_model *m;
  TU_CHECK(!bf_model_create(&m, be, &cfg) && !bf_model_load(m, ckpt), "model: %s", bf_last_error());
  TU_CHECK(!bf_model_plan(m, 1, S, S), "plan: %s", bf_last_error());
  bf_engine *ed, *es, *ef;
  const char *both[2] = {dev, srv};
  TU_CHECK(!bf_engine_load(&ed, be, (const char *[]){dev}, 1), "device engine: %s", bf_last_error());
  TU_CHECK(!bf_engine_load(&es, be, (const char *[]){srv}, 1), "server engine: %s", bf_last_error());
  TU_CHECK(!bf_engine_load(&ef, be, both, 2), "full engine: %s", bf_last_error());
  TU_CHECK(!bf_engine_outputs_logits(ed) && bf_engine_outputs_logits(es) && bf_engine_outputs_logits(ef),
           "engine outputs");
  int fh, fw, fc, lh, lw, lc;
  TU_CHECK(!bf_engine_plan(ed, 1, S, S, &fh, &fw, &fc), "plan: %s", bf_last_error());
  TU_CHECK(fc == d_r && fh == bf_feature_size(S, k) && fw == fh, "feature shape %dx%dx%d", fh, fw, fc);
  TU_CHECK(!bf_engine_plan(es, 1, fh, fw, &lh, &lw, &lc) && lc == CLASSES, "server plan: %s", bf_last_error());
  TU_CHECK(!bf_engine_plan(ef, 1, S, S, NULL, NULL, &lc) && lc == CLASSES, "full plan: %s", bf_last_error());
  bf_engine *em;
  bf_model *m2;
  TU_CHECK(!bf_model_create(&m2, be, &cfg) && !bf_model_load(m2, ckpt), "model: %s", bf_last_error());
  TU_CHECK(!bf_engine_from_model(&em, be, m2, ckpt), "in-memory engine: %s", bf_last_error());
  TU_CHECK(!bf_engine_plan(em, 1, S, S, NULL, NULL, &lc) && lc == CLASSES, "in-memory plan: %s", bf_last_error());
  printf("split %d: device %s, server %s, features %dx%dx%d\n", k, bf_engine_describe(ed), bf_engine_describe(es),
         fh, fw, fc);

  size_t nf = (size_t)fh * fw * fc;
  float *x = malloc(sizeof(float) * S * S * 3), *feat = malloc(nf * sizeof(float)),
        *ref_feat = malloc(nf * sizeof(float)), *deq = malloc(nf * sizeof(float)), *ref = malloc(CLASSES * 4),
        *lg = malloc(CLASSES * 4), *lf = malloc(CLASSES * 4), *lm = malloc(CLASSES * 4);
  uint8_t *q = malloc(nf);
  float *scale = malloc(fc * sizeof(float));
  int32_t *zp = malloc(fc * sizeof(int32_t));
  double max_feat = 0, max_logit = 0, max_full = 0, max_ref = 0;
  int agree_t = 0, agree_c = 0, total = 0, seen[CLASSES] = {0}, distinct = 0;
  /* logits of every quantised image, float path and 8-bit path */
  float *all_ref = malloc(sizeof(float) * CLASSES * (size_t)(n_quant > 0 ? n_quant : 1));
  float *all_q = malloc(sizeof(float) * CLASSES * (size_t)(n_quant > 0 ? n_quant : 1));
  int n = n_exact > n_quant ? n_exact : n_quant;
  for (int i = 0; i < n; i++) {
    tu_image_f32(x, S, S, 5000 + (uint64_t)i);
    TU_CHECK(!be->upload(be, bf_model_input(m), x, sizeof(float) * S * S * 3), "upload");
    TU_CHECK(!bf_model_forward(m, 0), "forward: %s", bf_last_error());
    int h2, w2, c2;
    const float *sf = bf_model_split_features(m, &h2, &w2, &c2);
    TU_CHECK(sf && h2 == fh && w2 == fw && c2 == fc, "split features");
    TU_CHECK(!be->download(be, ref_feat, sf, nf * sizeof(float)), "download");
    TU_CHECK(!be->download(be, ref, bf_model_logits(m), CLASSES * sizeof(float)), "download");
    TU_CHECK(!bf_engine_run(ed, x, feat), "device run: %s", bf_last_error());
    TU_CHECK(!bf_engine_run(es, feat, lg), "server run: %s", bf_last_error());
    if (i < n_exact) {
      TU_CHECK(!bf_engine_run(ef, x, lf), "full run: %s", bf_last_error());
      TU_CHECK(!bf_engine_run(em, x, lm), "in-memory run: %s", bf_last_error());
      TU_CHECK(!memcmp(lf, lm, CLASSES * sizeof(float)), "the in-memory fold differs from the exported files");
      for (size_t j = 0; j < nf; j++) {
        double dlt = fabs(feat[j] - ref_feat[j]) / (1.0 + fabs(ref_feat[j]));
        if (dlt > max_feat) max_feat = dlt;
      }
      for (int j = 0; j < CLASSES; j++) {
        if (fabs(lg[j] - ref[j]) > max_logit) max_logit = fabs(lg[j] - ref[j]);
        if (fabs(lf[j] - ref[j]) > max_full) max_full = fabs(lf[j] - ref[j]);
        if (fabs(ref[j]) > max_ref) max_ref = fabs(ref[j]);
      }
    }
    if (i < n_quant) {
      int top = argmax(ref, CLASSES);
      distinct += !seen[top];
      seen[top] = 1;
      for (int per_ch = k % 2; per_ch == k % 2; per_ch++) { /* even k: per tensor, odd: per channel */
        bf_quant_params(feat, (size_t)fh * fw, fc, per_ch, scale, zp);
        bf_quantize(feat, (size_t)fh * fw, fc, per_ch, scale, zp, q);
        bf_dequantize(q, (size_t)fh * fw, fc, per_ch, scale, zp, deq);
        TU_CHECK(!bf_engine_run(es, deq, lg), "server run: %s", bf_last_error());
        if (argmax(lg, CLASSES) == top) *(per_ch ? &agree_c : &agree_t) += 1;
        memcpy(all_ref + (size_t)i * CLASSES, ref, sizeof(float) * CLASSES);
        memcpy(all_q + (size_t)i * CLASSES, lg, sizeof(float) * CLASSES);
      }
      total++;
    }
  }
  int per_ch = k % 2;
  double ag = (double)(per_ch ? agree_c : agree_t) / total;
  printf("split %d: max feature rel diff %.3g, max |logit diff| split %.3g full %.3g (|logit| <= %.3g), "
         "8-bit (%s) top-1 agreement %.1f%% over %d images (%d distinct classes predicted), %zu B/image\n",
         k, max_feat, max_logit, max_full, max_ref, per_ch ? "per channel" : "per tensor", 100 * ag, total, distinct,
         nf);
  TU_CHECK(max_feat < 1e-4, "folded device half differs from the unfolded model: %g", max_feat);
  TU_CHECK(max_logit < 1e-4, "split logits differ from the whole model: %g", max_logit);
  TU_CHECK(max_full < 1e-4, "full engine logits differ: %g", max_full);
  TU_CHECK(ag >= 0.99, "8-bit top-1 agreement below 99%%");
  /* A random model tends to answer one or two classes for every image, which
   * makes plain agreement nearly vacuous. Subtracting each class's mean logit
   * over the images leaves the image-dependent part of the decision, which is
   * what quantisation could damage: require agreement there too, over a
   * spread of answers. */
  double mean_r[CLASSES] = {0}, mean_q[CLASSES] = {0};
  for (int i = 0; i < total; i++)
    for (int j = 0; j < CLASSES; j++) {
      mean_r[j] += all_ref[(size_t)i * CLASSES + j] / total;
      mean_q[j] += all_q[(size_t)i * CLASSES + j] / total;
    }
  int dagree = 0, dseen[CLASSES] = {0}, ddistinct = 0;
  for (int i = 0; i < total; i++) {
    float dr[CLASSES], dq[CLASSES];
    for (int j = 0; j < CLASSES; j++) {
      dr[j] = (float)(all_ref[(size_t)i * CLASSES + j] - mean_r[j]);
      dq[j] = (float)(all_q[(size_t)i * CLASSES + j] - mean_q[j]);
    }
    int t = argmax(dr, CLASSES);
    ddistinct += !dseen[t];
    dseen[t] = 1;
    dagree += argmax(dq, CLASSES) == t;
  }
  printf("split %d: de-biased top-1 agreement %.1f%% over %d images (%d distinct classes)\n", k,
         100.0 * dagree / total, total, ddistinct);
  TU_CHECK(ddistinct >= 5, "only %d distinct de-biased top-1 classes: the test images do not spread", ddistinct);
  TU_CHECK(dagree >= 0.99 * total, "8-bit de-biased top-1 agreement %d/%d below 99%%", dagree, total);
  free(all_ref), free(all_q);
  free(x), free(feat), free(ref_feat), free(deq), free(ref), free(lg), free(lf), free(lm), free(q), free(scale), free(zp);
  bf_engine_free(ed);
  bf_engine_free(es);
  bf_engine_free(ef);
  bf_engine_free(em);
  bf_model_free(m);
  return 0;
}

static int negative_cases(bf_backend *be, const char *work) {
  /* an unfolded checkpoint is refused by the engine; a half with a stray tensor too */
  char ckpt[512];
  snprintf(ckpt, sizeof ckpt, "%s/model_k2.safetensors", work);
  bf_engine *e = NULL;
  TU_CHECK(bf_engine_load(&e, be, (const char *[]){ckpt}, 1) != 0 && strstr(bf_last_error(), "bn_folded"),
           "unfolded checkpoint accepted: %s", bf_last_error());
  char dev[600];
  snprintf(dev, sizeof dev, "%s/deploy/split-2/device.safetensors", work);
  TU_CHECK(bf_engine_load(&e, be, (const char *[]){dev, dev}, 2) != 0, "duplicate halves accepted");
  /* the split-0 checkpoint cannot be exported */
  snprintf(ckpt, sizeof ckpt, "%s/plain.safetensors", work);
  TU_CHECK(!tu_make_model(be, ckpt, CLASSES, 0, 0, 3), "plain model: %s", bf_last_error());
  bf_export_opts o;
  bf_export_opts_init(&o);
  char out[512];
  snprintf(out, sizeof out, "%s/deploy_plain", work);
  TU_CHECK(bf_split_export(ckpt, out, &o, NULL, 0) != 0 && strstr(bf_last_error(), "split_after"),
           "plain model exported: %s", bf_last_error());
  return 0;
}

static void *(*g_alloc)(bf_backend *, size_t);
static int (*g_conv_create)(bf_backend *, const bf_conv_desc *, const float *, const float *, int, int,
                            bf_conv_infer **, size_t *);
static int g_allocs, g_conv_plans;
static void *counting_alloc(bf_backend *be, size_t bytes) {
  g_allocs++;
  return g_alloc(be, bytes);
}
static int counting_conv_create(bf_backend *be, const bf_conv_desc *d, const float *w, const float *b, int relu,
                                int res, bf_conv_infer **out, size_t *ws) {
  g_conv_plans++;
  return g_conv_create(be, d, w, b, relu, res, out, ws);
}

/* max |a - b| over n values, relative to max |b| */
static double rel_diff(const float *a, const float *b, int n) {
  double d = 0, m = 0;
  for (int i = 0; i < n; i++) {
    if (fabs(a[i] - b[i]) > d) d = fabs(a[i] - b[i]);
    if (fabs(b[i]) > m) m = fabs(b[i]);
  }
  return m > 0 ? d / m : d;
}

static int batches(bf_backend *be, const char *work) {
  enum { K = 9, DR = 5, NB = 4 }; /* run_split exported split 9 with D_r 5 */
  char srv[600];
  snprintf(srv, sizeof srv, "%s/deploy/split-%d/server.safetensors", work, K);
  bf_engine *e;
  TU_CHECK(!bf_engine_load(&e, be, (const char *[]){srv}, 1), "server engine: %s", bf_last_error());
  int fh = bf_feature_size(S, K);
  size_t nf = (size_t)fh * fh * DR;
  float *x = malloc(NB * nf * sizeof(float)), *yb = malloc(NB * CLASSES * sizeof(float)),
        *y = malloc(NB * CLASSES * sizeof(float));
  TU_CHECK(x && yb && y, "out of memory");
  for (size_t i = 0; i < NB * nf; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f;
  TU_CHECK(!bf_engine_plan(e, NB, fh, fh, NULL, NULL, NULL) && !bf_engine_run(e, x, yb), "batch of %d: %s", NB,
           bf_last_error());
  double worst = 0;
  int rc = 0;
  for (int round = 0; round < 2 && !rc; round++) {
    if (round == 1) { /* every size planned once: switching now must reuse the kept plans */
      g_alloc = be->alloc, g_conv_create = be->conv_infer_create;
      be->alloc = counting_alloc, be->conv_infer_create = counting_conv_create;
      g_allocs = g_conv_plans = 0;
    }
    for (int n = NB; n >= 1 && !rc; n--) { /* batches 4, 3, 2, 1 of the first n inputs */
      rc = bf_engine_plan(e, n, fh, fh, NULL, NULL, NULL) || bf_engine_run(e, x, y);
      for (int i = 0; i < n && !rc; i++) {
        double d = rel_diff(y + i * CLASSES, yb + i * CLASSES, CLASSES);
        if (d > worst) worst = d;
      }
    }
    for (int i = 0; i < NB && !rc; i++) { /* each input alone */
      rc = bf_engine_run(e, x + i * nf, y);
      double d = rel_diff(y, yb + i * CLASSES, CLASSES);
      if (d > worst) worst = d;
    }
  }
  be->alloc = g_alloc, be->conv_infer_create = g_conv_create;
  TU_CHECK(!rc, "re-planned run: %s", bf_last_error());
  double distinct = rel_diff(yb, yb + CLASSES, CLASSES);
  printf("batches: rows vs alone max rel diff %.3g (rows 0/1 differ by %.3g); switching sizes again: %d allocations, "
         "%d conv plans made\n", worst, distinct, g_allocs, g_conv_plans);
  TU_CHECK(worst <= 1e-5, "a batch row differs from its input alone: %g relative", worst);
  TU_CHECK(distinct > 1e-3, "distinct inputs gave the same logits: the comparison proves nothing");
  TU_CHECK(g_allocs == 0 && g_conv_plans == 0, "switching batch sizes again allocated %d times, made %d conv plans",
           g_allocs, g_conv_plans);
  free(x), free(yb), free(y);
  bf_engine_free(e);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_split_engine WORKDIR\n");
    return 2;
  }
  TU_CHECK(!bf_mkdirs(argv[1]), "mkdir %s", argv[1]);
  bf_backend *be;
  TU_CHECK(!bf_backend_create(&be, "cpu", 0), "backend: %s", bf_last_error());
  double t0 = bf_now_sec();
  int rc = run_split(be, argv[1], 2, 4, 4, 100);
  if (!rc) rc = run_split(be, argv[1], 9, 5, 4, 100);
  if (!rc) rc = batches(be, argv[1]);
  if (!rc) rc = negative_cases(be, argv[1]);
  bf_backend_destroy(be);
  printf("%s in %.1f s\n", rc ? "FAILED" : "OK", bf_now_sec() - t0);
  return rc;
}
