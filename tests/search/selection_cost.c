/* The selection's cost model (selection.h) on the command line, so that a
 * bench compares a measured latency with the very formula and Table III
 * figures the search selects with (bench/uplink_bench.sh):
 *   search_selcost rate NETWORK                            t_u in Mbit/s
 *   search_selcost split NETWORK TM_MS TC_MS BYTES         partition cost
 *   search_selcost cloud NETWORK INPUT_BYTES TC_FULL_MS    cloud-only cost
 * NETWORK: 3g, 4g, wifi. No load (K_mobile = K_cloud = 0). Prints
 * "latency_ms=.. tm_ms=.. tu_ms=.. tc_ms=..". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "selection.h"

static int number(const char *what, const char *s, double *out) {
  char *end;
  *out = strtod(s, &end);
  if (end == s || *end || !(*out >= 0)) {
    fprintf(stderr, "search_selcost: error: %s '%s' is not a number >= 0\n", what, s);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  bf_sel_network net;
  if (argc < 3 || bf_sel_network_builtin(argv[2], &net)) {
    if (argc >= 3) fprintf(stderr, "search_selcost: error: %s\n", bf_last_error());
    fprintf(stderr, "usage: search_selcost rate|split|cloud NETWORK ...\n");
    return 2;
  }
  bf_sel_load load = {0}; /* no load: K_mobile = K_cloud = 0 */
  bf_sel_cost c;
  if (!strcmp(argv[1], "rate") && argc == 3) {
    printf("%g\n", net.tu_mbps);
    return 0;
  } else if (!strcmp(argv[1], "split") && argc == 6) {
    bf_sel_profile p = {0};
    if (number("TM_MS", argv[3], &p.tm_ms) || number("TC_MS", argv[4], &p.tc_ms) ||
        number("BYTES", argv[5], &p.bytes))
      return 2;
    bf_sel_cost_of(&p, &net, &load, &c);
  } else if (!strcmp(argv[1], "cloud") && argc == 5) {
    double in, tc;
    if (number("INPUT_BYTES", argv[3], &in) || number("TC_FULL_MS", argv[4], &tc)) return 2;
    bf_sel_cloud_only(in, tc, &net, &load, &c);
  } else {
    fprintf(stderr, "usage: search_selcost rate NETWORK | split NETWORK TM_MS TC_MS BYTES | "
                    "cloud NETWORK INPUT_BYTES TC_FULL_MS\n");
    return 2;
  }
  printf("latency_ms=%.3f tm_ms=%.3f tu_ms=%.3f tc_ms=%.3f\n", c.latency_ms, c.tm_ms, c.tu_ms, c.tc_ms);
  return 0;
}
