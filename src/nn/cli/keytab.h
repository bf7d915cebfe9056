/* Key tables: the one parser of the tools' configurations (bf-train,
 * bf-search). A table lists every key with its type, default, range or
 * choices and help text; from it come INI loading (errors name FILE:LINE and
 * the key), command-line overrides (--section.key VALUE), --help text and
 * the written effective config. Unknown keys are refused.
 *
 * Keys are "section.name" (INI: [section] name = value) or bare names for
 * top-level keys. '-' and '_' are the same character in key names, so
 * --train.max-steps-per-epoch is train.max_steps_per_epoch.
 *
 * Every function returns 0 or a negative BF_E* code with a message
 * (bf_last_error()) that starts with `where` ("FILE:LINE", "command line"). */
#ifndef BF_KEYTAB_H
#define BF_KEYTAB_H

#include <stddef.h>
#include <stdio.h>

#define BF_KEY_LIST_MAX 16 /* values of a LIST key */

typedef enum {
  BF_KEY_STR,    /* char[size] */
  BF_KEY_ENUM,   /* char[size], one of choices "a|b|c" */
  BF_KEY_CHOICE, /* int: the index of the value in choices "a|b|c" */
  BF_KEY_INT,    /* int in min..max */
  BF_KEY_U64,    /* uint64_t */
  BF_KEY_BOOL,   /* int 0/1 (0/1, true/false, yes/no, on/off) */
  BF_KEY_DOUBLE, /* double in min..max */
  BF_KEY_LIST,   /* char[size]: increasing comma-separated numbers, each in min..max */
  BF_KEY_CUSTOM  /* parsed by `parse` */
} bf_key_type;

typedef struct bf_key bf_key;
struct bf_key {
  const char *name;
  bf_key_type type;
  size_t offset, size; /* of the field in the config struct; size for strings */
  const char *def;     /* default, in text form (parsed like any value) */
  double min, max;
  const char *choices; /* ENUM, CHOICE: "a|b|c"; CUSTOM: type shown by --help */
  const char *help;
  /* CUSTOM: stores `v` into the config; errors name `where` and k->name */
  int (*parse)(void *cfg, const bf_key *k, const char *v, const char *where);
};

typedef struct bf_keytab {
  const char *tool; /* named in "unknown key" messages */
  const bf_key *keys;
  int n;
} bf_keytab;

/* The key named `name` ('-' = '_'), or NULL. */
const bf_key *bf_keytab_find(const bf_keytab *t, const char *name);
/* Every key to its default; a bad default (a programming error) aborts. */
void bf_keytab_defaults(const bf_keytab *t, void *cfg);
/* Sets one key from its text form (blanks trimmed, "quotes" removed). */
int bf_keytab_set(const bf_keytab *t, void *cfg, const char *key, const char *value, const char *where);
/* Writes the config as INI, loadable again. CUSTOM keys are skipped. */
int bf_keytab_write(const bf_keytab *t, const void *cfg, const char *title, FILE *fp);
/* One line per key: name, help, type, range, default. */
void bf_keytab_print_help(const bf_keytab *t, FILE *fp);
/* Parses a LIST value of key k; *n values into vals (at most max). */
int bf_keytab_parse_list(const bf_key *k, const char *v, const char *where, double *vals, int max, int *n);

/* Reads an INI file, calling set(ctx, "section.name", value, where) for
 * every line in order and stopping at the first error. `where` is a
 * placeholder: the message of a failing line gets "FILE:LINE" in its place.
 * (A setter that keeps values to check later knows the file through ctx.) */
typedef int (*bf_ini_setter)(void *ctx, const char *key, const char *value, const char *where);
int bf_ini_load(const char *path, bf_ini_setter set, void *ctx);

#endif
