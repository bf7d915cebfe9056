/* Checkpoint = model weights file + training-state sidecar (momentum, loop
 * position, best accuracy, seeds). */
#include "checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "safetensors.h"

void bf_ckpt_state_path(const char *weights_path, char *out, size_t n) {
  size_t len = strlen(weights_path);
  const char *suf = ".safetensors";
  size_t sl = strlen(suf);
  if (len >= sl && strcmp(weights_path + len - sl, suf) == 0)
    snprintf(out, n, "%.*s.state.safetensors", (int)(len - sl), weights_path);
  else
    snprintf(out, n, "%s.state.safetensors", weights_path);
}

/* Conv weights live OHWI in memory and OIHW in files (model.h); momentum has
 * the parameter layout, so it is converted the same way. */

static int needs_perm(const bf_entry *e) { return e->is_conv && !(e->shape[2] == 1 && e->shape[3] == 1); }

static int meta_i64(bf_st_writer *w, const char *k, int64_t v) {
  char b[32];
  snprintf(b, sizeof b, "%" PRId64, v);
  return bf_st_writer_meta(w, k, b);
}

static int meta_u64(bf_st_writer *w, const char *k, uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "%" PRIu64, v);
  return bf_st_writer_meta(w, k, b);
}

static int meta_f64(bf_st_writer *w, const char *k, double v) {
  char b[40];
  snprintf(b, sizeof b, "%.17g", v);
  return bf_st_writer_meta(w, k, b);
}

int bf_ckpt_check_finite(bf_model *m) {
  bf_backend *be = bf_model_backend(m);
  size_t np = bf_model_params_len(m), ns = bf_model_stats_len(m);
  float *host = bf_malloc((np > ns ? np : ns) * sizeof(float), "finiteness check buffer");
  if (!host) return BF_ENOMEM;
  int rc = be->download(be, host, bf_model_params(m), np * sizeof(float));
  for (int i = 0; i < bf_model_num_entries(m) && !rc; i++) {
    const bf_entry *e = bf_model_entry(m, i);
    if (e->kind != BF_ENTRY_PARAM) continue;
    for (size_t j = 0; j < e->numel; j++)
      if (!isfinite(host[e->offset + j])) {
        rc = bf_error(BF_ENUM, "parameter '%s' holds a non-finite value", e->name);
        break;
      }
  }
  if (!rc) rc = be->download(be, host, bf_model_stats(m), ns * sizeof(float));
  for (size_t j = 0; j < ns && !rc; j++)
    if (!isfinite(host[j])) rc = bf_error(BF_ENUM, "a BN running statistic holds a non-finite value");
  free(host);
  return rc;
}

int bf_ckpt_save(bf_model *m, const char *weights_path, const bf_train_state *st, const bf_preprocess *pre) {
  bf_backend *be = bf_model_backend(m);
  size_t np = bf_model_params_len(m);
  BF_TRY(bf_ckpt_check_finite(m));
  char gs[32], ep[32], sp[32];
  snprintf(gs, sizeof gs, "%" PRId64, st->global_step);
  snprintf(ep, sizeof ep, "%" PRId64, st->epoch);
  snprintf(sp, sizeof sp, "%" PRId64, st->step);
  const char *meta[17] = {"global_step", gs, "epoch", ep, "step", sp, NULL};
  bf_preprocess_meta pm;
  if (pre) {
    bf_preprocess_to_meta(pre, &pm);
    memcpy(meta + 6, pm.kv, sizeof pm.kv);
  }
  int rc = bf_model_save(m, weights_path, meta);
  if (rc) return bf_error_wrap(rc, "checkpoint %s", weights_path);

  float *raw = bf_malloc(np * sizeof(float) * 2, "momentum checkpoint buffer");
  if (!raw) return BF_ENOMEM;
  float *file = raw + np;
  rc = be->download(be, raw, bf_model_momentum(m), np * sizeof(float));
  bf_st_writer w;
  bf_st_writer_init(&w);
  for (int i = 0; i < bf_model_num_entries(m) && !rc; i++) {
    const bf_entry *e = bf_model_entry(m, i);
    if (e->kind != BF_ENTRY_PARAM) continue;
    if (needs_perm(e))
      bf_layout_ohwi_to_oihw(raw + e->offset, file + e->offset, e->shape);
    else
      memcpy(file + e->offset, raw + e->offset, e->numel * sizeof(float));
    char name[96];
    snprintf(name, sizeof name, "momentum.%s", e->name);
    rc = bf_st_writer_add(&w, name, BF_DT_F32, e->ndim, e->shape, file + e->offset);
  }
  if (!rc) rc = bf_st_writer_meta(&w, "format", BF_TRAIN_STATE_FORMAT);
  if (!rc) rc = meta_i64(&w, "epoch", st->epoch);
  if (!rc) rc = meta_i64(&w, "step", st->step);
  if (!rc) rc = meta_i64(&w, "global_step", st->global_step);
  if (!rc) rc = meta_i64(&w, "steps_per_epoch", st->steps_per_epoch);
  if (!rc) rc = meta_f64(&w, "best_top1", st->best_top1);
  if (!rc) rc = meta_i64(&w, "best_epoch", st->best_epoch);
  if (!rc) rc = meta_f64(&w, "train_time", st->train_time);
  if (!rc) rc = meta_u64(&w, "seed", st->seed);
  if (!rc) rc = meta_u64(&w, "data_seed", st->data_seed);
  if (!rc) rc = meta_i64(&w, "ranks", st->ranks > 0 ? st->ranks : 1);
  char spath[2048];
  bf_ckpt_state_path(weights_path, spath, sizeof spath);
  if (!rc) rc = bf_st_writer_save(&w, spath);
  if (rc) rc = bf_error_wrap(rc, "checkpoint state %s", spath);
  bf_st_writer_free(&w);
  free(raw);
  return rc;
}

