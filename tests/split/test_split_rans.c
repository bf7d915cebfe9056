/* The rANS coder (rans.h) and codec rans (quant.h, frame.h):
 *   test_split_rans                     tables, round trips, hostile streams and tables
 *   test_split_rans features DEPLOY IMG...  lossless on the real features of an
 *                                       export's device halves; prints the bytes per image
 *   test_split_rans serve HOST:PORT DEPLOY  against bf-serve: rans == raw, hostile streams refused
 *   test_split_rans bytes DEPLOY DATA M  bytes per image with each codec on M test images of
 *                                       the data set DATA (bf_codec_bytes; a measuring aid) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "client.h"
#include "engine.h"
#include "frame.h"
#include "preprocess.h"
#include "quant.h"
#include "rans.h"
#include "rans_export.h"
#include "split.h"
#include "split_testutil.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

static int expect_fail(int rc, int code, const char *needle, const char *what) {
  TU_CHECK(rc == code, "%s: rc %d, expected %d (%s)", what, rc, code, bf_last_error());
  TU_CHECK(strstr(bf_last_error(), needle), "%s: message '%s' lacks '%s'", what, bf_last_error(), needle);
  return 0;
}

/* The normalisation rule of rans.h on hand-worked counts. */
static int test_from_counts(void) {
  bf_rans_tables t;
  uint64_t c1[4] = {0, 1, 1, 2}; /* (T - 4) * c / 4 exact: 0, 8191, 8191, 16382 */
  TU_CHECK(!bf_rans_tables_from_counts(&t, 1, 2, c1), "from counts: %s", bf_last_error());
  uint16_t w1[4] = {1, 8192, 8192, 16383};
  TU_CHECK(!memcmp(t.freq, w1, sizeof w1), "freq %u %u %u %u", t.freq[0], t.freq[1], t.freq[2], t.freq[3]);
  bf_rans_tables_free(&t);
  /* 32764 / 3 = 10921 rem 1 each: the one left over goes to the lowest symbol */
  uint64_t c2[8] = {1, 1, 1, 0, 0, 0, 0, 0};
  TU_CHECK(!bf_rans_tables_from_counts(&t, 2, 2, c2), "from counts: %s", bf_last_error());
  uint16_t w2[8] = {10923, 10922, 10922, 1, 8192, 8192, 8192, 8192}; /* channel 1: no counts, uniform */
  TU_CHECK(!memcmp(t.freq, w2, sizeof w2), "freq %u %u %u %u / %u", t.freq[0], t.freq[1], t.freq[2], t.freq[3],
           t.freq[4]);
  bf_rans_tables_free(&t);
  /* 256 symbols, one seen: the rest keep frequency 1 */
  uint64_t c3[256] = {0};
  c3[7] = 1000;
  TU_CHECK(!bf_rans_tables_from_counts(&t, 1, 8, c3), "from counts: %s", bf_last_error());
  TU_CHECK(t.freq[7] == BF_RANS_TOTAL - 255 && t.freq[0] == 1 && t.freq[255] == 1, "one-symbol table");
  bf_rans_tables_free(&t);
  return 0;
}

/* encode + decode of the map sym[n], w pixels a row, with t; returns the
 * stream length in *len */
static int round_trip(const bf_rans_tables *t, const uint8_t *sym, size_t n, int w, size_t *len, const char *what) {
  size_t cap = bf_rans_bound(n);
  uint8_t *buf = malloc(cap), *back = malloc(n ? n : 1);
  TU_CHECK(buf && back, "oom");
  int rc = bf_rans_encode(t, sym, n, w, buf, cap, len);
  TU_CHECK(!rc, "%s: encode: %s", what, bf_last_error());
  TU_CHECK(*len <= cap, "%s: %zu bytes over the bound %zu", what, *len, cap);
  rc = bf_rans_decode(t, buf, *len, w, back, n);
  TU_CHECK(!rc, "%s: decode: %s", what, bf_last_error());
  TU_CHECK(!memcmp(sym, back, n), "%s: decoded symbols differ", what);
  free(buf);
  free(back);
  return 0;
}

