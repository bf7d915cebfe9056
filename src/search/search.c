/* bf-search: configuration, state file, training phase and the driver of the
 * three phases (search.h, docs/search.md). */
#include "search.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "bf_core.h"
#include "model.h"
#include "trainer.h"

/* ---------------------------------------------------------------- config */

void bf_search_config_defaults(bf_search_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->dir, sizeof c->dir, "runs/search");
  c->tolerance = 2.0;
  for (int k = 1; k <= 16; k++) c->splits[c->n_splits++] = k;
  c->dr_min = 1;
  c->dr_max = 0;
  c->device_threads = 1;
  c->server_threads = 2;
  c->prof_warmup = 2;
  c->prof_runs = 7;
  const char *nets[] = {"3g", "4g", "wifi"};
  for (int i = 0; i < 3; i++) bf_sel_network_builtin(nets[i], &c->nets[c->n_nets++]);
  c->load.p_mobile_mw = 3000;
  c->jobs = 1;
  c->slurm_gpus = -1;
  bf_train_config_defaults(&c->train);
  bf_train_config_defaults(&c->cand);
}

void bf_search_config_free(bf_search_config *c) {
  for (int i = 0; i < c->n_ovr; i++) {
    free(c->ovr_key[i]);
    free(c->ovr_val[i]);
    free(c->ovr_where[i]);
  }
  c->n_ovr = 0;
}

static int parse_int(const char *v, int lo, int hi, int *out, const char *key, const char *where) {
  char *end;
  long x = strtol(v, &end, 10);
  if (!*v || *end || x < lo || x > hi)
    return bf_error(BF_EINVAL, "%s: %s: '%s' is not an integer in %d..%d", where, key, v, lo, hi);
  *out = (int)x;
  return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out, const char *key, const char *where) {
  char *end;
  double x = strtod(v, &end);
  if (!*v || *end || !isfinite(x) || x < lo || x > hi)
    return bf_error(BF_EINVAL, "%s: %s: '%s' is not a number in [%g, %g]", where, key, v, lo, hi);
  *out = x;
  return 0;
}

static int parse_splits(bf_search_config *c, const char *v, const char *where) {
  int seen[17] = {0}, n = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", v);
  for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    int a, b;
    char *dash = strchr(tok, '-');
    if (dash) *dash = 0;
    char *e1, *e2 = NULL;
    a = (int)strtol(tok, &e1, 10);
    b = dash ? (int)strtol(dash + 1, &e2, 10) : a;
    if (*e1 || (dash && (*e2 || !dash[1])) || !*tok)
      return bf_error(BF_EINVAL, "%s: search.splits: '%s' is not a list like 1,4,8-10", where, v);
    if (a < 1 || a > 16 || b < 1 || b > 16 || a > b)
      return bf_error(BF_EINVAL, "%s: search.splits: split point %d outside 1..16 (residual blocks of ResNet-50)",
                      where, (a < 1 || a > 16) ? a : b);
    for (int k = a; k <= b; k++) seen[k] = 1;
  }
  for (int k = 1; k <= 16; k++)
    if (seen[k]) c->splits[n++] = k;
  if (!n) return bf_error(BF_EINVAL, "%s: search.splits: empty list", where);
  c->n_splits = n;
  return 0;
}

static int parse_networks(bf_search_config *c, const char *v, const char *where) {
  char buf[256];
  int n = 0;
  snprintf(buf, sizeof buf, "%s", v);
  for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    if (n == BF_SEARCH_MAX_NETS) return bf_error(BF_EINVAL, "%s: select.networks: at most %d", where, n);
    if (bf_sel_network_builtin(tok, &c->nets[n]))
      return bf_error(BF_EINVAL, "%s: select.networks: unknown network '%s' (known: 3g, 4g, wifi)", where, tok);
    n++;
  }
  if (!n) return bf_error(BF_EINVAL, "%s: select.networks: empty list", where);
  c->n_nets = n;
  return 0;
}

static int set_path(char *dst, size_t cap, const char *v, const char *key, const char *where) {
  if (strlen(v) >= cap) return bf_error(BF_EINVAL, "%s: %s: path too long", where, key);
  snprintf(dst, cap, "%s", v);
  return 0;
}

int bf_search_config_set(bf_search_config *c, const char *key, const char *v, const char *where) {
  if (!strcmp(key, "search.dir")) return set_path(c->dir, sizeof c->dir, v, key, where);
  if (!strcmp(key, "search.train_config")) return set_path(c->train_config, sizeof c->train_config, v, key, where);
  if (!strcmp(key, "search.baseline")) return set_path(c->baseline, sizeof c->baseline, v, key, where);
  if (!strcmp(key, "search.baseline_epochs")) return parse_int(v, 0, 100000, &c->baseline_epochs, key, where);
  if (!strcmp(key, "search.tolerance")) return parse_double(v, 0, 100, &c->tolerance, key, where);
  if (!strcmp(key, "search.splits")) return parse_splits(c, v, where);
  if (!strcmp(key, "search.dr_min")) return parse_int(v, 1, 2048, &c->dr_min, key, where);
  if (!strcmp(key, "search.dr_max")) return parse_int(v, 0, 2048, &c->dr_max, key, where);
  if (!strcmp(key, "search.max_trainings")) return parse_int(v, 0, 1000000, &c->max_trainings, key, where);
  if (!strcmp(key, "search.jobs")) return parse_int(v, 1, 256, &c->jobs, key, where);
  if (!strcmp(key, "search.keep")) {
    if (!strcmp(v, "last")) c->keep_all = 0;
    else if (!strcmp(v, "all")) c->keep_all = 1;
    else return bf_error(BF_EINVAL, "%s: search.keep: '%s' is not last | all", where, v);
    return 0;
  }
  if (!strcmp(key, "slurm.partition")) return set_path(c->slurm_partition, sizeof c->slurm_partition, v, key, where);
  if (!strcmp(key, "slurm.time")) return set_path(c->slurm_time, sizeof c->slurm_time, v, key, where);
  if (!strcmp(key, "slurm.account")) return set_path(c->slurm_account, sizeof c->slurm_account, v, key, where);
  if (!strcmp(key, "slurm.mem")) return set_path(c->slurm_mem, sizeof c->slurm_mem, v, key, where);
  if (!strcmp(key, "slurm.extra")) return set_path(c->slurm_extra, sizeof c->slurm_extra, v, key, where);
  if (!strcmp(key, "slurm.cpus_per_task")) return parse_int(v, 0, 4096, &c->slurm_cpus, key, where);
  if (!strcmp(key, "slurm.gpus_per_task")) return parse_int(v, -1, 64, &c->slurm_gpus, key, where);
  if (!strcmp(key, "search.strategy")) {
    if (!strcmp(v, "linear")) c->strategy = 0;
    else if (!strcmp(v, "bisect")) c->strategy = 1;
    else return bf_error(BF_EINVAL, "%s: search.strategy: unknown strategy '%s' (linear | bisect)", where, v);
    return 0;
  }
  if (!strcmp(key, "search.init")) {
    if (!strcmp(v, "scratch")) c->init_baseline = 0;
    else if (!strcmp(v, "baseline")) c->init_baseline = 1;
    else return bf_error(BF_EINVAL, "%s: search.init: '%s' is not scratch | baseline", where, v);
    return 0;
  }
  if (!strcmp(key, "profile.device_threads")) return parse_int(v, 1, 1024, &c->device_threads, key, where);
  if (!strcmp(key, "profile.server_threads")) return parse_int(v, 1, 1024, &c->server_threads, key, where);
  if (!strcmp(key, "profile.warmup")) return parse_int(v, 0, 1000, &c->prof_warmup, key, where);
  if (!strcmp(key, "profile.runs")) return parse_int(v, 1, 10000, &c->prof_runs, key, where);
  if (!strcmp(key, "profile.input_size")) return parse_int(v, 0, 4096, &c->prof_input_size, key, where);
  if (!strcmp(key, "select.networks")) return parse_networks(c, v, where);
  if (!strcmp(key, "select.p_mobile_mw")) return parse_double(v, 0, 1e7, &c->load.p_mobile_mw, key, where);
  if (!strcmp(key, "select.k_mobile")) return parse_double(v, 0, 0.999999, &c->load.k_mobile, key, where);
  if (!strcmp(key, "select.k_cloud")) return parse_double(v, 0, 0.999999, &c->load.k_cloud, key, where);
  if (!strncmp(key, "search.", 7) || !strncmp(key, "profile.", 8) || !strncmp(key, "select.", 7) ||
      !strncmp(key, "slurm.", 6))
    return bf_error(BF_EINVAL, "%s: unknown key '%s' (bf-search --help lists the keys)", where, key);
  int cand = !strncmp(key, "candidate.", 10);
  if (cand) key += 10;
  if (!bf_train_config_has_key(key))
    return bf_error(BF_EINVAL, "%s: unknown key '%s%s' (neither a bf-search nor a bf-train key)", where,
                    cand ? "candidate." : "", key);
  if (c->n_ovr == BF_SEARCH_MAX_OVR) return bf_error(BF_EINVAL, "%s: too many training keys", where);
  c->ovr_cand[c->n_ovr] = cand;
  c->ovr_key[c->n_ovr] = strdup(key);
  c->ovr_val[c->n_ovr] = strdup(v);
  c->ovr_where[c->n_ovr] = strdup(where);
  if (!c->ovr_key[c->n_ovr] || !c->ovr_val[c->n_ovr] || !c->ovr_where[c->n_ovr]) return bf_error(BF_ENOMEM, "strdup");
  c->n_ovr++;
  return 0;
}

