#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "quant_math.h"
#include "safetensors.h"
#include "split.h"

enum { ST_CONV, ST_MAXPOOL, ST_GAP, ST_QUANT };

typedef struct eng_step {
  int kind;
  int in, res, out; /* value ids; res = -1 without residual */
  int relu;
  int bits; /* ST_QUANT: its clip is the float at w_off */
  int cin, cout, k, stride, pad;
  size_t w_off, b_off; /* floats into the weights buffer */
  bf_conv_desc cd;
  bf_conv_infer *ci; /* the fused conv prepared for the planned shape */
  bf_pool_desc pd;
} eng_step;

typedef struct eng_val {
  int h, w, c;
  int last_use; /* last step reading it */
  int slot;     /* -1: the input buffer */
  float *p;
} eng_val;

/* A shape's plan, kept while another shape runs: switching back (bf-serve's
 * batch sizes) restores it instead of creating the backend's conv plans
 * again, which with oneDNN costs about one inference. Buffers are offsets into
 * the one shared arena (it only grows). */
typedef struct eng_plan {
  int n, h, w;
  eng_step *steps; /* [n_steps]: descriptors and conv plans of this shape */
  eng_val *vals;   /* [n_vals] */
  size_t *offs;    /* [n_vals]: buffer offsets in the arena */
  size_t ws_off, ws_bytes;
} eng_plan;

struct bf_engine {
  bf_backend *be;
  int split_after, d_r, num_classes, in_c, logits;
  int quant_bits;   /* metadata of the halves: the reduction's quantiser (0: none) */
  float quant_clip;
  char desc[96];
  eng_step *steps;
  int n_steps, cap_steps;
  eng_val *vals;
  int n_vals, cap_vals;
  float *host_w; /* staging while loading */
  size_t n_w, cap_w;
  float *weights; /* backend memory */
  size_t n_used;  /* tensors consumed */
  /* plan */
  int pn, ph, pw;
  void *arena;
  size_t arena_bytes; /* grows only: smaller shapes re-plan inside it */
  void *ws;
  size_t ws_bytes;
  eng_plan *plans; /* every shape planned so far; plans[cur] is the current one (cur -1: none) */
  int n_plans, cur;
};

/* Where the folded tensors come from: bf-export's files, or the same tensor
 * sets folded in memory (bf_fold_model). */
typedef struct loader {
  bf_safetensors *st;           /* files, or NULL */
  const bf_st_writer *const *w; /* in-memory parts when st is NULL */
  const char *origin;           /* names the in-memory parts in messages */
  int n;
} loader;

typedef struct tview {
  bf_dtype dtype;
  int ndim;
  const int64_t *shape;
  size_t numel;
  const void *data;
} tview;

static const char *src_name(const loader *L, int i) { return L->st ? L->st[i].path : L->origin; }

static int src_count(const loader *L, int i) { return L->st ? L->st[i].n_tensors : L->w[i]->n; }

static const char *src_meta(const loader *L, int i, const char *key) {
  if (L->st) return bf_st_meta_get(&L->st[i], key);
  for (int j = 0; j < L->w[i]->n_meta; j++)
    if (!strcmp(L->w[i]->meta[j].key, key)) return L->w[i]->meta[j].value;
  return NULL;
}

int bf_engine_split_after(const bf_engine *e) { return e->split_after; }
int bf_engine_d_r(const bf_engine *e) { return e->d_r; }
int bf_engine_num_classes(const bf_engine *e) { return e->num_classes; }
int bf_engine_input_channels(const bf_engine *e) { return e->in_c; }
const char *bf_engine_describe(const bf_engine *e) { return e->desc; }
int bf_engine_outputs_logits(const bf_engine *e) { return e->logits; }
void bf_engine_quant(const bf_engine *e, int *bits, float *clip) {
  *bits = e->quant_bits;
  *clip = e->quant_clip;
}

