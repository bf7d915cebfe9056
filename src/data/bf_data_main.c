/* bf-data: look at a data set (classes, counts, bad files, augmented samples)
 * and export one as a PNG ImageFolder. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_data.h"
#include "cli_common.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: bf-data inspect ROOT [options]\n"
          "       bf-data export-png ROOT OUTDIR [options]\n"
          "       bf-data --help\n"
          "\n"
          "inspect: print the layout, classes, per-split counts and bad files of ROOT.\n"
          "export-png: write ROOT as a PNG ImageFolder OUTDIR/{train,test}/<class>/<NNNNN>.png\n"
          "  (gray PNG for IDX data, RGB otherwise; NNNNN = index in the split).\n"
          "\n"
          "options:\n"
          "  --layout L          auto|imagefolder|miniimagenet|idx (default auto)\n"
          "  --split-seed N      seed of the stratified split (default 0)\n"
          "  --test-fraction F   test share per class when ROOT has no split (default 0.15)\n"
          "  --max-bad F         fail when more than F of a split is bad (default 0.01)\n"
          "  --verify            decode every image at open (default: headers only)\n"
          "  --threads N         threads (default: all CPUs)\n"
          "  --quiet             do not list bad files while scanning\n"
          "  --classes           inspect: list every class with its counts\n"
          "  --write-split FILE  inspect: write the split (CSV) to FILE\n"
          "  --grid OUT.png      inspect: write a grid of augmented samples\n"
          "  --grid-n N          inspect: samples in the grid (default 16)\n"
          "  --size S            inspect: sample size in the grid (default: data set's)\n"
          "  --split train|test  inspect: split for the grid (default train)\n"
          "  --eval              inspect: eval transform (center crop) for the grid\n"
          "  --seed N            inspect: augmentation seed for the grid (default 0)\n"
          "  --limit N           export-png: only the first N samples of each split\n");
}

typedef struct export_job {
  const bf_dataset *ds;
  const char *out;
  bf_split split;
  size_t n;
  atomic_size_t next;
  atomic_int failed;
  char err[1024];
  pthread_mutex_t mu;
} export_job;

static void *export_thread(void *arg) {
  export_job *J = arg;
  const bf_dataset_info *in = bf_dataset_get_info(J->ds);
  char path[4096];
  for (;;) {
    size_t i = atomic_fetch_add(&J->next, 1);
    if (i >= J->n || atomic_load(&J->failed)) break;
    int label;
    const char *src;
    bf_image img;
    int rc = bf_dataset_sample(J->ds, J->split, i, &label, &src);
    if (!rc) rc = bf_dataset_load_image(J->ds, J->split, i, &img);
    if (!rc) {
      snprintf(path, sizeof path, "%s/%s/%s/%05zu.png", J->out, J->split ? "test" : "train",
               bf_dataset_class_name(J->ds, label), i);
      if (in->layout == BF_LAYOUT_IDX) { /* gray stays gray: the PNG holds the IDX bytes */
        size_t np = (size_t)img.w * img.h;
        for (size_t p = 0; p < np; p++) img.rgb[p] = img.rgb[3 * p];
        rc = bf_png_write(path, img.rgb, img.w, img.h, 1);
      } else {
        rc = bf_png_write(path, img.rgb, img.w, img.h, 3);
      }
      bf_image_free(&img);
    }
    if (rc) {
      pthread_mutex_lock(&J->mu);
      if (!atomic_load(&J->failed)) snprintf(J->err, sizeof J->err, "%s", bf_last_error());
      atomic_store(&J->failed, 1);
      pthread_mutex_unlock(&J->mu);
      break;
    }
  }
  return NULL;
}

static int cmd_export(const bf_dataset *ds, const char *out, long limit, int threads) {
  char path[4096];
  for (int s = 0; s < 2; s++)
    for (int c = 0; c < bf_dataset_get_info(ds)->num_classes; c++) {
      snprintf(path, sizeof path, "%s/%s/%s", out, s ? "test" : "train", bf_dataset_class_name(ds, c));
      if (bf_mkdirs(path)) {
        fprintf(stderr, "bf-data: %s\n", bf_last_error());
        return 1;
      }
    }
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  for (int s = 0; s < 2; s++) {
    export_job J = {.ds = ds, .out = out, .split = (bf_split)s};
    pthread_mutex_init(&J.mu, NULL);
    J.n = bf_dataset_count(ds, (bf_split)s);
    if (limit >= 0 && (size_t)limit < J.n) J.n = (size_t)limit;
    pthread_t th[64];
    int started = 0;
    for (int t = 0; t < threads; t++)
      if (pthread_create(&th[t], NULL, export_thread, &J) == 0) started++;
    if (!started) export_thread(&J);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&J.mu);
    if (atomic_load(&J.failed)) {
      fprintf(stderr, "bf-data: export failed: %s\n", J.err);
      return 1;
    }
    printf("%s: %zu images\n", s ? "test" : "train", J.n);
  }
  return 0;
}

