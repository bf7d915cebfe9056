#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* ---------------- state-dict construction ---------------- */

static int add_entry(bf_model *m, const char *name, bf_entry_kind kind, int ndim, const int64_t *shape, int is_conv,
                     int decay) {
  if (m->n_entries == m->cap_entries) {
    int cap = m->cap_entries ? m->cap_entries * 2 : 256;
    bf_entry *e = realloc(m->entries, (size_t)cap * sizeof *e);
    if (!e) return bf_error(BF_ENOMEM, "out of memory building the model");
    m->entries = e;
    m->cap_entries = cap;
  }
  bf_entry *e = &m->entries[m->n_entries];
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  e->kind = kind;
  e->ndim = ndim;
  e->numel = 1;
  for (int i = 0; i < ndim; i++) {
    e->shape[i] = shape[i];
    e->numel *= (size_t)shape[i];
  }
  e->is_conv = is_conv;
  e->decay = decay;
  return m->n_entries++;
}

static int add_conv(bf_model *m, conv_l *c, const char *name, int in, int out, int k, int stride, int pad) {
  c->in = in, c->out = out, c->k = k, c->stride = stride, c->pad = pad;
  char full[64];
  snprintf(full, sizeof full, "%s.weight", name);
  int64_t shape[4] = {out, in, k, k};
  c->entry = add_entry(m, full, BF_ENTRY_PARAM, 4, shape, 1, 1);
  return c->entry < 0 ? c->entry : BF_OK;
}

static int add_bn(bf_model *m, bn_l *b, const char *name, int c) {
  char full[64];
  int64_t shape[1] = {c};
  b->c = c;
  snprintf(full, sizeof full, "%s.weight", name);
  if ((b->e_gamma = add_entry(m, full, BF_ENTRY_PARAM, 1, shape, 0, 0)) < 0) return b->e_gamma;
  snprintf(full, sizeof full, "%s.bias", name);
  if ((b->e_beta = add_entry(m, full, BF_ENTRY_PARAM, 1, shape, 0, 0)) < 0) return b->e_beta;
  snprintf(full, sizeof full, "%s.running_mean", name);
  if ((b->e_mean = add_entry(m, full, BF_ENTRY_STAT, 1, shape, 0, 0)) < 0) return b->e_mean;
  snprintf(full, sizeof full, "%s.running_var", name);
  if ((b->e_var = add_entry(m, full, BF_ENTRY_STAT, 1, shape, 0, 0)) < 0) return b->e_var;
  snprintf(full, sizeof full, "%s.num_batches_tracked", name);
  if ((b->e_count = add_entry(m, full, BF_ENTRY_COUNTER, 0, NULL, 0, 0)) < 0) return b->e_count;
  m->n_bn++;
  return BF_OK;
}

