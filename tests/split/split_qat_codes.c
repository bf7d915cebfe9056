/* The codes of a quantisation-aware export, three ways, on the same images
 * (tests/split/qat_e2e.sh):
 *   client: the exported device half (folded engine) + bf-client's encoder
 *           with the manifest's bits and clip (bf_features_encode_ex), as
 *           bf-client runs them;
 *   op:     the training op (backend quant_forward) with the checkpoint's own
 *           clip parameter and bits, on the device half's features;
 *   model:  the training model's eval forward (unfolded BN) and its codes.
 * client == op must hold bit for bit (same features in, same quantiser). The
 * model's features differ from the folded half's by float rounding, so a
 * code may differ where a feature sits within that rounding of a step
 * boundary; any other difference fails.
 *
 *   split_qat_codes SPLIT_DIR CHECKPOINT OUT_CODES OUT_INPUT IMAGE...
 * OUT_CODES: the client codes of every image, one after the other (for cmp
 * with bf-client --dump-codes); OUT_INPUT: safetensors 'images' [N,3,H,W] as
 * bf-client normalises them (bf-infer --input). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "preprocess.h"
#include "quant.h"
#include "quant_math.h"
#include "safetensors.h"
#include "split.h"
#include "split_testutil.h"

static int run(int argc, char **argv) {
  TU_CHECK(argc >= 6, "usage: split_qat_codes SPLIT_DIR CHECKPOINT OUT_CODES OUT_INPUT IMAGE...");
  const char *ckpt = argv[2];
  const int n_img = argc - 5;
  bf_deploy dep;
  TU_CHECK(!bf_deploy_open(&dep, argv[1]), "deploy: %s", bf_last_error());
  const bf_deploy_split *ds = &dep.splits[0];
  TU_CHECK(ds->clip > 0 && ds->bits >= 2 && ds->bits <= 8, "manifest: not a quantisation-aware export");
  bf_backend *be;
  TU_CHECK(!bf_backend_create(&be, "cpu", 1), "backend: %s", bf_last_error());
  bf_engine *dev;
  TU_CHECK(!bf_engine_load(&dev, be, (const char *[]){ds->device_path}, 1), "device half: %s", bf_last_error());
  TU_CHECK(!bf_deploy_check_engine(ds, dev, "device-half"), "%s", bf_last_error());
  int fh, fw, fc;
  TU_CHECK(!bf_engine_plan(dev, 1, ds->in_h, ds->in_w, &fh, &fw, &fc), "plan: %s", bf_last_error());
  bf_model_config cfg;
  bf_model *m;
  TU_CHECK(!bf_model_config_from_file(ckpt, &cfg), "%s", bf_last_error());
  TU_CHECK(cfg.quant_bits == ds->bits, "manifest bits %d, checkpoint %d", ds->bits, cfg.quant_bits);
  TU_CHECK(!bf_model_create(&m, be, &cfg) && !bf_model_load(m, ckpt), "model: %s", bf_last_error());
  TU_CHECK(!bf_model_plan(m, 1, ds->in_h, ds->in_w), "plan: %s", bf_last_error());
  float clip;
  TU_CHECK(!bf_model_quant_clip_get(m, &clip), "%s", bf_last_error());
  TU_CHECK(clip == ds->clip, "manifest clip %.9g != checkpoint clip %.9g", (double)ds->clip, (double)clip);

  const size_t px = (size_t)ds->in_h * ds->in_w, ne = (size_t)fh * fw * fc;
  uint8_t *rgb = malloc(px * 3), *c_op = malloc(ne), *c_model = malloc(ne), *all = malloc(ne * n_img);
  float *x = malloc(px * 3 * sizeof(float)), *feat = malloc(ne * sizeof(float));
  float *nchw = malloc(px * 3 * n_img * sizeof(float));
  float *dfeat = be->alloc(be, ne * sizeof(float)), *dqy = be->alloc(be, ne * sizeof(float));
  uint8_t *dcodes = be->alloc(be, ne);
  TU_CHECK(rgb && c_op && c_model && all && x && feat && nchw && dfeat && dqy && dcodes, "memory");
  const float s = bf_quant_scale(clip, cfg.quant_bits);
  size_t near = 0, total = 0;
  for (int i = 0; i < n_img; i++) {
    TU_CHECK(!bf_load_image_rgb(argv[5 + i], ds->resize, ds->in_w, rgb), "%s", bf_last_error());
    bf_normalize_rgb(rgb, px, ds->mean, ds->std, x);
    for (size_t p = 0; p < px; p++)
      for (int ch = 0; ch < 3; ch++) nchw[((size_t)i * 3 + ch) * px + p] = x[p * 3 + ch];
    /* client */
    TU_CHECK(!bf_engine_run(dev, x, feat), "device half: %s", bf_last_error());
    bf_frame f;
    memset(&f, 0, sizeof f);
    uint8_t *body;
    size_t blen;
    bf_qfixed fx = {ds->bits, ds->clip};
    TU_CHECK(!bf_features_encode_ex(feat, fh, fw, fc, BF_Q_U8_TENSOR, &fx, BF_CODEC_RAW, 3, NULL, &f, &body, &blen),
             "encode: %s", bf_last_error());
    TU_CHECK(blen == 8 + ne && f.raw_len == ne, "frame body %zu bytes", blen);
    TU_CHECK(bf_get_f32(body) == s && bf_get_u32(body + 4) == 0, "frame scale %.9g zp %u, want %.9g 0",
             (double)bf_get_f32(body), bf_get_u32(body + 4), (double)s);
    memcpy(all + ne * i, body + 8, ne);
    free(body);
    /* the training op on the same features, with the checkpoint's clip */
    TU_CHECK(!be->upload(be, dfeat, feat, ne * sizeof(float)) &&
                 !be->quant_forward(be, ne, dfeat, bf_model_quant_clip(m), cfg.quant_bits, dqy, dcodes) &&
                 !be->download(be, c_op, dcodes, ne),
             "quant_forward: %s", bf_last_error());
    for (size_t k = 0; k < ne; k++)
      TU_CHECK(c_op[k] == all[ne * i + k], "image %d element %zu: training op code %d, client code %d (feature %.9g)",
               i, k, c_op[k], all[ne * i + k], (double)feat[k]);
    /* the training model's eval forward: the codes it trained with */
    int h, w, c;
    TU_CHECK(!be->upload(be, bf_model_input(m), x, px * 3 * sizeof(float)) && !bf_model_forward(m, 0),
             "model forward: %s", bf_last_error());
    TU_CHECK(!be->download(be, c_model, bf_model_split_codes(m), ne), "%s", bf_last_error());
    bf_model_split_features(m, &h, &w, &c);
    TU_CHECK((size_t)h * w * c == ne, "model features %dx%dx%d", h, w, c);
    for (size_t k = 0; k < ne; k++) {
      total++;
      if (c_model[k] == all[ne * i + k]) continue;
      /* allowed only on a rounding boundary: the device feature within 1e-4
       * steps of (q + 0.5) s, and codes one apart */
      double t = feat[k] / s, frac = t - floor(t);
      int adj = abs((int)c_model[k] - (int)all[ne * i + k]) == 1;
      TU_CHECK(adj && fabs(frac - 0.5) < 1e-4, "image %d element %zu: model code %d, client code %d, feature %.9g",
               i, k, c_model[k], all[ne * i + k], (double)feat[k]);
      near++;
    }
  }
  size_t hist[256] = {0};
  for (size_t k = 0; k < ne * n_img; k++) hist[all[k]]++;
  int used = 0;
  for (int q = 0; q < 256; q++) used += hist[q] > 0;
  printf("split_qat_codes: %d images, %zu codes, bits %d clip %.6g: client == training op on every code; "
         "training model (unfolded) differs on %zu (rounding-boundary ties); %d distinct codes\n",
         n_img, ne * n_img, ds->bits, (double)clip, near, used);
  TU_CHECK(used >= 2, "all codes equal: the comparison would prove nothing");
  FILE *fp = fopen(argv[3], "wb");
  TU_CHECK(fp && fwrite(all, 1, ne * n_img, fp) == ne * n_img && !fclose(fp), "%s: write failed", argv[3]);
  bf_st_writer wr;
  bf_st_writer_init(&wr);
  int64_t shape[4] = {n_img, 3, ds->in_h, ds->in_w};
  TU_CHECK(!bf_st_writer_add(&wr, "images", BF_DT_F32, 4, shape, nchw) && !bf_st_writer_save(&wr, argv[4]), "%s",
           bf_last_error());
  bf_st_writer_free(&wr);
  be->free(be, dfeat), be->free(be, dqy), be->free(be, dcodes);
  free(rgb), free(c_op), free(c_model), free(all), free(x), free(feat), free(nchw);
  bf_model_free(m);
  bf_engine_free(dev);
  bf_backend_destroy(be);
  bf_deploy_close(&dep);
  return 0;
}

int main(int argc, char **argv) { return run(argc, argv); }