static int write_grid(const bf_dataset *ds, bf_data_config *cfg, bf_split split, int n, const char *out) {
  cfg->batch_size = n;
  cfg->drop_last = 0;
  cfg->want_float = 0;
  cfg->want_u8 = 1;
  bf_loader *L;
  if (bf_loader_create(&L, ds, split, cfg)) return -1;
  bf_batch b;
  int rc = bf_loader_start(L, 0, 0);
  if (!rc) rc = bf_loader_next(L, &b);
  if (!rc) {
    int cols = (int)ceil(sqrt((double)b.count)), rows = (b.count + cols - 1) / cols, S = b.w, gap = 2;
    int W = cols * (S + gap) + gap, H = rows * (S + gap) + gap;
    uint8_t *img = calloc((size_t)W * H * 3, 1);
    if (!img) rc = bf_error(BF_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < b.count; i++) {
      int gx = gap + (i % cols) * (S + gap), gy = gap + (i / cols) * (S + gap);
      for (int y = 0; y < S; y++)
        memcpy(img + ((size_t)(gy + y) * W + gx) * 3, b.u8 + ((size_t)i * S * S + (size_t)y * S) * 3, (size_t)S * 3);
    }
    if (!rc) rc = bf_png_write(out, img, W, H, 3);
    free(img);
    if (!rc) {
      printf("grid: %s (%d samples of %dx%d, %s transform, labels:", out, b.count, S, S,
             bf_loader_config(L)->augment == BF_AUG_TRAIN ? "train" : "eval");
      for (int i = 0; i < b.count; i++) printf(" %d", b.labels[i]);
      printf(")\n");
    }
  }
  bf_loader_destroy(L);
  return rc;
}