/* 1 if found (*v filled when v is not NULL). */
static int find(const loader *L, const char *name, int *file, tview *v) {
  for (int i = 0; i < L->n; i++) {
    if (L->st) {
      const bf_st_tensor *t = bf_st_find(&L->st[i], name);
      if (!t) continue;
      if (v) *v = (tview){t->dtype, t->ndim, t->shape, t->numel, bf_st_tensor_data(&L->st[i], t)};
    } else {
      const bf_st_entry *t = NULL;
      for (int j = 0; j < L->w[i]->n && !t; j++)
        if (!strcmp(L->w[i]->entries[j].name, name)) t = &L->w[i]->entries[j];
      if (!t) continue;
      if (v) *v = (tview){t->dtype, t->ndim, t->shape, t->bytes / bf_dtype_size(t->dtype), t->data};
    }
    if (file) *file = i;
    return 1;
  }
  return 0;
}

static int new_val(bf_engine *e) {
  if (e->n_vals == e->cap_vals) {
    int cap = e->cap_vals ? 2 * e->cap_vals : 64;
    eng_val *v = realloc(e->vals, (size_t)cap * sizeof *v);
    if (!v) return bf_error(BF_ENOMEM, "engine: out of memory");
    e->vals = v, e->cap_vals = cap;
  }
  memset(&e->vals[e->n_vals], 0, sizeof e->vals[0]);
  e->vals[e->n_vals].slot = -1;
  return e->n_vals++;
}

static eng_step *new_step(bf_engine *e) {
  if (e->n_steps == e->cap_steps) {
    int cap = e->cap_steps ? 2 * e->cap_steps : 64;
    eng_step *s = realloc(e->steps, (size_t)cap * sizeof *s);
    if (!s) {
      bf_error(BF_ENOMEM, "engine: out of memory");
      return NULL;
    }
    e->steps = s, e->cap_steps = cap;
  }
  eng_step *s = &e->steps[e->n_steps++];
  memset(s, 0, sizeof *s);
  s->res = -1;
  return s;
}

/* Appends n floats (64-byte aligned start) to the staging buffer. */
static int stage(bf_engine *e, size_t n, size_t *off) {
  size_t at = (e->n_w + 15) / 16 * 16;
  if (at + n > e->cap_w) {
    size_t cap = e->cap_w ? e->cap_w : 1 << 20;
    while (cap < at + n) cap *= 2;
    float *p = realloc(e->host_w, cap * sizeof(float));
    if (!p) return bf_error(BF_ENOMEM, "engine: out of memory staging %zu weights", cap);
    e->host_w = p, e->cap_w = cap;
  }
  memset(e->host_w + e->n_w, 0, (at - e->n_w) * sizeof(float));
  *off = at;
  e->n_w = at + n;
  return BF_OK;
}

/* Copies a float32 tensor of the expected shape into staging. */
static int take_tensor(bf_engine *e, const loader *L, const char *name, int ndim, const int64_t *shape,
                       size_t *off) {
  int fi = 0;
  tview tv, *t = &tv;
  if (!find(L, name, &fi, t)) return bf_error(BF_EINVAL, "engine: missing tensor '%s'", name);
  int same = t->dtype == BF_DT_F32 && t->ndim == ndim;
  for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
  if (!same) {
    char want[96] = "", got[96] = "";
    for (int d = 0; d < ndim; d++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "", (long long)shape[d]);
    for (int d = 0; d < t->ndim; d++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "", (long long)t->shape[d]);
    return bf_error(BF_EINVAL, "%s: tensor '%s' is %s [%s], expected F32 [%s]", src_name(L, fi), name,
                    bf_dtype_name(t->dtype), got, want);
  }
  BF_TRY(stage(e, t->numel, off));
  float *dst = e->host_w + *off;
  memcpy(dst, t->data, t->numel * sizeof(float));
  for (size_t i = 0; i < t->numel; i++)
    if (!isfinite(dst[i]))
      return bf_error(BF_ENUM, "%s: tensor '%s' holds a non-finite value at %zu", src_name(L, fi), name, i);
  e->n_used++;
  return BF_OK;
}

