/* Data set sources: ImageFolder, miniImageNet (Ravi & Larochelle CSVs) and
 * IDX (MNIST / Fashion-MNIST, gzip or plain); header probing of every file,
 * bad-data accounting, the stratified split and its audit file. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "bf_data_internal.h"
#include "bf_scan.h"

typedef struct sample {
  int32_t label;
  uint32_t src; /* index into ds->files, or into the IDX image array of the split */
} sample;


struct bf_dataset {
  char *root;
  bf_data_config cfg;
  bf_dataset_info info;
  char **class_names;
  char **files; /* full paths */
  size_t nfiles;
  size_t rootlen;
  uint8_t *idx_pix[2]; /* IDX: gray images per split */
  int idx_w, idx_h;
  char *idx_name[2];
  sample *smp[2];
  size_t *class_count[2];
  strvec bad_path, bad_reason;
};

static const char *FASHION_NAMES[10] = {"0_tshirt_top", "1_trouser", "2_pullover", "3_dress",
                                         "4_coat",       "5_sandal",  "6_shirt",    "7_sneaker",
                                         "8_bag",        "9_ankle_boot"};

void bf_data_config_init(bf_data_config *c) {
  memset(c, 0, sizeof *c);
  c->layout = BF_LAYOUT_AUTO;
  c->split_seed = 0;
  c->test_fraction = 0.15;
  c->max_bad_fraction = 0.01;
  c->verify = 0;
  c->verbose = 1;
  c->threads = 0;
  c->out_size = 0;
  c->resize = -1;
  c->pad = -1;
  c->hflip = -1;
  c->augment = BF_AUG_AUTO;
  for (int i = 0; i < 3; i++) c->mean[i] = c->std[i] = -1.0f;
  c->batch_size = 64;
  c->prefetch = 3;
  c->seed = 0;
  c->shuffle = -1;
  c->drop_last = -1;
  c->want_float = 1;
  c->want_u8 = 1;
  c->shard_index = 0;
  c->shard_count = 1;
}

const char *bf_layout_name(bf_layout l) {
  switch (l) {
  case BF_LAYOUT_AUTO: return "auto";
  case BF_LAYOUT_IMAGEFOLDER: return "imagefolder";
  case BF_LAYOUT_MINIIMAGENET: return "miniimagenet";
  case BF_LAYOUT_IDX: return "idx";
  }
  return "?";
}

int bf_layout_parse(const char *s, bf_layout *out) {
  static const bf_layout all[] = {BF_LAYOUT_AUTO, BF_LAYOUT_IMAGEFOLDER, BF_LAYOUT_MINIIMAGENET, BF_LAYOUT_IDX};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (s && strcmp(s, bf_layout_name(all[i])) == 0) {
      *out = all[i];
      return 0;
    }
  return bf_error(BF_EINVAL, "layout: unknown value '%s' (auto|imagefolder|miniimagenet|idx)", s ? s : "");
}

uint64_t bf_fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
  return h;
}

/* ------------------------------------------------------------ the split */
int bf_split_stratified(const int32_t *labels, size_t n, int num_classes,
                        const char *const *class_names, double test_fraction, uint64_t seed,
                        uint8_t *is_test) {
  if (!(test_fraction >= 0.0 && test_fraction < 1.0))
    return bf_error(BF_EINVAL, "test_fraction: %g is not in [0, 1)", test_fraction);
  size_t *cnt = calloc((size_t)num_classes + 1, sizeof *cnt), *idx = malloc((n ? n : 1) * sizeof *idx);
  size_t *start = calloc((size_t)num_classes + 1, sizeof *start);
  if (!cnt || !idx || !start) {
    free(cnt), free(idx), free(start);
    return bf_error(BF_ENOMEM, "out of memory for the split");
  }
  for (size_t i = 0; i < n; i++) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      free(cnt), free(idx), free(start);
      return bf_error(BF_EINVAL, "split: label %d out of range", labels[i]);
    }
    cnt[labels[i]]++;
  }
  for (int c = 0; c < num_classes; c++) start[c + 1] = start[c] + cnt[c];
  memset(cnt, 0, (size_t)num_classes * sizeof *cnt);
  for (size_t i = 0; i < n; i++) idx[start[labels[i]] + cnt[labels[i]]++] = i;
  for (int c = 0; c < num_classes; c++) {
    size_t m = cnt[c], *v = idx + start[c];
    bf_rng r;
    bf_rng_derive(&r, seed, bf_fnv1a64(class_names[c]), 0x5b1175b1175ULL);
    for (size_t i = m; i > 1; i--) { /* Fisher-Yates */
      size_t j = bf_rng_below(&r, (uint32_t)i);
      size_t t = v[i - 1];
      v[i - 1] = v[j];
      v[j] = t;
    }
    size_t k = (size_t)floor((double)m * test_fraction + 0.5);
    for (size_t i = 0; i < m; i++) is_test[v[i]] = i < k;
  }
  free(cnt), free(idx), free(start);
  return 0;
}

