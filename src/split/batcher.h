/* bf-serve's request queue with dynamic batching.
 *
 * Connection threads push requests; compute workers take them as batches:
 * requests with the same key (the same server half) that arrive within a
 * window of the first one's arrival, up to max_batch, run as one engine call.
 *
 * Policy (why a lone request does not wait): each open connection has at most
 * one request queued or running (the protocol is request/reply per
 * connection). A worker forming a batch waits for more only while some open
 * connection has none, i.e. could still send one; with every connection
 * already accounted for (a lone client, or all clients' requests in hand) the
 * batch closes at once. So the window costs a lone client nothing, and at
 * most `window` when other connections are open but quiet.
 *
 * One worker forms a batch of a key at a time; other workers take requests of
 * other keys meanwhile. Items that may not be batched (the whole-model
 * INFER_IMAGE path) always run alone. */
#ifndef BF_BATCHER_H
#define BF_BATCHER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define BF_BATCH_MAX 64

typedef struct bf_batch_item {
  struct bf_batch_item *next;
  int key;       /* >= 0; items with equal keys may share a batch */
  int batchable; /* 0: always a batch of its own */
  double t_enq;  /* set by bf_batcher_push (bf_now_sec) */
} bf_batch_item;

typedef struct bf_batcher {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bf_batch_item *head, *tail;
  int queued, running, cap;
  int max_batch;
  double window_s;
  int sources; /* open connections: each may add one request */
  int stop;
  int n_workers;
  int *forming; /* [n_workers]: key being gathered, -1 none */
  uint64_t batches, requests, hist[BF_BATCH_MAX + 1];
} bf_batcher;

/* cap: queued requests before BUSY; max_batch 1..BF_BATCH_MAX (1: no
 * batching); window_ms >= 0. */
int bf_batcher_init(bf_batcher *b, int cap, int max_batch, double window_ms, int n_workers);
void bf_batcher_destroy(bf_batcher *b);
/* Queues an item. Returns 0, BF_PERR_SHUTDOWN or BF_PERR_BUSY (queue full). */
int bf_batcher_push(bf_batcher *b, bf_batch_item *it);
/* Blocks until worker `worker` has a batch; fills items[0..n) (all the same
 * key, in arrival order) and returns n >= 1, or 0 once stopped with nothing
 * left queued. The items count as running until bf_batcher_done. */
int bf_batcher_next(bf_batcher *b, int worker, bf_batch_item **items);
void bf_batcher_done(bf_batcher *b, int n);
/* A connection opened (+1) or closed (-1). */
void bf_batcher_sources(bf_batcher *b, int delta);
/* Wakes all workers; queued items are still handed out, then next returns 0. */
void bf_batcher_stop(bf_batcher *b);
/* Requests queued + running. */
int bf_batcher_depth(bf_batcher *b);
/* 1 if a push would get BF_PERR_BUSY now. */
int bf_batcher_full(bf_batcher *b);
/* "N requests in B batches, mean M, largest L, sizes 1:x 2:y ..." */
void bf_batcher_summary(bf_batcher *b, char *buf, size_t cap);

#endif
