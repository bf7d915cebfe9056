/* Training checkpoints: a weights file (the model's own safetensors, loadable
 * by bf-infer and bf_model_load) plus a training-state sidecar
 * (<base>.state.safetensors) holding the SGD momentum per tensor and the loop
 * position. Both carry the same global_step in their metadata so a pair
 * torn apart by a crash is detected at resume. Format: docs/formats.md. */
#ifndef BF_TRAIN_CHECKPOINT_H
#define BF_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "model.h"
#include "preprocess_recipe.h"

#define BF_TRAIN_STATE_FORMAT "butterfly-train-state-v1"

typedef struct bf_train_state {
  int64_t epoch;       /* epoch to continue in (0-based) */
  int64_t step;        /* step within that epoch to run next (may equal steps_per_epoch: evaluate next) */
  int64_t global_step; /* optimizer steps done */
  int64_t steps_per_epoch;
  double best_top1;    /* -1 before the first evaluation */
  int64_t best_epoch;  /* 1-based; 0 = none */
  double train_time;   /* seconds spent in this run so far, all sessions */
  uint64_t seed, data_seed;
  int64_t ranks;       /* data-parallel processes that trained it (1; checkpoints without the key: 1) */
} bf_train_state;

/* BF_ENUM with the tensor's name if a parameter or BN statistic is NaN/Inf. */
int bf_ckpt_check_finite(bf_model *m);
/* Writes weights (after bf_ckpt_check_finite: a non-finite model is never
 * written)  to `weights_path` and the state to its sidecar. `pre` (may be
 * NULL) is the evaluation preprocessing, recorded in the weights' metadata
 * for bf-export. */
int bf_ckpt_save(bf_model *m, const char *weights_path, const bf_train_state *st, const bf_preprocess *pre);
/* Strictly loads the weights (params, BN stats, counters) and the sidecar
 * (momentum and state). */
int bf_ckpt_load(bf_model *m, const char *weights_path, bf_train_state *st);
/* "<weights without .safetensors>.state.safetensors" */
void bf_ckpt_state_path(const char *weights_path, char *out, size_t n);

#endif
