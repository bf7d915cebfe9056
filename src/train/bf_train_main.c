/* bf-train: trains ResNet-50 (+ butterfly unit) from an INI config.
 *
 * Exit status: 0 done (or stopped by --stop-after-steps), 1 error, 2 bad
 * command line or config, 3 non-finite loss, 128+N stopped by signal N
 * (130 SIGINT, 143 SIGTERM) after saving a checkpoint. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "config.h"
#include "trainer.h"

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
  if (g_stop) { /* second signal: give up on the clean stop */
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  g_stop = sig;
}

static void usage(FILE *fp) {
  fprintf(fp,
          "usage: bf-train --config FILE.ini [--KEY VALUE | --KEY=VALUE ...] [options]\n"
          "       bf-train --resume RUN_DIR [--KEY VALUE ...]\n"
          "\n"
          "Trains torchvision's ResNet-50 with an optional butterfly unit (model.split_after,\n"
          "model.d_r) on a data set, evaluating top-1/top-5 on the held-out split after every\n"
          "epoch. The run directory (run_dir, default runs/<name>) receives config.ini,\n"
          "split.csv, metrics.jsonl, last.safetensors (+ last.state.safetensors), best.safetensors\n"
          "and result.json (docs/formats.md).\n"
          "\n"
          "options:\n"
          "  --config FILE          INI file ([section] key = value; see configs/)\n"
          "  --resume DIR           continue the run in DIR from its last checkpoint (uses\n"
          "                         DIR/config.ini; overrides still apply)\n"
          "  --force                start afresh even if the run directory holds a checkpoint\n"
          "  --print-config         print the effective config (INI) and exit\n"
          "  --stop-after-steps N   save a checkpoint and exit 0 after N optimizer steps in total\n"
          "  --progress | --no-progress   force the progress bar on/off (default: on a terminal)\n"
          "  --quiet                no config dump or data summary at start\n"
          "  -h, --help             this text\n"
          "\n"
          "SIGINT/SIGTERM: finish the current step, save last.safetensors and exit 128+signal\n"
          "(130/143); a second signal kills at once. A NaN/Inf loss stops with exit status 3\n"
          "and keeps the last good checkpoint.\n"
          "\n"
          "config keys (INI [data] root = X is the key data.root; on the command line --data.root X):\n");
  bf_train_config_print_help(fp);
}

static int fail(int code, const char *msg) {
  fprintf(stderr, "bf-train: error: %s\n", msg);
  return code;
}

int main(int argc, char **argv) {
  const char *config = NULL, *resume = NULL;
  int print_config = 0;
  bf_train_options opt;
  bf_train_options_init(&opt);
  /* pass 1: the flags that decide where the base config comes from */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--config") || !strcmp(a, "--resume")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "bf-train: error: %s needs a value\n", a);
        return 2;
      }
      if (!strcmp(a, "--config"))
        config = argv[++i];
      else
        resume = argv[++i];
    } else if (!strncmp(a, "--config=", 9)) {
      config = a + 9;
    } else if (!strncmp(a, "--resume=", 9)) {
      resume = a + 9;
    }
  }
  if (config && resume) return fail(2, "--config and --resume exclude each other (a resumed run uses RUN_DIR/config.ini)");

  bf_train_config cfg;
  bf_train_config_defaults(&cfg);
  char resume_cfg[BF_TRAIN_PATH_MAX + 32];
  if (resume) {
    snprintf(resume_cfg, sizeof resume_cfg, "%s/config.ini", resume);
    if (bf_train_config_load(&cfg, resume_cfg)) {
      fprintf(stderr, "bf-train: error: --resume %s: %s\n", resume, bf_last_error());
      return 2;
    }
  } else if (config) {
    if (bf_train_config_load(&cfg, config)) return fail(2, bf_last_error());
  }

  /* pass 2: options and overrides, in order */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--config") || !strcmp(a, "--resume")) {
      i++;
    } else if (!strncmp(a, "--config=", 9) || !strncmp(a, "--resume=", 9)) {
    } else if (!strcmp(a, "--force")) {
      opt.force = 1;
    } else if (!strcmp(a, "--print-config")) {
      print_config = 1;
    } else if (!strcmp(a, "--progress")) {
      opt.progress = 1;
    } else if (!strcmp(a, "--no-progress")) {
      opt.progress = 0;
    } else if (!strcmp(a, "--quiet")) {
      opt.quiet = 1;
    } else if (!strcmp(a, "--stop-after-steps")) {
      char *end;
      if (i + 1 >= argc) return fail(2, "--stop-after-steps needs a value");
      long long n = strtoll(argv[++i], &end, 10);
      if (*end || n < 1) return fail(2, "--stop-after-steps: expected a positive integer");
      opt.stop_after_steps = n;
    } else if (!strncmp(a, "--", 2) && a[2]) {
      char key[256];
      const char *val;
      const char *eq = strchr(a + 2, '=');
      if (eq) {
        snprintf(key, sizeof key, "%.*s", (int)(eq - a - 2), a + 2);
        val = eq + 1;
      } else {
        snprintf(key, sizeof key, "%s", a + 2);
        if (!bf_train_config_has_key(key)) {
          fprintf(stderr, "bf-train: error: unknown option or key '%s' (see --help)\n", a);
          return 2;
        }
        if (i + 1 >= argc) {
          fprintf(stderr, "bf-train: error: %s needs a value\n", a);
          return 2;
        }
        val = argv[++i];
      }
      if (bf_train_config_set(&cfg, key, val, "command line")) return fail(2, bf_last_error());
    } else {
      fprintf(stderr, "bf-train: error: unexpected argument '%s' (see --help)\n", a);
      return 2;
    }
  }
  if (resume) {
    if (strlen(resume) >= sizeof cfg.run_dir) return fail(2, "--resume: path too long");
    snprintf(cfg.run_dir, sizeof cfg.run_dir, "%s", resume);
    opt.resume = 1;
  }
  if (print_config) {
    bf_train_config_write(&cfg, stdout);
    return 0;
  }
  if (!config && !resume) return fail(2, "--config FILE or --resume RUN_DIR is required (see --help)");
  if (bf_train_config_validate(&cfg)) return fail(2, bf_last_error());

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  opt.stop = &g_stop;

  bf_train_result res;
  int rc = bf_train_run(&cfg, &opt, &res);
  if (rc == BF_ENUM) return fail(3, bf_last_error());
  if (rc) return fail(1, bf_last_error());
  if (res.stopped && res.stop_signal) return 128 + res.stop_signal;
  return 0;
}
