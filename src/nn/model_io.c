/* The model's files: the state_dict as safetensors with torchvision names
 * (save, strict load, warm start) and the model config in __metadata__. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "safetensors.h"

int bf_model_entry_get(bf_model *m, const bf_entry *e, int from_grads, float *dst) {
  bf_backend *be = m->be;
  if (e->kind == BF_ENTRY_COUNTER) return bf_error(BF_EINVAL, "%s is not a float tensor", e->name);
  const float *src = e->kind == BF_ENTRY_STAT ? m->stats + e->offset
                                              : (from_grads ? m->grads : m->params) + e->offset;
  if (!e->is_conv || (e->shape[2] == 1 && e->shape[3] == 1))
    return be->download(be, dst, src, e->numel * sizeof(float));
  float *tmp = bf_malloc(e->numel * sizeof(float), e->name);
  if (!tmp) return BF_ENOMEM;
  int rc = be->download(be, tmp, src, e->numel * sizeof(float));
  if (!rc) bf_layout_ohwi_to_oihw(tmp, dst, e->shape);
  free(tmp);
  return rc;
}

int bf_model_save(bf_model *m, const char *path, const char *const *extra_meta) {
  bf_st_writer w;
  bf_st_writer_init(&w);
  size_t total = 0;
  for (int i = 0; i < m->n_entries; i++)
    if (m->entries[i].kind != BF_ENTRY_COUNTER) total += m->entries[i].numel;
  float *host = bf_malloc(total * sizeof(float), "weights file buffer");
  if (!host) return BF_ENOMEM;
  int rc = BF_OK;
  size_t off = 0;
  for (int i = 0; i < m->n_entries && !rc; i++) {
    const bf_entry *e = &m->entries[i];
    if (e->kind == BF_ENTRY_COUNTER) {
      rc = bf_st_writer_add(&w, e->name, BF_DT_I64, 0, NULL, &m->counters[e->offset]);
    } else {
      rc = bf_model_entry_get(m, e, 0, host + off);
      if (!rc) rc = bf_st_writer_add(&w, e->name, BF_DT_F32, e->ndim, e->shape, host + off);
      off += e->numel;
    }
  }
  char buf[32];
  if (!rc) rc = bf_st_writer_meta(&w, "format", MODEL_FORMAT);
  snprintf(buf, sizeof buf, "%d", m->cfg.split_after);
  if (!rc) rc = bf_st_writer_meta(&w, "split_after", buf);
  snprintf(buf, sizeof buf, "%d", m->cfg.d_r);
  if (!rc) rc = bf_st_writer_meta(&w, "d_r", buf);
  snprintf(buf, sizeof buf, "%d", m->cfg.num_classes);
  if (!rc) rc = bf_st_writer_meta(&w, "num_classes", buf);
  /* only with a quantiser: float models' files stay as they were */
  snprintf(buf, sizeof buf, "%d", m->cfg.quant_bits);
  if (!rc && m->cfg.quant_bits) rc = bf_st_writer_meta(&w, "quant_bits", buf);
  for (int i = 0; extra_meta && extra_meta[i] && extra_meta[i + 1] && !rc; i += 2)
    rc = bf_st_writer_meta(&w, extra_meta[i], extra_meta[i + 1]);
  if (!rc) rc = bf_st_writer_save(&w, path);
  bf_st_writer_free(&w);
  free(host);
  return rc;
}

static int meta_int(const bf_safetensors *st, const char *key, int *out) {
  const char *v = bf_st_meta_get(st, key);
  if (!v) return bf_error(BF_EINVAL, "%s: __metadata__ has no '%s' (not a butterfly weights file?)", st->path, key);
  char *end;
  long x = strtol(v, &end, 10);
  if (*v == 0 || *end || x < -1000000000L || x > 1000000000L)
    return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' is not an integer", st->path, key, v);
  *out = (int)x;
  return BF_OK;
}

static int config_from_st(const bf_safetensors *st, bf_model_config *cfg) {
  const char *fmt = bf_st_meta_get(st, "format");
  if (fmt && strcmp(fmt, MODEL_FORMAT) != 0)
    return bf_error(BF_EINVAL, "%s: format '%s' is not supported (expected %s)", st->path, fmt, MODEL_FORMAT);
  BF_TRY(meta_int(st, "num_classes", &cfg->num_classes));
  BF_TRY(meta_int(st, "split_after", &cfg->split_after));
  BF_TRY(meta_int(st, "d_r", &cfg->d_r));
  cfg->quant_bits = 0; /* absent: a float model */
  if (bf_st_meta_get(st, "quant_bits")) BF_TRY(meta_int(st, "quant_bits", &cfg->quant_bits));
  int rc = bf_model_config_check(cfg);
  if (rc) return bf_error_wrap(rc, "%s: __metadata__", st->path);
  return BF_OK;
}

int bf_model_config_from_file(const char *path, bf_model_config *cfg) {
  bf_safetensors st;
  BF_TRY(bf_st_load(&st, path));
  int rc = config_from_st(&st, cfg);
  bf_st_free(&st);
  return rc;
}

static int shape_str(char *buf, size_t n, int ndim, const int64_t *s) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)s[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return 0;
}

