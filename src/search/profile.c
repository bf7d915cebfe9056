/* Profiling phase: export a chosen model (bf_split_export, in-process) and
 * time its device half (+ 8-bit quantisation) and server half with the
 * folded inference engine on the CPU backend: warm-up, then the median of N. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bf_core.h"
#include "engine.h"
#include "frame.h"
#include "measure.h"
#include "quant.h"
#include "search_internal.h"

static double median(double *v, int n) {
  bf_timing t;
  bf_timing_summarize(v, n, &t);
  return t.median_ms;
}

int bf_profile_model(const char *checkpoint, const char *deploy_root, int input_size, const bf_search_config *c,
                     bf_profile *p) {
  memset(p, 0, sizeof *p);
  bf_export_opts eo;
  bf_data_config dc;
  int rc = srch_export_opts(c, input_size, &dc, &eo);
  if (!rc) rc = bf_split_export(checkpoint, deploy_root, &eo, p->deploy_dir, sizeof p->deploy_dir);
  if (rc) return bf_error_wrap(rc, "profiling: export of %s", checkpoint);
  snprintf(p->device_path, sizeof p->device_path, "%s/device.safetensors", p->deploy_dir);
  snprintf(p->server_path, sizeof p->server_path, "%s/server.safetensors", p->deploy_dir);

  int n = c->prof_runs;
  double *tdev = calloc((size_t)n, sizeof *tdev), *tq = calloc((size_t)n, sizeof *tq),
         *tsrv = calloc((size_t)n, sizeof *tsrv);
  float *in = NULL, *feat = NULL, *deq = NULL, *logits = NULL;
  uint8_t *q = NULL;
  bf_backend *be = NULL;
  bf_engine *e = NULL;
  if (!tdev || !tq || !tsrv) {
    rc = bf_error(BF_ENOMEM, "profiling");
    goto done;
  }
  /* device half: each half is timed on a backend context of its own, with
   * that side's thread count (backend.h: a context owns its threads) */
  const char *dp = p->device_path, *sp = p->server_path;
  if ((rc = bf_backend_create(&be, "cpu", c->device_threads))) goto done;
  if ((rc = bf_engine_load(&e, be, &dp, 1))) goto done;
  int oh, ow, oc;
  if ((rc = bf_engine_plan(e, 1, input_size, input_size, &oh, &ow, &oc))) goto done;
  p->split = bf_engine_split_after(e);
  p->d_r = bf_engine_d_r(e);
  p->feat_h = oh;
  p->feat_w = ow;
  p->feat_c = oc;
  size_t nin = (size_t)input_size * input_size * (size_t)bf_engine_input_channels(e), nf = (size_t)oh * ow * oc;
  in = malloc(nin * sizeof *in);
  feat = malloc(nf * sizeof *feat);
  deq = malloc(nf * sizeof *deq);
  q = malloc(nf);
  if (!in || !feat || !deq || !q) {
    rc = bf_error(BF_ENOMEM, "profiling buffers");
    goto done;
  }
  bf_measure_fill_input(in, nin);
  float scale = 1;
  int32_t zp = 0;
  if ((rc = bf_measure_device_half(e, in, feat, (size_t)oh * ow, oc, q, c->prof_warmup, n, tdev, tq, &scale, &zp)))
    goto done;
  bf_dequantize(q, (size_t)oh * ow, oc, 0, &scale, &zp, deq);
  bf_engine_free(e);
  e = NULL;
  bf_backend_destroy(be);
  be = NULL;
  p->device_ms = median(tdev, n);
  p->quant_ms = median(tq, n);
  p->payload_bytes = nf;
  p->frame_bytes = (size_t)bf_infer_raw_frame_len(BF_Q_U8_TENSOR, nf, (uint32_t)oc);

  /* server half */
  if ((rc = bf_backend_create(&be, "cpu", c->server_threads))) goto done;
  if ((rc = bf_engine_load(&e, be, &sp, 1))) goto done;
  int lh, lw, lc;
  if ((rc = bf_engine_plan(e, 1, oh, ow, &lh, &lw, &lc))) goto done;
  logits = malloc((size_t)lh * lw * lc * sizeof *logits);
  if (!logits) {
    rc = bf_error(BF_ENOMEM, "profiling logits");
    goto done;
  }
  if ((rc = bf_measure_engine(e, deq, logits, c->prof_warmup, n, tsrv))) goto done;
  p->server_ms = median(tsrv, n);

done:
  if (e) bf_engine_free(e);
  if (be) bf_backend_destroy(be);
  free(tdev);
  free(tq);
  free(tsrv);
  free(in);
  free(feat);
  free(deq);
  free(q);
  free(logits);
  if (rc) return bf_error_wrap(rc, "profiling RB%d", p->split);
  return 0;
}

int bf_profile_full(const bf_profile *p, int input_size, int threads, const bf_search_config *c, double *ms) {
  const char *paths[2] = {p->device_path, p->server_path};
  bf_backend *be = NULL;
  bf_engine *e = NULL;
  float *in = NULL, *out = NULL;
  int n = c->prof_runs;
  double *t = calloc((size_t)n, sizeof *t);
  int rc = t ? bf_backend_create(&be, "cpu", threads) : bf_error(BF_ENOMEM, "profiling");
  if (!rc) rc = bf_engine_load(&e, be, paths, 2);
  int oh, ow, oc;
  if (!rc) rc = bf_engine_plan(e, 1, input_size, input_size, &oh, &ow, &oc);
  if (!rc) {
    size_t nin = (size_t)input_size * input_size * (size_t)bf_engine_input_channels(e);
    in = malloc(nin * sizeof *in);
    out = malloc((size_t)oh * ow * oc * sizeof *out);
    if (!in || !out) rc = bf_error(BF_ENOMEM, "profiling");
    else bf_measure_fill_input(in, nin);
  }
  if (!rc) rc = bf_measure_engine(e, in, out, c->prof_warmup, n, t);
  if (!rc) *ms = median(t, n);
  if (e) bf_engine_free(e);
  if (be) bf_backend_destroy(be);
  free(t);
  free(in);
  free(out);
  return rc ? bf_error_wrap(rc, "profiling the whole model (%d threads)", threads) : 0;
}
