/* Selection phase outputs: selection.json, profile.json, report.md (Table IV
 * and Table V layouts), report.html (the same with the figures inline, the
 * config and links to every training), the printed selection table and the
 * figures (plot.c). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "search.h"

static cJSON *cost_json(const bf_sel_cost *c) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "device_ms", c->tm_ms);
  cJSON_AddNumberToObject(j, "upload_ms", c->tu_ms);
  cJSON_AddNumberToObject(j, "server_ms", c->tc_ms);
  cJSON_AddNumberToObject(j, "latency_ms", c->latency_ms);
  cJSON_AddNumberToObject(j, "energy_mj", c->energy_mj);
  return j;
}

static cJSON *choice_json(const bf_sel_row *r, const bf_sel_profile *sp) {
  cJSON *j = cJSON_CreateObject();
  if (r->index < 0) {
    cJSON_AddNullToObject(j, "split");
    return j;
  }
  const bf_sel_profile *p = &sp[r->index];
  cJSON_AddNumberToObject(j, "split", p->split);
  cJSON_AddNumberToObject(j, "d_r", p->d_r);
  cJSON_AddNumberToObject(j, "offloaded_bytes", p->bytes);
  cJSON_AddNumberToObject(j, "accuracy", p->accuracy);
  cJSON_AddItemToObject(j, "cost", cost_json(&r->best));
  cJSON_AddNumberToObject(j, "latency_improvement", r->latency_ratio);
  cJSON_AddNumberToObject(j, "energy_improvement", r->energy_ratio);
  return j;
}

/* The two input sizes: accuracy is the trained model's, at the training size;
 * every timing, byte count and energy is at the profiling size. */
static void sizes_text(FILE *fp, const bf_search_summary *s) {
  fprintf(fp, "Accuracy: trained and evaluated at %dx%d. Profiled at %dx%d: latency, energy and offloaded bytes "
              "(cloud-only upload %.0f B).",
          s->train_input_size, s->train_input_size, s->input_size, s->input_size, s->input_bytes);
  if (s->load_before >= 0 && s->load_after >= 0)
    fprintf(fp, " 1-minute load average %.2f before and %.2f after the profiling.", s->load_before, s->load_after);
}

/* input_size (the profiling size) as before, and both sizes by name */
static void sizes_json(cJSON *j, const bf_search_summary *s) {
  cJSON_AddNumberToObject(j, "input_size", s->input_size);
  cJSON_AddNumberToObject(j, "profile_input_size", s->input_size);
  cJSON_AddNumberToObject(j, "train_input_size", s->train_input_size);
}

/* ---- report.html: one self-contained page (inline SVG, no external files
 * but the links to each training's files) ---- */

static void esc(FILE *fp, const char *s) {
  for (; *s; s++) switch (*s) {
      case '<': fputs("&lt;", fp); break;
      case '>': fputs("&gt;", fp); break;
      case '&': fputs("&amp;", fp); break;
      case '"': fputs("&quot;", fp); break;
      default: fputc(*s, fp);
    }
}

/* cairo names its glyphs and clips "glyph0-1", "clip1", ... in every SVG:
 * inlined side by side they would collide, so each figure's ids get the
 * prefix fN-; the XML declaration is dropped (HTML parses it as a comment) */
static void inline_svg(FILE *fp, const char *svg, int fig) {
  const char *p = strstr(svg, "<svg");
  if (!p) p = svg;
  static const char *const refs[] = {"id=\"", "href=\"#", "url(#"};
  while (*p) {
    int hit = -1;
    for (int r = 0; r < 3 && hit < 0; r++)
      if (!strncmp(p, refs[r], strlen(refs[r]))) hit = r;
    if (hit < 0) {
      fputc(*p++, fp);
      continue;
    }
    fprintf(fp, "%sf%d-", refs[hit], fig);
    p += strlen(refs[hit]);
  }
}

/* a training's file: relative to the report when the run is inside the search dir */
static void link_file(FILE *fp, const char *dir, const char *run_dir, const char *file) {
  size_t n = strlen(dir);
  const char *rel = !strncmp(run_dir, dir, n) && run_dir[n] == '/' ? run_dir + n + 1 : run_dir;
  fputs("<a href=\"", fp);
  esc(fp, rel);
  fprintf(fp, "/%s\">%s</a>", file, file);
}

