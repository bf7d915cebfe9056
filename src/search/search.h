/* bf-search: the paper's Algorithm 1 (training, profiling, selection) for
 * ResNet-50 + butterfly unit. docs/search.md describes keys, files and the
 * cost model.
 *
 *   bf_search_config c; bf_search_config_defaults(&c);
 *   bf_search_config_load(&c, "configs/search-x.ini");  (+ bf_search_config_set for CLI keys)
 *   bf_search_config_finish(&c);                         (loads the train recipe, validates)
 *   bf_search_run(&c, &stop);
 *
 * Library code: every function returns 0 or a negative BF_E* code with a
 * message naming the key (bf_last_error()). */
#ifndef BF_SEARCH_H
#define BF_SEARCH_H

#include <signal.h>
#include <stddef.h>

#include "config.h"
#include "selection.h"

#define BF_SEARCH_MAX_SPLITS 16
#define BF_SEARCH_MAX_NETS 8
#define BF_SEARCH_MAX_OVR 128
/* bf_search_run: stopped on request (signal or max_trainings); rerun to resume. */
#define BF_SEARCH_STOPPED 1

typedef struct bf_search_config {
  /* [search] */
  char dir[BF_TRAIN_PATH_MAX];
  char train_config[BF_TRAIN_PATH_MAX]; /* bf-train recipe ("" = bf-train defaults) */
  char baseline[BF_TRAIN_PATH_MAX];     /* existing run dir ("" = train one) */
  int baseline_epochs;                  /* 0 = the recipe's epochs */
  double tolerance;                     /* accuracy loss allowed, points */
  int splits[BF_SEARCH_MAX_SPLITS], n_splits;
  int dr_min, dr_max; /* dr_max 0 = channels of RBk (Algorithm 1) */
  int strategy;       /* 0 linear, 1 bisect */
  int init_baseline;  /* 0 scratch, 1 warm start from the baseline */
  int max_trainings;  /* > 0: stop after this many new trainings */
  int jobs;           /* trainings run at once (subprocesses when > 1) */
  int keep_all;       /* 0: a recorded candidate keeps only last.safetensors */
  /* [profile] */
  int device_threads, server_threads;
  int prof_warmup, prof_runs;
  int prof_input_size; /* 0 = the model's training image size */
  int rate_images;     /* test images for every candidate's bytes per codec (0: not measured) */
  int rans_images;     /* training images for each candidate's rans tables */
  int profile_only;    /* --reprofile: a training still to run is an error, not started */
  /* [select] */
  bf_sel_network nets[BF_SEARCH_MAX_NETS];
  int n_nets;
  bf_sel_load load;
  /* [slurm] (--emit-slurm) */
  char slurm_partition[128], slurm_time[64], slurm_account[128], slurm_mem[64], slurm_extra[512];
  int slurm_cpus;  /* 0 = the recipe's threads (omitted when that is 0 too) */
  int slurm_gpus;  /* -1 = 1 with the cuda backend, else 0 */
  /* training keys (data.*, train.*, ...) forwarded to every training, or,
   * from [candidate] / --candidate.KEY, to the butterfly trainings only */
  char *ovr_key[BF_SEARCH_MAX_OVR], *ovr_val[BF_SEARCH_MAX_OVR], *ovr_where[BF_SEARCH_MAX_OVR];
  int ovr_cand[BF_SEARCH_MAX_OVR];
  int n_ovr;
  /* effective recipes (bf_search_config_finish): baseline, candidates */
  bf_train_config train, cand;
  /* the command line that re-creates this config (without argv[0] and the
   * mode flags): --jobs subprocesses and Slurm tasks run
   * `bf-search ARGS --train-one K:R`. NULL: --jobs > 1 and Slurm unavailable. */
  char **argv;
  int argc;
} bf_search_config;

void bf_search_config_defaults(bf_search_config *c);
void bf_search_config_free(bf_search_config *c);
/* key: "search.x", "profile.x", "select.x", or any bf-train key (forwarded). */
int bf_search_config_set(bf_search_config *c, const char *key, const char *value, const char *where);
int bf_search_config_load(bf_search_config *c, const char *path);
int bf_search_config_finish(bf_search_config *c);
void bf_search_config_print_help(FILE *fp);

/* One finished training (a line of search.jsonl). */
typedef struct bf_search_entry {
  int split, d_r; /* split 0, d_r 0: the baseline */
  double top1, top5, seconds;
  char run_dir[BF_TRAIN_PATH_MAX];
} bf_search_entry;

/* Outcome of the training phase for one split point. */
typedef struct bf_search_choice {
  int split;
  int d_r; /* smallest D_r reaching the target, -1 if none */
  double top1;
  char run_dir[BF_TRAIN_PATH_MAX];
} bf_search_choice;

