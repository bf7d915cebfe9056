/* Data-set scanning: directory layouts into candidate entries and the
 * threaded header probe (bf_scan.h). */
#include "bf_scan.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bfd_sv_push(strvec *s, const char *str) {
  if (s->n == s->cap) {
    size_t c = s->cap ? s->cap * 2 : 64;
    char **v = realloc(s->v, c * sizeof *v);
    if (!v) return bf_error(BF_ENOMEM, "out of memory for a file list");
    s->v = v;
    s->cap = c;
  }
  char *d = strdup(str);
  if (!d) return bf_error(BF_ENOMEM, "out of memory for a file list");
  s->v[s->n++] = d;
  return 0;
}

void bfd_sv_free(strvec *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
  memset(s, 0, sizeof *s);
}

int bfd_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

char *bfd_path_join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *p = malloc(la + lb + 2);
  if (!p) return NULL;
  memcpy(p, a, la);
  p[la] = '/';
  memcpy(p + la + 1, b, lb + 1);
  return p;
}

int bfd_is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
int bfd_is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_image_ext(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  char e[8] = {0};
  for (size_t i = 0; dot[1 + i]; i++) {
    if (i + 1 >= sizeof e) return 0;
    e[i] = (char)tolower((unsigned char)dot[1 + i]);
  }
  return !strcmp(e, "png") || !strcmp(e, "jpg") || !strcmp(e, "jpeg");
}

/* Sorted entries of dir: subdirectories (want_dirs) or image files. */
static int list_dir(const char *dir, int want_dirs, strvec *out) {
  DIR *d = opendir(dir);
  if (!d) return bf_error(BF_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *full = bfd_path_join(dir, e->d_name);
    if (!full) {
      rc = bf_error(BF_ENOMEM, "out of memory");
      break;
    }
    int isd = bfd_is_dir(full);
    if (want_dirs ? isd : (!isd && has_image_ext(e->d_name))) rc = bfd_sv_push(out, e->d_name);
    free(full);
  }
  closedir(d);
  if (!rc && out->n) qsort(out->v, out->n, sizeof *out->v, bfd_cmp_str);
  return rc;
}

/* Image files under dir, recursively, as paths relative to dir, sorted. */
static int list_images_rec(const char *dir, const char *rel, strvec *out) {
  strvec files = {0}, dirs = {0};
  int rc = list_dir(dir, 0, &files);
  if (!rc) rc = list_dir(dir, 1, &dirs);
  for (size_t i = 0; !rc && i < files.n; i++) {
    char *r = rel ? bfd_path_join(rel, files.v[i]) : strdup(files.v[i]);
    if (!r) rc = bf_error(BF_ENOMEM, "out of memory");
    else rc = bfd_sv_push(out, r);
    free(r);
  }
  for (size_t i = 0; !rc && i < dirs.n; i++) {
    char *sub = bfd_path_join(dir, dirs.v[i]);
    char *r = rel ? bfd_path_join(rel, dirs.v[i]) : strdup(dirs.v[i]);
    if (!sub || !r) rc = bf_error(BF_ENOMEM, "out of memory");
    else rc = list_images_rec(sub, r, out);
    free(sub);
    free(r);
  }
  bfd_sv_free(&files);
  bfd_sv_free(&dirs);
  return rc;
}


static int ent_push(entries *E, const char *rel, const char *label, int split, const char *bad) {
  if (E->n == E->cap) {
    size_t c = E->cap ? E->cap * 2 : 1024;
    entry *v = realloc(E->v, c * sizeof *v);
    if (!v) return bf_error(BF_ENOMEM, "out of memory for the sample list");
    E->v = v;
    E->cap = c;
  }
  entry *e = &E->v[E->n];
  memset(e, 0, sizeof *e);
  e->rel = strdup(rel);
  e->label = strdup(label ? label : "");
  e->bad = bad ? strdup(bad) : NULL;
  e->split = split;
  if (!e->rel || !e->label || (bad && !e->bad)) return bf_error(BF_ENOMEM, "out of memory");
  E->n++;
  return 0;
}

void bfd_ents_free(entries *E) {
  for (size_t i = 0; i < E->n; i++) {
    free(E->v[i].rel);
    free(E->v[i].label);
    free(E->v[i].bad);
  }
  free(E->v);
}