static const char *const html_style =
    "body{font-family:sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f0f0f0}td.l,th.l{text-align:left}tr.best td{font-weight:bold}"
    "b{color:#000}figure{margin:1em 0}figure svg{max-width:100%;height:auto}"
    "code{background:#f4f4f4;padding:1px 4px;word-break:break-all}.small{font-size:90%;color:#555}";

static int write_html(const bf_search_config *c, const bf_search_summary *s, const bf_sel_profile *sp,
                      const bf_sel_row (*rows)[2], const char *const *svg) {
  char *buf = NULL;
  size_t len = 0;
  FILE *h = open_memstream(&buf, &len);
  if (!h) return bf_error(BF_ENOMEM, "report.html: open_memstream failed");
  int n = s->n_profiles;
  fprintf(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Split search report: ");
  esc(h, c->dir);
  fprintf(h, "</title>\n<style>%s</style></head><body>\n<h1>Split search report</h1>\n<p>Search directory <code>",
          html_style);
  esc(h, c->dir);
  fprintf(h, "</code>. Baseline top-1 <b>%.2f%%</b>, target <b>%.2f%%</b> (tolerance %.2f points). ",
          100 * s->baseline_top1, 100 * s->target_top1, c->tolerance);
  sizes_text(h, s);
  fprintf(h, " P<sub>mobile</sub> %.0f mW, K<sub>mobile</sub> %.2f, "
             "K<sub>cloud</sub> %.2f. CPU backend, device %d / server %d threads, median of %d runs.</p>\n",
          c->load.p_mobile_mw, c->load.k_mobile, c->load.k_cloud, c->device_threads, c->server_threads,
          c->prof_runs);
  if (s->profile_source) {
    fputs("<p>Profiles: ", h);
    esc(h, s->profile_source);
    fputs(".</p>\n", h);
  }

  /* the selection table: the numbers bf-search prints */
  fprintf(h, "<h2>Chosen partition per network and target</h2>\n<table id=\"selection\">\n<tr><th class=\"l\">"
             "Network</th><th class=\"l\">Target</th><th class=\"l\">Choice</th><th>D<sub>r</sub></th>"
             "<th>Top-1 (%%)</th><th>Latency (ms)</th><th>Energy (mJ)</th><th>Offloaded (B)</th>"
             "<th>Latency gain</th><th>Energy gain</th></tr>\n");
  for (int k = 0; k < c->n_nets; k++) {
    const char *nm = c->nets[k].name;
    fprintf(h, "<tr><td class=\"l\">%s</td><td class=\"l\">-</td><td class=\"l\">mobile-only</td><td></td>"
               "<td>%.2f</td><td>%.2f</td><td>%.2f</td><td>0</td><td></td><td></td></tr>\n",
            nm, 100 * s->baseline_top1, rows[k][0].mobile.latency_ms, rows[k][0].mobile.energy_mj);
    fprintf(h, "<tr><td class=\"l\">%s</td><td class=\"l\">-</td><td class=\"l\">cloud-only</td><td></td>"
               "<td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.0f</td><td>1.0x</td><td>1.0x</td></tr>\n",
            nm, 100 * s->baseline_top1, rows[k][0].cloud.latency_ms, rows[k][0].cloud.energy_mj, s->input_bytes);
    for (int t = 0; t < 2; t++) {
      const bf_sel_row *r = &rows[k][t];
      if (r->index < 0) {
        fprintf(h, "<tr><td class=\"l\">%s</td><td class=\"l\">%s</td><td class=\"l\" colspan=\"8\">no partition "
                   "reached the target</td></tr>\n", nm, t ? "energy" : "latency");
        continue;
      }
      const bf_sel_profile *p = &sp[r->index];
      fprintf(h, "<tr class=\"best\"><td class=\"l\">%s</td><td class=\"l\">%s</td><td class=\"l\">RB%d</td>"
                 "<td>%d</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.0f</td><td>%.1fx</td><td>%.1fx</td></tr>\n",
              nm, t ? "energy" : "latency", p->split, p->d_r, 100 * p->accuracy, r->best.latency_ms,
              r->best.energy_mj, p->bytes, r->latency_ratio, r->energy_ratio);
    }
  }
  fprintf(h, "</table>\n");

  for (int f = 0; f < BF_SEARCH_N_FIGS; f++) {
    fprintf(h, "<figure id=\"fig-%s\">\n", bf_search_figure_names[f]);
    inline_svg(h, svg[f], f);
    fprintf(h, "\n<figcaption class=\"small\">%s.svg / %s.png</figcaption></figure>\n", bf_search_figure_names[f],
            bf_search_figure_names[f]);
  }

  /* Table IV */
  fprintf(h, "<h2>Table IV: latency, mobile energy and offloaded data per partition point</h2>\n"
             "<table id=\"table4\">\n<tr><th></th>");
  for (int i = 0; i < n; i++) fprintf(h, "<th>RB%d</th>", sp[i].split);
  fprintf(h, "</tr>\n<tr><th class=\"l\">D<sub>r</sub></th>");
  for (int i = 0; i < n; i++) fprintf(h, "<td>%d</td>", sp[i].d_r);
  fprintf(h, "</tr>\n<tr><th class=\"l\">Accuracy (%%)</th>");
  for (int i = 0; i < n; i++) fprintf(h, "<td>%.2f</td>", 100 * sp[i].accuracy);
  fprintf(h, "</tr>\n<tr><th class=\"l\">Offloaded data (KB)</th>");
  for (int i = 0; i < n; i++) fprintf(h, "<td>%.2f</td>", sp[i].bytes / 1000.0);
  fprintf(h, "</tr>\n");
  for (int k = 0; k < c->n_nets; k++)
    for (int t = 0; t < 2; t++) {
      fprintf(h, "<tr><th class=\"l\">%s %s (%s)</th>", t ? "Energy" : "Latency", c->nets[k].name, t ? "mJ" : "ms");
      for (int i = 0; i < n; i++) {
        bf_sel_cost cc;
        bf_sel_cost_of(&sp[i], &c->nets[k], &c->load, &cc);
        double v = t ? cc.energy_mj : cc.latency_ms;
        fprintf(h, i == rows[k][t].index ? "<td><b>%.2f</b></td>" : "<td>%.2f</td>", v);
      }
      fprintf(h, "</tr>\n");
    }
  fprintf(h, "</table>\n<p class=\"small\">Bold: the least latency or energy on that network.</p>\n");

  /* Table V */
  fprintf(h, "<h2>Table V: proposed method vs mobile-only and cloud-only</h2>\n<table id=\"table5\">\n<tr>"
             "<th class=\"l\">Setup</th><th class=\"l\">Network</th><th class=\"l\">Target</th><th>Latency (ms)</th>"
             "<th>Energy (mJ)</th><th class=\"l\">Butterfly location</th><th>Offloaded (B)</th><th>Accuracy (%%)</th>"
             "<th>Latency gain</th><th>Energy gain</th></tr>\n");
  fprintf(h, "<tr><td class=\"l\">Mobile-only</td><td class=\"l\">-</td><td class=\"l\">-</td><td>%.2f</td>"
             "<td>%.2f</td><td class=\"l\">-</td><td>0</td><td>%.2f</td><td></td><td></td></tr>\n",
          rows[0][0].mobile.latency_ms, rows[0][0].mobile.energy_mj, 100 * s->baseline_top1);
  for (int k = 0; k < c->n_nets; k++)
    fprintf(h, "<tr><td class=\"l\">Cloud-only</td><td class=\"l\">%s</td><td class=\"l\">-</td><td>%.2f</td>"
               "<td>%.2f</td><td class=\"l\">-</td><td>%.0f</td><td>%.2f</td><td>1x</td><td>1x</td></tr>\n",
            c->nets[k].name, rows[k][0].cloud.latency_ms, rows[k][0].cloud.energy_mj, s->input_bytes,
            100 * s->baseline_top1);
  for (int k = 0; k < c->n_nets; k++)
    for (int t = 0; t < 2; t++) {
      const bf_sel_row *r = &rows[k][t];
      if (r->index < 0) continue;
      fprintf(h, "<tr><td class=\"l\">Butterfly</td><td class=\"l\">%s</td><td class=\"l\">min %s</td><td>%.2f</td>"
                 "<td>%.2f</td><td class=\"l\">RB%d (D<sub>r</sub> %d)</td><td>%.0f</td><td>%.2f</td><td>%.1fx</td>"
                 "<td>%.1fx</td></tr>\n",
              c->nets[k].name, t ? "energy" : "latency", r->best.latency_ms, r->best.energy_mj, sp[r->index].split,
              sp[r->index].d_r, sp[r->index].bytes, 100 * sp[r->index].accuracy, r->latency_ratio, r->energy_ratio);
    }
  fprintf(h, "</table>\n<p>Split points whose D<sub>r</sub> range never reached the target:");
  int any = 0;
  for (int i = 0; i < s->n_choices; i++)
    if (s->choices[i].d_r <= 0) fprintf(h, " RB%d", s->choices[i].split), any = 1;
  fprintf(h, "%s.</p>\n", any ? "" : " none");

  /* every training, with links to its files */
  fprintf(h, "<h2>Trainings</h2>\n<table id=\"trainings\">\n<tr><th class=\"l\">Model</th><th>D<sub>r</sub></th>"
             "<th>Top-1 (%%)</th><th>Top-5 (%%)</th><th>Seconds</th><th class=\"l\">Files</th></tr>\n");
  for (int i = 0; i < s->n_entries; i++) {
    const bf_search_entry *e = &s->entries[i];
    if (e->split) fprintf(h, "<tr><td class=\"l\">RB%d</td><td>%d</td>", e->split, e->d_r);
    else fprintf(h, "<tr><td class=\"l\">baseline</td><td></td>");
    fprintf(h, "<td>%.2f</td><td>%.2f</td><td>%.0f</td><td class=\"l\">", 100 * e->top1, 100 * e->top5, e->seconds);
    link_file(h, c->dir, e->run_dir, "metrics.jsonl");
    fputs(" ", h);
    link_file(h, c->dir, e->run_dir, "result.json");
    fputs(" ", h);
    link_file(h, c->dir, e->run_dir, "config.ini");
    fprintf(h, "</td></tr>\n");
  }
  fprintf(h, "</table>\n");

  /* the run's config */
  fprintf(h, "<h2>Configuration</h2>\n<table id=\"config\">\n");
  fprintf(h, "<tr><th class=\"l\">search.splits</th><td class=\"l\">");
  for (int i = 0; i < c->n_splits; i++) fprintf(h, "%s%d", i ? "," : "", c->splits[i]);
  fprintf(h, "</td></tr>\n<tr><th class=\"l\">search.dr_min / dr_max</th><td class=\"l\">%d / %d%s</td></tr>\n",
          c->dr_min, c->dr_max, c->dr_max ? "" : " (the channels of RBk)");
  fprintf(h, "<tr><th class=\"l\">search.strategy</th><td class=\"l\">%s</td></tr>\n",
          c->strategy ? "bisect" : "linear");
  fprintf(h, "<tr><th class=\"l\">search.tolerance</th><td class=\"l\">%.2f points</td></tr>\n", c->tolerance);
  fprintf(h, "<tr><th class=\"l\">search.init</th><td class=\"l\">%s</td></tr>\n",
          c->init_baseline ? "baseline" : "scratch");
  fprintf(h, "<tr><th class=\"l\">search.train_config</th><td class=\"l\"><code>");
  esc(h, c->train_config[0] ? c->train_config : "(bf-train defaults)");
  fprintf(h, "</code></td></tr>\n<tr><th class=\"l\">profile</th><td class=\"l\">device %d / server %d threads, "
             "%d warm-up + %d timed runs, input %dx%d (trained at %dx%d)</td></tr>\n",
          c->device_threads, c->server_threads, c->prof_warmup, c->prof_runs, s->input_size, s->input_size,
          s->train_input_size, s->train_input_size);
  for (int k = 0; k < c->n_nets; k++)
    fprintf(h, "<tr><th class=\"l\">network %s</th><td class=\"l\">t<sub>u</sub> %.3g Mbps, "
               "&alpha;<sub>u</sub> %.4g mW/Mbps, &beta; %.4g mW</td></tr>\n",
            c->nets[k].name, c->nets[k].tu_mbps, c->nets[k].alpha_mw, c->nets[k].beta_mw);
  for (int i = 0; i < c->n_ovr; i++) {
    fprintf(h, "<tr><th class=\"l\">%s", c->ovr_cand[i] ? "candidate." : "");
    esc(h, c->ovr_key[i]);
    fputs("</th><td class=\"l\">", h);
    esc(h, c->ovr_val[i]);
    fputs("</td></tr>\n", h);
  }
  fprintf(h, "</table>\n");
  if (c->argv) {
    fprintf(h, "<p>Command line: <code>bf-search");
    for (int i = 0; i < c->argc; i++) fputc(' ', h), esc(h, c->argv[i]);
    fprintf(h, "</code></p>\n");
  }
  fprintf(h, "<p class=\"small\">Written by bf-search. The recipes each training ran with: the config.ini links "
             "above; selection.json and profile.json hold these numbers in full precision.</p>\n</body></html>\n");
  int bad = ferror(h);
  if (fclose(h) || bad) {
    free(buf);
    return bf_error(BF_ENOMEM, "report.html: formatting failed");
  }
  char path[BF_TRAIN_PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/report.html", c->dir);
  int rc = bf_write_file_atomic(path, buf, len);
  free(buf);
  return rc;
}

int bf_search_report(const bf_search_config *c, const bf_search_summary *s, FILE *out) {
  int n = s->n_profiles, rc = 0;
  bf_sel_profile *sp = calloc((size_t)(n ? n : 1), sizeof *sp);
  bf_sel_row(*rows)[2] = calloc((size_t)c->n_nets, sizeof *rows);
  if (!sp || !rows) {
    free(sp);
    free(rows);
    return bf_error(BF_ENOMEM, "report");
  }
  for (int i = 0; i < n; i++) {
    const bf_profile *p = &s->profiles[i];
    sp[i] = (bf_sel_profile){p->split, p->d_r, p->top1, p->device_ms, p->server_ms, (double)p->frame_bytes,
                             p->device_mw};
  }
  for (int k = 0; k < c->n_nets; k++)
    for (int t = 0; t < 2; t++)
      bf_sel_row_compute(sp, n, &c->nets[k], &c->load, (bf_sel_target)t, s->input_bytes, s->tc_full_ms,
                         s->tm_full_ms, &rows[k][t]);

  /* selection.json */
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "format", "butterfly-search-selection-1");
  cJSON_AddNumberToObject(root, "baseline_top1", s->baseline_top1);
  cJSON_AddNumberToObject(root, "target_top1", s->target_top1);
  sizes_json(root, s);
  cJSON_AddStringToObject(root, "profile_source", s->profile_source ? s->profile_source : "measured in this process");
  cJSON *ld = cJSON_AddObjectToObject(root, "load");
  cJSON_AddNumberToObject(ld, "p_mobile_mw", c->load.p_mobile_mw);
  cJSON_AddNumberToObject(ld, "k_mobile", c->load.k_mobile);
  cJSON_AddNumberToObject(ld, "k_cloud", c->load.k_cloud);
  cJSON *fl = cJSON_AddObjectToObject(root, "whole_model");
  cJSON_AddNumberToObject(fl, "device_ms", s->tm_full_ms);
  cJSON_AddNumberToObject(fl, "server_ms", s->tc_full_ms);
  cJSON_AddNumberToObject(fl, "input_bytes", s->input_bytes);
  cJSON *drop = cJSON_AddArrayToObject(root, "dropped_splits");
  for (int i = 0; i < s->n_choices; i++)
    if (s->choices[i].d_r <= 0) cJSON_AddItemToArray(drop, cJSON_CreateNumber(s->choices[i].split));
  cJSON *parts = cJSON_AddArrayToObject(root, "partitions");
  for (int i = 0; i < n; i++) {
    cJSON *pj = cJSON_CreateObject();
    cJSON_AddNumberToObject(pj, "split", sp[i].split);
    cJSON_AddNumberToObject(pj, "d_r", sp[i].d_r);
    cJSON_AddNumberToObject(pj, "accuracy", sp[i].accuracy);
    cJSON_AddNumberToObject(pj, "device_ms", sp[i].tm_ms);
    cJSON_AddNumberToObject(pj, "server_ms", sp[i].tc_ms);
    cJSON_AddNumberToObject(pj, "offloaded_bytes", sp[i].bytes);
    cJSON *cj = cJSON_AddObjectToObject(pj, "cost");
    for (int k = 0; k < c->n_nets; k++) {
      bf_sel_cost cc;
      bf_sel_cost_of(&sp[i], &c->nets[k], &c->load, &cc);
      cJSON_AddItemToObject(cj, c->nets[k].name, cost_json(&cc));
    }
    cJSON_AddItemToArray(parts, pj);
  }
  cJSON *nets = cJSON_AddArrayToObject(root, "networks");
  for (int k = 0; k < c->n_nets; k++) {
    const bf_sel_network *nw = &c->nets[k];
    cJSON *nj = cJSON_CreateObject();
    cJSON_AddStringToObject(nj, "name", nw->name);
    cJSON_AddNumberToObject(nj, "t_u_mbps", nw->tu_mbps);
    cJSON_AddNumberToObject(nj, "alpha_u_mw_per_mbps", nw->alpha_mw);
    cJSON_AddNumberToObject(nj, "beta_mw", nw->beta_mw);
    cJSON_AddNumberToObject(nj, "uplink_power_mw", bf_sel_uplink_power(nw));
    cJSON_AddItemToObject(nj, "mobile_only", cost_json(&rows[k][0].mobile));
    cJSON_AddItemToObject(nj, "cloud_only", cost_json(&rows[k][0].cloud));
    cJSON_AddItemToObject(nj, "min_latency", choice_json(&rows[k][BF_SEL_LATENCY], sp));
    cJSON_AddItemToObject(nj, "min_energy", choice_json(&rows[k][BF_SEL_ENERGY], sp));
    cJSON_AddItemToArray(nets, nj);
  }
  char *txt = cJSON_Print(root);
  cJSON_Delete(root);
  char path[BF_TRAIN_PATH_MAX + 64];
  if (!txt) rc = bf_error(BF_ENOMEM, "selection.json");
  else {
    snprintf(path, sizeof path, "%s/selection.json", c->dir);
    rc = bf_write_file_atomic(path, txt, strlen(txt));
    free(txt);
  }

  /* profile.json */
  if (!rc) {
    cJSON *pr = cJSON_CreateObject();
    cJSON_AddStringToObject(pr, "format", "butterfly-search-profile-1");
    cJSON_AddStringToObject(pr, "backend", "cpu");
    sizes_json(pr, s);
    if (s->load_before >= 0) cJSON_AddNumberToObject(pr, "load_average_before", s->load_before);
    if (s->load_after >= 0) cJSON_AddNumberToObject(pr, "load_average_after", s->load_after);
    cJSON_AddNumberToObject(pr, "device_threads", c->device_threads);
    cJSON_AddNumberToObject(pr, "server_threads", c->server_threads);
    cJSON_AddNumberToObject(pr, "warmup", c->prof_warmup);
    cJSON_AddNumberToObject(pr, "runs", c->prof_runs);
    cJSON_AddNumberToObject(pr, "whole_model_device_ms", s->tm_full_ms);
    cJSON_AddNumberToObject(pr, "whole_model_server_ms", s->tc_full_ms);
    cJSON_AddNumberToObject(pr, "input_bytes", s->input_bytes);
    cJSON *ms = cJSON_AddArrayToObject(pr, "models");
    for (int i = 0; i < n; i++) {
      const bf_profile *p = &s->profiles[i];
      cJSON *m = cJSON_CreateObject();
      cJSON_AddNumberToObject(m, "split", p->split);
      cJSON_AddNumberToObject(m, "d_r", p->d_r);
      cJSON_AddNumberToObject(m, "top1", p->top1);
      cJSON *sh = cJSON_AddArrayToObject(m, "feature_shape");
      cJSON_AddItemToArray(sh, cJSON_CreateNumber(p->feat_h));
      cJSON_AddItemToArray(sh, cJSON_CreateNumber(p->feat_w));
      cJSON_AddItemToArray(sh, cJSON_CreateNumber(p->feat_c));
      cJSON_AddNumberToObject(m, "device_ms", p->device_ms);
      cJSON_AddNumberToObject(m, "quant_ms", p->quant_ms);
      cJSON_AddNumberToObject(m, "server_ms", p->server_ms);
      cJSON_AddNumberToObject(m, "payload_bytes", (double)p->payload_bytes);
      cJSON_AddNumberToObject(m, "frame_bytes", (double)p->frame_bytes);
      cJSON_AddStringToObject(m, "deploy_dir", p->deploy_dir);
      cJSON_AddItemToArray(ms, m);
    }
    /* every candidate's measured bytes per codec (search_rate.c) */
    cJSON *cb = cJSON_AddArrayToObject(pr, "codec_bytes");
    for (int i = 0; i < s->n_rates; i++) {
      const bf_rate_point *r = &s->rates[i];
      cJSON *m = cJSON_CreateObject();
      cJSON_AddNumberToObject(m, "split", r->split);
      cJSON_AddNumberToObject(m, "d_r", r->d_r);
      cJSON_AddNumberToObject(m, "top1", r->top1);
      cJSON_AddNumberToObject(m, "frame_bytes_raw", r->frame_bytes[BF_RATE_RAW]);
      cJSON_AddNumberToObject(m, "frame_bytes_zstd", r->frame_bytes[BF_RATE_ZSTD]);
      cJSON_AddNumberToObject(m, "frame_bytes_rans", r->frame_bytes[BF_RATE_RANS]);
      cJSON_AddNumberToObject(m, "test_images", r->images);
      cJSON_AddNumberToObject(m, "rans_train_images", r->rans_images);
      cJSON_AddNumberToObject(m, "bits", r->bits);
      cJSON_AddItemToArray(cb, m);
    }
    char *pt = cJSON_Print(pr);
    cJSON_Delete(pr);
    snprintf(path, sizeof path, "%s/profile.json", c->dir);
    rc = pt ? bf_write_file_atomic(path, pt, strlen(pt)) : bf_error(BF_ENOMEM, "profile.json");
    free(pt);
  }

  /* report.md */
  FILE *md = NULL;
  if (!rc) {
    snprintf(path, sizeof path, "%s/report.md", c->dir);
    md = fopen(path, "w");
    if (!md) rc = bf_error(BF_EIO, "%s: cannot write", path);
  }
  if (md) {
    fprintf(md, "# Split search report\n\n");
    fprintf(md, "Baseline top-1 %.2f%%, target %.2f%%. ", 100 * s->baseline_top1, 100 * s->target_top1);
    sizes_text(md, s);
    fprintf(md, " P_mobile %.0f mW, K_mobile %.2f, K_cloud %.2f. CPU backend, device %d / server %d threads, "
                "median of %d runs.\n\n",
            c->load.p_mobile_mw, c->load.k_mobile, c->load.k_cloud, c->device_threads, c->server_threads,
            c->prof_runs);
    if (s->profile_source) fprintf(md, "Profiles: %s.\n\n", s->profile_source);
    fprintf(md, "## Table IV: latency, mobile energy and offloaded data per partition point\n\n| |");
    for (int i = 0; i < n; i++) fprintf(md, " RB%d |", sp[i].split);
    fprintf(md, "\n|---|");
    for (int i = 0; i < n; i++) fprintf(md, "---|");
    fprintf(md, "\n| D_r |");
    for (int i = 0; i < n; i++) fprintf(md, " %d |", sp[i].d_r);
    fprintf(md, "\n| Accuracy (%%) |");
    for (int i = 0; i < n; i++) fprintf(md, " %.2f |", 100 * sp[i].accuracy);
    fprintf(md, "\n| Offloaded data (KB) |");
    for (int i = 0; i < n; i++) fprintf(md, " %.2f |", sp[i].bytes / 1000.0);
    for (int k = 0; k < c->n_nets; k++) {
      fprintf(md, "\n| Latency %s (ms) |", c->nets[k].name);
      for (int i = 0; i < n; i++) {
        bf_sel_cost cc;
        bf_sel_cost_of(&sp[i], &c->nets[k], &c->load, &cc);
        fprintf(md, i == rows[k][0].index ? " **%.2f** |" : " %.2f |", cc.latency_ms);
      }
      fprintf(md, "\n| Energy %s (mJ) |", c->nets[k].name);
      for (int i = 0; i < n; i++) {
        bf_sel_cost cc;
        bf_sel_cost_of(&sp[i], &c->nets[k], &c->load, &cc);
        fprintf(md, i == rows[k][1].index ? " **%.2f** |" : " %.2f |", cc.energy_mj);
      }
    }
    fprintf(md, "\n\n## Table V: proposed method vs mobile-only and cloud-only\n\n");
    fprintf(md, "| Setup | Network | Target | Latency (ms) | Energy (mJ) | Butterfly location | Offloaded (B) | "
                "Accuracy (%%) | Latency gain | Energy gain |\n|---|---|---|---|---|---|---|---|---|---|\n");
    fprintf(md, "| Mobile-only | - | - | %.2f | %.2f | - | 0 | %.2f | | |\n", rows[0][0].mobile.latency_ms,
            rows[0][0].mobile.energy_mj, 100 * s->baseline_top1);
    for (int k = 0; k < c->n_nets; k++)
      fprintf(md, "| Cloud-only | %s | - | %.2f | %.2f | - | %.0f | %.2f | 1x | 1x |\n", c->nets[k].name,
              rows[k][0].cloud.latency_ms, rows[k][0].cloud.energy_mj, s->input_bytes, 100 * s->baseline_top1);
    for (int k = 0; k < c->n_nets; k++)
      for (int t = 0; t < 2; t++) {
        const bf_sel_row *r = &rows[k][t];
        if (r->index < 0) continue;
        fprintf(md, "| Butterfly | %s | min %s | %.2f | %.2f | RB%d (D_r %d) | %.0f | %.2f | %.1fx | %.1fx |\n",
                c->nets[k].name, t ? "energy" : "latency", r->best.latency_ms, r->best.energy_mj,
                sp[r->index].split, sp[r->index].d_r, sp[r->index].bytes, 100 * sp[r->index].accuracy,
                r->latency_ratio, r->energy_ratio);
      }
    fprintf(md, "\nSplit points whose D_r range never reached the target:");
    int any = 0;
    for (int i = 0; i < s->n_choices; i++)
      if (s->choices[i].d_r <= 0) fprintf(md, " RB%d", s->choices[i].split), any = 1;
    fprintf(md, "%s\n", any ? "" : " none");
    if (s->n_rates) {
      fprintf(md, "\n## Bytes per image with each codec\n\nINFER frame (header + body + CRC) per image at %dx%d, "
                  "8-bit per tensor, mean of %d test images; rans tables from %d training images.\n\n"
                  "| Split | D_r | Top-1 (%%) | raw (B) | zstd (B) | rans (B) | raw / rans |\n|---|---|---|---|---|---|---|\n",
              s->input_size, s->input_size, s->rates[0].images, s->rates[0].rans_images);
      for (int i = 0; i < s->n_rates; i++) {
        const bf_rate_point *r = &s->rates[i];
        fprintf(md, "| RB%d | %d | %.2f | %.0f | %.0f | %.0f | %.2fx |\n", r->split, r->d_r, 100 * r->top1,
                r->frame_bytes[BF_RATE_RAW], r->frame_bytes[BF_RATE_ZSTD], r->frame_bytes[BF_RATE_RANS],
                r->frame_bytes[BF_RATE_RAW] / r->frame_bytes[BF_RATE_RANS]);
      }
    }
    fprintf(md, "\nFigures (SVG and PNG): accuracy_vs_dr (Fig. 7; data in accuracy_vs_dr.csv), "
                "rate_accuracy (data in rate_accuracy.csv), latency, energy. The same report with the figures "
                "inline: report.html.\n");
    if (fclose(md)) rc = bf_error(BF_EIO, "%s: write failed", path);
  }

  /* printed table */
  if (!rc) {
    fprintf(out, "\n%-8s %-8s %-10s %-10s %10s %10s %10s %8s %8s\n", "network", "target", "choice", "", "latency_ms",
            "energy_mJ", "bytes", "lat_gain", "en_gain");
    for (int k = 0; k < c->n_nets; k++) {
      fprintf(out, "%-8s %-8s %-10s %-10s %10.2f %10.2f %10s %8s %8s\n", c->nets[k].name, "-", "mobile-only", "",
              rows[k][0].mobile.latency_ms, rows[k][0].mobile.energy_mj, "0", "", "");
      fprintf(out, "%-8s %-8s %-10s %-10s %10.2f %10.2f %10.0f %8s %8s\n", c->nets[k].name, "-", "cloud-only", "",
              rows[k][0].cloud.latency_ms, rows[k][0].cloud.energy_mj, s->input_bytes, "1.0x", "1.0x");
      for (int t = 0; t < 2; t++) {
        const bf_sel_row *r = &rows[k][t];
        if (r->index < 0) {
          fprintf(out, "%-8s %-8s (no partition reached the target)\n", c->nets[k].name, t ? "energy" : "latency");
          continue;
        }
        char ch[16], dr[16];
        snprintf(ch, sizeof ch, "RB%d", sp[r->index].split);
        snprintf(dr, sizeof dr, "D_r=%d", sp[r->index].d_r);
        fprintf(out, "%-8s %-8s %-10s %-10s %10.2f %10.2f %10.0f %7.1fx %7.1fx\n", c->nets[k].name,
                t ? "energy" : "latency", ch, dr, r->best.latency_ms, r->best.energy_mj, sp[r->index].bytes,
                r->latency_ratio, r->energy_ratio);
      }
    }
    fflush(out);
  }
  char *svg[BF_SEARCH_N_FIGS] = {0};
  if (!rc) rc = bf_search_plot(c, s, sp, (const bf_sel_row(*)[2])rows, svg);
  if (!rc) rc = write_html(c, s, sp, (const bf_sel_row(*)[2])rows, (const char *const *)svg);
  for (int f = 0; f < BF_SEARCH_N_FIGS; f++) free(svg[f]);
  free(sp);
  free(rows);
  return rc;
}
