#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_core.h"
#include "net.h"
#include "tls.h"

int bf_conn_open(bf_conn *c, const char *hostport, int timeout_ms, double uplink_mbps) {
  return bf_conn_open_tls(c, hostport, timeout_ms, uplink_mbps, NULL);
}

int bf_conn_open_tls(bf_conn *c, const char *hostport, int timeout_ms, double uplink_mbps,
                     const struct bf_tls_ctx *tls) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  BF_TRY(bf_net_parse_addr(hostport, c->host, sizeof c->host, &c->port));
  c->timeout_ms = timeout_ms;
  c->pace_bps = uplink_mbps > 0 ? uplink_mbps * 1e6 : 0;
  c->next_id = 1;
  double t0 = bf_now_sec();
  BF_TRY(bf_net_connect(c->host, c->port, timeout_ms, &c->fd));
  int rc = bf_tls_connect(tls, c->fd, c->host, t0 + timeout_ms / 1e3);
  if (rc) bf_conn_close(c);
  return rc;
}

void bf_conn_close(bf_conn *c) {
  bf_net_close(c->fd);
  c->fd = -1;
}

/* Waits for the reply to request `id` of the expected type. */
static int reply(bf_conn *c, uint32_t id, uint8_t want, const uint8_t *model_id, uint8_t **buf, bf_frame *f) {
  size_t len;
  int status = 0;
  int rc = bf_net_recv_frame(c->fd, 1u << 20, c->timeout_ms, c->timeout_ms, buf, &len, f, &status);
  if (rc < 0) {
    if (status == BF_NET_EOF)
      return bf_error(BF_EIO, "server %s:%d closed or reset the connection in the middle of a reply", c->host,
                      c->port);
    if (status == BF_NET_EOF_CLEAN)
      return bf_error(BF_EIO, "server %s:%d closed the connection before replying (server stopped or restarted?)",
                      c->host, c->port);
    if (status == BF_NET_TIMEOUT)
      return bf_error(BF_EIO, "no reply from %s:%d within %d ms", c->host, c->port, c->timeout_ms);
    return bf_error_wrap(BF_EIO, "reading the reply from %s:%d", c->host, c->port);
  }
  if (rc > 0) return bf_error_wrap(BF_EIO, "invalid reply from %s:%d", c->host, c->port);
  if (f->type == BF_MSG_ERROR) {
    uint32_t code = 0;
    char msg[1024] = "";
    int bad = bf_error_unpack(f->body, f->body_len, &code, msg, sizeof msg);
    free(*buf);
    *buf = NULL;
    if (bad) return bf_error_wrap(BF_EIO, "invalid ERROR reply from %s:%d", c->host, c->port);
    return bf_error(BF_EIO, "server error %s (code %u): %s", bf_perr_name(code), code, msg);
  }
  if (f->type != want || f->request_id != id) {
    free(*buf);
    *buf = NULL;
    return bf_error(BF_EIO, "unexpected %s reply (request %u) to request %u", bf_msg_name(f->type), f->request_id, id);
  }
  if (model_id && memcmp(f->model_id, model_id, BF_MODEL_ID_LEN)) {
    free(*buf);
    *buf = NULL;
    return bf_error(BF_EIO, "the server answered for another model");
  }
  return BF_OK;
}

int bf_conn_status(bf_conn *c, bf_status *st) {
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_STATUS;
  h.request_id = c->next_id++;
  BF_TRY(bf_net_send_frame(c->fd, &h, NULL, 0, bf_now_sec() + c->timeout_ms / 1e3, 0, NULL));
  uint8_t *buf;
  bf_frame f;
  BF_TRY(reply(c, h.request_id, BF_MSG_STATUS_REPLY, NULL, &buf, &f));
  int rc = bf_status_unpack(f.body, f.body_len, st);
  free(buf);
  return rc ? bf_error_wrap(BF_EIO, "invalid reply from %s:%d", c->host, c->port) : BF_OK;
}

int bf_conn_infer(bf_conn *c, const bf_frame *hdr, const uint8_t *body, size_t body_len, uint32_t num_classes,
                  bf_result *res, double *upload_ms, size_t *bytes_sent) {
  bf_frame h = *hdr;
  h.request_id = c->next_id++;
  double t0 = bf_now_sec();
  /* the send deadline allows for the paced uplink */
  double budget = c->timeout_ms / 1e3 + (c->pace_bps > 0 ? (body_len + 100) * 8.0 / c->pace_bps : 0);
  int rc = bf_net_send_frame(c->fd, &h, body, body_len, t0 + budget, c->pace_bps, bytes_sent);
  if (rc) return bf_error_wrap(rc, "sending to %s:%d", c->host, c->port);
  if (upload_ms) *upload_ms = (bf_now_sec() - t0) * 1e3;
  uint8_t *buf;
  bf_frame f;
  BF_TRY(reply(c, h.request_id, BF_MSG_RESULT, h.model_id, &buf, &f));
  rc = bf_result_unpack(f.body, f.body_len, num_classes, res);
  free(buf);
  return rc ? bf_error_wrap(BF_EIO, "invalid reply from %s:%d", c->host, c->port) : BF_OK;
}