static int build_graph(bf_model *m) {
  BF_TRY(add_conv(m, &m->stem, "conv1", 3, BF_STEM_C, BF_STEM_K, BF_STEM_STRIDE, BF_STEM_PAD));
  BF_TRY(add_bn(m, &m->stem_bn, "bn1", BF_STEM_C));
  for (int rb = 0; rb < BF_NUM_RB; rb++) {
    block_l *b = &m->blocks[rb];
    bf_rb_info L;
    BF_TRY(bf_rb_layout(rb + 1, &L));
    char n[64];
    b->in_c = L.in_c, b->mid = L.mid, b->out_c = L.out_c;
    b->stride = L.stride;
    b->has_ds = L.has_downsample;
    snprintf(n, sizeof n, "%s.conv1", L.prefix);
    BF_TRY(add_conv(m, &b->c1, n, L.in_c, L.mid, 1, 1, 0));
    snprintf(n, sizeof n, "%s.bn1", L.prefix);
    BF_TRY(add_bn(m, &b->b1, n, L.mid));
    snprintf(n, sizeof n, "%s.conv2", L.prefix);
    BF_TRY(add_conv(m, &b->c2, n, L.mid, L.mid, 3, L.stride, 1));
    snprintf(n, sizeof n, "%s.bn2", L.prefix);
    BF_TRY(add_bn(m, &b->b2, n, L.mid));
    snprintf(n, sizeof n, "%s.conv3", L.prefix);
    BF_TRY(add_conv(m, &b->c3, n, L.mid, L.out_c, 1, 1, 0));
    snprintf(n, sizeof n, "%s.bn3", L.prefix);
    BF_TRY(add_bn(m, &b->b3, n, L.out_c));
    if (b->has_ds) {
      snprintf(n, sizeof n, "%s.downsample.0", L.prefix);
      BF_TRY(add_conv(m, &b->ds, n, L.in_c, L.out_c, 1, L.stride, 0));
      snprintf(n, sizeof n, "%s.downsample.1", L.prefix);
      BF_TRY(add_bn(m, &b->bd, n, L.out_c));
    }
  }
  if (m->cfg.split_after > 0) {
    int D = bf_rb_channels(m->cfg.split_after), R = m->cfg.d_r;
    BF_TRY(add_conv(m, &m->red, "butterfly.reduce.conv", D, R, 1, 1, 0));
    BF_TRY(add_bn(m, &m->red_bn, "butterfly.reduce.bn", R));
    BF_TRY(add_conv(m, &m->res, "butterfly.restore.conv", R, D, 1, 1, 0));
    BF_TRY(add_bn(m, &m->res_bn, "butterfly.restore.bn", D));
  }
  int64_t fw[2] = {m->cfg.num_classes, BF_FEAT_C}, fb[1] = {m->cfg.num_classes};
  if ((m->fc_w = add_entry(m, "fc.weight", BF_ENTRY_PARAM, 2, fw, 0, 1)) < 0) return m->fc_w;
  if ((m->fc_b = add_entry(m, "fc.bias", BF_ENTRY_PARAM, 1, fb, 0, 0)) < 0) return m->fc_b;
  /* Last, so that every other tensor keeps its index, and so its init stream
   * (bf_model_init): a quantised model starts from the float model's init.
   * Weight-decayed like the weights (PACT regularises its clip). */
  m->clip_e = -1;
  if (m->cfg.quant_bits) {
    int64_t one[1] = {1};
    if ((m->clip_e = add_entry(m, BF_QUANT_CLIP_NAME, BF_ENTRY_PARAM, 1, one, 0, 1)) < 0) return m->clip_e;
  }

  /* Layout: decayed parameters first, then the rest; stats; counters. */
  size_t off = 0;
  for (int pass = 1; pass >= 0; pass--)
    for (int i = 0; i < m->n_entries; i++) {
      bf_entry *e = &m->entries[i];
      if (e->kind == BF_ENTRY_PARAM && e->decay == pass) {
        e->offset = off;
        off += (e->numel + 15) / 16 * 16; /* 64-byte aligned tensors */
      }
      if (pass == 1) m->n_decay = off;
    }
  m->n_params = off;
  size_t soff = 0, coff = 0;
  for (int i = 0; i < m->n_entries; i++) {
    bf_entry *e = &m->entries[i];
    if (e->kind == BF_ENTRY_STAT) {
      e->offset = soff;
      soff += e->numel;
    } else if (e->kind == BF_ENTRY_COUNTER) {
      e->offset = coff++;
    }
  }
  m->n_stats = soff;
  return BF_OK;
}


int bf_model_create(bf_model **out, bf_backend *be, const bf_model_config *cfg) {
  *out = NULL;
  BF_TRY(bf_model_config_check(cfg));
  bf_model *m = bf_calloc(1, sizeof *m, "model");
  if (!m) return BF_ENOMEM;
  m->cfg = *cfg;
  if (cfg->split_after == 0) m->cfg.d_r = 0, m->cfg.quant_bits = 0;
  m->be = be;
  int rc = build_graph(m);
  if (rc) {
    bf_model_free(m);
    return rc;
  }
  m->params = be->alloc(be, m->n_params * sizeof(float));
  m->grads = be->alloc(be, m->n_params * sizeof(float));
  m->mom = be->alloc(be, m->n_params * sizeof(float));
  m->stats = be->alloc(be, (m->n_stats ? m->n_stats : 1) * sizeof(float));
  m->counters = bf_calloc((size_t)m->n_bn, sizeof(int64_t), "BN counters");
  if (!m->params || !m->grads || !m->mom || !m->stats || !m->counters) {
    bf_model_free(m);
    return BF_ENOMEM;
  }
  /* Padding between tensors must hold zeros so flat passes stay finite. */
  if ((rc = be->zero(be, m->params, m->n_params * sizeof(float))) ||
      (rc = be->zero(be, m->grads, m->n_params * sizeof(float))) ||
      (rc = be->zero(be, m->mom, m->n_params * sizeof(float)))) {
    bf_model_free(m);
    return rc;
  }
  *out = m;
  return BF_OK;
}

