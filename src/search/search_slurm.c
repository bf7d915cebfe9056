/* bf-search --emit-slurm: the next wave of trainings as a Slurm job array. */
#include "search_internal.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"

/* Writes `a` single-quoted for bash. */
static void sh_quote(FILE *fp, const char *a) {
  fputc('\'', fp);
  for (; *a; a++)
    if (*a == '\'') fputs("'\\''", fp);
    else fputc(*a, fp);
  fputc('\'', fp);
}

static void sh_command(FILE *fp, const search *s, const char *exe) {
  sh_quote(fp, exe);
  for (int i = 0; i < s->c->argc; i++) {
    fputc(' ', fp);
    sh_quote(fp, s->c->argv[i]);
  }
}

int bf_search_emit_slurm(bf_search_config *c, const char *path, int *n_tasks, FILE *log) {
  static search s;
  int rc = 0;
  int wave[BF_SEARCH_MAX_SPLITS + 1][2], nw = 0;
  *n_tasks = 0;
  if (!c->argv) return bf_error(BF_EINVAL, "--emit-slurm: needs the bf-search command line");
  const char *vals[] = {c->slurm_partition, c->slurm_time, c->slurm_account, c->slurm_mem};
  const char *keys[] = {"slurm.partition", "slurm.time", "slurm.account", "slurm.mem"};
  if ((rc = srch_search_open(&s, c, NULL, log))) goto done;

  /* the wave: the baseline, else every undecided split point's next D_r */
  bf_search_entry e = {0};
  double base_top1 = 0;
  if (c->baseline[0]) {
    double t5, secs;
    if ((rc = srch_read_result(c->baseline, &base_top1, &t5, &secs))) {
      rc = bf_error_wrap(rc, "search.baseline");
      goto done;
    }
  } else {
    if ((rc = srch_lookup(&s, 0, 0, &e)) < 0) goto done;
    if (rc == 0) {
      wave[nw][0] = 0;
      wave[nw++][1] = 0;
    }
    base_top1 = e.top1;
    rc = 0;
  }
  if (!nw) {
    double target = base_top1 - c->tolerance / 100.0;
    for (int i = 0; i < c->n_splits; i++) {
      bf_search_choice ch;
      int next, lw;
      int r = srch_split_next(&s, i, target, &ch, &next, &lw);
      if (r < 0) {
        rc = r;
        goto done;
      }
      if (r == 1) {
        wave[nw][0] = c->splits[i];
        wave[nw++][1] = next;
      }
    }
  }
  if (!nw) {
    fprintf(log, "bf-search: the training phase is complete (%d trainings in %s); no script written.\n"
                 "bf-search: run the same command without --emit-slurm to profile and select.\n",
            s.st.n, s.st.path);
    goto done;
  }

  char exe[BF_TRAIN_PATH_MAX], cwd[BF_TRAIN_PATH_MAX], absdir[BF_TRAIN_PATH_MAX], logs[BF_TRAIN_PATH_MAX + 16];
  ssize_t ln = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (ln <= 0 || (size_t)ln >= sizeof exe - 1) {
    rc = bf_error(BF_EIO, "/proc/self/exe: cannot resolve");
    goto done;
  }
  exe[ln] = 0;
  if (!getcwd(cwd, sizeof cwd) || !realpath(c->dir, absdir)) {
    rc = bf_error(BF_EIO, "%s: cannot resolve the search directory", c->dir);
    goto done;
  }
  if ((rc = srch_pathf(logs, sizeof logs, "%s/logs", absdir)) || (rc = bf_mkdirs(logs))) goto done;

  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  if (!fp) {
    rc = bf_error(BF_ENOMEM, "--emit-slurm");
    goto done;
  }
  int cpus = c->slurm_cpus ? c->slurm_cpus : c->cand.threads;
  int gpus = c->slurm_gpus >= 0 ? c->slurm_gpus : bf_backend_per_process_device(c->cand.backend);
  fprintf(fp, "#!/bin/bash\n");
  fprintf(fp, "# bf-search --emit-slurm: the next wave of the search in %s:\n", absdir);
  fprintf(fp, "# %d training(s), one per array task (%d finished before).\n#\n", nw, s.st.n);
  fprintf(fp, "#   sbatch %s\n", path);
  fprintf(fp, "# Each task trains one model into its own run directory (a task that is\n"
              "# re-run resumes its checkpoint, or does nothing when it finished); it does\n"
              "# not write search.jsonl. When the array is done, run the same bf-search\n"
              "# command with --emit-slurm again: it records the results and writes the\n"
              "# next wave (the next D_r of each split point depends on these results),\n"
              "# until it says the training phase is complete. Then the command without\n"
              "# --emit-slurm profiles and selects; it trains nothing more.\n");
  fprintf(fp, "#SBATCH --job-name=bf-search\n");
  fprintf(fp, "#SBATCH --array=0-%d\n", nw - 1);
  fprintf(fp, "#SBATCH --ntasks=1\n");
  fprintf(fp, "#SBATCH --chdir=%s\n", cwd);
  fprintf(fp, "#SBATCH --output=%s/slurm-%%A_%%a.out\n", logs);
  if (cpus > 0) fprintf(fp, "#SBATCH --cpus-per-task=%d\n", cpus);
  if (gpus > 0) fprintf(fp, "#SBATCH --gpus-per-task=%d\n", gpus);
  for (int i = 0; i < 4; i++)
    if (vals[i][0]) fprintf(fp, "#SBATCH --%s=%s\n", keys[i] + 6, vals[i]);
  if (c->slurm_extra[0]) {
    char ex[sizeof c->slurm_extra];
    snprintf(ex, sizeof ex, "%s", c->slurm_extra);
    for (char *sv = NULL, *t = strtok_r(ex, ";", &sv); t; t = strtok_r(NULL, ";", &sv)) {
      while (*t == ' ') t++;
      if (*t) fprintf(fp, "#SBATCH %s\n", t);
    }
  }
  fprintf(fp, "set -euo pipefail\n");
  fprintf(fp, "TASKS=(\n");
  for (int i = 0; i < nw; i++) {
    char name[64];
    srch_task_name(wave[i][0], wave[i][1], name, sizeof name);
    if (wave[i][0]) fprintf(fp, "  %d:%d  # %d: RB%d D_r %d -> %s/runs/%s\n", wave[i][0], wave[i][1], i, wave[i][0],
                            wave[i][1], c->dir, name);
    else fprintf(fp, "  baseline  # %d: plain ResNet-50 -> %s/runs/%s\n", i, c->dir, name);
  }
  fprintf(fp, ")\n");
  fprintf(fp, "id=${SLURM_ARRAY_TASK_ID:?run with sbatch, or set SLURM_ARRAY_TASK_ID to 0..%d}\n", nw - 1);
  fprintf(fp, "if [ \"$id\" -lt 0 ] || [ \"$id\" -ge ${#TASKS[@]} ]; then\n"
              "  echo \"$0: no task $id (0..$((${#TASKS[@]} - 1)))\" >&2\n"
              "  exit 2\n"
              "fi\n");
  fprintf(fp, "exec ");
  sh_command(fp, &s, exe);
  fprintf(fp, " --train-one \"${TASKS[$id]}\"\n");
  if (fclose(fp)) {
    free(buf);
    rc = bf_error(BF_ENOMEM, "--emit-slurm");
    goto done;
  }
  rc = bf_write_file_atomic(path, buf, len);
  free(buf);
  if (rc) goto done;
  if (chmod(path, 0755)) {
    rc = bf_error(BF_EIO, "%s: chmod failed", path);
    goto done;
  }
  *n_tasks = nw;
  fprintf(log, "bf-search: wrote %s: %d training(s) as a Slurm job array; submit with: sbatch %s\n", path, nw, path);

done:
  srch_state_free(&s.st);
  return rc;
}
