/* The bf-train key table and everything driven by it. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

typedef enum { K_STR, K_ENUM, K_INT, K_U64, K_BOOL, K_DOUBLE, K_LIST } key_type;

typedef struct key_def {
  const char *name;
  key_type type;
  size_t offset;
  size_t size; /* strings */
  const char *def;
  double min, max; /* numbers; LIST: each element */
  const char *choices; /* ENUM: "a|b|c" */
  const char *help;
} key_def;

#define OFF(f) offsetof(bf_train_config, f)
#define SZ(f) sizeof(((bf_train_config *)0)->f)
#define STR(k, f, d, h) {k, K_STR, OFF(f), SZ(f), d, 0, 0, NULL, h}
#define ENUM(k, f, d, ch, h) {k, K_ENUM, OFF(f), SZ(f), d, 0, 0, ch, h}
#define INT(k, f, d, lo, hi, h) {k, K_INT, OFF(f), 0, d, lo, hi, NULL, h}
#define U64(k, f, d, h) {k, K_U64, OFF(f), 0, d, 0, 0, NULL, h}
#define BOOL(k, f, d, h) {k, K_BOOL, OFF(f), 0, d, 0, 1, NULL, h}
#define DBL(k, f, d, lo, hi, h) {k, K_DOUBLE, OFF(f), 0, d, lo, hi, NULL, h}
#define LIST(k, f, d, lo, hi, h) {k, K_LIST, OFF(f), SZ(f), d, lo, hi, NULL, h}

static const key_def KEYS[] = {
    STR("name", name, "run", "run name; the run directory defaults to runs/<name>"),
    STR("run_dir", run_dir, "", "run directory (\"\" = runs/<name>)"),
    ENUM("backend", backend, "cpu", "cpu|cuda", "compute backend"),
    ENUM("precision", precision, "fp32", "fp32|bf16", "convolution arithmetic; bf16 = mixed precision, cuda only"),
    INT("threads", threads, "0", 0, 1024, "compute threads (0 = all cores)"),
    STR("init", init, "", "warm start: load every matching tensor of this weights file (\"\" = none)"),

    STR("data.root", data_root, "", "data set directory (required)"),
    ENUM("data.layout", data_layout, "auto", "auto|imagefolder|miniimagenet|idx", "data set layout"),
    DBL("data.test_fraction", data_test_fraction, "0.15", 0.001, 0.999,
        "per-class test share when the layout has no explicit split"),
    U64("data.split_seed", data_split_seed, "0", "seed of the stratified train/test split"),
    INT("data.image_size", data_image_size, "0", 0, 4096,
        "crop size fed to the network (0 = auto: 32 for images <= 32 px, else 224)"),
    INT("data.threads", data_threads, "0", 0, 256, "decoder threads (0 = all cores)"),
    U64("data.seed", data_seed, "0", "shuffling and augmentation seed"),
    INT("data.pad", data_pad, "-1", -1, 1024, "zero padding before the random crop (-1 = auto: 4 for small images)"),
    INT("data.hflip", data_hflip, "-1", -1, 1, "random horizontal flips in training (-1 = auto: on)"),
    INT("data.resize", data_resize, "-1", -1, 8192,
        "shorter side before cropping (-1 = auto: image_size*8/7 for natural images, 0 = none)"),
    INT("data.prefetch", data_prefetch, "3", 1, 64, "batches decoded ahead"),
    DBL("data.max_bad_fraction", data_max_bad_fraction, "0.01", 0, 1, "tolerated share of unreadable images"),

    INT("model.classes", model_classes, "0", 0, 1000000, "number of classes (0 = from the data set)"),
    INT("model.split_after", model_split_after, "0", 0, 16,
        "butterfly unit after residual block RBk (1..16; 0 = plain ResNet-50)"),
    INT("model.d_r", model_d_r, "0", 0, 2048, "reduced channels D_r of the butterfly unit (needed when split_after > 0)"),

    INT("train.epochs", epochs, "90", 1, 100000, "training epochs"),
    INT("train.batch_size", batch_size, "128", 1, 65536, "images per step"),
    DBL("train.lr", lr, "0", 0, 1000, "base learning rate (0 = train.lr_per_256 * batch_size / 256)"),
    DBL("train.lr_per_256", lr_per_256, "0.1", 0, 1000, "learning rate per 256 images (used when train.lr = 0)"),
    DBL("train.momentum", momentum, "0.9", 0, 0.999999, "SGD momentum"),
    DBL("train.weight_decay", weight_decay, "1e-4", 0, 1, "L2 weight decay"),
    BOOL("train.nesterov", nesterov, "0", "Nesterov momentum"),
    BOOL("train.no_decay_bn_bias", no_decay_bn_bias, "0", "no weight decay on BN affine parameters and biases"),
    DBL("train.label_smoothing", label_smoothing, "0", 0, 0.999, "label smoothing of the cross-entropy"),
    ENUM("train.schedule", schedule, "step", "cosine|step|onecycle|constant", "learning-rate schedule after warm-up"),
    DBL("train.warmup_epochs", warmup_epochs, "0", 0, 100000,
        "linear warm-up from 0 (onecycle: rise phase; 0 = 30% of the run)"),
    LIST("train.step_epochs", step_epochs, "30", 0.001, 100000,
         "step schedule: milestones \"30,60,80\", or one value N = every N epochs"),
    DBL("train.gamma", gamma, "0.1", 0, 1, "step schedule: factor at each milestone"),
    DBL("train.final_lr_fraction", final_lr_fraction, "0", 0, 1, "cosine: final lr as a fraction of the base lr"),
    U64("train.seed", seed, "0", "model initialisation seed"),
    INT("train.log_every", log_every, "20", 1, 1000000, "steps between metrics.jsonl lines (and plain progress lines)"),
    INT("train.max_steps_per_epoch", max_steps_per_epoch, "0", 0, 1000000000,
        "cap on steps per epoch (0 = the whole train split; for quick runs)"),
    INT("train.eval_max_batches", eval_max_batches, "0", 0, 1000000000,
        "cap on test batches per evaluation (0 = the whole test split)"),
};
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static const key_def *find_key(const char *name) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(KEYS[i].name, name) == 0) return &KEYS[i];
  return NULL;
}

