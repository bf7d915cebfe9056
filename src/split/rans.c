#include "rans.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "frame.h"

void bf_rans_tables_free(bf_rans_tables *t) {
  free(t->freq);
  free(t->cum);
  free(t->pred);
  memset(t, 0, sizeof *t);
}

static int alloc_tables(bf_rans_tables *t, int channels, int bits) {
  memset(t, 0, sizeof *t);
  if (channels < 1 || channels > BF_RANS_MAX_CHANNELS)
    return bf_error(BF_EINVAL, "rans tables: %d channels (1..%d)", channels, BF_RANS_MAX_CHANNELS);
  if (bits < 1 || bits > 8) return bf_error(BF_EINVAL, "rans tables: %d bits (1..8)", bits);
  t->channels = channels, t->bits = bits, t->alphabet = 1 << bits;
  t->freq = bf_malloc((size_t)channels * t->alphabet * sizeof *t->freq, "rans frequencies");
  t->cum = bf_malloc((size_t)channels * (t->alphabet + 1) * sizeof *t->cum, "rans cumulative frequencies");
  t->pred = bf_calloc((size_t)channels, 1, "rans predictors");
  if (!t->freq || !t->cum || !t->pred) {
    bf_rans_tables_free(t);
    return BF_ENOMEM;
  }
  return BF_OK;
}

int bf_rans_tables_init(bf_rans_tables *t, int channels, int bits, const uint32_t *freq) {
  BF_TRY(alloc_tables(t, channels, bits));
  int a = t->alphabet;
  for (int c = 0; c < channels; c++) {
    uint32_t sum = 0;
    uint16_t *cum = t->cum + (size_t)c * (a + 1);
    cum[0] = 0;
    for (int s = 0; s < a; s++) {
      uint32_t f = freq[(size_t)c * a + s];
      if (f < 1 || f > BF_RANS_TOTAL) {
        bf_rans_tables_free(t);
        return bf_error(BF_EINVAL, "rans tables: channel %d symbol %d has frequency %u (1..%u)", c, s, f,
                        BF_RANS_TOTAL);
      }
      sum += f;
      if (sum > BF_RANS_TOTAL) break;
      t->freq[(size_t)c * a + s] = (uint16_t)f;
      cum[s + 1] = (uint16_t)sum;
    }
    if (sum != BF_RANS_TOTAL) {
      bf_rans_tables_free(t);
      return bf_error(BF_EINVAL, "rans tables: channel %d frequencies sum to %s%u, not %u", c,
                      sum > BF_RANS_TOTAL ? "more than " : "", sum, BF_RANS_TOTAL);
    }
  }
  return BF_OK;
}

typedef struct rem_sym {
  uint64_t rem;
  int s;
} rem_sym;

static int cmp_rem(const void *pa, const void *pb) {
  const rem_sym *a = pa, *b = pb;
  if (a->rem != b->rem) return a->rem > b->rem ? -1 : 1;
  return a->s - b->s;
}

