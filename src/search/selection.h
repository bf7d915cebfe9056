/* Selection phase of the split search (paper, Algorithm 1, lines 35-41):
 * pure functions over profiled partitions, wireless networks (Table III) and
 * load levels.
 *
 * Cost model (docs/search.md):
 *   TM' = TM / (1 - K_mobile), TC' = TC / (1 - K_cloud)      (load, K in [0, 1))
 *   TU  = F * 8 / (t_u * 1e6) s                               (F bytes per image)
 *   latency = TM' + TU + TC'
 *   energy  = TM' * P_mobile + TU * PU,  PU = alpha_u * t_u + beta   (mW)
 * Times are in ms, powers in mW, energies in mJ (ms * mW / 1000). */
#ifndef BF_SEARCH_SELECTION_H
#define BF_SEARCH_SELECTION_H

#include <stddef.h>

typedef struct bf_sel_profile {
  int split, d_r;  /* butterfly after RB<split> with D_r channels */
  double accuracy; /* test top-1, 0..1 */
  double tm_ms;    /* device half: stem..RBk + reduction + quantisation */
  double tc_ms;    /* server half: restoration..classifier */
  double bytes;    /* F: bytes uploaded per image */
  double p_mw;     /* device power while its half runs, mW, where measured
                      (energy / time, bf-profile with RAPL); 0: load->p_mobile_mw */
} bf_sel_profile;

typedef struct bf_sel_network {
  char name[32];
  double tu_mbps;   /* uplink throughput t_u */
  double alpha_mw;  /* alpha_u, mW per Mbps */
  double beta_mw;   /* beta, mW */
} bf_sel_network;

typedef struct bf_sel_load {
  double p_mobile_mw; /* device compute power */
  double k_mobile, k_cloud;
  double p_full_mw;   /* device power running the whole model (mobile-only),
                         where measured; 0: p_mobile_mw */
} bf_sel_load;

typedef enum { BF_SEL_LATENCY = 0, BF_SEL_ENERGY = 1 } bf_sel_target;

typedef struct bf_sel_cost {
  double tm_ms, tu_ms, tc_ms; /* load-scaled */
  double latency_ms, energy_mj;
  double pu_mw;
} bf_sel_cost;

/* Table III: "3g", "4g", "wifi" (case-insensitive; "wi-fi" too). */
int bf_sel_network_builtin(const char *name, bf_sel_network *out);
/* A Table III name, or user figures "NAME:T_U_MBPS:ALPHA_MW_PER_MBPS:BETA_MW"
 * (e.g. "lab-wifi:42:283.17:132.86"); checked as bf_sel_check does. */
int bf_sel_network_parse(const char *spec, bf_sel_network *out);
/* Checks a network and load (t_u > 0, alpha/beta >= 0, P >= 0, K in [0, 1)). */
int bf_sel_check(const bf_sel_network *net, const bf_sel_load *load);
/* PU = alpha_u * t_u + beta. */
double bf_sel_uplink_power(const bf_sel_network *net);
/* Cost of one partition. */
void bf_sel_cost_of(const bf_sel_profile *p, const bf_sel_network *net, const bf_sel_load *load, bf_sel_cost *c);
/* Index of the partition with the least latency or energy (ties: the first
 * in array order); -1 if n == 0. */
int bf_sel_argmin(const bf_sel_profile *p, int n, const bf_sel_network *net, const bf_sel_load *load,
                  bf_sel_target target);

/* Cloud-only: the raw input (input_bytes, e.g. 224*224*3 = 150528) uploaded,
 * the whole model on the server (tc_full_ms), TM = 0.
 * Mobile-only: the whole model on the device (tm_full_ms), nothing uploaded. */
void bf_sel_cloud_only(double input_bytes, double tc_full_ms, const bf_sel_network *net, const bf_sel_load *load,
                       bf_sel_cost *c);
void bf_sel_mobile_only(double tm_full_ms, const bf_sel_load *load, bf_sel_cost *c);

/* One row of Table V for a network and target. */
typedef struct bf_sel_row {
  int index;                 /* chosen partition, -1 if none */
  bf_sel_cost best;          /* its cost */
  bf_sel_cost cloud, mobile; /* cloud-only and mobile-only */
  double latency_ratio;      /* cloud-only latency / chosen latency */
  double energy_ratio;       /* cloud-only energy / chosen energy */
} bf_sel_row;

void bf_sel_row_compute(const bf_sel_profile *p, int n, const bf_sel_network *net, const bf_sel_load *load,
                        bf_sel_target target, double input_bytes, double tc_full_ms, double tm_full_ms,
                        bf_sel_row *row);

#endif