typedef struct ini_ctx {
  bf_search_config *c;
  const char *path;
  int rc;
  char msg[1024];
} ini_ctx;

static int ini_cb(void *user, const char *section, const char *name, const char *value) {
  ini_ctx *x = user;
  if (x->rc) return 0;
  char key[256];
  if (section && *section) snprintf(key, sizeof key, "%s.%s", section, name);
  else snprintf(key, sizeof key, "%s", name);
  /* "@" is replaced by FILE:LINE once inih reports the line; training keys
   * are checked later and keep the file name */
  int fwd = !(strncmp(key, "search.", 7) == 0 || strncmp(key, "profile.", 8) == 0 ||
              strncmp(key, "select.", 7) == 0 || strncmp(key, "slurm.", 6) == 0);
  int rc = bf_search_config_set(x->c, key, value, fwd ? x->path : "@");
  if (rc) {
    x->rc = rc;
    const char *m = bf_last_error();
    if (!strncmp(m, "@: ", 3)) m += 3;
    snprintf(x->msg, sizeof x->msg, "%s", m);
    return 0;
  }
  return 1;
}

int bf_search_config_load(bf_search_config *c, const char *path) {
  FILE *fp = fopen(path, "r");
  if (!fp) return bf_error(BF_EIO, "%s: cannot open the config file", path);
  ini_ctx x = {c, path, 0, {0}};
  int e = ini_parse_file(fp, ini_cb, &x);
  fclose(fp);
  if (x.rc) return bf_error(x.rc, "%s:%d: %s", path, e, x.msg);
  if (e > 0) return bf_error(BF_EINVAL, "%s:%d: INI syntax error", path, e);
  if (e < 0) return bf_error(BF_EIO, "%s: cannot read the config file", path);
  return 0;
}

int bf_search_config_finish(bf_search_config *c) {
  bf_train_config_defaults(&c->train);
  if (c->train_config[0]) {
    int rc = bf_train_config_load(&c->train, c->train_config);
    if (rc) return bf_error_wrap(rc, "search.train_config");
  }
  for (int i = 0; i < c->n_ovr; i++)
    if (!c->ovr_cand[i]) BF_TRY(bf_train_config_set(&c->train, c->ovr_key[i], c->ovr_val[i], c->ovr_where[i]));
  /* [candidate] keys apply on top, to the butterfly trainings only */
  c->cand = c->train;
  for (int i = 0; i < c->n_ovr; i++)
    if (c->ovr_cand[i]) {
      int rc = bf_train_config_set(&c->cand, c->ovr_key[i], c->ovr_val[i], c->ovr_where[i]);
      if (rc) return bf_error_wrap(rc, "candidate.%s", c->ovr_key[i]);
    }
  if (!c->dir[0]) return bf_error(BF_EINVAL, "search.dir: empty");
  if (c->dr_max && c->dr_min > c->dr_max)
    return bf_error(BF_EINVAL, "search.dr_min/search.dr_max: empty D_r range (dr_min %d > dr_max %d)", c->dr_min,
                    c->dr_max);
  for (int i = 0; i < c->n_splits; i++) {
    int ch = bf_rb_channels(c->splits[i]);
    int hi = c->dr_max ? c->dr_max : ch;
    if (c->dr_min > hi)
      return bf_error(BF_EINVAL, "search.dr_min: %d exceeds the %d channels of RB%d", c->dr_min, ch, c->splits[i]);
    if (hi > ch)
      return bf_error(BF_EINVAL, "search.dr_max: %d exceeds the %d channels of RB%d", hi, ch, c->splits[i]);
  }
  for (int i = 0; i < c->n_nets; i++) BF_TRY(bf_sel_check(&c->nets[i], &c->load));
  /* #SBATCH values: one word each (they end up on an #SBATCH line) */
  const char *vals[] = {c->slurm_partition, c->slurm_time, c->slurm_account, c->slurm_mem};
  const char *keys[] = {"slurm.partition", "slurm.time", "slurm.account", "slurm.mem"};
  for (int i = 0; i < 4; i++)
    for (const char *q = vals[i]; *q; q++)
      if (isspace((unsigned char)*q)) return bf_error(BF_EINVAL, "%s: '%s' contains blanks", keys[i], vals[i]);
  for (const char *q = c->slurm_extra; *q; q++)
    if (*q == '\n' || *q == '\r') return bf_error(BF_EINVAL, "slurm.extra: contains a line break");
  /* the recipes must validate as the plain and the butterfly model */
  bf_train_config t = c->train;
  t.model_split_after = 0;
  t.model_d_r = 0;
  int rc = bf_train_config_validate(&t);
  if (rc) return bf_error_wrap(rc, "baseline training recipe");
  t = c->cand;
  t.model_split_after = c->splits[0];
  t.model_d_r = c->dr_min;
  rc = bf_train_config_validate(&t);
  if (rc) return bf_error_wrap(rc, "candidate training recipe");
  return 0;
}

