/* The bf-train key table and everything driven by it. */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "keytab.h"
#include "model.h"

#define OFF(f) offsetof(bf_train_config, f)
#define SZ(f) sizeof(((bf_train_config *)0)->f)
#define STR(k, f, d, h) {k, BF_KEY_STR, OFF(f), SZ(f), d, 0, 0, NULL, h, NULL}
#define ENUM(k, f, d, ch, h) {k, BF_KEY_ENUM, OFF(f), SZ(f), d, 0, 0, ch, h, NULL}
#define INT(k, f, d, lo, hi, h) {k, BF_KEY_INT, OFF(f), 0, d, lo, hi, NULL, h, NULL}
#define U64(k, f, d, h) {k, BF_KEY_U64, OFF(f), 0, d, 0, 0, NULL, h, NULL}
#define BOOL(k, f, d, h) {k, BF_KEY_BOOL, OFF(f), 0, d, 0, 1, NULL, h, NULL}
#define DBL(k, f, d, lo, hi, h) {k, BF_KEY_DOUBLE, OFF(f), 0, d, lo, hi, NULL, h, NULL}
#define LIST(k, f, d, lo, hi, h) {k, BF_KEY_LIST, OFF(f), SZ(f), d, lo, hi, NULL, h, NULL}

static const bf_key KEYS[] = {
    STR("name", name, "run", "run name; the run directory defaults to runs/<name>"),
    STR("run_dir", run_dir, "", "run directory (\"\" = runs/<name>)"),
    ENUM("backend", backend, "cpu", "cpu|cuda", "compute backend"),
    ENUM("precision", precision, "fp32", "fp32|bf16", "convolution arithmetic; bf16 = mixed precision, cuda only"),
    INT("threads", threads, "0", 0, 1024, "compute threads (0 = all cores)"),
    STR("init", init, "", "warm start: load every matching tensor of this weights file (\"\" = none)"),

    STR("data.root", data_root, "", "data set directory (required)"),
    ENUM("data.layout", data_layout, "auto", "auto|imagefolder|miniimagenet|idx", "data set layout"),
    DBL("data.test_fraction", data_test_fraction, "0.15", 0.001, 0.999,
        "per-class test share when the layout has no explicit split"),
    U64("data.split_seed", data_split_seed, "0", "seed of the stratified train/test split"),
    INT("data.image_size", data_image_size, "0", 0, 4096,
        "crop size fed to the network (0 = auto: 32 for images <= 32 px, else 224)"),
    INT("data.threads", data_threads, "0", 0, 256, "decoder threads (0 = all cores)"),
    U64("data.seed", data_seed, "0", "shuffling and augmentation seed"),
    INT("data.pad", data_pad, "-1", -1, 1024, "zero padding before the random crop (-1 = auto: 4 for small images)"),
    INT("data.hflip", data_hflip, "-1", -1, 1, "random horizontal flips in training (-1 = auto: on)"),
    INT("data.resize", data_resize, "-1", -1, 8192,
        "shorter side before cropping (-1 = auto: image_size*8/7 for natural images, 0 = none)"),
    INT("data.prefetch", data_prefetch, "3", 1, 64, "batches decoded ahead"),
    DBL("data.max_bad_fraction", data_max_bad_fraction, "0.01", 0, 1, "tolerated share of unreadable images"),

    INT("model.classes", model_classes, "0", 0, 1000000, "number of classes (0 = from the data set)"),
    INT("model.split_after", model_split_after, "0", 0, 16,
        "butterfly unit after residual block RBk (1..16; 0 = plain ResNet-50)"),
    INT("model.d_r", model_d_r, "0", 0, 2048, "reduced channels D_r of the butterfly unit (needed when split_after > 0)"),
    INT("model.quant_bits", model_quant_bits, "0", 0, 8,
        "quantisation-aware training: the reduction's output through a b-bit quantiser with a learned clip "
        "(2..8; 0 = off, float features)"),

    INT("train.epochs", epochs, "90", 1, 100000, "training epochs"),
    INT("train.batch_size", batch_size, "128", 1, 65536, "images per step"),
    DBL("train.lr", lr, "0", 0, 1000, "base learning rate (0 = train.lr_per_256 * batch_size / 256)"),
    DBL("train.lr_per_256", lr_per_256, "0.1", 0, 1000, "learning rate per 256 images (used when train.lr = 0)"),
    DBL("train.momentum", momentum, "0.9", 0, 0.999999, "SGD momentum"),
    DBL("train.weight_decay", weight_decay, "1e-4", 0, 1, "L2 weight decay"),
    BOOL("train.nesterov", nesterov, "0", "Nesterov momentum"),
    BOOL("train.no_decay_bn_bias", no_decay_bn_bias, "0", "no weight decay on BN affine parameters and biases"),
    DBL("train.label_smoothing", label_smoothing, "0", 0, 0.999, "label smoothing of the cross-entropy"),
    ENUM("train.schedule", schedule, "step", "cosine|step|onecycle|constant", "learning-rate schedule after warm-up"),
    DBL("train.warmup_epochs", warmup_epochs, "0", 0, 100000,
        "linear warm-up from 0 (onecycle: rise phase; 0 = 30% of the run)"),
    LIST("train.step_epochs", step_epochs, "30", 0.001, 100000,
         "step schedule: milestones \"30,60,80\", or one value N = every N epochs"),
    DBL("train.gamma", gamma, "0.1", 0, 1, "step schedule: factor at each milestone"),
    DBL("train.final_lr_fraction", final_lr_fraction, "0", 0, 1, "cosine: final lr as a fraction of the base lr"),
    U64("train.seed", seed, "0", "model initialisation seed"),
    INT("train.log_every", log_every, "20", 1, 1000000, "steps between metrics.jsonl lines (and plain progress lines)"),
    INT("train.max_steps_per_epoch", max_steps_per_epoch, "0", 0, 1000000000,
        "cap on steps per epoch (0 = the whole train split; for quick runs)"),
    INT("train.eval_max_batches", eval_max_batches, "0", 0, 1000000000,
        "cap on test batches per evaluation (0 = the whole test split)"),
    BOOL("train.sync_bn", sync_bn, "0",
         "data-parallel runs: batch-norm statistics over the global batch (0 = each rank's own, as PyTorch DDP)"),
};
_Static_assert(BF_TRAIN_MAX_MILESTONES <= BF_KEY_LIST_MAX, "train.step_epochs holds the milestones");