static int add_conv(bf_engine *e, const loader *L, const char *name, int in, int res, int cin, int cout, int k,
                    int stride, int pad, int relu, int *out) {
  char wn[160], bn[160];
  snprintf(wn, sizeof wn, "%s.weight", name);
  snprintf(bn, sizeof bn, "%s.bias", name);
  int64_t ws[4] = {cout, cin, k, k}, bs[1] = {cout};
  size_t woff, boff;
  BF_TRY(take_tensor(e, L, wn, 4, ws, &woff));
  if (k > 1) { /* OIHW -> OHWI in place via a temporary copy */
    size_t n = (size_t)cout * cin * k * k;
    float *tmp = bf_malloc(n * sizeof(float), "conv weight");
    if (!tmp) return BF_ENOMEM;
    const float *src = e->host_w + woff;
    for (int o = 0; o < cout; o++)
      for (int i = 0; i < cin; i++)
        for (int y = 0; y < k; y++)
          for (int x = 0; x < k; x++)
            tmp[(((size_t)o * k + y) * k + x) * cin + i] = src[(((size_t)o * cin + i) * k + y) * k + x];
    memcpy(e->host_w + woff, tmp, n * sizeof(float));
    free(tmp);
  }
  BF_TRY(take_tensor(e, L, bn, 1, bs, &boff));
  int v = new_val(e);
  if (v < 0) return v;
  eng_step *s = new_step(e);
  if (!s) return BF_ENOMEM;
  s->kind = ST_CONV, s->in = in, s->res = res, s->out = v, s->relu = relu;
  s->cin = cin, s->cout = cout, s->k = k, s->stride = stride, s->pad = pad;
  s->w_off = woff, s->b_off = boff;
  *out = v;
  return BF_OK;
}

static int add_simple(bf_engine *e, int kind, int in, int *out) {
  int v = new_val(e);
  if (v < 0) return v;
  eng_step *s = new_step(e);
  if (!s) return BF_ENOMEM;
  s->kind = kind, s->in = in, s->out = v;
  *out = v;
  return BF_OK;
}

static int add_block(bf_engine *e, const loader *L, int rb, int in, int *out) {
  bf_rb_info B;
  BF_TRY(bf_rb_layout(rb, &B));
  char n[96];
  int a, b, sc = in;
  snprintf(n, sizeof n, "%s.conv1", B.prefix);
  BF_TRY(add_conv(e, L, n, in, -1, B.in_c, B.mid, 1, 1, 0, 1, &a));
  snprintf(n, sizeof n, "%s.conv2", B.prefix);
  BF_TRY(add_conv(e, L, n, a, -1, B.mid, B.mid, 3, B.stride, 1, 1, &b));
  if (B.has_downsample) {
    snprintf(n, sizeof n, "%s.downsample.0", B.prefix);
    BF_TRY(add_conv(e, L, n, in, -1, B.in_c, B.out_c, 1, B.stride, 0, 0, &sc));
  }
  snprintf(n, sizeof n, "%s.conv3", B.prefix);
  return add_conv(e, L, n, b, sc, B.mid, B.out_c, 1, 1, 0, 1, out);
}

static int rb_present(const loader *L, int rb) {
  bf_rb_info B;
  if (bf_rb_layout(rb, &B)) return 0;
  char n[64];
  snprintf(n, sizeof n, "%s.conv1.weight", B.prefix);
  return find(L, n, NULL, NULL);
}

static int meta_int(const loader *L, int i, const char *key, int *v) {
  const char *s = src_meta(L, i, key);
  if (!s) return bf_error(BF_EINVAL, "%s: __metadata__ has no '%s' (not a bf-export half?)", src_name(L, i), key);
  char *end;
  long x = strtol(s, &end, 10);
  if (!*s || *end || x < 0 || x > 10000000)
    return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s'", src_name(L, i), key, s);
  *v = (int)x;
  return BF_OK;
}

/* quant_bits / quant_clip (bf-export writes them for a quantisation-aware
 * model; absent: none). */
static int meta_quant(const loader *L, int i, int *bits, float *clip) {
  *bits = 0, *clip = 0;
  const char *c = src_meta(L, i, "quant_clip");
  if (!src_meta(L, i, "quant_bits") && !c) return BF_OK;
  BF_TRY(meta_int(L, i, "quant_bits", bits));
  char *end = NULL;
  float v = c ? strtof(c, &end) : NAN;
  if (*bits < BF_QUANT_BITS_MIN || *bits > BF_QUANT_BITS_MAX || !c || !*c || *end || !isfinite(v) || !(v > 0))
    return bf_error(BF_EINVAL, "%s: __metadata__ quant_bits/quant_clip '%s'/'%s' (bits 2..8, clip > 0)",
                    src_name(L, i), src_meta(L, i, "quant_bits"), c ? c : "(missing)");
  *clip = v;
  return BF_OK;
}

