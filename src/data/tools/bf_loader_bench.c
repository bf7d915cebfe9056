/* bf-loader-bench: loader throughput (images/s) for the train transform:
 * decode + resize shorter side + random crop + flip + normalise to float32.
 * usage: bf-loader-bench ROOT [--threads N] [--batch B] [--size S] [--resize R]
 *                        [--images N] [--u8]
 * Driven by bench/loader_bench.sh, which compares with Pillow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bf_data.h"
#include "cli_common.h"

/* CPU time of the whole process (all loader threads): throughput per CPU
 * second is what "per thread" means on a machine that is not idle. */
static double cpu_sec(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
  cli_prog = "bf-loader-bench";
  if (argc < 2 || cli_flag(argv[1], "--help")) {
    fprintf(argc < 2 ? stderr : stdout,
            "usage: bf-loader-bench ROOT [--threads N] [--batch B] [--size S] [--resize R] [--images N] [--u8]\n");
    return argc < 2 ? 2 : 0;
  }
  bf_data_config c;
  bf_data_config_init(&c);
  c.test_fraction = 0.0;
  c.layout = BF_LAYOUT_IMAGEFOLDER;
  c.verbose = 0;
  c.batch_size = 32;
  c.out_size = 224;
  c.resize = 256;
  c.want_u8 = 0;
  c.threads = 1;
  long images = 2000;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    long v = 0;
    int rc;
    if (cli_flag(a, "--u8")) {
      c.want_u8 = 1;
      c.want_float = 0;
    } else if (cli_is(a, "--threads") || cli_is(a, "--batch") || cli_is(a, "--size") || cli_is(a, "--resize") ||
               cli_is(a, "--images")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000000L, &v))) return rc;
      if (cli_is(a, "--threads")) c.threads = (int)v;
      else if (cli_is(a, "--batch")) c.batch_size = (int)v;
      else if (cli_is(a, "--size")) c.out_size = (int)v;
      else if (cli_is(a, "--resize")) c.resize = (int)v;
      else images = v;
    } else {
      return cli_fail("unknown option %s", a);
    }
  }
  bf_dataset *ds;
  if (bf_dataset_open(&ds, argv[1], &c)) {
    fprintf(stderr, "bf-loader-bench: %s\n", bf_last_error());
    return 1;
  }
  bf_loader *L;
  if (bf_loader_create(&L, ds, BF_SPLIT_TRAIN, &c)) {
    fprintf(stderr, "bf-loader-bench: %s\n", bf_last_error());
    bf_dataset_close(ds);
    return 1;
  }
  bf_batch b;
  int rc = bf_loader_start(L, 0, 0);
  if (!rc) rc = bf_loader_next(L, &b); /* warm-up: threads started, buffers grown */
  long done = 0;
  double t0 = bf_now_sec(), c0 = cpu_sec();
  while (!rc && done < images) {
    rc = bf_loader_next(L, &b);
    if (!rc) done += b.count;
  }
  double dt = bf_now_sec() - t0, dc = cpu_sec() - c0;
  if (rc) {
    fprintf(stderr, "bf-loader-bench: %s\n", bf_last_error());
  } else {
    printf("{\"threads\": %d, \"images\": %ld, \"seconds\": %.4f, \"images_per_s\": %.1f, \"cpu_s\": %.4f, "
           "\"images_per_cpu_s\": %.1f}\n",
           c.threads, done, dt, done / dt, dc, done / dc);
  }
  bf_loader_destroy(L);
  bf_dataset_close(ds);
  return rc ? 1 : 0;
}
