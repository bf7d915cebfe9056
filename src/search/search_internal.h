/* bf-search internals shared by its parts (not a public interface):
 *   search_config.c  the key table, INI loading, recipes (bf_search_config_*)
 *   search_state.c   search.jsonl: the finished trainings
 *   search_train.c   one training, the baseline and the training phase (D_r search)
 *   search_jobs.c    the scheduler: trainings in this process or in subprocesses (--jobs)
 *   search_slurm.c   --emit-slurm: the next wave as a Slurm job array
 *   search.c         the driver of the three phases (bf_search_run)
 * Every function returns 0 or a negative BF_E* code (bf_last_error()). */
#ifndef BF_SEARCH_INTERNAL_H
#define BF_SEARCH_INTERNAL_H

#include <signal.h>
#include <stdio.h>
#include <sys/types.h>

#include "backend.h"
#include "bf_core.h"
#include "bf_data.h"
#include "search.h"
#include "split.h"
#include "trainer.h"

/* search.jsonl in memory. Only the driver (bf_search_run, --emit-slurm)
 * writes the file; trainings in subprocesses and Slurm tasks write only their
 * run directory, whose result.json the driver adopts. */
typedef struct state {
  bf_search_entry *e;
  unsigned char *seen; /* reported in this session's log */
  int n, cap;
  char path[BF_TRAIN_PATH_MAX + 32];
} state;

#define MAX_JOBS 256

typedef struct job {
  pid_t pid; /* 0: slot free */
  int split, d_r, slot;
  double t0;
  char log[BF_TRAIN_PATH_MAX + 64];
} job;

typedef struct search {
  bf_search_config *c;
  volatile sig_atomic_t *stop;
  FILE *log;
  state st;
  int new_trainings; /* finished in this session */
  int launched;      /* started in this session */
  double train_secs; /* wall time of the trainings finished in this session */
  double t_start;
  /* --jobs */
  job jobs[MAX_JOBS];
  int n_running, forwarded_stop;
  int halt; /* a subprocess stopped or failed: start nothing new */
  char exe[BF_TRAIN_PATH_MAX];
  bf_backend_placement place; /* devices the subprocesses are pinned to (none: cores shared) */
  int child_threads, child_data_threads;
} search;

/* search_state.c */
/* The summary both selection paths hand to the report (search.c). */
bf_search_summary srch_summary(const search *s, double base_top1, double target, const bf_search_choice *choices,
                               const bf_profile *prof, int np, int in_h, int in_w);
int srch_state_add(state *s, const bf_search_entry *e);
int srch_state_find(const state *s, int split, int d_r);
void srch_state_free(state *s);
int srch_state_load(state *s);
int srch_state_append(state *s, const bf_search_entry *e);

/* search_train.c */
int srch_pathf(char *dst, size_t cap, const char *fmt, ...) BF_PRINTF(3, 4);
int srch_file_exists(const char *p);
int srch_read_result(const char *run_dir, double *top1, double *top5, double *secs);
void srch_task_name(int split, int d_r, char *buf, size_t cap);
void srch_task_label(int split, int d_r, char *buf, size_t cap);
int srch_baseline_paths(const bf_search_config *c, char *dir, size_t dcap, char *init, size_t icap);
int srch_result_exists(const bf_search_config *c, int split, int d_r);
int srch_train_inproc(const bf_search_config *c, int split, int d_r, volatile sig_atomic_t *stop, FILE *log,
                      bf_train_result *r, double *secs);
int srch_adopt(search *s, int split, int d_r, double secs, bf_search_entry *e);
int srch_lookup(search *s, int split, int d_r, bf_search_entry *e);
int srch_split_next(search *s, int i, double target, bf_search_choice *ch, int *next, int *left_worst);
int srch_baseline_phase(search *s, double *top1, char *dir, size_t cap);
int srch_training_phase(search *s, double target, bf_search_choice *choices);

/* search_jobs.c */
int srch_jobs_init(search *s);
int srch_may_launch(const search *s);
int srch_start_training(search *s, int split, int d_r);
int srch_wait_one(search *s, int *split_out);
int srch_drain(search *s, int rc);
void srch_stop_children(search *s);

/* search_rate.c: every candidate's bytes per codec, cached in
 * DIR/rate/kK_drR/codec_bytes.json; measure 0: the caches only (--select-only) */
int srch_rate_points(search *s, int input_size, int measure, bf_rate_point **out, int *n);
/* How bf-search exports a checkpoint at input_size (DIR/deploy and DIR/rate
 * alike): with rans tables from profile.rans_images training images when the
 * bytes per codec are measured (profile.rate_images > 0), so that the chosen
 * models' deploy directory serves --codec rans as measured. *eo may point
 * into *dc. */
int srch_export_opts(const bf_search_config *c, int input_size, bf_data_config *dc, bf_export_opts *eo);

/* search.c */
int srch_search_open(search *s, bf_search_config *c, volatile sig_atomic_t *stop, FILE *log);

#endif