int bfd_scan_imagefolder(const char *root, entries *E, int *explicit_split) {
  char *tr = bfd_path_join(root, "train"), *te = bfd_path_join(root, "test"), *va = bfd_path_join(root, "val");
  if (!tr || !te || !va) {
    free(tr), free(te), free(va);
    return bf_error(BF_ENOMEM, "out of memory");
  }
  int rc = 0;
  const char *testdir = bfd_is_dir(te) ? "test" : bfd_is_dir(va) ? "val" : NULL;
  *explicit_split = bfd_is_dir(tr) && testdir;
  strvec classes = {0};
  if (*explicit_split) {
    rc = list_dir(tr, 1, &classes);
    for (int s = 0; !rc && s < 2; s++) {
      const char *part = s == 0 ? "train" : testdir;
      char *pd = bfd_path_join(root, part);
      strvec cls = {0};
      rc = pd ? list_dir(pd, 1, &cls) : bf_error(BF_ENOMEM, "out of memory");
      for (size_t c = 0; !rc && c < cls.n; c++) {
        int known = classes.n && bsearch(&cls.v[c], classes.v, classes.n, sizeof(char *), bfd_cmp_str) != NULL;
        char *cd = bfd_path_join(pd, cls.v[c]);
        strvec files = {0};
        rc = cd ? list_images_rec(cd, NULL, &files) : bf_error(BF_ENOMEM, "out of memory");
        for (size_t f = 0; !rc && f < files.n; f++) {
          char rel[4096];
          snprintf(rel, sizeof rel, "%s/%s/%s", part, cls.v[c], files.v[f]);
          char why[512];
          snprintf(why, sizeof why, "unknown label: class '%s' does not exist in train/", cls.v[c]);
          rc = ent_push(E, rel, cls.v[c], s, known ? NULL : why);
        }
        bfd_sv_free(&files);
        free(cd);
      }
      bfd_sv_free(&cls);
      free(pd);
    }
  } else {
    rc = list_dir(root, 1, &classes);
    for (size_t c = 0; !rc && c < classes.n; c++) {
      char *cd = bfd_path_join(root, classes.v[c]);
      strvec files = {0};
      rc = cd ? list_images_rec(cd, NULL, &files) : bf_error(BF_ENOMEM, "out of memory");
      for (size_t f = 0; !rc && f < files.n; f++) {
        char rel[4096];
        snprintf(rel, sizeof rel, "%s/%s", classes.v[c], files.v[f]);
        rc = ent_push(E, rel, classes.v[c], -1, NULL);
      }
      bfd_sv_free(&files);
      free(cd);
    }
  }
  if (!rc && classes.n == 0) rc = bf_error(BF_EINVAL, "%s: no class directories found (ImageFolder layout)", root);
  bfd_sv_free(&classes);
  free(tr), free(te), free(va);
  return rc;
}

static int wnid_prefix(const char *s, char out[10]) {
  if (s[0] != 'n') return 0;
  for (int i = 1; i <= 8; i++)
    if (!isdigit((unsigned char)s[i])) return 0;
  memcpy(out, s, 9);
  out[9] = 0;
  return 1;
}

