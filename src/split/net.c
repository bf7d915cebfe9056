#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bf_core.h"
#include "tls.h"

int bf_net_parse_addr(const char *s, char *host, size_t cap, int *port) {
  const char *colon = s ? strrchr(s, ':') : NULL;
  if (!colon || colon == s || (size_t)(colon - s) >= cap)
    return bf_error(BF_EINVAL, "address '%s' is not HOST:PORT", s ? s : "");
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (!colon[1] || *end || p < 0 || p > 65535) return bf_error(BF_EINVAL, "address '%s': bad port", s);
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  *port = (int)p;
  return BF_OK;
}

static int resolve(const char *host, int port, struct sockaddr_in *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa->sin_addr) == 1) return BF_OK;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc || !res) return bf_error(BF_EIO, "cannot resolve '%s': %s", host, gai_strerror(rc));
  sa->sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return BF_OK;
}

int bf_net_listen(const char *host, int port, int backlog, int *fd_out, int *bound) {
  struct sockaddr_in sa;
  BF_TRY(resolve(host, port, &sa));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return bf_error(BF_EIO, "socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, backlog)) {
    int e = errno;
    close(fd);
    return bf_error(BF_EIO, "cannot listen on %s:%d: %s", host, port, strerror(e));
  }
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *bound = ntohs(sa.sin_port);
  *fd_out = fd;
  return BF_OK;
}

int bf_net_is_loopback(const char *host, int *loopback) {
  struct sockaddr_in sa;
  BF_TRY(resolve(host, 0, &sa));
  *loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
  return BF_OK;
}

void bf_net_close(int fd) {
  if (fd < 0) return;
  bf_tls_release(fd);
  close(fd);
}

int bf_net_connect(const char *host, int port, int timeout_ms, int *fd_out) {
  struct sockaddr_in sa;
  BF_TRY(resolve(host, port, &sa));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return bf_error(BF_EIO, "socket: %s", strerror(errno));
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc && errno == EINPROGRESS) {
    struct pollfd p = {fd, POLLOUT, 0};
    rc = poll(&p, 1, timeout_ms);
    if (rc == 0) {
      close(fd);
      return bf_error(BF_EIO, "cannot connect to %s:%d: no answer within %d ms", host, port, timeout_ms);
    }
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) errno = err;
    rc = err ? -1 : 0;
  }
  if (rc) {
    int e = errno;
    close(fd);
    return bf_error(BF_EIO, "cannot connect to %s:%d: %s (is bf-serve running?)", host, port, strerror(e));
  }
  fcntl(fd, F_SETFL, fl);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *fd_out = fd;
  return BF_OK;
}

static int ms_left(double deadline) {
  double left = deadline - bf_now_sec();
  if (left <= 0) return 0;
  return left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
}

static void sleep_until(double t) {
  double d = t - bf_now_sec();
  if (d <= 0) return;
  struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
  nanosleep(&ts, NULL);
}

int bf_net_wait(int fd, int for_write, double deadline) {
  if (!for_write && bf_tls_pending(fd)) return 1; /* already decrypted or buffered by TLS */
  for (;;) {
    struct pollfd pf = {fd, (short)(for_write ? POLLOUT : POLLIN), 0};
    int w = ms_left(deadline);
    if (w == 0) return 0;
    int r = poll(&pf, 1, w);
    if (r < 0 && errno == EINTR) continue;
    return r < 0 ? -1 : r > 0;
  }
}

/* The transport's two primitives: one non-blocking read or write through the
 * socket's TLS session if it has one (tls.c), else straight on the socket,
 * reported as BF_IO_* so that the loops below treat both alike. */
static int io_read(int fd, void *buf, size_t len, size_t *n) {
  int r = bf_tls_read(fd, buf, len, n);
  if (r != BF_TLS_PLAIN) return r;
  ssize_t k = recv(fd, buf, len, MSG_DONTWAIT);
  *n = k > 0 ? (size_t)k : 0;
  if (k > 0) return BF_IO_DONE;
  if (k == 0) return BF_IO_EOF;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return BF_IO_WANT_READ;
  /* A peer that dies with unread data in its receive buffer resets the
   * connection instead of closing it: to the reader both mean the peer is
   * gone, and callers word it as a close. */
  if (errno == ECONNRESET) return BF_IO_RESET;
  return bf_error(BF_IO_ERR, "recv failed: %s", strerror(errno));
}

static int io_write(int fd, const void *buf, size_t len, size_t *n) {
  int r = bf_tls_write(fd, buf, len, n);
  if (r != BF_TLS_PLAIN) return r;
  ssize_t k = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  *n = k > 0 ? (size_t)k : 0;
  if (k >= 0) return BF_IO_DONE;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return BF_IO_WANT_WRITE;
  if (errno == EPIPE || errno == ECONNRESET) return BF_IO_RESET;
  return bf_error(BF_IO_ERR, "send failed: %s", strerror(errno));
}