static int test_round_trips(void) {
  static const int chans[] = {1, 3, 8, 61};
  static const int rows[] = {1, 2, 17, 300};
  static const int bitss[] = {1, 2, 4, 8};
  int cases = 0;
  for (int bi = 0; bi < 4; bi++)
    for (int ci = 0; ci < 4; ci++)
      for (int ri = 0; ri < 4; ri++)
        for (int dist = 0; dist < 3; dist++) {
          int bits = bitss[bi], c = chans[ci], a = 1 << bits;
          size_t n = (size_t)rows[ri] * c;
          uint8_t *sym = malloc(n);
          uint64_t *cnt = calloc((size_t)c * a, sizeof *cnt);
          TU_CHECK(sym && cnt, "oom");
          for (size_t i = 0; i < n; i++) {
            uint32_t r = rnd();
            /* 0 uniform; 1 skewed (mostly 0, a few of every size); 2 one symbol per channel */
            sym[i] = (uint8_t)(dist == 0   ? r % a
                               : dist == 1 ? ((r & 7) ? (r >> 3) % 2 : (r >> 3) % a)
                                           : (i % c) % a);
            cnt[(i % c) * a + sym[i]]++;
          }
          bf_rans_tables t;
          TU_CHECK(!bf_rans_tables_from_counts(&t, c, bits, cnt), "tables: %s", bf_last_error());
          char what[96];
          snprintf(what, sizeof what, "bits %d, %zux%d, distribution %d", bits, n / c, c, dist);
          size_t len;
          /* one row, then the even channels predicted over rows of w pixels */
          int px = rows[ri], w = px == 300 ? 20 : px == 17 ? 1 : px;
          if (round_trip(&t, sym, n, px, &len, what)) return 1;
          /* the data's own tables code skewed data well below 1 byte a symbol */
          if (dist == 1 && bits == 8 && n >= 1000) TU_CHECK(len < n / 2, "%s: %zu bytes for %zu symbols", what, len, n);
          for (int ch = 0; ch < c; ch += 2) t.pred[ch] = BF_RANS_PRED_MEDIAN;
          snprintf(what, sizeof what, "bits %d, %zux%d, distribution %d, predicted, rows of %d", bits, n / c, c, dist,
                   w);
          if (round_trip(&t, sym, n, w, &len, what)) return 1;
          /* every symbol, with tables that saw almost none of them (frequency 1) */
          for (size_t i = 0; i < n; i++) sym[i] = (uint8_t)((i * 7 + (size_t)dist) % a);
          snprintf(what, sizeof what, "bits %d, %zux%d, unseen symbols %d, predicted", bits, n / c, c, dist);
          if (round_trip(&t, sym, n, w, &len, what)) return 1;
          memset(t.pred, 0, (size_t)c);
          snprintf(what, sizeof what, "bits %d, %zux%d, unseen symbols %d", bits, n / c, c, dist);
          if (round_trip(&t, sym, n, px, &len, what)) return 1;
          bf_rans_tables_free(&t);
          free(sym);
          free(cnt);
          cases += 4;
        }
  /* every symbol at the least frequency, back to back: the 2-byte worst case */
  uint64_t one[256] = {0};
  one[0] = 1;
  bf_rans_tables t;
  TU_CHECK(!bf_rans_tables_from_counts(&t, 1, 8, one), "tables");
  uint8_t worst[4096];
  for (int i = 0; i < 4096; i++) worst[i] = (uint8_t)(1 + i % 255);
  size_t len;
  if (round_trip(&t, worst, sizeof worst, 64, &len, "worst case")) return 1;
  TU_CHECK(len > 4096 * 7 / 4, "worst case: only %zu bytes", len);
  /* nothing at all: the state alone */
  if (round_trip(&t, worst, 0, 1, &len, "empty")) return 1;
  TU_CHECK(len == 4, "empty stream of %zu bytes", len);
  bf_rans_tables_free(&t);
  printf("round trips: %d cases lossless\n", cases + 2);
  return 0;
}

/* The median predictor by hand (rans.h): the residual of the last code of a
 * one-channel 2x2 map, one case per branch, and modular wrap-around. */
