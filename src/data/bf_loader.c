/* Threaded batch loader. Worker threads claim single samples of the batches in
 * a ring of prefetch slots, decode and augment them straight into the slot's
 * NHWC buffers. Every random decision comes from bf_rng streams derived from
 * (seed, epoch, position), and a batch's content is fixed when it is issued,
 * so batches are bitwise identical whatever the number of threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_data_internal.h"
#include "pixel_math.h"

enum { SLOT_FREE = 0, SLOT_FILLING, SLOT_READY, SLOT_HELD };

typedef struct slot {
  int state;
  int64_t gbatch; /* epoch * bpe + step */
  int count, claimed, done;
  int64_t *index;
  int32_t *labels;
  uint8_t *u8;
  float *x;
} slot;

typedef struct worker {
  struct bf_loader *L;
  pthread_t th;
  int started;
  bf_decoder dec;
  bf_aug_scratch aug;
  uint8_t *u8tmp;
} worker;

struct bf_loader {
  const bf_dataset *ds;
  bf_split split;
  bf_data_config cfg;
  size_t n;
  int64_t bpe;
  int B, S;
  int GB, shard0; /* global batch and this shard's first position in it (B = GB without shards) */
  float lut[3][256];
  pthread_mutex_t mu;
  pthread_cond_t cv_work, cv_done;
  slot *slots;
  int nslots;
  int64_t next_issue, next_consume;
  int64_t perm_epoch;
  uint32_t *perm;
  int held, started, stop;
  uint64_t gen;
  int inflight;
  atomic_uchar *bad_flag; /* per sample: proved bad while loading */
  size_t runtime_bad;
  int fatal;
  char fatal_msg[1536];
  worker *workers;
  int nworkers;
};

#define PERM_STREAM 0x7065726d75746531ULL /* distinct from the per-sample streams */

static void compute_perm(bf_loader *L, int64_t epoch) {
  for (size_t i = 0; i < L->n; i++) L->perm[i] = (uint32_t)i;
  if (L->cfg.shuffle) {
    bf_rng r;
    bf_rng_derive(&r, L->cfg.seed, (uint64_t)epoch, PERM_STREAM);
    for (size_t i = L->n; i > 1; i--) {
      size_t j = bf_rng_below(&r, (uint32_t)i);
      uint32_t t = L->perm[i - 1];
      L->perm[i - 1] = L->perm[j];
      L->perm[j] = t;
    }
  }
  L->perm_epoch = epoch;
}

/* under the lock */
static void issue(bf_loader *L, slot *s) {
  int64_t g = L->next_issue++;
  int64_t epoch = g / L->bpe, step = g % L->bpe;
  if (L->perm_epoch != epoch) compute_perm(L, epoch);
  size_t first = (size_t)step * L->GB + (size_t)L->shard0;
  int count = first >= L->n ? 0 : (int)((L->n - first) < (size_t)L->B ? (L->n - first) : (size_t)L->B);
  s->gbatch = g;
  s->count = count;
  s->claimed = s->done = 0;
  size_t px = (size_t)L->S * L->S * 3;
  for (int i = 0; i < L->B; i++) {
    if (i < count) {
      s->index[i] = L->perm[first + (size_t)i];
    } else {
      s->index[i] = -1;
      s->labels[i] = -1;
      if (s->u8) memset(s->u8 + (size_t)i * px, 0, px);
      if (s->x) memset(s->x + (size_t)i * px, 0, px * sizeof(float));
    }
  }
  s->state = count ? SLOT_FILLING : SLOT_READY; /* an empty shard of a short last batch */
}

static int load_pixels(worker *w, size_t idx, int *label, const uint8_t **pix, int *dw, int *dh, int *ow,
                       int *oh) {
  bf_loader *L = w->L;
  const char *path;
  const uint8_t *gray;
  int gw, gh;
  BF_TRY(bf_dataset_source(L->ds, L->split, idx, label, &path, &gray, &gw, &gh));
  if (!path) {
    size_t np = (size_t)gw * gh;
    if (np * 3 > w->dec.pix_cap) {
      uint8_t *q = realloc(w->dec.pix, np * 3);
      if (!q) return bf_error(BF_ENOMEM, "out of memory");
      w->dec.pix = q;
      w->dec.pix_cap = np * 3;
    }
    for (size_t p = 0; p < np; p++) w->dec.pix[3 * p] = w->dec.pix[3 * p + 1] = w->dec.pix[3 * p + 2] = gray[p];
    *pix = w->dec.pix;
    *dw = *ow = gw;
    *dh = *oh = gh;
    return 0;
  }
  BF_TRY(bf_decoder_read_file(&w->dec, path));
  BF_TRY(bf_decoder_decode(&w->dec, path, L->cfg.resize, dw, dh, ow, oh));
  *pix = w->dec.pix;
  return 0;
}

