/* bf-search --select-only (issue 17): the selection phase over profiles
 * measured where the halves run (bf-profile's device-profile.json and
 * server-profile.json), checked against the search they claim to describe.
 * The cost model and the argmin are selection.c's, the outputs report.c's:
 * only the source of the times differs from bf_search_run. */
#include "search_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hwprofile.h"
#include "split.h"

/* The training phase's outcome without training: an unfinished phase is an
 * error naming what is missing. */
static int finished_choices(search *s, double *base_top1, double *target, bf_search_choice *ch) {
  const bf_search_config *c = s->c;
  if (c->baseline[0]) {
    double t5, secs;
    int rc = srch_read_result(c->baseline, base_top1, &t5, &secs);
    if (rc) return bf_error_wrap(rc, "search.baseline");
  } else {
    bf_search_entry e;
    int r = srch_lookup(s, 0, 0, &e);
    if (r < 0) return r;
    if (!r)
      return bf_error(BF_EINVAL, "--select-only: %s: the baseline is not trained yet (run bf-search without "
                      "--select-only first)", s->st.path);
    *base_top1 = e.top1;
  }
  *target = *base_top1 - c->tolerance / 100.0;
  for (int i = 0; i < c->n_splits; i++) {
    int next, lw, r = srch_split_next(s, i, *target, &ch[i], &next, &lw);
    if (r < 0) return r;
    if (r == 1)
      return bf_error(BF_EINVAL, "--select-only: %s: the training phase is not complete (RB%d D_r %d is not trained "
                      "yet; run bf-search without --select-only)", s->st.path, c->splits[i], next);
  }
  return 0;
}

static void chosen_list(const bf_search_config *c, const bf_search_choice *ch, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = 0;
  for (int i = 0; i < c->n_splits && n < cap; i++)
    if (ch[i].d_r > 0) n += (size_t)snprintf(buf + n, cap - n, "%sRB%d D_r %d", n ? ", " : "", ch[i].split, ch[i].d_r);
  if (!n) snprintf(buf, cap, "none");
}

/* Does profile entry `e` (field prefix `f`) describe the model the search
 * chose? Returns the index into ch[] or an error naming the file and field. */
static int match_entry(const bf_search_config *c, const bf_search_choice *ch, const bf_deploy *d, const char *file,
                       const char *f, const bf_hwprof_entry *e) {
  char list[512];
  chosen_list(c, ch, list, sizeof list);
  int i = 0;
  while (i < c->n_splits && c->splits[i] != e->split) i++;
  if (i == c->n_splits)
    return bf_error(BF_EINVAL, "%s: %s.split: RB%d is not a split point of this search (it chose: %s)", file, f,
                    e->split, list);
  if (ch[i].d_r <= 0)
    return bf_error(BF_EINVAL, "%s: %s.split: RB%d was dropped by this search (no D_r reached the target; it "
                    "chose: %s)", file, f, e->split, list);
  if (ch[i].d_r != e->d_r)
    return bf_error(BF_EINVAL, "%s: %s.d_r: %d, but this search chose D_r %d for RB%d", file, f, e->d_r, ch[i].d_r,
                    e->split);
  const bf_deploy_split *ds = bf_deploy_find(d, e->split);
  if (strcmp(e->model_id, ds->id_hex))
    return bf_error(BF_EINVAL, "%s: %s.model_id: %.16s... is not the model id of %s (%.16s...): the profile was made "
                    "on another export", file, f, e->model_id, ds->dir, ds->id_hex);
  return i;
}

/* One side: read and check the file, or (path NULL) measure here. idx[i]:
 * the profile entry of choice i. */
static int load_side(bf_search_config *c, const bf_search_choice *ch, const bf_deploy *chosen, const bf_deploy *all,
                     const char *path, bf_hwprof_side side, bf_hwprof *hp, int *idx, FILE *log) {
  if (!path) {
    bf_hwprof_opts o = {side,          "cpu", side == BF_HWPROF_DEVICE ? c->device_threads : c->server_threads,
                        c->prof_warmup, c->prof_runs, side == BF_HWPROF_DEVICE ? c->load.p_mobile_mw : 0, NULL};
    BF_TRY(bf_hwprof_measure(chosen, &o, hp, log));
  } else {
    BF_TRY(bf_hwprof_read(path, side, hp));
  }
  const char *file = path ? path : "(in-process profile)";
  for (int i = 0; i < c->n_splits; i++) idx[i] = -1;
  for (int k = 0; k < hp->n; k++) {
    char f[32];
    snprintf(f, sizeof f, "splits[%d]", k);
    int i = match_entry(c, ch, all, file, f, &hp->e[k]);
    if (i < 0) return i;
    idx[i] = k;
  }
  for (int i = 0; i < c->n_splits; i++)
    if (ch[i].d_r > 0 && idx[i] < 0)
      return bf_error(BF_EINVAL, "%s: splits: no entry for RB%d (D_r %d), which this search chose: profile a deploy "
                      "directory that holds it (bf-profile --deploy %s/deploy)", file, ch[i].split, ch[i].d_r, c->dir);
  int w = match_entry(c, ch, all, file, "whole_model", &hp->whole);
  return w < 0 ? w : 0;
}

static double measured_mw(const bf_hwprof *hp, const bf_hwprof_entry *e) {
  return !strcmp(hp->energy_source, "rapl") && e->time.median_ms > 0 ? e->energy_mj * 1000.0 / e->time.median_ms : 0;
}