/* ------------------------------------------------------------------ IDX */
static int find_idx(const char *root, const char *stem, char **out) {
  char name[256];
  snprintf(name, sizeof name, "%s", stem);
  char *p = bfd_path_join(root, name);
  if (p && bfd_is_file(p)) {
    *out = p;
    return 0;
  }
  free(p);
  snprintf(name, sizeof name, "%s.gz", stem);
  p = bfd_path_join(root, name);
  if (p && bfd_is_file(p)) {
    *out = p;
    return 0;
  }
  free(p);
  *out = NULL;
  return bf_error(BF_EINVAL, "%s: missing %s[.gz] (IDX layout)", root, stem);
}

static uint32_t be32_idx(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads an IDX file (gzip or plain: gzread passes plain files through). */
static int read_idx(const char *path, int want_dims, uint8_t **data, uint32_t dims[3]) {
  *data = NULL;
  gzFile g = gzopen(path, "rb");
  if (!g) return bf_error(BF_EIO, "%s: cannot open: %s", path, strerror(errno));
  uint8_t hdr[16];
  int hl = 4 + 4 * want_dims;
  int rc = 0;
  if (gzread(g, hdr, (unsigned)hl) != hl) {
    rc = bf_error(BF_EINVAL, "%s: truncated IDX header", path);
  } else if (hdr[0] || hdr[1] || hdr[2] != 0x08 || hdr[3] != want_dims) {
    rc = bf_error(BF_EINVAL, "%s: not an IDX uint8 file with %d dimensions (magic %02x%02x%02x%02x)", path,
                  want_dims, hdr[0], hdr[1], hdr[2], hdr[3]);
  } else {
    size_t total = 1;
    for (int i = 0; i < want_dims; i++) {
      dims[i] = be32_idx(hdr + 4 + 4 * i);
      total *= dims[i];
    }
    if (want_dims == 3 && (dims[1] == 0 || dims[2] == 0 || dims[1] > 4096 || dims[2] > 4096))
      rc = bf_error(BF_EINVAL, "%s: absurd IDX image size %ux%u", path, dims[2], dims[1]);
    else if (dims[0] > 100000000u)
      rc = bf_error(BF_EINVAL, "%s: absurd IDX item count %u", path, dims[0]);
    else if (!(*data = malloc(total ? total : 1)))
      rc = bf_error(BF_ENOMEM, "%s: out of memory for %zu bytes", path, total);
    else {
      size_t got = 0;
      while (got < total) {
        unsigned chunk = total - got > (1u << 30) ? (1u << 30) : (unsigned)(total - got);
        int r = gzread(g, *data + got, chunk);
        if (r <= 0) break;
        got += (size_t)r;
      }
      if (got != total) rc = bf_error(BF_EINVAL, "%s: truncated IDX data: %zu of %zu bytes", path, got, total);
    }
  }
  gzclose(g);
  if (rc) {
    free(*data);
    *data = NULL;
  }
  return rc;
}

static int ci_contains(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == needle[i]) i++;
    if (i == n) return 1;
  }
  return 0;
}

static int add_bad(bf_dataset *ds, const char *path, const char *why) {
  if (ds->cfg.verbose) fprintf(stderr, "bf_data: bad sample %s: %s\n", path, why);
  BF_TRY(bfd_sv_push(&ds->bad_path, path));
  return bfd_sv_push(&ds->bad_reason, why);
}