static void note_bad(bf_loader *L, size_t idx, const char *msg) {
  pthread_mutex_lock(&L->mu);
  if (!atomic_load_explicit(&L->bad_flag[idx], memory_order_relaxed)) {
    atomic_store_explicit(&L->bad_flag[idx], 1, memory_order_relaxed);
    L->runtime_bad++;
    if (L->cfg.verbose) fprintf(stderr, "bf_data: skipping bad image: %s\n", msg);
    const bf_dataset_info *in = bf_dataset_get_info(L->ds);
    size_t open_bad = in->explicit_split ? in->bad_in_split[L->split] : 0;
    size_t bad = open_bad + L->runtime_bad, tot = L->n + open_bad;
    if (!L->fatal && (double)bad > L->cfg.max_bad_fraction * (double)tot) {
      L->fatal = 1;
      snprintf(L->fatal_msg, sizeof L->fatal_msg,
               "%s: %zu of %zu images of the %s split are bad (> max_bad_fraction %.2f%%); latest: %.1000s",
               bf_dataset_root(L->ds), bad, tot, L->split ? "test" : "train", 100.0 * L->cfg.max_bad_fraction, msg);
      pthread_cond_broadcast(&L->cv_done);
    }
  }
  pthread_mutex_unlock(&L->mu);
}

/* torchvision center_crop: int(round((size - crop) / 2.0)), Python's round
 * (half to even); d = size - crop may be negative (zero-filled border). */
static int center_offset(int d) {
  int q = d >= 0 ? d / 2 : -((-d + 1) / 2); /* floor(d / 2) */
  if (d - 2 * q == 1 && (q & 1)) q++;       /* .5: to the even neighbour */
  return q;
}

int bf_image_eval_crop(const bf_image *img, int resize, int out_size, uint8_t *dst) {
  if (out_size <= 0 || out_size > 4096) return bf_error(BF_EINVAL, "eval crop: size %d is not in [1, 4096]", out_size);
  bf_aug_scratch s;
  memset(&s, 0, sizeof s);
  int rw, rh;
  bf_resize_dims(img->w, img->h, resize, &rw, &rh);
  int rc = bf_augment_window(&s, img->rgb, img->w, img->h, rw, rh, center_offset(rw - out_size),
                             center_offset(rh - out_size), out_size, 0, dst);
  bf_aug_scratch_free(&s);
  return rc;
}

