/* Helpers shared by the split tests: random models whose BatchNorm layers
 * are not the identity, and structured random images. */
#ifndef BF_SPLIT_TESTUTIL_H
#define BF_SPLIT_TESTUTIL_H

#include <stdint.h>
#include <sys/types.h>

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

/* Trains nothing: a random model (tu_make_model) exported at 64x64 into
 * deploy (bf-export's layout, one split). */
int tu_make_deploy(const char *work, int classes, int split_after, int d_r, const char *deploy);
/* Starts argv[0] with stdout/stderr redirected to the given files (NULL:
 * inherited); *pid receives the child. rlimit_nofile > 0 lowers the child's
 * open-file limit. */
int tu_spawn(char *const argv[], const char *out, const char *err, long rlimit_nofile, pid_t *pid);
/* Waits (up to 60 s) until bf-serve wrote its port file; 0 if it died. */
int tu_wait_port(pid_t pid, const char *port_file);
/* Waits up to sec for the child; returns its wait status, -1 on timeout (child killed). */
int tu_wait_exit(pid_t pid, double sec);

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