int bf_rans_tables_from_counts(bf_rans_tables *t, int channels, int bits, const uint64_t *counts) {
  if (bits < 1 || bits > 8) return bf_error(BF_EINVAL, "rans tables: %d bits (1..8)", bits);
  if (channels < 1 || channels > BF_RANS_MAX_CHANNELS)
    return bf_error(BF_EINVAL, "rans tables: %d channels (1..%d)", channels, BF_RANS_MAX_CHANNELS);
  uint32_t a = 1u << bits, spare = BF_RANS_TOTAL - a;
  uint32_t *freq = bf_malloc((size_t)channels * a * sizeof *freq, "rans frequencies");
  rem_sym *rs = bf_malloc(a * sizeof *rs, "rans remainders");
  int rc = freq && rs ? BF_OK : BF_ENOMEM;
  for (int c = 0; !rc && c < channels; c++) {
    const uint64_t *cnt = counts + (size_t)c * a;
    uint32_t *f = freq + (size_t)c * a;
    uint64_t n = 0;
    for (uint32_t s = 0; s < a; s++) n += cnt[s];
    if (n == 0) {
      for (uint32_t s = 0; s < a; s++) f[s] = BF_RANS_TOTAL / a;
      continue;
    }
    /* count * spare must fit 64 bits: spare < 2^15 */
    if (n >> 48) {
      rc = bf_error(BF_EINVAL, "rans tables: channel %d has %llu counts (at most 2^48)", c, (unsigned long long)n);
      break;
    }
    uint32_t sum = 0;
    for (uint32_t s = 0; s < a; s++) {
      uint64_t p = cnt[s] * spare;
      f[s] = 1 + (uint32_t)(p / n);
      sum += f[s];
      rs[s].rem = p % n;
      rs[s].s = (int)s;
    }
    /* sum > T - a, so fewer than a symbols get one more */
    qsort(rs, a, sizeof *rs, cmp_rem);
    for (uint32_t r = 0; sum < BF_RANS_TOTAL; r++, sum++) f[rs[r].s]++;
  }
  if (!rc) rc = bf_rans_tables_init(t, channels, bits, freq);
  free(freq);
  free(rs);
  return rc;
}

/* The median edge detector (rans.h) for code i of a map with c channels and
 * `row` codes a row; x: the pixel's column. Reads only codes before i, so
 * the encoder (backwards over the originals) and the decoder (forwards over
 * what it has decoded) predict alike. */
static inline int predict(const uint8_t *q, size_t i, size_t c, size_t row, size_t x) {
  if (i < row) return x ? q[i - c] : 0;
  if (!x) return q[i - row];
  int a = q[i - c], b = q[i - row], d = q[i - row - c];
  int hi = a > b ? a : b, lo = a < b ? a : b;
  return d >= hi ? lo : d <= lo ? hi : a + b - d;
}

static int check_map(size_t n, int w, size_t c, int err) {
  if (w < 1 || n % ((size_t)w * c))
    return bf_error(err, "rans: %zu codes are not rows of %d pixels x %zu channels", n, w, c);
  return BF_OK;
}

int bf_rans_count(int channels, int bits, const uint8_t *codes, size_t n, int w, uint64_t *plain, uint64_t *resid) {
  size_t c = (size_t)channels, row = (size_t)w * c, a = (size_t)1 << bits;
  BF_TRY(check_map(n, w, c, BF_EINVAL));
  for (size_t i = 0; i < n; i++) {
    size_t ch = i % c;
    if (codes[i] >= a) return bf_error(BF_EINVAL, "rans: code %d at %zu outside %d bits", codes[i], i, bits);
    plain[ch * a + codes[i]]++;
    resid[ch * a + ((codes[i] - predict(codes, i, c, row, i / c % (size_t)w)) & (a - 1))]++;
  }
  return BF_OK;
}

/* Bits that tables t's channel ch spends on the counts cnt (floating point:
 * it only ranks two candidates). */
static double coded_bits(const bf_rans_tables *t, int ch, const uint64_t *cnt) {
  double b = 0;
  for (int s = 0; s < t->alphabet; s++)
    if (cnt[s]) b += (double)cnt[s] * (BF_RANS_PROB_BITS - log2(t->freq[(size_t)ch * t->alphabet + s]));
  return b;
}

int bf_rans_tables_choose(bf_rans_tables *t, int channels, int bits, const uint64_t *plain, const uint64_t *resid) {
  bf_rans_tables tp = {0}, tr = {0};
  memset(t, 0, sizeof *t);
  BF_TRY(bf_rans_tables_from_counts(&tp, channels, bits, plain));
  int rc = bf_rans_tables_from_counts(&tr, channels, bits, resid);
  if (rc) {
    bf_rans_tables_free(&tp);
    return rc;
  }
  /* tp becomes the result: a predicted channel takes tr's row */
  size_t a = (size_t)tp.alphabet;
  for (int ch = 0; ch < channels; ch++) {
    if (!(coded_bits(&tr, ch, resid + ch * a) < coded_bits(&tp, ch, plain + ch * a))) continue;
    tp.pred[ch] = BF_RANS_PRED_MEDIAN;
    memcpy(tp.freq + ch * a, tr.freq + ch * a, a * sizeof *tp.freq);
    memcpy(tp.cum + ch * (a + 1), tr.cum + ch * (a + 1), (a + 1) * sizeof *tp.cum);
  }
  bf_rans_tables_free(&tr);
  *t = tp;
  return BF_OK;
}

