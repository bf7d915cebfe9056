/* Helpers shared by the split tests: random models whose BatchNorm layers
 * are not the identity, and structured random images. */
#ifndef BF_SPLIT_TESTUTIL_H
#define BF_SPLIT_TESTUTIL_H

#include <stdint.h>

#include "backend.h"
#include "model.h"

/* Creates, initialises and randomises (BN affine + running stats) a model and
 * saves it to path. */
int tu_make_model(bf_backend *be, const char *path, int classes, int split_after, int d_r, uint64_t seed);
/* Randomises BN parameters/statistics of an initialised model. */
int tu_randomize_bn(bf_model *m, uint64_t seed);
/* A smooth random RGB8 image (sum of a few random sinusoids + noise). */
void tu_image_u8(uint8_t *rgb, int w, int h, uint64_t seed);
/* The same, normalised with ImageNet mean/std into NHWC float. */
void tu_image_f32(float *x, int w, int h, uint64_t seed);

#define TU_CHECK(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                     \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      return 1;                                                                \
    }                                                                          \
  } while (0)

#endif