static int get_i64(const bf_safetensors *st, const char *k, int64_t *out) {
  const char *v = bf_st_meta_get(st, k);
  char *end;
  if (!v || !*v) return bf_error(BF_EINVAL, "%s: __metadata__ has no '%s'", st->path, k);
  long long x = strtoll(v, &end, 10);
  if (*end) return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' is not an integer", st->path, k, v);
  *out = x;
  return BF_OK;
}

static int get_u64(const bf_safetensors *st, const char *k, uint64_t *out) {
  const char *v = bf_st_meta_get(st, k);
  char *end;
  if (!v || !*v) return bf_error(BF_EINVAL, "%s: __metadata__ has no '%s'", st->path, k);
  unsigned long long x = strtoull(v, &end, 10);
  if (*end) return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' is not an integer", st->path, k, v);
  *out = x;
  return BF_OK;
}

static int get_f64(const bf_safetensors *st, const char *k, double *out) {
  const char *v = bf_st_meta_get(st, k);
  char *end;
  if (!v || !*v) return bf_error(BF_EINVAL, "%s: __metadata__ has no '%s'", st->path, k);
  double x = strtod(v, &end);
  if (*end) return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' is not a number", st->path, k, v);
  *out = x;
  return BF_OK;
}

static int load_state(bf_model *m, const bf_safetensors *s, bf_train_state *st) {
  const char *fmt = bf_st_meta_get(s, "format");
  if (!fmt || strcmp(fmt, BF_TRAIN_STATE_FORMAT) != 0)
    return bf_error(BF_EINVAL, "%s: format '%s' is not %s", s->path, fmt ? fmt : "(none)", BF_TRAIN_STATE_FORMAT);
  BF_TRY(get_i64(s, "epoch", &st->epoch));
  BF_TRY(get_i64(s, "step", &st->step));
  BF_TRY(get_i64(s, "global_step", &st->global_step));
  BF_TRY(get_i64(s, "steps_per_epoch", &st->steps_per_epoch));
  BF_TRY(get_f64(s, "best_top1", &st->best_top1));
  BF_TRY(get_i64(s, "best_epoch", &st->best_epoch));
  BF_TRY(get_f64(s, "train_time", &st->train_time));
  BF_TRY(get_u64(s, "seed", &st->seed));
  BF_TRY(get_u64(s, "data_seed", &st->data_seed));
  st->ranks = 1; /* written since data-parallel training; older checkpoints come from one process */
  if (bf_st_meta_get(s, "ranks")) BF_TRY(get_i64(s, "ranks", &st->ranks));
  if (st->epoch < 0 || st->step < 0 || st->global_step < 0)
    return bf_error(BF_EINVAL, "%s: negative epoch/step in the metadata", s->path);

  size_t np = bf_model_params_len(m);
  float *host = bf_calloc(np * 2, sizeof(float), "momentum restore buffer");
  if (!host) return BF_ENOMEM;
  float *tmp = host + np;
  int rc = BF_OK;
  for (int i = 0; i < bf_model_num_entries(m) && !rc; i++) {
    const bf_entry *e = bf_model_entry(m, i);
    if (e->kind != BF_ENTRY_PARAM) continue;
    char name[96];
    snprintf(name, sizeof name, "momentum.%s", e->name);
    const bf_st_tensor *t = bf_st_find(s, name);
    if (!t) {
      rc = bf_error(BF_EINVAL, "%s: missing tensor '%s'", s->path, name);
      break;
    }
    int same = t->dtype == BF_DT_F32 && t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
    if (!same) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s' has the wrong dtype or shape for this model", s->path, name);
      break;
    }
    const void *src = bf_st_tensor_data(s, t);
    if (needs_perm(e)) {
      memcpy(tmp + e->offset, src, e->numel * sizeof(float));
      bf_layout_oihw_to_ohwi(tmp + e->offset, host + e->offset, e->shape);
    } else {
      memcpy(host + e->offset, src, e->numel * sizeof(float));
    }
  }
  if (!rc) {
    bf_backend *be = bf_model_backend(m);
    rc = be->upload(be, bf_model_momentum(m), host, np * sizeof(float));
  }
  free(host);
  return rc;
}

int bf_ckpt_load(bf_model *m, const char *weights_path, bf_train_state *st) {
  char spath[2048];
  bf_ckpt_state_path(weights_path, spath, sizeof spath);
  memset(st, 0, sizeof *st);
  int rc = bf_model_load(m, weights_path);
  if (rc) return bf_error_wrap(rc, "checkpoint");
  /* global_step of the weights file must match the sidecar's. */
  bf_safetensors w;
  BF_TRY(bf_st_load(&w, weights_path));
  int64_t wgs = -1;
  rc = get_i64(&w, "global_step", &wgs);
  bf_st_free(&w);
  if (rc) return rc;
  bf_safetensors s;
  rc = bf_st_load(&s, spath);
  if (rc) return bf_error_wrap(rc, "checkpoint state");
  rc = load_state(m, &s, st);
  bf_st_free(&s);
  if (!rc && wgs != st->global_step)
    rc = bf_error(BF_EINVAL, "%s is at global step %" PRId64 " but %s at %" PRId64 " (a save was interrupted?)",
                  weights_path, wgs, spath, st->global_step);
  return rc;
}