void bf_search_config_print_help(FILE *fp) {
  fprintf(fp,
          "bf-search keys (INI [section] name = value, or --section.name VALUE):\n"
          "  search.dir             runs/search   search directory (state, runs, deploy, reports)\n"
          "  search.train_config    \"\"            bf-train recipe (INI); its keys can also be given here\n"
          "  search.baseline        \"\"            existing plain run dir (result.json); \"\" = train one\n"
          "  search.baseline_epochs 0             epochs of the baseline training (0 = recipe)\n"
          "  search.tolerance       2             accuracy loss allowed vs the baseline, points\n"
          "  search.splits          1-16          split points (RBk), e.g. 1,4,8-10\n"
          "  search.dr_min          1             smallest D_r\n"
          "  search.dr_max          0             largest D_r (0 = channels of RBk)\n"
          "  search.strategy        linear        linear | bisect (assumes accuracy monotone in D_r)\n"
          "  search.init            scratch       scratch | baseline (warm start from the baseline)\n"
          "  search.max_trainings   0             stop after N new trainings (0 = no limit); rerun resumes\n"
          "  search.jobs            1             trainings at once (subprocesses; split points in parallel)\n"
          "  search.keep            last          last: a finished candidate keeps last.safetensors only | all\n"
          "  profile.device_threads 1             CPU threads for the device half / mobile-only\n"
          "  profile.server_threads 2             CPU threads for the server half / cloud-only\n"
          "  profile.warmup         2             untimed runs\n"
          "  profile.runs           7             timed runs (median)\n"
          "  profile.input_size     0             input size (0 = the model's training size)\n"
          "  select.networks        3g,4g,wifi    Table III networks\n"
          "  select.p_mobile_mw     3000          device compute power, mW (assumption, see docs)\n"
          "  select.k_mobile        0             device load level in [0, 1): times / (1 - K)\n"
          "  select.k_cloud         0             server load level in [0, 1)\n"
          "  slurm.partition/time/account/mem  \"\"  #SBATCH options of --emit-slurm (omitted when empty)\n"
          "  slurm.cpus_per_task    0             0 = the recipe's threads\n"
          "  slurm.gpus_per_task    -1            -1 = 1 with the cuda backend, else 0\n"
          "  slurm.extra            \"\"            more sbatch options, ';'-separated (e.g. --qos=long;--exclusive)\n"
          "Any bf-train key (data.root, train.epochs, ...) is forwarded to every training;\n"
          "in section [candidate] (or --candidate.KEY) to the butterfly trainings only,\n"
          "e.g. a lower train.lr for warm-started fine-tunes.\n");
}

/* ----------------------------------------------------------------- state */

/* search.jsonl in memory. Only the driver (bf_search_run, --emit-slurm)
 * writes the file; trainings in subprocesses and Slurm tasks write only their
 * run directory, whose result.json the driver adopts. */
typedef struct state {
  bf_search_entry *e;
  unsigned char *seen; /* reported in this session's log */
  int n, cap;
  char path[BF_TRAIN_PATH_MAX + 32];
} state;

static int state_add(state *s, const bf_search_entry *e) {
  if (s->n == s->cap) {
    int nc = s->cap ? 2 * s->cap : 32;
    bf_search_entry *ne = realloc(s->e, (size_t)nc * sizeof *ne);
    if (!ne) return bf_error(BF_ENOMEM, "search state");
    s->e = ne;
    unsigned char *ns = realloc(s->seen, (size_t)nc);
    if (!ns) return bf_error(BF_ENOMEM, "search state");
    s->seen = ns;
    s->cap = nc;
  }
  s->seen[s->n] = 0;
  s->e[s->n++] = *e;
  return 0;
}

static int state_find(const state *s, int split, int d_r) {
  for (int i = s->n - 1; i >= 0; i--)
    if (s->e[i].split == split && s->e[i].d_r == d_r) return i;
  return -1;
}

static void state_free(state *s) {
  free(s->e);
  free(s->seen);
  memset(s, 0, sizeof *s);
}

static int state_load(state *s) {
  FILE *fp = fopen(s->path, "r");
  if (!fp) return 0;
  char line[8192];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof line, fp)) {
    lineno++;
    size_t len = strlen(line);
    if (len && line[len - 1] != '\n' && !feof(fp)) {
      rc = bf_error(BF_EINVAL, "%s:%d: line too long", s->path, lineno);
      break;
    }
    if (len <= 1) continue;
    cJSON *j = cJSON_Parse(line);
    if (!j) {
      /* a torn last line (killed mid-write): ignore it, the training is redone */
      if (line[len - 1] != '\n') break;
      rc = bf_error(BF_EINVAL, "%s:%d: not JSON", s->path, lineno);
      break;
    }
    bf_search_entry e = {0};
    cJSON *sp = cJSON_GetObjectItem(j, "split"), *dr = cJSON_GetObjectItem(j, "d_r"),
          *t1 = cJSON_GetObjectItem(j, "top1"), *t5 = cJSON_GetObjectItem(j, "top5"),
          *rd = cJSON_GetObjectItem(j, "run_dir"), *se = cJSON_GetObjectItem(j, "seconds");
    if (!cJSON_IsNumber(sp) || !cJSON_IsNumber(dr) || !cJSON_IsNumber(t1) || !cJSON_IsString(rd)) {
      cJSON_Delete(j);
      rc = bf_error(BF_EINVAL, "%s:%d: missing split/d_r/top1/run_dir", s->path, lineno);
      break;
    }
    e.split = sp->valueint;
    e.d_r = dr->valueint;
    e.top1 = t1->valuedouble;
    e.top5 = cJSON_IsNumber(t5) ? t5->valuedouble : -1;
    e.seconds = cJSON_IsNumber(se) ? se->valuedouble : 0;
    snprintf(e.run_dir, sizeof e.run_dir, "%s", rd->valuestring);
    cJSON_Delete(j);
    if ((rc = state_add(s, &e))) break;
  }
  fclose(fp);
  return rc;
}

/* -------------------------------------------------------------- training */

static int pathf(char *dst, size_t cap, const char *fmt, ...) BF_PRINTF(3, 4);
static int pathf(char *dst, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap) return bf_error(BF_EINVAL, "search.dir: path too long");
  return 0;
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

static int read_result(const char *run_dir, double *top1, double *top5, double *secs) {
  char p[BF_TRAIN_PATH_MAX + 32];
  snprintf(p, sizeof p, "%s/result.json", run_dir);
  uint8_t *buf = NULL;
  size_t len = 0;
  BF_TRY(bf_read_file(p, &buf, &len));
  cJSON *j = cJSON_ParseWithLength((const char *)buf, len);
  free(buf);
  if (!j) return bf_error(BF_EINVAL, "%s: not JSON", p);
  cJSON *t1 = cJSON_GetObjectItem(j, "top1"), *t5 = cJSON_GetObjectItem(j, "top5"),
        *ts = cJSON_GetObjectItem(j, "train_time_sec");
  int rc = 0;
  if (!cJSON_IsNumber(t1)) rc = bf_error(BF_EINVAL, "%s: no top1", p);
  else {
    *top1 = t1->valuedouble;
    *top5 = cJSON_IsNumber(t5) ? t5->valuedouble : -1;
    *secs = cJSON_IsNumber(ts) ? ts->valuedouble : 0;
  }
  cJSON_Delete(j);
  return rc;
}

static void task_name(int split, int d_r, char *buf, size_t cap) {
  if (split) snprintf(buf, cap, "k%d_dr%d", split, d_r);
  else snprintf(buf, cap, "baseline");
}

static void task_label(int split, int d_r, char *buf, size_t cap) {
  if (split) snprintf(buf, cap, "RB%d D_r %d", split, d_r);
  else snprintf(buf, cap, "baseline");
}

/* The baseline's run dir and the warm-start weights (best, else last). */
static int baseline_paths(const bf_search_config *c, char *dir, size_t dcap, char *init, size_t icap) {
  if (c->baseline[0]) BF_TRY(pathf(dir, dcap, "%s", c->baseline));
  else BF_TRY(pathf(dir, dcap, "%s/runs/baseline", c->dir));
  BF_TRY(pathf(init, icap, "%s/best.safetensors", dir));
  if (!file_exists(init)) BF_TRY(pathf(init, icap, "%s/last.safetensors", dir));
  return 0;
}