static int open_idx(bf_dataset *ds) {
  static const char *pre[2] = {"train", "t10k"};
  for (int s = 0; s < 2; s++) {
    char stem[64], *ipath = NULL, *lpath = NULL;
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", pre[s]);
    int rc = find_idx(ds->root, stem, &ipath);
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", pre[s]);
    if (!rc) rc = find_idx(ds->root, stem, &lpath);
    uint8_t *imgs = NULL, *labs = NULL;
    uint32_t di[3] = {0}, dl[3] = {0};
    if (!rc) rc = read_idx(ipath, 3, &imgs, di);
    if (!rc) rc = read_idx(lpath, 1, &labs, dl);
    if (!rc && di[0] != dl[0])
      rc = bf_error(BF_EINVAL, "%s: %u images but %s has %u labels", ipath, di[0], lpath, dl[0]);
    if (!rc && s == 1 && (di[1] != (uint32_t)ds->idx_h || di[2] != (uint32_t)ds->idx_w))
      rc = bf_error(BF_EINVAL, "%s: image size %ux%u differs from the train set's", ipath, di[2], di[1]);
    if (!rc) {
      ds->idx_h = (int)di[1];
      ds->idx_w = (int)di[2];
      ds->smp[s] = malloc((di[0] ? di[0] : 1) * sizeof(sample));
      if (!ds->smp[s]) rc = bf_error(BF_ENOMEM, "out of memory");
    }
    const char *lbase = lpath ? strrchr(lpath, '/') + 1 : "";
    for (uint32_t i = 0; !rc && i < di[0]; i++) {
      if (labs[i] >= 10) {
        char p[512], why[128];
        snprintf(p, sizeof p, "%s/%s#%u", ds->root, lbase, i);
        snprintf(why, sizeof why, "unknown label %u (IDX classes are 0..9)", labs[i]);
        rc = add_bad(ds, p, why);
        ds->info.bad_in_split[s]++;
        continue;
      }
      sample *sm = &ds->smp[s][ds->info.count[s]++];
      sm->label = labs[i];
      sm->src = i;
    }
    if (!rc) {
      ds->idx_pix[s] = imgs;
      imgs = NULL;
      const char *ib = strrchr(ipath, '/') + 1;
      ds->idx_name[s] = strdup(ib);
      if (!ds->idx_name[s]) rc = bf_error(BF_ENOMEM, "out of memory");
    }
    free(imgs);
    free(labs);
    free(ipath);
    free(lpath);
    if (rc) return rc;
  }
  ds->info.num_classes = 10;
  ds->info.explicit_split = 1;
  ds->info.small_images = ds->idx_w <= 32 && ds->idx_h <= 32;
  ds->info.is_fashion_mnist = ci_contains(ds->root, "fashion");
  ds->class_names = calloc(10, sizeof(char *));
  if (!ds->class_names) return bf_error(BF_ENOMEM, "out of memory");
  for (int c = 0; c < 10; c++) {
    char d[2] = {(char)('0' + c), 0};
    ds->class_names[c] = strdup(ds->info.is_fashion_mnist ? FASHION_NAMES[c] : d);
    if (!ds->class_names[c]) return bf_error(BF_ENOMEM, "out of memory");
  }
  return 0;
}

typedef struct ent_order {
  int32_t label;
  const char *rel;
  size_t i;
} ent_order;

static int cmp_order(const void *a, const void *b) {
  const ent_order *x = a, *y = b;
  if (x->label != y->label) return x->label < y->label ? -1 : 1;
  return strcmp(x->rel, y->rel);
}

static int cmp_rel(const void *a, const void *b) {
  const ent_order *x = a, *y = b;
  int c = strcmp(x->rel, y->rel);
  return c ? c : (x->i < y->i ? -1 : x->i > y->i);
}

