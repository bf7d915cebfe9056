/* bf_train_run: data -> model -> SGD loop with per-epoch evaluation,
 * checkpoints, metrics.jsonl, result.json and a progress display. */
#include "trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_core.h"
#include "bf_data.h"
#include "batch_io.h"
#include "checkpoint.h"
#include "run_files.h"
#include "model.h"

#define PI 3.14159265358979323846

void bf_train_options_init(bf_train_options *o) {
  memset(o, 0, sizeof *o);
  o->progress = -1;
}

double bf_train_lr_at(const bf_train_config *c, int64_t g, int64_t spe) {
  const double base = bf_train_config_base_lr(c);
  const double T = (double)c->epochs * (double)spe;
  double W = floor(c->warmup_epochs * (double)spe + 0.5);
  if (!strcmp(c->schedule, "onecycle")) {
    double U = W > 0 ? W : floor(0.3 * T + 0.5);
    if (U < 1) U = 1;
    double lo = base / 25.0, end = base * c->final_lr_fraction;
    if (g < U) return lo + (base - lo) * 0.5 * (1.0 - cos(PI * (double)g / U));
    double p = T > U ? ((double)g - U) / (T - U) : 1.0;
    if (p > 1) p = 1;
    return end + (base - end) * 0.5 * (1.0 + cos(PI * p));
  }
  if (W > 0 && g < W) return base * ((double)g + 1.0) / W;
  if (!strcmp(c->schedule, "cosine")) {
    double p = T > W ? ((double)g - W) / (T - W) : 1.0;
    if (p > 1) p = 1;
    double end = base * c->final_lr_fraction;
    return end + (base - end) * 0.5 * (1.0 + cos(PI * p));
  }
  if (!strcmp(c->schedule, "step")) {
    double ms[BF_TRAIN_MAX_MILESTONES];
    int n = bf_train_config_milestones(c, ms, BF_TRAIN_MAX_MILESTONES);
    double ep = (double)(g / spe); /* epoch index, as MultiStepLR stepped per epoch */
    int k = 0;
    if (n == 1)
      k = (int)floor(ep / ms[0] + 1e-9);
    else
      for (int i = 0; i < n; i++) k += ep + 1e-9 >= ms[i];
    return base * pow(c->gamma, k);
  }
  return base; /* constant */
}

/* ------------------------------------------------------------------ state */

typedef struct run {
  const bf_train_config *cfg;
  const bf_train_options *opt;
  char dir[BF_TRAIN_PATH_MAX];
  char last_path[BF_TRAIN_PATH_MAX + 32];
  char best_path[BF_TRAIN_PATH_MAX + 32];
  bf_backend *be;
  bf_model *m;
  bf_dataset *ds;
  bf_loader *train, *test;
  int classes, size, batch, topk;
  /* data-parallel (dist.h): batch above is this rank's share of gbatch */
  bf_dist *dist;
  int nranks, lead, gbatch;
  int64_t spe, test_batches;
  float *logits_host; /* [batch, classes] */
  int64_t *pred;       /* data-parallel --eval-predictions: [batch*3] rows + [nranks*batch*3] gathered */
  bf_batch_io *io;
  FILE *metrics;
  int bar, bar_dirty;
  int64_t last_saved; /* global step of the last checkpoint, -1 = none */
  bf_train_state st;
  bf_preprocess pre; /* the test loader's: recorded in every checkpoint */
  double session_start, prior_time;
  /* session throughput */
  double step_time_sum;
  int64_t steps_this_session;
} run;

static void logf_(run *r, const char *fmt, ...) BF_PRINTF(2, 3);
static void logf_(run *r, const char *fmt, ...) {
  if (!r->lead) return;
  if (r->bar_dirty) fputc('\n', stderr); /* leave the progress line intact */
  r->bar_dirty = 0;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

/* out = a + b, truncated to n - 1 characters (paths are checked to fit
 * BF_TRAIN_PATH_MAX at validation). */
static void join(char *out, size_t n, const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > n - 1) la = n - 1;
  if (lb > n - 1 - la) lb = n - 1 - la;
  memcpy(out, a, la);
  memcpy(out + la, b, lb);
  out[la + lb] = 0;
}

static int path_exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