/* Components in network order. */
enum { C_STEM = 0, C_RB1 = 1, C_REDUCE = 17, C_RESTORE = 18, C_HEAD = 19, C_N = 20 };

static int build(bf_engine *e, const loader *L) {
  for (int i = 0; i < L->n; i++) {
    const char *bn = src_meta(L, i, "bn_folded");
    if (!bn || strcmp(bn, "1"))
      return bf_error(BF_EINVAL, "%s: not a BN-folded half (metadata bn_folded != 1; run bf-export)",
                      src_name(L, i));
    int k, r, c;
    BF_TRY(meta_int(L, i, "split_after", &k));
    BF_TRY(meta_int(L, i, "d_r", &r));
    BF_TRY(meta_int(L, i, "num_classes", &c));
    int qb;
    float qc;
    BF_TRY(meta_quant(L, i, &qb, &qc));
    if (i == 0)
      e->split_after = k, e->d_r = r, e->num_classes = c, e->quant_bits = qb, e->quant_clip = qc;
    else if (k != e->split_after || r != e->d_r || c != e->num_classes || qb != e->quant_bits || qc != e->quant_clip)
      return bf_error(BF_EINVAL, "%s: split_after/d_r/classes/quant_bits/quant_clip %d/%d/%d/%d/%g differ from %s "
                      "(%d/%d/%d/%d/%g)", src_name(L, i), k, r, c, qb, (double)qc, src_name(L, 0), e->split_after,
                      e->d_r, e->num_classes, e->quant_bits, (double)e->quant_clip);
  }
  if (e->split_after > BF_NUM_RB || e->num_classes < 1 ||
      (e->split_after && (e->d_r < 1 || e->d_r > bf_rb_channels(e->split_after))))
    return bf_error(BF_EINVAL, "%s: bad split_after/d_r/num_classes %d/%d/%d", src_name(L, 0), e->split_after, e->d_r,
                    e->num_classes);
  /* order: stem, RB1..k, reduce, restore, RBk+1..16, head */
  int order[C_N], n_order = 0, present[C_N];
  order[n_order++] = C_STEM;
  for (int rb = 1; rb <= BF_NUM_RB; rb++) {
    order[n_order++] = C_RB1 + rb - 1;
    if (rb == e->split_after) order[n_order++] = C_REDUCE, order[n_order++] = C_RESTORE;
  }
  order[n_order++] = C_HEAD;
  present[C_STEM] = find(L, "conv1.weight", NULL, NULL);
  for (int rb = 1; rb <= BF_NUM_RB; rb++) present[C_RB1 + rb - 1] = rb_present(L, rb);
  present[C_REDUCE] = find(L, "butterfly.reduce.conv.weight", NULL, NULL);
  present[C_RESTORE] = find(L, "butterfly.restore.conv.weight", NULL, NULL);
  present[C_HEAD] = find(L, "fc.weight", NULL, NULL);
  if (!e->split_after && (present[C_REDUCE] || present[C_RESTORE]))
    return bf_error(BF_EINVAL, "%s: butterfly tensors but split_after = 0", src_name(L, 0));
  int a = -1, b = -1;
  for (int i = 0; i < n_order; i++)
    if (present[order[i]]) {
      if (a < 0) a = i;
      else if (b != i - 1)
        return bf_error(BF_EINVAL, "%s: the layers present are not one contiguous part of the network",
                        src_name(L, 0));
      b = i;
    }
  if (a < 0) return bf_error(BF_EINVAL, "%s: no known layer in the file(s)", src_name(L, 0));
  static const char *names[C_N] = {"stem", "RB1", "RB2", "RB3", "RB4", "RB5", "RB6", "RB7", "RB8", "RB9",
                                   "RB10", "RB11", "RB12", "RB13", "RB14", "RB15", "RB16", "reduce", "restore",
                                   "head"};
  snprintf(e->desc, sizeof e->desc, "%s..%s", names[order[a]], names[order[b]]);
  /* input channels of the first component */
  int first = order[a], ch;
  if (first == C_STEM) ch = 3;
  else if (first == C_REDUCE) ch = bf_rb_channels(e->split_after);
  else if (first == C_RESTORE) ch = e->d_r;
  else if (first == C_HEAD) ch = BF_FEAT_C;
  else {
    bf_rb_info B;
    BF_TRY(bf_rb_layout(first - C_RB1 + 1, &B));
    ch = B.in_c;
  }
  e->in_c = ch;
  int cur = new_val(e);
  if (cur < 0) return cur;
  for (int i = a; i <= b; i++) {
    int comp = order[i], v;
    if (comp == C_STEM) {
      BF_TRY(add_conv(e, L, "conv1", cur, -1, 3, BF_STEM_C, BF_STEM_K, BF_STEM_STRIDE, BF_STEM_PAD, 1, &v));
      BF_TRY(add_simple(e, ST_MAXPOOL, v, &cur));
    } else if (comp == C_REDUCE) {
      BF_TRY(add_conv(e, L, "butterfly.reduce.conv", cur, -1, bf_rb_channels(e->split_after), e->d_r, 1, 1, 0, 1,
                      &cur));
      /* Running the restoration too (the whole model): the quantiser training
       * used sits between them. A device half alone outputs the float
       * features; the client quantises them with the same formulas. */
      if (e->quant_bits && i < b && order[i + 1] == C_RESTORE) {
        BF_TRY(add_simple(e, ST_QUANT, cur, &cur));
        eng_step *s = &e->steps[e->n_steps - 1];
        s->bits = e->quant_bits;
        BF_TRY(stage(e, 1, &s->w_off));
        e->host_w[s->w_off] = e->quant_clip;
      }
    } else if (comp == C_RESTORE) {
      BF_TRY(add_conv(e, L, "butterfly.restore.conv", cur, -1, e->d_r, bf_rb_channels(e->split_after), 1, 1, 0, 1,
                      &cur));
    } else if (comp == C_HEAD) {
      /* The classifier runs as a 1x1 conv on the pooled 1x1 map: its weights
       * [classes][features] are that conv's OHWI weights, and the fused conv
       * packs them once where OpenBLAS's sgemm repacked all of them (8 MB at
       * 1000 classes) at every call: about 0.37 -> 0.25 ms at batch 1, 2 threads. */
      int64_t ws[2] = {e->num_classes, BF_FEAT_C}, bs[1] = {e->num_classes};
      BF_TRY(add_simple(e, ST_GAP, cur, &v));
      BF_TRY(add_simple(e, ST_CONV, v, &cur));
      eng_step *s = &e->steps[e->n_steps - 1];
      BF_TRY(take_tensor(e, L, "fc.weight", 2, ws, &s->w_off));
      BF_TRY(take_tensor(e, L, "fc.bias", 1, bs, &s->b_off));
      s->cin = BF_FEAT_C, s->cout = e->num_classes, s->k = 1, s->stride = 1, s->pad = 0, s->relu = 0;
      e->logits = 1;
    } else {
      BF_TRY(add_block(e, L, comp - C_RB1 + 1, cur, &cur));
    }
  }
  size_t total = 0;
  for (int i = 0; i < L->n; i++) total += (size_t)src_count(L, i);
  if (total != e->n_used)
    return bf_error(BF_EINVAL, "%s: %zu tensors present but this part uses %zu (stray or duplicate tensors)",
                    src_name(L, 0), total, e->n_used);
  return BF_OK;
}

