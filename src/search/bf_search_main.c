/* bf-search --config FILE.ini [--key value | --key=value]...
 * The split search of the paper's Algorithm 1 (docs/search.md).
 * Modes: (default) the whole search; --emit-slurm FILE writes the next wave
 * of trainings as a Slurm job array; --train-one K:R runs one training (what
 * --jobs subprocesses and the Slurm tasks run).
 * Exit status: 0 done (or stopped by --max-trainings / a signal: rerun to
 * resume), 1 failure, 2 bad command line or config; --train-one: 3 stopped. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "search.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static void usage(FILE *fp) {
  fprintf(fp, "usage: bf-search --config FILE.ini [--section.key VALUE]... [--baseline RUN_DIR] [--max-trainings N]\n"
              "                 [--jobs N]                       trainings at once (subprocesses)\n"
              "       bf-search --config FILE.ini [...] --emit-slurm FILE   next wave as a Slurm job array\n"
              "       bf-search --config FILE.ini [...] --train-one K:R|baseline   one training (Slurm task)\n"
              "       bf-search --help\n\n");
  bf_search_config_print_help(fp);
}

static int fail(bf_search_config *c, int code) {
  fprintf(stderr, "bf-search: error: %s\n", bf_last_error());
  bf_search_config_free(c);
  return code;
}

int main(int argc, char **argv) {
  static bf_search_config c;
  bf_search_config_defaults(&c);
  const char *config = NULL, *emit = NULL, *one = NULL;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
    else if (!strncmp(argv[i], "--config=", 9)) config = argv[i] + 9;
  if (config && bf_search_config_load(&c, config)) return fail(&c, 2);
  /* the arguments that re-create this config, for subprocesses and Slurm
   * tasks: all but the mode flags */
  char **keep = calloc((size_t)argc + 1, sizeof *keep);
  if (!keep) {
    fprintf(stderr, "bf-search: error: out of memory\n");
    return 1;
  }
  int nkeep = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int start = i;
    if (!strcmp(a, "--config")) {
      keep[nkeep++] = argv[i++];
      keep[nkeep++] = argv[i];
      continue;
    }
    if (!strncmp(a, "--config=", 9)) {
      keep[nkeep++] = argv[i];
      continue;
    }
    if (strncmp(a, "--", 2)) {
      fprintf(stderr, "bf-search: error: unexpected argument '%s'\n", a);
      usage(stderr);
      free(keep);
      return 2;
    }
    char key[256];
    const char *val, *eq = strchr(a, '=');
    if (eq) {
      snprintf(key, sizeof key, "%.*s", (int)(eq - a - 2), a + 2);
      val = eq + 1;
    } else {
      if (i + 1 >= argc) {
        fprintf(stderr, "bf-search: error: %s needs a value\n", a);
        free(keep);
        return 2;
      }
      snprintf(key, sizeof key, "%s", a + 2);
      val = argv[++i];
    }
    for (char *p = key; *p; p++)
      if (*p == '-') *p = '_';
    if (!strcmp(key, "emit_slurm") || !strcmp(key, "train_one")) {
      if (!*val) {
        fprintf(stderr, "bf-search: error: --%s needs a value\n", key);
        free(keep);
        return 2;
      }
      if (key[0] == 'e') emit = val;
      else one = val;
      continue;
    }
    for (int j = start; j <= i; j++) keep[nkeep++] = argv[j];
    char full[300];
    if (!strchr(key, '.') && (!strcmp(key, "max_trainings") || !strcmp(key, "baseline") || !strcmp(key, "dir") ||
                              !strcmp(key, "jobs")))
      snprintf(full, sizeof full, "search.%s", key);
    else snprintf(full, sizeof full, "%s", key);
    if (bf_search_config_set(&c, full, val, "command line")) {
      free(keep);
      return fail(&c, 2);
    }
  }
  keep[nkeep] = NULL;
  c.argv = keep;
  c.argc = nkeep;
  int rc = 0;
  if (!config) {
    fprintf(stderr, "bf-search: error: --config FILE.ini is required\n");
    usage(stderr);
    rc = 2;
  } else if (emit && one) {
    fprintf(stderr, "bf-search: error: --emit-slurm and --train-one exclude each other\n");
    rc = 2;
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
  } else rc = bf_search_run(&c, &g_stop, stderr);
  free(keep);
  bf_search_config_free(&c);
  if (rc == BF_SEARCH_STOPPED) return one ? 3 : 0;
  if (rc) {
    fprintf(stderr, "bf-search: error: %s\n", bf_last_error());
    return 1;
  }
  return 0;
}
