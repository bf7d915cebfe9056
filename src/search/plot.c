/* The search's figures, drawn with cairo (docs/search.md, "Outputs"):
 *   accuracy_vs_dr  Fig. 7: test top-1 vs D_r, a line per split point, the target dashed
 *   rate_accuracy   top-1 vs bytes per image, a line per split point and codec, every
 *                   candidate D_r a point: the INFER frame bytes measured on test images
 *                   with raw, zstd and rans (search_rate.c, profile.rate_images > 0); without
 *                   them, H*W*D_r of RBk's output at the profiling size (8-bit, one line)
 *   latency, energy Tables IV and V as bars: one panel per network, each chosen partition
 *                   (one per split point) next to mobile-only and cloud-only
 * Each figure is drawn once per surface, into NAME.svg and NAME.png; the SVG
 * text is kept for report.html. Plus accuracy_vs_dr.csv and rate_accuracy.csv. */
#include <cairo-svg.h>
#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "search.h"
#include "split.h"

const char *const bf_search_figure_names[BF_SEARCH_N_FIGS] = {"accuracy_vs_dr", "rate_accuracy", "latency",
                                                              "energy"};

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

/* the rate-accuracy curve's numbers: a row per measured candidate */
static int write_rate_csv(const char *path, const bf_search_summary *s) {
  FILE *fp = fopen(path, "w");
  if (!fp) return bf_error(BF_EIO, "%s: cannot write", path);
  fprintf(fp, "split,d_r,top1,frame_bytes_raw,frame_bytes_zstd,frame_bytes_rans,test_images,rans_train_images,"
              "input_size,bits\n");
  for (int i = 0; i < s->n_rates; i++) {
    const bf_rate_point *r = &s->rates[i];
    fprintf(fp, "%d,%d,%.6f,%.3f,%.3f,%.3f,%d,%d,%d,%d\n", r->split, r->d_r, r->top1, r->frame_bytes[BF_RATE_RAW],
            r->frame_bytes[BF_RATE_ZSTD], r->frame_bytes[BF_RATE_RANS], r->images, r->rans_images, s->input_size,
            r->bits);
  }
  if (fclose(fp)) return bf_error(BF_EIO, "%s: write failed", path);
  return 0;
}

/* ---- drawing helpers ---- */

/* split point k's colour: a qualitative palette, the same in every figure */
static void set_split_color(cairo_t *cr, int k) {
  static const double pal[16][3] = {
      {0.12, 0.47, 0.71}, {1.00, 0.50, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16}, {0.58, 0.40, 0.74},
      {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.50, 0.50, 0.50}, {0.74, 0.74, 0.13}, {0.09, 0.75, 0.81},
      {0.68, 0.78, 0.91}, {1.00, 0.73, 0.47}, {0.60, 0.87, 0.54}, {1.00, 0.60, 0.59}, {0.77, 0.69, 0.84},
      {0.55, 0.55, 0.90}};
  const double *c = pal[(k - 1) & 15];
  cairo_set_source_rgb(cr, c[0], c[1], c[2]);
}

/* text anchored at (x, y): ax 0 left, 0.5 centre, 1 right; ay the same, 0 top, 1 bottom */
static void text(cairo_t *cr, double x, double y, double size, double ax, double ay, const char *s) {
  cairo_text_extents_t e;
  cairo_set_font_size(cr, size);
  cairo_text_extents(cr, s, &e);
  cairo_move_to(cr, x - ax * e.x_advance, y - e.y_bearing - ay * e.height);
  cairo_show_text(cr, s);
}

static void text_vertical(cairo_t *cr, double x, double y, double size, const char *s) {
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, -M_PI / 2);
  text(cr, 0, 0, size, 0.5, 0, s);
  cairo_restore(cr);
}

/* a plot area in device units and its data ranges; log axes store log10 */
typedef struct {
  double l, r, t, b;
  double x0, x1, y0, y1;
  int logx;
} axes;

