/* bf-serve's library half: a TCP server for the server halves of every split
 * in a deploy directory (and the whole model, for the cloud-only baseline).
 *
 * Threads: one listener (accept + reaping), one reader thread per connection
 * (frames with idle/frame timeouts), a fixed pool of workers fed by a bounded
 * queue that forms batches (batcher.h). Each worker owns a backend context of threads / workers threads and
 * its own engines, so workers compute in parallel without a lock and all of
 * them together use at most `threads` compute threads. STATUS reports the
 * queue depth, an EWMA of the service time and a load factor (observed /
 * profiled compute time, both on the worker's own context). */
#ifndef BF_SERVER_H
#define BF_SERVER_H

struct bf_tls_ctx;

typedef struct bf_server_opts {
  const char *deploy;
  const char *host;
  int port;              /* 0: any free port */
  const char *port_file; /* written (atomically) with the bound port */
  const char *backend;
  int threads;          /* compute threads in all (0: all cores) */
  int workers;          /* compute workers, threads / workers each; default 1 */
  int max_conns;        /* default 256 */
  int max_conns_per_peer; /* per client address; default 64, 0: no cap */
  int evict_idle_ms;    /* at max_conns, a connection idle this long is closed for a new one; default 1000, 0: never */
  int queue_cap;        /* default 128 */
  int max_batch;        /* INFER requests of one model run as one batch, up to this; default 8 (1: off) */
  double batch_window_ms; /* ... that arrive within this of the first; default 2 (0: off); batcher.h */
  int idle_timeout_ms;  /* wait for a frame's first byte; default 60000 */
  int frame_timeout_ms; /* rest of a frame; default 10000 */
  int max_image_side;   /* INFER_IMAGE cap: manifests' input size (fixed) */
  long max_requests;    /* stop after this many inference replies (0: never) */
  double exit_after_sec;/* stop after this long (0: never) */
  double simulate_load; /* test knob: compute takes this factor longer (>= 1) */
  long simulate_load_after; /* ... once this many requests were served */
  int verbose;
  const struct bf_tls_ctx *tls; /* NULL: plain TCP; else every connection is TLS (tls.h) */
} bf_server_opts;

void bf_server_opts_init(bf_server_opts *o);
/* Runs until a stop request, max_requests or exit_after_sec. Returns 0 after
 * a clean shutdown or a BF_E* code if it could not start. */
int bf_server_run(const bf_server_opts *o);
/* Async-signal-safe: asks a running server to stop. */
void bf_server_request_stop(void);

#endif