static int open_files(bf_dataset *ds, entries *E) {
  int rc = bfd_probe_all(ds->root, E, bfd_default_threads(ds->cfg.threads), ds->cfg.verify);
  if (rc) return rc;
  /* classes: sorted distinct labels of usable entries (train/ for explicit) */
  strvec names = {0};
  for (size_t i = 0; !rc && i < E->n; i++)
    if (!E->v[i].bad && E->v[i].split != 1 && E->v[i].label[0]) rc = bfd_sv_push(&names, E->v[i].label);
  if (rc) {
    bfd_sv_free(&names);
    return rc;
  }
  if (names.n) qsort(names.v, names.n, sizeof(char *), bfd_cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < names.n; i++) {
    if (u && !strcmp(names.v[u - 1], names.v[i])) {
      free(names.v[i]);
      continue;
    }
    names.v[u++] = names.v[i];
  }
  names.n = u;
  if (u == 0) {
    bfd_sv_free(&names);
    return bf_error(BF_EINVAL, "%s: no usable images found (%zu entries, all bad)", ds->root, E->n);
  }
  ds->class_names = names.v;
  ds->info.num_classes = (int)u;
  /* files in test/ whose class exists only there were flagged during the scan;
   * duplicates in the CSVs are flagged here */
  ent_order *ord = malloc(E->n * sizeof *ord);
  int32_t *lab = malloc(E->n * sizeof *lab);
  uint8_t *is_test = calloc(E->n, 1);
  if (!ord || !lab || !is_test) {
    free(ord), free(lab), free(is_test);
    return bf_error(BF_ENOMEM, "out of memory");
  }
  size_t m = 0;
  for (size_t i = 0; i < E->n; i++) {
    entry *e = &E->v[i];
    int32_t l = -1;
    if (!e->bad) {
      char **hit = bsearch(&e->label, ds->class_names, u, sizeof(char *), bfd_cmp_str);
      if (!hit) e->bad = strdup("unknown label");
      else l = (int32_t)(hit - ds->class_names);
    }
    if (!e->bad) ord[m++] = (ent_order){l, e->rel, i};
  }
  qsort(ord, m, sizeof *ord, cmp_rel);
  for (size_t k = 1; k < m; k++)
    if (!strcmp(ord[k].rel, ord[k - 1].rel)) {
      E->v[ord[k].i].bad = strdup(ord[k].label == ord[k - 1].label ? "listed twice" : "listed twice with different labels");
      if (ord[k].label != ord[k - 1].label && !E->v[ord[k - 1].i].bad)
        E->v[ord[k - 1].i].bad = strdup("listed twice with different labels");
    }
  qsort(ord, m, sizeof *ord, cmp_order);
  /* bad entries, in canonical (listing) order */
  for (size_t i = 0; !rc && i < E->n; i++) {
    if (!E->v[i].bad) continue;
    char *full = bfd_path_join(ds->root, E->v[i].rel);
    rc = full ? add_bad(ds, full, E->v[i].bad) : bf_error(BF_ENOMEM, "out of memory");
    free(full);
    ds->info.bad_in_split[E->v[i].split == 1 ? 1 : 0]++;
  }
  size_t g = 0;
  for (size_t k = 0; k < m; k++)
    if (!E->v[ord[k].i].bad) {
      ord[g] = ord[k];
      lab[g] = ord[k].label;
      g++;
    }
  if (!rc && !ds->info.explicit_split)
    rc = bf_split_stratified(lab, g, (int)u, (const char *const *)ds->class_names, ds->cfg.test_fraction,
                             ds->cfg.split_seed, is_test);
  else
    for (size_t k = 0; k < g; k++) is_test[k] = E->v[ord[k].i].split == 1;
  if (!rc) {
    ds->files = malloc((g ? g : 1) * sizeof(char *));
    ds->smp[0] = malloc((g ? g : 1) * sizeof(sample));
    ds->smp[1] = malloc((g ? g : 1) * sizeof(sample));
    if (!ds->files || !ds->smp[0] || !ds->smp[1]) rc = bf_error(BF_ENOMEM, "out of memory");
  }
  for (size_t k = 0; !rc && k < g; k++) {
    entry *e = &E->v[ord[k].i];
    if (k == 0) ds->info.small_images = e->w <= 32 && e->h <= 32;
    char *full = bfd_path_join(ds->root, e->rel);
    if (!full) {
      rc = bf_error(BF_ENOMEM, "out of memory");
      break;
    }
    ds->files[ds->nfiles] = full;
    int s = is_test[k];
    ds->smp[s][ds->info.count[s]++] = (sample){lab[k], (uint32_t)ds->nfiles};
    ds->nfiles++;
  }
  free(ord), free(lab), free(is_test);
  ds->info.is_fashion_mnist = ci_contains(ds->root, "fashion");
  return rc;
}

