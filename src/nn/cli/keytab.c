/* Key tables (keytab.h): typed keys, INI files and overrides. */
#include "keytab.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

#define WHERE_PLACEHOLDER "@"

/* Key names compare with '-' and '_' as one character. */
static int same_name(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a == '-' ? '_' : *a, y = *b == '-' ? '_' : *b;
    if (x != y) return 0;
  }
  return *a == *b;
}

const bf_key *bf_keytab_find(const bf_keytab *t, const char *name) {
  for (int i = 0; i < t->n; i++)
    if (same_name(t->keys[i].name, name)) return &t->keys[i];
  return NULL;
}

static const char *type_name(const bf_key *k) {
  switch (k->type) {
  case BF_KEY_STR: return "string";
  case BF_KEY_ENUM:
  case BF_KEY_CHOICE:
  case BF_KEY_CUSTOM: return k->choices;
  case BF_KEY_INT: return "int";
  case BF_KEY_U64: return "uint64";
  case BF_KEY_BOOL: return "bool";
  case BF_KEY_DOUBLE: return "float";
  case BF_KEY_LIST: return "list";
  }
  return "?";
}

static int parse_double(const char *v, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  while (*end == ' ' || *end == '\t') end++;
  if (*v == 0 || *end || errno || !isfinite(x)) return -1;
  *out = x;
  return 0;
}

int bf_keytab_parse_list(const bf_key *k, const char *v, const char *where, double *vals, int max, int *n) {
  *n = 0;
  const char *p = v;
  while (*p) {
    while (*p == ' ' || *p == '\t') p++;
    char *end;
    errno = 0;
    double x = strtod(p, &end);
    if (end == p || errno || !isfinite(x))
      return bf_error(BF_EINVAL, "%s: %s: '%s' is not a comma-separated list of numbers", where, k->name, v);
    if (x < k->min || x > k->max)
      return bf_error(BF_EINVAL, "%s: %s: %g is outside %g..%g", where, k->name, x, k->min, k->max);
    if (*n >= max) return bf_error(BF_EINVAL, "%s: %s: more than %d values", where, k->name, max);
    if (*n > 0 && x <= vals[*n - 1])
      return bf_error(BF_EINVAL, "%s: %s: values must increase ('%s')", where, k->name, v);
    vals[(*n)++] = x;
    p = end;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == ',') {
      p++;
      if (!*p) return bf_error(BF_EINVAL, "%s: %s: trailing comma in '%s'", where, k->name, v);
    } else if (*p) {
      return bf_error(BF_EINVAL, "%s: %s: '%s' is not a comma-separated list of numbers", where, k->name, v);
    }
  }
  return BF_OK;
}