int bf_rans_tables_serialize(const bf_rans_tables *t, uint8_t **out, size_t *len) {
  size_t n = (size_t)t->channels * t->alphabet, np = 0;
  for (int ch = 0; ch < t->channels; ch++)
    if (t->pred && t->pred[ch]) np = (size_t)t->channels;
  uint8_t *b = bf_malloc(BF_RANS_FILE_HEADER + 2 * n + np, "rans tables file");
  if (!b) return BF_ENOMEM;
  memcpy(b, np ? BF_RANS_MAGIC_PRED : BF_RANS_MAGIC, 8);
  bf_put_u32(b + 8, (uint32_t)t->channels);
  bf_put_u32(b + 12, (uint32_t)t->bits);
  bf_put_u32(b + 16, BF_RANS_PROB_BITS);
  for (size_t i = 0; i < n; i++) bf_put_u16(b + BF_RANS_FILE_HEADER + 2 * i, t->freq[i]);
  if (np) memcpy(b + BF_RANS_FILE_HEADER + 2 * n, t->pred, np);
  *out = b;
  *len = BF_RANS_FILE_HEADER + 2 * n + np;
  return BF_OK;
}

int bf_rans_tables_parse(const uint8_t *buf, size_t len, const char *what, bf_rans_tables *t) {
  memset(t, 0, sizeof *t);
  int v2 = len >= BF_RANS_FILE_HEADER && !memcmp(buf, BF_RANS_MAGIC_PRED, 8);
  if (len < BF_RANS_FILE_HEADER || (!v2 && memcmp(buf, BF_RANS_MAGIC, 8)))
    return bf_error(BF_EINVAL, "%s: not a rans tables file (magic %s or %s)", what, BF_RANS_MAGIC, BF_RANS_MAGIC_PRED);
  uint32_t ch = bf_get_u32(buf + 8), bits = bf_get_u32(buf + 12), pb = bf_get_u32(buf + 16);
  if (ch < 1 || ch > BF_RANS_MAX_CHANNELS || bits < 1 || bits > 8 || pb != BF_RANS_PROB_BITS)
    return bf_error(BF_EINVAL, "%s: channels %u (1..%d), bits %u (1..8), prob_bits %u (%d)", what, ch,
                    BF_RANS_MAX_CHANNELS, bits, pb, BF_RANS_PROB_BITS);
  size_t n = (size_t)ch << bits, np = v2 ? ch : 0;
  if (len != BF_RANS_FILE_HEADER + 2 * n + np)
    return bf_error(BF_EINVAL, "%s: %zu bytes, %u channels of %u symbols%s need %zu", what, len, ch, 1u << bits,
                    v2 ? " and their predictors" : "", BF_RANS_FILE_HEADER + 2 * n + np);
  const uint8_t *pred = buf + BF_RANS_FILE_HEADER + 2 * n;
  for (size_t c = 0; c < np; c++)
    if (pred[c] > BF_RANS_PRED_MEDIAN)
      return bf_error(BF_EINVAL, "%s: channel %zu has predictor %d (0 none, 1 median)", what, c, pred[c]);
  uint32_t *f = bf_malloc(n * sizeof *f, "rans frequencies");
  if (!f) return BF_ENOMEM;
  for (size_t i = 0; i < n; i++) f[i] = bf_get_u16(buf + BF_RANS_FILE_HEADER + 2 * i);
  int rc = bf_rans_tables_init(t, (int)ch, (int)bits, f);
  free(f);
  if (rc) return bf_error_wrap(rc, "%s", what);
  if (np) memcpy(t->pred, pred, np);
  return BF_OK;
}