static int check_bad_fraction(bf_dataset *ds) {
  for (int s = 0; s < 2; s++) {
    size_t bad = ds->info.bad_in_split[s], tot = bad + ds->info.count[s];
    if (!ds->info.explicit_split) { /* bad files never reach a split: judge all */
      bad = ds->info.bad_count;
      tot = bad + ds->info.count[0] + ds->info.count[1];
    }
    if (tot && (double)bad > ds->cfg.max_bad_fraction * (double)tot) {
      char first[1200] = {0};
      size_t off = 0;
      for (size_t i = 0; i < ds->bad_path.n && i < 3 && off < sizeof first - 1; i++) {
        int k = snprintf(first + off, sizeof first - off, "%s%.300s: %.80s", i ? "; " : "", ds->bad_path.v[i],
                         ds->bad_reason.v[i]);
        if (k < 0) break;
        off += (size_t)k;
      }
      return bf_error(BF_EINVAL,
                      "%s: %zu of %zu images of the %s split are bad (%.2f%% > max_bad_fraction %.2f%%); first: %s",
                      ds->root, bad, tot, ds->info.explicit_split ? (s ? "test" : "train") : "whole",
                      100.0 * (double)bad / (double)tot, 100.0 * ds->cfg.max_bad_fraction, first);
    }
  }
  return 0;
}

static int detect_layout(const char *root, bf_layout *out) {
  char *a = bfd_path_join(root, "train-images-idx3-ubyte"), *b = bfd_path_join(root, "train-images-idx3-ubyte.gz");
  char *c = bfd_path_join(root, "images"), *d = bfd_path_join(root, "train.csv");
  int rc = 0;
  if (!a || !b || !c || !d) rc = bf_error(BF_ENOMEM, "out of memory");
  else if (bfd_is_file(a) || bfd_is_file(b)) *out = BF_LAYOUT_IDX;
  else if (bfd_is_dir(c) && bfd_is_file(d)) *out = BF_LAYOUT_MINIIMAGENET;
  else *out = BF_LAYOUT_IMAGEFOLDER;
  free(a), free(b), free(c), free(d);
  return rc;
}

int bf_dataset_open(bf_dataset **out, const char *root, const bf_data_config *cfg) {
  *out = NULL;
  if (!root || !*root) return bf_error(BF_EINVAL, "data set root: empty path");
  if (!bfd_is_dir(root)) return bf_error(BF_EIO, "%s: not a directory", root);
  bf_dataset *ds = calloc(1, sizeof *ds);
  if (!ds) return bf_error(BF_ENOMEM, "out of memory");
  if (cfg) ds->cfg = *cfg;
  else bf_data_config_init(&ds->cfg);
  int rc = 0;
  if (!(ds->cfg.test_fraction >= 0.0 && ds->cfg.test_fraction < 1.0))
    rc = bf_error(BF_EINVAL, "test_fraction: %g is not in [0, 1)", ds->cfg.test_fraction);
  if (!rc && !(ds->cfg.max_bad_fraction >= 0.0 && ds->cfg.max_bad_fraction <= 1.0))
    rc = bf_error(BF_EINVAL, "max_bad_fraction: %g is not in [0, 1]", ds->cfg.max_bad_fraction);
  ds->root = strdup(root);
  if (!rc && !ds->root) rc = bf_error(BF_ENOMEM, "out of memory");
  if (!rc) {
    size_t n = strlen(ds->root);
    while (n > 1 && ds->root[n - 1] == '/') ds->root[--n] = 0;
    ds->rootlen = n;
  }
  bf_layout lay = ds->cfg.layout;
  if (!rc && lay == BF_LAYOUT_AUTO) rc = detect_layout(ds->root, &lay);
  ds->info.layout = lay;
  if (!rc) {
    if (lay == BF_LAYOUT_IDX) {
      rc = open_idx(ds);
    } else {
      entries E = {0};
      int expl = 0;
      if (lay == BF_LAYOUT_MINIIMAGENET) rc = bfd_scan_miniimagenet(ds->root, &E);
      else if (lay == BF_LAYOUT_IMAGEFOLDER) rc = bfd_scan_imagefolder(ds->root, &E, &expl);
      else rc = bf_error(BF_EINVAL, "layout: invalid value %d", (int)lay);
      ds->info.explicit_split = expl;
      if (!rc) rc = open_files(ds, &E);
      bfd_ents_free(&E);
    }
  }
  ds->info.bad_count = ds->bad_path.n;
  const float im_mean[3] = {0.485f, 0.456f, 0.406f}, im_std[3] = {0.229f, 0.224f, 0.225f};
  for (int c = 0; c < 3; c++) {
    ds->info.default_mean[c] = ds->info.is_fashion_mnist ? 0.2860f : im_mean[c];
    ds->info.default_std[c] = ds->info.is_fashion_mnist ? 0.3530f : im_std[c];
  }
  for (int s = 0; !rc && s < 2; s++) {
    ds->class_count[s] = calloc((size_t)ds->info.num_classes + 1, sizeof(size_t));
    if (!ds->class_count[s]) rc = bf_error(BF_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < ds->info.count[s]; i++) ds->class_count[s][ds->smp[s][i].label]++;
  }
  if (!rc && ds->info.count[0] == 0) rc = bf_error(BF_EINVAL, "%s: the train split is empty", ds->root);
  if (!rc) rc = check_bad_fraction(ds);
  if (rc) {
    bf_dataset_close(ds);
    return rc;
  }
  *out = ds;
  return 0;
}

