/* bf-search configuration: the key table of the search's own sections
 * ([search], [profile], [select], [slurm]) read by the same parser as
 * bf-train's (keytab.h), and the bf-train keys forwarded to the trainings. */
#include "search_internal.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "keytab.h"
#include "model.h"

static int parse_splits(void *cfg, const bf_key *k, const char *v, const char *where) {
  bf_search_config *c = cfg;
  int seen[BF_NUM_RB + 1] = {0}, n = 0;
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
      return bf_error(BF_EINVAL, "%s: %s: '%s' is not a list like 1,4,8-10", where, k->name, v);
    if (a < 1 || a > BF_NUM_RB || b < 1 || b > BF_NUM_RB || a > b)
      return bf_error(BF_EINVAL, "%s: %s: split point %d outside 1..16 (residual blocks of ResNet-50)", where,
                      k->name, (a < 1 || a > BF_NUM_RB) ? a : b);
    for (int r = a; r <= b; r++) seen[r] = 1;
  }
  for (int r = 1; r <= BF_NUM_RB; r++)
    if (seen[r]) c->splits[n++] = r;
  if (!n) return bf_error(BF_EINVAL, "%s: %s: empty list", where, k->name);
  c->n_splits = n;
  return 0;
}

static int parse_networks(void *cfg, const bf_key *k, const char *v, const char *where) {
  bf_search_config *c = cfg;
  char buf[256];
  int n = 0;
  snprintf(buf, sizeof buf, "%s", v);
  for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    if (n == BF_SEARCH_MAX_NETS) return bf_error(BF_EINVAL, "%s: %s: at most %d", where, k->name, n);
    if (bf_sel_network_parse(tok, &c->nets[n])) return bf_error_wrap(BF_EINVAL, "%s: %s", where, k->name);
    n++;
  }
  if (!n) return bf_error(BF_EINVAL, "%s: %s: empty list", where, k->name);
  c->n_nets = n;
  return 0;
}

#define OFF(f) offsetof(bf_search_config, f)
#define SZ(f) sizeof(((bf_search_config *)0)->f)
#define STR(k, f, d, h) {k, BF_KEY_STR, OFF(f), SZ(f), d, 0, 0, NULL, h, NULL}
#define CHOICE(k, f, d, ch, h) {k, BF_KEY_CHOICE, OFF(f), 0, d, 0, 0, ch, h, NULL}
#define INT(k, f, d, lo, hi, h) {k, BF_KEY_INT, OFF(f), 0, d, lo, hi, NULL, h, NULL}
#define DBL(k, f, d, lo, hi, h) {k, BF_KEY_DOUBLE, OFF(f), 0, d, lo, hi, NULL, h, NULL}
#define CUSTOM(k, d, ty, fn, h) {k, BF_KEY_CUSTOM, 0, 0, d, 0, 0, ty, h, fn}

