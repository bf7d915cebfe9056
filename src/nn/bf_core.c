#include "bf_core.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_err[2048];

int bf_error(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
  return code;
}

int bf_error_wrap(int code, const char *fmt, ...) {
  char prefix[1024], old[sizeof g_err];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, g_err, sizeof old);
  /* Truncation of an overlong message is acceptable; build it piecewise so
   * the compiler can see every copy is bounded. */
  size_t n = strlen(prefix);
  if (n > sizeof g_err - 3) n = sizeof g_err - 3;
  memcpy(g_err, prefix, n);
  g_err[n] = ':';
  g_err[n + 1] = ' ';
  size_t room = sizeof g_err - n - 3, m = strlen(old);
  if (m > room) m = room;
  memcpy(g_err + n + 2, old, m);
  g_err[n + 2 + m] = 0;
  return code;
}

const char *bf_last_error(void) { return g_err[0] ? g_err : "unknown error"; }
void bf_clear_error(void) { g_err[0] = 0; }

void *bf_malloc(size_t bytes, const char *what) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) bf_error(BF_ENOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
  return p;
}

void *bf_calloc(size_t n, size_t size, const char *what) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) bf_error(BF_ENOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
  return p;
}

void *bf_alloc_aligned(size_t bytes, const char *what) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) bf_error(BF_ENOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
  return p;
}

int bf_atomic_open(bf_atomic_file *af, const char *path) {
  memset(af, 0, sizeof *af);
  size_t n = strlen(path) + 32;
  af->path = strdup(path);
  af->tmp_path = malloc(n);
  if (!af->path || !af->tmp_path) {
    free(af->path);
    free(af->tmp_path);
    return bf_error(BF_ENOMEM, "out of memory opening %s", path);
  }
  snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
  af->fp = fopen(af->tmp_path, "wb");
  if (!af->fp) {
    int e = errno;
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    return bf_error(BF_EIO, "cannot create %s.tmp: %s", path, strerror(e));
  }
  return BF_OK;
}

int bf_atomic_write(bf_atomic_file *af, const void *data, size_t len) {
  if (len && fwrite(data, 1, len, af->fp) != len)
    return bf_error(BF_EIO, "writing %s: %s", af->path, strerror(errno));
  return BF_OK;
}

static void atomic_free(bf_atomic_file *af) {
  free(af->path);
  free(af->tmp_path);
  af->path = af->tmp_path = NULL;
  af->fp = NULL;
}

void bf_atomic_abort(bf_atomic_file *af) {
  if (af->fp) fclose(af->fp);
  if (af->tmp_path) unlink(af->tmp_path);
  atomic_free(af);
}

int bf_atomic_commit(bf_atomic_file *af) {
  if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0) {
    int rc = bf_error(BF_EIO, "writing %s: %s", af->path, strerror(errno));
    bf_atomic_abort(af);
    return rc;
  }
  if (fclose(af->fp) != 0) {
    af->fp = NULL;
    int rc = bf_error(BF_EIO, "closing %s: %s", af->path, strerror(errno));
    bf_atomic_abort(af);
    return rc;
  }
  af->fp = NULL;
  if (rename(af->tmp_path, af->path) != 0) {
    int rc = bf_error(BF_EIO, "renaming %s to %s: %s", af->tmp_path, af->path, strerror(errno));
    bf_atomic_abort(af);
    return rc;
  }
  /* Make the rename itself durable. */
  char *dup = strdup(af->path);
  if (dup) {
    int dfd = open(dirname(dup), O_RDONLY);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    free(dup);
  }
  atomic_free(af);
  return BF_OK;
}

int bf_write_file_atomic(const char *path, const void *data, size_t len) {
  bf_atomic_file af;
  BF_TRY(bf_atomic_open(&af, path));
  int rc = bf_atomic_write(&af, data, len);
  if (rc) {
    bf_atomic_abort(&af);
    return rc;
  }
  return bf_atomic_commit(&af);
}

int bf_read_file(const char *path, uint8_t **out, size_t *len) {
  *out = NULL;
  *len = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) return bf_error(BF_EIO, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(fp);
    return bf_error(BF_EIO, "%s is not a regular file", path);
  }
  size_t n = (size_t)st.st_size;
  uint8_t *buf = bf_malloc(n + 1, path);
  if (!buf) {
    fclose(fp);
    return BF_ENOMEM;
  }
  if (n && fread(buf, 1, n, fp) != n) {
    free(buf);
    fclose(fp);
    return bf_error(BF_EIO, "reading %s: short read", path);
  }
  fclose(fp);
  buf[n] = 0;
  *out = buf;
  *len = n;
  return BF_OK;
}

int bf_mkdirs(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) return bf_error(BF_EINVAL, "bad directory path '%s'", path);
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == 0) {
      char c = buf[i];
      buf[i] = 0;
      if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return bf_error(BF_EIO, "cannot create directory %s: %s", buf, strerror(errno));
      buf[i] = c;
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return bf_error(BF_EIO, "%s exists and is not a directory", path);
  return BF_OK;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void bf_rng_seed(bf_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

void bf_rng_derive(bf_rng *r, uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t x = seed;
  uint64_t k = splitmix64(&x) ^ (a * 0xd1342543de82ef95ULL);
  k = splitmix64(&k) ^ (b * 0x9e3779b97f4a7c15ULL);
  bf_rng_seed(r, k);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bf_rng_u64(bf_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint32_t bf_rng_below(bf_rng *r, uint32_t n) {
  if (n <= 1) return 0;
  /* Lemire's nearly-divisionless method, made exact with rejection. */
  uint64_t m = (uint64_t)(uint32_t)(bf_rng_u64(r) >> 32) * n;
  uint32_t l = (uint32_t)m;
  if (l < n) {
    uint32_t t = (uint32_t)(-n) % n;
    while (l < t) {
      m = (uint64_t)(uint32_t)(bf_rng_u64(r) >> 32) * n;
      l = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

double bf_rng_uniform(bf_rng *r) { return (double)(bf_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

double bf_rng_normal(bf_rng *r) {
  double u1 = bf_rng_uniform(r), u2 = bf_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double bf_now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
