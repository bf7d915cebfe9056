#include "preprocess.h"

#include "bf_core.h"
#include "bf_data.h"
#include "pixel_math.h"

void bf_normalize_rgb(const uint8_t *rgb, size_t pixels, const float mean[3], const float std[3], float *out) {
  for (size_t i = 0; i < pixels * 3; i++) out[i] = bf_pixel_normalize(rgb[i], mean[i % 3], std[i % 3]);
}

int bf_load_image_rgb(const char *path, int resize, int size, uint8_t *dst) {
  bf_image img = {0};
  BF_TRY(bf_image_decode_file(path, resize, resize, &img));
  int rc = bf_image_eval_crop(&img, resize, size, dst);
  bf_image_free(&img);
  return rc ? bf_error_wrap(rc, "%s", path) : BF_OK;
}
