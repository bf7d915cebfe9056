/* Tests of the data pipeline (src/data). Usage: test_data CASE [ARGS]; every
 * case exits non-zero on the first summary of failed checks, 77 = skipped.
 * The images come from tools/make-synthetic-dataset (ctest fixture). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_data.h"
#include "bf_data_internal.h"

static int g_fail = 0;
#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      g_fail++;                                                               \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
      fprintf(stderr, __VA_ARGS__);                                           \
      fprintf(stderr, "\n");                                                  \
    }                                                                         \
  } while (0)

static char g_dir[4096];
static const char *P(const char *rel) {
  static char buf[8][4400];
  static int k = 0;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, rel);
  return buf[k];
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

static uint8_t *read_all(const char *path, size_t *len) {
  uint8_t *d = NULL;
  if (bf_read_file(path, &d, len)) return NULL;
  return d;
}

static bf_dataset *open_ds(const char *root, bf_layout lay, double max_bad, int threads, uint64_t split_seed) {
  bf_data_config c;
  bf_data_config_init(&c);
  c.layout = lay;
  c.max_bad_fraction = max_bad;
  c.threads = threads;
  c.split_seed = split_seed;
  c.verbose = 0;
  bf_dataset *ds = NULL;
  if (bf_dataset_open(&ds, root, &c)) {
    fprintf(stderr, "open %s: %s\n", root, bf_last_error());
    return NULL;
  }
  return ds;
}

/* ------------------------------------------------------------- decoders */
static void test_decode(void) {
  FILE *m = fopen(P("variants/manifest.txt"), "r");
  CHECK(m != NULL, "no manifest in %s", g_dir);
  if (!m) return;
  char name[128], file[128];
  int w, h, n = 0;
  double tol;
  while (fscanf(m, "%127s %127s %d %d %lf", name, file, &w, &h, &tol) == 5) {
    char rel[300];
    snprintf(rel, sizeof rel, "variants/%s", file);
    bf_image img;
    int rc = bf_image_decode_file(P(rel), 0, 0, &img);
    CHECK(rc == 0, "%s: %s", file, bf_last_error());
    if (rc) continue;
    snprintf(rel, sizeof rel, "variants/%s.rgb", name);
    size_t len;
    uint8_t *ref = read_all(P(rel), &len);
    CHECK(ref && len == (size_t)w * h * 3, "%s: reference", name);
    CHECK(img.w == w && img.h == h, "%s: %dx%d, expected %dx%d", file, img.w, img.h, w, h);
    if (ref && img.w == w && img.h == h) {
      double mae = 0;
      int maxd = 0;
      for (size_t i = 0; i < len; i++) {
        int d = abs((int)img.rgb[i] - ref[i]);
        mae += d;
        if (d > maxd) maxd = d;
      }
      mae /= (double)len;
      if (tol == 0) CHECK(maxd == 0, "%s: pixels differ (max diff %d)", file, maxd);
      else CHECK(mae <= tol, "%s: mean abs error %.2f > %.2f", file, mae, tol);
    }
    free(ref);
    bf_image_free(&img);
    n++;
  }
  fclose(m);
  CHECK(n >= 40, "only %d variants checked", n);

  /* CMYK is refused by name */
  bf_image img;
  int rc = bf_image_decode_file(P("variants/cmyk.jpg"), 0, 0, &img);
  CHECK(rc != 0 && strstr(bf_last_error(), "CMYK"), "cmyk.jpg: rc %d, '%s'", rc, bf_last_error());

  /* DCT-domain downscaling: 800x600 asked for >= 200x150 decodes at 1/4 */
  rc = bf_image_decode_file(P("variants/big.jpg"), 200, 150, &img);
  CHECK(rc == 0, "big.jpg: %s", bf_last_error());
  if (!rc) {
    CHECK(img.w == 200 && img.h == 150, "big.jpg scaled to %dx%d, expected 200x150", img.w, img.h);
    size_t len;
    uint8_t *ref = read_all(P("variants/big.rgb"), &len);
    if (ref && img.w == 200 && img.h == 150) {
      double mae = 0;
      for (int y = 0; y < 150; y++)
        for (int x = 0; x < 200; x++)
          for (int c = 0; c < 3; c++) {
            int s = 0;
            for (int dy = 0; dy < 4; dy++)
              for (int dx = 0; dx < 4; dx++) s += ref[((size_t)(4 * y + dy) * 800 + 4 * x + dx) * 3 + c];
            mae += fabs(s / 16.0 - img.rgb[((size_t)y * 200 + x) * 3 + c]);
          }
      mae /= 200.0 * 150 * 3;
      CHECK(mae < 4.0, "big.jpg downscaled: mean abs error %.2f vs box filter", mae);
    }
    free(ref);
    bf_image_free(&img);
  }
  rc = bf_image_decode_file(P("variants/big.jpg"), 700, 500, &img);
  CHECK(rc == 0 && img.w == 800 && img.h == 600, "big.jpg for 700x500 must stay full size (%dx%d)", img.w, img.h);
  bf_image_free(&img);
  rc = bf_image_decode_file(P("variants/big.jpg"), 390, 290, &img);
  CHECK(rc == 0 && img.w == 400 && img.h == 300, "big.jpg for 390x290 must decode at 1/2 (%dx%d)", img.w, img.h);
  bf_image_free(&img);

  /* resize + center crop agree with PIL (torchvision's Resize + CenterCrop) */
  FILE *rf = fopen(P("variants/resize.txt"), "r");
  CHECK(rf != NULL, "no resize.txt");
  int nres = 0;
  bf_aug_scratch as = {0};
  int S, C;
  while (rf && fscanf(rf, "%127s %127s %d %d", name, file, &S, &C) == 4) {
    char rel[300];
    snprintf(rel, sizeof rel, "variants/%s", file);
    bf_image src;
    if (bf_image_decode_file(P(rel), 0, 0, &src)) {
      CHECK(0, "%s", bf_last_error());
      continue;
    }
    int rw, rh;
    bf_resize_dims(src.w, src.h, S, &rw, &rh);
    int x0 = (int)lround((rw - C) / 2.0), y0 = (int)lround((rh - C) / 2.0);
    if ((rw - C) % 2 || (rh - C) % 2) CHECK(0, "%s: pick sizes without a .5 centre", name);
    uint8_t *o = malloc((size_t)C * C * 3);
    CHECK(bf_augment_window(&as, src.rgb, src.w, src.h, rw, rh, x0, y0, C, 0, o) == 0, "%s", bf_last_error());
    snprintf(rel, sizeof rel, "variants/%s_ref.rgb", name);
    size_t len;
    uint8_t *ref = read_all(P(rel), &len);
    CHECK(ref && len == (size_t)C * C * 3, "%s reference", name);
    if (ref && len == (size_t)C * C * 3) {
      int maxd = 0;
      double mae = 0;
      for (size_t i = 0; i < len; i++) {
        int d = abs((int)o[i] - ref[i]);
        mae += d;
        if (d > maxd) maxd = d;
      }
      mae /= (double)len;
      CHECK(maxd <= 1 && mae < 0.3, "%s: resize differs from PIL: max %d, mean %.3f", name, maxd, mae);
      nres++;
    }
    free(ref);
    free(o);
    bf_image_free(&src);
  }
  if (rf) fclose(rf);
  bf_aug_scratch_free(&as);
  CHECK(nres == 3, "%d resize references checked", nres);

  /* header probe */
  int fmt, pw, ph;
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  CHECK(bf_probe_header(sig, 8, &fmt, &pw, &ph) == 1, "PNG signature alone needs more bytes");
  CHECK(bf_probe_header(sig, 0, &fmt, &pw, &ph) < 0, "empty buffer must be rejected");
  CHECK(bf_probe_header((const uint8_t *)"GIF89a....", 10, &fmt, &pw, &ph) < 0, "GIF must be rejected");
  rc = bf_image_decode_file(P("does/not/exist.png"), 0, 0, &img);
  CHECK(rc != 0 && strstr(bf_last_error(), "exist.png"), "missing file: '%s'", bf_last_error());
}

