/* bf-train configuration: one key table drives INI parsing, command-line
 * overrides, --help and --print-config.
 *
 * Keys are "section.name" (INI: [section] name = value) or bare names for
 * the top-level keys (name, run_dir, backend, threads, init). Every function
 * returns 0 or a negative BF_E* code with a message (bf_last_error()) that
 * names the key and, for files, FILE:LINE. */
#ifndef BF_TRAIN_CONFIG_H
#define BF_TRAIN_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define BF_TRAIN_PATH_MAX 1024
#define BF_TRAIN_MAX_MILESTONES 16

typedef struct bf_train_config {
  /* top level */
  char name[128];
  char run_dir[BF_TRAIN_PATH_MAX]; /* "" = runs/<name> */
  char backend[16];
  char precision[8]; /* fp32 | bf16 (cuda only) */
  int threads;
  char init[BF_TRAIN_PATH_MAX]; /* warm start weights ("" = none) */

  /* [data] */
  char data_root[BF_TRAIN_PATH_MAX];
  char data_layout[16];
  double data_test_fraction;
  uint64_t data_split_seed;
  int data_image_size;
  int data_threads;
  uint64_t data_seed;
  int data_pad, data_hflip, data_resize;
  int data_prefetch;
  double data_max_bad_fraction;

  /* [model] */
  int model_classes;
  int model_split_after;
  int model_d_r;
  int model_quant_bits; /* 0 = float features; 2..8 = quantisation-aware training */

  /* [train] */
  int epochs;
  int batch_size;
  double lr;         /* > 0: absolute base learning rate */
  double lr_per_256; /* used when lr == 0: lr = lr_per_256 * batch_size / 256 */
  double momentum;
  double weight_decay;
  int nesterov;
  int no_decay_bn_bias;
  double label_smoothing;
  char schedule[16]; /* cosine | step | onecycle | constant */
  double warmup_epochs;
  char step_epochs[128]; /* "30,60,80" milestones, or "30" = every 30 epochs */
  double gamma;
  double final_lr_fraction; /* cosine ends at lr * this */
  uint64_t seed;            /* model initialisation */
  int log_every;
  int max_steps_per_epoch; /* 0 = all */
  int eval_max_batches;    /* 0 = all */
  int sync_bn;             /* data-parallel: batch statistics over all ranks */
} bf_train_config;

/* Defaults of every key. */
void bf_train_config_defaults(bf_train_config *c);
/* Sets one key from its text form; `where` ("FILE:LINE" or "command line")
 * prefixes errors. */
int bf_train_config_set(bf_train_config *c, const char *key, const char *value, const char *where);
/* Reads an INI file ([section] maps to the "section." prefix). */
int bf_train_config_load(bf_train_config *c, const char *path);
/* Cross-key checks (d_r vs split_after, required data.root, milestones...). */
int bf_train_config_validate(const bf_train_config *c);
/* Writes the effective config as INI (loadable by bf_train_config_load). */
int bf_train_config_write(const bf_train_config *c, FILE *fp);
int bf_train_config_save(const bf_train_config *c, const char *path); /* atomic */
/* --help text: every key with type, default, range and help. */
void bf_train_config_print_help(FILE *fp);
/* Is `key` a config key? */
int bf_train_config_has_key(const char *key);

/* Derived values. */
double bf_train_config_base_lr(const bf_train_config *c);
/* Parsed milestones (epochs); returns the count (0 for schedules other than step). */
int bf_train_config_milestones(const bf_train_config *c, double *out, int max);
/* The run directory: run_dir, or runs/<name>. */
const char *bf_train_config_run_dir(const bf_train_config *c, char *buf, size_t n);

#endif
