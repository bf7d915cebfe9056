/* The device half's output, written for a cross-architecture comparison
 * (ctest arm64_device_half, docs in tests/arm64/arm64_qemu.sh):
 *   split_device_dump dump DEPLOY SPLIT OUT.safetensors IMAGE...
 *   split_device_dump compare REF.safetensors GOT.safetensors REL_TOL CODE_TOL
 * dump prepares each image and runs the device half exactly as bf-client
 * does (bf_load_image_rgb, bf_normalize_rgb, bf_engine_run on one CPU
 * thread) and writes the float features and their 8-bit codes, per tensor
 * and per channel (bf_quant_params + bf_quantize, what bf_features_encode
 * sends). bf-client itself has no such output: it sends the codes away.
 * compare checks every float tensor normwise (max |got - ref| <= REL_TOL *
 * max |ref|) and every uint8 tensor elementwise (|got - ref| <= CODE_TOL). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bf_core.h"
#include "engine.h"
#include "preprocess.h"
#include "quant.h"
#include "safetensors.h"
#include "split.h"

static int dump(const char *deploy, int split, const char *out, char **images, int n) {
  bf_deploy d;
  BF_TRY(bf_deploy_open(&d, deploy));
  const bf_deploy_split *ds = bf_deploy_find(&d, split);
  if (!ds) {
    bf_deploy_close(&d);
    return bf_error(BF_EINVAL, "%s has no split-%d", deploy, split);
  }
  bf_backend *be = NULL;
  bf_engine *e = NULL;
  int rc = bf_deploy_verify(ds, 1, 0);
  if (!rc) rc = bf_backend_create(&be, "cpu", 1);
  if (!rc) rc = bf_engine_load(&e, be, (const char *[]){ds->device_path}, 1);
  int oh = 0, ow = 0, oc = 0;
  if (!rc) rc = bf_engine_plan(e, 1, ds->in_h, ds->in_w, &oh, &ow, &oc);
  size_t px = (size_t)ds->in_h * ds->in_w, fe = (size_t)oh * ow * oc;
  uint8_t *rgb = rc ? NULL : bf_malloc(px * 3, "image");
  float *x = rc ? NULL : bf_malloc(px * 3 * sizeof(float), "input");
  float *feat = rc ? NULL : bf_malloc(fe * n * sizeof(float), "features");
  uint8_t *qt = rc ? NULL : bf_malloc(fe * n, "codes"), *qc = rc ? NULL : bf_malloc(fe * n, "codes");
  float *scale = rc ? NULL : bf_malloc(sizeof(float) * oc, "scales");
  int32_t *zp = rc ? NULL : bf_malloc(sizeof(int32_t) * oc, "zero points");
  if (!rc && (!rgb || !x || !feat || !qt || !qc || !scale || !zp)) rc = BF_ENOMEM;
  for (int i = 0; !rc && i < n; i++) {
    float *f = feat + fe * i;
    rc = bf_load_image_rgb(images[i], ds->resize, ds->in_w, rgb);
    if (rc) break;
    bf_normalize_rgb(rgb, px, ds->mean, ds->std, x);
    rc = bf_engine_run(e, x, f);
    if (rc) break;
    for (int per_ch = 0; per_ch <= 1; per_ch++) {
      bf_quant_params(f, (size_t)oh * ow, oc, per_ch, scale, zp);
      bf_quantize(f, (size_t)oh * ow, oc, per_ch, scale, zp, (per_ch ? qc : qt) + fe * i);
    }
  }
  if (!rc) {
    bf_st_writer w;
    bf_st_writer_init(&w);
    int64_t shape[4] = {n, oh, ow, oc};
    rc = bf_st_writer_add(&w, "features", BF_DT_F32, 4, shape, feat);
    if (!rc) rc = bf_st_writer_add(&w, "codes.per_tensor", BF_DT_U8, 4, shape, qt);
    if (!rc) rc = bf_st_writer_add(&w, "codes.per_channel", BF_DT_U8, 4, shape, qc);
    if (!rc) rc = bf_st_writer_save(&w, out);
    bf_st_writer_free(&w);
  }
  free(rgb), free(x), free(feat), free(qt), free(qc), free(scale), free(zp);
  bf_engine_free(e);
  bf_backend_destroy(be);
  bf_deploy_close(&d);
  return rc;
}

static int compare(const char *ref_path, const char *got_path, double rel_tol, int code_tol) {
  bf_safetensors ref, got;
  BF_TRY(bf_st_load(&ref, ref_path));
  int rc = bf_st_load(&got, got_path);
  if (rc) {
    bf_st_free(&ref);
    return rc;
  }
  int bad = 0;
  for (int t = 0; !rc && t < ref.n_tensors; t++) {
    const bf_st_tensor *a = &ref.tensors[t], *b = bf_st_find(&got, a->name);
    if (!b || b->dtype != a->dtype || b->numel != a->numel) {
      rc = bf_error(BF_EINVAL, "%s: tensor %s missing or of another type/size than in %s", got_path, a->name,
                    ref_path);
      break;
    }
    const void *pa = bf_st_tensor_data(&ref, a), *pb = bf_st_tensor_data(&got, b);
    if (a->dtype == BF_DT_F32) {
      double maxref = 0, maxdiff = 0;
      for (size_t i = 0; i < a->numel; i++) {
        float va, vb;
        memcpy(&va, (const char *)pa + 4 * i, 4);
        memcpy(&vb, (const char *)pb + 4 * i, 4);
        if (!isfinite(vb)) maxdiff = INFINITY;
        maxref = fmax(maxref, fabs(va));
        maxdiff = fmax(maxdiff, fabs((double)va - vb));
      }
      double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
      int ok = rel <= rel_tol && maxref > 0;
      printf("%s %s: %zu floats, max |ref| %.6g, max |diff| %.3g, relative %.3g (limit %.3g)\n", ok ? "OK  " : "FAIL",
             a->name, a->numel, maxref, maxdiff, rel, rel_tol);
      bad += !ok;
    } else if (a->dtype == BF_DT_U8) {
      const uint8_t *qa = pa, *qb = pb;
      int maxd = 0;
      size_t ndiff = 0;
      for (size_t i = 0; i < a->numel; i++) {
        int dlt = abs((int)qa[i] - (int)qb[i]);
        ndiff += dlt != 0;
        if (dlt > maxd) maxd = dlt;
      }
      int ok = maxd <= code_tol;
      printf("%s %s: %zu codes, %zu differ, max |diff| %d (limit %d)\n", ok ? "OK  " : "FAIL", a->name, a->numel,
             ndiff, maxd, code_tol);
      bad += !ok;
    }
  }
  if (!rc && ref.n_tensors != got.n_tensors)
    rc = bf_error(BF_EINVAL, "%s holds %d tensors, %s %d", got_path, got.n_tensors, ref_path, ref.n_tensors);
  bf_st_free(&ref);
  bf_st_free(&got);
  if (rc) return rc;
  return bad ? bf_error(BF_EINVAL, "%d tensor(s) of %s differ from %s beyond the limits", bad, got_path, ref_path)
             : 0;
}

int main(int argc, char **argv) {
  int rc;
  if (argc >= 6 && !strcmp(argv[1], "dump")) {
    rc = dump(argv[2], atoi(argv[3]), argv[4], argv + 5, argc - 5);
  } else if (argc == 6 && !strcmp(argv[1], "compare")) {
    rc = compare(argv[2], argv[3], atof(argv[4]), atoi(argv[5]));
  } else {
    fprintf(stderr, "usage: split_device_dump dump DEPLOY SPLIT OUT.safetensors IMAGE...\n"
                    "       split_device_dump compare REF.safetensors GOT.safetensors REL_TOL CODE_TOL\n");
    return 2;
  }
  if (rc) fprintf(stderr, "split_device_dump: error: %s\n", bf_last_error());
  return rc ? 1 : 0;
}