/* --------------------------------------------------------- augmentation */
static void test_augment(void) {
  bf_aug_scratch s = {0};
  /* identity scale, window partly outside (padding), mirrored */
  uint8_t src[4 * 5 * 3], out[3 * 3 * 3];
  for (int i = 0; i < 60; i++) src[i] = (uint8_t)(i * 4 + 1);
  int rc = bf_augment_window(&s, src, 5, 4, 5, 4, -1, 2, 3, 0, out);
  CHECK(rc == 0, "%s", bf_last_error());
  for (int y = 0; y < 3; y++)
    for (int x = 0; x < 3; x++) {
      int sx = x - 1, sy = y + 2;
      for (int c = 0; c < 3; c++) {
        int want = (sx < 0 || sy >= 4) ? 0 : src[(sy * 5 + sx) * 3 + c];
        CHECK(out[(y * 3 + x) * 3 + c] == want, "copy/pad at %d,%d,%d: %d != %d", x, y, c, out[(y * 3 + x) * 3 + c], want);
      }
    }
  rc = bf_augment_window(&s, src, 5, 4, 5, 4, 1, 0, 3, 1, out);
  for (int y = 0; y < 3; y++)
    for (int x = 0; x < 3; x++) {
      int sx = 1 + (2 - x);
      CHECK(out[(y * 3 + x) * 3] == src[(y * 5 + sx) * 3], "flip at %d,%d", x, y);
    }
  /* constant image stays constant when resized either way */
  uint8_t *big = malloc(300 * 200 * 3);
  for (int i = 0; i < 300 * 200 * 3; i++) big[i] = 77;
  uint8_t *o = malloc(100 * 100 * 3);
  rc = bf_augment_window(&s, big, 300, 200, 150, 100, 10, 0, 100, 0, o);
  int bad = 0;
  for (int i = 0; i < 100 * 100 * 3; i++) bad += o[i] != 77;
  CHECK(rc == 0 && bad == 0, "downscaled constant image changed in %d places", bad);
  rc = bf_augment_window(&s, big, 30, 20, 150, 100, 0, 0, 100, 0, o);
  bad = 0;
  for (int i = 0; i < 100 * 100 * 3; i++) bad += o[i] != 77;
  CHECK(rc == 0 && bad == 0, "upscaled constant image changed in %d places", bad);
  /* a horizontal ramp stays a ramp: column means increase */
  for (int y = 0; y < 200; y++)
    for (int x = 0; x < 300; x++)
      for (int c = 0; c < 3; c++) big[(y * 300 + x) * 3 + c] = (uint8_t)(x * 255 / 299);
  rc = bf_augment_window(&s, big, 300, 200, 150, 100, 25, 0, 100, 0, o);
  for (int x = 1; x < 100; x++) CHECK(o[x * 3] >= o[(x - 1) * 3], "ramp not monotonic at %d", x);
  CHECK(abs((int)o[50 * 3] - (int)((2 * (25 + 50) + 0.5) * 255 / 299)) <= 2, "ramp value %d", o[50 * 3]);
  int rw, rh;
  bf_resize_dims(500, 375, 256, &rw, &rh);
  CHECK(rw == 341 && rh == 256, "resize dims %dx%d", rw, rh);
  bf_resize_dims(375, 500, 256, &rw, &rh);
  CHECK(rw == 256 && rh == 341, "resize dims %dx%d", rw, rh);
  free(big);
  free(o);
  bf_aug_scratch_free(&s);
}

/* ------------------------------------------------------------- layouts */
static uint64_t split_rows_hash(const char *path) {
  size_t len;
  uint8_t *d = read_all(path, &len);
  if (!d) return 0;
  /* skip the two comment lines (they name the root) */
  size_t p = 0;
  for (int k = 0; k < 2 && p < len; p++)
    if (d[p] == '\n') k++;
  uint64_t h = fnv(d + p, len - p, 0xcbf29ce484222325ULL);
  free(d);
  return h;
}