static void fmt_eta(double s, char *buf, size_t n) {
  if (!(s >= 0) || s > 360000) {
    snprintf(buf, n, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static int write_json_line(run *r, cJSON *j) {
  if (!r->metrics) { /* not rank 0 */
    cJSON_Delete(j);
    return BF_OK;
  }
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!s) return bf_error(BF_ENOMEM, "metrics.jsonl: cannot format a line");
  int bad = fprintf(r->metrics, "%s\n", s) < 0 || fflush(r->metrics) != 0;
  free(s);
  return bad ? bf_error(BF_EIO, "%s/metrics.jsonl: write failed: %s", r->dir, strerror(errno)) : BF_OK;
}

static double session_time(const run *r) { return bf_now_sec() - r->session_start; }

/* Turns a BF_ENUM from anywhere in the loop into the one stop message. */
static int nonfinite_stop(run *r, int rc, const char *what) {
  if (rc != BF_ENUM) return rc;
  if (r->bar_dirty) fputc('\n', stderr);
  r->bar_dirty = 0;
  char kept[2 * BF_TRAIN_PATH_MAX + 96];
  if (r->last_saved >= 0)
    snprintf(kept, sizeof kept, "the last good checkpoint %s (global step %" PRId64 ") is kept", r->last_path,
             r->last_saved);
  else
    snprintf(kept, sizeof kept, "no checkpoint was saved yet");
  char msg[512];
  snprintf(msg, sizeof msg, "%s", bf_last_error());
  return bf_error(BF_ENUM, "%s at global step %" PRId64 " (epoch %" PRId64 "): %s; stopping; %s. Lower train.lr or check the data",
                  what, r->st.global_step, r->st.epoch + 1, msg, kept);
}

static int save_last(run *r) {
  r->st.train_time = r->prior_time + session_time(r);
  if (r->lead) BF_TRY(bf_ckpt_save(r->m, r->last_path, &r->st, &r->pre));
  r->last_saved = r->st.global_step;
  return BF_OK;
}

/* ------------------------------------------------------------------ eval */

static int eval_batches(run *r, bf_atomic_file *pf, double *loss_sum_out, int64_t *n_out, int64_t *c1_out,
                        int64_t *ck_out, int *interrupted);

static int evaluate(run *r, double *loss_out, double *top1_out, double *topk_out, int *interrupted) {
  *interrupted = 0;
  BF_TRY(bf_loader_start(r->test, 0, 0));
  double loss_sum = 0;
  int64_t n = 0, c1 = 0, ck = 0;
  bf_atomic_file pf = {0};
  if (r->opt->eval_predictions && r->lead) {
    BF_TRY(bf_atomic_open(&pf, r->opt->eval_predictions));
    fprintf(pf.fp, "index,label,top1\n");
  }
  int rc = eval_batches(r, &pf, &loss_sum, &n, &c1, &ck, interrupted);
  if (!rc && !*interrupted && r->nranks > 1) { /* each rank evaluated its shard of every test batch */
    double v[4] = {loss_sum, (double)n, (double)c1, (double)ck};
    rc = bf_dist_sum_host(r->dist, v, 4);
    loss_sum = v[0], n = (int64_t)v[1], c1 = (int64_t)v[2], ck = (int64_t)v[3];
  }
  if (pf.fp) {
    if (!rc && !*interrupted) rc = bf_atomic_commit(&pf);
    else bf_atomic_abort(&pf);
  }
  if (rc || *interrupted) return rc;
  if (n == 0) return bf_error(BF_EINVAL, "the test split is empty");
  *loss_out = loss_sum / (double)n;
  *top1_out = (double)c1 / (double)n;
  *topk_out = (double)ck / (double)n;
  return BF_OK;
}

/* Data-parallel evaluation: the rows (index, label, top-1) of every rank's
 * shard of one test batch, gathered on rank 0 and written in rank order,
 * which is the batch's order: the file is the one a single process writes. */
static int write_gathered_predictions(run *r, bf_atomic_file *pf, int count) {
  const size_t per = 3 * (size_t)r->batch;
  for (size_t k = 3 * (size_t)count; k < per; k++) r->pred[k] = -1;
  int64_t *all = r->pred + per;
  BF_TRY(bf_dist_gather_host(r->dist, r->pred, per * sizeof(int64_t), all));
  if (!pf->fp) return BF_OK;
  for (size_t k = 0; k < per * (size_t)r->nranks; k += 3)
    if (all[k] >= 0 && fprintf(pf->fp, "%" PRId64 ",%d,%d\n", all[k], (int)all[k + 1], (int)all[k + 2]) < 0)
      return bf_error(BF_EIO, "%s: write failed", r->opt->eval_predictions);
  return BF_OK;
}

static int eval_batches(run *r, bf_atomic_file *pf, double *loss_sum_out, int64_t *n_out, int64_t *c1_out,
                        int64_t *ck_out, int *interrupted) {
  bf_backend *be = r->be;
  const int C = r->classes, B = r->batch;
  double loss_sum = 0;
  int64_t n = 0, c1 = 0, ck = 0;
  int rc = BF_OK;
  for (int64_t bi = 0; bi < r->test_batches && !rc; bi++) {
    bf_batch b;
    BF_TRY(bf_loader_next(r->test, &b));
    const bf_data_config *tc = bf_loader_config(r->test);
    if (b.count > 0) { /* a rank's shard of a short last batch may be empty */
      BF_TRY(bf_batch_io_put(r->io, &b, tc->mean, tc->std, bf_model_input(r->m), NULL));
      BF_TRY(bf_model_forward(r->m, 0));
      BF_TRY(be->download(be, r->logits_host, bf_model_logits(r->m), (size_t)B * C * sizeof(float)));
    }
    for (int i = 0; i < b.count; i++) {
      const float *l = r->logits_host + (size_t)i * C;
      int y = b.labels[i];
      if (y < 0 || y >= C) return bf_error(BF_EINVAL, "test label %d outside 0..%d", y, C - 1);
      for (int j = 0; j < C; j++)
        if (!isfinite(l[j])) return bf_error(BF_ENUM, "the evaluation gave non-finite logits");
      double mx = l[0];
      for (int j = 1; j < C; j++) mx = l[j] > mx ? l[j] : mx;
      double se = 0;
      for (int j = 0; j < C; j++) se += exp((double)l[j] - mx);
      loss_sum += log(se) + mx - (double)l[y];
      int above = 0; /* classes ranked before y (ties: lower index first) */
      for (int j = 0; j < C; j++) above += l[j] > l[y] || (l[j] == l[y] && j < y);
      c1 += above == 0;
      ck += above < r->topk;
      n++;
      if (pf->fp || r->pred) {
        int top = 0; /* ties: the lower index, as above */
        for (int j = 1; j < C; j++) top = l[j] > l[top] ? j : top;
        if (r->pred) { /* data-parallel: rank 0 writes every rank's rows */
          int64_t *q = r->pred + 3 * (size_t)i;
          q[0] = b.index[i], q[1] = y, q[2] = top;
        } else if (fprintf(pf->fp, "%" PRId64 ",%d,%d\n", b.index[i], y, top) < 0) {
          rc = bf_error(BF_EIO, "%s: write failed", r->opt->eval_predictions);
        }
      }
    }
    if (r->pred && !rc) rc = write_gathered_predictions(r, pf, b.count);
    int stop = r->opt->stop && *r->opt->stop;
    if (r->nranks > 1 && !rc) { /* every rank leaves the evaluation at the same batch */
      double v = stop;
      rc = bf_dist_sum_host(r->dist, &v, 1);
      stop = v > 0;
    }
    if (stop) {
      *interrupted = 1;
      break;
    }
  }
  *loss_sum_out = loss_sum, *n_out = n, *c1_out = c1, *ck_out = ck;
  return rc;
}

/* ------------------------------------------------------------------ setup */

static int open_data(run *r) {
  const bf_train_config *c = r->cfg;
  bf_data_config dc;
  bf_data_config_init(&dc);
  if (bf_layout_parse(c->data_layout, &dc.layout)) return bf_error(BF_EINVAL, "data.layout: %s", bf_last_error());
  dc.split_seed = c->data_split_seed;
  dc.test_fraction = c->data_test_fraction;
  dc.max_bad_fraction = c->data_max_bad_fraction;
  dc.threads = c->data_threads;
  dc.out_size = c->data_image_size;
  dc.resize = c->data_resize;
  dc.pad = c->data_pad;
  dc.hflip = c->data_hflip;
  dc.batch_size = c->batch_size;
  dc.prefetch = c->data_prefetch;
  dc.seed = c->data_seed;
  dc.want_float = 0; /* normalised by the backend (normalize_u8) */
  dc.want_u8 = 1;
  dc.shard_index = r->opt->dist ? bf_dist_rank(r->opt->dist) : 0; /* the global batch's order, this rank's share */
  dc.shard_count = r->nranks;
  if (!path_exists(c->data_root))
    return bf_error(BF_EIO, "data.root: '%s' does not exist: %s", c->data_root, strerror(errno));
  int rc = bf_dataset_open(&r->ds, c->data_root, &dc);
  if (rc) return bf_error_wrap(rc, "data.root '%s'", c->data_root);
  const bf_dataset_info *info = bf_dataset_get_info(r->ds);
  r->classes = c->model_classes ? c->model_classes : info->num_classes;
  if (r->classes < info->num_classes)
    return bf_error(BF_EINVAL, "model.classes: %d is less than the %d classes of %s", r->classes, info->num_classes,
                    c->data_root);
  rc = bf_loader_create(&r->train, r->ds, BF_SPLIT_TRAIN, &dc);
  if (rc) return bf_error_wrap(rc, "train loader");
  bf_data_config ec = dc;
  ec.hflip = -1; /* eval never flips; pad/resize auto for eval */
  ec.pad = c->data_pad > 0 ? 0 : -1;
  rc = bf_loader_create(&r->test, r->ds, BF_SPLIT_TEST, &ec);
  if (rc) return bf_error_wrap(rc, "test loader");
  {
    const bf_data_config *vc = bf_loader_config(r->test);
    r->pre.input_size = vc->out_size;
    r->pre.resize = vc->resize;
    for (int k = 0; k < 3; k++) r->pre.mean[k] = vc->mean[k], r->pre.std[k] = vc->std[k];
  }
  const bf_data_config *tc = bf_loader_config(r->train);
  r->size = tc->out_size;
  r->gbatch = c->batch_size;
  r->batch = c->batch_size / r->nranks;
  int64_t bpe = bf_loader_batches_per_epoch(r->train);
  if (bpe < 1)
    return bf_error(BF_EINVAL, "train.batch_size: %d is larger than the %zu training images of %s", c->batch_size,
                    bf_dataset_count(r->ds, BF_SPLIT_TRAIN), c->data_root);
  r->spe = c->max_steps_per_epoch > 0 && c->max_steps_per_epoch < bpe ? c->max_steps_per_epoch : bpe;
  r->test_batches = bf_loader_batches_per_epoch(r->test);
  if (c->eval_max_batches > 0 && c->eval_max_batches < r->test_batches) r->test_batches = c->eval_max_batches;
  if (r->test_batches < 1) return bf_error(BF_EINVAL, "data.root: %s has an empty test split", c->data_root);
  if (!r->opt->quiet && r->lead) {
    const bf_data_config *vc = bf_loader_config(r->test);
    fprintf(stderr,
            "data: %s (%s), %d classes, train %zu images, test %zu images, %zu bad\n"
            "data: train %dx%d crops (resize %d, pad %d, hflip %d), test %dx%d (resize %d), mean %.4f,%.4f,%.4f "
            "std %.4f,%.4f,%.4f\n"
            "data: %" PRId64 " steps/epoch of %d, %" PRId64 " test batches\n",
            c->data_root, bf_layout_name(info->layout), info->num_classes, bf_dataset_count(r->ds, BF_SPLIT_TRAIN),
            bf_dataset_count(r->ds, BF_SPLIT_TEST), info->bad_count, tc->out_size, tc->out_size, tc->resize,
            tc->pad, tc->hflip, vc->out_size, vc->out_size, vc->resize, tc->mean[0], tc->mean[1], tc->mean[2],
            tc->std[0], tc->std[1], tc->std[2], r->spe, r->gbatch, r->test_batches);
    if (r->nranks > 1)
      fprintf(stderr, "data: %d ranks, %d images of every batch each; batch norm over %s\n", r->nranks, r->batch,
              c->sync_bn ? "the global batch (train.sync_bn)" : "each rank's share");
  }
  return BF_OK;
}

/* ------------------------------------------------------------------ loop */

static void progress(run *r, int64_t epoch, int64_t step, double loss, double acc, double lr, double ips) {
  const bf_train_config *c = r->cfg;
  if (!r->lead) return;
  int64_t total = (int64_t)c->epochs * r->spe;
  int64_t left = total - r->st.global_step;
  double per_step = r->steps_this_session ? r->step_time_sum / (double)r->steps_this_session : 0;
  char eta[32];
  fmt_eta(per_step * (double)left, eta, sizeof eta);
  if (r->bar) {
    char barbuf[21];
    int fill = (int)(20.0 * (double)step / (double)r->spe);
    for (int i = 0; i < 20; i++) barbuf[i] = i < fill ? '#' : '.';
    barbuf[20] = 0;
    fprintf(stderr, "\repoch %" PRId64 "/%d [%s] %" PRId64 "/%" PRId64 " loss %.4f acc %.3f lr %.4g %.1f img/s ETA %s  ",
            epoch + 1, c->epochs, barbuf, step, r->spe, loss, acc, lr, ips, eta);
    fflush(stderr);
    r->bar_dirty = 1;
  } else {
    fprintf(stderr, "epoch %" PRId64 "/%d step %" PRId64 "/%" PRId64 " (global %" PRId64 ") loss %.4f acc %.3f lr %.4g %.1f img/s ETA %s\n",
            epoch + 1, c->epochs, step, r->spe, r->st.global_step, loss, acc, lr, ips, eta);
    fflush(stderr);
  }
}

static int stop_requested(const run *r) {
  if (r->opt->stop && *r->opt->stop) return 1;
  return r->opt->stop_after_steps > 0 && r->st.global_step >= r->opt->stop_after_steps;
}

static int do_stop(run *r, bf_train_result *res) {
  int rc = save_last(r);
  if (rc) return nonfinite_stop(r, rc, "non-finite model at the stop");
  res->stopped = 1;
  res->stop_signal = r->opt->stop ? (int)*r->opt->stop : 0;
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "type", "stop");
  cJSON_AddNumberToObject(j, "step", (double)r->st.global_step);
  cJSON_AddNumberToObject(j, "epoch", (double)r->st.epoch + 1);
  cJSON_AddNumberToObject(j, "signal", res->stop_signal);
  BF_TRY(write_json_line(r, j));
  logf_(r, "bf-train: stopped%s at global step %" PRId64 " (epoch %" PRId64 ", step %" PRId64
        "); checkpoint %s; continue with --resume %s\n",
        res->stop_signal ? " by a signal" : "", r->st.global_step, r->st.epoch + 1, r->st.step, r->last_path, r->dir);
  return BF_OK;
}

static int train_loop(run *r, bf_train_result *res) {
  const bf_train_config *c = r->cfg;
  const int B = r->gbatch, C = r->classes; /* B: images per step, all ranks together */
  bf_sgd_params hp = {0, (float)c->momentum, (float)c->weight_decay, c->nesterov};
  double win_loss = 0, win_acc = 0, win_time = 0;
  int win_n = 0;

  for (; r->st.epoch < c->epochs; r->st.epoch++, r->st.step = 0) {
    const int64_t epoch = r->st.epoch;
    double ep_loss = 0, ep_acc = 0, ep_time = 0;
    int64_t ep_n = 0;
    if (r->st.step < r->spe) BF_TRY(bf_loader_start(r->train, epoch, r->st.step));
    double lr = bf_train_lr_at(c, r->st.global_step, r->spe);
    for (; r->st.step < r->spe; r->st.step++) {
      double t0 = bf_now_sec();
      lr = bf_train_lr_at(c, r->st.global_step, r->spe);
      hp.lr = (float)lr;
      bf_batch b;
      BF_TRY(bf_loader_next(r->train, &b));
      const bf_data_config *tc = bf_loader_config(r->train);
      BF_TRY(bf_batch_io_put(r->io, &b, tc->mean, tc->std, bf_model_input(r->m), bf_model_labels(r->m)));
      BF_TRY(bf_model_forward(r->m, 1));
      /* One host sync: a non-finite loss is BF_ENUM from bf_model_loss on
       * the CPU (before backward), from the step's download on a GPU (the
       * update then holds NaN, and nothing saves it). */
      float loss = 0;
      int correct = 0, bad = 0, stop = 0;
      int lrc = bf_model_loss(r->m, (float)c->label_smoothing, NULL);
      /* Data-parallel: a rank with a non-finite loss still runs the step's
       * collectives (the others wait in them) and says so below. */
      if (lrc == BF_ENUM && r->nranks > 1) bad = 1, lrc = BF_OK;
      if (!lrc) lrc = bf_model_backward(r->m);
      if (!lrc) lrc = bf_dist_mean(r->dist, bf_model_grads(r->m), bf_model_params_len(r->m));
      if (!lrc) lrc = bf_model_sgd(r->m, &hp, c->no_decay_bn_bias);
      if (!lrc)
        lrc = bf_batch_io_finish(r->io, bf_model_loss_dev(r->m), bf_model_logits(r->m), bf_model_labels(r->m),
                                 r->batch, C, &loss, &correct);
      if (lrc && lrc != BF_ENUM) return lrc;
      if (r->nranks > 1) { /* the step's loss, accuracy, failure and stop request, agreed by all ranks */
        bad = bad || lrc == BF_ENUM || !isfinite(loss);
        if (bad && lrc != BF_ENUM) bf_error(BF_ENUM, "loss is %g on rank %d", (double)loss, bf_dist_rank(r->dist));
        r->st.global_step++; /* stop_requested counts this step as done */
        double v[4] = {bad ? 0.0 : loss, correct, bad, stop_requested(r)};
        r->st.global_step--;
        BF_TRY(bf_dist_sum_host(r->dist, v, 4));
        if (v[2] > 0 && !bad) bf_error(BF_ENUM, "non-finite loss on another rank");
        lrc = v[2] > 0 ? BF_ENUM : BF_OK;
        loss = (float)(v[0] / r->nranks), correct = (int)v[1], stop = v[3] > 0;
      }
      if (lrc == BF_ENUM || !isfinite(loss)) {
        if (lrc != BF_ENUM) bf_error(BF_ENUM, "loss is %g", (double)loss);
        res->agreed = 1;
        res->quiet = !r->lead && !bad; /* rank 0 and the rank that saw it speak */
        r->st.global_step++; /* name the step that failed (1-based) */
        int rc = nonfinite_stop(r, BF_ENUM, "non-finite loss");
        r->st.global_step--;
        return rc;
      }
      double dt = bf_now_sec() - t0;
      r->st.global_step++;
      r->steps_this_session++;
      r->step_time_sum += dt;
      double acc = (double)correct / B;
      win_loss += loss, win_acc += acc, win_time += dt, win_n++;
      ep_loss += loss, ep_acc += acc, ep_time += dt, ep_n++;
      if (r->st.global_step % c->log_every == 0 && r->metrics) {
        double ips = win_time > 0 ? win_n * B / win_time : 0;
        fprintf(r->metrics,
                "{\"type\":\"step\",\"step\":%" PRId64 ",\"epoch\":%" PRId64 ",\"epoch_step\":%" PRId64
                ",\"lr\":%.9g,\"loss\":%.6f,\"accuracy\":%.6f,\"images_per_sec\":%.2f,\"time\":%.3f}\n",
                r->st.global_step, epoch + 1, r->st.step + 1, lr, win_loss / win_n, win_acc / win_n, ips,
                r->prior_time + session_time(r));
        if (fflush(r->metrics) != 0)
          return bf_error(BF_EIO, "%s/metrics.jsonl: write failed: %s", r->dir, strerror(errno));
        if (!r->bar) progress(r, epoch, r->st.step + 1, win_loss / win_n, win_acc / win_n, lr, ips);
        win_loss = win_acc = win_time = 0;
        win_n = 0;
      }
      if (r->bar) progress(r, epoch, r->st.step + 1, loss, acc, lr, dt > 0 ? B / dt : 0);
      if (r->nranks > 1 ? stop : stop_requested(r)) {
        r->st.step++;
        return do_stop(r, res);
      }
    }
    /* end of epoch: evaluate, keep the best, checkpoint */
    double t_eval = bf_now_sec();
    double tl = 0, t1 = 0, tk = 0;
    int interrupted;
    int erc = evaluate(r, &tl, &t1, &tk, &interrupted);
    if (erc) return nonfinite_stop(r, erc, "non-finite model after the epoch");
    if (interrupted) return do_stop(r, res); /* step == spe: a resume evaluates first */
    t_eval = bf_now_sec() - t_eval;
    int improved = t1 > r->st.best_top1;
    if (improved) {
      r->st.best_top1 = t1;
      r->st.best_epoch = epoch + 1;
      char e1[32], a1[40];
      snprintf(e1, sizeof e1, "%" PRId64, epoch + 1);
      snprintf(a1, sizeof a1, "%.6f", t1);
      const char *meta[15] = {"epoch", e1, "top1", a1, NULL};
      bf_preprocess_meta pm;
      bf_preprocess_to_meta(&r->pre, &pm);
      memcpy(meta + 4, pm.kv, sizeof pm.kv);
      int rc = r->lead ? bf_ckpt_check_finite(r->m) : BF_OK;
      if (rc) return nonfinite_stop(r, rc, "non-finite model after the epoch");
      rc = r->lead ? bf_model_save(r->m, r->best_path, meta) : BF_OK;
      if (rc) return bf_error_wrap(rc, "saving %s", r->best_path);
    }
    res->top1 = t1, res->top5 = tk, res->test_loss = tl;
    res->epochs_done = (int)epoch + 1;
    r->st.epoch = epoch + 1;
    r->st.step = 0;
    int src = save_last(r);
    if (src) return nonfinite_stop(r, src, "non-finite model after the epoch");
    r->st.epoch = epoch; /* the for loop increments */
    double ips = ep_time > 0 ? ep_n * B / ep_time : 0;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "type", "epoch");
    cJSON_AddNumberToObject(j, "step", (double)r->st.global_step);
    cJSON_AddNumberToObject(j, "epoch", (double)epoch + 1);
    cJSON_AddNumberToObject(j, "lr", lr);
    if (ep_n) {
      cJSON_AddNumberToObject(j, "loss", ep_loss / ep_n);
      cJSON_AddNumberToObject(j, "accuracy", ep_acc / ep_n);
    } else {
      cJSON_AddNullToObject(j, "loss");
      cJSON_AddNullToObject(j, "accuracy");
    }
    cJSON_AddNumberToObject(j, "test_loss", tl);
    cJSON_AddNumberToObject(j, "test_top1", t1);
    cJSON_AddNumberToObject(j, "test_top5", tk);
    cJSON_AddNumberToObject(j, "topk", r->topk);
    cJSON_AddNumberToObject(j, "best_top1", r->st.best_top1);
    cJSON_AddNumberToObject(j, "images_per_sec", ips);
    cJSON_AddNumberToObject(j, "eval_sec", t_eval);
    cJSON_AddNumberToObject(j, "time", r->prior_time + session_time(r));
    BF_TRY(write_json_line(r, j));
    logf_(r, "epoch %" PRId64 "/%d: train loss %.4f acc %.3f | test loss %.4f top-1 %.4f top-%d %.4f%s | %.1f img/s, eval %.1f s\n",
          epoch + 1, c->epochs, ep_n ? ep_loss / ep_n : NAN, ep_n ? ep_acc / ep_n : NAN, tl, t1, r->topk, tk,
          improved ? " (best)" : "", ips, t_eval);
  }
  res->completed = 1;
  return BF_OK;
}

