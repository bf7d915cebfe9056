/* Folded inference engine: a list of conv(+bias)(+residual)(+ReLU) /
 * maxpool / global-avgpool / linear steps built from one or more BN-folded
 * safetensors halves (bf-export) and executed through the backend ops.
 *
 * The same engine runs the device half (input image -> reduction output),
 * the server half (reduction output -> logits) and the whole model (both
 * files, or a model folded in memory: bf-infer eval, bf-bench --mode infer). Which part of ResNet-50 a file holds is read from the tensor names
 * present; the parts must be contiguous in network order:
 *   stem, RB1..RBk, reduce, restore, RBk+1..RB16, head.
 * Each conv (with its bias, the block's residual add and ReLU) is one fused
 * backend op (conv_infer_*: oneDNN on the CPU when built with it), prepared
 * (weights packed) once per planned shape. Activations live in one arena
 * planned per input shape; buffers are reused once their last reader has
 * run, and a block's last conv writes its output over its shortcut. A run
 * allocates nothing.
 *
 * An engine is not thread-safe: one caller at a time, like the backend
 * context it runs on (the server gives each worker its own context and
 * engines). */
#ifndef BF_ENGINE_H
#define BF_ENGINE_H

#include "backend.h"
#include "model.h"

typedef struct bf_engine bf_engine;

/* Loads the folded tensors of `n_paths` files (metadata must agree; every
 * tensor of every file must be used). */
int bf_engine_load(bf_engine **out, bf_backend *be, const char *const *paths, int n_paths);
/* The same engine from a loaded model (a checkpoint, or a random init) with
 * no file in between: its BN folded in memory by bf-export's fold
 * (bf_fold_model), the whole network, or both halves when it has a butterfly
 * unit. `origin` names the model in messages. Frees m (also on error) once
 * folded, before the engine copies the folded weights, so that the training
 * model (parameters, gradients, momentum) and the engine never coexist. */
int bf_engine_from_model(bf_engine **out, bf_backend *be, bf_model *m, const char *origin);
void bf_engine_free(bf_engine *e);

int bf_engine_split_after(const bf_engine *e);
int bf_engine_d_r(const bf_engine *e);
int bf_engine_num_classes(const bf_engine *e);
int bf_engine_input_channels(const bf_engine *e);
/* "stem..RB3+reduce" style summary of the part this engine runs. */
const char *bf_engine_describe(const bf_engine *e);
/* 1 if the output is the classifier's logits, 0 if a feature map. */
int bf_engine_outputs_logits(const bf_engine *e);
/* The reduction's quantiser recorded in the halves (quantisation-aware
 * model): bits 0 and clip 0 without one. The engine applies it between reduce
 * and restore when it runs both. */
void bf_engine_quant(const bf_engine *e, int *bits, float *clip);

/* Plans the arena for input [n, h, w, input_channels] and reports the output
 * shape [n, oh, ow, oc] (logits: oh = ow = 1, oc = classes). No-op if unchanged.
 * Every shape planned is kept (its conv plans, descriptors and buffer
 * offsets): switching back to it allocates and creates nothing (bf-serve
 * switches batch sizes per batch; with oneDNN a new conv plan costs about one
 * inference and a packed copy of the weights). The activation arena only
 * grows and is shared by all shapes: plan the largest first. */
int bf_engine_plan(bf_engine *e, int n, int h, int w, int *oh, int *ow, int *oc);
/* GFLOP (2 x multiply-adds of the convolutions and the classifier) of one
 * image at the planned input size; 0 before a plan. For benches: a time
 * becomes GFLOP/s to hold against the CPU's peak. */
double bf_engine_gflop_per_image(const bf_engine *e);
/* Runs on host memory: in holds n*h*w*c floats (NHWC), out n*oh*ow*oc. */
int bf_engine_run(bf_engine *e, const float *in, float *out);

#endif