int bf_search_select_only(bf_search_config *c, const char *device_profile, const char *server_profile, FILE *log) {
  static search s;
  static bf_hwprof dev, srv;
  bf_search_choice *ch = calloc((size_t)c->n_splits, sizeof *ch);
  bf_profile *prof = calloc((size_t)c->n_splits, sizeof *prof);
  bf_deploy all = {0}, chosen = {0};
  bf_rate_point *rates = NULL;
  int rc = 0, np = 0, di[BF_SEARCH_MAX_SPLITS], si[BF_SEARCH_MAX_SPLITS];
  char dep[BF_TRAIN_PATH_MAX + 16], note[2048];
  if (!ch || !prof) {
    rc = bf_error(BF_ENOMEM, "select");
    goto done;
  }
  if ((rc = srch_search_open(&s, c, NULL, log))) goto done;
  double base_top1 = 0, target = 0;
  if ((rc = finished_choices(&s, &base_top1, &target, ch))) goto done;

  /* the exports the profiles must have timed: DIR/deploy, written by the
   * search's profiling phase */
  snprintf(dep, sizeof dep, "%s/deploy", c->dir);
  if ((rc = bf_deploy_open(&all, dep))) {
    rc = bf_error_wrap(rc, "--select-only: the search's exports (run bf-search without --select-only once)");
    goto done;
  }
  chosen.splits = calloc((size_t)c->n_splits, sizeof *chosen.splits);
  if (!chosen.splits) {
    rc = bf_error(BF_ENOMEM, "select");
    goto done;
  }
  for (int i = 0; i < c->n_splits; i++) {
    if (ch[i].d_r <= 0) continue;
    const bf_deploy_split *ds = bf_deploy_find(&all, ch[i].split);
    if (!ds || ds->d_r != ch[i].d_r) {
      rc = bf_error(BF_EINVAL, "--select-only: %s: no export of RB%d D_r %d (the search's profiling phase writes it: "
                    "run bf-search without --select-only once)", dep, ch[i].split, ch[i].d_r);
      goto done;
    }
    chosen.splits[chosen.n++] = *ds; /* a view: `all` owns the class names */
  }
  if (!chosen.n) {
    rc = bf_error(BF_EINVAL, "--select-only: no split point reached the target: nothing to select");
    goto done;
  }
  for (int i = 1; i < chosen.n; i++)
    if (chosen.splits[i].in_h != chosen.splits[0].in_h || chosen.splits[i].in_w != chosen.splits[0].in_w) {
      rc = bf_error(BF_EINVAL, "--select-only: %s: the exports differ in input size (%s, %s)", dep,
                    chosen.splits[0].dir, chosen.splits[i].dir);
      goto done;
    }
  if ((rc = load_side(c, ch, &chosen, &all, device_profile, BF_HWPROF_DEVICE, &dev, di, log)) ||
      (rc = load_side(c, ch, &chosen, &all, server_profile, BF_HWPROF_SERVER, &srv, si, log)))
    goto done;

  for (int i = 0; i < c->n_splits; i++) {
    if (ch[i].d_r <= 0) continue;
    const bf_hwprof_entry *de = &dev.e[di[i]], *se = &srv.e[si[i]];
    const bf_deploy_split *ds = bf_deploy_find(&all, ch[i].split);
    bf_profile *p = &prof[np++];
    p->split = ch[i].split;
    p->d_r = ch[i].d_r;
    p->top1 = ch[i].top1;
    p->feat_h = de->feat_h;
    p->feat_w = de->feat_w;
    p->feat_c = de->d_r;
    p->device_ms = de->time.median_ms;
    p->quant_ms = de->quant.median_ms;
    p->server_ms = se->time.median_ms;
    p->payload_bytes = (size_t)de->feat_h * de->feat_w * de->d_r;
    p->frame_bytes = (size_t)de->bytes_raw;
    p->device_mw = measured_mw(&dev, de);
    snprintf(p->deploy_dir, sizeof p->deploy_dir, "%s", ds->dir);
    snprintf(p->device_path, sizeof p->device_path, "%s", ds->device_path);
    snprintf(p->server_path, sizeof p->server_path, "%s", ds->server_path);
  }
  snprintf(note, sizeof note, "device: %s (%s; %s, %d threads, median of %d runs; energy %s); server: %s (%s; %s, "
           "%d threads, median of %d runs)", device_profile ? device_profile : "measured in this process", dev.host,
           dev.backend, dev.threads, dev.runs, dev.energy_source,
           server_profile ? server_profile : "measured in this process", srv.host, srv.backend, srv.threads, srv.runs);
  /* the report states the threads and runs of the profiles it shows */
  c->device_threads = dev.threads;
  c->server_threads = srv.threads;
  c->prof_runs = dev.runs;
  c->load.p_full_mw = measured_mw(&dev, &dev.whole);
  bf_search_summary sum = srch_summary(&s, base_top1, target, ch, prof, np, chosen.splits[0].in_h, chosen.splits[0].in_w);
  sum.tm_full_ms = dev.whole.time.median_ms;
  sum.tc_full_ms = srv.whole.time.median_ms;
  sum.profile_source = note;
  /* bytes per codec: what the search measured at this input size, if it did */
  if ((rc = srch_rate_points(&s, chosen.splits[0].in_h, 0, &rates, &sum.n_rates))) goto done;
  sum.rates = rates;
  fprintf(log, "bf-search: selection from profiles: %s\n", note);
  rc = bf_search_report(c, &sum, stdout);

done:
  free(rates);
  free(chosen.splits);
  bf_deploy_close(&all);
  free(ch);
  free(prof);
  srch_state_free(&s.st);
  return rc;
}