int bf_train_config_has_key(const char *key) { return find_key(key) != NULL; }

static const char *type_name(const key_def *k) {
  switch (k->type) {
  case K_STR: return "string";
  case K_ENUM: return k->choices;
  case K_INT: return "int";
  case K_U64: return "uint64";
  case K_BOOL: return "bool";
  case K_DOUBLE: return "float";
  case K_LIST: return "list";
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

static int parse_list(const key_def *k, const char *v, const char *where, double *vals, int max, int *n) {
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

static int set_key(bf_train_config *c, const key_def *k, const char *v, const char *where) {
  char *base = (char *)c + k->offset;
  switch (k->type) {
  case K_STR:
    if (strlen(v) >= k->size)
      return bf_error(BF_EINVAL, "%s: %s: value longer than %zu characters", where, k->name, k->size - 1);
    strcpy(base, v);
    return BF_OK;
  case K_ENUM: {
    size_t n = strlen(v);
    for (const char *p = k->choices; *p;) {
      const char *e = strchr(p, '|');
      size_t len = e ? (size_t)(e - p) : strlen(p);
      if (len == n && strncmp(p, v, n) == 0 && n < k->size) {
        strcpy(base, v);
        return BF_OK;
      }
      p += len + (e ? 1 : 0);
    }
    return bf_error(BF_EINVAL, "%s: %s: '%s' is not one of %s", where, k->name, v, k->choices);
  }
  case K_INT: {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*v == 0 || *end || errno) return bf_error(BF_EINVAL, "%s: %s: '%s' is not an integer", where, k->name, v);
    if ((double)x < k->min || (double)x > k->max)
      return bf_error(BF_EINVAL, "%s: %s: %lld is outside %.0f..%.0f", where, k->name, x, k->min, k->max);
    *(int *)base = (int)x;
    return BF_OK;
  }
  case K_U64: {
    char *end;
    errno = 0;
    if (*v == '-' || *v == 0) return bf_error(BF_EINVAL, "%s: %s: '%s' is not an unsigned integer", where, k->name, v);
    unsigned long long x = strtoull(v, &end, 0);
    if (*end || errno) return bf_error(BF_EINVAL, "%s: %s: '%s' is not an unsigned integer", where, k->name, v);
    *(uint64_t *)base = (uint64_t)x;
    return BF_OK;
  }
  case K_BOOL:
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on")) {
      *(int *)base = 1;
    } else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off")) {
      *(int *)base = 0;
    } else {
      return bf_error(BF_EINVAL, "%s: %s: '%s' is not a boolean (0/1, true/false, yes/no, on/off)", where,
                      k->name, v);
    }
    return BF_OK;
  case K_DOUBLE: {
    double x;
    if (parse_double(v, &x)) return bf_error(BF_EINVAL, "%s: %s: '%s' is not a number", where, k->name, v);
    if (x < k->min || x > k->max)
      return bf_error(BF_EINVAL, "%s: %s: %g is outside %g..%g", where, k->name, x, k->min, k->max);
    *(double *)base = x;
    return BF_OK;
  }
  case K_LIST: {
    double vals[BF_TRAIN_MAX_MILESTONES];
    int n;
    BF_TRY(parse_list(k, v, where, vals, BF_TRAIN_MAX_MILESTONES, &n));
    if (n == 0) return bf_error(BF_EINVAL, "%s: %s: empty list", where, k->name);
    if (strlen(v) >= k->size)
      return bf_error(BF_EINVAL, "%s: %s: value longer than %zu characters", where, k->name, k->size - 1);
    strcpy(base, v);
    return BF_OK;
  }
  }
  return bf_error(BF_EINVAL, "%s: %s: bad key type", where, k->name);
}

