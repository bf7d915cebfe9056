/* accuracy_vs_dr.csv (+ .png, the Fig. 7 analogue). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "search.h"

static int write_csv(const char *path, const bf_search_summary *s) {
  FILE *fp = fopen(path, "w");
  if (!fp) return bf_error(BF_EIO, "%s: cannot write", path);
  fprintf(fp, "split,d_r,top1,top5,target_top1,run_dir\n");
  for (int i = 0; i < s->n_entries; i++) {
    const bf_search_entry *e = &s->entries[i];
    if (!e->split) continue;
    fprintf(fp, "%d,%d,%.6f,%.6f,%.6f,%s\n", e->split, e->d_r, e->top1, e->top5, s->target_top1, e->run_dir);
  }
  if (fclose(fp)) return bf_error(BF_EIO, "%s: write failed", path);
  return 0;
}

int bf_search_plot(const char *png_path, const char *csv_path, const bf_search_summary *s) {
  (void)png_path;
  return write_csv(csv_path, s);
}
