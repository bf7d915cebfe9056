/* Data-set scanning shared by bf_dataset.c and bf_scan.c (not a public API):
 * directory walks of the image-folder and mini-ImageNet layouts into
 * candidate entries, and the threaded header probe of every file. */
#ifndef BF_SCAN_H
#define BF_SCAN_H

#include <stddef.h>

#include "bf_data_internal.h"

typedef struct strvec {
  char **v;
  size_t n, cap;
} strvec;

/* Candidate entries of a directory layout, before the split. */
typedef struct entry {
  char *rel;      /* path relative to root */
  char *label;    /* class name (owned) */
  int split;      /* 0 train, 1 test, -1 = to be split */
  char *bad;      /* reason, or NULL */
  int w, h;       /* probed size */
} entry;

typedef struct entries {
  entry *v;
  size_t n, cap;
} entries;

int bfd_sv_push(strvec *s, const char *str);
int bfd_cmp_str(const void *a, const void *b); /* qsort of char * */
void bfd_sv_free(strvec *s);
char *bfd_path_join(const char *a, const char *b);
int bfd_is_dir(const char *p);
int bfd_is_file(const char *p);
void bfd_ents_free(entries *E);
/* Image folders: ROOT/CLASS/..., or ROOT/train/CLASS/... with ROOT/test (or
 * val)/CLASS/...; *explicit_split: the split comes from the tree. */
int bfd_scan_imagefolder(const char *root, entries *E, int *explicit_split);
/* miniImageNet: the train/val/test CSVs of Ravi & Larochelle under ROOT. */
int bfd_scan_miniimagenet(const char *root, entries *E);
/* Header probe of every entry on `threads` threads (verify: decode fully);
 * a bad file gets its reason in entry.bad. */
int bfd_probe_all(const char *root, entries *E, int threads, int verify);
/* threads <= 0: all cores. */
int bfd_default_threads(int t);

#endif
