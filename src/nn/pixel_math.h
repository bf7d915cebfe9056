/* The input normalisation, written once: the data loader's float path, the
 * CPU backend's normalize_u8 and the CUDA kernel all use it, so a batch
 * normalised on the host, by the CPU backend or on the GPU is the same float
 * for float (division, not a multiply by a precomputed reciprocal: the
 * loader's results, and so every checkpoint so far, were made this way). */
#ifndef BF_PIXEL_MATH_H
#define BF_PIXEL_MATH_H

#include <stdint.h>

#include "bf_hd.h"

static inline BF_HD float bf_pixel_normalize(uint8_t v, float mean, float std) {
  return ((float)v / 255.0f - mean) / std;
}

#endif