static void test_layouts(const char *tmp) {
  bf_dataset *ds = open_ds(P("if_flat"), BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(ds, "if_flat");
  if (ds) {
    const bf_dataset_info *in = bf_dataset_get_info(ds);
    CHECK(in->layout == BF_LAYOUT_IMAGEFOLDER && !in->explicit_split, "if_flat layout");
    CHECK(in->num_classes == 5 && in->count[0] == 85 && in->count[1] == 15, "if_flat counts %d %zu %zu",
          in->num_classes, in->count[0], in->count[1]);
    for (int c = 0; c < 5; c++) {
      char want[16];
      snprintf(want, sizeof want, "class_%02d", c);
      CHECK(!strcmp(bf_dataset_class_name(ds, c), want), "class %d is %s", c, bf_dataset_class_name(ds, c));
      CHECK(bf_dataset_class_count(ds, BF_SPLIT_TRAIN, c) == 17 && bf_dataset_class_count(ds, BF_SPLIT_TEST, c) == 3,
            "class %d counts", c);
    }
    /* labels match the folder of every sample */
    for (int s = 0; s < 2; s++)
      for (size_t i = 0; i < in->count[s]; i++) {
        int label;
        const char *path;
        bf_dataset_sample(ds, (bf_split)s, i, &label, &path);
        CHECK(strstr(path, bf_dataset_class_name(ds, label)) != NULL, "%s labelled %d", path, label);
      }
    bf_dataset_close(ds);
  }
  ds = open_ds(P("if_split"), BF_LAYOUT_AUTO, 0.01, 1, 0);
  CHECK(ds, "if_split");
  if (ds) {
    const bf_dataset_info *in = bf_dataset_get_info(ds);
    CHECK(in->explicit_split && in->num_classes == 3 && in->count[0] == 36 && in->count[1] == 9,
          "if_split: explicit %d classes %d counts %zu %zu", in->explicit_split, in->num_classes, in->count[0],
          in->count[1]);
    for (size_t i = 0; i < in->count[1]; i++) {
      int label;
      const char *path;
      bf_dataset_sample(ds, BF_SPLIT_TEST, i, &label, &path);
      CHECK(strstr(path, "/test/") != NULL, "test sample %s", path);
    }
    bf_dataset_close(ds);
  }
  /* miniImageNet: merged and split 85/15 per class, stable */
  char s1[4200], s2[4200], s3[4200];
  snprintf(s1, sizeof s1, "%s/split1.csv", tmp);
  snprintf(s2, sizeof s2, "%s/split2.csv", tmp);
  snprintf(s3, sizeof s3, "%s/split3.csv", tmp);
  ds = open_ds(P("mini"), BF_LAYOUT_AUTO, 0.01, 1, 0);
  CHECK(ds, "mini");
  if (ds) {
    const bf_dataset_info *in = bf_dataset_get_info(ds);
    CHECK(in->layout == BF_LAYOUT_MINIIMAGENET && in->num_classes == 10 && in->count[0] == 170 && in->count[1] == 30,
          "mini counts %d %zu %zu", in->num_classes, in->count[0], in->count[1]);
    for (int c = 0; c < 10; c++)
      CHECK(bf_dataset_class_count(ds, BF_SPLIT_TEST, c) == 3, "mini class %d test count", c);
    CHECK(bf_dataset_write_split(ds, s1) == 0, "%s", bf_last_error());
    bf_dataset_close(ds);
  }
  ds = open_ds(P("mini"), BF_LAYOUT_MINIIMAGENET, 0.01, 3, 0);
  if (ds) {
    CHECK(bf_dataset_write_split(ds, s2) == 0, "%s", bf_last_error());
    bf_dataset_close(ds);
  }
  ds = open_ds(P("mini"), BF_LAYOUT_AUTO, 0.01, 2, 12345);
  if (ds) {
    CHECK(bf_dataset_write_split(ds, s3) == 0, "%s", bf_last_error());
    bf_dataset_close(ds);
  }
  uint64_t h1 = split_rows_hash(s1), h2 = split_rows_hash(s2), h3 = split_rows_hash(s3);
  CHECK(h1 && h1 == h2, "split differs between runs/threads: %016llx %016llx", (unsigned long long)h1,
        (unsigned long long)h2);
  CHECK(h1 != h3, "split seed has no effect");
  /* golden value: the split must not change across machines or versions */
  CHECK(h1 == 0x8f4094b9051d8ca6ULL, "split golden hash changed: %016llx", (unsigned long long)h1);
  size_t len;
  uint8_t *txt = read_all(s1, &len);
  CHECK(txt && strstr((char *)txt, "# butterfly-split v1\n") == (char *)txt, "split header");
  CHECK(txt && strstr((char *)txt, "\nsplit,label,class,path\ntrain,0,n01000000,images/n0100000000000"),
        "split rows");
  free(txt);

  /* IDX plain and gzip hold the same data */
  bf_dataset *a = open_ds(P("idx_plain"), BF_LAYOUT_AUTO, 0.01, 1, 0), *b = open_ds(P("idx_gz"), BF_LAYOUT_IDX, 0.01, 1, 0);
  CHECK(a && b, "idx open");
  if (a && b) {
    const bf_dataset_info *ia = bf_dataset_get_info(a), *ib = bf_dataset_get_info(b);
    CHECK(ia->layout == BF_LAYOUT_IDX && ia->count[0] == 200 && ia->count[1] == 50 && ia->num_classes == 10,
          "idx counts %zu %zu", ia->count[0], ia->count[1]);
    CHECK(ia->small_images && !ia->is_fashion_mnist, "idx flags");
    CHECK(ib->count[0] == 200 && ib->count[1] == 50, "idx gz counts");
    for (int s = 0; s < 2; s++)
      for (size_t i = 0; i < ia->count[s]; i++) {
        bf_image x, y;
        int la, lb;
        const char *p;
        bf_dataset_sample(a, (bf_split)s, i, &la, &p);
        bf_dataset_sample(b, (bf_split)s, i, &lb, &p);
        CHECK(la == lb, "idx label %zu", i);
        if (bf_dataset_load_image(a, (bf_split)s, i, &x) == 0 && bf_dataset_load_image(b, (bf_split)s, i, &y) == 0) {
          CHECK(x.w == 28 && x.h == 28 && !memcmp(x.rgb, y.rgb, 28 * 28 * 3), "idx pixels %zu", i);
          CHECK(x.rgb[0] == x.rgb[1] && x.rgb[1] == x.rgb[2], "gray replicated");
        }
        bf_image_free(&x);
        bf_image_free(&y);
      }
  }
  bf_dataset_close(a);
  bf_dataset_close(b);

  /* wrong forced layout, bad layout name */
  bf_dataset *x = open_ds(P("if_flat"), BF_LAYOUT_IDX, 0.01, 1, 0);
  CHECK(!x && strstr(bf_last_error(), "train-images-idx3-ubyte"), "forced idx on a folder: %s", bf_last_error());
  bf_dataset_close(x);
  bf_layout l;
  CHECK(bf_layout_parse("imagenet", &l) != 0 && strstr(bf_last_error(), "layout"), "layout parse");
  CHECK(bf_layout_parse("miniimagenet", &l) == 0 && l == BF_LAYOUT_MINIIMAGENET, "layout parse ok");
  x = open_ds("/nonexistent/dir", BF_LAYOUT_AUTO, 0.01, 1, 0);
  CHECK(!x && strstr(bf_last_error(), "/nonexistent/dir"), "missing root: %s", bf_last_error());
  bf_data_config c;
  bf_data_config_init(&c);
  c.test_fraction = 1.5;
  CHECK(bf_dataset_open(&x, P("if_flat"), &c) != 0 && strstr(bf_last_error(), "test_fraction"), "test_fraction check");
}

/* The paper's split: 100 classes x 600 images -> 85% / 15% per class. */
static void test_split(void) {
  size_t n = 60000;
  int32_t *lab = malloc(n * sizeof *lab);
  uint8_t *t1 = malloc(n), *t2 = malloc(n), *t3 = malloc(n);
  char names[100][16];
  const char *np[100];
  for (int c = 0; c < 100; c++) {
    snprintf(names[c], sizeof names[c], "n%08d", 1000000 + 37 * c);
    np[c] = names[c];
  }
  for (size_t i = 0; i < n; i++) lab[i] = (int32_t)(i / 600);
  CHECK(bf_split_stratified(lab, n, 100, np, 0.15, 0, t1) == 0, "%s", bf_last_error());
  CHECK(bf_split_stratified(lab, n, 100, np, 0.15, 0, t2) == 0, "%s", bf_last_error());
  CHECK(bf_split_stratified(lab, n, 100, np, 0.15, 1, t3) == 0, "%s", bf_last_error());
  size_t test = 0, per[100] = {0};
  for (size_t i = 0; i < n; i++) {
    test += t1[i];
    per[lab[i]] += t1[i];
  }
  CHECK(test == 9000 && n - test == 51000, "split %zu / %zu", n - test, test);
  for (int c = 0; c < 100; c++) CHECK(per[c] == 90, "class %d has %zu test images", c, per[c]);
  CHECK(!memcmp(t1, t2, n), "split not reproducible");
  CHECK(memcmp(t1, t3, n), "seed has no effect");
  uint64_t h = fnv(t1, n, 0xcbf29ce484222325ULL);
  CHECK(h == 0xcd87c946f1469099ULL, "split golden hash changed: %016llx", (unsigned long long)h);
  /* interleaved order gives the same per-class choice (depends on class name
   * and within-class order only) */
  for (size_t i = 0; i < n; i++) lab[i] = (int32_t)(i % 100);
  CHECK(bf_split_stratified(lab, n, 100, np, 0.15, 0, t2) == 0, "%s", bf_last_error());
  int same = 1;
  for (size_t i = 0; i < n && same; i++) same = t2[i] == t1[(i % 100) * 600 + i / 100];
  CHECK(same, "split depends on the global order, not only on the class order");
  CHECK(bf_split_stratified(lab, n, 100, np, 1.0, 0, t2) != 0, "test_fraction 1.0 accepted");
  free(lab), free(t1), free(t2), free(t3);
}

/* -------------------------------------------------------------- loader */
typedef struct run {
  int nb;
  uint64_t h[64];
  int count[64];
  int64_t idx0[64];
} run;

static uint64_t batch_hash(const bf_batch *b) {
  size_t px = (size_t)b->batch_size * b->h * b->w * 3;
  uint64_t h = 0xcbf29ce484222325ULL;
  if (b->x) h = fnv(b->x, px * sizeof(float), h);
  if (b->u8) h = fnv(b->u8, px, h);
  h = fnv(b->labels, (size_t)b->batch_size * sizeof(int32_t), h);
  return fnv(b->index, (size_t)b->batch_size * sizeof(int64_t), h);
}

static int do_run(const bf_dataset *ds, bf_split split, bf_data_config *c, int64_t epoch, int64_t step, int nb, run *r) {
  bf_loader *L;
  if (bf_loader_create(&L, ds, split, c)) {
    fprintf(stderr, "loader: %s\n", bf_last_error());
    return -1;
  }
  int rc = bf_loader_start(L, epoch, step);
  r->nb = 0;
  for (int i = 0; !rc && i < nb && i < 64; i++) {
    bf_batch b;
    rc = bf_loader_next(L, &b);
    if (rc) break;
    r->h[i] = batch_hash(&b);
    r->count[i] = b.count;
    r->idx0[i] = b.index[0];
    r->nb++;
  }
  if (rc) fprintf(stderr, "loader: %s\n", bf_last_error());
  bf_loader_destroy(L);
  return rc;
}

/* Shards (data-parallel training): shard s of n yields exactly rows
 * [s*B/n, (s+1)*B/n) of every batch the unsharded loader yields (pixels,
 * labels, indices, counts; a short last test batch leaves later shards
 * empty), and batch_size not divisible by n is refused. */
static void test_loader_shards(const bf_dataset *ds, bf_split split, const bf_data_config *c0, int nshards) {
  bf_data_config c = *c0;
  bf_loader *F, *S[4];
  CHECK(bf_loader_create(&F, ds, split, &c) == 0, "%s", bf_last_error());
  int64_t bpe = bf_loader_batches_per_epoch(F);
  for (int s = 0; s < nshards; s++) {
    c.shard_index = s, c.shard_count = nshards;
    CHECK(bf_loader_create(&S[s], ds, split, &c) == 0, "shard %d/%d: %s", s, nshards, bf_last_error());
    CHECK(bf_loader_batches_per_epoch(S[s]) == bpe, "shard %d: batches per epoch", s);
    bf_loader_start(S[s], 1, 0);
  }
  bf_loader_start(F, 1, 0);
  int bad = 0, empty = 0;
  for (int64_t k = 0; k < bpe; k++) {
    bf_batch f, b;
    if (bf_loader_next(F, &f)) break;
    int B = f.batch_size / nshards;
    size_t px = (size_t)f.h * f.w * 3;
    for (int s = 0; s < nshards; s++) {
      if (bf_loader_next(S[s], &b)) {
        bad++;
        continue;
      }
      int want = f.count - s * B;
      want = want < 0 ? 0 : want > B ? B : want;
      empty += want == 0;
      bad += b.batch_size != B || b.count != want;
      for (int i = 0; i < want && b.count == want; i++) {
        bad += b.labels[i] != f.labels[s * B + i] || b.index[i] != f.index[s * B + i];
        bad += memcmp(b.u8 + i * px, f.u8 + (s * B + i) * px, px) != 0;
      }
    }
  }
  CHECK(bad == 0, "%s split, %d shards: %d differences from the unsharded batches", split ? "test" : "train", nshards,
        bad);
  if (c0->drop_last == 0) CHECK(empty > 0, "no empty shard in a short last batch (the case is not exercised)");
  for (int s = 0; s < nshards; s++) bf_loader_destroy(S[s]);
  bf_loader_destroy(F);
  c.batch_size = 15, c.shard_index = 0, c.shard_count = 2;
  CHECK(bf_loader_create(&F, ds, split, &c) != 0 && strstr(bf_last_error(), "not divisible by the 2 shards"),
        "batch 15 in 2 shards accepted");
}

static void test_loader_on(const char *root, int out, int resize) {
  bf_dataset *ds = open_ds(root, BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(ds, "%s", root);
  if (!ds) return;
  bf_data_config c;
  bf_data_config_init(&c);
  c.batch_size = 16;
  c.out_size = out;
  c.resize = resize;
  c.seed = 42;
  c.verbose = 0;
  c.prefetch = 2;
  bf_loader *L;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TRAIN, &c) == 0, "%s", bf_last_error());
  int64_t bpe = bf_loader_batches_per_epoch(L);
  size_t n = bf_dataset_count(ds, BF_SPLIT_TRAIN);
  CHECK(bpe == (int64_t)(n / 16), "train drop_last bpe %lld for %zu", (long long)bpe, n);
  bf_batch b;
  CHECK(bf_loader_next(L, &b) != 0, "next before start must fail");
  CHECK(bf_loader_start(L, 0, bpe) != 0, "start past the epoch must fail");
  bf_loader_destroy(L);

  run r1, r2, r3;
  int nb = (int)(2 * bpe + 1);
  c.threads = 1;
  CHECK(do_run(ds, BF_SPLIT_TRAIN, &c, 0, 0, nb, &r1) == 0 && r1.nb == nb, "1 thread");
  c.threads = 2;
  CHECK(do_run(ds, BF_SPLIT_TRAIN, &c, 0, 0, nb, &r2) == 0 && r2.nb == nb, "2 threads");
  c.threads = 3;
  c.prefetch = 5;
  CHECK(do_run(ds, BF_SPLIT_TRAIN, &c, 0, 0, nb, &r3) == 0 && r3.nb == nb, "3 threads");
  for (int i = 0; i < nb; i++) {
    CHECK(r1.h[i] == r2.h[i], "%s batch %d differs between 1 and 2 threads", root, i);
    CHECK(r1.h[i] == r3.h[i], "%s batch %d differs between 1 and 3 threads", root, i);
  }
  int differs = 0;
  for (int i = 0; i < bpe; i++) differs += r1.h[i] != r1.h[bpe + i];
  CHECK(differs == bpe, "epoch 1 repeats epoch 0 in %d batches (no reshuffle)", (int)(bpe - differs));
  /* resume at (epoch 1, step 2) */
  c.threads = 2;
  c.prefetch = 3;
  run rr;
  CHECK(do_run(ds, BF_SPLIT_TRAIN, &c, 1, 2, (int)bpe - 1, &rr) == 0, "resume");
  for (int i = 0; i < rr.nb; i++) CHECK(rr.h[i] == r1.h[bpe + 2 + i], "resumed batch %d differs", i);
  /* another seed gives other batches */
  c.seed = 43;
  run rs;
  CHECK(do_run(ds, BF_SPLIT_TRAIN, &c, 0, 0, 1, &rs) == 0 && rs.h[0] != r1.h[0], "seed has no effect");
  c.seed = 42;

  /* content checks on one epoch of train, and the test split (no drop) */
  for (int split = 0; split < 2; split++) {
    CHECK(bf_loader_create(&L, ds, (bf_split)split, &c) == 0, "%s", bf_last_error());
    const bf_data_config *rc = bf_loader_config(L);
    out = rc->out_size; /* resolves "auto" */
    CHECK(rc->augment == (split ? BF_AUG_EVAL : BF_AUG_TRAIN), "augment mode");
    size_t ns = bf_dataset_count(ds, (bf_split)split);
    int64_t be = bf_loader_batches_per_epoch(L);
    CHECK(split == 0 || be == (int64_t)((ns + 15) / 16), "test bpe %lld for %zu", (long long)be, ns);
    uint8_t *seen = calloc(ns, 1);
    bf_loader_start(L, 0, 0);
    size_t total = 0;
    for (int64_t k = 0; k < be; k++) {
      if (bf_loader_next(L, &b)) {
        CHECK(0, "next: %s", bf_last_error());
        break;
      }
      CHECK(b.epoch == 0 && b.step == k, "batch position %lld/%lld", (long long)b.epoch, (long long)b.step);
      CHECK(b.h == out && b.w == out && b.batch_size == 16, "batch shape");
      total += (size_t)b.count;
      for (int i = 0; i < b.batch_size; i++) {
        if (i >= b.count) {
          CHECK(b.labels[i] == -1 && b.index[i] == -1, "padding row %d", i);
          continue;
        }
        int label;
        const char *p;
        bf_dataset_sample(ds, (bf_split)split, (size_t)b.index[i], &label, &p);
        CHECK(label == b.labels[i], "label of sample %lld", (long long)b.index[i]);
        CHECK(!seen[b.index[i]], "sample %lld twice in an epoch", (long long)b.index[i]);
        seen[b.index[i]] = 1;
      }
      size_t px = (size_t)b.batch_size * out * out * 3;
      int badnorm = 0;
      for (size_t p = 0; p < px; p++) {
        int ch = (int)(p % 3);
        float want = ((float)b.u8[p] / 255.0f - rc->mean[ch]) / rc->std[ch];
        if (p >= (size_t)b.count * out * out * 3) want = 0;
        badnorm += b.x[p] != want;
      }
      CHECK(badnorm == 0, "normalisation differs in %d values", badnorm);
    }
    CHECK(split == 0 ? total == (size_t)be * 16 : total == ns, "epoch covered %zu of %zu", total, ns);
    /* restart mid-stream gives the first batch again */
    bf_loader_start(L, 0, 0);
    uint64_t hA = 0, hB = 0;
    if (!bf_loader_next(L, &b)) hA = batch_hash(&b);
    bf_loader_start(L, 0, 0);
    if (!bf_loader_next(L, &b)) hB = batch_hash(&b);
    CHECK(hA == hB && hA, "restart changes the first batch");
    free(seen);
    bf_loader_destroy(L);
  }
  test_loader_shards(ds, BF_SPLIT_TRAIN, &c, 2);
  { /* the test split with a global batch whose last batch leaves shard 3 of 4 empty */
    bf_data_config t = c;
    size_t ns = bf_dataset_count(ds, BF_SPLIT_TEST);
    for (t.batch_size = 8; t.batch_size <= 64; t.batch_size += 4)
      if (ns % (size_t)t.batch_size && ns % (size_t)t.batch_size <= (size_t)t.batch_size * 3 / 4) break;
    t.drop_last = 0;
    if (t.batch_size <= 64 && (size_t)t.batch_size <= ns) test_loader_shards(ds, BF_SPLIT_TEST, &t, 4);
    else CHECK(0, "no batch size gives the test split of %zu a short last batch", ns);
  }
  /* uint8 only / float only */
  c.want_float = 0;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TEST, &c) == 0, "u8 only");
  bf_loader_start(L, 0, 0);
  CHECK(bf_loader_next(L, &b) == 0 && b.x == NULL && b.u8 != NULL, "u8 only batch");
  bf_loader_destroy(L);
  c.want_u8 = 0;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TEST, &c) != 0, "nothing to produce must fail");
  c.want_float = 1;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TEST, &c) == 0, "float only");
  bf_loader_start(L, 0, 0);
  CHECK(bf_loader_next(L, &b) == 0 && b.x != NULL && b.u8 == NULL, "float only batch");
  bf_loader_destroy(L);
  c.want_u8 = 1;
  c.batch_size = 100000;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TRAIN, &c) != 0 && strstr(bf_last_error(), "batch_size"), "batch check");
  bf_dataset_close(ds);
}

