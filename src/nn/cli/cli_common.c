#include "cli_common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

const char *cli_prog = "bf";

int cli_fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: error: ", cli_prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 2;
}

int cli_fail_bf(const char *context) {
  if (context && *context) return cli_fail("%s: %s", context, bf_last_error());
  return cli_fail("%s", bf_last_error());
}

/* Length of the option name in arg ("--x=v": 3). */
static size_t name_len(const char *arg) {
  const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
  return eq ? (size_t)(eq - arg) : strlen(arg);
}

static int same_name(const char *a, size_t n, const char *opt) {
  if (strlen(opt) != n) return 0;
  for (size_t k = 0; k < n; k++) {
    char x = a[k], y = opt[k];
    if (k >= 2 && x == '_') x = '-';
    if (k >= 2 && y == '_') y = '-';
    if (x != y) return 0;
  }
  return 1;
}

int cli_is(const char *arg, const char *opt) { return same_name(arg, name_len(arg), opt); }

int cli_flag(const char *arg, const char *opt) { return same_name(arg, strlen(arg), opt); }

int cli_value(int argc, char **argv, int *i, const char **out) {
  const char *a = argv[*i];
  size_t n = name_len(a);
  if (a[n] == '=') {
    *out = a + n + 1;
    return 0;
  }
  if (*i + 1 >= argc) return cli_fail("%s needs a value (see --help)", a);
  *out = argv[++*i];
  return 0;
}

int cli_key_name(const char *arg, char *key, size_t cap) {
  size_t n = name_len(arg);
  key[0] = 0;
  if (strncmp(arg, "--", 2) || n <= 2 || n - 2 >= cap) return -1;
  for (size_t k = 2; k < n; k++) key[k - 2] = arg[k] == '-' ? '_' : arg[k];
  key[n - 2] = 0;
  return 0;
}

int cli_key(int argc, char **argv, int *i, char *key, size_t cap, const char **val) {
  if (cli_key_name(argv[*i], key, cap)) return cli_fail("unexpected argument '%s' (see --help)", argv[*i]);
  return cli_value(argc, argv, i, val);
}

/* The option's name for messages (without "=VALUE"). */
static const char *flag_of(const char *arg, char *buf, size_t cap) {
  snprintf(buf, cap, "%.*s", (int)name_len(arg), arg);
  return buf;
}

int cli_int(int argc, char **argv, int *i, long lo, long hi, long *out) {
  char fb[128];
  const char *flag = flag_of(argv[*i], fb, sizeof fb), *v = NULL;
  int rc = cli_value(argc, argv, i, &v);
  if (rc) return rc;
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (*v == 0 || *end || errno) return cli_fail("%s: '%s' is not an integer", flag, v);
  if (x < lo || x > hi) return cli_fail("%s: %ld is outside %ld..%ld", flag, x, lo, hi);
  *out = x;
  return 0;
}

int cli_u64(int argc, char **argv, int *i, uint64_t *out) {
  char fb[128];
  const char *flag = flag_of(argv[*i], fb, sizeof fb), *v = NULL;
  int rc = cli_value(argc, argv, i, &v);
  if (rc) return rc;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (*v == 0 || *v == '-' || *end || errno) return cli_fail("%s: '%s' is not a non-negative integer", flag, v);
  *out = x;
  return 0;
}

int cli_float(int argc, char **argv, int *i, double lo, double hi, double *out) {
  char fb[128];
  const char *flag = flag_of(argv[*i], fb, sizeof fb), *v = NULL;
  int rc = cli_value(argc, argv, i, &v);
  if (rc) return rc;
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (*v == 0 || *end || errno || !isfinite(x)) return cli_fail("%s: '%s' is not a number", flag, v);
  if (x < lo || x > hi) return cli_fail("%s: %g is outside %g..%g", flag, x, lo, hi);
  *out = x;
  return 0;
}