static int test_predictor(void) {
  static const struct {
    uint8_t q[4];
    int resid, what;
  } cases[] = {
      {{10, 12, 11, 20}, 8, 0}, /* d = 10 <= min(11, 12): max, 12 */
      {{30, 12, 11, 15}, 4, 1}, /* d = 30 >= max: min, 11 */
      {{15, 20, 10, 18}, 3, 2}, /* between: 10 + 20 - 15 = 15 */
      {{5, 3, 9, 9}, 2, 3},     /* 9 - (9 + 3 - 5); first row: 3 - 5 = -2 = 254; first column: 9 - 5 = 4 */
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    uint64_t plain[256] = {0}, resid[256] = {0};
    const uint8_t *q = cases[k].q;
    TU_CHECK(!bf_rans_count(1, 8, q, 4, 2, plain, resid), "count: %s", bf_last_error());
    TU_CHECK(plain[q[0]] >= 1 && plain[q[3]] >= 1, "case %zu: plain counts", k);
    TU_CHECK(resid[q[0]] >= 1, "case %zu: the first pixel is predicted as 0", k);
    TU_CHECK(resid[cases[k].resid] >= 1, "case %zu (branch %d): no residual %d", k, cases[k].what, cases[k].resid);
    if (k == 3) TU_CHECK(resid[5] == 1 && resid[254] == 1 && resid[4] == 1 && resid[2] == 1, "case 3: residuals");
  }
  /* a smooth channel (a ramp with plateaus) and a noise channel, 32x32 at
   * 8 bits: the first chooses prediction and codes in far fewer bytes, the
   * second keeps plain tables */
  enum { H = 32, W = 32, C = 2, N = H * W * C };
  static uint8_t map[N];
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      map[(y * W + x) * C] = (uint8_t)(60 + 3 * (x / 4) + 2 * (y / 4));
      map[(y * W + x) * C + 1] = (uint8_t)(rnd() % 7 == 0 ? rnd() % 256 : 0);
    }
  uint64_t plain[C * 256] = {0}, resid[C * 256] = {0};
  TU_CHECK(!bf_rans_count(C, 8, map, N, W, plain, resid), "count: %s", bf_last_error());
  bf_rans_tables tp, tc;
  TU_CHECK(!bf_rans_tables_from_counts(&tp, C, 8, plain) && !bf_rans_tables_choose(&tc, C, 8, plain, resid),
           "tables: %s", bf_last_error());
  TU_CHECK(tc.pred[0] == BF_RANS_PRED_MEDIAN && tc.pred[1] == BF_RANS_PRED_NONE, "predictors chosen %d %d", tc.pred[0],
           tc.pred[1]);
  TU_CHECK(!memcmp(tc.freq + 256, tp.freq + 256, 256 * sizeof *tc.freq), "the plain channel's table changed");
  size_t lp, lc;
  if (round_trip(&tp, map, N, W, &lp, "smooth, plain") || round_trip(&tc, map, N, W, &lc, "smooth, predicted")) return 1;
  TU_CHECK(lc * 10 < lp * 7, "prediction: %zu bytes, plain %zu", lc, lp);
  printf("predictor: residuals as worked by hand; smooth + noise map %zu bytes plain, %zu predicted\n", lp, lc);
  /* refusals: a code outside the bits, rows that do not divide the map */
  uint8_t big[2] = {1, 200};
  if (expect_fail(bf_rans_count(1, 4, big, 2, 2, plain, resid), BF_EINVAL, "outside 4 bits", "count 4 bits")) return 1;
  if (expect_fail(bf_rans_count(2, 8, map, N, 3, plain, resid), BF_EINVAL, "rows of 3", "count ragged")) return 1;
  bf_rans_tables_free(&tp);
  bf_rans_tables_free(&tc);
  return 0;
}

static int test_hostile_streams(void) {
  bf_rans_tables t;
  uint64_t cnt[3 * 256];
  for (int i = 0; i < 3 * 256; i++) cnt[i] = (uint64_t)(i % 256 < 8 ? 100 : i % 3);
  TU_CHECK(!bf_rans_tables_from_counts(&t, 3, 8, cnt), "tables");
  t.pred[1] = BF_RANS_PRED_MEDIAN; /* garbage through the predictor too */
  enum { N = 3 * 200, W = 20 };
  uint8_t sym[N], back[N], buf[2 * N + 16];
  for (int i = 0; i < N; i++) sym[i] = (uint8_t)(rnd() % 12);
  size_t len;
  TU_CHECK(!bf_rans_encode(&t, sym, N, W, buf, sizeof buf, &len), "encode");
  /* truncated: every shorter prefix fails */
  for (size_t l = 0; l < len; l++) {
    int rc = bf_rans_decode(&t, buf, l, W, back, N);
    TU_CHECK(rc == BF_PERR_BAD_PAYLOAD, "prefix of %zu/%zu bytes decoded (rc %d)", l, len, rc);
  }
  if (expect_fail(bf_rans_decode(&t, buf, len - 1, W, back, N), BF_PERR_BAD_PAYLOAD, "rans", "truncated")) return 1;
  if (expect_fail(bf_rans_decode(&t, buf, 3, W, back, N), BF_PERR_BAD_PAYLOAD, "no state", "no state")) return 1;
  /* trailing bytes */
  buf[len] = 0x5a;
  if (expect_fail(bf_rans_decode(&t, buf, len + 1, W, back, N), BF_PERR_BAD_PAYLOAD, "after the last symbol",
                  "trailing byte"))
    return 1;
  /* state outside [L, 256 L) */
  uint8_t st[4];
  bf_put_u32(st, BF_RANS_L - 1);
  if (expect_fail(bf_rans_decode(&t, st, 4, W, back, 0), BF_PERR_BAD_PAYLOAD, "initial state", "low state")) return 1;
  bf_put_u32(st, 0xFFFFFFFFu);
  if (expect_fail(bf_rans_decode(&t, st, 4, W, back, 0), BF_PERR_BAD_PAYLOAD, "initial state", "high state")) return 1;
  /* a valid state that is not the encoder's end state */
  bf_put_u32(st, BF_RANS_L + 1);
  if (expect_fail(bf_rans_decode(&t, st, 4, W, back, 0), BF_PERR_BAD_PAYLOAD, "final state", "final state")) return 1;
  /* n not a multiple of the channels */
  if (expect_fail(bf_rans_decode(&t, buf, len, W, back, N - 3), BF_PERR_BAD_PAYLOAD, "rows of", "ragged n")) return 1;
  if (expect_fail(bf_rans_decode(&t, buf, len, 0, back, N), BF_PERR_BAD_PAYLOAD, "rows of", "zero width")) return 1;
  if (expect_fail(bf_rans_encode(&t, sym, N, 7, buf, sizeof buf, &len), BF_EINVAL, "rows of", "encode ragged")) return 1;
  /* encoder: a code outside the alphabet of 4-bit tables; a short buffer */
  bf_rans_tables t4;
  uint64_t c4[16] = {1};
  TU_CHECK(!bf_rans_tables_from_counts(&t4, 1, 4, c4), "tables");
  uint8_t s16[2] = {3, 16};
  if (expect_fail(bf_rans_encode(&t4, s16, 2, 2, buf, sizeof buf, &len), BF_EINVAL, "outside", "symbol 16")) return 1;
  if (expect_fail(bf_rans_encode(&t, sym, N, W, buf, 10, &len), BF_EINVAL, "too small", "short buffer")) return 1;
  bf_rans_tables_free(&t4);
  /* random bytes: an error or N symbols, never a crash (ASan tree) */
  int ok = 0;
  for (int k = 0; k < 3000; k++) {
    size_t l = rnd() % (2 * N + 8);
    for (size_t i = 0; i < l; i++) buf[i] = (uint8_t)rnd();
    if (k & 1 && l >= 4) bf_put_u32(buf, BF_RANS_L + rnd() % (255u * BF_RANS_L));
    int rc = bf_rans_decode(&t, buf, l, W, back, N);
    TU_CHECK(rc == 0 || rc == BF_PERR_BAD_PAYLOAD, "random stream: rc %d", rc);
    ok += rc == 0;
  }
  /* and any single corrupted byte of a real stream is caught or decodes to N symbols */
  TU_CHECK(!bf_rans_encode(&t, sym, N, W, buf, sizeof buf, &len), "encode");
  int caught = 0;
  for (size_t i = 0; i < len; i++) {
    buf[i] ^= 0x24;
    int rc = bf_rans_decode(&t, buf, len, W, back, N);
    TU_CHECK(rc == 0 || rc == BF_PERR_BAD_PAYLOAD, "flipped byte: rc %d", rc);
    caught += rc != 0;
    buf[i] ^= 0x24;
  }
  TU_CHECK(caught > (int)len / 2, "only %d of %zu corrupted streams caught", caught, len);
  printf("hostile streams: errors as expected; random streams decoded %d/3000, byte flips caught %d/%zu\n", ok,
         caught, len);
  bf_rans_tables_free(&t);
  return 0;
}