void bf_model_free(bf_model *m) {
  if (!m) return;
  bf_backend *be = m->be;
  if (be) {
    if (m->params) be->free(be, m->params);
    if (m->grads) be->free(be, m->grads);
    if (m->mom) be->free(be, m->mom);
    if (m->stats) be->free(be, m->stats);
    if (m->arena) be->free(be, m->arena);
  }
  free(m->counters);
  free(m->entries);
  free(m);
}

const bf_model_config *bf_model_cfg(const bf_model *m) { return &m->cfg; }
bf_backend *bf_model_backend(const bf_model *m) { return m->be; }
int bf_model_num_entries(const bf_model *m) { return m->n_entries; }
const bf_entry *bf_model_entry(const bf_model *m, int i) { return &m->entries[i]; }
float *bf_model_params(bf_model *m) { return m->params; }
float *bf_model_grads(bf_model *m) { return m->grads; }
float *bf_model_momentum(bf_model *m) { return m->mom; }
float *bf_model_stats(bf_model *m) { return m->stats; }
int64_t *bf_model_counters(bf_model *m) { return m->counters; }
size_t bf_model_stats_len(const bf_model *m) { return m->n_stats; }
size_t bf_model_params_len(const bf_model *m) { return m->n_params; }
size_t bf_model_decay_len(const bf_model *m) { return m->n_decay; }

size_t bf_model_num_params(const bf_model *m) {
  size_t n = 0;
  for (int i = 0; i < m->n_entries; i++)
    if (m->entries[i].kind == BF_ENTRY_PARAM) n += m->entries[i].numel;
  return n;
}

/* ---------------- initialisation ---------------- */

int bf_model_init(bf_model *m, uint64_t seed) {
  float *hp = bf_calloc(m->n_params, sizeof(float), "init buffer");
  float *hs = bf_calloc(m->n_stats ? m->n_stats : 1, sizeof(float), "init buffer");
  if (!hp || !hs) {
    free(hp);
    free(hs);
    return BF_ENOMEM;
  }
  for (int i = 0; i < m->n_entries; i++) {
    const bf_entry *e = &m->entries[i];
    /* One RNG stream per tensor: adding a tensor never shifts the others. */
    bf_rng r;
    bf_rng_derive(&r, seed, (uint64_t)i, 0x1417);
    if (e->kind == BF_ENTRY_PARAM) {
      float *p = hp + e->offset;
      if (e->is_conv) {
        double fan_out = (double)e->shape[0] * e->shape[2] * e->shape[3];
        double sd = sqrt(2.0 / fan_out);
        for (size_t j = 0; j < e->numel; j++) p[j] = (float)(sd * bf_rng_normal(&r));
      } else if (i == m->fc_w || i == m->fc_b) {
        /* nn.Linear: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), +); bias the same. */
        double bound = 1.0 / sqrt((double)BF_FEAT_C);
        for (size_t j = 0; j < e->numel; j++) p[j] = (float)((2.0 * bf_rng_uniform(&r) - 1.0) * bound);
      } else {
        /* BN: weight 1, bias 0 (".weight" ends the name) */
        float v = strstr(e->name, ".weight") ? 1.0f : 0.0f;
        for (size_t j = 0; j < e->numel; j++) p[j] = v;
      }
    } else if (e->kind == BF_ENTRY_STAT) {
      float v = strstr(e->name, "running_var") ? 1.0f : 0.0f;
      for (size_t j = 0; j < e->numel; j++) hs[e->offset + j] = v;
    }
  }
  int rc = m->be->upload(m->be, m->params, hp, m->n_params * sizeof(float));
  if (!rc && m->n_stats) rc = m->be->upload(m->be, m->stats, hs, m->n_stats * sizeof(float));
  if (!rc) rc = m->be->zero(m->be, m->mom, m->n_params * sizeof(float));
  memset(m->counters, 0, (size_t)m->n_bn * sizeof(int64_t));
  free(hp);
  free(hs);
  if (!rc && m->clip_e >= 0) rc = bf_model_quant_clip_from_bn(m);
  return rc;
}