static const bf_keytab TABLE = {"bf-train", KEYS, (int)(sizeof KEYS / sizeof KEYS[0])};

int bf_train_config_has_key(const char *key) { return bf_keytab_find(&TABLE, key) != NULL; }

void bf_train_config_defaults(bf_train_config *c) {
  memset(c, 0, sizeof *c);
  bf_keytab_defaults(&TABLE, c);
}

int bf_train_config_set(bf_train_config *c, const char *key, const char *value, const char *where) {
  return bf_keytab_set(&TABLE, c, key, value, where);
}

static int set_cb(void *ctx, const char *key, const char *value, const char *where) {
  return bf_train_config_set(ctx, key, value, where);
}

int bf_train_config_load(bf_train_config *c, const char *path) { return bf_ini_load(path, set_cb, c); }

int bf_train_config_milestones(const bf_train_config *c, double *out, int max) {
  int n = 0;
  const bf_key *k = bf_keytab_find(&TABLE, "train.step_epochs");
  if (bf_keytab_parse_list(k, c->step_epochs, "config", out, max, &n)) return 0;
  return n;
}

double bf_train_config_base_lr(const bf_train_config *c) {
  return c->lr > 0 ? c->lr : c->lr_per_256 * c->batch_size / 256.0;
}

const char *bf_train_config_run_dir(const bf_train_config *c, char *buf, size_t n) {
  if (c->run_dir[0])
    snprintf(buf, n, "%s", c->run_dir);
  else
    snprintf(buf, n, "runs/%s", c->name);
  return buf;
}

int bf_train_config_validate(const bf_train_config *c) {
  if (!c->data_root[0]) return bf_error(BF_EINVAL, "data.root: required (the data set directory)");
  if (strlen(c->run_dir) + 40 > BF_TRAIN_PATH_MAX)
    return bf_error(BF_EINVAL, "run_dir: path longer than %d characters", BF_TRAIN_PATH_MAX - 40);
  if (!c->name[0] && !c->run_dir[0]) return bf_error(BF_EINVAL, "name: must not be empty when run_dir is empty");
  for (const char *p = c->name; *p; p++)
    if (*p == '/' || *p == '\\')
      return bf_error(BF_EINVAL, "name: '%s' must not contain '/' (use run_dir for a path)", c->name);
  if (c->model_split_after > 0) {
    if (c->model_d_r < 1)
      return bf_error(BF_EINVAL, "model.d_r: required (>= 1) when model.split_after = %d", c->model_split_after);
    int D = bf_rb_channels(c->model_split_after);
    if (c->model_d_r > D)
      return bf_error(BF_EINVAL, "model.d_r: %d is more than the %d channels of RB%d", c->model_d_r, D,
                      c->model_split_after);
  }
  if (c->model_quant_bits == 1)
    return bf_error(BF_EINVAL, "model.quant_bits: 1 is not supported (0 = off, or 2..8 bits)");
  if (c->model_quant_bits && !c->model_split_after)
    return bf_error(BF_EINVAL, "model.quant_bits: %d needs a butterfly unit (model.split_after > 0)",
                    c->model_quant_bits);
  if (c->data_image_size != 0 && c->data_image_size < 32)
    return bf_error(BF_EINVAL, "data.image_size: %d is too small (ResNet-50 needs >= 32, or 0 = auto)",
                    c->data_image_size);
  if (bf_train_config_base_lr(c) <= 0) return bf_error(BF_EINVAL, "train.lr: the learning rate must be > 0");
  if (!strcmp(c->schedule, "onecycle") && c->warmup_epochs >= c->epochs)
    return bf_error(BF_EINVAL, "train.warmup_epochs: %g must be less than train.epochs (%d) for onecycle",
                    c->warmup_epochs, c->epochs);
  return BF_OK;
}

int bf_train_config_write(const bf_train_config *c, FILE *fp) {
  return bf_keytab_write(&TABLE, c, "bf-train effective configuration", fp);
}

int bf_train_config_save(const bf_train_config *c, const char *path) {
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  if (!fp) return bf_error(BF_ENOMEM, "config %s: open_memstream failed", path);
  int rc = bf_train_config_write(c, fp);
  fclose(fp);
  if (!rc) rc = bf_write_file_atomic(path, buf, len);
  free(buf);
  return rc;
}

void bf_train_config_print_help(FILE *fp) { bf_keytab_print_help(&TABLE, fp); }