static const bf_key KEYS[] = {
    STR("search.dir", dir, "runs/search", "search directory (state, runs, deploy, reports)"),
    STR("search.train_config", train_config, "", "bf-train recipe (INI); its keys can also be given here"),
    STR("search.baseline", baseline, "", "existing plain run dir (result.json); \"\" = train one"),
    INT("search.baseline_epochs", baseline_epochs, "0", 0, 100000, "epochs of the baseline training (0 = recipe)"),
    DBL("search.tolerance", tolerance, "2", 0, 100, "accuracy loss allowed vs the baseline, points"),
    CUSTOM("search.splits", "1-16", "list", parse_splits, "split points (RBk), e.g. 1,4,8-10"),
    INT("search.dr_min", dr_min, "1", 1, 2048, "smallest D_r"),
    INT("search.dr_max", dr_max, "0", 0, 2048, "largest D_r (0 = channels of RBk)"),
    CHOICE("search.strategy", strategy, "linear", "linear|bisect",
           "D_r search; bisect assumes accuracy monotone in D_r"),
    CHOICE("search.init", init_baseline, "scratch", "scratch|baseline",
           "candidates from scratch or warm-started from the baseline"),
    INT("search.max_trainings", max_trainings, "0", 0, 1000000,
        "stop after N new trainings (0 = no limit); a rerun resumes"),
    INT("search.jobs", jobs, "1", 1, 256, "trainings at once (subprocesses; split points in parallel)"),
    CHOICE("search.keep", keep_all, "last", "last|all",
           "last: a finished candidate keeps last.safetensors only"),
    INT("profile.device_threads", device_threads, "1", 1, 1024, "CPU threads for the device half / mobile-only"),
    INT("profile.server_threads", server_threads, "2", 1, 1024, "CPU threads for the server half / cloud-only"),
    INT("profile.warmup", prof_warmup, "2", 0, 1000, "untimed runs"),
    INT("profile.runs", prof_runs, "7", 1, 10000, "timed runs (median)"),
    INT("profile.input_size", prof_input_size, "0", 0, 4096, "input size (0 = the model's training size)"),
    INT("profile.rate_images", rate_images, "100", 0, 1000000,
        "test images for every candidate's bytes per image with raw, zstd, rans (0 = not measured)"),
    INT("profile.rans_images", rans_images, "1024", 1, 1000000,
        "training images each candidate's rans tables are estimated on (bf-export --rans-images)"),
    CUSTOM("select.networks", "3g,4g,wifi", "list of 3g|4g|wifi|NAME:T_U:ALPHA:BETA", parse_networks,
           "Table III networks, or user figures (Mbps, mW/Mbps, mW)"),
    DBL("select.p_mobile_mw", load.p_mobile_mw, "3000", 0, 1e7, "device compute power, mW (assumption, see docs)"),
    DBL("select.k_mobile", load.k_mobile, "0", 0, 0.999999, "device load level in [0, 1): times / (1 - K)"),
    DBL("select.k_cloud", load.k_cloud, "0", 0, 0.999999, "server load level in [0, 1)"),
    STR("slurm.partition", slurm_partition, "", "#SBATCH --partition of --emit-slurm (omitted when empty)"),
    STR("slurm.time", slurm_time, "", "#SBATCH --time (omitted when empty)"),
    STR("slurm.account", slurm_account, "", "#SBATCH --account (omitted when empty)"),
    STR("slurm.mem", slurm_mem, "", "#SBATCH --mem (omitted when empty)"),
    INT("slurm.cpus_per_task", slurm_cpus, "0", 0, 4096, "0 = the recipe's threads"),
    INT("slurm.gpus_per_task", slurm_gpus, "-1", -1, 64,
        "-1 = 1 with a backend that runs on a device of its own (cuda), else 0"),
    STR("slurm.extra", slurm_extra, "", "more sbatch options, ';'-separated (e.g. --qos=long;--exclusive)"),
};
static const bf_keytab TABLE = {"bf-search", KEYS, (int)(sizeof KEYS / sizeof KEYS[0])};

/* Keys of these sections are the search's own; the others are bf-train's. */
static int own_key(const char *key) {
  return !strncmp(key, "search.", 7) || !strncmp(key, "profile.", 8) || !strncmp(key, "select.", 7) ||
         !strncmp(key, "slurm.", 6);
}

void bf_search_config_defaults(bf_search_config *c) {
  memset(c, 0, sizeof *c);
  bf_keytab_defaults(&TABLE, c);
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

int bf_search_config_set(bf_search_config *c, const char *key, const char *v, const char *where) {
  if (own_key(key)) return bf_keytab_set(&TABLE, c, key, v, where);
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

typedef struct load_ctx {
  bf_search_config *c;
  const char *path;
} load_ctx;

/* Training keys are checked later (bf_search_config_finish): they keep the
 * file's name for their messages. */
static int set_from_file(void *ctx, const char *key, const char *value, const char *where) {
  load_ctx *x = ctx;
  return bf_search_config_set(x->c, key, value, own_key(key) ? where : x->path);
}

int bf_search_config_load(bf_search_config *c, const char *path) {
  load_ctx x = {c, path};
  return bf_ini_load(path, set_from_file, &x);
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
  fprintf(fp, "bf-search keys (INI [section] name = value, or --section.name VALUE):\n");
  bf_keytab_print_help(&TABLE, fp);
  fprintf(fp, "Any bf-train key (data.root, train.epochs, ...; bf-train --help) is forwarded to every training;\n"
              "in section [candidate] (or --candidate.KEY) to the butterfly trainings only,\n"
              "e.g. a lower train.lr for warm-started fine-tunes.\n");
}
