/* bf-search --config FILE.ini [--key value | --key=value]...
 * The split search of the paper's Algorithm 1 (docs/search.md).
 * Modes: (default) the whole search; --emit-slurm FILE writes the next wave
 * of trainings as a Slurm job array; --train-one K:R runs one training (what
 * --jobs subprocesses and the Slurm tasks run); --select-only selects from
 * bf-profile's device/server profiles (issue 17);
 * --reprofile profiles and
 * selects again without training (a finished search, on a quieter machine).
 * Exit status: 0 done (or stopped by --max-trainings / a signal: rerun to
 * resume), 1 failure, 2 bad command line or config; --train-one: 3 stopped. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "cli_common.h"
#include "search.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static void usage(FILE *fp) {
  fprintf(fp, "usage: bf-search --config FILE.ini [--section.key VALUE]... [--baseline RUN_DIR] [--max-trainings N]\n"
              "                 [--jobs N]                       trainings at once (subprocesses)\n"
              "       bf-search --config FILE.ini [...] --emit-slurm FILE   next wave as a Slurm job array\n"
              "       bf-search --config FILE.ini [...] --train-one K:R|baseline   one training (Slurm task)\n"
              "       bf-search --config FILE.ini [...] --select-only [--device-profile F] [--server-profile F]\n"
              "                 selection from bf-profile files (a side without a file is measured here)\n"
              "       bf-search --config FILE.ini [...] --reprofile   profiling + selection again of a finished\n"
              "                 search (trains nothing; fails if a training is still to run)\n"
              "       bf-search --help\n"
              "Options and keys are spelt with '-' or '_' alike (--max-trainings = --max_trainings).\n\n");
  bf_search_config_print_help(fp);
}

static int fail(bf_search_config *c, int code) {
  cli_fail_bf(NULL);
  bf_search_config_free(c);
  return code;
}

int main(int argc, char **argv) {
  static bf_search_config c;
  cli_prog = "bf-search";
  bf_search_config_defaults(&c);
  const char *config = NULL, *emit = NULL, *one = NULL, *devprof = NULL, *srvprof = NULL;
  int select_only = 0;
  int rc = 0;
  for (int i = 1; i < argc; i++)
    if (cli_flag(argv[i], "--help") || cli_flag(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (cli_is(argv[i], "--config")) {
      if ((rc = cli_value(argc, argv, &i, &config))) return rc;
    }
  if (config && bf_search_config_load(&c, config)) return fail(&c, 2);
  /* the arguments that re-create this config, for subprocesses and Slurm
   * tasks: all but the mode flags */
  char **keep = calloc((size_t)argc + 1, sizeof *keep);
  if (!keep) {
    cli_fail("out of memory");
    return 1;
  }
  int nkeep = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val;
    int start = i;
    char key[256], full[300];
    if (cli_flag(a, "--select-only")) {
      select_only = 1;
      continue;
    }
    if (cli_key_name(a, key, sizeof key)) {
      rc = cli_fail("unexpected argument '%s'", a);
      usage(stderr);
      break;
    }
    if (cli_flag(a, "--reprofile")) { /* a flag: no value */
      c.profile_only = 1;
      continue;
    }
    if ((rc = cli_value(argc, argv, &i, &val))) break;
    if (!strcmp(key, "config")) {
      for (int j = start; j <= i; j++) keep[nkeep++] = argv[j];
      continue;
    }
    if (!strcmp(key, "emit_slurm") || !strcmp(key, "train_one") || !strcmp(key, "device_profile") ||
        !strcmp(key, "server_profile")) {
      if (!*val) {
        rc = cli_fail("--%s needs a value", key);
        break;
      }
      if (key[0] == 'e') emit = val;
      else if (key[0] == 't') one = val;
      else if (key[0] == 'd') devprof = val;
      else srvprof = val;
      continue;
    }
    for (int j = start; j <= i; j++) keep[nkeep++] = argv[j];
    /* short forms of the search's most used keys */
    if (!strcmp(key, "max_trainings") || !strcmp(key, "baseline") || !strcmp(key, "dir") || !strcmp(key, "jobs"))
      snprintf(full, sizeof full, "search.%s", key);
    else snprintf(full, sizeof full, "%s", key);
    if (bf_search_config_set(&c, full, val, "command line")) {
      rc = fail(&c, 2);
      break;
    }
  }
  if (rc) {
    free(keep);
    bf_search_config_free(&c);
    return rc;
  }
  keep[nkeep] = NULL;
  c.argv = keep;
  c.argc = nkeep;
  if (!config) {
    rc = cli_fail("--config FILE.ini is required");
    usage(stderr);
  } else if (emit && one) {
    rc = cli_fail("--emit-slurm and --train-one exclude each other");
  } else if ((devprof || srvprof) && !select_only) {
    rc = cli_fail("--device-profile and --server-profile need --select-only");
  } else if (select_only && (emit || one)) {
    rc = cli_fail("--select-only excludes --emit-slurm and --train-one");
  } else if (c.profile_only && (emit || one)) {
    rc = cli_fail("--reprofile excludes --emit-slurm and --train-one");
  } else if (c.profile_only && select_only) {
    rc = cli_fail("--reprofile and --select-only exclude each other (--select-only without profile files measures here too)");
  } else if (bf_search_config_finish(&c)) rc = fail(&c, 2);
  int split = 0, d_r = 0;
  if (!rc && one && (bf_search_parse_task(one, &split, &d_r) || bf_search_check_task(&c, split, d_r)))
    rc = fail(&c, 2);
  if (rc) {
    free(keep);
    bf_search_config_free(&c);
    return rc;
  }
  /* SA_RESTART: the data loader's reads must not see EINTR; the search
   * polls the flag */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  if (emit) {
    int n;
    rc = bf_search_emit_slurm(&c, emit, &n, stderr);
  } else if (one) {
    rc = bf_search_train_one(&c, split, d_r, &g_stop, stderr);
  } else if (select_only) {
    rc = bf_search_select_only(&c, devprof, srvprof, stderr);
  } else rc = bf_search_run(&c, &g_stop, stderr);
  free(keep);
  bf_search_config_free(&c);
  if (rc == BF_SEARCH_STOPPED) return one ? 3 : 0;
  if (rc) {
    cli_fail_bf(NULL);
    return 1;
  }
  return 0;
}