static double ax_x(const axes *a, double x) {
  if (a->logx) x = log10(x);
  return a->x1 == a->x0 ? (a->l + a->r) / 2 : a->l + (x - a->x0) / (a->x1 - a->x0) * (a->r - a->l);
}
static double ax_y(const axes *a, double y) { return a->b - (y - a->y0) / (a->y1 - a->y0) * (a->b - a->t); }

/* a tick step of 1, 2 or 5 times a power of ten giving about n ticks */
static double nice_step(double range, int n) {
  double raw = range / n, p = pow(10, floor(log10(raw))), m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* horizontal grid and y tick labels (fmt: printf of the value times yscale) */
static void y_grid(cairo_t *cr, const axes *a, double step, double yscale, const char *fmt) {
  char buf[32];
  cairo_set_line_width(cr, 1);
  for (double v = ceil(a->y0 / step - 1e-9) * step; v <= a->y1 + 1e-9 * step; v += step) {
    double y = round(ax_y(a, v)) + 0.5;
    cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
    cairo_move_to(cr, a->l, y);
    cairo_line_to(cr, a->r, y);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    snprintf(buf, sizeof buf, fmt, fabs(v) < 1e-6 * step ? 0.0 : v * yscale); /* no "-0" */
    text(cr, a->l - 6, y, 12, 1, 0.5, buf);
  }
}

static void frame(cairo_t *cr, const axes *a) {
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_set_line_width(cr, 1);
  cairo_move_to(cr, a->l + 0.5, a->t);
  cairo_line_to(cr, a->l + 0.5, a->b + 0.5);
  cairo_line_to(cr, a->r, a->b + 0.5);
  cairo_stroke(cr);
}

static void x_tick(cairo_t *cr, const axes *a, double x, const char *label) {
  double px = round(ax_x(a, x)) + 0.5;
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_move_to(cr, px, a->b);
  cairo_line_to(cr, px, a->b + 5);
  cairo_stroke(cr);
  text(cr, px, a->b + 8, 12, 0.5, 0, label);
}

/* ---- the line figures: accuracy vs D_r and vs bytes ---- */

typedef struct {
  const bf_search_summary *s;
  int rate;  /* 0: x = D_r, 1: x = bytes per image */
  int codec; /* rate with measured bytes (s->n_rates): BF_RATE_* */
} line_ctx;

static const bf_rate_point *rate_of(const bf_search_summary *s, int split, int d_r) {
  for (int i = 0; i < s->n_rates; i++)
    if (s->rates[i].split == split && s->rates[i].d_r == d_r) return &s->rates[i];
  return NULL;
}

/* the x of a candidate: D_r, its measured frame bytes with lc->codec, or
 * (nothing measured) H*W*D_r; 0: no point */
static double entry_x(const line_ctx *lc, const bf_search_entry *e) {
  if (!lc->rate) return e->d_r;
  if (lc->s->n_rates) {
    const bf_rate_point *r = rate_of(lc->s, e->split, e->d_r);
    return r ? r->frame_bytes[lc->codec] : 0;
  }
  int f = bf_feature_size(lc->s->input_size, e->split);
  return (double)f * f * e->d_r;
}

static const char *const codec_names[BF_RATE_CODECS] = {"8-bit raw", "8-bit + zstd", "8-bit + rans"};
/* the codecs' line styles: raw dotted, zstd dashed, rans solid */
static void set_codec_dash(cairo_t *cr, int codec) {
  static const double dot[] = {2, 3}, dash[] = {7, 3};
  if (codec == BF_RATE_RAW) cairo_set_dash(cr, dot, 2, 0);
  else if (codec == BF_RATE_ZSTD) cairo_set_dash(cr, dash, 2, 0);
  else cairo_set_dash(cr, NULL, 0, 0);
}

/* a candidate's point: filled disc (rans, or the one unmeasured line), square (zstd), ring (raw) */
static void marker(cairo_t *cr, double x, double y, int measured, int codec) {
  cairo_new_path(cr); /* an arc would join the current point (text leaves one) */
  if (measured && codec == BF_RATE_ZSTD) {
    cairo_rectangle(cr, x - 3.5, y - 3.5, 7, 7);
    cairo_fill(cr);
  } else if (measured && codec == BF_RATE_RAW) {
    cairo_set_line_width(cr, 1.5);
    cairo_arc(cr, x, y, 3.5, 0, 2 * M_PI);
    cairo_stroke(cr);
  } else {
    cairo_arc(cr, x, y, 3.5, 0, 2 * M_PI);
    cairo_fill(cr);
  }
}

#define LINE_W 760
#define LINE_H 440

static void draw_lines(cairo_t *cr, const void *ctx) {
  line_ctx lcv = *(const line_ctx *)ctx, *lc = &lcv;
  const bf_search_summary *s = lc->s;
  /* measured bytes: a line per split point and codec */
  int measured = lc->rate && s->n_rates, n_codecs = measured ? BF_RATE_CODECS : 1;
  axes a = {70, LINE_W - 120, 40, LINE_H - 55, 0, 0, 0, 0, 0};
  /* a target below 0 (a baseline within the tolerance of 0) is named, not drawn */
  double tgt = fmax(0, s->target_top1);
  double xmin = INFINITY, xmax = -INFINITY, amin = tgt, amax = tgt;
  for (lc->codec = 0; lc->codec < n_codecs; lc->codec++)
    for (int i = 0; i < s->n_entries; i++) {
      const bf_search_entry *e = &s->entries[i];
      if (!e->split || !(entry_x(lc, e) > 0)) continue; /* (bytes 0: no point on a log axis) */
      double x = entry_x(lc, e);
      xmin = fmin(xmin, x), xmax = fmax(xmax, x);
      amin = fmin(amin, e->top1), amax = fmax(amax, e->top1);
    }
  if (xmin > xmax) xmin = xmax = 1;
  /* a bisection over a wide D_r range samples powers of two, and bytes span
   * decades: log axes then */
  a.logx = lc->rate || xmax > 16;
  a.x0 = a.logx ? log10(xmin) : xmin, a.x1 = a.logx ? log10(xmax) : xmax;
  if (a.x1 > a.x0) {
    double pad = (a.x1 - a.x0) * 0.04;
    a.x0 -= pad, a.x1 += pad;
  }
  double ystep = nice_step(fmax(amax - amin, 0.02), 6);
  a.y0 = fmax(0, floor(amin / ystep - 0.3) * ystep), a.y1 = fmin(1, ceil(amax / ystep + 0.3) * ystep);
  if (a.y1 <= a.y0) a.y1 = a.y0 + ystep;

  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  text(cr, LINE_W / 2.0, 12, 15, 0.5, 0,
       lc->rate ? "Top-1 accuracy vs data offloaded per image" : "Top-1 accuracy vs D_r (Fig. 7)");
  y_grid(cr, &a, ystep, 100, ystep >= 0.01 ? "%.0f" : "%.1f");
  frame(cr, &a);
  char buf[96];
  if (!lc->rate) {
    /* D_r ticks: every value on a linear axis, powers of two on a log one */
    int dmax = (int)xmax, every = dmax > 16 ? 0 : dmax > 8 ? 2 : 1;
    for (int d = 1; d <= dmax; d = every ? d + every : 2 * d)
      if (d >= xmin - 1e-9) snprintf(buf, sizeof buf, "%d", d), x_tick(cr, &a, d, buf);
  } else {
    for (double p = pow(10, floor(a.x0)); p <= pow(10, a.x1); p *= 10)
      for (int j = 0; j < 3; j++) { /* 1, 2, 5 per decade */
        double v = p * (j == 0 ? 1 : j == 1 ? 2 : 5);
        if (v < pow(10, a.x0) || v > pow(10, a.x1)) continue;
        if (v >= 1e6) snprintf(buf, sizeof buf, "%gM", v / 1e6);
        else if (v >= 1e3) snprintf(buf, sizeof buf, "%gk", v / 1e3);
        else snprintf(buf, sizeof buf, "%g", v);
        x_tick(cr, &a, v, buf);
      }
  }
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  if (measured)
    snprintf(buf, sizeof buf, "INFER frame bytes per image at %dx%d, mean of %d test images (log scale)",
             s->input_size, s->input_size, s->rates[0].images);
  else
    snprintf(buf, sizeof buf, "bytes offloaded per image at %dx%d (8-bit features, log scale)", s->input_size,
             s->input_size);
  text(cr, (a.l + a.r) / 2, LINE_H - 20, 13, 0.5, 0,
       lc->rate ? buf : a.logx ? "D_r (butterfly channels, log scale)" : "D_r (butterfly channels)");
  text_vertical(cr, 18, (a.t + a.b) / 2, 13, "test top-1 (%)");

  /* the target */
  double ty = ax_y(&a, tgt);
  cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
  if (tgt == s->target_top1) {
    cairo_set_line_width(cr, 1.5);
    double dash[] = {6, 4};
    cairo_set_dash(cr, dash, 2, 0);
    cairo_move_to(cr, a.l, ty);
    cairo_line_to(cr, a.r, ty);
    cairo_stroke(cr);
    cairo_set_dash(cr, NULL, 0, 0);
  }

  /* one polyline per split point (and codec), in D_r order (entries are in training order) */
  double ly = a.t + 4;
  for (int k = 1; k <= BF_SEARCH_MAX_SPLITS; k++) {
    int n = 0;
    for (lc->codec = 0; lc->codec < n_codecs; lc->codec++) {
      int last = 0, nc = 0;
      double px = 0, py = 0;
      for (;;) { /* next larger D_r of split k */
        const bf_search_entry *nx = NULL;
        for (int i = 0; i < s->n_entries; i++)
          if (s->entries[i].split == k && s->entries[i].d_r > last && (!nx || s->entries[i].d_r < nx->d_r) &&
              entry_x(lc, &s->entries[i]) > 0)
            nx = &s->entries[i];
        if (!nx) break;
        double x = ax_x(&a, entry_x(lc, nx)), y = ax_y(&a, nx->top1);
        set_split_color(cr, k);
        cairo_set_line_width(cr, 2);
        if (nc) {
          if (measured) set_codec_dash(cr, lc->codec);
          cairo_move_to(cr, px, py);
          cairo_line_to(cr, x, y);
          cairo_stroke(cr);
          cairo_set_dash(cr, NULL, 0, 0);
        }
        marker(cr, x, y, measured, lc->codec);
        px = x, py = y, last = nx->d_r, nc++, n++;
      }
    }
    if (!n) continue;
    set_split_color(cr, k);
    cairo_rectangle(cr, a.r + 18, ly + 2, 12, 12);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    snprintf(buf, sizeof buf, "RB%d", k);
    text(cr, a.r + 36, ly + 8, 12, 0, 0.5, buf);
    ly += 20;
  }
  /* the codecs' line styles */
  for (int cd = 0; measured && cd < BF_RATE_CODECS; cd++) {
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 2);
    set_codec_dash(cr, cd);
    cairo_move_to(cr, a.r + 12, ly + 8);
    cairo_line_to(cr, a.r + 34, ly + 8);
    cairo_stroke(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    marker(cr, a.r + 23, ly + 8, 1, cd);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, a.r + 38, ly + 8, 10, 0, 0.5, codec_names[cd]);
    ly += 18;
  }
  /* the target in the legend, where no data point can hide it */
  cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
  cairo_set_line_width(cr, 1.5);
  double dash[] = {6, 4};
  cairo_set_dash(cr, dash, 2, 0);
  cairo_move_to(cr, a.r + 16, ly + 8);
  cairo_line_to(cr, a.r + 32, ly + 8);
  cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  text(cr, a.r + 36, ly + 8, 12, 0, 0.5, "target");
  snprintf(buf, sizeof buf, "%.2f%%%s", 100 * s->target_top1, tgt == s->target_top1 ? "" : " (off");
  text(cr, a.r + 36, ly + 26, 12, 0, 0.5, buf);
  if (tgt != s->target_top1) text(cr, a.r + 36, ly + 44, 12, 0, 0.5, "the axis)");
}

