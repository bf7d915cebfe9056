/* Selection phase (src/search/selection.c) against hand-computed costs.
 *
 * Three partitions, P_mobile = 2000 mW:
 *   A: RB1,  TM 1 ms,  TC 10 ms, F 3000 B
 *   B: RB8,  TM 10 ms, TC 4 ms,  F 500 B
 *   C: RB14, TM 30 ms, TC 1 ms,  F 100 B
 * 3G: ms per byte = 8 / 1.1e6 * 1e3 = 0.0072727, PU = 868.98 * 1.1 + 817.88 = 1773.758 mW
 *   A: TU 21.818, latency 32.818, energy (1*2000 + 21.818*1773.758)/1000 = 40.700
 *   B: TU  3.636, latency 17.636, energy 20 + 6.450 = 26.450   <- both targets
 *   C: TU  0.727, latency 31.727, energy 60 + 1.290 = 61.290
 * 4G: PU = 438.39 * 5.85 + 1288.04 = 3852.62 mW
 *   A: latency 15.103, energy 17.806   <- energy
 *   B: latency 14.684, energy 22.634   <- latency
 * Wi-Fi: PU = 283.17 * 18.88 + 132.86 = 5479.11 mW
 *   A: latency 12.271, energy 8.965    <- both
 * Cloud-only (150528 B, TC_full 5 ms), 3G: TU 1094.749, latency 1099.749, energy 1941.820.
 * Mobile-only (TM_full 40 ms): latency 40, energy 80. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bf_core.h"
#include "selection.h"

static int failures;
#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                   \
    }                                                               \
  } while (0)
#define NEAR(a, b, tol) CHECK(fabs((a) - (b)) <= (tol))

static const bf_sel_profile P[3] = {
    {1, 1, 0.75, 1, 10, 3000, 0},
    {8, 5, 0.75, 10, 4, 500, 0},
    {14, 10, 0.75, 30, 1, 100, 0},
};

static int pick(const char *net, double km, double kc, bf_sel_target t) {
  bf_sel_network n;
  CHECK(bf_sel_network_builtin(net, &n) == 0);
  bf_sel_load l = {2000, km, kc, 0};
  CHECK(bf_sel_check(&n, &l) == 0);
  return bf_sel_argmin(P, 3, &n, &l, t);
}

int main(void) {
  bf_sel_network g3, g4, wf;
  CHECK(bf_sel_network_builtin("3g", &g3) == 0);
  CHECK(bf_sel_network_builtin("4G", &g4) == 0);
  CHECK(bf_sel_network_builtin("Wi-Fi", &wf) == 0);
  NEAR(bf_sel_uplink_power(&g3), 1773.758, 1e-6);
  NEAR(bf_sel_uplink_power(&g4), 3852.6215, 1e-6);
  NEAR(bf_sel_uplink_power(&wf), 5479.1096, 1e-6);

  bf_sel_load idle = {2000, 0, 0, 0};
  bf_sel_cost c;
  bf_sel_cost_of(&P[0], &g3, &idle, &c);
  NEAR(c.tu_ms, 21.8182, 1e-3);
  NEAR(c.latency_ms, 32.8182, 1e-3);
  NEAR(c.energy_mj, 40.7002, 1e-3);
  bf_sel_cost_of(&P[1], &g3, &idle, &c);
  NEAR(c.latency_ms, 17.6364, 1e-3);
  NEAR(c.energy_mj, 26.4500, 1e-3);
  bf_sel_cost_of(&P[1], &g4, &idle, &c);
  NEAR(c.latency_ms, 14.6838, 1e-3);
  NEAR(c.energy_mj, 22.6343, 1e-3);
  bf_sel_cost_of(&P[0], &wf, &idle, &c);
  NEAR(c.latency_ms, 12.2712, 1e-3);
  NEAR(c.energy_mj, 8.9650, 1e-3);

  /* argmins, no load */
  CHECK(pick("3g", 0, 0, BF_SEL_LATENCY) == 1);
  CHECK(pick("3g", 0, 0, BF_SEL_ENERGY) == 1);
  CHECK(pick("4g", 0, 0, BF_SEL_LATENCY) == 1);
  CHECK(pick("4g", 0, 0, BF_SEL_ENERGY) == 0);
  CHECK(pick("wifi", 0, 0, BF_SEL_LATENCY) == 0);
  CHECK(pick("wifi", 0, 0, BF_SEL_ENERGY) == 0);

  /* a congested cloud moves the split deeper (more work on the device) */
  CHECK(pick("wifi", 0, 0.8, BF_SEL_LATENCY) == 1);  /* 52.27 30.21 35.04 */
  CHECK(pick("wifi", 0, 0.95, BF_SEL_LATENCY) == 2); /* 202.3 90.2 50.04 */
  CHECK(pick("3g", 0, 0.95, BF_SEL_LATENCY) == 2);   /* 222.8 93.6 50.7 */
  /* a busy device moves it shallower */
  CHECK(pick("3g", 0.8, 0, BF_SEL_LATENCY) == 0);    /* 36.8 57.6 151.7 */
  CHECK(pick("3g", 0.8, 0, BF_SEL_ENERGY) == 0);     /* 48.7 106.5 301.3 */
  CHECK(pick("4g", 0.8, 0, BF_SEL_LATENCY) == 0);

  /* Table V row: cloud-only, mobile-only, ratios */
  bf_sel_row row;
  bf_sel_row_compute(P, 3, &g3, &idle, BF_SEL_LATENCY, 150528, 5, 40, &row);
  CHECK(row.index == 1);
  NEAR(row.cloud.tu_ms, 1094.7491, 1e-3);
  NEAR(row.cloud.latency_ms, 1099.7491, 1e-3);
  NEAR(row.cloud.energy_mj, 1941.8200, 1e-3);
  NEAR(row.mobile.latency_ms, 40, 1e-9);
  NEAR(row.mobile.energy_mj, 80, 1e-9);
  NEAR(row.latency_ratio, 1099.7491 / 17.6364, 1e-2);
  NEAR(row.energy_ratio, 1941.8200 / 26.4500, 1e-2);
  bf_sel_row_compute(P, 0, &g3, &idle, BF_SEL_ENERGY, 150528, 5, 40, &row);
  CHECK(row.index == -1);

  /* measured device power (bf-profile with RAPL) replaces P_mobile for that
   * partition only; the whole model's for mobile-only */
  bf_sel_profile pm = P[0];
  pm.p_mw = 500;
  bf_sel_cost_of(&pm, &g3, &idle, &c);
  NEAR(c.energy_mj, (1 * 500 + 21.8182 * 1773.758) / 1000.0, 1e-3);
  bf_sel_load lf = {2000, 0.5, 0, 1000};
  bf_sel_mobile_only(40, &lf, &c);
  NEAR(c.energy_mj, 80 * 1000 / 1000.0, 1e-9);

  /* user-given network figures */
  bf_sel_network un;
  CHECK(bf_sel_network_parse("lab:42:283.17:132.86", &un) == 0);
  CHECK(!strcmp(un.name, "lab"));
  NEAR(un.tu_mbps, 42, 0);
  NEAR(bf_sel_uplink_power(&un), 283.17 * 42 + 132.86, 1e-9);
  CHECK(bf_sel_network_parse("4g", &un) == 0 && un.tu_mbps == 5.85);
  CHECK(bf_sel_network_parse("lab:0:1:1", &un) == BF_EINVAL);
  CHECK(bf_sel_network_parse("lab:1:-1:1", &un) == BF_EINVAL);
  CHECK(bf_sel_network_parse("lab:1:1", &un) == BF_EINVAL);
  CHECK(strstr(bf_last_error(), "NAME:T_U_MBPS") != NULL);
  CHECK(bf_sel_network_parse(":1:1:1", &un) == BF_EINVAL);
  CHECK(bf_sel_network_parse("lab:nan:1:1", &un) == BF_EINVAL);

  /* bad inputs */
  bf_sel_network x;
  CHECK(bf_sel_network_builtin("5g", &x) == BF_EINVAL);
  CHECK(strstr(bf_last_error(), "5g") != NULL);
  bf_sel_load bad = {2000, 1.0, 0, 0};
  CHECK(bf_sel_check(&g3, &bad) == BF_EINVAL);
  CHECK(strstr(bf_last_error(), "k_mobile") != NULL);
  bad.k_mobile = 0;
  bad.k_cloud = -0.1;
  CHECK(bf_sel_check(&g3, &bad) == BF_EINVAL);

  if (failures) {
    fprintf(stderr, "test_selection: %d failures\n", failures);
    return 1;
  }
  printf("test_selection: ok\n");
  return 0;
}
