/* Selection phase: cost model and argmin (selection.h, docs/search.md). */
#include "selection.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bf_core.h"

static const bf_sel_network builtin[] = {
    {"3g", 1.1, 868.98, 817.88},
    {"4g", 5.85, 438.39, 1288.04},
    {"wifi", 18.88, 283.17, 132.86},
};

int bf_sel_network_builtin(const char *name, bf_sel_network *out) {
  const char *n = name;
  if (!strcasecmp(n, "wi-fi")) n = "wifi";
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
    if (!strcasecmp(n, builtin[i].name)) {
      *out = builtin[i];
      return 0;
    }
  return bf_error(BF_EINVAL, "unknown network '%s' (known: 3g, 4g, wifi)", name);
}

int bf_sel_network_parse(const char *spec, bf_sel_network *out) {
  const char *c1 = strchr(spec, ':');
  if (!c1) return bf_sel_network_builtin(spec, out);
  memset(out, 0, sizeof *out);
  size_t nl = (size_t)(c1 - spec);
  if (nl == 0 || nl >= sizeof out->name)
    return bf_error(BF_EINVAL, "network '%s': name of 1..%zu characters before the first ':'", spec,
                    sizeof out->name - 1);
  memcpy(out->name, spec, nl);
  double v[3];
  const char *p = c1 + 1;
  for (int i = 0; i < 3; i++) {
    char *end;
    v[i] = strtod(p, &end);
    if (end == p || (i < 2 ? *end != ':' : *end != 0))
      return bf_error(BF_EINVAL, "network '%s': not NAME:T_U_MBPS:ALPHA_MW_PER_MBPS:BETA_MW", spec);
    p = end + 1;
  }
  out->tu_mbps = v[0];
  out->alpha_mw = v[1];
  out->beta_mw = v[2];
  if (!(v[0] > 0) || !isfinite(v[0]) || !(v[1] >= 0) || !isfinite(v[1]) || !(v[2] >= 0) || !isfinite(v[2]))
    return bf_error(BF_EINVAL, "network '%s': t_u must be > 0, alpha_u and beta >= 0 (finite)", spec);
  return 0;
}

int bf_sel_check(const bf_sel_network *net, const bf_sel_load *load) {
  if (!(net->tu_mbps > 0) || !isfinite(net->tu_mbps))
    return bf_error(BF_EINVAL, "network %s: t_u must be > 0 Mbps", net->name);
  if (!(net->alpha_mw >= 0) || !(net->beta_mw >= 0))
    return bf_error(BF_EINVAL, "network %s: alpha_u and beta must be >= 0", net->name);
  if (!(load->p_mobile_mw >= 0)) return bf_error(BF_EINVAL, "select.p_mobile_mw must be >= 0");
  if (!(load->k_mobile >= 0 && load->k_mobile < 1)) return bf_error(BF_EINVAL, "select.k_mobile must be in [0, 1)");
  if (!(load->k_cloud >= 0 && load->k_cloud < 1)) return bf_error(BF_EINVAL, "select.k_cloud must be in [0, 1)");
  return 0;
}

double bf_sel_uplink_power(const bf_sel_network *net) { return net->alpha_mw * net->tu_mbps + net->beta_mw; }

static double upload_ms(double bytes, const bf_sel_network *net) { return bytes * 8.0 / (net->tu_mbps * 1e6) * 1e3; }

/* p_mw: the device's compute power (measured, else select.p_mobile_mw) */
static void finish(bf_sel_cost *c, double p_mw) {
  c->latency_ms = c->tm_ms + c->tu_ms + c->tc_ms;
  c->energy_mj = (c->tm_ms * p_mw + c->tu_ms * c->pu_mw) / 1000.0;
}

void bf_sel_cost_of(const bf_sel_profile *p, const bf_sel_network *net, const bf_sel_load *load, bf_sel_cost *c) {
  c->tm_ms = p->tm_ms / (1.0 - load->k_mobile);
  c->tc_ms = p->tc_ms / (1.0 - load->k_cloud);
  c->tu_ms = upload_ms(p->bytes, net);
  c->pu_mw = bf_sel_uplink_power(net);
  finish(c, p->p_mw > 0 ? p->p_mw : load->p_mobile_mw);
}

int bf_sel_argmin(const bf_sel_profile *p, int n, const bf_sel_network *net, const bf_sel_load *load,
                  bf_sel_target target) {
  int best = -1;
  double bv = 0;
  for (int i = 0; i < n; i++) {
    bf_sel_cost c;
    bf_sel_cost_of(&p[i], net, load, &c);
    double v = target == BF_SEL_ENERGY ? c.energy_mj : c.latency_ms;
    if (best < 0 || v < bv) {
      best = i;
      bv = v;
    }
  }
  return best;
}

void bf_sel_cloud_only(double input_bytes, double tc_full_ms, const bf_sel_network *net, const bf_sel_load *load,
                       bf_sel_cost *c) {
  c->tm_ms = 0;
  c->tc_ms = tc_full_ms / (1.0 - load->k_cloud);
  c->tu_ms = upload_ms(input_bytes, net);
  c->pu_mw = bf_sel_uplink_power(net);
  finish(c, load->p_mobile_mw); /* TM = 0: no device compute */
}

void bf_sel_mobile_only(double tm_full_ms, const bf_sel_load *load, bf_sel_cost *c) {
  c->tm_ms = tm_full_ms / (1.0 - load->k_mobile);
  c->tc_ms = 0;
  c->tu_ms = 0;
  c->pu_mw = 0;
  finish(c, load->p_full_mw > 0 ? load->p_full_mw : load->p_mobile_mw);
}

void bf_sel_row_compute(const bf_sel_profile *p, int n, const bf_sel_network *net, const bf_sel_load *load,
                        bf_sel_target target, double input_bytes, double tc_full_ms, double tm_full_ms,
                        bf_sel_row *row) {
  memset(row, 0, sizeof *row);
  row->index = bf_sel_argmin(p, n, net, load, target);
  bf_sel_cloud_only(input_bytes, tc_full_ms, net, load, &row->cloud);
  bf_sel_mobile_only(tm_full_ms, load, &row->mobile);
  if (row->index >= 0) {
    bf_sel_cost_of(&p[row->index], net, load, &row->best);
    row->latency_ratio = row->best.latency_ms > 0 ? row->cloud.latency_ms / row->best.latency_ms : 0;
    row->energy_ratio = row->best.energy_mj > 0 ? row->cloud.energy_mj / row->best.energy_mj : 0;
  }
}