/* The bf-train config of one training of the search. */
static int training_config(const bf_search_config *c, int split, int d_r, bf_train_config *t) {
  char name[64];
  task_name(split, d_r, name, sizeof name);
  if (split == 0) {
    *t = c->train;
    t->model_split_after = 0;
    t->model_d_r = 0;
    if (c->baseline_epochs > 0) t->epochs = c->baseline_epochs;
  } else {
    *t = c->cand;
    t->model_split_after = split;
    t->model_d_r = d_r;
    if (c->init_baseline) {
      char bdir[BF_TRAIN_PATH_MAX + 32];
      BF_TRY(baseline_paths(c, bdir, sizeof bdir, t->init, sizeof t->init));
      if (!file_exists(t->init))
        return bf_error(BF_EINVAL, "search.init = baseline: no best/last.safetensors in %s (the baseline must finish first)",
                        bdir);
    }
  }
  BF_TRY(pathf(t->run_dir, sizeof t->run_dir, "%s/runs/%s", c->dir, name));
  snprintf(t->name, sizeof t->name, "%s", name);
  return 0;
}

static int result_exists(const bf_search_config *c, int split, int d_r) {
  char name[64], p[BF_TRAIN_PATH_MAX + 96];
  task_name(split, d_r, name, sizeof name);
  snprintf(p, sizeof p, "%s/runs/%s/result.json", c->dir, name);
  return file_exists(p);
}

/* Trains in this process (resuming the run's checkpoint if there is one).
 * Returns BF_SEARCH_STOPPED when stopped. */
static int train_inproc(const bf_search_config *c, int split, int d_r, volatile sig_atomic_t *stop, FILE *log,
                        bf_train_result *r, double *secs) {
  bf_train_config t;
  BF_TRY(training_config(c, split, d_r, &t));
  BF_TRY(bf_train_config_validate(&t));
  bf_train_options o;
  bf_train_options_init(&o);
  o.quiet = 1;
  o.progress = 0;
  o.stop = stop;
  char p[BF_TRAIN_PATH_MAX + 32], ls[BF_TRAIN_PATH_MAX + 64], what[64];
  snprintf(p, sizeof p, "%s/last.safetensors", t.run_dir);
  snprintf(ls, sizeof ls, "%s/last.state.safetensors", t.run_dir);
  if (file_exists(p) && file_exists(ls)) o.resume = 1;
  else o.force = 1;
  task_label(split, d_r, what, sizeof what);
  fprintf(log, "bf-search: %s: training %s%s\n", what, t.run_dir, o.resume ? " (resuming its checkpoint)" : "");
  fflush(log);
  double t0 = bf_now_sec();
  int rc = bf_train_run(&t, &o, r);
  if (rc) return bf_error_wrap(rc, "training %s", t.run_dir);
  if (r->stopped || !r->completed) return BF_SEARCH_STOPPED;
  *secs = bf_now_sec() - t0;
  fprintf(log, "bf-search: %s: top1 %.2f%% top%d %.2f%% (%.1f s)\n", what, 100 * r->top1, r->topk, 100 * r->top5,
          *secs);
  return 0;
}

int bf_search_parse_task(const char *s, int *split, int *d_r) {
  if (!strcmp(s, "baseline") || !strcmp(s, "0:0")) {
    *split = *d_r = 0;
    return 0;
  }
  char *e1, *e2;
  long k = strtol(s, &e1, 10);
  if (e1 == s || *e1 != ':') return bf_error(BF_EINVAL, "--train-one: '%s' is not K:D_R or baseline", s);
  long r = strtol(e1 + 1, &e2, 10);
  if (e2 == e1 + 1 || *e2 || k < 1 || k > 16 || r < 1 || r > 2048)
    return bf_error(BF_EINVAL, "--train-one: '%s' is not K:D_R with K in 1..16 and D_R >= 1", s);
  *split = (int)k;
  *d_r = (int)r;
  return 0;
}

int bf_search_check_task(const bf_search_config *c, int split, int d_r) {
  if (split) {
    int ok = 0;
    for (int i = 0; i < c->n_splits; i++) ok |= c->splits[i] == split;
    int hi = c->dr_max ? c->dr_max : bf_rb_channels(split);
    if (!ok) return bf_error(BF_EINVAL, "--train-one: RB%d is not in search.splits", split);
    if (d_r < c->dr_min || d_r > hi)
      return bf_error(BF_EINVAL, "--train-one: D_r %d outside the search's range %d..%d", d_r, c->dr_min, hi);
  } else if (c->baseline[0])
    return bf_error(BF_EINVAL, "--train-one baseline: search.baseline is given (%s), nothing to train", c->baseline);
  return 0;
}

int bf_search_train_one(bf_search_config *c, int split, int d_r, volatile sig_atomic_t *stop, FILE *log) {
  BF_TRY(bf_search_check_task(c, split, d_r));
  char what[64];
  task_label(split, d_r, what, sizeof what);
  if (result_exists(c, split, d_r)) {
    fprintf(log, "bf-search: %s: finished before (result.json in its run dir), nothing to do\n", what);
    return 0;
  }
  bf_train_result r;
  double secs;
  return train_inproc(c, split, d_r, stop, log, &r, &secs);
}

/* ------------------------------------------------------------- scheduler */

#define MAX_JOBS 256

typedef struct job {
  pid_t pid; /* 0: slot free */
  int split, d_r, slot;
  double t0;
  char log[BF_TRAIN_PATH_MAX + 64];
} job;

typedef struct search {
  bf_search_config *c;
  volatile sig_atomic_t *stop;
  FILE *log;
  state st;
  int new_trainings; /* finished in this session */
  int launched;      /* started in this session */
  double train_secs; /* wall time of the trainings finished in this session */
  double t_start;
  /* --jobs */
  job jobs[MAX_JOBS];
  int n_running, forwarded_stop;
  int halt; /* a subprocess stopped or failed: start nothing new */
  char exe[BF_TRAIN_PATH_MAX];
  char gpus[16][32];
  int n_gpus;
  int child_threads, child_data_threads;
} search;

static int state_append(state *s, const bf_search_entry *e) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return bf_error(BF_ENOMEM, "search state line");
  cJSON_AddStringToObject(j, "kind", e->split ? "candidate" : "baseline");
  cJSON_AddNumberToObject(j, "split", e->split);
  cJSON_AddNumberToObject(j, "d_r", e->d_r);
  cJSON_AddNumberToObject(j, "top1", e->top1);
  cJSON_AddNumberToObject(j, "top5", e->top5);
  cJSON_AddStringToObject(j, "run_dir", e->run_dir);
  cJSON_AddNumberToObject(j, "seconds", e->seconds);
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!txt) return bf_error(BF_ENOMEM, "search state line");
  FILE *fp = fopen(s->path, "a");
  int rc = 0;
  if (!fp) rc = bf_error(BF_EIO, "%s: cannot open for appending", s->path);
  else {
    if (fprintf(fp, "%s\n", txt) < 0 || fflush(fp) || fsync(fileno(fp)))
      rc = bf_error(BF_EIO, "%s: write failed", s->path);
    if (fclose(fp) && !rc) rc = bf_error(BF_EIO, "%s: close failed", s->path);
  }
  free(txt);
  if (!rc) rc = state_add(s, e);
  if (!rc) s->seen[s->n - 1] = 1;
  return rc;
}

/* A recorded candidate needs only its final weights (profiling, export):
 * its optimizer state (resume) and best.safetensors (the search uses the
 * last epoch) are 2/3 of its 280 MB. The baseline keeps all (warm start). */
static int prune(const bf_search_config *c, const bf_search_entry *e) {
  if (c->keep_all || !e->split) return 0;
  static const char *const names[] = {"last.state.safetensors", "best.safetensors"};
  for (int i = 0; i < 2; i++) {
    char p[BF_TRAIN_PATH_MAX + 64];
    BF_TRY(pathf(p, sizeof p, "%s/%s", e->run_dir, names[i]));
    if (unlink(p) && errno != ENOENT) return bf_error(BF_EIO, "%s: cannot remove (search.keep = last)", p);
  }
  return 0;
}

