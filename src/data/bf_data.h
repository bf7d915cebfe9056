/* butterfly data pipeline: data sets (ImageFolder, miniImageNet CSV, IDX),
 * PNG/JPEG decoding, augmentation and a threaded, deterministic batch loader.
 *
 * Typical use (the trainer):
 *
 *   bf_data_config cfg;
 *   bf_data_config_init(&cfg);            // documented defaults below
 *   cfg.batch_size = 128; ...             // map INI keys onto fields
 *   bf_dataset *ds;
 *   if (bf_dataset_open(&ds, "data/mini", &cfg)) { puts(bf_last_error()); ...}
 *   bf_dataset_write_split(ds, "runs/x/split.csv");
 *   bf_loader *tr;
 *   bf_loader_create(&tr, ds, BF_SPLIT_TRAIN, &cfg);
 *   bf_loader_start(tr, epoch, step);     // resume point
 *   bf_batch b;
 *   while (... ) { if (bf_loader_next(tr, &b)) error; use b.x / b.u8 / b.labels; }
 *   bf_loader_destroy(tr); bf_dataset_close(ds);
 *
 * Every function returns 0 or a negative BF_E* code (bf_core.h) with a message
 * from bf_last_error() naming the file or field. Nothing here exits. */
#ifndef BF_DATA_H
#define BF_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "bf_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_layout {
  BF_LAYOUT_AUTO = 0,     /* detect: IDX files, else images/ + *.csv, else folders */
  BF_LAYOUT_IMAGEFOLDER,  /* root/<class>/<img> or root/{train,test}/<class>/<img> */
  BF_LAYOUT_MINIIMAGENET, /* root/images/NAME.jpg + {train,val,test}.csv (filename,label) */
  BF_LAYOUT_IDX           /* {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] */
} bf_layout;

typedef enum bf_split { BF_SPLIT_TRAIN = 0, BF_SPLIT_TEST = 1 } bf_split;

typedef enum bf_augment {
  BF_AUG_AUTO = -1, /* TRAIN for the train split, EVAL for the test split */
  BF_AUG_EVAL = 0,  /* resize shorter side, center crop */
  BF_AUG_TRAIN = 1  /* resize shorter side, pad, random crop, random h-flip */
} bf_augment;

/* Everything the data pipeline can be told. bf_data_config_init() sets the
 * defaults written next to each field; fields marked "auto" are resolved per
 * data set (bf_data_config_resolve) and per split (bf_loader_create).
 * Suggested INI keys are the field names under a [data] section. */
typedef struct bf_data_config {
  /* --- data set (bf_dataset_open) --- */
  bf_layout layout;        /* BF_LAYOUT_AUTO */
  uint64_t split_seed;     /* 0: seed of the stratified train/test split */
  double test_fraction;    /* 0.15: per-class test share when the layout has no split */
  double max_bad_fraction; /* 0.01: open/next fail when more of a split is bad */
  int verify;              /* 0: 1 = fully decode every image at open (slow, thorough) */
  int verbose;             /* 1: print each bad file to stderr as it is found */
  int threads;             /* 0 = number of online CPUs: probe at open, loader workers */

  /* --- augmentation and output (bf_loader_create) --- */
  int out_size;     /* 0 = auto: 224 for natural images, 32 for images <= 32 px */
  int resize;       /* -1 = auto: shorter side -> 256 when out_size is 224
                       (out_size*8/7), 0 = no resize for small images */
  int pad;          /* -1 = auto: 4 for small images in TRAIN, else 0 (zero pad) */
  int hflip;        /* -1 = auto: 1 in TRAIN, 0 in EVAL */
  bf_augment augment; /* BF_AUG_AUTO */
  float mean[3];    /* <0 = auto: ImageNet (0.485,0.456,0.406), Fashion-MNIST 0.2860 */
  float std[3];     /* <0 = auto: ImageNet (0.229,0.224,0.225), Fashion-MNIST 0.3530 */

  /* --- loader --- */
  int batch_size;   /* 64 */
  int prefetch;     /* 3: batches decoded ahead (ring depth; each costs
                       batch_size*out_size^2*15 bytes) */
  uint64_t seed;    /* 0: shuffling and augmentation seed */
  int shuffle;      /* -1 = auto: 1 for train, 0 for test; reshuffled every epoch */
  int drop_last;    /* -1 = auto: 1 for train, 0 for test */
  int want_float;   /* 1: produce normalised float32 NHWC */
  int want_u8;      /* 1: produce uint8 NHWC (un-normalised, for GPU-side normalise) */
  /* Data-parallel shards: batch_size stays the global batch (the order, the
   * batches per epoch and every image's augmentation are those of a single
   * process), and this loader produces only images
   * [shard_index*b, (shard_index+1)*b) of each batch, b = batch_size /
   * shard_count (which must divide). shard_count 0 or 1: the whole batch. */
  int shard_index, shard_count; /* 0, 1 */
} bf_data_config;

void bf_data_config_init(bf_data_config *cfg);

typedef struct bf_dataset bf_dataset;

typedef struct bf_dataset_info {
  bf_layout layout;      /* resolved layout */
  int num_classes;
  int explicit_split;    /* 1: the layout had train/test; 0: stratified split */
  size_t count[2];       /* usable samples per split (bad ones excluded) */
  size_t bad_count;      /* bad entries found at open, all splits */
  size_t bad_in_split[2];/* of which attributed to each split (-1 unknown: train) */
  int small_images;      /* 1: images are <= 32x32 (Fashion-MNIST style defaults) */
  int is_fashion_mnist;  /* 1: Fashion-MNIST (IDX or its PNG export) */
  float default_mean[3], default_std[3];
} bf_dataset_info;

