/* bf-search: configuration, state file, training phase and the driver of the
 * three phases (search.h, docs/search.md). */
#include "search.h"

#include <cJSON.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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
  bf_train_config_defaults(&c->train);
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
  if (!strncmp(key, "search.", 7) || !strncmp(key, "profile.", 8) || !strncmp(key, "select.", 7))
    return bf_error(BF_EINVAL, "%s: unknown key '%s' (bf-search --help lists the keys)", where, key);
  if (!bf_train_config_has_key(key))
    return bf_error(BF_EINVAL, "%s: unknown key '%s' (neither a bf-search nor a bf-train key)", where, key);
  if (c->n_ovr == BF_SEARCH_MAX_OVR) return bf_error(BF_EINVAL, "%s: too many training keys", where);
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
              strncmp(key, "select.", 7) == 0);
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
  for (int i = 0; i < c->n_ovr; i++) BF_TRY(bf_train_config_set(&c->train, c->ovr_key[i], c->ovr_val[i], c->ovr_where[i]));
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
  /* the recipe must validate as a butterfly model */
  bf_train_config t = c->train;
  t.model_split_after = c->splits[0];
  t.model_d_r = c->dr_min;
  int rc = bf_train_config_validate(&t);
  if (rc) return bf_error_wrap(rc, "training recipe");
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
          "  profile.device_threads 1             CPU threads for the device half / mobile-only\n"
          "  profile.server_threads 2             CPU threads for the server half / cloud-only\n"
          "  profile.warmup         2             untimed runs\n"
          "  profile.runs           7             timed runs (median)\n"
          "  profile.input_size     0             input size (0 = the model's training size)\n"
          "  select.networks        3g,4g,wifi    Table III networks\n"
          "  select.p_mobile_mw     3000          device compute power, mW (assumption, see docs)\n"
          "  select.k_mobile        0             device load level in [0, 1): times / (1 - K)\n"
          "  select.k_cloud         0             server load level in [0, 1)\n"
          "Any bf-train key (data.root, train.epochs, ...) is forwarded to every training.\n");
}

/* ----------------------------------------------------------------- state */

typedef struct state {
  bf_search_entry *e;
  int n, cap;
  char path[BF_TRAIN_PATH_MAX + 32];
} state;

static int state_add(state *s, const bf_search_entry *e) {
  if (s->n == s->cap) {
    int nc = s->cap ? 2 * s->cap : 32;
    bf_search_entry *ne = realloc(s->e, (size_t)nc * sizeof *ne);
    if (!ne) return bf_error(BF_ENOMEM, "search state");
    s->e = ne;
    s->cap = nc;
  }
  s->e[s->n++] = *e;
  return 0;
}

