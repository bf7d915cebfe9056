/* bf-search: the scheduler. With search.jobs = 1 a training runs in this
 * process; with more, in subprocesses `bf-search ARGS --train-one K:R`, each
 * pinned to a device of the backend or given a share of the cores. */
#include "search_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"

/* --jobs: subprocesses `bf-search ARGS --train-one K:R`, output to
 * DIR/logs/<name>.log; the driver records their results. */
int srch_jobs_init(search *s) {
  const bf_search_config *c = s->c;
  if (!c->argv) return bf_error(BF_EINVAL, "search.jobs > 1: needs the bf-search command line (library use: set argv)");
  ssize_t n = readlink("/proc/self/exe", s->exe, sizeof s->exe - 1);
  if (n <= 0 || (size_t)n >= sizeof s->exe - 1) return bf_error(BF_EIO, "/proc/self/exe: cannot resolve");
  s->exe[n] = 0;
  char p[BF_TRAIN_PATH_MAX + 16];
  BF_TRY(srch_pathf(p, sizeof p, "%s/logs", c->dir));
  BF_TRY(bf_mkdirs(p));
  BF_TRY(bf_backend_worker_placement(c->cand.backend, &s->place));
  if (s->place.per_process_device) {
    /* one device per training: the visible ones, in turn */
    fprintf(s->log, "bf-search: %d trainings at once over %d device(s)%s\n", c->jobs, s->place.n,
            c->jobs > s->place.n ? " (some share a device)" : "");
  } else {
    /* no device of their own: the cores are shared out between the trainings */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int total = c->cand.threads > 0 ? c->cand.threads : (int)(ncpu > 0 ? ncpu : 1);
    int dtotal = c->cand.data_threads > 0 ? c->cand.data_threads : (int)(ncpu > 0 ? ncpu : 1);
    s->child_threads = total / c->jobs > 0 ? total / c->jobs : 1;
    s->child_data_threads = dtotal / c->jobs > 0 ? dtotal / c->jobs : 1;
    fprintf(s->log, "bf-search: %d trainings at once, %d compute + %d decoder threads each\n", c->jobs,
            s->child_threads, s->child_data_threads);
  }
  return 0;
}