/* ---- the bar figures: latency and energy per network ---- */

typedef struct {
  const bf_search_config *c;
  const bf_sel_profile *sp;
  int n;
  const bf_sel_row (*rows)[2];
  int energy;
} bar_ctx;

#define PANEL_W 250
#define BAR_H 420
#define BAR_L 70

static int bar_width(const bar_ctx *bc) { return BAR_L + PANEL_W * bc->c->n_nets + 20; }

static void draw_bars(cairo_t *cr, const void *ctx) {
  const bar_ctx *bc = ctx;
  int nb = bc->n + 2; /* mobile-only, cloud-only, the partitions */
  char buf[96];
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  text(cr, bar_width(bc) / 2.0, 12, 15, 0.5, 0,
       bc->energy ? "Mobile energy per image (Tables IV and V)" : "Latency per image (Tables IV and V)");
  text_vertical(cr, 18, BAR_H / 2.0, 13, bc->energy ? "energy (mJ)" : "latency (ms)");
  for (int k = 0; k < bc->c->n_nets; k++) {
    const bf_sel_network *nw = &bc->c->nets[k];
    const bf_sel_row *row = &bc->rows[k][bc->energy];
    double v[BF_SEARCH_MAX_SPLITS + 2], vmax = 0;
    v[0] = bc->energy ? row->mobile.energy_mj : row->mobile.latency_ms;
    v[1] = bc->energy ? row->cloud.energy_mj : row->cloud.latency_ms;
    for (int i = 0; i < bc->n && i < BF_SEARCH_MAX_SPLITS; i++) {
      bf_sel_cost cc;
      bf_sel_cost_of(&bc->sp[i], nw, &bc->c->load, &cc);
      v[i + 2] = bc->energy ? cc.energy_mj : cc.latency_ms;
    }
    for (int i = 0; i < nb; i++) vmax = fmax(vmax, v[i]);
    if (!(vmax > 0)) vmax = 1;
    double step = nice_step(vmax, 5);
    axes a = {BAR_L + k * PANEL_W + (k ? 30 : 0), BAR_L + (k + 1) * PANEL_W - 10, 60, BAR_H - 60, 0, 1, 0,
              ceil(vmax * 1.08 / step) * step, 0};
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    snprintf(buf, sizeof buf, "%s (%.3g Mbps up)", nw->name, nw->tu_mbps);
    text(cr, (a.l + a.r) / 2, 36, 13, 0.5, 0, buf);
    y_grid(cr, &a, step, 1, step >= 1 ? "%.0f" : step >= 0.1 ? "%.1f" : "%.2f");
    frame(cr, &a);
    double slot = (a.r - a.l) / nb;
    for (int i = 0; i < nb; i++) {
      double x = a.l + slot * (i + 0.15), w = slot * 0.7, y = ax_y(&a, v[i]);
      if (i == 0) cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
      else if (i == 1) cairo_set_source_rgb(cr, 0.75, 0.75, 0.75);
      else set_split_color(cr, bc->sp[i - 2].split);
      cairo_rectangle(cr, x, y, w, a.b - y);
      cairo_fill(cr);
      if (i >= 2 && i - 2 == row->index) { /* the partition this target chooses */
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_set_line_width(cr, 2);
        cairo_rectangle(cr, x, y, w, a.b - y);
        cairo_stroke(cr);
        text(cr, x + w / 2, y - 16, 10, 0.5, 1, "chosen");
      }
      cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
      snprintf(buf, sizeof buf, "%.3g", v[i]);
      text(cr, x + w / 2, y - 3, 10, 0.5, 1, buf);
      const char *lab = i == 0 ? "mobile" : i == 1 ? "cloud" : NULL;
      if (!lab) snprintf(buf, sizeof buf, "RB%d", bc->sp[i - 2].split), lab = buf;
      cairo_save(cr);
      cairo_translate(cr, x + w / 2, a.b + 6);
      cairo_rotate(cr, -M_PI / 4);
      text(cr, 0, 0, 11, 1, 0.5, lab);
      cairo_restore(cr);
    }
  }
}

