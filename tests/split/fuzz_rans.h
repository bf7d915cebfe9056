/* The input layout of the fuzz_rans target, shared with split_testgen's
 * seeds (corpus-rans):
 *   u8 channels-1 (mod 8), u8 bits-1 (mod 8), u8 pixels, u8 mode, u8 skew, then
 *   mode & 1: u16 n, n bytes of a tables file (bf_rans_tables_parse), the stream;
 *   else:     the stream, coded with the tables of fuzz_rans_counts, their
 *             channels predicted as fuzz_rans_preds says;
 * the map is `pixels` pixels in rows of fuzz_rans_width pixels.
 * The frame target (fuzz_frame) decodes rans frames with the tables of
 * fuzz_rans_counts(c, 8, 0), odd channels predicted. */
#ifndef BF_FUZZ_RANS_H
#define BF_FUZZ_RANS_H

#include <stdint.h>

#include "rans.h"

#define FUZZ_RANS_HEAD 5

/* counts[channels << bits]: symbols below skew common, the rest rare or unseen */
static inline void fuzz_rans_counts(int channels, int bits, int skew, uint64_t *counts) {
  int a = 1 << bits;
  for (int c = 0; c < channels; c++)
    for (int s = 0; s < a; s++) counts[c * a + s] = s < skew ? 100 + (uint64_t)(c * 7 + s) % 50 : (uint64_t)(s + c) % 3;
}

/* Row width: (mode >> 1 & 7) + 1 pixels, or 1 where that does not divide
 * the pixels. */
static inline int fuzz_rans_width(int mode, int pixels) {
  int w = (mode >> 1 & 7) + 1;
  return pixels % w ? 1 : w;
}

/* Generated tables: channel ch predicted when bit ch % 4 of mode >> 4 is set. */
static inline void fuzz_rans_preds(int mode, bf_rans_tables *t) {
  for (int ch = 0; ch < t->channels; ch++) t->pred[ch] = (uint8_t)(mode >> 4 >> (ch % 4) & 1);
}

#endif
