/* Internal pieces of bf_data shared by the library, its tools and its tests.
 * Not part of the public API. */
#ifndef BF_DATA_INTERNAL_H
#define BF_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bf_data.h"

/* Headers claiming more than this are "absurd dimensions" and rejected before
 * any pixel buffer is allocated. */
#define BF_MAX_SIDE 32768
#define BF_MAX_PIXELS ((int64_t)1 << 26) /* 64 Mpixel, 192 MiB as RGB8 */
#define BF_MAX_FILE_BYTES ((size_t)512 << 20)

enum { BF_FMT_UNKNOWN = 0, BF_FMT_PNG = 1, BF_FMT_JPEG = 2 };

/* Per-thread decoding scratch: file bytes, pixels and row pointers grow to the
 * largest image seen and are then reused, so the steady state allocates only
 * what libpng/libjpeg allocate internally. */
typedef struct bf_decoder {
  uint8_t *file;
  size_t file_len, file_cap;
  uint8_t *pix; /* RGB8 result of the last decode */
  size_t pix_cap;
  void **rows;
  size_t rows_cap;
  void *jpeg; /* libjpeg state (created lazily, reused) */
} bf_decoder;

void bf_decoder_init(bf_decoder *d);
void bf_decoder_free(bf_decoder *d);
/* Reads the whole file into d->file. */
int bf_decoder_read_file(bf_decoder *d, const char *path);
/* Decodes d->file[0..file_len) into d->pix (RGB8, w x h). ow, oh get the
 * image's own size. When short_side > 0 the image will be resized so that its
 * shorter side is short_side: a JPEG is then decoded with DCT scaling (1/2,
 * 1/4, 1/8) to the smallest size still >= that. `name` is used in error messages. */
int bf_decoder_decode(bf_decoder *d, const char *name, int short_side, int *w, int *h, int *ow,
                      int *oh);

/* Header check of an in-memory prefix of a file: format and dimensions,
 * rejects empty/unknown/truncated-header/CMYK/absurd-dimension files.
 * Returns BF_EINVAL with a reason (no path), or 1 when more bytes are needed. */
int bf_probe_header(const uint8_t *buf, size_t len, int *fmt, int *w, int *h);

/* torchvision Resize(int) convention: the shorter side becomes s, the longer
 * int(s * long / short). s <= 0 keeps the size. */
void bf_resize_dims(int w, int h, int s, int *rw, int *rh);

/* Augmentation of one image into out (out_size^2 * 3 bytes, NHWC): resample
 * the (rw x rh) resized version of src (sw x sh, RGB8) with an antialiased
 * triangle filter, but only the out_size^2 window at (x0, y0) of it (offsets may
 * be negative / run past the edge: zero fill = padding), mirrored if flip. */
typedef struct bf_aug_scratch {
  float *wx, *wy;   /* filter weights */
  int *xb, *yb, *xn, *yn;
  float *tmp;
  size_t wcap, tcap;
} bf_aug_scratch;
void bf_aug_scratch_free(bf_aug_scratch *s);
int bf_augment_window(bf_aug_scratch *s, const uint8_t *src, int sw, int sh, int rw, int rh,
                      int x0, int y0, int out_size, int flip, uint8_t *out);

/* Stratified split used for layouts without one: for each class, the samples
 * (given in canonical order) are shuffled with a stream derived from (seed,
 * FNV-1a of the class name) and the first round(n * test_fraction) go to test.
 * is_test[i] receives 0/1. Stable across runs, thread counts and machines. */
int bf_split_stratified(const int32_t *labels, size_t n, int num_classes,
                        const char *const *class_names, double test_fraction, uint64_t seed,
                        uint8_t *is_test);

uint64_t bf_fnv1a64(const char *s);

/* Where sample i of a split comes from: a file (path) or in-memory gray
 * pixels (IDX). */
int bf_dataset_source(const bf_dataset *ds, bf_split s, size_t i, int *label, const char **path,
                      const uint8_t **gray, int *gw, int *gh);

#endif