static int test_hostile_tables(void) {
  bf_rans_tables t;
  uint64_t cnt[2 * 16] = {5, 0, 3};
  TU_CHECK(!bf_rans_tables_from_counts(&t, 2, 4, cnt), "tables");
  uint8_t *file;
  size_t len;
  TU_CHECK(!bf_rans_tables_serialize(&t, &file, &len), "serialize");
  TU_CHECK(len == BF_RANS_FILE_HEADER + 2 * 2 * 16, "file of %zu bytes", len);
  bf_rans_tables u;
  TU_CHECK(!bf_rans_tables_parse(file, len, "t.bin", &u), "parse: %s", bf_last_error());
  TU_CHECK(u.channels == 2 && u.bits == 4 && !memcmp(u.freq, t.freq, 2 * 16 * 2), "parsed tables differ");
  bf_rans_tables_free(&u);
  uint8_t *b = malloc(len + 2);
  TU_CHECK(b, "oom");
  struct {
    size_t off;
    uint32_t v; /* u16 at off >= header, u32 below */
    const char *needle;
  } bad[] = {{0, 0x4E415246, "magic"},
             {8, 0, "channels"},
             {8, 70000, "channels"},
             {12, 0, "bits"},
             {12, 9, "bits"},
             {16, 12, "prob_bits"},
             {8, 3, "need"},                      /* the length no longer matches */
             {BF_RANS_FILE_HEADER, 0, "frequency 0"},        /* a zero frequency */
             {BF_RANS_FILE_HEADER + 2, 40000, "frequency"}, /* above the total */
             {BF_RANS_FILE_HEADER, 1, "sum"}}; /* symbol 0 (the most frequent) to 1: the sum falls short */
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    memcpy(b, file, len);
    if (bad[k].off < BF_RANS_FILE_HEADER) bf_put_u32(b + bad[k].off, bad[k].v);
    else bf_put_u16(b + bad[k].off, (uint16_t)bad[k].v);
    char what[48];
    snprintf(what, sizeof what, "bad table %zu", k);
    if (expect_fail(bf_rans_tables_parse(b, len, "t.bin", &u), BF_EINVAL, bad[k].needle, what)) return 1;
    TU_CHECK(!u.freq && !u.cum, "%s: tables left allocated", what);
  }
  /* two frequencies that sum past the total: each below it */
  memcpy(b, file, len);
  bf_put_u16(b + BF_RANS_FILE_HEADER, 30000);
  bf_put_u16(b + BF_RANS_FILE_HEADER + 2, 30000);
  if (expect_fail(bf_rans_tables_parse(b, len, "t.bin", &u), BF_EINVAL, "more than", "overflowing sum")) return 1;
  /* truncated and overlong files */
  if (expect_fail(bf_rans_tables_parse(file, len - 1, "t.bin", &u), BF_EINVAL, "need", "short file")) return 1;
  memcpy(b, file, len);
  b[len] = b[len + 1] = 0;
  if (expect_fail(bf_rans_tables_parse(b, len + 2, "t.bin", &u), BF_EINVAL, "need", "long file")) return 1;
  if (expect_fail(bf_rans_tables_parse(file, 7, "t.bin", &u), BF_EINVAL, "magic", "tiny file")) return 1;
  /* version 02: a predictor byte per channel; they survive the round trip,
   * and a predictor not 0 or 1, a missing byte or a version 01 file with
   * predictor bytes are refused */
  t.pred[1] = BF_RANS_PRED_MEDIAN;
  uint8_t *f2;
  size_t l2;
  TU_CHECK(!bf_rans_tables_serialize(&t, &f2, &l2), "serialize v2");
  TU_CHECK(l2 == len + 2 && !memcmp(f2, BF_RANS_MAGIC_PRED, 8), "v2 file of %zu bytes", l2);
  TU_CHECK(!bf_rans_tables_parse(f2, l2, "t.bin", &u), "parse v2: %s", bf_last_error());
  TU_CHECK(u.pred[0] == 0 && u.pred[1] == 1 && !memcmp(u.freq, t.freq, 2 * 16 * 2), "v2 tables differ");
  bf_rans_tables_free(&u);
  f2[l2 - 1] = 2;
  if (expect_fail(bf_rans_tables_parse(f2, l2, "t.bin", &u), BF_EINVAL, "predictor 2", "predictor 2")) return 1;
  f2[l2 - 1] = 1;
  if (expect_fail(bf_rans_tables_parse(f2, l2 - 1, "t.bin", &u), BF_EINVAL, "predictors need", "short v2")) return 1;
  memcpy(f2, BF_RANS_MAGIC, 8);
  if (expect_fail(bf_rans_tables_parse(f2, l2, "t.bin", &u), BF_EINVAL, "need", "v1 with predictors")) return 1;
  free(f2);
  /* explicit frequencies: zero and a short sum */
  uint32_t f[16];
  for (int i = 0; i < 16; i++) f[i] = BF_RANS_TOTAL / 16;
  f[3] = 0;
  if (expect_fail(bf_rans_tables_init(&u, 1, 4, f), BF_EINVAL, "frequency 0", "init zero")) return 1;
  free(b);
  free(file);
  bf_rans_tables_free(&t);
  printf("hostile tables: every fault refused\n");
  return 0;
}

