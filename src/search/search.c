/* bf-search: the driver of the three phases (training, profiling, selection;
 * search.h, docs/search.md). The parts are listed in search_internal.h. */
#include "search_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int srch_search_open(search *s, bf_search_config *c, volatile sig_atomic_t *stop, FILE *log) {
  memset(s, 0, sizeof *s);
  s->c = c;
  s->stop = stop;
  s->log = log;
  s->t_start = bf_now_sec();
  char p[BF_TRAIN_PATH_MAX + 64];
  BF_TRY(srch_pathf(s->st.path, sizeof s->st.path, "%s/search.jsonl", c->dir));
  BF_TRY(srch_pathf(p, sizeof p, "%s/runs", c->dir));
  BF_TRY(bf_mkdirs(p));
  BF_TRY(srch_state_load(&s->st));
  if (s->st.n) fprintf(log, "bf-search: resuming: %d trainings in %s\n", s->st.n, s->st.path);
  return 0;
}

/* Timings taken while other jobs share the cores are noisy: the report says
 * how loaded the machine was. */
static double load_1min(void) {
  double l;
  return getloadavg(&l, 1) == 1 ? l : -1;
}

/* The summary both selection paths (a search's own profiles and
 * --select-only's profile files) hand to the report. */
bf_search_summary srch_summary(const search *s, double base_top1, double target, const bf_search_choice *choices,
                               const bf_profile *prof, int np, int in_h, int in_w) {
  bf_search_summary sum = {0};
  sum.baseline_top1 = base_top1;
  sum.target_top1 = target;
  sum.entries = s->st.e;
  sum.n_entries = s->st.n;
  sum.choices = choices;
  sum.n_choices = s->c->n_splits;
  sum.profiles = prof;
  sum.n_profiles = np;
  sum.input_size = in_h;
  sum.train_input_size = s->c->cand.data_image_size;
  sum.load_before = sum.load_after = -1;
  sum.input_bytes = (double)in_h * in_w * 3;
  return sum;
}

int bf_search_run(bf_search_config *c, volatile sig_atomic_t *stop, FILE *log) {
  static search s; /* the job table is large */
  bf_search_choice *choices = NULL;
  bf_profile *prof = NULL;
  bf_rate_point *rates = NULL;
  int rc = 0, np = 0;
  char p[BF_TRAIN_PATH_MAX + 64];
  if ((rc = srch_search_open(&s, c, stop, log))) goto done;
  if (c->jobs > 1 && (rc = srch_jobs_init(&s))) goto done;

  double base_top1;
  char base_dir[BF_TRAIN_PATH_MAX + 32];
  if ((rc = srch_baseline_phase(&s, &base_top1, base_dir, sizeof base_dir))) goto done;
  double target = base_top1 - c->tolerance / 100.0;
  fprintf(log, "bf-search: target top1 %.2f%% (baseline %.2f%% - %.2f points)\n", 100 * target, 100 * base_top1,
          c->tolerance);

  choices = calloc((size_t)c->n_splits, sizeof *choices);
  prof = calloc((size_t)c->n_splits, sizeof *prof);
  if (!choices || !prof) {
    rc = bf_error(BF_ENOMEM, "search");
    goto done;
  }
  if ((rc = srch_training_phase(&s, target, choices))) goto done;

  /* profiling phase: at profile.input_size, which may differ from the
   * training size (the network is fully convolutional up to the global pool) */
  int input_size = c->prof_input_size ? c->prof_input_size : c->cand.data_image_size;
  double load_before = load_1min();
  fprintf(log, "bf-search: profiling at %dx%d (trained at %dx%d), 1-minute load average %.2f\n", input_size,
          input_size, c->cand.data_image_size, c->cand.data_image_size, load_before);
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
  bf_search_summary sum = srch_summary(&s, base_top1, target, choices, prof, np, input_size, input_size);
  sum.load_before = load_before;
  if (np) {
    if ((rc = bf_profile_full(&prof[np - 1], input_size, c->device_threads, c, &sum.tm_full_ms))) goto done;
    if ((rc = bf_profile_full(&prof[np - 1], input_size, c->server_threads, c, &sum.tc_full_ms))) goto done;
  }
  sum.load_after = load_1min();
  /* the rate-accuracy curve: every candidate's bytes per codec */
  if ((rc = srch_rate_points(&s, input_size, 1, &rates, &sum.n_rates))) goto done;
  sum.rates = rates;
  /* selection phase + outputs */
  rc = bf_search_report(c, &sum, stdout);
  if (!rc) fprintf(log, "bf-search: done in %.1f s (%d new trainings)\n", bf_now_sec() - s.t_start, s.new_trainings);

done:
  if (rc == BF_SEARCH_STOPPED)
    fprintf(log, "bf-search: stopped after %d new trainings; state in %s, rerun the same command to resume\n",
            s.new_trainings, s.st.path);
  free(choices);
  free(prof);
  free(rates);
  srch_state_free(&s.st);
  return rc;
}