/* Records a finished run directory (its result.json) in search.jsonl. */
static int adopt(search *s, int split, int d_r, double secs, bf_search_entry *e) {
  char name[64];
  task_name(split, d_r, name, sizeof name);
  memset(e, 0, sizeof *e);
  e->split = split;
  e->d_r = d_r;
  BF_TRY(pathf(e->run_dir, sizeof e->run_dir, "%s/runs/%s", s->c->dir, name));
  BF_TRY(read_result(e->run_dir, &e->top1, &e->top5, &e->seconds));
  if (secs > 0) e->seconds = secs;
  /* prune first: killed in between, the run is adopted again */
  BF_TRY(prune(s->c, e));
  return state_append(&s->st, e);
}

/* Is (split, d_r) finished? 1 (and *e) from the state or a finished run dir
 * not yet recorded (a subprocess / Slurm task, or a driver killed between the
 * training's end and its state line), 0 if not, < 0 on error. */
static int lookup(search *s, int split, int d_r, bf_search_entry *e) {
  char what[64];
  task_label(split, d_r, what, sizeof what);
  int i = state_find(&s->st, split, d_r);
  if (i >= 0) {
    *e = s->st.e[i];
    if (!s->st.seen[i]) {
      BF_TRY(prune(s->c, e)); /* recorded by an older version */
      s->st.seen[i] = 1;
      fprintf(s->log, "bf-search: %s: done before (search.jsonl): top1 %.2f%%\n", what, 100 * e->top1);
    }
    return 1;
  }
  if (!result_exists(s->c, split, d_r)) return 0;
  BF_TRY(adopt(s, split, d_r, 0, e));
  fprintf(s->log, "bf-search: %s: finished run found in %s: top1 %.2f%%\n", what, e->run_dir, 100 * e->top1);
  return 1;
}

static int accepted(const bf_search_entry *e, double target) { return 100.0 * e->top1 >= 100.0 * target - 1e-9; }

static int bisect_steps(int n) { /* worst-case trainings of a bisection over n values */
  int b = 0;
  while (n > 0) b++, n /= 2;
  return b;
}

/* Replays split point i's D_r search over the finished trainings. Returns 0
 * when it is decided (*ch filled), 1 when D_r *next must be trained next
 * (*left_worst = most trainings still possible), < 0 on error. */
static int split_next(search *s, int i, double target, bf_search_choice *ch, int *next, int *left_worst) {
  const bf_search_config *c = s->c;
  int k = c->splits[i];
  int lo = c->dr_min, hi = c->dr_max ? c->dr_max : bf_rb_channels(k);
  ch->split = k;
  ch->d_r = -1;
  ch->top1 = 0;
  ch->run_dir[0] = 0;
  bf_search_entry e;
  while (lo <= hi) {
    int r = c->strategy == 0 ? lo : lo + (hi - lo) / 2;
    int rc = lookup(s, k, r, &e);
    if (rc < 0) return rc;
    if (!rc) {
      *next = r;
      *left_worst = c->strategy == 0 ? hi - lo + 1 : bisect_steps(hi - lo + 1);
      return 1;
    }
    if (accepted(&e, target)) {
      ch->d_r = r;
      ch->top1 = e.top1;
      snprintf(ch->run_dir, sizeof ch->run_dir, "%s", e.run_dir);
      if (c->strategy == 0) return 0;
      hi = r - 1;
    } else lo = r + 1;
  }
  return 0;
}

static int trainings_for(const search *s, int split) {
  int n = 0;
  for (int i = 0; i < s->st.n; i++) n += s->st.e[i].split == split;
  return n;
}

/* Progress: what runs, how many trainings are done and (estimated) left, ETA. */
static void progress(search *s, const int *decided, const int *left_worst, const char *now) {
  const bf_search_config *c = s->c;
  int n_dec = 0, sum_dec = 0, undecided = 0, left = 0;
  for (int i = 0; i < c->n_splits; i++)
    if (decided[i]) n_dec++, sum_dec += trainings_for(s, c->splits[i]);
  for (int i = 0; i < c->n_splits; i++) {
    if (decided[i]) continue;
    undecided++;
    int est = left_worst[i];
    /* linear: as many as the decided split points needed on average */
    if (c->strategy == 0) {
      int done_here = trainings_for(s, c->splits[i]);
      int avg = n_dec ? (sum_dec + n_dec - 1) / n_dec : (left_worst[i] + 1) / 2;
      est = avg > done_here ? avg - done_here : 1;
      if (est > left_worst[i]) est = left_worst[i];
    }
    left += est > 0 ? est : 1;
  }
  double per = s->new_trainings ? s->train_secs / s->new_trainings : 0;
  if (!per) {
    double sum = 0;
    int n = 0;
    for (int j = 0; j < s->st.n; j++)
      if (s->st.e[j].split && s->st.e[j].seconds > 0) sum += s->st.e[j].seconds, n++;
    per = n ? sum / n : 0;
  }
  int par = c->jobs < undecided ? c->jobs : undecided;
  char eta[32];
  if (per > 0 && par > 0) {
    /* split points run in parallel, each one's trainings in sequence */
    long sec = (long)(per * left / par + 0.5);
    snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", sec / 3600, sec / 60 % 60, sec % 60);
  } else snprintf(eta, sizeof eta, "unknown");
  fprintf(s->log, "bf-search: [%s; split points decided %d/%d] trainings done %d, ~%d left, ETA %s\n", now, n_dec,
          c->n_splits, s->st.n, left, eta);
  fflush(s->log);
}

/* --jobs: subprocesses `bf-search ARGS --train-one K:R`, output to
 * DIR/logs/<name>.log; the driver records their results. */
static int jobs_init(search *s) {
  const bf_search_config *c = s->c;
  if (!c->argv) return bf_error(BF_EINVAL, "search.jobs > 1: needs the bf-search command line (library use: set argv)");
  ssize_t n = readlink("/proc/self/exe", s->exe, sizeof s->exe - 1);
  if (n <= 0 || (size_t)n >= sizeof s->exe - 1) return bf_error(BF_EIO, "/proc/self/exe: cannot resolve");
  s->exe[n] = 0;
  char p[BF_TRAIN_PATH_MAX + 16];
  BF_TRY(pathf(p, sizeof p, "%s/logs", c->dir));
  BF_TRY(bf_mkdirs(p));
  if (!strcmp(c->cand.backend, "cuda")) {
    /* one GPU per training: the visible ones, in turn */
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (v && *v) {
      char buf[512];
      snprintf(buf, sizeof buf, "%s", v);
      for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t && s->n_gpus < 16; t = strtok_r(NULL, ",", &sv))
        snprintf(s->gpus[s->n_gpus++], sizeof s->gpus[0], "%s", t);
    } else {
      int count = 0;
      BF_TRY(bf_backend_device_count("cuda", &count));
      for (int i = 0; i < count && i < 16; i++) snprintf(s->gpus[s->n_gpus++], sizeof s->gpus[0], "%d", i);
    }
    if (!s->n_gpus) return bf_error(BF_EBACKEND, "search.jobs: backend cuda but no GPU visible");
    fprintf(s->log, "bf-search: %d trainings at once over %d GPU(s)%s\n", c->jobs, s->n_gpus,
            c->jobs > s->n_gpus ? " (some share a GPU)" : "");
  } else {
    /* CPU: the cores are shared out between the trainings */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int total = c->cand.threads > 0 ? c->cand.threads : (int)(ncpu > 0 ? ncpu : 1);
    int dtotal = c->cand.data_threads > 0 ? c->cand.data_threads : (int)(ncpu > 0 ? ncpu : 1);
    s->child_threads = total / c->jobs > 0 ? total / c->jobs : 1;
    s->child_data_threads = dtotal / c->jobs > 0 ? dtotal / c->jobs : 1;
    fprintf(s->log, "bf-search: %d trainings at once, %d compute + %d decoder threads each\n", c->jobs,
            s->child_threads, s->child_data_threads);
  }
  return 0;
}