/* Builds the steps, uploads the weights and finds each value's last reader. */
static int engine_create(bf_engine **out, bf_backend *be, const loader *L) {
  bf_engine *e = bf_calloc(1, sizeof *e, "engine");
  if (!e) return BF_ENOMEM;
  e->cur = -1;
  e->be = be;
  int rc = build(e, L);
  if (!rc) {
    e->weights = be->alloc(be, (e->n_w ? e->n_w : 1) * sizeof(float));
    if (!e->weights) rc = BF_ENOMEM;
    else rc = be->upload(be, e->weights, e->host_w, e->n_w * sizeof(float));
  }
  free(e->host_w);
  e->host_w = NULL;
  if (rc) {
    bf_engine_free(e);
    return rc;
  }
  /* last readers */
  for (int v = 0; v < e->n_vals; v++) e->vals[v].last_use = -1;
  for (int i = 0; i < e->n_steps; i++) {
    e->vals[e->steps[i].in].last_use = i;
    if (e->steps[i].res >= 0) e->vals[e->steps[i].res].last_use = i;
  }
  e->vals[e->n_vals - 1].last_use = e->n_steps; /* the output survives */
  *out = e;
  return BF_OK;
}

int bf_engine_load(bf_engine **out, bf_backend *be, const char *const *paths, int n_paths) {
  *out = NULL;
  if (n_paths < 1 || n_paths > 4) return bf_error(BF_EINVAL, "engine: 1..4 files, got %d", n_paths);
  loader L = {bf_calloc((size_t)n_paths, sizeof(bf_safetensors), "files"), NULL, NULL, 0};
  int rc = L.st ? BF_OK : BF_ENOMEM;
  for (int i = 0; i < n_paths && !rc; i++) {
    rc = bf_st_load(&L.st[i], paths[i]);
    if (!rc) L.n++;
  }
  if (!rc) rc = engine_create(out, be, &L);
  for (int i = 0; i < L.n; i++) bf_st_free(&L.st[i]);
  free(L.st);
  return rc;
}

