/* Private to the model: its layer records and state, shared by model.c
 * (graph, arena, forward/backward, SGD) and model_io.c (files). */
#ifndef BF_MODEL_INTERNAL_H
#define BF_MODEL_INTERNAL_H

#include "bn_math.h"
#include "model.h"
#include "quant_math.h"

#define BN_EPS ((float)BF_BN_EPS)
#define BN_MOMENTUM 0.1f
#define MODEL_FORMAT "butterfly-1"

typedef struct conv_l {
  int in, out, k, stride, pad;
  int entry; /* index of the weight entry */
  bf_conv_desc d;
  float *y; /* conv output (pre-BN) */
} conv_l;

typedef struct bn_l {
  int c;
  int e_gamma, e_beta, e_mean, e_var, e_count;
  float *save_mean, *save_invstd;
  float *y; /* BN output (post add/ReLU) */
} bn_l;

typedef struct block_l {
  int in_c, mid, out_c, stride, has_ds;
  int h_in, w_in, h_out, w_out;
  conv_l c1, c2, c3, ds;
  bn_l b1, b2, b3, bd;
} block_l;

struct bf_model {
  bf_model_config cfg;
  bf_backend *be;

  bf_entry *entries;
  int n_entries, cap_entries;
  int n_bn;

  float *params, *grads, *mom, *stats;
  size_t n_params, n_decay, n_stats;
  int64_t *counters;

  conv_l stem;
  bn_l stem_bn;
  block_l blocks[BF_NUM_RB];
  conv_l red, res;
  bn_l red_bn, res_bn;
  int fc_w, fc_b;
  int clip_e;      /* the quantiser's clip entry (quant_bits > 0), else -1 */
  float *qy;       /* the quantiser's output (arena): what the restoration reads */
  uint8_t *codes;  /* its codes (arena) */

  /* arena */
  int pn, ph, pw;
  void *arena;
  float *input, *pool_out, *gap, *logits, *dlogits, *dgap, *loss;
  int32_t *labels;
  float *g[4];
  void *ws;
  size_t ws_bytes;
  int mh, mw; /* maxpool output size */
  bf_pool_desc pool;
  int trained_forward; /* last forward: 1 train, 0 eval, -1 none since planning */
};

#define PARAM(m, idx) ((m)->params + (m)->entries[idx].offset)
#define GRAD(m, idx) ((m)->grads + (m)->entries[idx].offset)
#define STAT(m, idx) ((m)->stats + (m)->entries[idx].offset)

/* Sets the quantiser's clip from the reduction's BN (model.c). */
int bf_model_quant_clip_from_bn(bf_model *m);

#endif