static int spawn(search *s, int split, int d_r) {
  const bf_search_config *c = s->c;
  int slot = 0;
  while (slot < c->jobs && s->jobs[slot].pid) slot++;
  if (slot == c->jobs) return bf_error(BF_EINVAL, "search: no free job slot");
  job *j = &s->jobs[slot];
  char name[64], task[32], th[16], dth[16], gpu_env[64];
  task_name(split, d_r, name, sizeof name);
  snprintf(task, sizeof task, "%d:%d", split, d_r);
  BF_TRY(pathf(j->log, sizeof j->log, "%s/logs/%s.log", c->dir, name));
  /* argv: exe ARGS --train-one K:R [--threads T --data.threads T] */
  char **av = calloc((size_t)c->argc + 8, sizeof *av);
  if (!av) return bf_error(BF_ENOMEM, "spawn");
  int n = 0;
  av[n++] = s->exe;
  for (int i = 0; i < c->argc; i++) av[n++] = c->argv[i];
  av[n++] = "--train-one";
  av[n++] = task;
  if (s->child_threads) {
    snprintf(th, sizeof th, "%d", s->child_threads);
    snprintf(dth, sizeof dth, "%d", s->child_data_threads);
    av[n++] = "--threads";
    av[n++] = th;
    av[n++] = "--data.threads";
    av[n++] = dth;
  }
  av[n] = NULL;
  /* environment: ours, with CUDA_VISIBLE_DEVICES set to this slot's GPU */
  extern char **environ;
  int ne = 0;
  while (environ[ne]) ne++;
  char **ev = calloc((size_t)ne + 2, sizeof *ev);
  if (!ev) {
    free(av);
    return bf_error(BF_ENOMEM, "spawn");
  }
  int m = 0;
  for (int i = 0; i < ne; i++)
    if (!s->n_gpus || strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21)) ev[m++] = environ[i];
  if (s->n_gpus) {
    snprintf(gpu_env, sizeof gpu_env, "CUDA_VISIBLE_DEVICES=%s", s->gpus[slot % s->n_gpus]);
    ev[m++] = gpu_env;
  }
  ev[m] = NULL;
  int rc = 0;
  int fd = open(j->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || nul < 0) rc = bf_error(BF_EIO, "%s: cannot open the training log", j->log);
  fflush(NULL);
  pid_t parent = getpid();
  pid_t pid = rc ? -1 : fork();
  if (pid == 0) {
    /* only async-signal-safe calls between fork and exec. A driver that
     * dies (kill -9) takes its trainings down with a SIGTERM (they
     * checkpoint), so a rerun never trains beside an orphan in one run dir. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(3);
    dup2(nul, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execve(s->exe, av, ev);
    _exit(127);
  }
  if (!rc && pid < 0) rc = bf_error(BF_EIO, "fork failed");
  if (fd >= 0) close(fd);
  if (nul >= 0) close(nul);
  free(av);
  free(ev);
  if (rc) return rc;
  j->pid = pid;
  j->split = split;
  j->d_r = d_r;
  j->slot = slot;
  j->t0 = bf_now_sec();
  s->n_running++;
  s->launched++;
  char what[64];
  task_label(split, d_r, what, sizeof what);
  fprintf(s->log, "bf-search: %s: training %s/runs/%s in a subprocess (pid %d%s%s, log %s)\n", what, c->dir, name,
          (int)pid, s->n_gpus ? ", GPU " : "", s->n_gpus ? s->gpus[slot % s->n_gpus] : "", j->log);
  fflush(s->log);
  return 0;
}

static void stop_children(search *s) {
  if (s->forwarded_stop) return;
  s->forwarded_stop = 1;
  /* the trainings checkpoint and exit; a rerun resumes them */
  for (int i = 0; i < MAX_JOBS; i++)
    if (s->jobs[i].pid) kill(s->jobs[i].pid, SIGTERM);
}

/* Waits for one subprocess. Returns 0 when it finished its training (result
 * recorded), BF_SEARCH_STOPPED when it was stopped, < 0 when it failed. */
static int wait_one(search *s, int *split_out) {
  for (;;) {
    if (s->stop && *s->stop) stop_children(s);
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid < 0 && errno != EINTR) return bf_error(BF_EIO, "waitpid failed");
    if (pid <= 0) {
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    job *j = NULL;
    for (int i = 0; i < MAX_JOBS; i++)
      if (s->jobs[i].pid == pid) j = &s->jobs[i];
    if (!j) continue;
    j->pid = 0;
    s->n_running--;
    *split_out = j->split;
    char what[64];
    task_label(j->split, j->d_r, what, sizeof what);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (code == 0 && result_exists(s->c, j->split, j->d_r)) {
      double dt = bf_now_sec() - j->t0;
      bf_search_entry e;
      BF_TRY(adopt(s, j->split, j->d_r, dt, &e));
      s->new_trainings++;
      s->train_secs += dt;
      fprintf(s->log, "bf-search: %s: top1 %.2f%% (%.1f s)\n", what, 100 * e.top1, dt);
      return 0;
    }
    s->halt = 1;
    if (code == 0 || code == 3) {
      fprintf(s->log, "bf-search: %s: stopped (its checkpoint is resumed by a rerun)\n", what);
      return BF_SEARCH_STOPPED;
    }
    if (WIFSIGNALED(st))
      return bf_error(BF_EIO, "%s: the training subprocess died of signal %d; its output is in %s", what,
                      WTERMSIG(st), j->log);
    return bf_error(BF_EIO, "%s: the training subprocess failed (exit %d); its output is in %s", what, code, j->log);
  }
}

static int may_launch(const search *s) {
  if (s->halt || (s->stop && *s->stop)) return 0;
  if (s->c->max_trainings > 0 && s->launched >= s->c->max_trainings) return 0;
  return 1;
}

/* Runs (split, d_r): in this process with jobs = 1 (0, or STOPPED), else
 * starts a subprocess and returns 0 at once. */
static int start_training(search *s, int split, int d_r) {
  if (s->c->jobs > 1) return spawn(s, split, d_r);
  bf_train_result r;
  double secs;
  s->launched++;
  BF_TRY(train_inproc(s->c, split, d_r, s->stop, s->log, &r, &secs));
  s->new_trainings++;
  s->train_secs += secs;
  /* recorded from its result.json, as a subprocess's training is */
  bf_search_entry e;
  return adopt(s, split, d_r, secs, &e);
}

/* Waits for every running subprocess; keeps the first error. */
static int drain(search *s, int rc) {
  while (s->n_running) {
    int sp;
    int r = wait_one(s, &sp);
    if (r < 0) {
      if (rc >= 0) rc = r;
      else fprintf(s->log, "bf-search: error: %s\n", bf_last_error());
    } else if (r == BF_SEARCH_STOPPED && rc == 0)
      rc = BF_SEARCH_STOPPED;
  }
  return rc;
}

