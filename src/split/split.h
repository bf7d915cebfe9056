/* Deployment of split models: export (checkpoint -> BN-folded device and
 * server halves + manifest.json) and reading a deploy directory that holds
 * one subfolder per split point (docs/split.md). */
#ifndef BF_SPLIT_H
#define BF_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "model.h"
#include "quant.h"
#include "safetensors.h"

#define BF_DEPLOY_FORMAT "butterfly-deploy-1"
#define BF_HALF_FORMAT "butterfly-half-1"

/* bf_export_opts.formats: bits */
enum { BF_EXPORT_SAFETENSORS = 1, BF_EXPORT_ONNX = 2 };

typedef struct bf_export_opts {
  /* Preprocessing: each field left unset (0, -1, have_* 0) comes from the
   * checkpoint's recorded recipe (preprocess_recipe.h); a checkpoint without
   * one falls back to 224, input*8/7 and ImageNet's mean/std, with a warning. */
  int input_h, input_w;  /* network input (0: recipe) */
  int resize;            /* shorter side before the center crop (-1: recipe; 0: none) */
  float mean[3], std[3]; /* normalisation of x/255 */
  int have_mean, have_std;
  const char *class_names_file; /* one name a line; NULL: class_<i> */
  bf_qscheme qscheme;    /* default quantisation the client uses */
  bf_codec codec;        /* default lossless stage */
  int zstd_level;
  int formats;           /* BF_EXPORT_* bits: safetensors halves + manifest, ONNX halves */
  /* rANS tables (rans.h) estimated on the training split of this data set
   * root (NULL: no tables, codec rans unavailable) from rans_images images */
  const char *rans_data;
  int rans_images;       /* BF_RANS_IMAGES_DEFAULT */
  const struct bf_data_config *rans_data_cfg; /* the train/test split of rans_data (NULL: bf_data's defaults) */
} bf_export_opts;
#define BF_RANS_IMAGES_DEFAULT 1024
#define BF_RANS_TABLES_FILE "rans_tables.bin"

void bf_export_opts_init(bf_export_opts *o);
/* Writes out_dir/split-<k>/{device,server}.safetensors and manifest.json
 * (BF_EXPORT_SAFETENSORS) and/or {device,server}.onnx (BF_EXPORT_ONNX).
 * subdir (may be NULL) receives the subfolder path. */
int bf_split_export(const char *checkpoint, const char *out_dir, const bf_export_opts *o, char *subdir, size_t cap);

/* The eval-mode network with every BN folded into the conv before it
 * (bn_math.h's coefficients), in memory: the tensor sets bf-export writes
 * as the halves, and what the engine runs (bf_engine_from_model). With a
 * butterfly unit part[0] is the device half (stem, RB1..RBk, reduce) and
 * part[1] the server half (restore, RBk+1..RB16, fc); without one
 * (split_after 0) part[0] is the whole network. The writers point into bufs. */
typedef struct bf_folded {
  bf_st_writer part[2];
  int n_parts;
  float **bufs;
  int n_bufs, cap_bufs;
} bf_folded;

/* Folds a loaded model's current weights and running statistics into *f
 * (freed on error). */
int bf_fold_model(bf_model *m, bf_folded *f);
void bf_folded_free(bf_folded *f);

/* Spatial size of RBk's output for an input of `in` pixels. */
int bf_feature_size(int in, int k);

typedef struct bf_deploy_split {
  char dir[512];
  char device_path[600], server_path[600];
  uint8_t id[BF_MODEL_ID_LEN]; /* SHA-256 of manifest.json: the model id */
  char id_hex[65];
  int split_after, d_r, num_classes;
  int in_h, in_w, resize;
  float mean[3], std[3];
  int feat_h, feat_w;
  bf_qscheme qscheme;
  bf_codec codec;
  int zstd_level;
  /* quantization.bits: 8 when absent (today's: the range of each image);
   * with quantization.clip > 0 the model was trained quantisation-aware and
   * the client quantises with that fixed range (quant.h, bf_qfixed). */
  int bits;
  float clip; /* 0: none */
  char **class_names; /* num_classes entries */
  uint8_t device_sha[32], server_sha[32];
  struct bf_rans_tables *rans; /* quantization.rans (SHA-256 checked at open); NULL: none */
} bf_deploy_split;

/* The quantiser bf-client uses for s's features: its fixed range for a
 * quantisation-aware model (*buf, returned), else NULL (the range of each
 * image, 8 bits). */
static inline const bf_qfixed *bf_deploy_qfixed(const bf_deploy_split *s, bf_qfixed *buf) {
  if (!(s->clip > 0)) return NULL;
  buf->bits = s->bits;
  buf->clip = s->clip;
  return buf;
}

typedef struct bf_deploy {
  bf_deploy_split *splits; /* sorted by split_after */
  int n;
} bf_deploy;

/* dir either holds manifest.json itself or subfolders that do. */
int bf_deploy_open(bf_deploy *d, const char *dir);
void bf_deploy_close(bf_deploy *d);
/* Checks the SHA-256 of the device and/or server file against the manifest. */
int bf_deploy_verify(const bf_deploy_split *s, int device, int server);
/* The engine's metadata (from the weights: split point, D_r, classes) must
 * match the manifest's; what names the half ("server half", ...). */
struct bf_engine;
int bf_deploy_check_engine(const bf_deploy_split *s, const struct bf_engine *e, const char *what);
const bf_deploy_split *bf_deploy_find(const bf_deploy *d, int split_after);
const bf_deploy_split *bf_deploy_find_id(const bf_deploy *d, const uint8_t *id);

#endif