/* ---- surfaces ---- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} membuf;

static cairo_status_t mem_write(void *closure, const unsigned char *data, unsigned int len) {
  membuf *m = closure;
  if (m->len + len + 1 > m->cap) {
    size_t cap = (m->len + len + 1) * 2;
    char *p = realloc(m->p, cap);
    if (!p) return m->oom = 1, CAIRO_STATUS_NO_MEMORY;
    m->p = p, m->cap = cap;
  }
  memcpy(m->p + m->len, data, len);
  m->len += len;
  m->p[m->len] = 0;
  return CAIRO_STATUS_SUCCESS;
}

/* draws into an SVG stream and into an RGB image, writes DIR/NAME.svg and
 * DIR/NAME.png atomically; *svg_out: the SVG text (caller frees) */
static int render(const char *dir, const char *name, int w, int h, void (*draw)(cairo_t *, const void *),
                  const void *ctx, char **svg_out) {
  char path[BF_TRAIN_PATH_MAX + 64];
  membuf m[2] = {{0}, {0}};
  int rc = 0;
  for (int png = 0; png < 2 && !rc; png++) {
    cairo_surface_t *sf = png ? cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h)
                              : cairo_svg_surface_create_for_stream(mem_write, &m[0], w, h);
    cairo_t *cr = cairo_create(sf);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw(cr, ctx);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_flush(sf);
    if (st == CAIRO_STATUS_SUCCESS && png) st = cairo_surface_write_to_png_stream(sf, mem_write, &m[1]);
    cairo_surface_finish(sf);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(sf);
    cairo_surface_destroy(sf);
    if (st != CAIRO_STATUS_SUCCESS || m[png].oom || !m[png].len)
      rc = bf_error(BF_EIO, "%s/%s.%s: cairo: %s", dir, name, png ? "png" : "svg",
                    st != CAIRO_STATUS_SUCCESS ? cairo_status_to_string(st) : "nothing written");
  }
  for (int png = 0; png < 2 && !rc; png++) {
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, png ? "png" : "svg");
    rc = bf_write_file_atomic(path, m[png].p, m[png].len);
  }
  free(m[1].p);
  if (rc) free(m[0].p);
  else *svg_out = m[0].p;
  return rc;
}