int bf_engine_from_model(bf_engine **out, bf_backend *be, bf_model *m, const char *origin) {
  *out = NULL;
  bf_folded f;
  int frc = bf_fold_model(m, &f);
  bf_model_free(m); /* before the engine stages its copy: the peak is one model, not two */
  if (frc) return frc;
  const bf_st_writer *parts[2] = {&f.part[0], &f.part[1]};
  loader L = {NULL, parts, origin, f.n_parts};
  int rc = engine_create(out, be, &L);
  bf_folded_free(&f);
  return rc;
}

static void free_conv_plans(bf_engine *e) {
  for (int i = 0; i < e->n_steps; i++)
    if (e->steps[i].ci) {
      e->be->conv_infer_free(e->be, e->steps[i].ci);
      e->steps[i].ci = NULL;
    }
}

/* Saves the current shape's state into P (no allocation). */
static void plan_save(bf_engine *e, eng_plan *P) {
  uint8_t *base = e->arena;
  memcpy(P->steps, e->steps, (size_t)e->n_steps * sizeof *e->steps);
  memcpy(P->vals, e->vals, (size_t)e->n_vals * sizeof *e->vals);
  for (int v = 0; v < e->n_vals; v++) P->offs[v] = (size_t)((uint8_t *)e->vals[v].p - base);
  P->ws_off = e->ws ? (size_t)((uint8_t *)e->ws - base) : 0;
  P->ws_bytes = e->ws_bytes;
  P->n = e->pn, P->h = e->ph, P->w = e->pw;
}

static void plan_restore(bf_engine *e, const eng_plan *P) {
  uint8_t *base = e->arena;
  memcpy(e->steps, P->steps, (size_t)e->n_steps * sizeof *e->steps);
  memcpy(e->vals, P->vals, (size_t)e->n_vals * sizeof *e->vals);
  for (int v = 0; v < e->n_vals; v++) e->vals[v].p = (float *)(base + P->offs[v]);
  e->ws = P->ws_bytes ? base + P->ws_off : NULL;
  e->ws_bytes = P->ws_bytes;
  e->pn = P->n, e->ph = P->h, e->pw = P->w;
}

/* Parks the current shape and restores the one for (n, h, w) if it was
 * planned before (returns 1); else leaves the steps without conv plans for a
 * new plan (returns 0). */
static int plan_switch(bf_engine *e, int n, int h, int w) {
  if (e->cur >= 0 && e->pn) plan_save(e, &e->plans[e->cur]);
  else free_conv_plans(e); /* a plan that failed halfway owns nothing kept */
  e->pn = 0;
  e->cur = -1;
  for (int k = 0; k < e->n_plans; k++)
    if (e->plans[k].n == n && e->plans[k].h == h && e->plans[k].w == w) {
      plan_restore(e, &e->plans[k]);
      e->cur = k;
      return 1;
    }
  for (int i = 0; i < e->n_steps; i++) e->steps[i].ci = NULL; /* they belong to their kept plan */
  return 0;
}

