#include "cli_common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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

int cli_value(int argc, char **argv, int *i, const char **out) {
  if (*i + 1 >= argc) return cli_fail("%s needs a value (see --help)", argv[*i]);
  *out = argv[++*i];
  return 0;
}

int cli_int(int argc, char **argv, int *i, long lo, long hi, long *out) {
  const char *flag = argv[*i], *v = NULL;
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
  const char *flag = argv[*i], *v = NULL;
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
  const char *flag = argv[*i], *v = NULL;
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