int bf_rans_encode(const bf_rans_tables *t, const uint8_t *sym, size_t n, int w, uint8_t *out, size_t cap,
                   size_t *out_len) {
  size_t c = (size_t)t->channels, row = (size_t)w * c;
  int a = t->alphabet;
  BF_TRY(check_map(n, w, c, BF_EINVAL));
  uint8_t *p = out + cap;
  uint32_t x = BF_RANS_L;
  /* rANS is last in, first out: code backwards so the decoder runs forwards */
  for (size_t i = n; i-- > 0;) {
    size_t ch = i % c;
    int s = sym[i];
    if (s >= a) return bf_error(BF_EINVAL, "rans: symbol %d at %zu outside the %d-symbol alphabet", s, i, a);
    if (t->pred[ch]) s = (s - predict(sym, i, c, row, i / c % (size_t)w)) & (a - 1);
    uint32_t f = t->freq[ch * a + s], st = t->cum[ch * (a + 1) + s];
    uint32_t x_max = ((BF_RANS_L >> BF_RANS_PROB_BITS) << 8) * f;
    while (x >= x_max) {
      if (p == out) return bf_error(BF_EINVAL, "rans: output buffer of %zu bytes too small", cap);
      *--p = (uint8_t)x;
      x >>= 8;
    }
    x = ((x / f) << BF_RANS_PROB_BITS) + x % f + st;
  }
  if ((size_t)(p - out) < 4) return bf_error(BF_EINVAL, "rans: output buffer of %zu bytes too small", cap);
  p -= 4;
  bf_put_u32(p, x);
  size_t len = (size_t)(out + cap - p);
  memmove(out, p, len);
  *out_len = len;
  return BF_OK;
}

int bf_rans_decode(const bf_rans_tables *t, const uint8_t *in, size_t len, int w, uint8_t *sym, size_t n) {
  size_t c = (size_t)t->channels, row = (size_t)w * c;
  int a = t->alphabet;
  BF_TRY(check_map(n, w, c, BF_PERR_BAD_PAYLOAD));
  if (len < 4) return bf_error(BF_PERR_BAD_PAYLOAD, "rans: stream of %zu bytes has no state", len);
  uint32_t x = bf_get_u32(in);
  if (x < BF_RANS_L || x >= BF_RANS_L << 8)
    return bf_error(BF_PERR_BAD_PAYLOAD, "rans: initial state %u outside [2^23, 2^31)", x);
  const uint8_t *p = in + 4, *end = in + len;
  for (size_t i = 0; i < n; i++) {
    size_t ch = i % c;
    const uint16_t *cum = t->cum + ch * (a + 1);
    uint32_t slot = x & (BF_RANS_TOTAL - 1);
    int lo = 0, hi = a; /* cum strictly increasing: the s with cum[s] <= slot < cum[s+1] */
    while (hi - lo > 1) {
      int mid = (lo + hi) / 2;
      if (cum[mid] <= slot) lo = mid;
      else hi = mid;
    }
    sym[i] = (uint8_t)(t->pred[ch] ? (lo + predict(sym, i, c, row, i / c % (size_t)w)) & (a - 1) : lo);
    x = t->freq[ch * a + lo] * (x >> BF_RANS_PROB_BITS) + slot - cum[lo];
    while (x < BF_RANS_L) {
      if (p == end) return bf_error(BF_PERR_BAD_PAYLOAD, "rans: stream truncated at symbol %zu of %zu", i, n);
      x = x << 8 | *p++;
    }
  }
  if (p != end) return bf_error(BF_PERR_BAD_PAYLOAD, "rans: %zu bytes after the last symbol", (size_t)(end - p));
  if (x != BF_RANS_L) return bf_error(BF_PERR_BAD_PAYLOAD, "rans: final state %u is not the initial %u", x, BF_RANS_L);
  return BF_OK;
}