/* codec rans through the frame: encode, build, parse, decode == raw's decode */
static int test_codec(void) {
  enum { H = 5, W = 4, C = 6 };
  float x[H * W * C], a[H * W * C], b[H * W * C];
  for (int i = 0; i < H * W * C; i++) x[i] = (rnd() % 4) ? 0.0f : (float)(rnd() % 1000) / 100.0f;
  uint64_t cnt[C * 256] = {0};
  for (int i = 0; i < C * 256; i++) cnt[i] = i % 256 == 0 ? 50 : 1;
  bf_rans_tables t;
  TU_CHECK(!bf_rans_tables_from_counts(&t, C, 8, cnt), "tables");
  /* plain tables, then channels 0, 3 and 4 predicted */
  for (int qp = 0; qp < 4; qp++) {
    int q = BF_Q_U8_TENSOR + qp % 2;
    if (qp == 2) t.pred[0] = t.pred[3] = t.pred[4] = BF_RANS_PRED_MEDIAN;
    float *outs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
      bf_frame h, f;
      memset(&h, 0, sizeof h);
      h.type = BF_MSG_INFER;
      uint8_t *body, *fr;
      size_t bl, fl;
      bf_codec codec = k ? BF_CODEC_RANS : BF_CODEC_RAW;
      TU_CHECK(!bf_features_encode_ex(x, H, W, C, (bf_qscheme)q, NULL, codec, 3, &t, &h, &body, &bl), "encode: %s",
               bf_last_error());
      TU_CHECK(!bf_frame_build(&h, body, bl, &fr, &fl), "build");
      TU_CHECK(!bf_frame_parse(fr, fl, 1u << 20, &f), "parse: %s", bf_last_error());
      TU_CHECK(!bf_features_decode_with(&f, &t, outs[k]), "decode: %s", bf_last_error());
      if (k) {
        if (expect_fail(bf_features_decode_with(&f, NULL, b), BF_PERR_BAD_PAYLOAD, "no rans tables", "no tables"))
          return 1;
        if (expect_fail(bf_features_decode(&f, b), BF_PERR_BAD_PAYLOAD, "no rans tables", "plain decode")) return 1;
        TU_CHECK(!bf_features_decode_with(&f, &t, b), "decode");
      }
      free(body);
      free(fr);
    }
    TU_CHECK(!memcmp(a, b, sizeof a), "qscheme %d%s: rans features differ from raw", q, qp >= 2 ? ", predicted" : "");
  }
  /* refusals: no tables, float features, tables of another width */
  bf_frame h;
  memset(&h, 0, sizeof h);
  uint8_t *body;
  size_t bl;
  if (expect_fail(bf_features_encode_ex(x, H, W, C, BF_Q_U8_TENSOR, NULL, BF_CODEC_RANS, 3, NULL, &h, &body, &bl),
                  BF_EINVAL, "--rans-data", "encode without tables"))
    return 1;
  if (expect_fail(bf_features_encode_ex(x, H, W, C, BF_Q_F32, NULL, BF_CODEC_RANS, 3, &t, &h, &body, &bl), BF_EINVAL,
                  "uint8", "float rans"))
    return 1;
  if (expect_fail(bf_features_encode_ex(x, H, W * C / 3, 3, BF_Q_U8_TENSOR, NULL, BF_CODEC_RANS, 3, &t, &h, &body, &bl),
                  BF_EINVAL, "channels", "other width"))
    return 1;
  /* a quantisation-aware model's fixed-range b-bit codes with b-bit tables:
   * rans == raw; its codes with 8-bit tables and 8-bit codes with b-bit
   * tables are refused */
  for (int bits = 2; bits <= 4; bits += 2) {
    bf_qfixed fx = {bits, 6.0f};
    uint64_t cb[C * 16] = {0};
    for (int i = 0; i < C * (1 << bits); i++) cb[i] = i % (1 << bits) == 0 ? 50 : 1;
    bf_rans_tables tb;
    TU_CHECK(!bf_rans_tables_from_counts(&tb, C, bits, cb), "tables");
    float *outs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
      bf_frame hq, f;
      memset(&hq, 0, sizeof hq);
      hq.type = BF_MSG_INFER;
      uint8_t *bq, *fr;
      size_t bql, fl;
      TU_CHECK(!bf_features_encode_ex(x, H, W, C, BF_Q_U8_TENSOR, &fx, k ? BF_CODEC_RANS : BF_CODEC_RAW, 3, &tb, &hq,
                                      &bq, &bql),
               "encode %d bits: %s", bits, bf_last_error());
      TU_CHECK(!bf_frame_build(&hq, bq, bql, &fr, &fl), "build");
      TU_CHECK(!bf_frame_parse(fr, fl, 1u << 20, &f), "parse: %s", bf_last_error());
      TU_CHECK(!bf_features_decode_with(&f, &tb, outs[k]), "decode %d bits: %s", bits, bf_last_error());
      free(bq);
      free(fr);
    }
    TU_CHECK(!memcmp(a, b, sizeof a), "%d bits: rans features differ from raw", bits);
    bf_frame hq;
    memset(&hq, 0, sizeof hq);
    uint8_t *bq = NULL;
    size_t bql;
    int r1 = expect_fail(bf_features_encode_ex(x, H, W, C, BF_Q_U8_TENSOR, &fx, BF_CODEC_RANS, 3, &t, &hq, &bq, &bql),
                         BF_EINVAL, "rans tables of 8 bits", "b-bit codes, 8-bit tables");
    int r2 = r1 || expect_fail(bf_features_encode_ex(x, H, W, C, BF_Q_U8_TENSOR, NULL, BF_CODEC_RANS, 3, &tb, &hq, &bq,
                                                     &bql),
                               BF_EINVAL, "the codes have 8", "8-bit codes, b-bit tables");
    bf_rans_tables_free(&tb);
    if (r1 || r2) return 1;
  }
  /* the parser: a rans payload over the bound, an empty one, rans on float32 */
  uint8_t fake[8 + 2 * H * W * C + 8];
  memset(fake, 0, sizeof fake);
  bf_put_f32(fake, 0.5f);
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_INFER, h.qscheme = BF_Q_U8_TENSOR, h.codec = BF_CODEC_RANS;
  h.n = 1, h.h = H, h.w = W, h.c = C, h.raw_len = H * W * C;
  size_t lens[2] = {sizeof fake, 8 + 3};
  for (int k = 0; k < 2; k++) {
    uint8_t *fr;
    size_t fl;
    bf_frame f;
    TU_CHECK(!bf_frame_build(&h, fake, lens[k], &fr, &fl), "build");
    int rc = bf_frame_parse(fr, fl, 1u << 20, &f);
    free(fr);
    if (expect_fail(rc, BF_PERR_BAD_FRAME, "rans payload", "payload size")) return 1;
  }
  h.qscheme = BF_Q_F32, h.raw_len = 4 * H * W * C;
  {
    uint8_t *fr;
    size_t fl;
    bf_frame f;
    TU_CHECK(!bf_frame_build(&h, fake, 64, &fr, &fl), "build");
    int rc = bf_frame_parse(fr, fl, 1u << 20, &f);
    free(fr);
    if (expect_fail(rc, BF_PERR_BAD_FRAME, "uint8 features only", "float rans frame")) return 1;
  }
  bf_rans_tables_free(&t);
  printf("codec rans: same features as raw through the frame; refusals as expected\n");
  return 0;
}