int main(int argc, char **argv) {
  cli_prog = "bf-data";
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  const char *cmd = argv[1];
  int is_inspect = !strcmp(cmd, "inspect"), is_export = !strcmp(cmd, "export-png");
  if (!is_inspect && !is_export) return cli_fail("unknown command '%s' (try --help)", cmd);
  bf_data_config cfg;
  bf_data_config_init(&cfg);
  const char *pos[2] = {NULL, NULL}, *split_out = NULL, *grid = NULL;
  int npos = 0, list_classes = 0, eval = 0;
  long grid_n = 16, size = 0, limit = -1, v;
  bf_split split = BF_SPLIT_TRAIN;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *val;
    int rc;
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (cli_is(a, "--layout")) {
      if ((rc = cli_value(argc, argv, &i, &val))) return rc;
      if (bf_layout_parse(val, &cfg.layout)) return cli_fail("--%s", bf_last_error());
    } else if (cli_is(a, "--split-seed")) {
      if ((rc = cli_int(argc, argv, &i, 0, 0x7fffffffL, &v))) return rc;
      cfg.split_seed = (uint64_t)v;
    } else if (cli_is(a, "--seed")) {
      if ((rc = cli_int(argc, argv, &i, 0, 0x7fffffffL, &v))) return rc;
      cfg.seed = (uint64_t)v;
    } else if (cli_is(a, "--test-fraction")) {
      if ((rc = cli_float(argc, argv, &i, 0.0, 0.99, &cfg.test_fraction))) return rc;
    } else if (cli_is(a, "--max-bad")) {
      if ((rc = cli_float(argc, argv, &i, 0.0, 1.0, &cfg.max_bad_fraction))) return rc;
    } else if (cli_is(a, "--threads")) {
      if ((rc = cli_int(argc, argv, &i, 1, 64, &v))) return rc;
      cfg.threads = (int)v;
    } else if (cli_flag(a, "--verify")) {
      cfg.verify = 1;
    } else if (cli_flag(a, "--quiet")) {
      cfg.verbose = 0;
    } else if (cli_flag(a, "--classes")) {
      list_classes = 1;
    } else if (cli_flag(a, "--eval")) {
      eval = 1;
    } else if (cli_is(a, "--write-split")) {
      if ((rc = cli_value(argc, argv, &i, &split_out))) return rc;
    } else if (cli_is(a, "--grid")) {
      if ((rc = cli_value(argc, argv, &i, &grid))) return rc;
    } else if (cli_is(a, "--grid-n")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1024, &grid_n))) return rc;
    } else if (cli_is(a, "--size")) {
      if ((rc = cli_int(argc, argv, &i, 8, 1024, &size))) return rc;
    } else if (cli_is(a, "--limit")) {
      if ((rc = cli_int(argc, argv, &i, 0, 0x7fffffffL, &limit))) return rc;
    } else if (cli_is(a, "--split")) {
      if ((rc = cli_value(argc, argv, &i, &val))) return rc;
      if (!strcmp(val, "train")) split = BF_SPLIT_TRAIN;
      else if (!strcmp(val, "test")) split = BF_SPLIT_TEST;
      else return cli_fail("--split: '%s' is not train or test", val);
    } else if (a[0] == '-' && a[1]) {
      return cli_fail("unknown option '%s' (try --help)", a);
    } else if (npos < 2) {
      pos[npos++] = a;
    } else {
      return cli_fail("unexpected argument '%s' (try --help)", a);
    }
  }
  if (npos != (is_export ? 2 : 1)) {
    return cli_fail("%s needs %s (try --help)", cmd, is_export ? "ROOT and OUTDIR" : "ROOT");
  }
  bf_dataset *ds;
  if (bf_dataset_open(&ds, pos[0], &cfg)) {
    fprintf(stderr, "bf-data: %s\n", bf_last_error());
    return 1;
  }
  int rc = 0;
  if (is_export) {
    long nthreads = cfg.threads;
    if (nthreads <= 0) {
      bf_data_config r = cfg;
      bf_data_config_resolve(&r, ds, BF_SPLIT_TRAIN);
      nthreads = r.threads;
    }
    rc = cmd_export(ds, pos[1], limit, (int)nthreads);
    bf_dataset_close(ds);
    return rc;
  }
  const bf_dataset_info *in = bf_dataset_get_info(ds);
  printf("root:      %s\n", bf_dataset_root(ds));
  printf("layout:    %s%s\n", bf_layout_name(in->layout), in->is_fashion_mnist ? " (Fashion-MNIST)" : "");
  printf("split:     %s\n", in->explicit_split ? "explicit (from the layout)"
                                                 : "stratified per class (see --test-fraction, --split-seed)");
  printf("classes:   %d\n", in->num_classes);
  printf("train:     %zu\ntest:      %zu\n", in->count[0], in->count[1]);
  printf("bad:       %zu\n", in->bad_count);
  for (size_t i = 0; i < in->bad_count; i++)
    printf("  bad: %s: %s\n", bf_dataset_bad_path(ds, i), bf_dataset_bad_reason(ds, i));
  printf("defaults:  mean %.4f %.4f %.4f  std %.4f %.4f %.4f%s\n", in->default_mean[0], in->default_mean[1],
         in->default_mean[2], in->default_std[0], in->default_std[1], in->default_std[2],
         in->small_images ? "  (small images: out 32, pad 4)" : "  (out 224, resize 256)");
  int nc = in->num_classes;
  for (int c = 0; c < nc; c++) {
    if (!list_classes && c == 5 && nc > 10) {
      printf("  ... (%d more; --classes lists all)\n", nc - 10);
      c = nc - 5;
    }
    printf("  %4d %-24s train %6zu  test %6zu\n", c, bf_dataset_class_name(ds, c),
           bf_dataset_class_count(ds, BF_SPLIT_TRAIN, c), bf_dataset_class_count(ds, BF_SPLIT_TEST, c));
  }
  if (split_out) {
    if (bf_dataset_write_split(ds, split_out)) {
      fprintf(stderr, "bf-data: %s\n", bf_last_error());
      rc = 1;
    } else {
      printf("split written to %s\n", split_out);
    }
  }
  if (!rc && grid) {
    if (size) cfg.out_size = (int)size;
    cfg.augment = eval ? BF_AUG_EVAL : BF_AUG_TRAIN;
    if (write_grid(ds, &cfg, split, (int)grid_n, grid)) {
      fprintf(stderr, "bf-data: grid: %s\n", bf_last_error());
      rc = 1;
    }
  }
  bf_dataset_close(ds);
  return rc;
}