static int baseline_phase(search *s, double *top1, char *dir, size_t cap) {
  const bf_search_config *c = s->c;
  char init[BF_TRAIN_PATH_MAX + 64];
  BF_TRY(baseline_paths(c, dir, cap, init, sizeof init));
  if (c->baseline[0]) {
    double t5, secs;
    int rc = read_result(c->baseline, top1, &t5, &secs);
    if (rc) return bf_error_wrap(rc, "search.baseline");
    fprintf(s->log, "bf-search: baseline %s: top1 %.2f%%\n", c->baseline, 100 * *top1);
    return 0;
  }
  fprintf(s->log, "bf-search: baseline (plain ResNet-50, split_after 0)\n");
  bf_search_entry e;
  int rc = lookup(s, 0, 0, &e);
  if (rc < 0) return rc;
  if (!rc) {
    if (!may_launch(s)) return BF_SEARCH_STOPPED;
    BF_TRY(start_training(s, 0, 0));
    if (c->jobs > 1) BF_TRY(drain(s, 0));
    BF_TRY(lookup(s, 0, 0, &e) == 1 ? 0 : bf_error(BF_EIO, "baseline: no result after training"));
  }
  *top1 = e.top1;
  return 0;
}

/* The training phase: split points in parallel (up to search.jobs), each
 * one's D_r candidates in sequence (the next depends on the last result). */
static int training_phase(search *s, double target, bf_search_choice *choices) {
  const bf_search_config *c = s->c;
  int n = c->n_splits, rc = 0, stopped = 0;
  int decided[BF_SEARCH_MAX_SPLITS] = {0}, running[BF_SEARCH_MAX_SPLITS] = {0};
  int left_worst[BF_SEARCH_MAX_SPLITS] = {0};
  for (int i = 0; i < n; i++) {
    int range = (c->dr_max ? c->dr_max : bf_rb_channels(c->splits[i])) - c->dr_min + 1;
    left_worst[i] = c->strategy == 0 ? range : bisect_steps(range);
  }
  for (;;) {
    for (int i = 0; i < n && !rc; i++) {
      if (decided[i] || running[i]) continue;
      int next, r = split_next(s, i, target, &choices[i], &next, &left_worst[i]);
      if (r < 0) {
        rc = r;
        break;
      }
      if (r == 0) {
        decided[i] = 1;
        if (choices[i].d_r > 0)
          fprintf(s->log, "bf-search: RB%d: D_r %d reaches the target (top1 %.2f%%)\n", choices[i].split,
                  choices[i].d_r, 100 * choices[i].top1);
        else
          fprintf(s->log, "bf-search: RB%d: no D_r in range reaches the target; split point dropped\n",
                  choices[i].split);
        continue;
      }
      if (!may_launch(s)) {
        stopped = 1;
        continue;
      }
      if (s->n_running >= c->jobs) continue;
      char now[64];
      task_label(c->splits[i], next, now, sizeof now);
      if (c->strategy == 1) {
        /* the bisection interval, for the log */
        size_t l = strlen(now);
        snprintf(now + l, sizeof now - l, " (bisect, <= %d left)", left_worst[i]);
      }
      progress(s, decided, left_worst, now);
      r = start_training(s, c->splits[i], next);
      if (r == BF_SEARCH_STOPPED) {
        stopped = 1;
        break;
      }
      if (r < 0) {
        rc = r;
        break;
      }
      if (c->jobs > 1) running[i] = 1;
      else i--; /* in process: look at the same split point again */
    }
    if (rc || (stopped && !s->n_running)) break;
    if (!s->n_running) {
      int all = 1;
      for (int i = 0; i < n; i++) all &= decided[i];
      if (all) return 0;
      stopped = 1;
      break;
    }
    int sp;
    int r = wait_one(s, &sp);
    for (int i = 0; i < n; i++)
      if (c->splits[i] == sp) running[i] = 0;
    if (r == BF_SEARCH_STOPPED) stopped = 1;
    else if (r < 0) {
      rc = r;
      break;
    }
  }
  if (rc < 0 && s->n_running) {
    fprintf(s->log, "bf-search: error: %s\nbf-search: stopping the other trainings (checkpointed; a rerun resumes)\n",
            bf_last_error());
    stop_children(s);
  }
  rc = drain(s, rc);
  if (rc) return rc;
  return stopped ? BF_SEARCH_STOPPED : 0;
}

/* ---------------------------------------------------------------- driver */

static int search_open(search *s, bf_search_config *c, volatile sig_atomic_t *stop, FILE *log) {
  memset(s, 0, sizeof *s);
  s->c = c;
  s->stop = stop;
  s->log = log;
  s->t_start = bf_now_sec();
  char p[BF_TRAIN_PATH_MAX + 64];
  BF_TRY(pathf(s->st.path, sizeof s->st.path, "%s/search.jsonl", c->dir));
  BF_TRY(pathf(p, sizeof p, "%s/runs", c->dir));
  BF_TRY(bf_mkdirs(p));
  BF_TRY(state_load(&s->st));
  if (s->st.n) fprintf(log, "bf-search: resuming: %d trainings in %s\n", s->st.n, s->st.path);
  return 0;
}

int bf_search_run(bf_search_config *c, volatile sig_atomic_t *stop, FILE *log) {
  static search s; /* the job table is large */
  bf_search_choice *choices = NULL;
  bf_profile *prof = NULL;
  int rc = 0, np = 0;
  char p[BF_TRAIN_PATH_MAX + 64];
  if ((rc = search_open(&s, c, stop, log))) goto done;
  if (c->jobs > 1 && (rc = jobs_init(&s))) goto done;

  double base_top1;
  char base_dir[BF_TRAIN_PATH_MAX + 32];
  if ((rc = baseline_phase(&s, &base_top1, base_dir, sizeof base_dir))) goto done;
  double target = base_top1 - c->tolerance / 100.0;
  fprintf(log, "bf-search: target top1 %.2f%% (baseline %.2f%% - %.2f points)\n", 100 * target, 100 * base_top1,
          c->tolerance);

  choices = calloc((size_t)c->n_splits, sizeof *choices);
  prof = calloc((size_t)c->n_splits, sizeof *prof);
  if (!choices || !prof) {
    rc = bf_error(BF_ENOMEM, "search");
    goto done;
  }
  if ((rc = training_phase(&s, target, choices))) goto done;

  /* profiling phase */
  int input_size = c->prof_input_size ? c->prof_input_size : c->cand.data_image_size;
  snprintf(p, sizeof p, "%s/deploy", c->dir);
  for (int i = 0; i < c->n_splits; i++) {
    if (choices[i].d_r <= 0) continue;
    char ckpt[BF_TRAIN_PATH_MAX + 32];
    snprintf(ckpt, sizeof ckpt, "%s/last.safetensors", choices[i].run_dir);
    fprintf(log, "bf-search: profiling RB%d D_r %d at %dx%d\n", choices[i].split, choices[i].d_r, input_size,
            input_size);
    fflush(log);
    if ((rc = bf_profile_model(ckpt, p, input_size, c, &prof[np]))) goto done;
    prof[np].top1 = choices[i].top1;
    np++;
  }
  bf_search_summary sum = {0};
  sum.baseline_top1 = base_top1;
  sum.target_top1 = target;
  sum.entries = s.st.e;
  sum.n_entries = s.st.n;
  sum.choices = choices;
  sum.n_choices = c->n_splits;
  sum.profiles = prof;
  sum.n_profiles = np;
  sum.input_size = input_size;
  sum.input_bytes = (double)input_size * input_size * 3;
  if (np) {
    if ((rc = bf_profile_full(&prof[np - 1], input_size, c->device_threads, c, &sum.tm_full_ms))) goto done;
    if ((rc = bf_profile_full(&prof[np - 1], input_size, c->server_threads, c, &sum.tc_full_ms))) goto done;
  }
  /* selection phase + outputs */
  rc = bf_search_report(c, &sum, stdout);
  if (!rc) fprintf(log, "bf-search: done in %.1f s (%d new trainings)\n", bf_now_sec() - s.t_start, s.new_trainings);

done:
  if (rc == BF_SEARCH_STOPPED)
    fprintf(log, "bf-search: stopped after %d new trainings; state in %s, rerun the same command to resume\n",
            s.new_trainings, s.st.path);
  free(choices);
  free(prof);
  state_free(&s.st);
  return rc;
}