/* Real features: every split of DEPLOY (exported with --rans-data) on the
 * images; lossless against raw, bytes per image for raw, zstd and rans. */
static int features(const char *deploy, int n_img, char **imgs) {
  bf_deploy d;
  TU_CHECK(!bf_deploy_open(&d, deploy), "%s", bf_last_error());
  bf_backend *be;
  TU_CHECK(!bf_backend_create(&be, "cpu", 1), "backend");
  for (int s = 0; s < d.n; s++) {
    const bf_deploy_split *ds = &d.splits[s];
    TU_CHECK(ds->rans, "%s: no rans tables", ds->dir);
    bf_engine *e;
    const char *dp = ds->device_path;
    int oh, ow, oc;
    TU_CHECK(!bf_engine_load(&e, be, &dp, 1) && !bf_engine_plan(e, 1, ds->in_h, ds->in_w, &oh, &ow, &oc), "%s",
             bf_last_error());
    size_t px = (size_t)ds->in_h * ds->in_w, nf = (size_t)oh * ow * oc;
    uint8_t *rgb = malloc(px * 3);
    float *x = malloc(px * 3 * sizeof *x), *feat = malloc(nf * sizeof *feat), *a = malloc(nf * sizeof *a),
          *b = malloc(nf * sizeof *b);
    TU_CHECK(rgb && x && feat && a && b, "oom");
    double bytes[3] = {0, 0, 0};
    for (int q = BF_Q_U8_TENSOR; q <= BF_Q_U8_CHANNEL; q++)
      for (int i = 0; i < n_img; i++) {
        TU_CHECK(!bf_load_image_rgb(imgs[i], ds->resize, ds->in_h, rgb), "%s", bf_last_error());
        bf_normalize_rgb(rgb, px, ds->mean, ds->std, x);
        TU_CHECK(!bf_engine_run(e, x, feat), "run");
        for (int c = 0; c < 3; c++) {
          bf_frame h, f;
          memset(&h, 0, sizeof h);
          h.type = BF_MSG_INFER;
          memcpy(h.model_id, ds->id, BF_MODEL_ID_LEN);
          uint8_t *body, *fr;
          size_t bl, fl;
          TU_CHECK(!bf_features_encode_ex(feat, oh, ow, oc, (bf_qscheme)q, NULL, (bf_codec)c, ds->zstd_level, ds->rans, &h,
                                            &body, &bl),
                   "encode: %s", bf_last_error());
          TU_CHECK(!bf_frame_build(&h, body, bl, &fr, &fl) && !bf_frame_parse(fr, fl, 1u << 24, &f), "frame: %s",
                   bf_last_error());
          TU_CHECK(!bf_features_decode_with(&f, ds->rans, c ? b : a), "decode: %s", bf_last_error());
          if (c) TU_CHECK(!memcmp(a, b, nf * sizeof *a), "RB%d image %d codec %d: features differ from raw",
                          ds->split_after, i, c);
          if (q == BF_Q_U8_TENSOR) bytes[c] += (double)fl;
          free(body);
          free(fr);
        }
      }
    printf("RB%d D_r %d (%dx%dx%d): INFER frame bytes per image, mean of %d, 8-bit per tensor: raw %.0f, zstd %.0f, "
           "rans %.0f (%.2fx smaller than raw); lossless\n",
           ds->split_after, ds->d_r, oh, ow, oc, n_img, bytes[0] / n_img, bytes[1] / n_img, bytes[2] / n_img,
           bytes[0] / bytes[2]);
    free(rgb), free(x), free(feat), free(a), free(b);
    bf_engine_free(e);
  }
  bf_backend_destroy(be);
  bf_deploy_close(&d);
  return 0;
}