int bf_net_send(int fd, const void *buf, size_t len, double deadline, double pace_bps) {
  const uint8_t *p = buf;
  size_t off = 0;
  double t0 = bf_now_sec();
  while (off < len) {
    size_t chunk = len - off, n;
    if (pace_bps > 0) {
      if (chunk > 1024) chunk = 1024;
      sleep_until(t0 + (double)off * 8.0 / pace_bps);
    }
    if (ms_left(deadline) == 0) return bf_error(BF_EIO, "send timed out");
    int r = io_write(fd, p + off, chunk, &n), err = errno;
    if (r == BF_IO_WANT_READ || r == BF_IO_WANT_WRITE) {
      int ready = bf_net_wait(fd, r == BF_IO_WANT_WRITE, deadline);
      if (ready < 0) return bf_error(BF_EIO, "send failed: poll: %s", strerror(errno));
      if (!ready) return bf_error(BF_EIO, "send timed out");
      continue;
    }
    if (r == BF_IO_RESET || r == BF_IO_EOF)
      return bf_error(BF_EIO, "send failed: the peer closed the connection (%s)", strerror(err ? err : EPIPE));
    if (r != BF_IO_DONE) return BF_EIO; /* message from io_write */
    off += n;
  }
  if (pace_bps > 0) sleep_until(t0 + (double)len * 8.0 / pace_bps);
  return BF_OK;
}

int bf_net_recv(int fd, void *buf, size_t len, double deadline, int *status) {
  uint8_t *p = buf;
  size_t off = 0;
  *status = BF_NET_OK;
  while (off < len) {
    size_t n;
    int r = io_read(fd, p + off, len - off, &n);
    if (r == BF_IO_WANT_READ || r == BF_IO_WANT_WRITE) {
      if (bf_net_wait(fd, r == BF_IO_WANT_WRITE, deadline) <= 0) {
        *status = BF_NET_TIMEOUT;
        return bf_error(BF_EIO, "timed out after %zu of %zu bytes", off, len);
      }
      continue;
    }
    if (r == BF_IO_EOF) {
      *status = BF_NET_EOF;
      return bf_error(BF_EIO, "connection closed by the peer after %zu of %zu bytes", off, len);
    }
    if (r == BF_IO_RESET) {
      *status = BF_NET_EOF;
      return bf_error(BF_EIO, "connection reset by the peer after %zu of %zu bytes", off, len);
    }
    if (r != BF_IO_DONE) {
      *status = BF_NET_ERR;
      return BF_EIO; /* message from io_read */
    }
    off += n;
  }
  return BF_OK;
}

int bf_net_recv_frame(int fd, uint32_t max_body, int idle_ms, int frame_ms, uint8_t **buf, size_t *len, bf_frame *f,
                      int *status) {
  return bf_net_recv_frame_checked(fd, max_body, idle_ms, frame_ms, NULL, NULL, buf, len, f, status);
}

int bf_net_recv_frame_checked(int fd, uint32_t max_body, int idle_ms, int frame_ms, bf_net_header_check check,
                              void *ctx, uint8_t **buf, size_t *len, bf_frame *f, int *status) {
  *buf = NULL;
  /* Zeroed first: an error reply echoes f's request and model id, and a
   * frame refused before its header is parsed must echo none. */
  memset(f, 0, sizeof *f);
  uint8_t hdr[BF_FRAME_HEADER];
  /* first byte: idle timeout */
  int rc = bf_net_recv(fd, hdr, 1, bf_now_sec() + idle_ms / 1000.0, status);
  if (rc) {
    if (*status == BF_NET_EOF) *status = BF_NET_EOF_CLEAN;
    return rc;
  }
  double deadline = bf_now_sec() + frame_ms / 1000.0;
  /* the magic is checked as soon as it arrives, so garbage is refused early */
  BF_TRY(bf_net_recv(fd, hdr + 1, 3, deadline, status));
  if (memcmp(hdr, BF_FRAME_MAGIC, 4))
    return bf_error(BF_PERR_BAD_FRAME, "frame: bad magic %02x%02x%02x%02x (expected 'BFLY')", hdr[0], hdr[1], hdr[2],
                    hdr[3]);
  BF_TRY(bf_net_recv(fd, hdr + 4, BF_FRAME_HEADER - 4, deadline, status));
  BF_TRY(bf_frame_parse_header(hdr, max_body, f));
  if (check) BF_TRY(check(ctx, f));
  size_t total = (size_t)bf_frame_len(f->body_len);
  uint8_t *b = malloc(total);
  if (!b) return bf_error(BF_PERR_INTERNAL, "out of memory for a %zu-byte frame", total);
  memcpy(b, hdr, BF_FRAME_HEADER);
  rc = bf_net_recv(fd, b + BF_FRAME_HEADER, total - BF_FRAME_HEADER, deadline, status);
  if (!rc) rc = bf_frame_parse(b, total, max_body, f);
  if (rc) {
    free(b);
    return rc;
  }
  *buf = b;
  *len = total;
  return BF_OK;
}

int bf_net_send_frame(int fd, const bf_frame *hdr, const void *body, size_t body_len, double deadline,
                      double pace_bps, size_t *sent) {
  uint8_t *buf;
  size_t len;
  BF_TRY(bf_frame_build(hdr, body, body_len, &buf, &len));
  int rc = bf_net_send(fd, buf, len, deadline, pace_bps);
  free(buf);
  if (!rc && sent) *sent = len;
  return rc;
}

void bf_net_send_error(int fd, uint32_t request_id, const uint8_t *model_id, uint32_t code, const char *msg) {
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_ERROR;
  h.request_id = request_id;
  if (model_id) memcpy(h.model_id, model_id, BF_MODEL_ID_LEN);
  size_t n = strlen(msg);
  if (n > 1000) n = 1000;
  uint8_t body[1008];
  bf_put_u32(body, code);
  bf_put_u32(body + 4, (uint32_t)n);
  memcpy(body + 8, msg, n);
  bf_net_send_frame(fd, &h, body, n + 8, bf_now_sec() + 0.5, 0, NULL);
}