/* Keeps the shape just planned (allocates its record once). */
static int plan_keep(bf_engine *e) {
  eng_plan *p = realloc(e->plans, (size_t)(e->n_plans + 1) * sizeof *p);
  if (!p) return bf_error(BF_ENOMEM, "engine: out of memory keeping a plan");
  e->plans = p;
  eng_plan *P = &e->plans[e->n_plans];
  memset(P, 0, sizeof *P);
  P->steps = malloc((size_t)e->n_steps * sizeof *P->steps);
  P->vals = malloc((size_t)e->n_vals * sizeof *P->vals);
  P->offs = malloc((size_t)e->n_vals * sizeof *P->offs);
  if (!P->steps || !P->vals || !P->offs) {
    free(P->steps), free(P->vals), free(P->offs);
    return bf_error(BF_ENOMEM, "engine: out of memory keeping a plan");
  }
  plan_save(e, P);
  e->cur = e->n_plans++;
  return BF_OK;
}

void bf_engine_free(bf_engine *e) {
  if (!e) return;
  if (e->be) {
    if (e->cur < 0) free_conv_plans(e); /* else they are plans[cur]'s, freed below */
    for (int k = 0; k < e->n_plans; k++)
      for (int i = 0; i < e->n_steps; i++)
        if (e->plans[k].steps[i].ci) e->be->conv_infer_free(e->be, e->plans[k].steps[i].ci);
    if (e->weights) e->be->free(e->be, e->weights);
    if (e->arena) e->be->free(e->be, e->arena);
  }
  for (int k = 0; k < e->n_plans; k++) free(e->plans[k].steps), free(e->plans[k].vals), free(e->plans[k].offs);
  free(e->plans);
  free(e->host_w);
  free(e->steps);
  free(e->vals);
  free(e);
}

#define MAX_SLOTS 16

int bf_engine_plan(bf_engine *e, int n, int h, int w, int *oh, int *ow, int *oc) {
  eng_val *out = &e->vals[e->n_vals - 1];
  if (!(e->arena && e->pn == n && e->ph == h && e->pw == w)) {
    if (n < 1 || h < 1 || w < 1 || n > 4096 || h > 8192 || w > 8192)
      return bf_error(BF_EINVAL, "engine: input shape %dx%dx%d", n, h, w);
    if (plan_switch(e, n, h, w)) goto done;
    e->vals[0].h = h, e->vals[0].w = w, e->vals[0].c = e->in_c, e->vals[0].slot = -1;
    size_t ws = 0, slot_size[MAX_SLOTS] = {0};
    int slot_busy_until[MAX_SLOTS], n_slots = 0;
    for (int i = 0; i < MAX_SLOTS; i++) slot_busy_until[i] = -1;
    for (int i = 0; i < e->n_steps; i++) {
      eng_step *s = &e->steps[i];
      eng_val *x = &e->vals[s->in], *y = &e->vals[s->out];
      if (s->kind == ST_CONV) {
        if (x->c != s->cin) return bf_error(BF_EINVAL, "engine: step %d: %d channels into a %d-channel conv", i, x->c,
                                            s->cin);
        int rc = bf_conv_desc_init(&s->cd, n, x->h, x->w, s->cin, s->cout, s->k, s->k, s->stride, s->pad);
        if (rc) return bf_error_wrap(rc, "engine: input %dx%d too small", h, w);
        y->h = s->cd.oh, y->w = s->cd.ow, y->c = s->cout;
        size_t need;
        BF_TRY(e->be->conv_infer_create(e->be, &s->cd, e->weights + s->w_off, e->weights + s->b_off, s->relu,
                                        s->res >= 0, &s->ci, &need));
        if (need > ws) ws = need;
        if (s->res >= 0) {
          eng_val *r = &e->vals[s->res];
          if (r->h != y->h || r->w != y->w || r->c != y->c)
            return bf_error(BF_EINVAL, "engine: residual shape mismatch at step %d", i);
        }
      } else if (s->kind == ST_MAXPOOL) {
        int rc = bf_pool_desc_init(&s->pd, n, x->h, x->w, x->c, BF_POOL_K, BF_POOL_STRIDE, BF_POOL_PAD);
        if (rc) return bf_error_wrap(rc, "engine: input %dx%d too small", h, w);
        y->h = s->pd.oh, y->w = s->pd.ow, y->c = x->c;
      } else if (s->kind == ST_QUANT) {
        y->h = x->h, y->w = x->w, y->c = x->c;
      } else {
        y->h = 1, y->w = 1, y->c = x->c;
      }
      int slot = -1;
      /* a block's last conv writes over its shortcut when nothing reads the
       * shortcut later (the fused conv adds the residual in place) */
      if (s->kind == ST_CONV && s->res >= 0 && e->vals[s->res].last_use == i && e->vals[s->res].slot >= 0)
        slot = e->vals[s->res].slot;
      for (int k = 0; k < n_slots && slot < 0; k++)
        if (slot_busy_until[k] < i) slot = k;
      if (slot < 0) {
        if (n_slots == MAX_SLOTS) return bf_error(BF_EINVAL, "engine: too many live buffers");
        slot = n_slots++;
      }
      slot_busy_until[slot] = y->last_use;
      y->slot = slot;
      size_t bytes = (size_t)n * y->h * y->w * y->c * sizeof(float);
      if (bytes > slot_size[slot]) slot_size[slot] = bytes;
    }
    size_t off = 0, slot_off[MAX_SLOTS];
    size_t in_bytes = ((size_t)n * h * w * e->in_c * sizeof(float) + 255) / 256 * 256;
    off += in_bytes;
    for (int k = 0; k < n_slots; k++) {
      slot_off[k] = off;
      off += (slot_size[k] + 255) / 256 * 256;
    }
    size_t ws_off = off;
    off += (ws + 255) / 256 * 256;
    if (off > e->arena_bytes || !e->arena) {
      /* Only a larger shape allocates: bf-serve plans its largest batch once,
       * then runs every smaller batch in that arena without allocating. */
      if (e->arena) e->be->free(e->be, e->arena);
      e->arena_bytes = off ? off : 256;
      e->arena = e->be->alloc(e->be, e->arena_bytes);
      if (!e->arena) {
        e->arena_bytes = 0;
        return bf_error_wrap(BF_ENOMEM, "engine: arena for %dx%dx%d", n, h, w);
      }
    }
    uint8_t *base = e->arena;
    for (int v = 0; v < e->n_vals; v++)
      e->vals[v].p = (float *)(base + (e->vals[v].slot < 0 ? 0 : slot_off[e->vals[v].slot]));
    e->ws = ws ? base + ws_off : NULL;
    e->ws_bytes = ws;
    e->pn = n, e->ph = h, e->pw = w;
    int rc = plan_keep(e);
    if (rc) {
      free_conv_plans(e);
      e->pn = 0;
      return rc;
    }
  }
done:
  if (oh) *oh = out->h;
  if (ow) *ow = out->w;
  if (oc) *oc = out->c;
  return BF_OK;
}