/* Index of v in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *v) {
  size_t n = strlen(v);
  int idx = 0;
  for (const char *p = choices; *p; idx++) {
    const char *e = strchr(p, '|');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, v, n) == 0) return idx;
    p += len + (e ? 1 : 0);
  }
  return -1;
}

static int set_value(void *cfg, const bf_key *k, const char *v, const char *where) {
  char *base = (char *)cfg + k->offset;
  switch (k->type) {
  case BF_KEY_STR:
    if (strlen(v) >= k->size)
      return bf_error(BF_EINVAL, "%s: %s: value longer than %zu characters", where, k->name, k->size - 1);
    strcpy(base, v);
    return BF_OK;
  case BF_KEY_ENUM:
  case BF_KEY_CHOICE: {
    int idx = choice_index(k->choices, v);
    if (idx < 0 || (k->type == BF_KEY_ENUM && strlen(v) >= k->size))
      return bf_error(BF_EINVAL, "%s: %s: '%s' is not one of %s", where, k->name, v, k->choices);
    if (k->type == BF_KEY_ENUM) strcpy(base, v);
    else *(int *)base = idx;
    return BF_OK;
  }
  case BF_KEY_INT: {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*v == 0 || *end || errno) return bf_error(BF_EINVAL, "%s: %s: '%s' is not an integer", where, k->name, v);
    if ((double)x < k->min || (double)x > k->max)
      return bf_error(BF_EINVAL, "%s: %s: %lld is outside %.0f..%.0f", where, k->name, x, k->min, k->max);
    *(int *)base = (int)x;
    return BF_OK;
  }
  case BF_KEY_U64: {
    char *end;
    errno = 0;
    if (*v == '-' || *v == 0) return bf_error(BF_EINVAL, "%s: %s: '%s' is not an unsigned integer", where, k->name, v);
    unsigned long long x = strtoull(v, &end, 0);
    if (*end || errno) return bf_error(BF_EINVAL, "%s: %s: '%s' is not an unsigned integer", where, k->name, v);
    *(uint64_t *)base = (uint64_t)x;
    return BF_OK;
  }
  case BF_KEY_BOOL:
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on")) {
      *(int *)base = 1;
    } else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off")) {
      *(int *)base = 0;
    } else {
      return bf_error(BF_EINVAL, "%s: %s: '%s' is not a boolean (0/1, true/false, yes/no, on/off)", where,
                      k->name, v);
    }
    return BF_OK;
  case BF_KEY_DOUBLE: {
    double x;
    if (parse_double(v, &x)) return bf_error(BF_EINVAL, "%s: %s: '%s' is not a number", where, k->name, v);
    if (x < k->min || x > k->max)
      return bf_error(BF_EINVAL, "%s: %s: %g is outside %g..%g", where, k->name, x, k->min, k->max);
    *(double *)base = x;
    return BF_OK;
  }
  case BF_KEY_LIST: {
    double vals[BF_KEY_LIST_MAX];
    int n;
    BF_TRY(bf_keytab_parse_list(k, v, where, vals, BF_KEY_LIST_MAX, &n));
    if (n == 0) return bf_error(BF_EINVAL, "%s: %s: empty list", where, k->name);
    if (strlen(v) >= k->size)
      return bf_error(BF_EINVAL, "%s: %s: value longer than %zu characters", where, k->name, k->size - 1);
    strcpy(base, v);
    return BF_OK;
  }
  case BF_KEY_CUSTOM: return k->parse(cfg, k, v, where);
  }
  return bf_error(BF_EINVAL, "%s: %s: bad key type", where, k->name);
}

void bf_keytab_defaults(const bf_keytab *t, void *cfg) {
  for (int i = 0; i < t->n; i++)
    if (set_value(cfg, &t->keys[i], t->keys[i].def, "defaults")) {
      /* The table is static: a bad default is a programming error. */
      fprintf(stderr, "%s: internal error: %s\n", t->tool, bf_last_error());
      abort();
    }
}

int bf_keytab_set(const bf_keytab *t, void *cfg, const char *key, const char *value, const char *where) {
  const bf_key *k = bf_keytab_find(t, key);
  if (!k) return bf_error(BF_EINVAL, "%s: unknown key '%s' (%s --help lists the keys)", where, key, t->tool);
  /* Trim surrounding blanks of the value. */
  while (*value == ' ' || *value == '\t') value++;
  char buf[2048];
  size_t n = strlen(value);
  if (n >= sizeof buf) return bf_error(BF_EINVAL, "%s: %s: value too long", where, k->name);
  memcpy(buf, value, n + 1);
  while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t' || buf[n - 1] == '\r')) buf[--n] = 0;
  /* Allow "quoted" strings in INI files. */
  if (n >= 2 && buf[0] == '"' && buf[n - 1] == '"') {
    memmove(buf, buf + 1, n - 2);
    buf[n - 2] = 0;
  }
  return set_value(cfg, k, buf, where);
}

