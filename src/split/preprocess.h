/* Client-side image preparation: decode (bf_data), resize the shorter side
 * (bilinear, area-averaged when shrinking), center crop, normalise. */
#ifndef BF_PREPROCESS_H
#define BF_PREPROCESS_H

#include <stdint.h>

/* src: RGB8 sw x sh. dst: RGB8 out_w x out_h. */
void bf_resize_crop(const uint8_t *src, int sw, int sh, int resize_shorter, int out_w, int out_h, uint8_t *dst);
/* NHWC float: (x/255 - mean[c]) / std[c] */
void bf_normalize_rgb(const uint8_t *rgb, size_t pixels, const float mean[3], const float std[3], float *out);
/* Decodes PATH and prepares RGB8 out_w x out_h. */
int bf_load_image_rgb(const char *path, int resize_shorter, int out_w, int out_h, uint8_t *dst);

#endif
