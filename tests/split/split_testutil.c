#include "split_testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "split.h"

int tu_randomize_bn(bf_model *m, uint64_t seed) {
  bf_backend *be = bf_model_backend(m);
  int n = bf_model_num_entries(m);
  for (int i = 0; i < n; i++) {
    const bf_entry *e = bf_model_entry(m, i);
    if (e->kind == BF_ENTRY_COUNTER || e->ndim != 1 || !strcmp(e->name, "fc.bias")) continue;
    float *v = malloc(e->numel * sizeof(float));
    if (!v) return BF_ENOMEM;
    bf_rng r;
    bf_rng_derive(&r, seed, (uint64_t)i, 77);
    const char *dot = strrchr(e->name, '.');
    for (size_t j = 0; j < e->numel; j++) {
      double u = bf_rng_uniform(&r), g = bf_rng_normal(&r);
      if (!strcmp(dot, ".weight")) v[j] = (float)(0.5 + u);        /* gamma */
      else if (!strcmp(dot, ".bias")) v[j] = (float)(0.1 * g);     /* beta */
      else if (!strcmp(dot, ".running_mean")) v[j] = (float)(0.1 * g);
      else v[j] = (float)(0.5 + 1.5 * u);                          /* running_var */
    }
    float *dst = (e->kind == BF_ENTRY_STAT ? bf_model_stats(m) : bf_model_params(m)) + e->offset;
    int rc = be->upload(be, dst, v, e->numel * sizeof(float));
    free(v);
    if (rc) return rc;
  }
  return BF_OK;
}

int tu_make_model(bf_backend *be, const char *path, int classes, int split_after, int d_r, uint64_t seed) {
  bf_model_config cfg = {classes, split_after, d_r, 0};
  bf_model *m;
  BF_TRY(bf_model_create(&m, be, &cfg));
  int rc = bf_model_init(m, seed);
  if (!rc) rc = tu_randomize_bn(m, seed + 1);
  if (!rc) rc = bf_model_save(m, path, NULL);
  bf_model_free(m);
  return rc;
}

void tu_image_u8(uint8_t *rgb, int w, int h, uint64_t seed) {
  bf_rng r;
  bf_rng_seed(&r, seed);
  double fx[3][3], fy[3][3], ph[3][3], amp[3][3], base[3];
  for (int c = 0; c < 3; c++) {
    base[c] = 60 + 140 * bf_rng_uniform(&r);
    for (int k = 0; k < 3; k++) {
      fx[c][k] = 12.0 * bf_rng_uniform(&r) / w;
      fy[c][k] = 12.0 * bf_rng_uniform(&r) / h;
      ph[c][k] = 6.283 * bf_rng_uniform(&r);
      amp[c][k] = 60 * bf_rng_uniform(&r);
    }
  }
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++) {
        double v = base[c] + 10 * bf_rng_normal(&r);
        for (int k = 0; k < 3; k++) v += amp[c][k] * sin(6.283 * (fx[c][k] * x + fy[c][k] * y) + ph[c][k]);
        if (v < 0) v = 0;
        if (v > 255) v = 255;
        rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
      }
}

void tu_image_f32(float *x, int w, int h, uint64_t seed) {
  static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  uint8_t *p = malloc((size_t)w * h * 3);
  if (!p) return;
  tu_image_u8(p, w, h, seed);
  for (size_t i = 0; i < (size_t)w * h * 3; i++) x[i] = (p[i] / 255.0f - mean[i % 3]) / sd[i % 3];
  free(p);
}

int tu_make_deploy(const char *work, int classes, int split_after, int d_r, const char *deploy) {
  char ckpt[700];
  snprintf(ckpt, sizeof ckpt, "%s/model.safetensors", work);
  BF_TRY(bf_mkdirs(work));
  bf_backend *be;
  BF_TRY(bf_backend_create(&be, "cpu", 1));
  int rc = tu_make_model(be, ckpt, classes, split_after, d_r, 5);
  bf_backend_destroy(be);
  if (rc) return rc;
  bf_export_opts o;
  bf_export_opts_init(&o);
  o.input_h = o.input_w = 64;
  return bf_split_export(ckpt, deploy, &o, NULL, 0);
}

int tu_spawn(char *const argv[], const char *out, const char *err, long rlimit_nofile, pid_t *pid) {
  fflush(NULL);
  pid_t p = fork();
  if (p < 0) return bf_error(BF_EIO, "fork: %s", strerror(errno));
  if (p == 0) {
    if (out) {
      int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) dup2(fd, 1), close(fd);
    }
    if (err) {
      int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) dup2(fd, 2), close(fd);
    }
    if (rlimit_nofile > 0) {
      struct rlimit rl = {(rlim_t)rlimit_nofile, (rlim_t)rlimit_nofile};
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    execv(argv[0], argv);
    _exit(127);
  }
  *pid = p;
  return BF_OK;
}

int tu_wait_port(pid_t pid, const char *port_file) {
  for (int i = 0; i < 600; i++) {
    uint8_t *d;
    size_t l;
    if (!bf_read_file(port_file, &d, &l)) {
      int port = atoi((char *)d);
      free(d);
      if (port > 0) return port;
    }
    siginfo_t si;
    memset(&si, 0, sizeof si); /* WNOWAIT: a dead child stays for tu_wait_exit */
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) return 0;
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

int tu_wait_exit(pid_t pid, double sec) {
  double t0 = bf_now_sec();
  for (;;) {
    int st;
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) return st;
    if (bf_now_sec() - t0 > sec) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}
