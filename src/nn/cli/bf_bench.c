/* bf-bench: times ResNet-50 training steps or inference on synthetic data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_common.h"
#include "engine.h"
#include "model.h"
#include "split.h"

static void usage(void) {
  printf("usage: bf-bench [--mode train|infer] [--size S] [--batch B] [--iters N] [--warmup W]\n"
         "                [--threads T] [--classes C] [--backend NAME] [--split-after K --dr R]\n"
         "                [--halves A.safetensors[,B.safetensors]]\n"
         "\n"
         "Times ResNet-50 training steps (forward, loss, backward, SGD) or eval-mode\n"
         "inference on synthetic data and prints images_per_sec=<float>.\n"
         "Defaults: train, 224, batch 16, 5 iterations after 1 warm-up, all cores, 1000 classes.\n"
         "\n"
         "--halves (implies --mode infer) times the folded inference engine that bf-client,\n"
         "bf-serve and bf-search's profiling run, on bf-export halves: a device half, a server\n"
         "half, or both (the whole model). --size is the image size; a server half gets the\n"
         "feature map of that image. Prints each call's latency, their median and p90, and\n"
         "the process's CPU time per call (all threads).\n"
         "Without --halves, --mode infer times the same engine on a random-init model folded\n"
         "in memory (the whole network, or both halves with --split-after): the path\n"
         "bf-infer's eval mode runs.\n");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* CPU seconds of all threads of this process: on a shared machine, unlike
 * wall time, it does not count the slices other work takes from us. */
static double process_cpu_sec(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)) return 0;
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --halves: the folded engine on one or two files, per-call latencies. */
static int bench_engine(const char *list, const char *backend, int threads, int batch, int size, long iters,
                        long warmup) {
  char buf[2048];
  if (strlen(list) >= sizeof buf) return cli_fail("--halves: list too long");
  strcpy(buf, list);
  const char *paths[2];
  int np = 0;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    if (np == 2) return cli_fail("--halves: at most two files (device,server)");
    paths[np++] = tok;
  }
  if (!np) return cli_fail("--halves: no file given");
  bf_backend *be = NULL;
  bf_engine *e = NULL;
  float *in = NULL, *out = NULL;
  double *lat = bf_malloc((size_t)iters * sizeof(double), "latencies");
  int rc, oh, ow, oc;
  if (!lat) return cli_fail_bf(NULL);
  if ((rc = bf_backend_create(&be, backend, threads))) goto fail;
  if ((rc = bf_engine_load(&e, be, paths, np))) goto fail;
  int c = bf_engine_input_channels(e), hw = c == 3 ? size : bf_feature_size(size, bf_engine_split_after(e));
  if ((rc = bf_engine_plan(e, batch, hw, hw, &oh, &ow, &oc))) goto fail;
  size_t nin = (size_t)batch * hw * hw * c, nout = (size_t)batch * oh * ow * oc;
  in = bf_malloc(nin * sizeof(float), "bench input");
  out = bf_malloc(nout * sizeof(float), "bench output");
  if (!in || !out) {
    rc = BF_ENOMEM;
    goto fail;
  }
  bf_rng r;
  bf_rng_seed(&r, 7);
  for (size_t i = 0; i < nin; i++) in[i] = (float)bf_rng_normal(&r);
  double total = 0, cpu0 = 0;
  for (long it = 0; it < warmup + iters; it++) {
    if (it == warmup) cpu0 = process_cpu_sec();
    double t0 = bf_now_sec();
    if ((rc = bf_engine_run(e, in, out))) goto fail;
    double dt = bf_now_sec() - t0;
    if (it >= warmup) lat[it - warmup] = dt, total += dt;
  }
  double cpu = process_cpu_sec() - cpu0;
  printf("latencies_ms=");
  for (long i = 0; i < iters; i++) printf("%s%.3f", i ? "," : "", lat[i] * 1e3);
  printf("\n");
  qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
  printf("mode=infer-engine part=%s input=%dx%dx%dx%d batch=%d iters=%ld threads=%d backend=%s\n",
         bf_engine_describe(e), batch, hw, hw, c, batch, iters, be->threads, be->name);
  printf("median_ms=%.3f\n", lat[(iters - 1) / 2] * 1e3);
  printf("p90_ms=%.3f\n", lat[(size_t)((double)(iters - 1) * 0.9 + 0.5)] * 1e3);
  printf("images_per_sec=%.3f\n", (double)batch * (double)iters / total);
  printf("cpu_ms_per_call=%.3f\n", cpu / (double)iters * 1e3);
  printf("gflop_per_image=%.3f\n", bf_engine_gflop_per_image(e));
  rc = 0;
  goto done;
fail:
  rc = cli_fail_bf(NULL);
done:
  free(lat);
  free(in);
  free(out);
  bf_engine_free(e);
  bf_backend_destroy(be);
  return rc;
}

