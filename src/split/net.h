/* Blocking-with-deadline TCP helpers (poll + non-blocking I/O), pacing for an
 * emulated uplink, and reading one frame with idle/frame timeouts.
 *
 * The transport: a connection is its socket fd. If a TLS session is bound to
 * it (tls.h: bf_tls_accept / bf_tls_connect), every send and receive below
 * goes through TLS with the same deadlines and the same close / reset /
 * timeout reports; otherwise through the socket itself. Callers do not
 * branch on it, and close a connection with bf_net_close. */
#ifndef BF_NET_H
#define BF_NET_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

enum { BF_NET_OK = 0, BF_NET_EOF = 1, BF_NET_TIMEOUT = 2, BF_NET_ERR = 3, BF_NET_EOF_CLEAN = 4 };

/* "HOST:PORT" (IPv4 literal or name). */
int bf_net_parse_addr(const char *s, char *host, size_t cap, int *port);
/* Listens on host:port (port 0 = any free port); *bound receives the port. */
int bf_net_listen(const char *host, int port, int backlog, int *fd, int *bound);
int bf_net_connect(const char *host, int port, int timeout_ms, int *fd);
/* *loopback = 1 if host resolves to 127.0.0.0/8. */
int bf_net_is_loopback(const char *host, int *loopback);
/* Releases the socket's TLS session (close_notify, best effort), if any, and
 * closes it. */
void bf_net_close(int fd);
/* Waits until fd is readable (for_write 0) or writable before the absolute
 * deadline: 1 ready, 0 timed out, -1 poll failed (errno). Readable includes
 * bytes a TLS session has buffered: wait with this, not poll(2) on the fd. */
int bf_net_wait(int fd, int for_write, double deadline);
/* Sends all bytes before the absolute deadline (bf_now_sec). With pace_bps > 0
 * the bytes leave at that rate (token bucket of one 1 KiB chunk): the call
 * takes len*8/pace_bps seconds, emulating a slow uplink. */
int bf_net_send(int fd, const void *buf, size_t len, double deadline, double pace_bps);
/* Receives exactly len bytes before the deadline; *status = BF_NET_*. */
int bf_net_recv(int fd, void *buf, size_t len, double deadline, int *status);

/* Reads one frame: waits up to idle_ms for its first byte, then up to
 * frame_ms for the rest. Returns 0 with a malloc'ed, fully validated frame
 * (*buf, *len, *f pointing into it); a BF_PERR_* code (> 0) for a frame that
 * is invalid (the connection must be closed after an error reply); or BF_EIO
 * with *status = EOF_CLEAN (closed between frames), EOF (mid-frame), TIMEOUT
 * (*status says which) or ERR. */
int bf_net_recv_frame(int fd, uint32_t max_body, int idle_ms, int frame_ms, uint8_t **buf, size_t *len, bf_frame *f,
                      int *status);
/* The same, with a check of the validated header before the body is
 * allocated or read: a non-zero BF_PERR_* code from check refuses the frame
 * (returned as is; *f holds the header for the error reply). */
typedef int (*bf_net_header_check)(void *ctx, const bf_frame *hdr);
int bf_net_recv_frame_checked(int fd, uint32_t max_body, int idle_ms, int frame_ms, bf_net_header_check check,
                              void *ctx, uint8_t **buf, size_t *len, bf_frame *f, int *status);
/* Builds and sends a frame. */
int bf_net_send_frame(int fd, const bf_frame *hdr, const void *body, size_t body_len, double deadline,
                      double pace_bps, size_t *sent);
/* Sends an ERROR frame (best effort, short deadline). */
void bf_net_send_error(int fd, uint32_t request_id, const uint8_t *model_id, uint32_t code, const char *msg);

#endif