int bf_search_plot(const bf_search_config *c, const bf_search_summary *s, const bf_sel_profile *sp,
                   const bf_sel_row (*rows)[2], char *svg[BF_SEARCH_N_FIGS]) {
  char csv[BF_TRAIN_PATH_MAX + 64];
  for (int f = 0; f < BF_SEARCH_N_FIGS; f++) svg[f] = NULL;
  snprintf(csv, sizeof csv, "%s/accuracy_vs_dr.csv", c->dir);
  BF_TRY(write_csv(csv, s));
  snprintf(csv, sizeof csv, "%s/rate_accuracy.csv", c->dir);
  BF_TRY(write_rate_csv(csv, s));
  line_ctx l0 = {s, 0, 0}, l1 = {s, 1, 0};
  bar_ctx b0 = {c, sp, s->n_profiles, rows, 0}, b1 = {c, sp, s->n_profiles, rows, 1};
  int rc = render(c->dir, bf_search_figure_names[0], LINE_W, LINE_H, draw_lines, &l0, &svg[0]);
  if (!rc) rc = render(c->dir, bf_search_figure_names[1], LINE_W, LINE_H, draw_lines, &l1, &svg[1]);
  if (!rc) rc = render(c->dir, bf_search_figure_names[2], bar_width(&b0), BAR_H, draw_bars, &b0, &svg[2]);
  if (!rc) rc = render(c->dir, bf_search_figure_names[3], bar_width(&b1), BAR_H, draw_bars, &b1, &svg[3]);
  if (rc)
    for (int f = 0; f < BF_SEARCH_N_FIGS; f++) free(svg[f]), svg[f] = NULL;
  /* every surface is destroyed and nothing else in bf-search uses cairo or
   * fontconfig: drop their font caches, which LeakSanitizer would otherwise
   * report at exit (a later call initialises them again) */
  cairo_debug_reset_static_data();
  FcFini();
  return rc;
}
