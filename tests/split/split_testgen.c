/* Test data for the split tests:
 *   split_testgen model OUT.safetensors CLASSES SPLIT_AFTER D_R SEED
 *   split_testgen images DIR COUNT SIZE SEED      (PNG files img_XXX.png)
 *   split_testgen corpus DIR                      (valid frames: fuzzer seeds) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_data.h"
#include "frame.h"
#include "quant.h"
#include "split_testutil.h"

static int corpus(const char *dir) {
  BF_TRY(bf_mkdirs(dir));
  float feat[4 * 4 * 5];
  for (int i = 0; i < 80; i++) feat[i] = (float)(i % 7) * 0.25f;
  int k = 0;
  for (int q = 0; q <= 2; q++)
    for (int c = 0; c <= 1; c++) {
      bf_frame h;
      memset(&h, 0, sizeof h);
      h.type = BF_MSG_INFER;
      uint8_t *body, *fr;
      size_t bl, fl;
      BF_TRY(bf_features_encode(feat, 4, 4, 5, (bf_qscheme)q, (bf_codec)c, 3, &h, &body, &bl));
      BF_TRY(bf_frame_build(&h, body, bl, &fr, &fl));
      char p[600];
      snprintf(p, sizeof p, "%s/seed_%d", dir, k++);
      BF_TRY(bf_write_file_atomic(p, fr, fl));
      free(body);
      free(fr);
    }
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
  if (argc >= 3 && !strcmp(argv[1], "corpus")) {
    int rc = corpus(argv[2]);
    if (rc) fprintf(stderr, "split_testgen: error: %s\n", bf_last_error());
    return rc ? 1 : 0;
  }
  fprintf(stderr, "usage: split_testgen model|images|corpus ...\n");
  return 2;
}
