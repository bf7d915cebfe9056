/* The training loop, callable in-process (bf-train, the split search).
 *
 *   bf_train_config cfg; bf_train_config_defaults(&cfg); ... set keys ...
 *   bf_train_options opt; bf_train_options_init(&opt);
 *   bf_train_result res;
 *   if (bf_train_run(&cfg, &opt, &res)) fprintf(stderr, "%s\n", bf_last_error());
 *
 * Run directory layout, metrics.jsonl and result.json: docs/formats.md. */
#ifndef BF_TRAIN_TRAINER_H
#define BF_TRAIN_TRAINER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dist.h"

typedef struct bf_train_options {
  /* Continue the run in cfg's run directory from its last.safetensors. */
  int resume;
  /* Start even if the run directory already holds a checkpoint (overwrites it). */
  int force;
  /* When *stop becomes non-zero (a signal handler stores the signal number),
   * the loop saves a checkpoint after the current step and returns with
   * result.stopped = 1, result.stop_signal = *stop. May be NULL. */
  volatile sig_atomic_t *stop;
  /* > 0: stop the same way once this many optimizer steps are done in total
   * (stop_signal = 0). For tests and time-sliced runs. */
  int64_t stop_after_steps;
  /* -1 = auto (progress bar when stderr is a terminal), 0 = plain lines, 1 = bar. */
  int progress;
  /* 1 = no effective-config dump and no data set summary. */
  int quiet;
  /* Non-NULL: every evaluation (re)writes this CSV, atomically, with one row
   * per evaluated test image: "index,label,top1" (index: the sample's place
   * in the test split, as bf-data export-png names its PNGs). */
  const char *eval_predictions;
  /* Data-parallel training (dist.h): this process is one rank of d. NULL =
   * one process. Rank 0 alone prints and writes the run directory. */
  bf_dist *dist;
} bf_train_options;

void bf_train_options_init(bf_train_options *o);

typedef struct bf_train_result {
  int completed;     /* all epochs done (result.json written) */
  int stopped;       /* stopped early by *stop or stop_after_steps (checkpoint saved) */
  int stop_signal;   /* the value *stop held, 0 for stop_after_steps */
  int epochs_done;
  int64_t global_step;
  int64_t steps_per_epoch;
  double top1, top5, test_loss; /* last evaluation (-1 if none) */
  int topk;                     /* min(5, classes) */
  double best_top1;
  int best_epoch;
  int num_classes, split_after, d_r, image_size;
  size_t num_params;
  int feat_h, feat_w, feat_c;        /* offloaded tensor (input image when split_after = 0) */
  size_t offload_bytes_per_image;    /* feat_h*feat_w*feat_c at 8 bits */
  double train_time;                 /* seconds, all sessions of the run */
  double images_per_sec;             /* training throughput of this session */
  char run_dir[BF_TRAIN_PATH_MAX];
  /* Data-parallel failures: agreed = every rank returns the error (no rank
   * waits for another); quiet = another rank prints it. */
  int agreed, quiet;
} bf_train_result;

/* Returns 0 when the run completed or was stopped on request (see result),
 * BF_ENUM for a non-finite loss (the last checkpoint is kept), another
 * BF_E* code for any other failure. */
int bf_train_run(const bf_train_config *cfg, const bf_train_options *opt, bf_train_result *res);

/* Learning rate of optimizer step `step` (0-based, global). */
double bf_train_lr_at(const bf_train_config *cfg, int64_t step, int64_t steps_per_epoch);

#endif