static void test_loader(void) {
  test_loader_on(P("mini"), 40, 48);
  test_loader_on(P("idx_gz"), 0, -1); /* auto: 32, pad 4 */
  /* padding of small images: the train crop leaves zero rows/columns, the
   * eval crop of 28 -> 32 is centred with 2 px of zeros on each side */
  bf_dataset *ds = open_ds(P("idx_gz"), BF_LAYOUT_AUTO, 0.01, 2, 0);
  if (!ds) return;
  bf_data_config c;
  bf_data_config_init(&c);
  c.batch_size = 8;
  c.verbose = 0;
  bf_loader *L;
  bf_batch b;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TEST, &c) == 0, "%s", bf_last_error());
  CHECK(bf_loader_config(L)->out_size == 32 && bf_loader_config(L)->pad == 0 && !bf_loader_config(L)->hflip, "eval cfg");
  bf_loader_start(L, 0, 0);
  if (bf_loader_next(L, &b) == 0) {
    bf_image img;
    bf_dataset_load_image(ds, BF_SPLIT_TEST, (size_t)b.index[0], &img);
    int bad = 0;
    for (int y = 0; y < 32; y++)
      for (int x = 0; x < 32; x++) {
        int sx = x - 2, sy = y - 2;
        int want = (sx < 0 || sy < 0 || sx >= 28 || sy >= 28) ? 0 : img.rgb[(sy * 28 + sx) * 3];
        bad += b.u8[(y * 32 + x) * 3] != want;
      }
    CHECK(bad == 0, "eval center crop 28->32 differs in %d pixels", bad);
    bf_image_free(&img);
  }
  bf_loader_destroy(L);
  bf_dataset_close(ds);
}

