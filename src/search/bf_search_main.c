/* bf-search --config FILE.ini [--key value | --key=value]...
 * The split search of the paper's Algorithm 1 (docs/search.md).
 * Exit status: 0 done (or stopped by --max-trainings / a signal: rerun to
 * resume), 1 failure, 2 bad command line or config. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "bf_core.h"
#include "search.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static void usage(FILE *fp) {
  fprintf(fp, "usage: bf-search --config FILE.ini [--section.key VALUE]... [--baseline RUN_DIR] [--max-trainings N]\n"
              "       bf-search --help\n\n");
  bf_search_config_print_help(fp);
}

int main(int argc, char **argv) {
  static bf_search_config c;
  bf_search_config_defaults(&c);
  const char *config = NULL;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
    else if (!strncmp(argv[i], "--config=", 9)) config = argv[i] + 9;
  if (config && bf_search_config_load(&c, config)) {
    fprintf(stderr, "bf-search: error: %s\n", bf_last_error());
    bf_search_config_free(&c);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--config")) {
      i++;
      continue;
    }
    if (!strncmp(a, "--config=", 9)) continue;
    if (strncmp(a, "--", 2)) {
      fprintf(stderr, "bf-search: error: unexpected argument '%s'\n", a);
      usage(stderr);
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
        return 2;
      }
      snprintf(key, sizeof key, "%s", a + 2);
      val = argv[++i];
    }
    for (char *p = key; *p; p++)
      if (*p == '-') *p = '_';
    char full[300];
    if (!strchr(key, '.') && (!strcmp(key, "max_trainings") || !strcmp(key, "baseline") || !strcmp(key, "dir")))
      snprintf(full, sizeof full, "search.%s", key);
    else snprintf(full, sizeof full, "%s", key);
    if (bf_search_config_set(&c, full, val, "command line")) {
      fprintf(stderr, "bf-search: error: %s\n", bf_last_error());
      bf_search_config_free(&c);
      return 2;
    }
  }
  if (!config) {
    fprintf(stderr, "bf-search: error: --config FILE.ini is required\n");
    usage(stderr);
    bf_search_config_free(&c);
    return 2;
  }
  if (bf_search_config_finish(&c)) {
    fprintf(stderr, "bf-search: error: %s\n", bf_last_error());
    bf_search_config_free(&c);
    return 2;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  int rc = bf_search_run(&c, &g_stop, stderr);
  bf_search_config_free(&c);
  if (rc == BF_SEARCH_STOPPED) return 0;
  if (rc) {
    fprintf(stderr, "bf-search: error: %s\n", bf_last_error());
    return 1;
  }
  return 0;
}