static int spawn(search *s, int split, int d_r) {
  const bf_search_config *c = s->c;
  int slot = 0;
  while (slot < c->jobs && s->jobs[slot].pid) slot++;
  if (slot == c->jobs) return bf_error(BF_EINVAL, "search: no free job slot");
  job *j = &s->jobs[slot];
  const bf_backend_placement *pl = &s->place;
  char name[64], task[32], th[16], dth[16], dev_env[96];
  srch_task_name(split, d_r, name, sizeof name);
  snprintf(task, sizeof task, "%d:%d", split, d_r);
  BF_TRY(srch_pathf(j->log, sizeof j->log, "%s/logs/%s.log", c->dir, name));
  /* argv: exe ARGS --train-one K:R [--threads T --data.threads T] */
  char **av = calloc((size_t)c->argc + 8, sizeof *av);
  if (!av) return bf_error(BF_ENOMEM, "spawn");
  int n = 0;
  av[n++] = s->exe;
  for (int i = 0; i < c->argc; i++) av[n++] = c->argv[i];
  av[n++] = "--train-one";
  av[n++] = task;
  if (s->child_threads) {
    snprintf(th, sizeof th, "%d", s->child_threads);
    snprintf(dth, sizeof dth, "%d", s->child_data_threads);
    av[n++] = "--threads";
    av[n++] = th;
    av[n++] = "--data.threads";
    av[n++] = dth;
  }
  av[n] = NULL;
  /* environment: ours, with the backend's device variable set to this slot's device */
  extern char **environ;
  int ne = 0;
  while (environ[ne]) ne++;
  char **ev = calloc((size_t)ne + 2, sizeof *ev);
  if (!ev) {
    free(av);
    return bf_error(BF_ENOMEM, "spawn");
  }
  size_t env_len = pl->env ? strlen(pl->env) : 0;
  int m = 0;
  for (int i = 0; i < ne; i++)
    if (!pl->n || strncmp(environ[i], pl->env, env_len) || environ[i][env_len] != '=') ev[m++] = environ[i];
  if (pl->n) {
    snprintf(dev_env, sizeof dev_env, "%s=%s", pl->env, pl->ids[slot % pl->n]);
    ev[m++] = dev_env;
  }
  ev[m] = NULL;
  int rc = 0;
  int fd = open(j->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || nul < 0) rc = bf_error(BF_EIO, "%s: cannot open the training log", j->log);
  fflush(NULL);
  pid_t parent = getpid();
  pid_t pid = rc ? -1 : fork();
  if (pid == 0) {
    /* only async-signal-safe calls between fork and exec. A driver that
     * dies (kill -9) takes its trainings down with a SIGTERM (they
     * checkpoint), so a rerun never trains beside an orphan in one run dir. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(3);
    dup2(nul, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execve(s->exe, av, ev);
    _exit(127);
  }
  if (!rc && pid < 0) rc = bf_error(BF_EIO, "fork failed");
  if (fd >= 0) close(fd);
  if (nul >= 0) close(nul);
  free(av);
  free(ev);
  if (rc) return rc;
  j->pid = pid;
  j->split = split;
  j->d_r = d_r;
  j->slot = slot;
  j->t0 = bf_now_sec();
  s->n_running++;
  s->launched++;
  char what[64];
  srch_task_label(split, d_r, what, sizeof what);
  fprintf(s->log, "bf-search: %s: training %s/runs/%s in a subprocess (pid %d%s%s, log %s)\n", what, c->dir, name,
          (int)pid, pl->n ? ", device " : "", pl->n ? pl->ids[slot % pl->n] : "", j->log);
  fflush(s->log);
  return 0;
}

void srch_stop_children(search *s) {
  if (s->forwarded_stop) return;
  s->forwarded_stop = 1;
  /* the trainings checkpoint and exit; a rerun resumes them */
  for (int i = 0; i < MAX_JOBS; i++)
    if (s->jobs[i].pid) kill(s->jobs[i].pid, SIGTERM);
}

/* Waits for one subprocess. Returns 0 when it finished its training (result
 * recorded), BF_SEARCH_STOPPED when it was stopped, < 0 when it failed. */
int srch_wait_one(search *s, int *split_out) {
  for (;;) {
    if (s->stop && *s->stop) srch_stop_children(s);
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid < 0 && errno != EINTR) return bf_error(BF_EIO, "waitpid failed");
    if (pid <= 0) {
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    job *j = NULL;
    for (int i = 0; i < MAX_JOBS; i++)
      if (s->jobs[i].pid == pid) j = &s->jobs[i];
    if (!j) continue;
    j->pid = 0;
    s->n_running--;
    *split_out = j->split;
    char what[64];
    srch_task_label(j->split, j->d_r, what, sizeof what);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (code == 0 && srch_result_exists(s->c, j->split, j->d_r)) {
      double dt = bf_now_sec() - j->t0;
      bf_search_entry e;
      BF_TRY(srch_adopt(s, j->split, j->d_r, dt, &e));
      s->new_trainings++;
      s->train_secs += dt;
      fprintf(s->log, "bf-search: %s: top1 %.2f%% (%.1f s)\n", what, 100 * e.top1, dt);
      return 0;
    }
    s->halt = 1;
    if (code == 0 || code == 3) {
      fprintf(s->log, "bf-search: %s: stopped (its checkpoint is resumed by a rerun)\n", what);
      return BF_SEARCH_STOPPED;
    }
    if (WIFSIGNALED(st))
      return bf_error(BF_EIO, "%s: the training subprocess died of signal %d; its output is in %s", what,
                      WTERMSIG(st), j->log);
    return bf_error(BF_EIO, "%s: the training subprocess failed (exit %d); its output is in %s", what, code, j->log);
  }
}

int srch_may_launch(const search *s) {
  if (s->halt || (s->stop && *s->stop)) return 0;
  if (s->c->max_trainings > 0 && s->launched >= s->c->max_trainings) return 0;
  return 1;
}

/* Runs (split, d_r): in this process with jobs = 1 (0, or STOPPED), else
 * starts a subprocess and returns 0 at once. */
int srch_start_training(search *s, int split, int d_r) {
  if (s->c->profile_only) {
    char what[64];
    srch_task_label(split, d_r, what, sizeof what);
    return bf_error(BF_EINVAL, "--reprofile: the training phase is not complete (%s is still to train); run "
                    "without --reprofile to finish it", what);
  }
  if (s->c->jobs > 1) return spawn(s, split, d_r);
  bf_train_result r;
  double secs;
  s->launched++;
  BF_TRY(srch_train_inproc(s->c, split, d_r, s->stop, s->log, &r, &secs));
  s->new_trainings++;
  s->train_secs += secs;
  /* recorded from its result.json, as a subprocess's training is */
  bf_search_entry e;
  return srch_adopt(s, split, d_r, secs, &e);
}

/* Waits for every running subprocess; keeps the first error. */
int srch_drain(search *s, int rc) {
  while (s->n_running) {
    int sp;
    int r = srch_wait_one(s, &sp);
    if (r < 0) {
      if (rc >= 0) rc = r;
      else fprintf(s->log, "bf-search: error: %s\n", bf_last_error());
    } else if (r == BF_SEARCH_STOPPED && rc == 0)
      rc = BF_SEARCH_STOPPED;
  }
  return rc;
}