void bf_train_config_defaults(bf_train_config *c) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < NKEYS; i++)
    if (set_key(c, &KEYS[i], KEYS[i].def, "defaults")) {
      /* The table is static: a bad default is a programming error. */
      fprintf(stderr, "bf-train: internal error: %s\n", bf_last_error());
      abort();
    }
}

int bf_train_config_set(bf_train_config *c, const char *key, const char *value, const char *where) {
  const key_def *k = find_key(key);
  if (!k) return bf_error(BF_EINVAL, "%s: unknown key '%s' (bf-train --help lists the keys)", where, key);
  /* Trim surrounding blanks of the value. */
  while (*value == ' ' || *value == '\t') value++;
  char buf[BF_TRAIN_PATH_MAX + 64];
  size_t n = strlen(value);
  if (n >= sizeof buf) return bf_error(BF_EINVAL, "%s: %s: value too long", where, key);
  memcpy(buf, value, n + 1);
  while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t' || buf[n - 1] == '\r')) buf[--n] = 0;
  /* Allow "quoted" strings in INI files. */
  if (n >= 2 && buf[0] == '"' && buf[n - 1] == '"') {
    memmove(buf, buf + 1, n - 2);
    buf[n - 2] = 0;
  }
  return set_key(c, k, buf, where);
}

typedef struct ini_ctx {
  bf_train_config *c;
  const char *path;
  int failed;
  char msg[1024];
  int line;
} ini_ctx;

/* inih reports the line of the first handler failure through its return
 * value; we keep the first message and prefix FILE:LINE afterwards. */
static int on_ini_line(void *user, const char *section, const char *name, const char *value) {
  ini_ctx *x = user;
  if (x->failed) return 0;
  char key[256];
  if (section && *section)
    snprintf(key, sizeof key, "%s.%s", section, name);
  else
    snprintf(key, sizeof key, "%s", name);
  if (bf_train_config_set(x->c, key, value, "@")) {
    x->failed = 1;
    /* drop the "@: " placeholder */
    const char *m = bf_last_error();
    if (strncmp(m, "@: ", 3) == 0) m += 3;
    snprintf(x->msg, sizeof x->msg, "%s", m);
    return 0;
  }
  return 1;
}