static const bf_search_entry *state_find(const state *s, int split, int d_r) {
  for (int i = s->n - 1; i >= 0; i--)
    if (s->e[i].split == split && s->e[i].d_r == d_r) return &s->e[i];
  return NULL;
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

static int state_append(state *s, const bf_search_entry *e) {
  cJSON *j = cJSON_CreateObject();
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

typedef struct search {
  bf_search_config *c;
  volatile sig_atomic_t *stop;
  FILE *log;
  state st;
  int new_trainings;
  double train_secs; /* wall time of the trainings of this session */
  char init_path[BF_TRAIN_PATH_MAX + 32];
  double t_start;
} search;

/* Trains (or finds in the state / run dir) one model; *e receives the entry.
 * Returns BF_SEARCH_STOPPED when stopped. */
static int train_one(search *s, int split, int d_r, const char *what, bf_search_entry *e) {
  const bf_search_entry *old = state_find(&s->st, split, d_r);
  if (old) {
    fprintf(s->log, "bf-search: %s: done before (search.jsonl): top1 %.2f%%\n", what, 100 * old->top1);
    *e = *old;
    return 0;
  }
  bf_train_config t = s->c->train;
  t.model_split_after = split;
  t.model_d_r = d_r;
  if (split == 0) {
    BF_TRY(pathf(t.run_dir, sizeof t.run_dir, "%s/runs/baseline", s->c->dir));
    if (s->c->baseline_epochs > 0) t.epochs = s->c->baseline_epochs;
  } else {
    BF_TRY(pathf(t.run_dir, sizeof t.run_dir, "%s/runs/k%d_dr%d", s->c->dir, split, d_r));
    if (s->c->init_baseline) BF_TRY(pathf(t.init, sizeof t.init, "%s", s->init_path));
  }
  snprintf(t.name, sizeof t.name, "%s", split ? strrchr(t.run_dir, '/') + 1 : "baseline");
  memset(e, 0, sizeof *e);
  e->split = split;
  e->d_r = d_r;
  snprintf(e->run_dir, sizeof e->run_dir, "%s", t.run_dir);
  char p[BF_TRAIN_PATH_MAX + 32];
  snprintf(p, sizeof p, "%s/result.json", t.run_dir);
  if (file_exists(p)) {
    /* finished, but killed before the state line was written */
    BF_TRY(read_result(t.run_dir, &e->top1, &e->top5, &e->seconds));
    fprintf(s->log, "bf-search: %s: finished run found in %s: top1 %.2f%%\n", what, t.run_dir, 100 * e->top1);
    return state_append(&s->st, e);
  }
  if (s->c->max_trainings > 0 && s->new_trainings >= s->c->max_trainings) return BF_SEARCH_STOPPED;
  if (s->stop && *s->stop) return BF_SEARCH_STOPPED;
  BF_TRY(bf_train_config_validate(&t));
  bf_train_options o;
  bf_train_options_init(&o);
  o.quiet = 1;
  o.progress = 0;
  o.stop = s->stop;
  char ls[BF_TRAIN_PATH_MAX + 64];
  snprintf(p, sizeof p, "%s/last.safetensors", t.run_dir);
  snprintf(ls, sizeof ls, "%s/last.state.safetensors", t.run_dir);
  if (file_exists(p) && file_exists(ls)) o.resume = 1;
  else o.force = 1;
  fprintf(s->log, "bf-search: %s: training %s%s\n", what, t.run_dir, o.resume ? " (resuming its checkpoint)" : "");
  fflush(s->log);
  double t0 = bf_now_sec();
  bf_train_result r;
  int rc = bf_train_run(&t, &o, &r);
  if (rc) return bf_error_wrap(rc, "training %s", t.run_dir);
  if (r.stopped || !r.completed) return BF_SEARCH_STOPPED;
  double dt = bf_now_sec() - t0;
  s->new_trainings++;
  s->train_secs += dt;
  e->top1 = r.top1;
  e->top5 = r.top5;
  e->seconds = dt;
  fprintf(s->log, "bf-search: %s: top1 %.2f%% top%d %.2f%% (%.1f s)\n", what, 100 * r.top1, r.topk, 100 * r.top5, dt);
  return state_append(&s->st, e);
}

static int trainings_for(const search *s, int split) {
  int n = 0;
  for (int i = 0; i < s->st.n; i++) n += s->st.e[i].split == split;
  return n;
}

static int worst_case(const bf_search_config *c, int split) {
  int hi = c->dr_max ? c->dr_max : bf_rb_channels(split);
  int n = hi - c->dr_min + 1;
  if (c->strategy == 1) {
    int b = 1;
    while ((1 << (b - 1)) < n) b++;
    return b;
  }
  return n;
}

/* Estimated trainings left from split index `i` on (the current split has
 * `done_here` trainings already). */
static int estimate_left(const search *s, int i, int done_here) {
  const bf_search_config *c = s->c;
  double per = 0;
  int nf = 0;
  for (int j = 0; j < i; j++) {
    per += trainings_for(s, c->splits[j]);
    nf++;
  }
  per = nf ? per / nf : 0;
  int left = 0;
  for (int j = i; j < c->n_splits; j++) {
    int wc = worst_case(c, c->splits[j]);
    int est = nf ? (int)ceil(per) : (c->strategy ? wc : (wc + 1) / 2);
    if (est > wc) est = wc;
    if (est < 1) est = 1;
    if (j == i) est = est > done_here ? est - done_here : 1;
    left += est;
  }
  return left;
}

static void progress(search *s, int i, int done_here, int d_r) {
  int left = estimate_left(s, i, done_here);
  int done = s->st.n;
  double per = s->new_trainings ? s->train_secs / s->new_trainings : 0;
  if (!per) {
    double sum = 0;
    int n = 0;
    for (int j = 0; j < s->st.n; j++)
      if (s->st.e[j].seconds > 0) sum += s->st.e[j].seconds, n++;
    per = n ? sum / n : 0;
  }
  char eta[32];
  if (per > 0) {
    long sec = (long)(per * left + 0.5);
    snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", sec / 3600, sec / 60 % 60, sec % 60);
  } else snprintf(eta, sizeof eta, "unknown");
  fprintf(s->log, "bf-search: [split %d/%d: RB%d, D_r %d] trainings done %d, ~%d left, ETA %s\n", i + 1,
          s->c->n_splits, s->c->splits[i], d_r, done, left, eta);
  fflush(s->log);
}

static int accepted(const bf_search_entry *e, double target) { return 100.0 * e->top1 >= 100.0 * target - 1e-9; }

static int search_split(search *s, int i, double target, bf_search_choice *ch) {
  const bf_search_config *c = s->c;
  int k = c->splits[i];
  int hi = c->dr_max ? c->dr_max : bf_rb_channels(k);
  ch->split = k;
  ch->d_r = -1;
  ch->top1 = 0;
  ch->run_dir[0] = 0;
  char what[64];
  bf_search_entry e;
  int done_here = 0;
  if (c->strategy == 0) {
    for (int r = c->dr_min; r <= hi; r++) {
      snprintf(what, sizeof what, "RB%d D_r %d", k, r);
      progress(s, i, done_here, r);
      int rc = train_one(s, k, r, what, &e);
      if (rc) return rc;
      done_here++;
      if (accepted(&e, target)) {
        ch->d_r = r;
        ch->top1 = e.top1;
        snprintf(ch->run_dir, sizeof ch->run_dir, "%s", e.run_dir);
        return 0;
      }
    }
    return 0;
  }
  int lo = c->dr_min;
  int best = -1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    snprintf(what, sizeof what, "RB%d D_r %d (bisect %d..%d)", k, mid, lo, hi);
    progress(s, i, done_here, mid);
    int rc = train_one(s, k, mid, what, &e);
    if (rc) return rc;
    done_here++;
    if (accepted(&e, target)) {
      best = mid;
      ch->top1 = e.top1;
      snprintf(ch->run_dir, sizeof ch->run_dir, "%s", e.run_dir);
      hi = mid - 1;
    } else lo = mid + 1;
  }
  ch->d_r = best;
  return 0;
}

/* ---------------------------------------------------------------- driver */

int bf_search_run(bf_search_config *c, volatile sig_atomic_t *stop, FILE *log) {
  search s = {0};
  s.c = c;
  s.stop = stop;
  s.log = log;
  s.t_start = bf_now_sec();
  bf_search_choice *choices = NULL;
  bf_profile *prof = NULL;
  int rc = 0, np = 0;
  char p[BF_TRAIN_PATH_MAX + 64];
  snprintf(s.st.path, sizeof s.st.path, "%s/search.jsonl", c->dir);
  snprintf(p, sizeof p, "%s/runs", c->dir);
  if ((rc = bf_mkdirs(p))) goto done;
  if ((rc = state_load(&s.st))) goto done;
  if (s.st.n) fprintf(log, "bf-search: resuming: %d trainings in %s\n", s.st.n, s.st.path);

  /* baseline */
  double base_top1;
  char base_dir[BF_TRAIN_PATH_MAX + 32];
  if (c->baseline[0]) {
    double t5, secs;
    snprintf(base_dir, sizeof base_dir, "%s", c->baseline);
    if ((rc = read_result(c->baseline, &base_top1, &t5, &secs))) {
      rc = bf_error_wrap(rc, "search.baseline");
      goto done;
    }
    fprintf(log, "bf-search: baseline %s: top1 %.2f%%\n", c->baseline, 100 * base_top1);
  } else {
    bf_search_entry e;
    fprintf(log, "bf-search: baseline (plain ResNet-50, split_after 0)\n");
    if ((rc = train_one(&s, 0, 0, "baseline", &e))) goto done;
    base_top1 = e.top1;
    snprintf(base_dir, sizeof base_dir, "%s", e.run_dir);
  }
  if ((rc = pathf(s.init_path, sizeof s.init_path, "%s/best.safetensors", base_dir))) goto done;
  if (!file_exists(s.init_path) && (rc = pathf(s.init_path, sizeof s.init_path, "%s/last.safetensors", base_dir)))
    goto done;
  if (c->init_baseline && !file_exists(s.init_path)) {
    rc = bf_error(BF_EINVAL, "search.init = baseline: no best/last.safetensors in %s", base_dir);
    goto done;
  }
  double target = base_top1 - c->tolerance / 100.0;
  fprintf(log, "bf-search: target top1 %.2f%% (baseline %.2f%% - %.2f points)\n", 100 * target, 100 * base_top1,
          c->tolerance);

  /* training phase */
  choices = calloc((size_t)c->n_splits, sizeof *choices);
  prof = calloc((size_t)c->n_splits, sizeof *prof);
  if (!choices || !prof) {
    rc = bf_error(BF_ENOMEM, "search");
    goto done;
  }
  for (int i = 0; i < c->n_splits; i++) {
    if ((rc = search_split(&s, i, target, &choices[i]))) goto done;
    if (choices[i].d_r > 0)
      fprintf(log, "bf-search: RB%d: D_r %d reaches the target (top1 %.2f%%)\n", choices[i].split, choices[i].d_r,
              100 * choices[i].top1);
    else
      fprintf(log, "bf-search: RB%d: no D_r in range reaches the target; split point dropped\n", choices[i].split);
  }

  /* profiling phase */
  int input_size = c->prof_input_size ? c->prof_input_size : c->train.data_image_size;
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
  free(s.st.e);
  return rc;
}
