/* Test data for the split tests:
 *   split_testgen model OUT.safetensors CLASSES SPLIT_AFTER D_R SEED
 *   split_testgen images DIR COUNT SIZE SEED      (PNG files img_XXX.png)
 *   split_testgen corpus DIR                      (valid frames: fuzzer seeds)
 *   split_testgen corpus-client DIR               (class byte + valid replies: fuzz_client seeds)
 *   split_testgen corpus-rans DIR                 (valid rans streams and tables: fuzz_rans seeds) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_data.h"
#include "frame.h"
#include "fuzz_rans.h"
#include "quant.h"
#include "rans.h"
#include "split_testutil.h"

static int corpus(const char *dir) {
  BF_TRY(bf_mkdirs(dir));
  float feat[4 * 4 * 5];
  for (int i = 0; i < 80; i++) feat[i] = (float)(i % 7) * 0.25f;
  /* fuzz_frame decodes rans frames with these tables (fuzz_rans.h) */
  uint64_t counts[5 * 256];
  fuzz_rans_counts(5, 8, 0, counts);
  bf_rans_tables t;
  BF_TRY(bf_rans_tables_from_counts(&t, 5, 8, counts));
  for (int ch = 1; ch < t.channels; ch += 2) t.pred[ch] = BF_RANS_PRED_MEDIAN;
  int k = 0;
  for (int q = 0; q <= 2; q++)
    for (int c = 0; c <= 2; c++) {
      if (c == BF_CODEC_RANS && q == BF_Q_F32) continue;
      bf_frame h;
      memset(&h, 0, sizeof h);
      h.type = BF_MSG_INFER;
      uint8_t *body, *fr;
      size_t bl, fl;
      BF_TRY(bf_features_encode_ex(feat, 4, 4, 5, (bf_qscheme)q, NULL, (bf_codec)c, 3, &t, &h, &body, &bl));
      BF_TRY(bf_frame_build(&h, body, bl, &fr, &fl));
      char p[600];
      snprintf(p, sizeof p, "%s/seed_%d", dir, k++);
      BF_TRY(bf_write_file_atomic(p, fr, fl));
      free(body);
      free(fr);
    }
  bf_rans_tables_free(&t);
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_STATUS;
  uint8_t *fr;
  size_t fl;
  BF_TRY(bf_frame_build(&h, NULL, 0, &fr, &fl));
  char p[600];
  snprintf(p, sizeof p, "%s/seed_status", dir);
  BF_TRY(bf_write_file_atomic(p, fr, fl));
  free(fr);
  uint8_t img[8 * 8 * 3];
  memset(img, 100, sizeof img);
  h.type = BF_MSG_INFER_IMAGE;
  h.qscheme = BF_Q_U8_PIXELS;
  h.n = 1, h.h = 8, h.w = 8, h.c = 3, h.raw_len = sizeof img;
  BF_TRY(bf_frame_build(&h, img, sizeof img, &fr, &fl));
  snprintf(p, sizeof p, "%s/seed_image", dir);
  BF_TRY(bf_write_file_atomic(p, fr, fl));
  free(fr);
  return 0;
}

/* Seeds for fuzz_rans (layout in fuzz_rans.h): streams of the counts'
 * tables, and tables files followed by a stream. */
static int corpus_rans(const char *dir) {
  BF_TRY(bf_mkdirs(dir));
  static const uint8_t heads[][FUZZ_RANS_HEAD] = {{0, 7, 10, 0, 3},    {2, 7, 40, 0, 0},   {7, 3, 20, 0, 4},
                                                  {4, 1, 60, 0, 1},    {1, 7, 12, 1, 20},  {3, 3, 9, 1, 2},
                                                  {2, 7, 40, 0xf6, 0}, {3, 3, 24, 0x53, 6}, {1, 7, 12, 0x37, 20}};
  uint64_t rs = 12345;
  for (size_t k = 0; k < sizeof heads / sizeof heads[0]; k++) {
    const uint8_t *hd = heads[k];
    int channels = hd[0] + 1, bits = hd[1] + 1, pixels = hd[2], a = 1 << bits, w = fuzz_rans_width(hd[3], pixels);
    uint64_t counts[8 * 256];
    fuzz_rans_counts(channels, bits, hd[4], counts);
    bf_rans_tables t;
    BF_TRY(bf_rans_tables_from_counts(&t, channels, bits, counts));
    fuzz_rans_preds(hd[3], &t);
    /* the largest tables file: 8 channels of 256 frequencies and their predictor bytes */
    size_t n = (size_t)pixels * channels,
           cap = FUZZ_RANS_HEAD + 2 + BF_RANS_FILE_HEADER + 2 * 8 * 256 + 8 + bf_rans_bound(n);
    uint8_t *buf = malloc(cap), sym[60 * 8], *tf = NULL;
    if (!buf) return BF_ENOMEM;
    memcpy(buf, hd, FUZZ_RANS_HEAD);
    size_t off = FUZZ_RANS_HEAD, tl = 0, sl = 0;
    if (hd[3] & 1) {
      BF_TRY(bf_rans_tables_serialize(&t, &tf, &tl));
      bf_put_u16(buf + off, (uint16_t)tl);
      memcpy(buf + off + 2, tf, tl);
      off += 2 + tl;
      free(tf);
    }
    for (size_t i = 0; i < n; i++) {
      rs = rs * 6364136223846793005ull + 1442695040888963407ull;
      sym[i] = (uint8_t)((rs >> 33) % 4 ? (rs >> 40) % (hd[4] ? hd[4] : 1) % a : (rs >> 40) % a);
    }
    BF_TRY(bf_rans_encode(&t, sym, n, w, buf + off, cap - off, &sl));
    bf_rans_tables_free(&t);
    char p[600];
    snprintf(p, sizeof p, "%s/seed_%zu", dir, k);
    int rc = bf_write_file_atomic(p, buf, off + sl);
    free(buf);
    BF_TRY(rc);
  }
  return 0;
}

