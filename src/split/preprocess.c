#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "bf_core.h"
#include "bf_data.h"
#include "preprocess.h"

/* Value of the resized image (scale factor f = resized/source) at resized
 * coordinate (x, y): a box filter of width max(1, 1/f) source pixels, which
 * is bilinear-like when enlarging and area averaging when shrinking. */
static void sample(const uint8_t *src, int sw, int sh, double f, double x, double y, uint8_t out[3]) {
  double cx = (x + 0.5) / f - 0.5, cy = (y + 0.5) / f - 0.5;
  double r = f < 1 ? 0.5 / f : 0.5; /* half width in source pixels */
  int x0 = (int)floor(cx - r + 0.5), x1 = (int)floor(cx + r + 0.5);
  int y0 = (int)floor(cy - r + 0.5), y1 = (int)floor(cy + r + 0.5);
  double acc[3] = {0, 0, 0}, wsum = 0;
  for (int yy = y0; yy <= y1; yy++)
    for (int xx = x0; xx <= x1; xx++) {
      double wx = 1.0 - fabs(xx - cx) / (r + 0.5), wy = 1.0 - fabs(yy - cy) / (r + 0.5);
      if (wx <= 0 || wy <= 0) continue;
      int sx = xx < 0 ? 0 : xx >= sw ? sw - 1 : xx, sy = yy < 0 ? 0 : yy >= sh ? sh - 1 : yy;
      const uint8_t *p = src + ((size_t)sy * sw + sx) * 3;
      double w = wx * wy;
      for (int c = 0; c < 3; c++) acc[c] += w * p[c];
      wsum += w;
    }
  for (int c = 0; c < 3; c++) {
    double v = wsum > 0 ? acc[c] / wsum : 0;
    out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
  }
}

void bf_resize_crop(const uint8_t *src, int sw, int sh, int resize, int out_w, int out_h, uint8_t *dst) {
  double f = (double)resize / (sw < sh ? sw : sh);
  double rw = sw * f, rh = sh * f;
  if (rw < out_w || rh < out_h) { /* make sure the crop fits */
    double g = fmax(out_w / (double)sw, out_h / (double)sh);
    f = g, rw = sw * f, rh = sh * f;
  }
  double ox = floor((rw - out_w) / 2), oy = floor((rh - out_h) / 2);
  for (int y = 0; y < out_h; y++)
    for (int x = 0; x < out_w; x++) sample(src, sw, sh, f, x + ox, y + oy, dst + ((size_t)y * out_w + x) * 3);
}

void bf_normalize_rgb(const uint8_t *rgb, size_t pixels, const float mean[3], const float std[3], float *out) {
  for (size_t i = 0; i < pixels * 3; i++) out[i] = (rgb[i] / 255.0f - mean[i % 3]) / std[i % 3];
}

int bf_load_image_rgb(const char *path, int resize, int out_w, int out_h, uint8_t *dst) {
  bf_image img = {0};
  BF_TRY(bf_image_decode_file(path, resize, resize, &img));
  bf_resize_crop(img.rgb, img.w, img.h, resize, out_w, out_h, dst);
  bf_image_free(&img);
  return BF_OK;
}