static char *trim(char *s) {
  while (*s && isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
  return s;
}

int bfd_scan_miniimagenet(const char *root, entries *E) {
  static const char *csvs[3] = {"train.csv", "val.csv", "test.csv"};
  int found = 0, rc = 0;
  for (int k = 0; !rc && k < 3; k++) {
    char *path = bfd_path_join(root, csvs[k]);
    if (!path) return bf_error(BF_ENOMEM, "out of memory");
    FILE *f = fopen(path, "r");
    if (!f) {
      free(path);
      continue;
    }
    found++;
    char line[4096];
    long lineno = 0;
    while (!rc && fgets(line, sizeof line, f)) {
      lineno++;
      char *l = trim(line);
      if (lineno == 1) {
        if (strcmp(l, "filename,label") != 0)
          rc = bf_error(BF_EINVAL, "%s:1: header must be 'filename,label', got '%.100s'", path, l);
        continue;
      }
      if (!*l) continue;
      char *comma = strchr(l, ',');
      char why[512] = {0};
      const char *fn = l, *lab = "";
      if (!comma) {
        snprintf(why, sizeof why, "%s:%ld: malformed row (no comma)", csvs[k], lineno);
      } else {
        *comma = 0;
        fn = trim(l);
        lab = trim(comma + 1);
        char p1[10], p2[10];
        int badchar = 0;
        for (const char *c = lab; *c; c++)
          if (!isgraph((unsigned char)*c) || *c == '/' || *c == ',') badchar = 1;
        if (!*lab || badchar)
          snprintf(why, sizeof why, "%s:%ld: unknown label '%.100s'", csvs[k], lineno, lab);
        else if (!*fn || strchr(fn, '/') || strstr(fn, ".."))
          snprintf(why, sizeof why, "%s:%ld: invalid file name", csvs[k], lineno);
        else if (wnid_prefix(fn, p1) && wnid_prefix(lab, p2) && strlen(lab) == 9 && strcmp(p1, p2) != 0)
          snprintf(why, sizeof why, "%s:%ld: unknown label: '%s' contradicts the file name's class %s",
                   csvs[k], lineno, lab, p1);
      }
      char rel[4200];
      snprintf(rel, sizeof rel, "images/%s", fn);
      rc = ent_push(E, rel, why[0] ? "" : lab, -1, why[0] ? why : NULL);
    }
    fclose(f);
    free(path);
  }
  if (!rc && !found) rc = bf_error(BF_EINVAL, "%s: no train.csv/val.csv/test.csv (miniImageNet layout)", root);
  return rc;
}

/* --------------------------------------------------------------- probing */
typedef struct probe_job {
  const char *root;
  entries *E;
  int verify;
  atomic_size_t next;
} probe_job;

static void probe_one(probe_job *J, entry *e, bf_decoder *d) {
  char *full = bfd_path_join(J->root, e->rel);
  if (!full) {
    e->bad = strdup("out of memory");
    return;
  }
  char why[1024] = {0};
  int fd = open(full, O_RDONLY);
  if (fd < 0) {
    snprintf(why, sizeof why, "%s", errno == ENOENT ? "missing file" : strerror(errno));
  } else {
    uint8_t buf[65536];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    int fmt, w = 0, h = 0, rc = n < 0 ? bf_error(BF_EIO, "read error") : bf_probe_header(buf, (size_t)n, &fmt, &w, &h);
    if (rc == 1 && n == (ssize_t)sizeof buf) { /* header beyond 64 KiB (big EXIF): read it all */
      rc = bf_decoder_read_file(d, full);
      if (!rc) rc = bf_probe_header(d->file, d->file_len, &fmt, &w, &h);
    }
    if (rc == 1) rc = bf_error(BF_EINVAL, "truncated file (header incomplete)");
    if (rc < 0) snprintf(why, sizeof why, "%s", bf_last_error());
    else if (J->verify) {
      int ow, oh;
      rc = bf_decoder_read_file(d, full);
      if (!rc) rc = bf_decoder_decode(d, "", 0, &w, &h, &ow, &oh);
      if (rc) snprintf(why, sizeof why, "%s", bf_last_error() + (strncmp(bf_last_error(), ": ", 2) ? 0 : 2));
    }
    e->w = w;
    e->h = h;
  }
  if (why[0]) {
    if (e->bad) { /* keep the first reason */
    } else {
      e->bad = strdup(why);
      if (!e->bad) e->bad = NULL;
    }
  }
  free(full);
}

static void *probe_thread(void *arg) {
  probe_job *J = arg;
  bf_decoder d;
  bf_decoder_init(&d);
  for (;;) {
    size_t i = atomic_fetch_add(&J->next, 1);
    if (i >= J->E->n) break;
    entry *e = &J->E->v[i];
    if (!e->bad) probe_one(J, e, &d);
  }
  bf_decoder_free(&d);
  return NULL;
}

int bfd_probe_all(const char *root, entries *E, int threads, int verify) {
  probe_job J = {root, E, verify, 0};
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  pthread_t th[64];
  int started = 0;
  for (int t = 1; t < threads; t++) {
    if (pthread_create(&th[t], NULL, probe_thread, &J) != 0) break;
    started++;
  }
  probe_thread(&J);
  for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
  return 0;
}

int bfd_default_threads(int t) {
  if (t > 0) return t;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)(n > 64 ? 64 : n) : 1;
}