/* The clip's start: in training mode the reduction's BN output is
 * gamma * xhat + beta with xhat normalised per channel, so 3 standard
 * deviations above the mean of its widest channel, max_c(beta_c + 3|gamma_c|),
 * passes nearly all of the post-ReLU range (3 for a fresh BN). Training then
 * learns the clip. Used at init and when a warm start loads a float model's
 * BN without a clip. */
int bf_model_quant_clip_from_bn(bf_model *m) {
  if (m->clip_e < 0) return BF_OK;
  const bf_entry *g = &m->entries[m->red_bn.e_gamma], *b = &m->entries[m->red_bn.e_beta];
  float *h = bf_malloc(2 * g->numel * sizeof(float), "clip init");
  if (!h) return BF_ENOMEM;
  int rc = bf_model_entry_get(m, g, 0, h);
  if (!rc) rc = bf_model_entry_get(m, b, 0, h + g->numel);
  float clip = 0;
  for (size_t c = 0; c < g->numel && !rc; c++) {
    float v = h[g->numel + c] + 3.0f * fabsf(h[c]);
    if (v > clip) clip = v;
  }
  free(h);
  if (!(clip > 0) || !isfinite(clip)) clip = 3.0f; /* every channel dead (or a broken BN): a fresh BN's range */
  return rc ? rc : m->be->upload(m->be, PARAM(m, m->clip_e), &clip, sizeof clip);
}

int bf_model_zero_momentum(bf_model *m) { return m->be->zero(m->be, m->mom, m->n_params * sizeof(float)); }

/* ---------------- planning ---------------- */

typedef struct planner {
  size_t off; /* bytes */
  int dry;
  uint8_t *base;
} planner;

static void *take(planner *p, size_t bytes) {
  size_t at = p->off;
  p->off += (bytes + 255) / 256 * 256;
  return p->dry ? NULL : p->base + at;
}

static int conv_plan(bf_model *m, planner *p, conv_l *c, int n, int h, int w, size_t *max_act, size_t *ws) {
  BF_TRY(bf_conv_desc_init(&c->d, n, h, w, c->in, c->out, c->k, c->k, c->stride, c->pad));
  size_t numel = (size_t)n * c->d.oh * c->d.ow * c->out;
  c->y = take(p, numel * sizeof(float));
  if (numel > *max_act) *max_act = numel;
  size_t need;
  BF_TRY(m->be->conv2d_workspace(m->be, &c->d, &need));
  if (need > *ws) *ws = need;
  return BF_OK;
}

static void bn_plan(planner *p, bn_l *b, size_t numel) {
  b->save_mean = take(p, (size_t)b->c * sizeof(float));
  b->save_invstd = take(p, (size_t)b->c * sizeof(float));
  b->y = take(p, numel * sizeof(float));
}

