/* Client-side image preparation, exactly as bf-train's evaluation prepares a
 * test image (bf_data's bf_image_eval_crop: shorter side to `resize`, 0 =
 * none, center crop zero-filled where the image is smaller), then the
 * normalisation. */
#ifndef BF_PREPROCESS_H
#define BF_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

/* NHWC float: (x/255 - mean[c]) / std[c] (pixel_math.h) */
void bf_normalize_rgb(const uint8_t *rgb, size_t pixels, const float mean[3], const float std[3], float *out);
/* Decodes PATH and prepares RGB8 size x size. */
int bf_load_image_rgb(const char *path, int resize, int size, uint8_t *dst);

#endif
