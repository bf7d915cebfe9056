/* bf-serve: serves the server halves of a deploy directory over TCP. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_core.h"
#include "cli_common.h"
#include "net.h"
#include "server.h"

static void usage(void) {
  printf("usage: bf-serve --deploy DEPLOY --listen HOST:PORT [options]\n"
         "\n"
         "Serves every split in DEPLOY (INFER: features -> top-5; INFER_IMAGE: whole model,\n"
         "the cloud-only baseline; STATUS: load). Protocol: docs/protocol.md. PORT 0 picks a\n"
         "free port (printed, and written to --port-file). SIGTERM/SIGINT stop it cleanly.\n"
         "\n"
         "  --backend cpu|cuda        compute backend (default cpu)\n"
         "  --threads N               compute threads in all (default: all cores)\n"
         "  --workers N               compute workers, each with its own backend context\n"
         "                            of threads/N threads (default 1; N <= threads)\n"
         "  --max-conns N             concurrent connections (default 256)\n"
         "  --max-conns-per-peer N    concurrent connections from one address (default 64;\n"
         "                            0: no cap)\n"
         "  --evict-idle-ms MS        with --max-conns reached, a new connection evicts the\n"
         "                            one idle the longest if idle >= MS (default 1000; 0: never)\n"
         "  --queue N                 queued requests before BUSY (default 128)\n"
         "  --idle-timeout-ms MS      wait for a request on a connection (default 60000)\n"
         "  --frame-timeout-ms MS     complete a started frame (default 10000)\n"
         "  --port-file FILE          write the bound port here\n"
         "  --max-requests N          exit after N inference replies\n"
         "  --exit-after-sec S        exit after S seconds\n"
         "  --simulate-load F         test knob: compute takes F times longer (load)\n"
         "  --simulate-load-after N   ... only after N requests were served\n"
         "  --verbose                 log rejected frames\n"
         "\n"
         "Idle OpenMP threads sleep (OMP_WAIT_POLICY=passive): a server waits for requests\n"
         "most of the time and shares its cores. An explicit OMP_WAIT_POLICY is respected.\n");
}

/* A server is idle between requests; OpenMP's default (spinning threads)
 * would burn cores that a co-located client or other server needs. The
 * policy must be in the environment before the OpenMP runtime initialises,
 * and libgomp reads it in a load-time constructor, before main: a setenv
 * here would come too late, so the process re-executes itself once with the
 * variable set. A user's own OMP_WAIT_POLICY is left as it is; if the
 * re-exec fails, the server runs on with the runtime's default and says so. */
static void ensure_passive_wait(char **argv) {
  if (getenv("OMP_WAIT_POLICY")) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);
  fprintf(stderr, "bf-serve: warning: could not re-execute with OMP_WAIT_POLICY=passive (%s); idle threads may spin\n",
          strerror(errno));
}

static void on_signal(int sig) {
  (void)sig;
  bf_server_request_stop();
}

int main(int argc, char **argv) {
  cli_prog = "bf-serve";
  ensure_passive_wait(argv);
  bf_server_opts o;
  bf_server_opts_init(&o);
  const char *listen = NULL;
  char host[256];
  int rc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    long x;
    double d;
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage();
      return 0;
    } else if (cli_is(a, "--deploy")) {
      if ((rc = cli_value(argc, argv, &i, &o.deploy))) return rc;
    } else if (cli_is(a, "--listen")) {
      if ((rc = cli_value(argc, argv, &i, &listen))) return rc;
    } else if (cli_is(a, "--backend")) {
      if ((rc = cli_value(argc, argv, &i, &o.backend))) return rc;
    } else if (cli_is(a, "--port-file")) {
      if ((rc = cli_value(argc, argv, &i, &o.port_file))) return rc;
    } else if (cli_is(a, "--threads")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1024, &x))) return rc;
      o.threads = (int)x;
    } else if (cli_is(a, "--workers")) {
      if ((rc = cli_int(argc, argv, &i, 1, 64, &x))) return rc;
      o.workers = (int)x;
    } else if (cli_is(a, "--max-conns")) {
      if ((rc = cli_int(argc, argv, &i, 1, 4096, &x))) return rc;
      o.max_conns = (int)x;
    } else if (cli_is(a, "--max-conns-per-peer")) {
      if ((rc = cli_int(argc, argv, &i, 0, 4096, &x))) return rc;
      o.max_conns_per_peer = (int)x;
    } else if (cli_is(a, "--evict-idle-ms")) {
      if ((rc = cli_int(argc, argv, &i, 0, 3600000, &x))) return rc;
      o.evict_idle_ms = (int)x;
    } else if (cli_is(a, "--queue")) {
      if ((rc = cli_int(argc, argv, &i, 1, 100000, &x))) return rc;
      o.queue_cap = (int)x;
    } else if (cli_is(a, "--idle-timeout-ms")) {
      if ((rc = cli_int(argc, argv, &i, 10, 3600000, &x))) return rc;
      o.idle_timeout_ms = (int)x;
    } else if (cli_is(a, "--frame-timeout-ms")) {
      if ((rc = cli_int(argc, argv, &i, 10, 3600000, &x))) return rc;
      o.frame_timeout_ms = (int)x;
    } else if (cli_is(a, "--max-requests")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1000000000L, &x))) return rc;
      o.max_requests = x;
    } else if (cli_is(a, "--exit-after-sec")) {
      if ((rc = cli_float(argc, argv, &i, 0, 1e7, &d))) return rc;
      o.exit_after_sec = d;
    } else if (cli_is(a, "--simulate-load")) {
      if ((rc = cli_float(argc, argv, &i, 1, 1000, &d))) return rc;
      o.simulate_load = d;
    } else if (cli_is(a, "--simulate-load-after")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1000000000L, &x))) return rc;
      o.simulate_load_after = x;
    } else if (cli_flag(a, "--verbose")) {
      o.verbose = 1;
    } else {
      return cli_fail("unknown argument '%s' (see --help)", a);
    }
  }
  if (!o.deploy || !listen) return cli_fail("--deploy and --listen are required (see --help)");
  if (bf_net_parse_addr(listen, host, sizeof host, &o.port)) return cli_fail_bf("--listen");
  o.host = host;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (bf_server_run(&o)) return cli_fail_bf(NULL);
  return 0;
}