static int plan_pass(bf_model *m, planner *p, int n, int h, int w, size_t *max_act, size_t *ws) {
  *max_act = (size_t)n * h * w * 3;
  *ws = 0;
  m->input = take(p, (size_t)n * h * w * 3 * sizeof(float));
  BF_TRY(conv_plan(m, p, &m->stem, n, h, w, max_act, ws));
  int sh = m->stem.d.oh, sw = m->stem.d.ow;
  bn_plan(p, &m->stem_bn, (size_t)n * sh * sw * BF_STEM_C);
  BF_TRY(bf_pool_desc_init(&m->pool, n, sh, sw, BF_STEM_C, BF_POOL_K, BF_POOL_STRIDE, BF_POOL_PAD));
  m->mh = m->pool.oh, m->mw = m->pool.ow;
  m->pool_out = take(p, (size_t)n * m->mh * m->mw * BF_STEM_C * sizeof(float));
  int ch = m->mh, cw = m->mw;
  for (int k = 0; k < BF_NUM_RB; k++) {
    block_l *b = &m->blocks[k];
    b->h_in = ch, b->w_in = cw;
    BF_TRY(conv_plan(m, p, &b->c1, n, ch, cw, max_act, ws));
    bn_plan(p, &b->b1, (size_t)n * ch * cw * b->mid);
    BF_TRY(conv_plan(m, p, &b->c2, n, ch, cw, max_act, ws));
    int oh = b->c2.d.oh, ow = b->c2.d.ow;
    bn_plan(p, &b->b2, (size_t)n * oh * ow * b->mid);
    BF_TRY(conv_plan(m, p, &b->c3, n, oh, ow, max_act, ws));
    if (b->has_ds) {
      BF_TRY(conv_plan(m, p, &b->ds, n, ch, cw, max_act, ws));
      bn_plan(p, &b->bd, (size_t)n * oh * ow * b->out_c);
    }
    bn_plan(p, &b->b3, (size_t)n * oh * ow * b->out_c);
    b->h_out = oh, b->w_out = ow;
    ch = oh, cw = ow;
    if (m->cfg.split_after == k + 1) {
      BF_TRY(conv_plan(m, p, &m->red, n, ch, cw, max_act, ws));
      bn_plan(p, &m->red_bn, (size_t)n * ch * cw * m->cfg.d_r);
      if (m->clip_e >= 0) {
        size_t nq = (size_t)n * ch * cw * m->cfg.d_r;
        m->qy = take(p, nq * sizeof(float));
        m->codes = take(p, nq);
      }
      BF_TRY(conv_plan(m, p, &m->res, n, ch, cw, max_act, ws));
      bn_plan(p, &m->res_bn, (size_t)n * ch * cw * b->out_c);
    }
  }
  m->gap = take(p, (size_t)n * BF_FEAT_C * sizeof(float));
  m->dgap = take(p, (size_t)n * BF_FEAT_C * sizeof(float));
  m->logits = take(p, (size_t)n * m->cfg.num_classes * sizeof(float));
  m->dlogits = take(p, (size_t)n * m->cfg.num_classes * sizeof(float));
  m->loss = take(p, sizeof(float));
  m->labels = take(p, (size_t)n * sizeof(int32_t));
  for (int i = 0; i < 4; i++) m->g[i] = take(p, *max_act * sizeof(float));
  m->ws_bytes = *ws;
  m->ws = *ws ? take(p, *ws) : NULL;
  return BF_OK;
}

int bf_model_plan(bf_model *m, int n, int h, int w) {
  if (m->arena && m->pn == n && m->ph == h && m->pw == w) return BF_OK;
  if (n < 1 || h < 32 || w < 32 || h > 4096 || w > 4096)
    return bf_error(BF_EINVAL, "input shape %dx%dx%d: ResNet-50 needs a batch >= 1 and images of 32..4096 pixels",
                    n, h, w);
  if (m->arena) {
    m->be->free(m->be, m->arena);
    m->arena = NULL;
  }
  planner p = {0, 1, NULL};
  size_t max_act, ws;
  BF_TRY(plan_pass(m, &p, n, h, w, &max_act, &ws));
  m->arena = m->be->alloc(m->be, p.off);
  if (!m->arena) return bf_error_wrap(BF_ENOMEM, "activation arena for batch %d at %dx%d", n, h, w);
  planner q = {0, 0, m->arena};
  BF_TRY(plan_pass(m, &q, n, h, w, &max_act, &ws));
  m->pn = n, m->ph = h, m->pw = w;
  m->trained_forward = -1;
  return BF_OK;
}

float *bf_model_input(bf_model *m) { return m->input; }
int32_t *bf_model_labels(bf_model *m) { return m->labels; }
const float *bf_model_logits(bf_model *m) { return m->logits; }
const float *bf_model_loss_dev(bf_model *m) { return m->loss; }

