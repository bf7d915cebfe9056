/* bf-search: one training of the search, the baseline and the training phase
 * (the D_r search of every split point, linear or bisection). */
#include "search_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"

int srch_pathf(char *dst, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap) return bf_error(BF_EINVAL, "search.dir: path too long");
  return 0;
}

int srch_file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

int srch_read_result(const char *run_dir, double *top1, double *top5, double *secs) {
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

void srch_task_name(int split, int d_r, char *buf, size_t cap) {
  if (split) snprintf(buf, cap, "k%d_dr%d", split, d_r);
  else snprintf(buf, cap, "baseline");
}

void srch_task_label(int split, int d_r, char *buf, size_t cap) {
  if (split) snprintf(buf, cap, "RB%d D_r %d", split, d_r);
  else snprintf(buf, cap, "baseline");
}

/* The baseline's run dir and the warm-start weights (best, else last). */
int srch_baseline_paths(const bf_search_config *c, char *dir, size_t dcap, char *init, size_t icap) {
  if (c->baseline[0]) BF_TRY(srch_pathf(dir, dcap, "%s", c->baseline));
  else BF_TRY(srch_pathf(dir, dcap, "%s/runs/baseline", c->dir));
  BF_TRY(srch_pathf(init, icap, "%s/best.safetensors", dir));
  if (!srch_file_exists(init)) BF_TRY(srch_pathf(init, icap, "%s/last.safetensors", dir));
  return 0;
}

/* The bf-train config of one training of the search. */
static int training_config(const bf_search_config *c, int split, int d_r, bf_train_config *t) {
  char name[64];
  srch_task_name(split, d_r, name, sizeof name);
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
      BF_TRY(srch_baseline_paths(c, bdir, sizeof bdir, t->init, sizeof t->init));
      if (!srch_file_exists(t->init))
        return bf_error(BF_EINVAL, "search.init = baseline: no best/last.safetensors in %s (the baseline must finish first)",
                        bdir);
    }
  }
  BF_TRY(srch_pathf(t->run_dir, sizeof t->run_dir, "%s/runs/%s", c->dir, name));
  snprintf(t->name, sizeof t->name, "%s", name);
  return 0;
}

int srch_result_exists(const bf_search_config *c, int split, int d_r) {
  char name[64], p[BF_TRAIN_PATH_MAX + 96];
  srch_task_name(split, d_r, name, sizeof name);
  snprintf(p, sizeof p, "%s/runs/%s/result.json", c->dir, name);
  return srch_file_exists(p);
}

/* Trains in this process (resuming the run's checkpoint if there is one).
 * Returns BF_SEARCH_STOPPED when stopped. */
int srch_train_inproc(const bf_search_config *c, int split, int d_r, volatile sig_atomic_t *stop, FILE *log,
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
  if (srch_file_exists(p) && srch_file_exists(ls)) o.resume = 1;
  else o.force = 1;
  srch_task_label(split, d_r, what, sizeof what);
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
  srch_task_label(split, d_r, what, sizeof what);
  if (srch_result_exists(c, split, d_r)) {
    fprintf(log, "bf-search: %s: finished before (result.json in its run dir), nothing to do\n", what);
    return 0;
  }
  bf_train_result r;
  double secs;
  return srch_train_inproc(c, split, d_r, stop, log, &r, &secs);
}

/* A recorded candidate needs only its final weights (profiling, export):
 * its optimizer state (resume) and best.safetensors (the search uses the
 * last epoch) are 2/3 of its 280 MB. The baseline keeps all (warm start). */
static int prune(const bf_search_config *c, const bf_search_entry *e) {
  if (c->keep_all || !e->split) return 0;
  static const char *const names[] = {"last.state.safetensors", "best.safetensors"};
  for (int i = 0; i < 2; i++) {
    char p[BF_TRAIN_PATH_MAX + 64];
    BF_TRY(srch_pathf(p, sizeof p, "%s/%s", e->run_dir, names[i]));
    if (unlink(p) && errno != ENOENT) return bf_error(BF_EIO, "%s: cannot remove (search.keep = last)", p);
  }
  return 0;
}

