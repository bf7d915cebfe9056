/* Client side of the protocol: one persistent connection to bf-serve. */
#ifndef BF_CLIENT_H
#define BF_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

typedef struct bf_conn {
  int fd;
  char host[256];
  int port;
  int timeout_ms;   /* connect, and each reply */
  double pace_bps;  /* emulated uplink (0: none) */
  uint32_t next_id;
} bf_conn;

struct bf_tls_ctx;
int bf_conn_open(bf_conn *c, const char *hostport, int timeout_ms, double uplink_mbps);
/* The same over TLS when tls is not NULL (handshake within timeout_ms). */
int bf_conn_open_tls(bf_conn *c, const char *hostport, int timeout_ms, double uplink_mbps,
                     const struct bf_tls_ctx *tls);
void bf_conn_close(bf_conn *c);
int bf_conn_status(bf_conn *c, bf_status *st);
/* Sends a request (INFER / INFER_IMAGE) and waits for its RESULT, which must
 * agree with num_classes (the manifest's: the server is not trusted).
 * upload_ms: time to push the frame through the (paced) socket. */
int bf_conn_infer(bf_conn *c, const bf_frame *hdr, const uint8_t *body, size_t body_len, uint32_t num_classes,
                  bf_result *res, double *upload_ms, size_t *bytes_sent);

#endif