void bf_dataset_close(bf_dataset *ds) {
  if (!ds) return;
  if (ds->class_names)
    for (int c = 0; c < ds->info.num_classes; c++) free(ds->class_names[c]);
  free(ds->class_names);
  for (size_t i = 0; i < ds->nfiles; i++) free(ds->files[i]);
  free(ds->files);
  for (int s = 0; s < 2; s++) {
    free(ds->idx_pix[s]);
    free(ds->idx_name[s]);
    free(ds->smp[s]);
    free(ds->class_count[s]);
  }
  bfd_sv_free(&ds->bad_path);
  bfd_sv_free(&ds->bad_reason);
  free(ds->root);
  free(ds);
}

const bf_dataset_info *bf_dataset_get_info(const bf_dataset *ds) { return &ds->info; }
const char *bf_dataset_root(const bf_dataset *ds) { return ds->root; }
const char *bf_dataset_class_name(const bf_dataset *ds, int c) {
  return c >= 0 && c < ds->info.num_classes ? ds->class_names[c] : NULL;
}
size_t bf_dataset_count(const bf_dataset *ds, bf_split s) { return (s == 0 || s == 1) ? ds->info.count[s] : 0; }
size_t bf_dataset_class_count(const bf_dataset *ds, bf_split s, int c) {
  if ((s != 0 && s != 1) || c < 0 || c >= ds->info.num_classes) return 0;
  return ds->class_count[s][c];
}
const char *bf_dataset_bad_path(const bf_dataset *ds, size_t i) { return i < ds->bad_path.n ? ds->bad_path.v[i] : NULL; }
const char *bf_dataset_bad_reason(const bf_dataset *ds, size_t i) {
  return i < ds->bad_reason.n ? ds->bad_reason.v[i] : NULL;
}

int bf_dataset_source(const bf_dataset *ds, bf_split s, size_t i, int *label, const char **path,
                      const uint8_t **gray, int *gw, int *gh) {
  if ((s != 0 && s != 1) || i >= ds->info.count[s])
    return bf_error(BF_EINVAL, "sample %zu of split %d out of range", i, (int)s);
  const sample *sm = &ds->smp[s][i];
  *label = sm->label;
  if (ds->info.layout == BF_LAYOUT_IDX) {
    *path = NULL;
    *gray = ds->idx_pix[s] + (size_t)sm->src * ds->idx_w * ds->idx_h;
    *gw = ds->idx_w;
    *gh = ds->idx_h;
  } else {
    *path = ds->files[sm->src];
    *gray = NULL;
    *gw = *gh = 0;
  }
  return 0;
}

int bf_dataset_sample(const bf_dataset *ds, bf_split split, size_t i, int *label, const char **path) {
  const uint8_t *g;
  int w, h;
  return bf_dataset_source(ds, split, i, label, path, &g, &w, &h);
}