/* ------------------------------------------------------------ bad data */
static int has_bad(const bf_dataset *ds, const char *path_part, const char *reason_part) {
  for (size_t i = 0; i < bf_dataset_get_info(ds)->bad_count; i++)
    if (strstr(bf_dataset_bad_path(ds, i), path_part) && strstr(bf_dataset_bad_reason(ds, i), reason_part)) return 1;
  return 0;
}

static size_t epoch_bad(const bf_dataset *ds, bf_split split, double max_bad, int *failed) {
  bf_data_config c;
  bf_data_config_init(&c);
  c.batch_size = 7;
  c.out_size = 24;
  c.resize = 28;
  c.verbose = 0;
  c.threads = 2;
  c.max_bad_fraction = max_bad;
  bf_loader *L;
  *failed = 0;
  if (bf_loader_create(&L, ds, split, &c)) return (size_t)-1;
  bf_loader_start(L, 0, 0);
  for (int64_t k = 0; k < bf_loader_batches_per_epoch(L); k++) {
    bf_batch b;
    if (bf_loader_next(L, &b)) {
      *failed = 1;
      CHECK(strstr(bf_last_error(), "max_bad_fraction") && strstr(bf_last_error(), "bad"), "summary: %s",
            bf_last_error());
      break;
    }
    for (int i = 0; i < b.count; i++) CHECK(b.labels[i] >= 0, "bad image left a hole in a batch");
  }
  size_t n = bf_loader_bad_count(L);
  bf_loader_destroy(L);
  return n;
}

