/* ResNet-50 (torchvision v1.5) with an optional butterfly unit, built only
 * from the op interface in backend.h.
 *
 * Memory: parameters, gradients and momentum are each ONE backend buffer with
 * the same layout (weight-decayed tensors first, then BN affine and biases,
 * so "no decay for BN and bias" is a second contiguous range). BN running
 * statistics are one more buffer. Activations, saved BN statistics, gradient
 * scratch and the conv workspace come from one arena planned per
 * (batch, height, width); the training step allocates nothing. */
#ifndef BF_MODEL_H
#define BF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define BF_NUM_RB 16

typedef struct bf_model_config {
  int num_classes;
  int split_after; /* 0 = plain ResNet-50; k in 1..16 = butterfly after RBk */
  int d_r;         /* reduced channels (ignored when split_after == 0) */
  int quant_bits;  /* 0: float features; 2..8: the reduction's output goes through the b-bit fake
                      quantiser (quant_math.h) with a learned clip, butterfly.reduce.quant.clip */
} bf_model_config;

int bf_model_config_check(const bf_model_config *cfg);

/* Residual block RBk (k = 1..16) of ResNet-50 v1.5, torchvision's
 * layer<stage+1>.<index>: the layout used by the model, the split engine
 * and the exporter (resnet50.c). */
typedef struct bf_rb_info {
  int stage, index;   /* torchvision layer<stage+1>.<index> */
  int in_c, mid, out_c;
  int stride;         /* of conv2 (3x3) and the downsample: 2 in the first block of stages 1..3 */
  int has_downsample; /* the first block of each stage */
  int out_stride;     /* downsampling of the block's output relative to the input (4..32) */
  char prefix[16];    /* "layer<stage+1>.<index>" */
} bf_rb_info;
/* BF_EINVAL when k is outside 1..16. */
int bf_rb_layout(int k, bf_rb_info *out);
/* Around the blocks: the stem (conv1 7x7 stride 2 pad 3, bn1, ReLU, maxpool
 * 3x3 stride 2 pad 1) and the head (global average pool over RB16's output,
 * fc). Used by resnet50.c, the model and the split engine. */
enum {
  BF_STEM_C = 64, BF_STEM_K = 7, BF_STEM_STRIDE = 2, BF_STEM_PAD = 3,
  BF_POOL_K = 3, BF_POOL_STRIDE = 2, BF_POOL_PAD = 1,
  BF_FEAT_C = 2048 /* RB16's output channels: the fc's input */
};
/* Channels D of RBk's output (256, 512, 1024 or 2048; 0 for a bad k). */
int bf_rb_channels(int k);
/* Spatial downsampling factor of RBk's output relative to the input (4..32). */
int bf_rb_stride(int k);

typedef enum bf_entry_kind {
  BF_ENTRY_PARAM,   /* trainable, float32 */
  BF_ENTRY_STAT,    /* BN running_mean / running_var, float32 */
  BF_ENTRY_COUNTER  /* BN num_batches_tracked, int64 scalar */
} bf_entry_kind;

/* One tensor of the state_dict, in torchvision's order. */
typedef struct bf_entry {
  char name[64];
  bf_entry_kind kind;
  int ndim;
  int64_t shape[4]; /* as in the file (conv weights OIHW) */
  size_t numel;
  size_t offset;    /* in params (PARAM), stats (STAT), or index into counters */
  int is_conv;      /* stored OHWI in memory, OIHW in files */
  int decay;        /* weight decay applies unless disabled for BN/bias */
} bf_entry;

typedef struct bf_model bf_model;

int bf_model_create(bf_model **out, bf_backend *be, const bf_model_config *cfg);
void bf_model_free(bf_model *m);
const bf_model_config *bf_model_cfg(const bf_model *m);
bf_backend *bf_model_backend(const bf_model *m);

/* torchvision's initialisation (Kaiming normal fan_out for convs, BN 1/0,
 * nn.Linear default for fc) from a seed; identical on every machine. */
int bf_model_init(bf_model *m, uint64_t seed);

/* State-dict view. */
int bf_model_num_entries(const bf_model *m);
const bf_entry *bf_model_entry(const bf_model *m, int i);
size_t bf_model_num_params(const bf_model *m); /* trainable scalars */

