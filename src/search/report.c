/* Selection phase outputs: selection.json, report.md (Table IV and Table V
 * layouts), the printed selection table, accuracy_vs_dr.{csv,png}. */
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
    sp[i] = (bf_sel_profile){p->split, p->d_r, p->top1, p->device_ms, p->server_ms, (double)p->frame_bytes};
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
  cJSON_AddNumberToObject(root, "input_size", s->input_size);
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
    cJSON_AddNumberToObject(pr, "input_size", s->input_size);
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
    fprintf(md, "Baseline top-1 %.2f%%, target %.2f%%. Input %dx%d (cloud-only upload %.0f B). "
                "P_mobile %.0f mW, K_mobile %.2f, K_cloud %.2f. CPU backend, device %d / server %d threads, "
                "median of %d runs.\n\n",
            100 * s->baseline_top1, 100 * s->target_top1, s->input_size, s->input_size, s->input_bytes,
            c->load.p_mobile_mw, c->load.k_mobile, c->load.k_cloud, c->device_threads, c->server_threads,
            c->prof_runs);
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
    fprintf(md, "%s\n\nAccuracy vs D_r (Fig. 7 analogue): accuracy_vs_dr.png, accuracy_vs_dr.csv.\n",
            any ? "" : " none");
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
  if (!rc) {
    char png[BF_TRAIN_PATH_MAX + 64], csv[BF_TRAIN_PATH_MAX + 64];
    snprintf(png, sizeof png, "%s/accuracy_vs_dr.png", c->dir);
    snprintf(csv, sizeof csv, "%s/accuracy_vs_dr.csv", c->dir);
    rc = bf_search_plot(png, csv, s);
  }
  free(sp);
  free(rows);
  return rc;
}
