#include "batcher.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf_core.h"
#include "frame.h"

int bf_batcher_init(bf_batcher *b, int cap, int max_batch, double window_ms, int n_workers) {
  memset(b, 0, sizeof *b);
  if (cap < 1 || max_batch < 1 || max_batch > BF_BATCH_MAX || !(window_ms >= 0) || n_workers < 1)
    return bf_error(BF_EINVAL, "batcher: queue %d, max batch %d (1..%d), window %g ms, %d workers", cap, max_batch,
                    BF_BATCH_MAX, window_ms, n_workers);
  b->forming = bf_malloc((size_t)n_workers * sizeof *b->forming, "batcher");
  if (!b->forming) return BF_ENOMEM;
  for (int i = 0; i < n_workers; i++) b->forming[i] = -1;
  /* the window is timed on the monotonic clock, like bf_now_sec */
  pthread_condattr_t ca;
  int rc = pthread_condattr_init(&ca);
  if (!rc) rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (!rc) rc = pthread_cond_init(&b->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (!rc) rc = pthread_mutex_init(&b->mu, NULL);
  if (rc) {
    free(b->forming);
    b->forming = NULL;
    return bf_error(BF_EIO, "batcher: cannot initialise its lock (%s)", strerror(rc));
  }
  b->cap = cap;
  b->max_batch = max_batch;
  b->window_s = window_ms * 1e-3;
  b->n_workers = n_workers;
  return BF_OK;
}

void bf_batcher_destroy(bf_batcher *b) {
  if (!b->forming) return;
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
  free(b->forming);
  b->forming = NULL;
}

int bf_batcher_push(bf_batcher *b, bf_batch_item *it) {
  pthread_mutex_lock(&b->mu);
  int rc = b->stop ? BF_PERR_SHUTDOWN : b->queued >= b->cap ? BF_PERR_BUSY : 0;
  if (!rc) {
    it->next = NULL;
    it->t_enq = bf_now_sec();
    if (b->tail) b->tail->next = it;
    else b->head = it;
    b->tail = it;
    b->queued++;
    /* all: the worker gathering this key must hear of it, not just any idle one */
    pthread_cond_broadcast(&b->cv);
  }
  pthread_mutex_unlock(&b->mu);
  return rc;
}

/* Unlinks `it` (prev: its predecessor or NULL) and counts it as running. */
static void take(bf_batcher *b, bf_batch_item *prev, bf_batch_item *it) {
  if (prev) prev->next = it->next;
  else b->head = it->next;
  if (b->tail == it) b->tail = prev;
  it->next = NULL;
  b->queued--;
  b->running++;
}

static int formed_by_other(const bf_batcher *b, int worker, int key) {
  for (int i = 0; i < b->n_workers; i++)
    if (i != worker && b->forming[i] == key) return 1;
  return 0;
}

/* Moves queued batchable items of `key` into items[*n..max_batch). */
static void gather(bf_batcher *b, int key, bf_batch_item **items, int *n) {
  bf_batch_item *prev = NULL, *it = b->head;
  while (it && *n < b->max_batch) {
    bf_batch_item *next = it->next;
    if (it->batchable && it->key == key) {
      take(b, prev, it);
      items[(*n)++] = it;
    } else {
      prev = it;
    }
    it = next;
  }
}

int bf_batcher_next(bf_batcher *b, int worker, bf_batch_item **items) {
  pthread_mutex_lock(&b->mu);
  bf_batch_item *prev, *it;
  for (;;) {
    prev = NULL;
    for (it = b->head; it; prev = it, it = it->next)
      if (!it->batchable || !formed_by_other(b, worker, it->key)) break;
    if (it || (b->stop && !b->head)) break;
    pthread_cond_wait(&b->cv, &b->mu);
  }
  if (!it) {
    pthread_mutex_unlock(&b->mu);
    return 0;
  }
  take(b, prev, it);
  items[0] = it;
  int n = 1;
  if (it->batchable && b->max_batch > 1) {
    b->forming[worker] = it->key;
    gather(b, it->key, items, &n);
    double deadline = it->t_enq + b->window_s;
    /* wait only while another connection could still send a request */
    while (n < b->max_batch && !b->stop && b->sources - b->queued - b->running > 0) {
      double now = bf_now_sec();
      if (now >= deadline) break;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      double rest = deadline - now;
      ts.tv_sec += (time_t)rest;
      ts.tv_nsec += (long)((rest - (double)(time_t)rest) * 1e9);
      if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
      int rc = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
      gather(b, it->key, items, &n);
      if (rc == ETIMEDOUT) break;
    }
    b->forming[worker] = -1;
    /* other workers may have skipped items of this key meanwhile */
    pthread_cond_broadcast(&b->cv);
  }
  b->batches++;
  b->requests += (uint64_t)n;
  b->hist[n]++;
  pthread_mutex_unlock(&b->mu);
  return n;
}

void bf_batcher_done(bf_batcher *b, int n) {
  pthread_mutex_lock(&b->mu);
  b->running -= n;
  pthread_mutex_unlock(&b->mu);
}

void bf_batcher_sources(bf_batcher *b, int delta) {
  pthread_mutex_lock(&b->mu);
  b->sources += delta;
  /* a closed connection may end a wait for requests that will not come */
  if (delta < 0) pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

void bf_batcher_stop(bf_batcher *b) {
  pthread_mutex_lock(&b->mu);
  b->stop = 1;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

int bf_batcher_depth(bf_batcher *b) {
  pthread_mutex_lock(&b->mu);
  int d = b->queued + b->running;
  pthread_mutex_unlock(&b->mu);
  return d;
}

int bf_batcher_full(bf_batcher *b) {
  pthread_mutex_lock(&b->mu);
  int full = b->queued >= b->cap;
  pthread_mutex_unlock(&b->mu);
  return full;
}

void bf_batcher_summary(bf_batcher *b, char *buf, size_t cap) {
  pthread_mutex_lock(&b->mu);
  int largest = 0;
  for (int i = 1; i <= BF_BATCH_MAX; i++)
    if (b->hist[i]) largest = i;
  int off = snprintf(buf, cap, "%llu requests in %llu batches (mean %.2f, largest %d), sizes",
                     (unsigned long long)b->requests, (unsigned long long)b->batches,
                     b->batches ? (double)b->requests / (double)b->batches : 0.0, largest);
  for (int i = 1; i <= BF_BATCH_MAX && off > 0 && (size_t)off < cap; i++)
    if (b->hist[i]) off += snprintf(buf + off, cap - (size_t)off, " %d:%llu", i, (unsigned long long)b->hist[i]);
  pthread_mutex_unlock(&b->mu);
}