/* Device buffers (same layout). */
float *bf_model_params(bf_model *m);
float *bf_model_grads(bf_model *m);
float *bf_model_momentum(bf_model *m);
float *bf_model_stats(bf_model *m);
int64_t *bf_model_counters(bf_model *m); /* host memory */
size_t bf_model_stats_len(const bf_model *m);
/* Floats in each of params/grads/momentum: more than bf_model_num_params()
 * because every tensor starts 64-byte aligned (the padding holds zeros). */
size_t bf_model_params_len(const bf_model *m);
size_t bf_model_decay_len(const bf_model *m); /* params [0, decay_len) are decayed */

/* Plans the arena for this input shape (no-op if unchanged). */
int bf_model_plan(bf_model *m, int n, int h, int w);
/* Arena tensors the caller fills before forward/loss (device memory). */
float *bf_model_input(bf_model *m);    /* [n, h, w, 3] normalised NHWC */
int32_t *bf_model_labels(bf_model *m); /* [n] */
const float *bf_model_logits(bf_model *m); /* [n, classes] after forward */

/* train != 0: batch statistics, running stats and counters updated. */
int bf_model_forward(bf_model *m, int train);
/* Mean softmax cross-entropy of the last forward against bf_model_labels;
 * also prepares d loss / d logits for backward. *loss_host (if not NULL)
 * receives the loss, which waits for the backend. */
int bf_model_loss(bf_model *m, float label_smoothing, float *loss_host);
/* The loss of the last bf_model_loss, in backend memory (1 float). */
const float *bf_model_loss_dev(bf_model *m);
/* Gradients of the loss into bf_model_grads (assigned), through the BN
 * statistics of the last forward: batch statistics after forward(train=1),
 * the running statistics held constant after forward(train=0) (PyTorch's
 * model.eval(); fine-tuning with frozen BN). Needs a forward and a loss. */
int bf_model_backward(bf_model *m);
/* One SGD step over the contiguous buffers; no_decay_bn_bias exempts BN and
 * biases from weight decay. */
int bf_model_sgd(bf_model *m, const bf_sgd_params *hp, int no_decay_bn_bias);
int bf_model_zero_momentum(bf_model *m);

/* Device output of the reduction unit after a forward (what is uploaded):
 * [n, h/stride, w/stride, d_r]; NULL without a butterfly. With a quantiser
 * (quant_bits > 0) the dequantised features the restoration reads. */
const float *bf_model_split_features(bf_model *m, int *h, int *w, int *c);
/* With a quantiser: its codes of the last forward (backend memory, uint8,
 * same layout as the features) and the clip parameter (1 float, backend
 * memory); NULL without one. */
const uint8_t *bf_model_split_codes(bf_model *m);
const float *bf_model_quant_clip(bf_model *m);
/* The quantiser's clip (effective value, bf_quant_clip) on the host. */
int bf_model_quant_clip_get(bf_model *m, float *clip);
/* Safetensors name of the quantiser's clip. */
#define BF_QUANT_CLIP_NAME "butterfly.reduce.quant.clip"

/* Conv weight layouts: OHWI (memory) <-> OIHW (files); shape is OIHW. */
void bf_layout_ohwi_to_oihw(const float *src, float *dst, const int64_t shape[4]);
void bf_layout_oihw_to_ohwi(const float *src, float *dst, const int64_t shape[4]);

/* Files. Save writes the full state_dict with torchvision names plus
 * __metadata__ (format, split_after, d_r, num_classes and extra pairs). */
int bf_model_save(bf_model *m, const char *path, const char *const *extra_meta /* k,v,...,NULL */);
/* Strict load: every tensor present, right dtype and shape, nothing extra. */
int bf_model_load(bf_model *m, const char *path);
/* Warm start: loads every tensor of `path` whose name and shape match this
 * model (e.g. a plain ResNet-50 into a butterfly model) and leaves the rest
 * as they are. Counts are optional. A file sharing nothing is an error. */
int bf_model_load_matching(bf_model *m, const char *path, int *n_loaded, int *n_kept);
/* Reads the model config from a weights file's metadata. */
int bf_model_config_from_file(const char *path, bf_model_config *cfg);
/* Host copy of one state_dict entry in file layout (conv OIHW). src selects
 * params or grads for PARAM entries. dst holds entry->numel floats. */
int bf_model_entry_get(bf_model *m, const bf_entry *e, int from_grads, float *dst);

#endif