static void write_file(const char *path, const void *d, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite(d, 1, n, f);
    fclose(f);
  }
}

static void test_bad(const char *tmp) {
  /* more than 1% bad: open fails with a summary naming paths */
  bf_dataset *ds = open_ds(P("bad"), BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(!ds, "bad data set must not open with max_bad_fraction 0.01");
  CHECK(strstr(bf_last_error(), "7 of 210") && strstr(bf_last_error(), "trunc_head.jpg"), "summary: %s",
        bf_last_error());
  bf_dataset_close(ds);
  ds = open_ds(P("bad"), BF_LAYOUT_AUTO, 1.0, 2, 0);
  CHECK(ds, "bad data set with max_bad_fraction 1");
  if (ds) {
    const bf_dataset_info *in = bf_dataset_get_info(ds);
    CHECK(in->bad_count == 7, "bad count %zu", in->bad_count);
    CHECK(in->count[0] + in->count[1] == 203, "usable %zu", in->count[0] + in->count[1]);
    CHECK(has_bad(ds, "class_00/trunc_head.jpg", "truncated"), "trunc_head.jpg");
    CHECK(has_bad(ds, "class_01/trunc_head.png", "truncated"), "trunc_head.png");
    CHECK(has_bad(ds, "class_02/empty.png", "empty"), "empty.png");
    CHECK(has_bad(ds, "class_02/garbage.jpg", "not a PNG or JPEG"), "garbage.jpg");
    CHECK(has_bad(ds, "class_02/text.png", "not a PNG or JPEG"), "text.png");
    CHECK(has_bad(ds, "class_03/huge.png", "absurd"), "huge.png");
    CHECK(has_bad(ds, "class_03/huge.jpg", "absurd"), "huge.jpg");
    /* the rest is found while loading: skipped, counted, never a crash */
    int f0, f1;
    size_t n = epoch_bad(ds, BF_SPLIT_TRAIN, 1.0, &f0) + epoch_bad(ds, BF_SPLIT_TEST, 1.0, &f1);
    CHECK(n == 3 && !f0 && !f1, "runtime bad %zu (trunc_data.jpg, trunc_data.png, badcrc.png)", n);
    /* with max_bad_fraction 0 the first of them fails the run with a summary */
    n = epoch_bad(ds, BF_SPLIT_TRAIN, 0.0, &f0) + epoch_bad(ds, BF_SPLIT_TEST, 0.0, &f1);
    CHECK(f0 || f1, "loader did not fail on bad images with max_bad_fraction 0");
    bf_dataset_close(ds);
  }
  /* full verification finds all ten at open */
  bf_data_config c;
  bf_data_config_init(&c);
  c.verify = 1;
  c.verbose = 0;
  c.max_bad_fraction = 1.0;
  CHECK(bf_dataset_open(&ds, P("bad"), &c) == 0, "%s", bf_last_error());
  if (ds) {
    CHECK(bf_dataset_get_info(ds)->bad_count == 10, "verify: bad count %zu", bf_dataset_get_info(ds)->bad_count);
    CHECK(has_bad(ds, "trunc_data.jpg", "JPEG"), "trunc_data.jpg");
    CHECK(has_bad(ds, "trunc_data.png", "PNG"), "trunc_data.png");
    CHECK(has_bad(ds, "badcrc.png", "PNG"), "badcrc.png");
    bf_dataset_close(ds);
  }
  /* under 1%: opens, the bad image is skipped and counted */
  ds = open_ds(P("few_bad"), BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(ds, "few_bad must open");
  if (ds) {
    int f0, f1;
    size_t n = epoch_bad(ds, BF_SPLIT_TRAIN, 0.01, &f0) + epoch_bad(ds, BF_SPLIT_TEST, 0.01, &f1);
    CHECK(n == 1 && !f0 && !f1, "few_bad runtime bad %zu", n);
    bf_dataset_close(ds);
  }
  /* miniImageNet CSV: missing file, contradicting label, empty label */
  ds = open_ds(P("mini_bad"), BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(ds, "mini_bad (3 of 403 bad) must open");
  if (ds) {
    const bf_dataset_info *in = bf_dataset_get_info(ds);
    CHECK(in->bad_count == 3 && in->count[0] + in->count[1] == 400, "mini_bad counts %zu %zu", in->bad_count,
          in->count[0] + in->count[1]);
    CHECK(has_bad(ds, "n0100000000099999.jpg", "missing file"), "missing file");
    CHECK(has_bad(ds, "n0100791900099998.jpg", "contradicts"), "contradicting label");
    CHECK(has_bad(ds, "n0101583800099997.jpg", "unknown label"), "empty label");
    for (int s = 0; s < 2; s++)
      for (size_t i = 0; i < in->count[s]; i++) {
        int label;
        const char *p;
        bf_dataset_sample(ds, (bf_split)s, i, &label, &p);
        CHECK(!strstr(p, "0009999"), "bad row %s used as a sample", p);
        /* file name wnid == class name: no wrong label can get through */
        CHECK(!strncmp(strrchr(p, '/') + 1, bf_dataset_class_name(ds, label), 9), "%s labelled %s", p,
              bf_dataset_class_name(ds, label));
      }
    bf_dataset_close(ds);
  }
  /* IDX: a label out of range */
  ds = open_ds(P("idx_badlabel"), BF_LAYOUT_AUTO, 0.01, 1, 0);
  CHECK(ds, "idx_badlabel (1 of 200) must open");
  if (ds) {
    CHECK(bf_dataset_get_info(ds)->bad_count == 1 && bf_dataset_count(ds, BF_SPLIT_TRAIN) == 199, "idx bad label");
    CHECK(has_bad(ds, "train-labels-idx1-ubyte#3", "unknown label 10"), "idx bad label reason");
    bf_dataset_close(ds);
  }
  /* IDX: truncated image file fails the open, naming it */
  char d[4200], p[4300];
  snprintf(d, sizeof d, "%s/idx_trunc", tmp);
  bf_mkdirs(d);
  const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                          "t10k-labels-idx1-ubyte"};
  for (int k = 0; k < 4; k++) {
    char src[300];
    snprintf(src, sizeof src, "idx_plain/%s", names[k]);
    size_t len;
    uint8_t *data = read_all(P(src), &len);
    snprintf(p, sizeof p, "%s/%s", d, names[k]);
    if (data) write_file(p, data, k == 2 ? len - 100 : len);
    free(data);
  }
  ds = open_ds(d, BF_LAYOUT_AUTO, 0.01, 1, 0);
  CHECK(!ds && strstr(bf_last_error(), "t10k-images-idx3-ubyte") && strstr(bf_last_error(), "truncated"), "%s",
        bf_last_error());
  bf_dataset_close(ds);
  /* explicit split with a test class that train does not have */
  snprintf(d, sizeof d, "%s/if_unknown", tmp);
  uint8_t px[8 * 8 * 3];
  memset(px, 100, sizeof px);
  const char *parts[2] = {"train", "test"};
  for (int s = 0; s < 2; s++)
    for (int c = 0; c < 2; c++) {
      snprintf(p, sizeof p, "%s/%s/%c", d, parts[s], 'a' + c);
      bf_mkdirs(p);
      for (int i = 0; i < (s ? 30 : 50); i++) {
        snprintf(p, sizeof p, "%s/%s/%c/%03d.png", d, parts[s], 'a' + c, i);
        bf_png_write(p, px, 8, 8, 3);
      }
    }
  snprintf(p, sizeof p, "%s/test/zzz", d);
  bf_mkdirs(p);
  snprintf(p, sizeof p, "%s/test/zzz/x.png", d);
  bf_png_write(p, px, 8, 8, 3);
  ds = open_ds(d, BF_LAYOUT_AUTO, 0.01, 1, 0);
  CHECK(!ds && strstr(bf_last_error(), "1 of 61") && strstr(bf_last_error(), "test"), "unknown class: %s",
        bf_last_error());
  bf_dataset_close(ds);
  ds = open_ds(d, BF_LAYOUT_AUTO, 0.05, 1, 0);
  CHECK(ds && has_bad(ds, "test/zzz/x.png", "unknown label"), "unknown test class reported");
  if (ds) CHECK(bf_dataset_get_info(ds)->num_classes == 2 && bf_dataset_count(ds, BF_SPLIT_TEST) == 60, "counts");
  bf_dataset_close(ds);
}

/* ------------------------------------------------------- Fashion-MNIST */
#define FASHION "/usr/share/datasets/fashion-mnist"

static int test_fashion_idx(void) {
  if (access(FASHION "/train-images-idx3-ubyte.gz", R_OK) != 0 && access(FASHION "/train-images-idx3-ubyte", R_OK) != 0) {
    fprintf(stderr, "SKIP: %s not installed (Debian package dataset-fashion-mnist)\n", FASHION);
    return 77;
  }
  bf_dataset *ds = open_ds(FASHION, BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(ds, "open " FASHION);
  if (!ds) return 1;
  const bf_dataset_info *in = bf_dataset_get_info(ds);
  CHECK(in->layout == BF_LAYOUT_IDX && in->num_classes == 10 && in->count[0] == 60000 && in->count[1] == 10000,
        "counts %d %zu %zu", in->num_classes, in->count[0], in->count[1]);
  CHECK(in->bad_count == 0 && in->is_fashion_mnist && in->small_images, "flags");
  for (int c = 0; c < 10; c++)
    CHECK(bf_dataset_class_count(ds, BF_SPLIT_TRAIN, c) == 6000 && bf_dataset_class_count(ds, BF_SPLIT_TEST, c) == 1000,
          "class %d", c);
  CHECK(fabsf(in->default_mean[0] - 0.2860f) < 1e-6f && fabsf(in->default_std[2] - 0.3530f) < 1e-6f, "mean/std");
  bf_data_config c;
  bf_data_config_init(&c);
  c.batch_size = 256;
  c.verbose = 0;
  bf_loader *L;
  CHECK(bf_loader_create(&L, ds, BF_SPLIT_TRAIN, &c) == 0, "%s", bf_last_error());
  CHECK(bf_loader_batches_per_epoch(L) == 234, "bpe");
  bf_loader_start(L, 0, 0);
  double sum = 0;
  for (int k = 0; k < 20; k++) {
    bf_batch b;
    if (bf_loader_next(L, &b)) break;
    for (size_t p = 0; p < (size_t)256 * 32 * 32 * 3; p++) sum += b.u8[p];
  }
  double mean = sum / (20.0 * 256 * 32 * 32 * 3) / 255.0 * (32.0 * 32) / (28.0 * 28);
  CHECK(fabs(mean - 0.2860) < 0.01, "pixel mean over 20 batches %.4f (expected about 0.2860)", mean);
  bf_loader_destroy(L);
  bf_dataset_close(ds);
  return 0;
}

/* The PNG export (tools/prepare-fashion-mnist) holds the IDX pixels exactly.
 * limit < 0: the whole set must be there. */
static int test_fashion_png(const char *png_root, long limit) {
  if (access(FASHION, R_OK) != 0) {
    fprintf(stderr, "SKIP: %s not installed\n", FASHION);
    return 77;
  }
  bf_dataset *idx = open_ds(FASHION, BF_LAYOUT_AUTO, 0.01, 2, 0), *png = open_ds(png_root, BF_LAYOUT_AUTO, 0.01, 2, 0);
  CHECK(idx && png, "open");
  if (!idx || !png) return 1;
  const bf_dataset_info *ii = bf_dataset_get_info(idx), *ip = bf_dataset_get_info(png);
  CHECK(ip->layout == BF_LAYOUT_IMAGEFOLDER && ip->explicit_split && ip->num_classes == 10, "png layout");
  CHECK(ip->is_fashion_mnist && ip->small_images, "png data set recognised as Fashion-MNIST");
  for (int c = 0; c < 10 && c < ip->num_classes; c++)
    CHECK(!strcmp(bf_dataset_class_name(idx, c), bf_dataset_class_name(png, c)), "class %d name", c);
  for (int s = 0; s < 2; s++) {
    size_t want = limit < 0 ? ii->count[s] : (size_t)limit;
    CHECK(ip->count[s] == want, "split %d: %zu PNGs, expected %zu", s, ip->count[s], want);
    size_t bad = 0;
    for (size_t i = 0; i < ip->count[s]; i++) {
      int lp, li;
      const char *path, *dummy;
      bf_dataset_sample(png, (bf_split)s, i, &lp, &path);
      size_t k = (size_t)strtoul(strrchr(path, '/') + 1, NULL, 10);
      bf_dataset_sample(idx, (bf_split)s, k, &li, &dummy);
      bf_image a, b;
      if (bf_dataset_load_image(png, (bf_split)s, i, &a)) {
        CHECK(0, "%s", bf_last_error());
        bad++;
        continue;
      }
      bf_dataset_load_image(idx, (bf_split)s, k, &b);
      if (lp != li || a.w != 28 || a.h != 28 || memcmp(a.rgb, b.rgb, 28 * 28 * 3)) {
        if (bad++ < 5) CHECK(0, "%s differs from IDX sample %zu", path, k);
      }
      bf_image_free(&a);
      bf_image_free(&b);
    }
    CHECK(bad == 0, "split %d: %zu images differ", s, bad);
    printf("split %d: %zu PNGs identical to the IDX pixels and labels\n", s, ip->count[s] - bad);
  }
  bf_dataset_close(idx);
  bf_dataset_close(png);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_data decode|augment|layouts|split|loader|bad DIR [TMP] | fashion_idx | fashion_png ROOT LIMIT\n");
    return 2;
  }
  const char *t = argv[1];
  if (argc > 2) snprintf(g_dir, sizeof g_dir, "%s", argv[2]);
  const char *tmp = argc > 3 ? argv[3] : "/tmp";
  int rc = 0;
  if (!strcmp(t, "decode")) test_decode();
  else if (!strcmp(t, "augment")) test_augment();
  else if (!strcmp(t, "layouts")) test_layouts(tmp);
  else if (!strcmp(t, "split")) test_split();
  else if (!strcmp(t, "loader")) test_loader();
  else if (!strcmp(t, "bad")) test_bad(tmp);
  else if (!strcmp(t, "fashion_idx")) rc = test_fashion_idx();
  else if (!strcmp(t, "fashion_png") && argc > 3) rc = test_fashion_png(argv[2], strtol(argv[3], NULL, 10));
  else {
    fprintf(stderr, "unknown test '%s'\n", t);
    return 2;
  }
  if (rc == 77) return 77;
  if (g_fail || rc) {
    fprintf(stderr, "%s: %d check(s) failed\n", t, g_fail);
    return 1;
  }
  printf("%s: ok\n", t);
  return 0;
}
