/* bf-train: trains ResNet-50 (+ butterfly unit) from an INI config.
 *
 * Exit status: 0 done (or stopped by --stop-after-steps), 1 error, 2 bad
 * command line or config, 3 non-finite loss, 128+N stopped by signal N
 * (130 SIGINT, 143 SIGTERM) after saving a checkpoint. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "cli_common.h"
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
          "  --eval-predictions F   each evaluation writes F (CSV index,label,top1: one row per\n"
          "                         test image, index = its place in the test split)\n"
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
          "Options and keys are spelt with '-' or '_' alike (--run-dir = --run_dir,\n"
          "--train.max-steps-per-epoch = --train.max_steps_per_epoch).\n"
          "\n"
          "config keys (INI [data] root = X is the key data.root; on the command line --data.root X):\n");
  bf_train_config_print_help(fp);
}

int main(int argc, char **argv) {
  cli_prog = "bf-train";
  const char *config = NULL, *resume = NULL;
  int print_config = 0, rc;
  bf_train_options opt;
  bf_train_options_init(&opt);
  /* pass 1: the flags that decide where the base config comes from */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (cli_flag(a, "-h") || cli_flag(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (cli_is(a, "--config")) {
      if ((rc = cli_value(argc, argv, &i, &config))) return rc;
    } else if (cli_is(a, "--resume")) {
      if ((rc = cli_value(argc, argv, &i, &resume))) return rc;
    }
  }
  if (config && resume) return cli_fail("--config and --resume exclude each other (a resumed run uses RUN_DIR/config.ini)");

  bf_train_config cfg;
  bf_train_config_defaults(&cfg);
  char resume_cfg[BF_TRAIN_PATH_MAX + 32];
  if (resume) {
    snprintf(resume_cfg, sizeof resume_cfg, "%s/config.ini", resume);
    if (bf_train_config_load(&cfg, resume_cfg)) return cli_fail("--resume %s: %s", resume, bf_last_error());
  } else if (config) {
    if (bf_train_config_load(&cfg, config)) return cli_fail_bf(NULL);
  }

  /* pass 2: options and overrides, in order */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    char key[256];
    if (cli_is(a, "--config") || cli_is(a, "--resume")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
    } else if (cli_flag(a, "--force")) {
      opt.force = 1;
    } else if (cli_flag(a, "--print-config")) {
      print_config = 1;
    } else if (cli_flag(a, "--progress")) {
      opt.progress = 1;
    } else if (cli_flag(a, "--no-progress")) {
      opt.progress = 0;
    } else if (cli_flag(a, "--quiet")) {
      opt.quiet = 1;
    } else if (cli_is(a, "--eval-predictions")) {
      if ((rc = cli_value(argc, argv, &i, &opt.eval_predictions))) return rc;
    } else if (cli_is(a, "--stop-after-steps")) {
      long n;
      if ((rc = cli_int(argc, argv, &i, 1, LONG_MAX, &n))) return rc;
      opt.stop_after_steps = n;
    } else if (!cli_key_name(a, key, sizeof key)) {
      if (!bf_train_config_has_key(key)) return cli_fail("unknown option or key '%s' (see --help)", a);
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (bf_train_config_set(&cfg, key, v, "command line")) return cli_fail_bf(NULL);
    } else {
      return cli_fail("unexpected argument '%s' (see --help)", a);
    }
  }
  if (resume) {
    if (strlen(resume) >= sizeof cfg.run_dir) return cli_fail("--resume: path too long");
    snprintf(cfg.run_dir, sizeof cfg.run_dir, "%s", resume);
    opt.resume = 1;
  }
  if (print_config) {
    bf_train_config_write(&cfg, stdout);
    return 0;
  }
  if (!config && !resume) return cli_fail("--config FILE or --resume RUN_DIR is required (see --help)");
  if (bf_train_config_validate(&cfg)) return cli_fail_bf(NULL);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  opt.stop = &g_stop;

  /* Data-parallel when mpirun or srun started this process as one of
   * several ranks (docs/scale-out.md); otherwise one process, as ever. */
  bf_dist *dist = NULL;
  if (bf_dist_init(&dist)) return cli_fail_bf(NULL);
  opt.dist = dist;
  bf_train_result res;
  rc = bf_train_run(&cfg, &opt, &res);
  if (rc) {
    if (!res.quiet) {
      char who[64] = "";
      /* an agreed error on rank 0 is every rank's: no rank to name */
      if (bf_dist_size(dist) > 1 && (!res.agreed || bf_dist_rank(dist) != 0)) snprintf(who, sizeof who, "rank %d of %d", bf_dist_rank(dist), bf_dist_size(dist));
      cli_fail_bf(who);
    }
    int status = rc == BF_ENUM ? 3 : 1;
    if (!res.agreed) bf_dist_abort(dist, status); /* the other ranks would wait for this one */
    bf_dist_finalize(dist);
    return status;
  }
  bf_dist_finalize(dist);
  if (res.stopped && res.stop_signal) return 128 + res.stop_signal;
  return 0;
}