/* Bytes per image with each codec on M test images of a data set (bf_codec_bytes). */
static int bytes_on_data(const char *deploy, const char *root, int m) {
  bf_deploy d;
  bf_dataset *data;
  TU_CHECK(!bf_deploy_open(&d, deploy), "%s", bf_last_error());
  TU_CHECK(!bf_rans_data_open(root, NULL, &data), "%s", bf_last_error());
  for (int s = 0; s < d.n; s++) {
    double b[3];
    int used;
    TU_CHECK(!bf_codec_bytes(&d.splits[s], data, BF_SPLIT_TEST, m, b, &used), "%s", bf_last_error());
    printf("RB%d D_r %d: INFER frame bytes per image, mean of %d test images: raw %.1f, zstd %.1f, rans %.1f "
           "(raw/rans %.2fx, zstd/rans %.2fx)\n",
           d.splits[s].split_after, d.splits[s].d_r, used, b[0], b[1], b[2], b[0] / b[2], b[1] / b[2]);
  }
  bf_dataset_close(data);
  bf_deploy_close(&d);
  return 0;
}

/* Against a running bf-serve of DEPLOY's first split (exported with tables):
 * a rans request gets the raw request's top-5; truncated, overlong and
 * bad-state streams get ERROR BAD_PAYLOAD; the server then still serves. */