double bf_engine_gflop_per_image(const bf_engine *e) {
  if (!e->pn) return 0;
  double f = 0;
  for (int i = 0; i < e->n_steps; i++) {
    const bf_conv_desc *d = &e->steps[i].cd;
    if (e->steps[i].kind == ST_CONV) f += 2.0 * d->oh * d->ow * d->k * d->c * d->kh * d->kw;
  }
  return f * 1e-9;
}

int bf_engine_run(bf_engine *e, const float *in, float *out) {
  if (!e->arena || !e->pn) return bf_error(BF_EINVAL, "engine: run before plan");
  bf_backend *be = e->be;
  const int n = e->pn;
  BF_TRY(be->upload(be, e->vals[0].p, in, (size_t)n * e->ph * e->pw * e->in_c * sizeof(float)));
  for (int i = 0; i < e->n_steps; i++) {
    const eng_step *s = &e->steps[i];
    const eng_val *x = &e->vals[s->in], *y = &e->vals[s->out];
    switch (s->kind) {
      case ST_CONV:
        BF_TRY(be->conv_infer_forward(be, s->ci, x->p, s->res >= 0 ? e->vals[s->res].p : NULL, y->p, e->ws,
                                      e->ws_bytes));
        break;
      case ST_MAXPOOL: BF_TRY(be->maxpool_forward(be, &s->pd, x->p, y->p)); break;
      case ST_GAP: BF_TRY(be->avgpool_global_forward(be, n, x->h * x->w, x->c, x->p, y->p)); break;
      case ST_QUANT:
        BF_TRY(be->quant_forward(be, (size_t)n * x->h * x->w * x->c, x->p, e->weights + s->w_off, s->bits, y->p,
                                 NULL));
        break;
    }
  }
  const eng_val *o = &e->vals[e->n_vals - 1];
  BF_TRY(be->download(be, out, o->p, (size_t)n * o->h * o->w * o->c * sizeof(float)));
  return be->sync(be);
}