/* Profiling phase result for one chosen model. */
typedef struct bf_profile {
  int split, d_r;
  double top1;
  int feat_h, feat_w, feat_c;
  double device_ms; /* stem..RBk + reduction + 8-bit quantisation (median) */
  double quant_ms;  /* the quantisation part of device_ms (median) */
  double server_ms; /* restoration..classifier (median) */
  size_t payload_bytes, frame_bytes;
  double device_mw; /* measured device power while the half runs (bf-profile, RAPL); 0: select.p_mobile_mw */
  char deploy_dir[BF_TRAIN_PATH_MAX + 32];
  char device_path[BF_TRAIN_PATH_MAX + 64], server_path[BF_TRAIN_PATH_MAX + 64];
} bf_profile;

/* One trained candidate's INFER frame bytes per image with each codec
 * (search_rate.c): the rate-accuracy curve. */
enum { BF_RATE_RAW = 0, BF_RATE_ZSTD = 1, BF_RATE_RANS = 2, BF_RATE_CODECS = 3 };
typedef struct bf_rate_point {
  int split, d_r;
  double top1;
  /* mean over `images` test images of header + body + CRC, per tensor, at
   * the profiling input size, of the codes bf-client sends: `bits` 8 (the
   * range of each image) or a quantisation-aware candidate's fixed-range
   * b-bit codes; rans with tables of those codes from `rans_images`
   * training images */
  double frame_bytes[BF_RATE_CODECS];
  int images, rans_images, bits;
} bf_rate_point;

/* Exports `checkpoint` into deploy_root/split-<k>/ and times both halves. */
int bf_profile_model(const char *checkpoint, const char *deploy_root, int input_size, const bf_search_config *c,
                     bf_profile *p);
/* Times the whole model (device + server halves in one engine) with `threads`. */
int bf_profile_full(const bf_profile *p, int input_size, int threads, const bf_search_config *c, double *ms);

/* Writes selection.json, profile.json, report.md, report.html, the figures
 * and prints the selection table to `out`. */
typedef struct bf_search_summary {
  double baseline_top1, target_top1; /* 0..1 */
  const bf_search_entry *entries;
  int n_entries;
  const bf_search_choice *choices;
  int n_choices;
  const bf_profile *profiles;
  int n_profiles;
  int input_size;       /* profiling input size (latency, energy, offloaded bytes) */
  int train_input_size; /* the size the models were trained and evaluated at (accuracy) */
  double load_before, load_after; /* 1-minute load average around the profiling (-1: unknown) */
  double tm_full_ms, tc_full_ms, input_bytes;
  /* where the times come from: NULL = measured in this process; else one
   * line naming the profile files (bf-search --select-only) */
  const char *profile_source;
  /* every candidate's bytes per codec (profile.rate_images > 0), search.jsonl order */
  const bf_rate_point *rates;
  int n_rates;
} bf_search_summary;
int bf_search_report(const bf_search_config *c, const bf_search_summary *s, FILE *out);

/* The figures (plot.c, cairo): DIR/NAME.svg and DIR/NAME.png for each name,
 * and accuracy_vs_dr.csv. rows: bf_sel_row_compute per network and target
 * over sp[0..s->n_profiles). svg[f]: figure f's SVG text (caller frees). */
#define BF_SEARCH_N_FIGS 4
extern const char *const bf_search_figure_names[BF_SEARCH_N_FIGS];
int bf_search_plot(const bf_search_config *c, const bf_search_summary *s, const bf_sel_profile *sp,
                   const bf_sel_row (*rows)[2], char *svg[BF_SEARCH_N_FIGS]);

/* Selection only (issue 17): the finished training phase's choices with the
 * device and server times of bf-profile files (NULL: that side measured here,
 * on the halves in DIR/deploy), checked against the search (split points,
 * D_r, model ids); then bf_search_report. Trains and exports nothing. */
int bf_search_select_only(bf_search_config *c, const char *device_profile, const char *server_profile, FILE *log);

/* The whole search; BF_SEARCH_STOPPED when stopped (state kept). */
int bf_search_run(bf_search_config *c, volatile sig_atomic_t *stop, FILE *log);

/* One training of the search (split 0, d_r 0: the baseline) into its run
 * directory, without touching search.jsonl (the driver adds it when it next
 * looks): what --jobs subprocesses and Slurm array tasks run. A training
 * already finished returns 0 at once; BF_SEARCH_STOPPED when stopped. */
int bf_search_train_one(bf_search_config *c, int split, int d_r, volatile sig_atomic_t *stop, FILE *log);

/* Writes the Slurm job-array script of the search's next wave: one array
 * task per training that can start now (the baseline, else the next D_r of
 * every undecided split point). *n_tasks = 0 (no file written): the training
 * phase is complete. */
int bf_search_emit_slurm(bf_search_config *c, const char *path, int *n_tasks, FILE *log);

/* Parses "K:R" (or "baseline") as given to --train-one; checks that the
 * search would train it (K in search.splits, R in the D_r range). */
int bf_search_parse_task(const char *s, int *split, int *d_r);
int bf_search_check_task(const bf_search_config *c, int split, int d_r);

#endif