static void cleanup(run *r) {
  if (r->metrics) fclose(r->metrics);
  if (r->train) bf_loader_destroy(r->train);
  if (r->test) bf_loader_destroy(r->test);
  if (r->ds) bf_dataset_close(r->ds);
  if (r->m) bf_model_free(r->m);
  bf_batch_io_free(r->io);
  if (r->be) bf_backend_destroy(r->be);
  free(r->logits_host);
  free(r->pred);
}

int bf_train_run(const bf_train_config *cfg, const bf_train_options *opt, bf_train_result *res) {
  bf_train_options defopt;
  if (!opt) {
    bf_train_options_init(&defopt);
    opt = &defopt;
  }
  memset(res, 0, sizeof *res);
  res->top1 = res->top5 = res->test_loss = res->best_top1 = -1;
  BF_TRY(bf_train_config_validate(cfg));
  run R;
  memset(&R, 0, sizeof R);
  run *r = &R;
  r->cfg = cfg;
  r->opt = opt;
  r->dist = opt->dist;
  r->nranks = bf_dist_size(r->dist);
  r->lead = bf_dist_rank(r->dist) == 0;
  r->session_start = bf_now_sec();
  r->last_saved = -1;
  r->bar = r->lead && (opt->progress < 0 ? isatty(STDERR_FILENO) : opt->progress);
  bf_train_config_run_dir(cfg, r->dir, sizeof r->dir);
  join(res->run_dir, sizeof res->run_dir, r->dir, "");
  join(r->last_path, sizeof r->last_path, r->dir, "/last.safetensors");
  join(r->best_path, sizeof r->best_path, r->dir, "/best.safetensors");
  int rc = BF_OK, agreed = 0;
  if (cfg->batch_size % r->nranks) {
    rc = bf_error(BF_EINVAL, "train.batch_size: %d is not divisible by the %d ranks (each rank takes an equal share "
                  "of the global batch)", cfg->batch_size, r->nranks);
    goto done;
  }

  if (opt->resume) {
    if (!path_exists(r->last_path)) {
      rc = bf_error(BF_EIO, "--resume %s: no checkpoint %s (the run never saved one)", r->dir, r->last_path);
      goto done;
    }
  } else if (path_exists(r->last_path) && !opt->force) {
    rc = bf_error(BF_EINVAL, "run directory %s already holds a run (%s): use --resume %s, --force, or another run_dir",
                  r->dir, r->last_path, r->dir);
    goto done;
  }
  if (!opt->resume && opt->force && r->lead) { /* a fresh run: nothing of the old one may survive */
    static const char *const old[] = {"/last.safetensors", "/last.state.safetensors", "/best.safetensors",
                                      "/result.json", NULL};
    for (int i = 0; old[i]; i++) {
      char p[BF_TRAIN_PATH_MAX + 32];
      join(p, sizeof p, r->dir, old[i]);
      if (unlink(p) != 0 && errno != ENOENT) {
        rc = bf_error(BF_EIO, "--force: cannot remove %s: %s", p, strerror(errno));
        goto done;
      }
    }
  }
  if (!opt->quiet && r->lead) {
    fprintf(stderr, "bf-train: run directory %s%s\n", r->dir, opt->resume ? " (resuming)" : "");
    bf_train_config_write(cfg, stderr);
    fputc('\n', stderr);
  }
  if ((rc = open_data(r))) goto done;
  if (r->lead && (rc = bf_mkdirs(r->dir))) goto done;
  if ((rc = bf_dist_place(r->dist, cfg->backend))) goto done;

  if ((rc = bf_backend_create_precision(&r->be, cfg->backend, cfg->threads, cfg->precision))) {
    rc = bf_error_wrap(rc, "backend '%s'", cfg->backend);
    goto done;
  }
  bf_model_config mc = {r->classes, cfg->model_split_after, cfg->model_split_after ? cfg->model_d_r : 0,
                        cfg->model_quant_bits};
  if ((rc = bf_model_create(&r->m, r->be, &mc))) goto done;
  if ((rc = bf_model_plan(r->m, r->batch, r->size, r->size))) goto done;
  r->topk = r->classes < 5 ? r->classes : 5;
  r->logits_host = bf_malloc((size_t)r->batch * r->classes * sizeof(float), "logits host buffer");
  if (!r->logits_host) {
    rc = BF_ENOMEM;
    goto done;
  }
  if ((rc = bf_batch_io_create(&r->io, r->be, r->batch, r->size))) goto done;
  if (r->nranks > 1 && opt->eval_predictions) {
    r->pred = bf_malloc(3 * (size_t)r->batch * (r->nranks + 1) * sizeof(int64_t), "eval predictions");
    if (!r->pred) {
      rc = BF_ENOMEM;
      goto done;
    }
  }

  if (opt->resume) {
    if ((rc = bf_ckpt_load(r->m, r->last_path, &r->st))) goto done;
    if (r->st.steps_per_epoch != r->spe) {
      rc = bf_error(BF_EINVAL, "--resume: the checkpoint has %" PRId64 " steps per epoch but this config gives %" PRId64
                    " (data set, batch size or train.max_steps_per_epoch changed)",
                    r->st.steps_per_epoch, r->spe);
      goto done;
    }
    if (r->st.ranks != r->nranks) {
      rc = bf_error(BF_EINVAL, "--resume %s: the checkpoint was trained by %" PRId64 " rank%s but this run has %d; "
                    "resume with %" PRId64 " (the data order is the same, the batch-norm statistics and the "
                    "momentum would not be)", r->dir, r->st.ranks, r->st.ranks == 1 ? "" : "s", r->nranks,
                    r->st.ranks);
      goto done;
    }
    if (r->lead && (r->st.seed != cfg->seed || r->st.data_seed != cfg->data_seed))
      fprintf(stderr, "bf-train: warning: seeds differ from the checkpoint's; the run will not reproduce\n");
    r->prior_time = r->st.train_time;
    r->last_saved = r->st.global_step;
    if (r->st.epoch >= cfg->epochs) {
      rc = bf_error(BF_EINVAL, "--resume %s: the run already finished its %d epochs (raise train.epochs to go on)",
                    r->dir, cfg->epochs);
      goto done;
    }
    if (r->lead)
      fprintf(stderr, "bf-train: resuming at epoch %" PRId64 ", step %" PRId64 " (global step %" PRId64 ")\n",
            r->st.epoch + 1, r->st.step, r->st.global_step);
  } else {
    if ((rc = bf_model_init(r->m, cfg->seed))) goto done;
    if ((rc = bf_model_zero_momentum(r->m))) goto done;
    if (cfg->init[0]) {
      int loaded = 0, kept = 0;
      if ((rc = bf_model_load_matching(r->m, cfg->init, &loaded, &kept))) {
        rc = bf_error_wrap(rc, "init");
        goto done;
      }
      if (r->lead)
        fprintf(stderr, "bf-train: warm start from %s: %d tensors loaded, %d freshly initialised\n", cfg->init,
                loaded, kept);
    }
    r->st.best_top1 = -1;
    r->st.seed = cfg->seed;
    r->st.data_seed = cfg->data_seed;
    r->st.steps_per_epoch = r->spe;
    r->st.ranks = r->nranks;
  }

  /* run directory files: rank 0's */
  char path[BF_TRAIN_PATH_MAX + 32];
  if (r->lead) {
    join(path, sizeof path, r->dir, "/config.ini");
    if ((rc = bf_train_config_save(cfg, path))) goto done;
    join(path, sizeof path, r->dir, "/split.csv");
    if ((rc = bf_dataset_write_split(r->ds, path))) goto done;
    join(path, sizeof path, r->dir, "/metrics.jsonl");
    if (opt->resume) {
      if ((rc = bf_train_metrics_truncate(path, r->st.global_step))) goto done;
    }
    r->metrics = fopen(path, opt->resume ? "a" : "w");
    if (!r->metrics) {
      rc = bf_error(BF_EIO, "%s: cannot open: %s", path, strerror(errno));
      goto done;
    }
  }
  /* Every rank is ready (or all stop here with one message), then the
   * collectives are set up: an error from here on ends the job (main). */
  int show = 1;
  agreed = 1;
  rc = bf_dist_agree(r->dist, rc, &show);
  res->agreed = 1, res->quiet = !show;
  if (rc) goto done;
  res->agreed = 0;
  if ((rc = bf_dist_attach(r->dist, r->be, cfg->sync_bn))) goto done;

  /* model facts for result.json */
  res->num_classes = r->classes;
  res->split_after = mc.split_after;
  res->d_r = mc.d_r;
  res->image_size = r->size;
  res->num_params = bf_model_num_params(r->m);
  res->steps_per_epoch = r->spe;
  res->topk = r->topk;
  if (mc.split_after) {
    bf_model_split_features(r->m, &res->feat_h, &res->feat_w, &res->feat_c);
  } else {
    res->feat_h = res->feat_w = r->size, res->feat_c = 3;
  }
  res->offload_bytes_per_image = (size_t)res->feat_h * res->feat_w * res->feat_c;
  if (!opt->quiet && r->lead)
    fprintf(stderr,
            "model: ResNet-50, %d classes, split_after %d, d_r %d, %zu parameters; offloaded %dx%dx%d = %zu bytes/image "
            "at 8 bits; backend %s, %d threads\n",
            r->classes, mc.split_after, mc.d_r, res->num_params, res->feat_h, res->feat_w, res->feat_c,
            res->offload_bytes_per_image, r->be->name, r->be->threads);
  if (mc.quant_bits && !opt->quiet) {
    float clip;
    if ((rc = bf_model_quant_clip_get(r->m, &clip))) goto done;
    fprintf(stderr, "quantiser: reduction output at %d bits, learned clip starting at %.6g\n", mc.quant_bits,
            clip);
  }

  rc = train_loop(r, res);
  if (r->bar_dirty) fputc('\n', stderr);
  r->bar_dirty = 0;
  res->global_step = r->st.global_step;
  res->best_top1 = r->st.best_top1;
  res->best_epoch = (int)r->st.best_epoch;
  res->train_time = r->prior_time + session_time(r);
  res->images_per_sec = r->step_time_sum > 0 ? (double)r->steps_this_session * r->gbatch / r->step_time_sum : 0;
  if (!rc && res->completed) {
    if (res->epochs_done == 0) res->epochs_done = cfg->epochs;
    rc = r->lead ? bf_train_write_result(r->cfg, res, r->be->threads, r->dir) : BF_OK;
    if (!rc) {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "type", "end");
      cJSON_AddNumberToObject(j, "step", (double)r->st.global_step);
      cJSON_AddNumberToObject(j, "top1", res->top1);
      cJSON_AddNumberToObject(j, "top5", res->top5);
      cJSON_AddNumberToObject(j, "train_time_sec", res->train_time);
      rc = write_json_line(r, j);
    }
    if (!rc && r->lead)
      fprintf(stderr, "bf-train: done: test top-1 %.4f, top-%d %.4f (best %.4f at epoch %d), %.1f s; %s/result.json\n",
              res->top1, r->topk, res->top5, res->best_top1, res->best_epoch, res->train_time, r->dir);
  }
done:
  if (!agreed) { /* a failure before the agreement above: every rank still takes part in it */
    int show = 1;
    rc = bf_dist_agree(r->dist, rc, &show);
    res->agreed = 1, res->quiet = !show;
  }
  cleanup(r);
  return rc;
}