int bf_dataset_load_image(const bf_dataset *ds, bf_split split, size_t i, bf_image *img) {
  const char *path = NULL;
  const uint8_t *g = NULL;
  int label = 0, w = 0, h = 0;
  memset(img, 0, sizeof *img);
  BF_TRY(bf_dataset_source(ds, split, i, &label, &path, &g, &w, &h));
  if (path) return bf_image_decode_file(path, 0, 0, img);
  img->rgb = bf_malloc((size_t)w * h * 3, "image");
  if (!img->rgb) return BF_ENOMEM;
  for (size_t p = 0; p < (size_t)w * h; p++) img->rgb[3 * p] = img->rgb[3 * p + 1] = img->rgb[3 * p + 2] = g[p];
  img->w = w;
  img->h = h;
  return 0;
}

int bf_dataset_write_split(const bf_dataset *ds, const char *path) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (!buf) return bf_error(BF_ENOMEM, "out of memory");
  int rc = 0;
#define EMIT(...)                                                                   \
  do {                                                                              \
    for (;;) {                                                                      \
      int k_ = snprintf(buf + len, cap - len, __VA_ARGS__);                         \
      if (k_ < 0) break;                                                            \
      if ((size_t)k_ < cap - len) {                                                 \
        len += (size_t)k_;                                                          \
        break;                                                                      \
      }                                                                             \
      char *nb_ = realloc(buf, cap * 2 + (size_t)k_);                               \
      if (!nb_) {                                                                   \
        rc = bf_error(BF_ENOMEM, "out of memory");                                  \
        break;                                                                      \
      }                                                                             \
      buf = nb_;                                                                    \
      cap = cap * 2 + (size_t)k_;                                                   \
    }                                                                               \
  } while (0)
  EMIT("# butterfly-split v1\n");
  EMIT("# layout=%s root=%s seed=%llu test_fraction=%g classes=%d train=%zu test=%zu bad=%zu explicit_split=%d\n",
       bf_layout_name(ds->info.layout), ds->root, (unsigned long long)ds->cfg.split_seed, ds->cfg.test_fraction,
       ds->info.num_classes, ds->info.count[0], ds->info.count[1], ds->info.bad_count, ds->info.explicit_split);
  EMIT("split,label,class,path\n");
  for (int s = 0; !rc && s < 2; s++)
    for (size_t i = 0; !rc && i < ds->info.count[s]; i++) {
      const sample *sm = &ds->smp[s][i];
      if (ds->info.layout == BF_LAYOUT_IDX)
        EMIT("%s,%d,%s,%s#%u\n", s ? "test" : "train", sm->label, ds->class_names[sm->label], ds->idx_name[s],
             sm->src);
      else
        EMIT("%s,%d,%s,%s\n", s ? "test" : "train", sm->label, ds->class_names[sm->label],
             ds->files[sm->src] + ds->rootlen + 1);
    }
#undef EMIT
  if (!rc) rc = bf_write_file_atomic(path, buf, len);
  free(buf);
  return rc;
}

void bf_data_config_resolve(bf_data_config *c, const bf_dataset *ds, bf_split split) {
  int small = ds->info.small_images;
  if (c->augment != BF_AUG_TRAIN && c->augment != BF_AUG_EVAL)
    c->augment = split == BF_SPLIT_TRAIN ? BF_AUG_TRAIN : BF_AUG_EVAL;
  if (c->out_size <= 0) c->out_size = small ? 32 : 224;
  if (c->resize < 0) c->resize = small ? 0 : c->out_size * 8 / 7;
  if (c->pad < 0) c->pad = (c->augment == BF_AUG_TRAIN && small) ? 4 : 0;
  if (c->hflip < 0) c->hflip = c->augment == BF_AUG_TRAIN;
  for (int i = 0; i < 3; i++) {
    if (c->mean[i] < 0) c->mean[i] = ds->info.default_mean[i];
    if (c->std[i] <= 0) c->std[i] = ds->info.default_std[i];
  }
  if (c->shuffle < 0) c->shuffle = split == BF_SPLIT_TRAIN;
  if (c->drop_last < 0) c->drop_last = split == BF_SPLIT_TRAIN;
  c->threads = bfd_default_threads(c->threads);
  if (c->prefetch <= 0) c->prefetch = 3;
}