const float *bf_model_split_features(bf_model *m, int *h, int *w, int *c) {
  if (!m->cfg.split_after || !m->arena) return NULL;
  const block_l *b = &m->blocks[m->cfg.split_after - 1];
  *h = b->h_out, *w = b->w_out, *c = m->cfg.d_r;
  return m->clip_e >= 0 ? m->qy : m->red_bn.y;
}

const uint8_t *bf_model_split_codes(bf_model *m) { return m->clip_e >= 0 && m->arena ? m->codes : NULL; }
const float *bf_model_quant_clip(bf_model *m) { return m->clip_e >= 0 ? PARAM(m, m->clip_e) : NULL; }

int bf_model_quant_clip_get(bf_model *m, float *clip) {
  if (m->clip_e < 0) return bf_error(BF_EINVAL, "model: no quantiser (quant_bits = 0)");
  BF_TRY(m->be->download(m->be, clip, PARAM(m, m->clip_e), sizeof *clip));
  *clip = bf_quant_clip(*clip);
  return BF_OK;
}

/* ---------------- forward ---------------- */

static int bn_fwd(bf_model *m, bn_l *b, int rows, const float *x, const float *residual, int relu, int train) {
  bf_backend *be = m->be;
  if (train) {
    m->counters[m->entries[b->e_count].offset]++;
    return be->batchnorm_forward_train(be, rows, b->c, x, PARAM(m, b->e_gamma), PARAM(m, b->e_beta), residual,
                                       relu, b->y, b->save_mean, b->save_invstd, STAT(m, b->e_mean),
                                       STAT(m, b->e_var), BN_MOMENTUM, BN_EPS);
  }
  return be->batchnorm_forward_eval(be, rows, b->c, x, PARAM(m, b->e_gamma), PARAM(m, b->e_beta),
                                    STAT(m, b->e_mean), STAT(m, b->e_var), residual, relu, BN_EPS, b->y);
}

static int conv_fwd(bf_model *m, conv_l *c, const float *x) {
  return m->be->conv2d_forward(m->be, &c->d, x, PARAM(m, c->entry), c->y, m->ws, m->ws_bytes);
}

static int rows_of(const conv_l *c) { return c->d.n * c->d.oh * c->d.ow; }

static int block_fwd(bf_model *m, block_l *b, const float *x, int train) {
  BF_TRY(conv_fwd(m, &b->c1, x));
  BF_TRY(bn_fwd(m, &b->b1, rows_of(&b->c1), b->c1.y, NULL, 1, train));
  BF_TRY(conv_fwd(m, &b->c2, b->b1.y));
  BF_TRY(bn_fwd(m, &b->b2, rows_of(&b->c2), b->c2.y, NULL, 1, train));
  BF_TRY(conv_fwd(m, &b->c3, b->b2.y));
  const float *shortcut = x;
  if (b->has_ds) {
    BF_TRY(conv_fwd(m, &b->ds, x));
    BF_TRY(bn_fwd(m, &b->bd, rows_of(&b->ds), b->ds.y, NULL, 0, train));
    shortcut = b->bd.y;
  }
  return bn_fwd(m, &b->b3, rows_of(&b->c3), b->c3.y, shortcut, 1, train);
}