/* Opens `root`. Lists and probes every image header (in cfg->threads threads),
 * reports bad entries (stderr when cfg->verbose) and fails with a summary if
 * more than cfg->max_bad_fraction of a split is bad. cfg may be NULL. */
int bf_dataset_open(bf_dataset **out, const char *root, const bf_data_config *cfg);
void bf_dataset_close(bf_dataset *ds);

const bf_dataset_info *bf_dataset_get_info(const bf_dataset *ds);
const char *bf_dataset_root(const bf_dataset *ds);
const char *bf_dataset_class_name(const bf_dataset *ds, int c);
size_t bf_dataset_count(const bf_dataset *ds, bf_split split);
size_t bf_dataset_class_count(const bf_dataset *ds, bf_split split, int c);
/* Bad entries found at open: path (or "IDXFILE#index") and reason. */
const char *bf_dataset_bad_path(const bf_dataset *ds, size_t i);
const char *bf_dataset_bad_reason(const bf_dataset *ds, size_t i);

/* Sample i of a split in its canonical order (class, then file name).
 * path is NULL for IDX samples. */
int bf_dataset_sample(const bf_dataset *ds, bf_split split, size_t i, int *label,
                      const char **path);

/* Writes the split for auditing, atomically. Format (text, one row a sample):
 *   # butterfly-split v1
 *   # layout=miniimagenet root=... seed=0 test_fraction=0.15 classes=100 train=51000 test=9000 bad=0
 *   split,label,class,path
 *   train,0,n01532829,images/n0153282900000005.jpg
 * Paths are relative to the root (IDX: "train-images-idx3-ubyte#17"). */
int bf_dataset_write_split(const bf_dataset *ds, const char *path);

/* A decoded image: RGB8, row-major, 3 bytes a pixel. */
typedef struct bf_image {
  int w, h;
  uint8_t *rgb; /* malloc'ed; free with bf_image_free */
} bf_image;
void bf_image_free(bf_image *img);

/* Decodes sample i at full size (gray replicated to RGB). */
int bf_dataset_load_image(const bf_dataset *ds, bf_split split, size_t i, bf_image *img);

/* Decodes a PNG or JPEG file (format from its magic bytes). When min_w/min_h
 * are > 0, a JPEG may be decoded with DCT-domain downscaling by 1/2, 1/4 or
 * 1/8 (the scales libjpeg-turbo has SIMD code for) to the smallest size that
 * is still >= min_w x min_h. */
int bf_image_decode_file(const char *path, int min_w, int min_h, bf_image *img);
/* Writes RGB8 (channels 3) or gray (channels 1) as PNG (plain write; a failed
 * write removes the partial file). */
int bf_png_write(const char *path, const uint8_t *pix, int w, int h, int channels);

/* The evaluation transform of the loader (BF_AUG_EVAL, no flip) on one
 * decoded image: shorter side to `resize` (0 = none), center crop of
 * out_size x out_size, zero-filled where the image is smaller. RGB8 out.
 * Clients that must see images as the evaluation did use this. */
int bf_image_eval_crop(const bf_image *img, int resize, int out_size, uint8_t *dst);

/* Fills the auto fields of cfg (augment, out_size, resize, pad, hflip, mean,
 * std, shuffle, drop_last, threads) for ds and split: augment AUTO becomes
 * TRAIN for the train split and EVAL for test. bf_loader_create does this on
 * its private copy; exposed for printing the effective settings. */
void bf_data_config_resolve(bf_data_config *cfg, const bf_dataset *ds, bf_split split);

/* ---------------------------------------------------------------- loader */
typedef struct bf_loader bf_loader;

typedef struct bf_batch {
  int count;          /* real samples in this batch (< batch_size only for the
                         last batch of an epoch when drop_last is 0; a shard
                         of that batch may hold none) */
  int batch_size, h, w; /* tensors are [batch_size, h, w, 3]; rows >= count are zero
                         (batch_size: the shard's, batch_size / shard_count) */
  float *x;           /* normalised NHWC float32, or NULL if !want_float */
  uint8_t *u8;        /* NHWC uint8 (before normalisation), or NULL if !want_u8 */
  int32_t *labels;    /* [batch_size]; -1 past count */
  int64_t *index;     /* [batch_size]: sample index in the split (debugging) */
  int64_t epoch, step;/* where this batch is: step in [0, batches_per_epoch) */
} bf_batch;

/* The loader keeps a pointer to ds: close the data set after the loader. */
int bf_loader_create(bf_loader **out, const bf_dataset *ds, bf_split split,
                     const bf_data_config *cfg);
void bf_loader_destroy(bf_loader *L);
/* Effective configuration after resolving the auto fields. */
const bf_data_config *bf_loader_config(const bf_loader *L);
int64_t bf_loader_batches_per_epoch(const bf_loader *L);
/* (Re)positions the loader: the next batch is `step` of `epoch`. Batches are a
 * pure function of (data set, split, config, seed, epoch, step): identical for
 * any thread count and after a resume. Must be called before the first next. */
int bf_loader_start(bf_loader *L, int64_t epoch, int64_t step);
/* Waits for the next batch. Its buffers stay valid until the next call to
 * bf_loader_next/start/destroy. After the last step of an epoch the loader goes
 * on with step 0 of the next epoch (reshuffled). Fails (BF_EINVAL, with a
 * summary) when more than max_bad_fraction of the split proved bad. */
int bf_loader_next(bf_loader *L, bf_batch *b);
/* Images that failed to decode while loading (each counted once) and were
 * replaced by the next good sample of the split. */
size_t bf_loader_bad_count(const bf_loader *L);

const char *bf_layout_name(bf_layout l);
int bf_layout_parse(const char *s, bf_layout *out);

#ifdef __cplusplus
}
#endif
#endif
