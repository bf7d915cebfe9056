/* Shared infrastructure for every butterfly library: error reporting, checked
 * allocation, atomic file writes, a portable seeded RNG and a clock.
 *
 * Error convention (ggml/llm.c style, minus the aborts): library functions
 * return 0 on success and a negative BF_E* code on failure after recording a
 * message with bf_set_error(). Only executables decide to exit. */
#ifndef BF_CORE_H
#define BF_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
  BF_OK = 0,
  BF_EINVAL = -1,  /* bad argument, config value or file content */
  BF_EIO = -2,     /* file system / socket error */
  BF_ENOMEM = -3,  /* allocation failed */
  BF_EUNSUP = -4,  /* operation not supported by this backend/build */
  BF_ENUM = -5,    /* NaN/Inf where finite numbers were required */
  BF_EBACKEND = -6 /* a backend library call failed (BLAS, CUDA, cuDNN) */
};

#if defined(__GNUC__)
#define BF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BF_PRINTF(a, b)
#endif

/* Records the message for the calling thread and returns `code`, so that
 * `return bf_error(BF_EINVAL, "...")` reads naturally. */
int bf_error(int code, const char *fmt, ...) BF_PRINTF(2, 3);
/* Prefixes the current message with more context ("loading W.safetensors: "). */
int bf_error_wrap(int code, const char *fmt, ...) BF_PRINTF(2, 3);
const char *bf_last_error(void);
void bf_clear_error(void);

#define BF_TRY(call)                                                          \
  do {                                                                         \
    int bf_try_rc_ = (call);                                                   \
    if (bf_try_rc_ != 0) return bf_try_rc_;                                    \
  } while (0)

/* Checked allocation: on failure records "out of memory allocating N bytes
 * for WHAT" and returns NULL. Memory from bf_alloc_aligned is 64-byte aligned
 * and released with free(). */
void *bf_malloc(size_t bytes, const char *what);
void *bf_calloc(size_t n, size_t size, const char *what);
void *bf_alloc_aligned(size_t bytes, const char *what);

/* Writes `len` bytes atomically: PATH.tmp.<pid>, fsync, rename, fsync of the
 * directory. A crash leaves either the old file or the new one. */
int bf_write_file_atomic(const char *path, const void *data, size_t len);
/* Streaming variant for large files: open, write chunks, commit or abort. */
typedef struct bf_atomic_file {
  FILE *fp;
  char *path;
  char *tmp_path;
} bf_atomic_file;
int bf_atomic_open(bf_atomic_file *af, const char *path);
int bf_atomic_write(bf_atomic_file *af, const void *data, size_t len);
int bf_atomic_commit(bf_atomic_file *af); /* fsync + rename; closes */
void bf_atomic_abort(bf_atomic_file *af); /* removes the temp file; closes */

/* Reads a whole file. *out is malloc'ed (plus a NUL byte past the end). */
int bf_read_file(const char *path, uint8_t **out, size_t *len);
/* mkdir -p */
int bf_mkdirs(const char *path);

/* Portable, seedable, serialisable RNG (xoshiro256** seeded by splitmix64).
 * Identical streams on every machine, so runs reproduce across hosts. */
typedef struct bf_rng {
  uint64_t s[4];
} bf_rng;
void bf_rng_seed(bf_rng *r, uint64_t seed);
uint64_t bf_rng_u64(bf_rng *r);
uint32_t bf_rng_below(bf_rng *r, uint32_t n); /* uniform in [0, n), unbiased */
double bf_rng_uniform(bf_rng *r);             /* [0, 1) with 53 bits */
double bf_rng_normal(bf_rng *r);              /* standard normal (Box-Muller) */
/* An independent stream for (seed, a, b): e.g. (run seed, epoch, sample). */
void bf_rng_derive(bf_rng *r, uint64_t seed, uint64_t a, uint64_t b);

double bf_now_sec(void); /* monotonic clock */

#endif