/* Records a finished run directory (its result.json) in search.jsonl. */
int srch_adopt(search *s, int split, int d_r, double secs, bf_search_entry *e) {
  char name[64];
  srch_task_name(split, d_r, name, sizeof name);
  memset(e, 0, sizeof *e);
  e->split = split;
  e->d_r = d_r;
  BF_TRY(srch_pathf(e->run_dir, sizeof e->run_dir, "%s/runs/%s", s->c->dir, name));
  BF_TRY(srch_read_result(e->run_dir, &e->top1, &e->top5, &e->seconds));
  if (secs > 0) e->seconds = secs;
  /* prune first: killed in between, the run is adopted again */
  BF_TRY(prune(s->c, e));
  return srch_state_append(&s->st, e);
}

/* Is (split, d_r) finished? 1 (and *e) from the state or a finished run dir
 * not yet recorded (a subprocess / Slurm task, or a driver killed between the
 * training's end and its state line), 0 if not, < 0 on error. */
int srch_lookup(search *s, int split, int d_r, bf_search_entry *e) {
  char what[64];
  srch_task_label(split, d_r, what, sizeof what);
  int i = srch_state_find(&s->st, split, d_r);
  if (i >= 0) {
    *e = s->st.e[i];
    if (!s->st.seen[i]) {
      BF_TRY(prune(s->c, e)); /* recorded by an older version */
      s->st.seen[i] = 1;
      fprintf(s->log, "bf-search: %s: done before (search.jsonl): top1 %.2f%%\n", what, 100 * e->top1);
    }
    return 1;
  }
  if (!srch_result_exists(s->c, split, d_r)) return 0;
  BF_TRY(srch_adopt(s, split, d_r, 0, e));
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
int srch_split_next(search *s, int i, double target, bf_search_choice *ch, int *next, int *left_worst) {
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
    int rc = srch_lookup(s, k, r, &e);
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

int srch_baseline_phase(search *s, double *top1, char *dir, size_t cap) {
  const bf_search_config *c = s->c;
  char init[BF_TRAIN_PATH_MAX + 64];
  BF_TRY(srch_baseline_paths(c, dir, cap, init, sizeof init));
  if (c->baseline[0]) {
    double t5, secs;
    int rc = srch_read_result(c->baseline, top1, &t5, &secs);
    if (rc) return bf_error_wrap(rc, "search.baseline");
    fprintf(s->log, "bf-search: baseline %s: top1 %.2f%%\n", c->baseline, 100 * *top1);
    return 0;
  }
  fprintf(s->log, "bf-search: baseline (plain ResNet-50, split_after 0)\n");
  bf_search_entry e;
  int rc = srch_lookup(s, 0, 0, &e);
  if (rc < 0) return rc;
  if (!rc) {
    if (!srch_may_launch(s)) return BF_SEARCH_STOPPED;
    BF_TRY(srch_start_training(s, 0, 0));
    if (c->jobs > 1) BF_TRY(srch_drain(s, 0));
    BF_TRY(srch_lookup(s, 0, 0, &e) == 1 ? 0 : bf_error(BF_EIO, "baseline: no result after training"));
  }
  *top1 = e.top1;
  return 0;
}

/* The training phase: split points in parallel (up to search.jobs), each
 * one's D_r candidates in sequence (the next depends on the last result). */
int srch_training_phase(search *s, double target, bf_search_choice *choices) {
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
      int next, r = srch_split_next(s, i, target, &choices[i], &next, &left_worst[i]);
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
      if (!srch_may_launch(s)) {
        stopped = 1;
        continue;
      }
      if (s->n_running >= c->jobs) continue;
      char now[64];
      srch_task_label(c->splits[i], next, now, sizeof now);
      if (c->strategy == 1) {
        /* the bisection interval, for the log */
        size_t l = strlen(now);
        snprintf(now + l, sizeof now - l, " (bisect, <= %d left)", left_worst[i]);
      }
      progress(s, decided, left_worst, now);
      r = srch_start_training(s, c->splits[i], next);
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
    int r = srch_wait_one(s, &sp);
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
    srch_stop_children(s);
  }
  rc = srch_drain(s, rc);
  if (rc) return rc;
  return stopped ? BF_SEARCH_STOPPED : 0;
}