static int serve(const char *hostport, const char *deploy) {
  bf_deploy d;
  TU_CHECK(!bf_deploy_open(&d, deploy), "%s", bf_last_error());
  const bf_deploy_split *ds = &d.splits[0];
  TU_CHECK(ds->rans, "%s: no rans tables", ds->dir);
  size_t n = (size_t)ds->feat_h * ds->feat_w * ds->d_r;
  float *x = malloc(n * sizeof *x);
  TU_CHECK(x, "oom");
  for (size_t i = 0; i < n; i++) x[i] = (rnd() % 3) ? 0.0f : (float)(rnd() % 500) / 100.0f;
  bf_result res[2];
  uint8_t *body[2];
  size_t bl[2];
  bf_frame h[2];
  for (int k = 0; k < 2; k++) {
    memset(&h[k], 0, sizeof h[k]);
    h[k].type = BF_MSG_INFER;
    memcpy(h[k].model_id, ds->id, BF_MODEL_ID_LEN);
    TU_CHECK(!bf_features_encode_ex(x, ds->feat_h, ds->feat_w, ds->d_r, BF_Q_U8_TENSOR, NULL,
                                      k ? BF_CODEC_RANS : BF_CODEC_RAW, 3, ds->rans, &h[k], &body[k], &bl[k]),
             "encode: %s", bf_last_error());
    bf_conn c;
    double up;
    size_t sent;
    TU_CHECK(!bf_conn_open(&c, hostport, 20000, 0), "%s", bf_last_error());
    TU_CHECK(!bf_conn_infer(&c, &h[k], body[k], bl[k], (uint32_t)ds->num_classes, &res[k], &up, &sent), "%s",
             bf_last_error());
    bf_conn_close(&c);
  }
  TU_CHECK(res[0].k == res[1].k && !memcmp(res[0].cls, res[1].cls, sizeof res[0].cls) &&
               !memcmp(res[0].logit, res[1].logit, sizeof res[0].logit),
           "rans result differs from raw");
  /* hostile streams, each on a connection of its own (an ERROR closes it) */
  uint8_t *b = malloc(bl[1] + 1);
  TU_CHECK(b, "oom");
  for (int v = 0; v < 3; v++) {
    memcpy(b, body[1], bl[1]);
    size_t len = bl[1];
    const char *what = v == 0 ? "truncated" : v == 1 ? "trailing byte" : "bad state";
    if (v == 0) len--;
    else if (v == 1) b[len++] = 0x33;
    else bf_put_u32(b + 8, 5); /* after the one (scale, zero point) pair: the state */
    bf_conn c;
    bf_result r;
    double up;
    size_t sent;
    TU_CHECK(!bf_conn_open(&c, hostport, 20000, 0), "%s", bf_last_error());
    int rc = bf_conn_infer(&c, &h[1], b, len, (uint32_t)ds->num_classes, &r, &up, &sent);
    bf_conn_close(&c);
    TU_CHECK(rc && strstr(bf_last_error(), "BAD_PAYLOAD"), "%s: %s", what, rc ? bf_last_error() : "accepted");
    printf("%s rans stream: %s\n", what, bf_last_error());
  }
  bf_conn c;
  bf_result r;
  double up;
  size_t sent;
  TU_CHECK(!bf_conn_open(&c, hostport, 20000, 0), "%s", bf_last_error());
  TU_CHECK(!bf_conn_infer(&c, &h[1], body[1], bl[1], (uint32_t)ds->num_classes, &r, &up, &sent), "after: %s",
           bf_last_error());
  bf_conn_close(&c);
  TU_CHECK(!memcmp(r.cls, res[0].cls, sizeof r.cls), "served differently after the hostile streams");
  printf("bf-serve: rans == raw, hostile streams refused, still serving\n");
  free(b), free(x), free(body[0]), free(body[1]);
  bf_deploy_close(&d);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "serve")) return serve(argv[2], argv[3]);
  if (argc >= 4 && !strcmp(argv[1], "features")) return features(argv[2], argc - 3, argv + 3);
  if (argc == 5 && !strcmp(argv[1], "bytes")) return bytes_on_data(argv[2], argv[3], atoi(argv[4]));
  if (argc != 1) {
    fprintf(stderr, "usage: test_split_rans [features DEPLOY IMG... | serve HOST:PORT DEPLOY | bytes DEPLOY DATA M]\n");
    return 2;
  }
  if (test_from_counts() || test_round_trips() || test_predictor() || test_hostile_streams() || test_hostile_tables() ||
      test_codec())
    return 1;
  printf("OK\n");
  return 0;
}