/* Copies one validated tensor from the file into the model. */
static int load_entry(bf_model *m, const bf_safetensors *st, const bf_entry *e, const bf_st_tensor *t) {
  const void *src = bf_st_tensor_data(st, t);
  if (e->kind == BF_ENTRY_COUNTER) {
    memcpy(&m->counters[e->offset], src, sizeof(int64_t));
    return BF_OK;
  }
  /* File data need not be aligned: copy out before use. */
  float *tmp = bf_malloc(e->numel * 2 * sizeof(float), e->name);
  if (!tmp) return BF_ENOMEM;
  memcpy(tmp, src, e->numel * sizeof(float));
  int rc = BF_OK;
  for (size_t j = 0; j < e->numel && !rc; j++)
    if (!isfinite(tmp[j]))
      rc = bf_error(BF_ENUM, "%s: tensor '%s' holds a non-finite value at index %zu", st->path, e->name, j);
  const float *up = tmp;
  if (!rc && e->is_conv && !(e->shape[2] == 1 && e->shape[3] == 1)) {
    bf_layout_oihw_to_ohwi(tmp, tmp + e->numel, e->shape);
    up = tmp + e->numel;
  }
  float *dst = e->kind == BF_ENTRY_STAT ? m->stats + e->offset : m->params + e->offset;
  if (!rc) rc = m->be->upload(m->be, dst, up, e->numel * sizeof(float));
  free(tmp);
  return rc;
}

static int entry_matches(const bf_entry *e, const bf_st_tensor *t) {
  if (!t || t->dtype != (e->kind == BF_ENTRY_COUNTER ? BF_DT_I64 : BF_DT_F32) || t->ndim != e->ndim) return 0;
  for (int d = 0; d < e->ndim; d++)
    if (t->shape[d] != e->shape[d]) return 0;
  return 1;
}

int bf_model_load_matching(bf_model *m, const char *path, int *n_loaded, int *n_kept) {
  bf_safetensors st;
  BF_TRY(bf_st_load(&st, path));
  int rc = BF_OK, loaded = 0, kept = 0, clip_loaded = 0;
  for (int i = 0; i < m->n_entries && !rc; i++) {
    const bf_st_tensor *t = bf_st_find(&st, m->entries[i].name);
    if (entry_matches(&m->entries[i], t)) {
      rc = load_entry(m, &st, &m->entries[i], t);
      loaded++;
      clip_loaded |= i == m->clip_e;
    } else {
      kept++;
    }
  }
  /* a float model's BN into a quantised one: the clip starts from that BN */
  if (!rc && loaded && m->clip_e >= 0 && !clip_loaded) rc = bf_model_quant_clip_from_bn(m);
  if (!rc && loaded == 0)
    rc = bf_error(BF_EINVAL, "%s: no tensor matches this model by name and shape (not a ResNet-50 file?)", path);
  bf_st_free(&st);
  if (n_loaded) *n_loaded = loaded;
  if (n_kept) *n_kept = kept;
  return rc;
}

int bf_model_load(bf_model *m, const char *path) {
  bf_safetensors st;
  BF_TRY(bf_st_load(&st, path));
  int rc = BF_OK;
  bf_model_config fc = {0};
  if ((rc = config_from_st(&st, &fc))) goto done;
  if (fc.num_classes != m->cfg.num_classes || fc.split_after != m->cfg.split_after ||
      (fc.split_after && fc.d_r != m->cfg.d_r) || fc.quant_bits != m->cfg.quant_bits) {
    rc = bf_error(BF_EINVAL,
                  "%s: holds a model with classes=%d split_after=%d d_r=%d quant_bits=%d, expected %d/%d/%d/%d", path,
                  fc.num_classes, fc.split_after, fc.d_r, fc.quant_bits, m->cfg.num_classes, m->cfg.split_after,
                  m->cfg.d_r, m->cfg.quant_bits);
    goto done;
  }
  /* Validate everything before touching the model. */
  for (int i = 0; i < m->n_entries; i++) {
    const bf_entry *e = &m->entries[i];
    const bf_st_tensor *t = bf_st_find(&st, e->name);
    if (!t) {
      rc = bf_error(BF_EINVAL, "%s: missing tensor '%s'", path, e->name);
      goto done;
    }
    bf_dtype want = e->kind == BF_ENTRY_COUNTER ? BF_DT_I64 : BF_DT_F32;
    if (t->dtype != want) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s' has dtype %s, expected %s", path, e->name, bf_dtype_name(t->dtype),
                    bf_dtype_name(want));
      goto done;
    }
    int same = t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
    if (!same) {
      char a[96], b[96];
      shape_str(a, sizeof a, t->ndim, t->shape);
      shape_str(b, sizeof b, e->ndim, e->shape);
      rc = bf_error(BF_EINVAL, "%s: tensor '%s' has shape %s, expected %s", path, e->name, a, b);
      goto done;
    }
  }
  for (int i = 0; i < st.n_tensors; i++) {
    int known = 0;
    for (int j = 0; j < m->n_entries && !known; j++) known = strcmp(st.tensors[i].name, m->entries[j].name) == 0;
    if (!known) {
      rc = bf_error(BF_EINVAL, "%s: unexpected tensor '%s' (not part of this model)", path, st.tensors[i].name);
      goto done;
    }
  }
  for (int i = 0; i < m->n_entries && !rc; i++)
    rc = load_entry(m, &st, &m->entries[i], bf_st_find(&st, m->entries[i].name));
done:
  bf_st_free(&st);
  return rc;
}