static void write_value(const void *cfg, const bf_key *k, FILE *fp) {
  const char *base = (const char *)cfg + k->offset;
  switch (k->type) {
  case BF_KEY_STR:
  case BF_KEY_ENUM:
  case BF_KEY_LIST: fprintf(fp, "%s", base); break;
  case BF_KEY_CHOICE: {
    int idx = *(const int *)base;
    const char *p = k->choices;
    for (int i = 0; i < idx && p; i++) {
      p = strchr(p, '|');
      if (p) p++;
    }
    if (p) fprintf(fp, "%.*s", (int)strcspn(p, "|"), p);
    break;
  }
  case BF_KEY_INT:
  case BF_KEY_BOOL: fprintf(fp, "%d", *(const int *)base); break;
  case BF_KEY_U64: fprintf(fp, "%llu", (unsigned long long)*(const uint64_t *)base); break;
  case BF_KEY_DOUBLE: fprintf(fp, "%.17g", *(const double *)base); break;
  case BF_KEY_CUSTOM: break;
  }
}

int bf_keytab_write(const bf_keytab *t, const void *cfg, const char *title, FILE *fp) {
  fprintf(fp, "# %s\n", title);
  char cur[32] = "";
  for (int i = 0; i < t->n; i++) {
    const bf_key *k = &t->keys[i];
    if (k->type == BF_KEY_CUSTOM) continue;
    const char *dot = strchr(k->name, '.');
    char sec[32] = "";
    if (dot) snprintf(sec, sizeof sec, "%.*s", (int)(dot - k->name), k->name);
    if (strcmp(sec, cur) != 0) {
      fprintf(fp, "\n[%s]\n", sec);
      snprintf(cur, sizeof cur, "%s", sec);
    }
    fprintf(fp, "%s = ", dot ? dot + 1 : k->name);
    write_value(cfg, k, fp);
    fputc('\n', fp);
  }
  return ferror(fp) ? bf_error(BF_EIO, "writing the config failed") : BF_OK;
}

void bf_keytab_print_help(const bf_keytab *t, FILE *fp) {
  for (int i = 0; i < t->n; i++) {
    const bf_key *k = &t->keys[i];
    char range[64] = "";
    if (k->type == BF_KEY_INT) snprintf(range, sizeof range, ", %.0f..%.0f", k->min, k->max);
    if (k->type == BF_KEY_DOUBLE) snprintf(range, sizeof range, ", %g..%g", k->min, k->max);
    fprintf(fp, "  --%-26s %s (%s%s; default \"%s\")\n", k->name, k->help, type_name(k), range, k->def);
  }
}

typedef struct ini_ctx {
  bf_ini_setter set;
  void *user;
  int rc;
  char msg[1024];
} ini_ctx;

/* inih reports the line of the first handler failure through its return
 * value; the first message is kept and gets FILE:LINE afterwards. */
static int on_ini_line(void *user, const char *section, const char *name, const char *value) {
  ini_ctx *x = user;
  if (x->rc) return 0;
  char key[256];
  if (section && *section)
    snprintf(key, sizeof key, "%s.%s", section, name);
  else
    snprintf(key, sizeof key, "%s", name);
  int rc = x->set(x->user, key, value, WHERE_PLACEHOLDER);
  if (rc) {
    x->rc = rc;
    const char *m = bf_last_error();
    if (strncmp(m, WHERE_PLACEHOLDER ": ", 3) == 0) m += 3;
    snprintf(x->msg, sizeof x->msg, "%s", m);
    return 0;
  }
  return 1;
}

int bf_ini_load(const char *path, bf_ini_setter set, void *ctx) {
  FILE *fp = fopen(path, "r");
  if (!fp) return bf_error(BF_EIO, "config %s: cannot open: %s", path, strerror(errno));
  ini_ctx x = {set, ctx, 0, {0}};
  int rc = ini_parse_file(fp, on_ini_line, &x);
  fclose(fp);
  if (rc < 0) return bf_error(BF_EIO, "config %s: cannot read", path);
  if (x.rc) return bf_error(x.rc, "%s:%d: %s", path, rc, x.msg);
  if (rc > 0) return bf_error(BF_EINVAL, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
  return BF_OK;
}
