/* ONNX form of the BN-folded halves (bf-export --format onnx, docs/split.md
 * "ONNX"): the same folded tensors as the safetensors halves, as a graph of
 * standard ONNX ops (opset 13). */
#ifndef BF_EXPORT_ONNX_H
#define BF_EXPORT_ONNX_H

#include "model.h"
#include "safetensors.h"

/* Writes `path` (atomically) from a folded half held in `half` (the tensors
 * export.c folded, named as in device/server.safetensors). server = 0: the
 * device half, input "image" float [N,3,H,W], output "features" float
 * [N,D_r,h,w] (after the reduction's ReLU); server = 1: input "features",
 * output "logits" [N,num_classes]. N, H, W are symbolic. `source` names the
 * checkpoint in error messages. */
int bf_onnx_write_half(const bf_st_writer *half, const bf_model_config *cfg, int server, const char *source,
                       const char *path);

#endif