int bf_model_forward(bf_model *m, int train) {
  if (!m->arena) return bf_error(BF_EINVAL, "model: forward before bf_model_plan");
  bf_backend *be = m->be;
  const int n = m->pn;
  BF_TRY(conv_fwd(m, &m->stem, m->input));
  BF_TRY(bn_fwd(m, &m->stem_bn, rows_of(&m->stem), m->stem.y, NULL, 1, train));
  BF_TRY(be->maxpool_forward(be, &m->pool, m->stem_bn.y, m->pool_out));
  const float *x = m->pool_out;
  for (int k = 0; k < BF_NUM_RB; k++) {
    BF_TRY(block_fwd(m, &m->blocks[k], x, train));
    x = m->blocks[k].b3.y;
    if (m->cfg.split_after == k + 1) {
      BF_TRY(conv_fwd(m, &m->red, x));
      BF_TRY(bn_fwd(m, &m->red_bn, rows_of(&m->red), m->red.y, NULL, 1, train));
      const float *feat = m->red_bn.y;
      if (m->clip_e >= 0) {
        BF_TRY(be->quant_forward(be, (size_t)rows_of(&m->red) * m->cfg.d_r, feat, PARAM(m, m->clip_e),
                                 m->cfg.quant_bits, m->qy, m->codes));
        feat = m->qy;
      }
      BF_TRY(conv_fwd(m, &m->res, feat));
      BF_TRY(bn_fwd(m, &m->res_bn, rows_of(&m->res), m->res.y, NULL, 1, train));
      x = m->res_bn.y;
    }
  }
  const block_l *last = &m->blocks[BF_NUM_RB - 1];
  BF_TRY(be->avgpool_global_forward(be, n, last->h_out * last->w_out, BF_FEAT_C, x, m->gap));
  BF_TRY(be->linear_forward(be, n, BF_FEAT_C, m->cfg.num_classes, m->gap, PARAM(m, m->fc_w), PARAM(m, m->fc_b),
                            m->logits));
  m->trained_forward = train ? 1 : 0;
  return BF_OK;
}

int bf_model_loss(bf_model *m, float label_smoothing, float *loss_host) {
  bf_backend *be = m->be;
  BF_TRY(be->softmax_xent(be, m->pn, m->cfg.num_classes, m->logits, m->labels, label_smoothing, m->loss,
                          m->dlogits));
  if (loss_host) BF_TRY(be->download(be, loss_host, m->loss, sizeof(float)));
  return BF_OK;
}

/* ---------------- backward ---------------- */

/* Through the statistics the last forward used: the batch's (train) or the
 * running ones held constant (eval, as PyTorch's model.eval()). */
static int bn_bwd(bf_model *m, bn_l *b, int rows, const float *x, const float *dy, int masked, float *dx) {
  bf_backend *be = m->be;
  if (!m->trained_forward)
    return be->batchnorm_backward_eval(be, rows, b->c, x, dy, masked ? b->y : NULL, PARAM(m, b->e_gamma),
                                       STAT(m, b->e_mean), STAT(m, b->e_var), BN_EPS, dx, GRAD(m, b->e_gamma),
                                       GRAD(m, b->e_beta));
  return be->batchnorm_backward(be, rows, b->c, x, dy, masked ? b->y : NULL, PARAM(m, b->e_gamma), b->save_mean,
                                b->save_invstd, dx, GRAD(m, b->e_gamma), GRAD(m, b->e_beta));
}

static int conv_bwd(bf_model *m, conv_l *c, const float *x, const float *dy, float *dx, float beta) {
  bf_backend *be = m->be;
  BF_TRY(be->conv2d_backward_filter(be, &c->d, x, dy, GRAD(m, c->entry), m->ws, m->ws_bytes));
  if (dx) BF_TRY(be->conv2d_backward_data(be, &c->d, dy, PARAM(m, c->entry), dx, beta, m->ws, m->ws_bytes));
  return BF_OK;
}

/* dout (gradient wrt the block output, in buffer `gout`) -> gradient wrt the
 * block input in *gin. gout is masked in place. Uses buffers t1, t2 and, for
 * projection blocks, `spare` as the input gradient. */
static int block_bwd(bf_model *m, block_l *b, const float *x, float *gout, float *spare, float *t1, float *t2,
                     float **gin) {
  bf_backend *be = m->be;
  size_t nout = (size_t)rows_of(&b->c3) * b->out_c;
  BF_TRY(be->relu_backward(be, nout, b->b3.y, gout, gout));
  float *dx = gout; /* identity shortcut: the input gradient starts as g */
  if (b->has_ds) {
    BF_TRY(bn_bwd(m, &b->bd, rows_of(&b->ds), b->ds.y, gout, 0, t1));
    BF_TRY(conv_bwd(m, &b->ds, x, t1, spare, 0.0f));
    dx = spare;
  }
  BF_TRY(bn_bwd(m, &b->b3, rows_of(&b->c3), b->c3.y, gout, 0, t1));
  BF_TRY(conv_bwd(m, &b->c3, b->b2.y, t1, t2, 0.0f));
  BF_TRY(bn_bwd(m, &b->b2, rows_of(&b->c2), b->c2.y, t2, 1, t1));
  BF_TRY(conv_bwd(m, &b->c2, b->b1.y, t1, t2, 0.0f));
  BF_TRY(bn_bwd(m, &b->b1, rows_of(&b->c1), b->c1.y, t2, 1, t1));
  BF_TRY(conv_bwd(m, &b->c1, x, t1, dx, 1.0f));
  *gin = dx;
  return BF_OK;
}