int main(int argc, char **argv) {
  cli_prog = "bf-bench";
  long size = 224, batch = 16, iters = 5, warmup = 1, threads = 0, classes = 1000, split = 0, dr = 0;
  int train = 1, rc;
  const char *backend = "cpu", *v, *halves = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage();
      return 0;
    } else if (cli_is(a, "--mode")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (!strcmp(v, "infer"))
        train = 0;
      else if (strcmp(v, "train"))
        return cli_fail("--mode: '%s' is not train or infer", v);
    } else if (cli_is(a, "--size")) {
      if ((rc = cli_int(argc, argv, &i, 32, 4096, &size))) return rc;
    } else if (cli_is(a, "--batch")) {
      if ((rc = cli_int(argc, argv, &i, 1, 65536, &batch))) return rc;
    } else if (cli_is(a, "--iters")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000, &iters))) return rc;
    } else if (cli_is(a, "--warmup")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1000000, &warmup))) return rc;
    } else if (cli_is(a, "--threads")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1024, &threads))) return rc;
    } else if (cli_is(a, "--classes")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000, &classes))) return rc;
    } else if (cli_is(a, "--split-after")) {
      if ((rc = cli_int(argc, argv, &i, 0, 16, &split))) return rc;
    } else if (cli_is(a, "--dr")) {
      if ((rc = cli_int(argc, argv, &i, 1, 2048, &dr))) return rc;
    } else if (cli_is(a, "--backend")) {
      if ((rc = cli_value(argc, argv, &i, &backend))) return rc;
    } else if (cli_is(a, "--halves")) {
      if ((rc = cli_value(argc, argv, &i, &halves))) return rc;
    } else {
      return cli_fail("unknown argument '%s' (see --help)", a);
    }
  }
  if (halves) return bench_engine(halves, backend, (int)threads, (int)batch, (int)size, iters, warmup);
  bf_model_config cfg = {(int)classes, (int)split, (int)(split ? (dr ? dr : 1) : 0), 0};
  bf_backend *be = NULL;
  bf_model *m = NULL;
  bf_engine *e = NULL;
  float *host = NULL, *out = NULL;
  int32_t *labels = NULL;
  if ((rc = bf_backend_create(&be, backend, (int)threads))) goto fail;
  if ((rc = bf_model_create(&m, be, &cfg))) goto fail;
  if ((rc = bf_model_init(m, 1))) goto fail;
  if (!train) { /* the folded engine; the model was only the fold's source */
    rc = bf_engine_from_model(&e, be, m, "random-init model");
    m = NULL; /* freed by the engine once folded */
    if (rc) goto fail;
    if ((rc = bf_engine_plan(e, (int)batch, (int)size, (int)size, NULL, NULL, NULL))) goto fail;
    out = bf_malloc((size_t)batch * classes * sizeof(float), "bench output");
    if (!out) {
      rc = BF_ENOMEM;
      goto fail;
    }
  } else if ((rc = bf_model_plan(m, (int)batch, (int)size, (int)size))) {
    goto fail;
  }
  size_t npix = (size_t)batch * size * size * 3;
  host = bf_malloc(npix * sizeof(float), "bench input");
  labels = bf_malloc((size_t)batch * sizeof(int32_t), "bench labels");
  if (!host || !labels) {
    rc = BF_ENOMEM;
    goto fail;
  }
  bf_rng r;
  bf_rng_seed(&r, 7);
  for (size_t i = 0; i < npix; i++) host[i] = (float)bf_rng_normal(&r);
  for (long i = 0; i < batch; i++) labels[i] = (int32_t)bf_rng_below(&r, (uint32_t)classes);
  if (train && (rc = be->upload(be, bf_model_input(m), host, npix * sizeof(float)))) goto fail;
  if (train && (rc = be->upload(be, bf_model_labels(m), labels, (size_t)batch * sizeof(int32_t)))) goto fail;
  bf_sgd_params hp = {0.01f, 0.9f, 1e-4f, 0};
  double t0 = 0;
  float loss = 0;
  for (long it = 0; it < warmup + iters; it++) {
    if (it == warmup) {
      if ((rc = be->sync(be))) goto fail;
      t0 = bf_now_sec();
    }
    if (!train) {
      if ((rc = bf_engine_run(e, host, out))) goto fail;
    } else {
      if ((rc = bf_model_forward(m, train))) goto fail;
      if ((rc = bf_model_loss(m, 0.0f, &loss))) goto fail;
      if ((rc = bf_model_backward(m))) goto fail;
      if ((rc = bf_model_sgd(m, &hp, 0))) goto fail;
    }
  }
  if ((rc = be->sync(be))) goto fail;
  double dt = bf_now_sec() - t0;
  printf("mode=%s size=%ld batch=%ld iters=%ld threads=%d backend=%s%s\n", train ? "train" : "infer", size, batch,
         iters, be->threads, be->name, train ? "" : " path=folded-engine");
  printf("sec_per_iter=%.6f\n", dt / (double)iters);
  printf("images_per_sec=%.3f\n", (double)batch * (double)iters / dt);
  rc = 0;
  goto done;
fail:
  rc = cli_fail_bf(NULL);
done:
  free(host);
  free(out);
  free(labels);
  bf_engine_free(e);
  bf_model_free(m);
  bf_backend_destroy(be);
  return rc;
}