/* ----------------------------------------------------------------- slurm */

/* Writes `a` single-quoted for bash. */
static void sh_quote(FILE *fp, const char *a) {
  fputc('\'', fp);
  for (; *a; a++)
    if (*a == '\'') fputs("'\\''", fp);
    else fputc(*a, fp);
  fputc('\'', fp);
}

static void sh_command(FILE *fp, const search *s, const char *exe) {
  sh_quote(fp, exe);
  for (int i = 0; i < s->c->argc; i++) {
    fputc(' ', fp);
    sh_quote(fp, s->c->argv[i]);
  }
}

int bf_search_emit_slurm(bf_search_config *c, const char *path, int *n_tasks, FILE *log) {
  static search s;
  int rc = 0;
  int wave[BF_SEARCH_MAX_SPLITS + 1][2], nw = 0;
  *n_tasks = 0;
  if (!c->argv) return bf_error(BF_EINVAL, "--emit-slurm: needs the bf-search command line");
  const char *vals[] = {c->slurm_partition, c->slurm_time, c->slurm_account, c->slurm_mem};
  const char *keys[] = {"slurm.partition", "slurm.time", "slurm.account", "slurm.mem"};
  if ((rc = search_open(&s, c, NULL, log))) goto done;

  /* the wave: the baseline, else every undecided split point's next D_r */
  bf_search_entry e = {0};
  double base_top1 = 0;
  if (c->baseline[0]) {
    double t5, secs;
    if ((rc = read_result(c->baseline, &base_top1, &t5, &secs))) {
      rc = bf_error_wrap(rc, "search.baseline");
      goto done;
    }
  } else {
    if ((rc = lookup(&s, 0, 0, &e)) < 0) goto done;
    if (rc == 0) {
      wave[nw][0] = 0;
      wave[nw++][1] = 0;
    }
    base_top1 = e.top1;
    rc = 0;
  }
  if (!nw) {
    double target = base_top1 - c->tolerance / 100.0;
    for (int i = 0; i < c->n_splits; i++) {
      bf_search_choice ch;
      int next, lw;
      int r = split_next(&s, i, target, &ch, &next, &lw);
      if (r < 0) {
        rc = r;
        goto done;
      }
      if (r == 1) {
        wave[nw][0] = c->splits[i];
        wave[nw++][1] = next;
      }
    }
  }
  if (!nw) {
    fprintf(log, "bf-search: the training phase is complete (%d trainings in %s); no script written.\n"
                 "bf-search: run the same command without --emit-slurm to profile and select.\n",
            s.st.n, s.st.path);
    goto done;
  }

  char exe[BF_TRAIN_PATH_MAX], cwd[BF_TRAIN_PATH_MAX], absdir[BF_TRAIN_PATH_MAX], logs[BF_TRAIN_PATH_MAX + 16];
  ssize_t ln = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (ln <= 0 || (size_t)ln >= sizeof exe - 1) {
    rc = bf_error(BF_EIO, "/proc/self/exe: cannot resolve");
    goto done;
  }
  exe[ln] = 0;
  if (!getcwd(cwd, sizeof cwd) || !realpath(c->dir, absdir)) {
    rc = bf_error(BF_EIO, "%s: cannot resolve the search directory", c->dir);
    goto done;
  }
  if ((rc = pathf(logs, sizeof logs, "%s/logs", absdir)) || (rc = bf_mkdirs(logs))) goto done;

  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  if (!fp) {
    rc = bf_error(BF_ENOMEM, "--emit-slurm");
    goto done;
  }
  int cpus = c->slurm_cpus ? c->slurm_cpus : c->cand.threads;
  int gpus = c->slurm_gpus >= 0 ? c->slurm_gpus : !strcmp(c->cand.backend, "cuda");
  fprintf(fp, "#!/bin/bash\n");
  fprintf(fp, "# bf-search --emit-slurm: the next wave of the search in %s:\n", absdir);
  fprintf(fp, "# %d training(s), one per array task (%d finished before).\n#\n", nw, s.st.n);
  fprintf(fp, "#   sbatch %s\n", path);
  fprintf(fp, "# Each task trains one model into its own run directory (a task that is\n"
              "# re-run resumes its checkpoint, or does nothing when it finished); it does\n"
              "# not write search.jsonl. When the array is done, run the same bf-search\n"
              "# command with --emit-slurm again: it records the results and writes the\n"
              "# next wave (the next D_r of each split point depends on these results),\n"
              "# until it says the training phase is complete. Then the command without\n"
              "# --emit-slurm profiles and selects; it trains nothing more.\n");
  fprintf(fp, "#SBATCH --job-name=bf-search\n");
  fprintf(fp, "#SBATCH --array=0-%d\n", nw - 1);
  fprintf(fp, "#SBATCH --ntasks=1\n");
  fprintf(fp, "#SBATCH --chdir=%s\n", cwd);
  fprintf(fp, "#SBATCH --output=%s/slurm-%%A_%%a.out\n", logs);
  if (cpus > 0) fprintf(fp, "#SBATCH --cpus-per-task=%d\n", cpus);
  if (gpus > 0) fprintf(fp, "#SBATCH --gpus-per-task=%d\n", gpus);
  for (int i = 0; i < 4; i++)
    if (vals[i][0]) fprintf(fp, "#SBATCH --%s=%s\n", keys[i] + 6, vals[i]);
  if (c->slurm_extra[0]) {
    char ex[sizeof c->slurm_extra];
    snprintf(ex, sizeof ex, "%s", c->slurm_extra);
    for (char *sv = NULL, *t = strtok_r(ex, ";", &sv); t; t = strtok_r(NULL, ";", &sv)) {
      while (*t == ' ') t++;
      if (*t) fprintf(fp, "#SBATCH %s\n", t);
    }
  }
  fprintf(fp, "set -euo pipefail\n");
  fprintf(fp, "TASKS=(\n");
  for (int i = 0; i < nw; i++) {
    char name[64];
    task_name(wave[i][0], wave[i][1], name, sizeof name);
    if (wave[i][0]) fprintf(fp, "  %d:%d  # %d: RB%d D_r %d -> %s/runs/%s\n", wave[i][0], wave[i][1], i, wave[i][0],
                            wave[i][1], c->dir, name);
    else fprintf(fp, "  baseline  # %d: plain ResNet-50 -> %s/runs/%s\n", i, c->dir, name);
  }
  fprintf(fp, ")\n");
  fprintf(fp, "id=${SLURM_ARRAY_TASK_ID:?run with sbatch, or set SLURM_ARRAY_TASK_ID to 0..%d}\n", nw - 1);
  fprintf(fp, "if [ \"$id\" -lt 0 ] || [ \"$id\" -ge ${#TASKS[@]} ]; then\n"
              "  echo \"$0: no task $id (0..$((${#TASKS[@]} - 1)))\" >&2\n"
              "  exit 2\n"
              "fi\n");
  fprintf(fp, "exec ");
  sh_command(fp, &s, exe);
  fprintf(fp, " --train-one \"${TASKS[$id]}\"\n");
  if (fclose(fp)) {
    free(buf);
    rc = bf_error(BF_ENOMEM, "--emit-slurm");
    goto done;
  }
  rc = bf_write_file_atomic(path, buf, len);
  free(buf);
  if (rc) goto done;
  if (chmod(path, 0755)) {
    rc = bf_error(BF_EIO, "%s: chmod failed", path);
    goto done;
  }
  *n_tasks = nw;
  fprintf(log, "bf-search: wrote %s: %d training(s) as a Slurm job array; submit with: sbatch %s\n", path, nw, path);

done:
  state_free(&s.st);
  return rc;
}
