/* bf-serve: serves the server halves of a deploy directory over TCP. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batcher.h"
#include "bf_core.h"
#include "cli_common.h"
#include "net.h"
#include "server.h"
#include "split.h"
#include "tls.h"

/* libgomp spin iterations before an idle worker sleeps (ensure_passive_wait) */
#define SERVE_SPINCOUNT "1000"

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
         "  --max-batch N             run up to N INFER requests for the same split as one\n"
         "                            batch (default 8; 1 turns batching off)\n"
         "  --batch-window-ms MS      ... those arriving within MS of the first (default 2;\n"
         "                            0 turns batching off). A batch closes early once every\n"
         "                            open connection has a request in it or queued, so a\n"
         "                            lone client never waits. INFER_IMAGE is not batched.\n"
         "  --idle-timeout-ms MS      wait for a request on a connection (default 60000)\n"
         "  --frame-timeout-ms MS     complete a started frame (default 10000)\n"
         "  --port-file FILE          write the bound port here\n"
         "  --max-requests N          exit after N inference replies\n"
         "  --exit-after-sec S        exit after S seconds\n"
         "  --simulate-load F         test knob: compute takes F times longer (load)\n"
         "  --simulate-load-after N   ... only after N requests were served\n"
         "  --verbose                 log rejected frames and failed TLS handshakes\n"
         "TLS 1.3 (docs/security.md):\n"
         "  --tls-cert FILE --tls-key FILE   serve TLS with this certificate chain and key (PEM)\n"
         "  --tls-client-ca FILE      mutual TLS: clients must present a certificate issued by\n"
         "                            a CA in FILE\n"
         "  --tls-allow FILE          which client certificate may use which split: lines of\n"
         "                            'cn:NAME SPLITS' or 'sha256:FINGERPRINT SPLITS', SPLITS\n"
         "                            a comma list of split numbers or '*' (needs --tls-client-ca)\n"
         "  --insecure                allow plain TCP on a non-loopback address\n"
         "                            (without TLS a plain listener must be on 127.0.0.0/8)\n"
         "\n"
         "Idle OpenMP threads sleep (OMP_WAIT_POLICY=passive) after a short spin\n"
         "(GOMP_SPINCOUNT=" SERVE_SPINCOUNT "): a server waits for requests most of the time and\n"
         "shares its cores. An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT is respected.\n");
}

/* A server is idle between requests; OpenMP's default (threads spinning for
 * milliseconds) would burn cores that a co-located client or other server
 * needs, so idle threads sleep (passive). But an inference runs dozens of
 * parallel regions back to back, microseconds apart: a worker that sleeps
 * between two of them must be woken (a futex and a reschedule) at every
 * conv, which cost the server half 10% at batch 1 (docs/benchmarks.md). So
 * the workers spin GOMP_SPINCOUNT iterations first (libgomp counts about 100
 * per microsecond): long enough to span the gap between two convs, too short
 * to matter to an idle server or, on an oversubscribed machine, to hold a core
 * its peer thread needs (SERVE_SPINCOUNT). The policy must be in the
 * environment before the OpenMP runtime initialises, and libgomp reads it in a
 * load-time constructor, before main: a setenv here would come too late, so
 * the process re-executes itself once with the variables set. A user's own
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT is left as it is; if the re-exec fails,
 * the server runs on with the runtime's default and says so. */
static void ensure_passive_wait(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0 || setenv("GOMP_SPINCOUNT", SERVE_SPINCOUNT, 1) != 0) return;
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
  const char *tls_cert = NULL, *tls_key = NULL, *tls_client_ca = NULL, *tls_allow = NULL;
  int insecure = 0;
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
    } else if (cli_is(a, "--max-batch")) {
      if ((rc = cli_int(argc, argv, &i, 1, BF_BATCH_MAX, &x))) return rc;
      o.max_batch = (int)x;
    } else if (cli_is(a, "--batch-window-ms")) {
      if ((rc = cli_float(argc, argv, &i, 0, 10000, &d))) return rc;
      o.batch_window_ms = d;
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
    } else if (cli_is(a, "--tls-cert")) {
      if ((rc = cli_value(argc, argv, &i, &tls_cert))) return rc;
    } else if (cli_is(a, "--tls-key")) {
      if ((rc = cli_value(argc, argv, &i, &tls_key))) return rc;
    } else if (cli_is(a, "--tls-client-ca")) {
      if ((rc = cli_value(argc, argv, &i, &tls_client_ca))) return rc;
    } else if (cli_is(a, "--tls-allow")) {
      if ((rc = cli_value(argc, argv, &i, &tls_allow))) return rc;
    } else if (cli_flag(a, "--insecure")) {
      insecure = 1;
    } else {
      return cli_fail("unknown argument '%s' (see --help)", a);
    }
  }
  if (!o.deploy || !listen) return cli_fail("--deploy and --listen are required (see --help)");
  if (bf_net_parse_addr(listen, host, sizeof host, &o.port)) return cli_fail_bf("--listen");
  o.host = host;
  int use_tls = tls_cert || tls_key || tls_client_ca || tls_allow;
  if (use_tls && (!tls_cert || !tls_key)) return cli_fail("TLS needs both --tls-cert and --tls-key");
  if (tls_allow && !tls_client_ca)
    return cli_fail("--tls-allow names client certificates: it needs --tls-client-ca (mutual TLS)");
  int loopback = 0;
  if (bf_net_is_loopback(host, &loopback)) return cli_fail_bf("--listen");
  if (!use_tls && !loopback && !insecure)
    return cli_fail("refusing to listen on %s without TLS: it is not a loopback address, and in plain TCP "
                    "anyone on the network path can read the uploaded features (which can be inverted to "
                    "approximate the image), alter the results, and any peer can use the models. Give "
                    "--tls-cert and --tls-key (docs/security.md), or --insecure to serve plain TCP anyway",
                    listen);
  bf_tls_ctx *tls = NULL;
  if (use_tls) {
    if (bf_tls_server_new(&tls, tls_cert, tls_key, tls_client_ca, tls_allow)) return cli_fail_bf(NULL);
    if (tls_allow) { /* every split the allow list names must be served */
      bf_deploy dep;
      if (bf_deploy_open(&dep, o.deploy)) {
        rc = cli_fail_bf(NULL);
        bf_tls_free(tls);
        return rc;
      }
      int splits[256], n = 0;
      for (int k = 0; k < dep.n && n < 256; k++) splits[n++] = dep.splits[k].split_after;
      rc = bf_tls_check_splits(tls, splits, n);
      bf_deploy_close(&dep);
      if (rc) {
        rc = cli_fail_bf("--tls-allow");
        bf_tls_free(tls);
        return rc;
      }
    }
    o.tls = tls;
  } else if (!loopback) {
    fprintf(stderr, "bf-serve: warning: --insecure: plain TCP on %s, features and results cross the network "
                    "in clear text\n", listen);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  rc = bf_server_run(&o) ? cli_fail_bf(NULL) : 0;
  bf_tls_free(tls);
  return rc;
}