int bf_train_config_load(bf_train_config *c, const char *path) {
  FILE *fp = fopen(path, "r");
  if (!fp) return bf_error(BF_EIO, "config %s: cannot open: %s", path, strerror(errno));
  ini_ctx x = {c, path, 0, {0}, 0};
  int rc = ini_parse_file(fp, on_ini_line, &x);
  fclose(fp);
  if (rc < 0) return bf_error(BF_EIO, "config %s: cannot read", path);
  if (rc > 0) {
    if (x.failed) return bf_error(BF_EINVAL, "%s:%d: %s", path, rc, x.msg);
    return bf_error(BF_EINVAL, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
  }
  return BF_OK;
}

int bf_train_config_milestones(const bf_train_config *c, double *out, int max) {
  int n = 0;
  const key_def *k = find_key("train.step_epochs");
  if (parse_list(k, c->step_epochs, "config", out, max, &n)) return 0;
  return n;
}

double bf_train_config_base_lr(const bf_train_config *c) {
  return c->lr > 0 ? c->lr : c->lr_per_256 * c->batch_size / 256.0;
}

const char *bf_train_config_run_dir(const bf_train_config *c, char *buf, size_t n) {
  if (c->run_dir[0])
    snprintf(buf, n, "%s", c->run_dir);
  else
    snprintf(buf, n, "runs/%s", c->name);
  return buf;
}

int bf_train_config_validate(const bf_train_config *c) {
  if (!c->data_root[0]) return bf_error(BF_EINVAL, "data.root: required (the data set directory)");
  if (strlen(c->run_dir) + 40 > BF_TRAIN_PATH_MAX)
    return bf_error(BF_EINVAL, "run_dir: path longer than %d characters", BF_TRAIN_PATH_MAX - 40);
  if (!c->name[0] && !c->run_dir[0]) return bf_error(BF_EINVAL, "name: must not be empty when run_dir is empty");
  for (const char *p = c->name; *p; p++)
    if (*p == '/' || *p == '\\')
      return bf_error(BF_EINVAL, "name: '%s' must not contain '/' (use run_dir for a path)", c->name);
  if (c->model_split_after > 0) {
    if (c->model_d_r < 1)
      return bf_error(BF_EINVAL, "model.d_r: required (>= 1) when model.split_after = %d", c->model_split_after);
    int D = c->model_split_after <= 3 ? 256 : c->model_split_after <= 7 ? 512 : c->model_split_after <= 13 ? 1024 : 2048;
    if (c->model_d_r > D)
      return bf_error(BF_EINVAL, "model.d_r: %d is more than the %d channels of RB%d", c->model_d_r, D,
                      c->model_split_after);
  }
  if (c->data_image_size != 0 && c->data_image_size < 32)
    return bf_error(BF_EINVAL, "data.image_size: %d is too small (ResNet-50 needs >= 32, or 0 = auto)",
                    c->data_image_size);
  if (bf_train_config_base_lr(c) <= 0) return bf_error(BF_EINVAL, "train.lr: the learning rate must be > 0");
  if (!strcmp(c->schedule, "onecycle") && c->warmup_epochs >= c->epochs)
    return bf_error(BF_EINVAL, "train.warmup_epochs: %g must be less than train.epochs (%d) for onecycle",
                    c->warmup_epochs, c->epochs);
  return BF_OK;
}

static void write_value(const bf_train_config *c, const key_def *k, FILE *fp) {
  const char *base = (const char *)c + k->offset;
  switch (k->type) {
  case K_STR:
  case K_ENUM:
  case K_LIST: fprintf(fp, "%s", base); break;
  case K_INT:
  case K_BOOL: fprintf(fp, "%d", *(const int *)base); break;
  case K_U64: fprintf(fp, "%llu", (unsigned long long)*(const uint64_t *)base); break;
  case K_DOUBLE: fprintf(fp, "%.17g", *(const double *)base); break;
  }
}

int bf_train_config_write(const bf_train_config *c, FILE *fp) {
  fprintf(fp, "# bf-train effective configuration\n");
  char cur[32] = "";
  for (int i = 0; i < NKEYS; i++) {
    const key_def *k = &KEYS[i];
    const char *dot = strchr(k->name, '.');
    char sec[32] = "";
    if (dot) snprintf(sec, sizeof sec, "%.*s", (int)(dot - k->name), k->name);
    if (strcmp(sec, cur) != 0) {
      fprintf(fp, "\n[%s]\n", sec);
      snprintf(cur, sizeof cur, "%s", sec);
    }
    fprintf(fp, "%s = ", dot ? dot + 1 : k->name);
    write_value(c, k, fp);
    fputc('\n', fp);
  }
  return ferror(fp) ? bf_error(BF_EIO, "writing the config failed") : BF_OK;
}

int bf_train_config_save(const bf_train_config *c, const char *path) {
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  if (!fp) return bf_error(BF_ENOMEM, "config %s: open_memstream failed", path);
  int rc = bf_train_config_write(c, fp);
  fclose(fp);
  if (!rc) rc = bf_write_file_atomic(path, buf, len);
  free(buf);
  return rc;
}

void bf_train_config_print_help(FILE *fp) {
  for (int i = 0; i < NKEYS; i++) {
    const key_def *k = &KEYS[i];
    char range[64] = "";
    if (k->type == K_INT) snprintf(range, sizeof range, ", %.0f..%.0f", k->min, k->max);
    if (k->type == K_DOUBLE) snprintf(range, sizeof range, ", %g..%g", k->min, k->max);
    fprintf(fp, "  --%-26s %s (%s%s; default \"%s\")\n", k->name, k->help, type_name(k), range, k->def);
  }
}