int bf_model_backward(bf_model *m) {
  if (!m->arena || m->trained_forward < 0)
    return bf_error(BF_EINVAL, "model: backward needs a forward and a loss first");
  bf_backend *be = m->be;
  const int n = m->pn, C = m->cfg.num_classes;
  float *t1 = m->g[2], *t2 = m->g[3];
  BF_TRY(be->linear_backward(be, n, BF_FEAT_C, C, m->gap, PARAM(m, m->fc_w), m->dlogits, m->dgap, GRAD(m, m->fc_w),
                             GRAD(m, m->fc_b)));
  const block_l *last = &m->blocks[BF_NUM_RB - 1];
  float *gcur = m->g[0];
  BF_TRY(be->avgpool_global_backward(be, n, last->h_out * last->w_out, BF_FEAT_C, m->dgap, gcur));
  for (int k = BF_NUM_RB - 1; k >= 0; k--) {
    block_l *b = &m->blocks[k];
    float *other = gcur == m->g[0] ? m->g[1] : m->g[0];
    if (m->cfg.split_after == k + 1) {
      /* restore: (cs -> BN+ReLU) ; reduce: (cr -> BN+ReLU) */
      BF_TRY(bn_bwd(m, &m->res_bn, rows_of(&m->res), m->res.y, gcur, 1, t1));
      BF_TRY(conv_bwd(m, &m->res, m->clip_e >= 0 ? m->qy : m->red_bn.y, t1, t2, 0.0f));
      if (m->clip_e >= 0) /* straight through (in place), and the clip's gradient */
        BF_TRY(be->quant_backward(be, (size_t)rows_of(&m->red) * m->cfg.d_r, m->red_bn.y, PARAM(m, m->clip_e),
                                  m->cfg.quant_bits, t2, t2, GRAD(m, m->clip_e)));
      BF_TRY(bn_bwd(m, &m->red_bn, rows_of(&m->red), m->red.y, t2, 1, t1));
      BF_TRY(conv_bwd(m, &m->red, b->b3.y, t1, other, 0.0f));
      gcur = other;
      other = gcur == m->g[0] ? m->g[1] : m->g[0];
    }
    const float *x = k == 0 ? m->pool_out : (m->cfg.split_after == k ? m->res_bn.y : m->blocks[k - 1].b3.y);
    float *gin;
    BF_TRY(block_bwd(m, b, x, gcur, other, t1, t2, &gin));
    gcur = gin;
  }
  BF_TRY(be->maxpool_backward(be, &m->pool, m->stem_bn.y, gcur, t1));
  BF_TRY(bn_bwd(m, &m->stem_bn, rows_of(&m->stem), m->stem.y, t1, 1, t2));
  BF_TRY(conv_bwd(m, &m->stem, m->input, t2, NULL, 0.0f));
  return BF_OK;
}

int bf_model_sgd(bf_model *m, const bf_sgd_params *hp, int no_decay_bn_bias) {
  bf_backend *be = m->be;
  if (!no_decay_bn_bias) return be->sgd_step(be, m->n_params, m->params, m->grads, m->mom, hp);
  BF_TRY(be->sgd_step(be, m->n_decay, m->params, m->grads, m->mom, hp));
  bf_sgd_params nd = *hp;
  nd.weight_decay = 0.0f;
  return be->sgd_step(be, m->n_params - m->n_decay, m->params + m->n_decay, m->grads + m->n_decay,
                      m->mom + m->n_decay, &nd);
}