/* Decodes and augments sample i of slot s (outside the lock). */
static void process(worker *w, slot *s, int i) {
  bf_loader *L = w->L;
  int64_t epoch = s->gbatch / L->bpe, step = s->gbatch % L->bpe;
  uint64_t pos = (uint64_t)(step * L->GB + L->shard0 + i); /* place in the global batch */
  size_t idx = (size_t)s->index[i];
  const uint8_t *pix = NULL;
  size_t used = idx;
  int label = -1, dw = 0, dh = 0, ow = 0, oh = 0, rc = -1;
  /* a bad image is replaced by the next good sample of the split (a pure
   * function of the data, so still independent of the thread count) */
  for (size_t tries = 0; tries < L->n && rc; tries++) {
    size_t k = (idx + tries) % L->n;
    /* a stale 0 only means decoding a known-bad file again: same outcome */
    if (atomic_load_explicit(&L->bad_flag[k], memory_order_relaxed)) continue;
    used = k;
    rc = load_pixels(w, k, &label, &pix, &dw, &dh, &ow, &oh);
    if (rc) note_bad(L, k, bf_last_error());
  }
  size_t px = (size_t)L->S * L->S * 3;
  uint8_t *u8 = s->u8 ? s->u8 + (size_t)i * px : w->u8tmp;
  if (rc) { /* nothing in the split decodes: the fatal flag is already set */
    memset(u8, 0, px);
    label = -1;
  } else {
    bf_rng r;
    bf_rng_derive(&r, L->cfg.seed, (uint64_t)epoch, pos);
    int rw, rh, x0, y0, flip = 0;
    bf_resize_dims(ow, oh, L->cfg.resize, &rw, &rh);
    if (L->cfg.augment == BF_AUG_TRAIN) {
      int p = L->cfg.pad, S = L->S;
      x0 = (rw + 2 * p >= S) ? -p + (int)bf_rng_below(&r, (uint32_t)(rw + 2 * p - S + 1)) : (rw - S) / 2;
      y0 = (rh + 2 * p >= S) ? -p + (int)bf_rng_below(&r, (uint32_t)(rh + 2 * p - S + 1)) : (rh - S) / 2;
      if (L->cfg.hflip) flip = (int)bf_rng_below(&r, 2);
    } else {
      x0 = center_offset(rw - L->S);
      y0 = center_offset(rh - L->S);
      if (L->cfg.hflip) flip = (int)bf_rng_below(&r, 2);
    }
    if (bf_augment_window(&w->aug, pix, dw, dh, rw, rh, x0, y0, L->S, flip, u8)) {
      note_bad(L, used, bf_last_error());
      memset(u8, 0, px);
      label = -1;
    }
  }
  s->labels[i] = label;
  if (s->x) {
    float *x = s->x + (size_t)i * px;
    for (size_t p = 0; p < px; p += 3) {
      x[p] = L->lut[0][u8[p]];
      x[p + 1] = L->lut[1][u8[p + 1]];
      x[p + 2] = L->lut[2][u8[p + 2]];
    }
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  bf_loader *L = w->L;
  pthread_mutex_lock(&L->mu);
  while (!L->stop) {
    slot *work = NULL, *freeslot = NULL;
    if (L->started && !L->fatal)
      for (int k = 0; k < L->nslots; k++) {
        slot *s = &L->slots[k];
        if (s->state == SLOT_FILLING && s->claimed < s->count && (!work || s->gbatch < work->gbatch)) work = s;
        if (s->state == SLOT_FREE && !freeslot) freeslot = s;
      }
    if (work) {
      int i = work->claimed++;
      uint64_t gen = L->gen;
      L->inflight++;
      pthread_mutex_unlock(&L->mu);
      process(w, work, i);
      pthread_mutex_lock(&L->mu);
      L->inflight--;
      if (gen == L->gen && ++work->done == work->count) work->state = SLOT_READY;
      pthread_cond_broadcast(&L->cv_done);
      continue;
    }
    if (freeslot) {
      issue(L, freeslot);
      continue;
    }
    pthread_cond_wait(&L->cv_work, &L->mu);
  }
  pthread_mutex_unlock(&L->mu);
  return NULL;
}

int bf_loader_create(bf_loader **out, const bf_dataset *ds, bf_split split, const bf_data_config *cfg) {
  *out = NULL;
  if (split != BF_SPLIT_TRAIN && split != BF_SPLIT_TEST) return bf_error(BF_EINVAL, "loader: bad split %d", (int)split);
  bf_data_config c;
  if (cfg) c = *cfg;
  else bf_data_config_init(&c);
  bf_data_config_resolve(&c, ds, split);
  size_t n = bf_dataset_count(ds, split);
  if (n == 0) return bf_error(BF_EINVAL, "loader: the %s split of %s is empty", split ? "test" : "train", bf_dataset_root(ds));
  if (n > UINT32_MAX) return bf_error(BF_EINVAL, "loader: too many samples");
  if (c.batch_size <= 0 || c.batch_size > 65536) return bf_error(BF_EINVAL, "batch_size: %d is not in [1, 65536]", c.batch_size);
  if (c.out_size <= 0 || c.out_size > 4096) return bf_error(BF_EINVAL, "out_size: %d is not in [1, 4096]", c.out_size);
  if (c.resize > 16384) return bf_error(BF_EINVAL, "resize: %d is too large", c.resize);
  if (c.pad < 0 || c.pad > 4096) return bf_error(BF_EINVAL, "pad: %d is not in [0, 4096]", c.pad);
  if (c.prefetch > 64) return bf_error(BF_EINVAL, "prefetch: %d is not in [1, 64]", c.prefetch);
  if (c.threads > 256) return bf_error(BF_EINVAL, "threads: %d is not in [1, 256]", c.threads);
  if (!c.want_float && !c.want_u8) return bf_error(BF_EINVAL, "want_float and want_u8 are both 0: nothing to produce");
  if (!(c.max_bad_fraction >= 0.0 && c.max_bad_fraction <= 1.0))
    return bf_error(BF_EINVAL, "max_bad_fraction: %g is not in [0, 1]", c.max_bad_fraction);
  for (int k = 0; k < 3; k++)
    if (!(c.std[k] > 0)) return bf_error(BF_EINVAL, "std[%d]: %g must be > 0", k, c.std[k]);
  if (c.shard_count < 1) c.shard_count = 1;
  if (c.shard_index < 0 || c.shard_index >= c.shard_count)
    return bf_error(BF_EINVAL, "shard_index: %d is not in [0, %d)", c.shard_index, c.shard_count);
  if (c.batch_size % c.shard_count)
    return bf_error(BF_EINVAL, "batch_size: %d is not divisible by the %d shards", c.batch_size, c.shard_count);
  int64_t bpe = c.drop_last ? (int64_t)(n / (size_t)c.batch_size) : (int64_t)((n + (size_t)c.batch_size - 1) / (size_t)c.batch_size);
  if (bpe == 0)
    return bf_error(BF_EINVAL, "batch_size: %d is larger than the %zu samples of the split (drop_last)", c.batch_size, n);
  bf_loader *L = calloc(1, sizeof *L);
  if (!L) return bf_error(BF_ENOMEM, "out of memory");
  L->ds = ds;
  L->split = split;
  L->cfg = c;
  L->n = n;
  L->bpe = bpe;
  L->GB = c.batch_size;
  L->B = c.batch_size / c.shard_count;
  L->shard0 = c.shard_index * L->B;
  L->S = c.out_size;
  L->held = -1;
  L->perm_epoch = -1;
  for (int ch = 0; ch < 3; ch++)
    for (int v = 0; v < 256; v++) L->lut[ch][v] = bf_pixel_normalize((uint8_t)v, c.mean[ch], c.std[ch]);
  pthread_mutex_init(&L->mu, NULL);
  pthread_cond_init(&L->cv_work, NULL);
  pthread_cond_init(&L->cv_done, NULL);
  int rc = 0;
  L->nslots = c.prefetch + 1;
  L->slots = calloc((size_t)L->nslots, sizeof(slot));
  L->perm = malloc(n * sizeof(uint32_t));
  L->bad_flag = calloc(n, sizeof(atomic_uchar));
  if (!L->slots || !L->perm || !L->bad_flag) rc = bf_error(BF_ENOMEM, "out of memory");
  size_t px = (size_t)L->B * L->S * L->S * 3;
  for (int k = 0; !rc && k < L->nslots; k++) {
    slot *s = &L->slots[k];
    s->index = malloc((size_t)L->B * sizeof(int64_t));
    s->labels = malloc((size_t)L->B * sizeof(int32_t));
    if (c.want_u8) s->u8 = bf_alloc_aligned(px, "batch uint8");
    if (c.want_float) s->x = bf_alloc_aligned(px * sizeof(float), "batch float32");
    if (!s->index || !s->labels || (c.want_u8 && !s->u8) || (c.want_float && !s->x))
      rc = bf_error(BF_ENOMEM, "out of memory for %d prefetch batches of %d x %d x %d x 3", L->nslots, L->B, L->S, L->S);
  }
  L->nworkers = c.threads;
  L->workers = calloc((size_t)L->nworkers, sizeof(worker));
  if (!rc && !L->workers) rc = bf_error(BF_ENOMEM, "out of memory");
  for (int t = 0; !rc && t < L->nworkers; t++) {
    worker *w = &L->workers[t];
    w->L = L;
    bf_decoder_init(&w->dec);
    if (!c.want_u8 && !(w->u8tmp = malloc((size_t)L->S * L->S * 3))) rc = bf_error(BF_ENOMEM, "out of memory");
    if (!rc && pthread_create(&w->th, NULL, worker_main, w) != 0) rc = bf_error(BF_EBACKEND, "cannot start loader thread %d", t);
    if (!rc) w->started = 1;
  }
  if (rc) {
    bf_loader_destroy(L);
    return rc;
  }
  *out = L;
  return 0;
}

void bf_loader_destroy(bf_loader *L) {
  if (!L) return;
  pthread_mutex_lock(&L->mu);
  L->stop = 1;
  pthread_cond_broadcast(&L->cv_work);
  pthread_mutex_unlock(&L->mu);
  if (L->workers) {
    for (int t = 0; t < L->nworkers; t++) {
      worker *w = &L->workers[t];
      if (w->started) pthread_join(w->th, NULL);
      bf_decoder_free(&w->dec);
      bf_aug_scratch_free(&w->aug);
      free(w->u8tmp);
    }
    free(L->workers);
  }
  if (L->slots)
    for (int k = 0; k < L->nslots; k++) {
      free(L->slots[k].index);
      free(L->slots[k].labels);
      free(L->slots[k].u8);
      free(L->slots[k].x);
    }
  free(L->slots);
  free(L->perm);
  free((void *)L->bad_flag);
  pthread_mutex_destroy(&L->mu);
  pthread_cond_destroy(&L->cv_work);
  pthread_cond_destroy(&L->cv_done);
  free(L);
}

const bf_data_config *bf_loader_config(const bf_loader *L) { return &L->cfg; }
int64_t bf_loader_batches_per_epoch(const bf_loader *L) { return L->bpe; }

size_t bf_loader_bad_count(const bf_loader *L) {
  pthread_mutex_lock((pthread_mutex_t *)&L->mu);
  size_t n = L->runtime_bad;
  pthread_mutex_unlock((pthread_mutex_t *)&L->mu);
  return n;
}

int bf_loader_start(bf_loader *L, int64_t epoch, int64_t step) {
  if (epoch < 0 || step < 0 || step >= L->bpe)
    return bf_error(BF_EINVAL, "loader start: epoch %lld step %lld out of range (0 <= step < %lld)", (long long)epoch,
                    (long long)step, (long long)L->bpe);
  pthread_mutex_lock(&L->mu);
  L->gen++;
  L->started = 0; /* no new batches are issued while the old ones drain */
  L->held = -1;
  while (L->inflight > 0) pthread_cond_wait(&L->cv_done, &L->mu);
  for (int k = 0; k < L->nslots; k++) L->slots[k].state = SLOT_FREE;
  L->next_issue = L->next_consume = epoch * L->bpe + step;
  L->started = 1;
  pthread_cond_broadcast(&L->cv_work);
  pthread_mutex_unlock(&L->mu);
  return 0;
}

int bf_loader_next(bf_loader *L, bf_batch *b) {
  memset(b, 0, sizeof *b);
  pthread_mutex_lock(&L->mu);
  if (!L->started) {
    pthread_mutex_unlock(&L->mu);
    return bf_error(BF_EINVAL, "loader: bf_loader_start was not called");
  }
  if (L->held >= 0) {
    L->slots[L->held].state = SLOT_FREE;
    L->held = -1;
    pthread_cond_broadcast(&L->cv_work);
  }
  slot *s = NULL;
  for (;;) {
    if (L->fatal) {
      pthread_mutex_unlock(&L->mu);
      return bf_error(BF_EINVAL, "%s", L->fatal_msg);
    }
    s = NULL;
    for (int k = 0; k < L->nslots; k++)
      if (L->slots[k].state != SLOT_FREE && L->slots[k].gbatch == L->next_consume) s = &L->slots[k];
    if (s && s->state == SLOT_READY) break;
    pthread_cond_wait(&L->cv_done, &L->mu);
  }
  s->state = SLOT_HELD;
  L->held = (int)(s - L->slots);
  L->next_consume++;
  pthread_mutex_unlock(&L->mu);
  b->count = s->count;
  b->batch_size = L->B;
  b->h = b->w = L->S;
  b->x = s->x;
  b->u8 = s->u8;
  b->labels = s->labels;
  b->index = s->index;
  b->epoch = s->gbatch / L->bpe;
  b->step = s->gbatch % L->bpe;
  return 0;
}
