/* Small helpers shared by the executables: strict number parsing and the
 * one-line error convention "<prog>: error: <message>" + non-zero exit. */
#ifndef BF_CLI_COMMON_H
#define BF_CLI_COMMON_H

#include <stdint.h>

extern const char *cli_prog;

/* Prints "<prog>: error: <msg>" to stderr; returns 2 so main can `return cli_fail(...)`. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports bf_last_error() with context. */
int cli_fail_bf(const char *context);

/* argv[*i] is the flag; its value is argv[*i + 1]. Return 0 or a cli_fail code. */
int cli_value(int argc, char **argv, int *i, const char **out);
int cli_int(int argc, char **argv, int *i, long lo, long hi, long *out);
int cli_u64(int argc, char **argv, int *i, uint64_t *out);
int cli_float(int argc, char **argv, int *i, double lo, double hi, double *out);

#endif
