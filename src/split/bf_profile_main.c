/* bf-profile --deploy DIR --side device|server [options]
 * Times every split point of a deploy directory on this machine (the device
 * halves on a device, the server halves on a server) and writes
 * device-profile.json or server-profile.json for bf-search --select-only
 * (docs/search.md, "Profiles from real machines"). */
#include <stdio.h>
#include <string.h>

#include "bf_core.h"
#include "cli_common.h"
#include "hwprofile.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "usage: bf-profile --deploy DIR --side device|server [options]\n"
          "  --deploy DIR        deploy directory (bf-export / bf-search's DIR/deploy): every split in it\n"
          "  --side device|server  time the device halves (+ 8-bit quantisation, frame bytes, energy)\n"
          "                      or the server halves; plus the whole model of the deepest split\n"
          "  --out FILE          output (default device-profile.json / server-profile.json)\n"
          "  --threads N         compute threads (default: device 1, server 2, as bf-search)\n"
          "  --warmup N          untimed runs (default 2)\n"
          "  --runs N            timed runs: median, p10, p90 (default 7)\n"
          "  --power-mw P        compute power where the RAPL counters are not readable: energy =\n"
          "                      P x median time, marked \"modelled\" (default: device 3000, server 0)\n"
          "  --backend NAME      compute backend (default cpu)\n"
          "  --rapl-dir DIR      powercap directory (default /sys/class/powercap)\n");
}

int main(int argc, char **argv) {
  cli_prog = "bf-profile";
  const char *deploy = NULL, *out = NULL, *side = NULL;
  bf_hwprof_opts o = {BF_HWPROF_DEVICE, "cpu", 0, 2, 7, -1, NULL};
  long v;
  double d;
  int rc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (cli_is(a, "--deploy")) {
      if ((rc = cli_value(argc, argv, &i, &deploy))) return rc;
    } else if (cli_is(a, "--side")) {
      if ((rc = cli_value(argc, argv, &i, &side))) return rc;
    } else if (cli_is(a, "--out")) {
      if ((rc = cli_value(argc, argv, &i, &out))) return rc;
    } else if (cli_is(a, "--backend")) {
      if ((rc = cli_value(argc, argv, &i, &o.backend))) return rc;
    } else if (cli_is(a, "--rapl-dir")) {
      if ((rc = cli_value(argc, argv, &i, &o.rapl_dir))) return rc;
    } else if (cli_is(a, "--threads")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1024, &v))) return rc;
      o.threads = (int)v;
    } else if (cli_is(a, "--warmup")) {
      if ((rc = cli_int(argc, argv, &i, 0, 100000, &v))) return rc;
      o.warmup = (int)v;
    } else if (cli_is(a, "--runs")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000, &v))) return rc;
      o.runs = (int)v;
    } else if (cli_is(a, "--power-mw")) {
      if ((rc = cli_float(argc, argv, &i, 0, 1e9, &d))) return rc;
      o.power_mw = d;
    } else {
      usage(stderr);
      return cli_fail("unknown argument '%s'", a);
    }
  }
  if (!deploy) return cli_fail("--deploy DIR is required");
  if (!side) return cli_fail("--side device|server is required");
  if (!strcmp(side, "device")) o.side = BF_HWPROF_DEVICE;
  else if (!strcmp(side, "server")) o.side = BF_HWPROF_SERVER;
  else return cli_fail("--side: '%s' is not device or server", side);
  if (!o.threads) o.threads = o.side == BF_HWPROF_DEVICE ? 1 : 2;
  if (o.power_mw < 0) o.power_mw = o.side == BF_HWPROF_DEVICE ? 3000 : 0;
  if (!out) out = bf_hwprof_default_file(o.side);

  static bf_deploy dep;
  static bf_hwprof prof;
  if (bf_deploy_open(&dep, deploy)) {
    cli_fail_bf(NULL);
    return 1;
  }
  rc = bf_hwprof_measure(&dep, &o, &prof, stderr);
  if (!rc) rc = bf_hwprof_write(&prof, out);
  bf_deploy_close(&dep);
  if (rc) {
    cli_fail_bf(NULL);
    return 1;
  }
  fprintf(stderr, "bf-profile: wrote %s (%d split points, %s, %d threads, energy %s)\n", out, prof.n, prof.host,
          prof.threads, prof.energy_source);
  return 0;
}