/* Seeds for fuzz_client: one byte (client's classes - 1), then a reply frame. */
static int corpus_client(const char *dir) {
  BF_TRY(bf_mkdirs(dir));
  float logits[10];
  for (int i = 0; i < 10; i++) logits[i] = (float)((i * 7) % 10) * 0.3f;
  bf_result r;
  memset(&r, 0, sizeof r);
  bf_result_topk(logits, 10, &r);
  uint8_t rb[BF_RESULT_BODY];
  bf_result_pack(&r, rb);
  bf_status st;
  memset(&st, 0, sizeof st);
  st.workers = 1, st.load_factor = 1.0f, st.n_models = 2;
  for (uint32_t m = 0; m < 2; m++) {
    st.models[m].id[0] = (uint8_t)(m + 1), st.models[m].id[1] = 2, st.models[m].id[2] = 3;
    st.models[m].split_after = 13, st.models[m].d_r = 8, st.models[m].base_ms = 2.5f;
  }
  uint8_t sb[28 + 44 * 2];
  bf_status_pack(&st, sb);
  uint8_t eb[8 + 11];
  bf_put_u32(eb, BF_PERR_BUSY);
  bf_put_u32(eb + 4, 11);
  memcpy(eb + 8, "queue full!", 11);
  struct {
    const char *name;
    int type;
    const uint8_t *body;
    size_t n;
  } seeds[] = {{"result", BF_MSG_RESULT, rb, sizeof rb},
               {"status", BF_MSG_STATUS_REPLY, sb, sizeof sb},
               {"error", BF_MSG_ERROR, eb, sizeof eb}};
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    bf_frame h;
    memset(&h, 0, sizeof h);
    h.type = (uint8_t)seeds[i].type;
    h.request_id = 1;
    uint8_t *fr;
    size_t fl;
    BF_TRY(bf_frame_build(&h, seeds[i].body, seeds[i].n, &fr, &fl));
    uint8_t *seed = malloc(fl + 1);
    if (!seed) return BF_ENOMEM;
    seed[0] = 9; /* 10 classes */
    memcpy(seed + 1, fr, fl - BF_FRAME_TRAILER); /* fuzz_client appends the CRC */
    char p[600];
    snprintf(p, sizeof p, "%s/seed_%s", dir, seeds[i].name);
    int rc = bf_write_file_atomic(p, seed, fl + 1 - BF_FRAME_TRAILER);
    free(seed);
    free(fr);
    BF_TRY(rc);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 7 && !strcmp(argv[1], "model")) {
    bf_backend *be;
    if (bf_backend_create(&be, "cpu", 0)) return 1;
    int rc = tu_make_model(be, argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), strtoull(argv[6], NULL, 10));
    bf_backend_destroy(be);
    if (rc) fprintf(stderr, "split_testgen: error: %s\n", bf_last_error());
    return rc ? 1 : 0;
  }
  if (argc >= 6 && !strcmp(argv[1], "images")) {
    int n = atoi(argv[3]), s = atoi(argv[4]);
    uint64_t seed = strtoull(argv[5], NULL, 10);
    if (bf_mkdirs(argv[2])) return 1;
    uint8_t *p = malloc((size_t)s * s * 3);
    for (int i = 0; i < n && p; i++) {
      char path[600];
      snprintf(path, sizeof path, "%s/img_%03d.png", argv[2], i);
      tu_image_u8(p, s, s, seed + (uint64_t)i);
      if (bf_png_write(path, p, s, s, 3)) {
        fprintf(stderr, "split_testgen: error: %s\n", bf_last_error());
        return 1;
      }
    }
    free(p);
    return 0;
  }
  if (argc >= 3 && (!strcmp(argv[1], "corpus") || !strcmp(argv[1], "corpus-client") || !strcmp(argv[1], "corpus-rans"))) {
    int rc = !strcmp(argv[1], "corpus")          ? corpus(argv[2])
             : !strcmp(argv[1], "corpus-client") ? corpus_client(argv[2])
                                                 : corpus_rans(argv[2]);
    if (rc) fprintf(stderr, "split_testgen: error: %s\n", bf_last_error());
    return rc ? 1 : 0;
  }
  fprintf(stderr, "usage: split_testgen model|images|corpus|corpus-client ...\n");
  return 2;
}
