/* The argument parser of every executable: option matching, strict number
 * parsing and the one-line error convention "<prog>: error: <message>" +
 * non-zero exit.
 *
 * Every tool's main loops over argv and asks cli_is / cli_flag which option
 * argv[i] is, then takes its value with cli_value / cli_int / ... . Options
 * are spelt with '-' or '_' alike (--run-dir = --run_dir) and a value comes
 * as the next argument or after '=' (--out=x). Config keys (bf-train,
 * bf-search) come through cli_key. */
#ifndef BF_CLI_COMMON_H
#define BF_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

extern const char *cli_prog;

/* Prints "<prog>: error: <msg>" to stderr; returns 2 so main can `return cli_fail(...)`. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports bf_last_error() with context. */
int cli_fail_bf(const char *context);

/* Is `arg` the option `opt` ("--run-dir")? '-' and '_' are one character;
 * "--opt=VALUE" matches too (the value functions take VALUE). */
int cli_is(const char *arg, const char *opt);
/* A flag without a value: as cli_is, but "--flag=x" does not match. */
int cli_flag(const char *arg, const char *opt);
/* "--section.key VALUE" or "--section.key=VALUE" (a config key override):
 * key gets the name without "--", '-' turned into '_'. 0 or a cli_fail code. */
int cli_key(int argc, char **argv, int *i, char *key, size_t cap, const char **val);
/* The key part of cli_key, without printing: -1 when `arg` is no "--name". */
int cli_key_name(const char *arg, char *key, size_t cap);

/* argv[*i] is the option; its value follows '=' in it, else it is
 * argv[*i + 1]. Return 0 or a cli_fail code. */
int cli_value(int argc, char **argv, int *i, const char **out);
int cli_int(int argc, char **argv, int *i, long lo, long hi, long *out);
int cli_u64(int argc, char **argv, int *i, uint64_t *out);
int cli_float(int argc, char **argv, int *i, double lo, double hi, double *out);

#endif
