/* accuracy_vs_dr.csv and accuracy_vs_dr.png: the Fig. 7 analogue (test
 * top-1 vs D_r, one coloured line per split point, the target as a dashed
 * grey line; legend: a colour square + the split number per split point).
 * A tiny RGB rasteriser with a 3x5 digit font, written with bf_png_write. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "bf_data.h"
#include "search.h"

#define W 640
#define H 400
#define L 50 /* plot area margins */
#define R 110
#define T 20
#define B 40

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

static void px(uint8_t *img, int x, int y, const uint8_t *c) {
  if (x < 0 || y < 0 || x >= W || y >= H) return;
  memcpy(img + ((size_t)y * W + x) * 3, c, 3);
}

static void line(uint8_t *img, int x0, int y0, int x1, int y1, const uint8_t *c, int dash) {
  int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy, i = 0;
  for (;;) {
    if (!dash || (i / 6) % 2 == 0) {
      px(img, x0, y0, c);
      px(img, x0, y0 + 1, c);
    }
    i++;
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

static void box(uint8_t *img, int x, int y, int r, const uint8_t *c) {
  for (int j = -r; j <= r; j++)
    for (int i = -r; i <= r; i++) px(img, x + i, y + j, c);
}

/* 3x5 glyphs (digits and the few capitals the labels use), rows top to
 * bottom, 3 bits each, drawn at 2x */
static const char glyph_chars[] = "0123456789ABDEGOPRT_-% L()";
static const uint8_t font[][5] = {
    {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7},
    {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}, {2, 5, 7, 5, 5}, {6, 5, 6, 5, 6},
    {6, 5, 5, 5, 6}, {7, 4, 6, 4, 7}, {3, 4, 5, 5, 3}, {2, 5, 5, 5, 2}, {6, 5, 6, 4, 4}, {6, 5, 6, 5, 5},
    {7, 2, 2, 2, 2}, {0, 0, 0, 0, 7}, {0, 0, 7, 0, 0}, {5, 1, 2, 4, 5}, {0, 0, 0, 0, 0}, {4, 4, 4, 4, 7},
    {1, 2, 2, 2, 1}, {4, 2, 2, 2, 4}};

static void text(uint8_t *img, int x, int y, const char *str, const uint8_t *c) {
  for (int k = 0; str[k]; k++) {
    const char *g = strchr(glyph_chars, str[k]);
    if (!g || !str[k]) continue;
    const uint8_t *rows = font[g - glyph_chars];
    for (int r = 0; r < 5; r++)
      for (int b = 0; b < 3; b++)
        if (rows[r] & (4 >> b))
          for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++) px(img, x + k * 8 + b * 2 + dx, y + r * 2 + dy, c);
  }
}

static void text_num(uint8_t *img, int x, int y, int v, const uint8_t *c) {
  char buf[16];
  snprintf(buf, sizeof buf, "%d", v);
  text(img, x, y, buf, c);
}

static void color_of(int split, uint8_t *c) {
  double h = (split - 1) / 16.0 * 6.0;
  int i = (int)h;
  double f = h - i;
  double rgb[6][3] = {{1, f, 0}, {1 - f, 1, 0}, {0, 1, f}, {0, 1 - f, 1}, {f, 0, 1}, {1, 0, 1 - f}};
  for (int k = 0; k < 3; k++) c[k] = (uint8_t)(40 + 180 * rgb[i % 6][k]);
}

int bf_search_plot(const char *png_path, const char *csv_path, const bf_search_summary *s) {
  BF_TRY(write_csv(csv_path, s));
  uint8_t *img = malloc((size_t)W * H * 3);
  if (!img) return bf_error(BF_ENOMEM, "plot");
  memset(img, 255, (size_t)W * H * 3);
  const uint8_t black[3] = {0, 0, 0}, grey[3] = {128, 128, 128}, light[3] = {225, 225, 225};
  int drmax = 1;
  for (int i = 0; i < s->n_entries; i++)
    if (s->entries[i].split && s->entries[i].d_r > drmax) drmax = s->entries[i].d_r;
  int x0 = L, x1 = W - R, y0 = H - B, y1 = T;
  /* a bisection over a wide range samples powers of two: log2 axis then */
  int logx = drmax > 16;
#define XP(dr)                                                                                 \
  (drmax <= 1  ? (x0 + x1) / 2                                                                 \
   : logx      ? x0 + (int)(log2((double)(dr)) / log2((double)drmax) * (x1 - x0))             \
               : x0 + (int)((double)((dr)-1) / (drmax - 1) * (x1 - x0)))
  /* y range: the data and the target, in whole 10 % steps, so that the
   * interesting band is not squeezed against the top */
  double amin = s->target_top1, amax = s->target_top1;
  for (int i = 0; i < s->n_entries; i++)
    if (s->entries[i].split) {
      if (s->entries[i].top1 < amin) amin = s->entries[i].top1;
      if (s->entries[i].top1 > amax) amax = s->entries[i].top1;
    }
  int glo = (int)floor(amin * 10 - 0.2), ghi = (int)ceil(amax * 10 + 0.2);
  if (glo < 0) glo = 0;
  if (ghi > 10) ghi = 10;
  if (ghi <= glo) ghi = glo + 1;
#define YP(acc) (y0 - (int)(((acc)-glo / 10.0) / ((ghi - glo) / 10.0) * (y0 - y1)))
  /* grid every 10 % (5 % when the range is narrow), axis labels */
  int fine = ghi - glo <= 4;
  for (int g = 2 * glo; g <= 2 * ghi; g++) {
    if (!fine && g % 2) continue;
    line(img, x0, YP(g / 20.0), x1, YP(g / 20.0), g > 2 * glo ? light : black, 0);
    text_num(img, 8, YP(g / 20.0) - 5, g * 5, black);
  }
  line(img, x0, y0, x0, y1, black, 0);
  for (int d = 1; d <= drmax; d = logx ? 2 * d : d + 1) {
    line(img, XP(d), y0, XP(d), y0 + 4, black, 0);
    text_num(img, XP(d) - 3, y0 + 10, d, black);
  }
  text(img, (x0 + x1) / 2 - 40, y0 + 26, logx ? "D_R (LOG2)" : "D_R", black);
  text(img, 8, 4, "TOP-1 %", black);
  /* target */
  double tg = s->target_top1 < glo / 10.0 ? glo / 10.0 : s->target_top1 > ghi / 10.0 ? ghi / 10.0 : s->target_top1;
  line(img, x0, YP(tg), x1, YP(tg), grey, 1);
  /* below the line at the right: large D_r, usually above the target */
  text(img, x1 - 52, YP(tg) + 5, "TARGET", grey);
  /* one polyline per split point (entries in D_r order) */
  int ly = T + 5;
  for (int k = 1; k <= 16; k++) {
    int px_ = -1, py_ = -1, any = 0;
    uint8_t c[3];
    color_of(k, c);
    for (int d = 1; d <= drmax; d++)
      for (int i = 0; i < s->n_entries; i++) {
        const bf_search_entry *e = &s->entries[i];
        if (e->split != k || e->d_r != d) continue;
        int x = XP(d), y = YP(e->top1);
        if (px_ >= 0) line(img, px_, py_, x, y, c, 0);
        box(img, x, y, 3, c);
        px_ = x, py_ = y, any = 1;
        break;
      }
    if (any) {
      char lab[8];
      snprintf(lab, sizeof lab, "RB%d", k);
      box(img, x1 + 20, ly + 4, 4, c);
      text(img, x1 + 32, ly, lab, black);
      ly += 18;
    }
  }
  int rc = bf_png_write(png_path, img, W, H, 3);
  free(img);
  return rc ? bf_error_wrap(rc, "%s", png_path) : 0;
}
