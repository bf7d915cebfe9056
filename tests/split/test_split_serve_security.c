/* bf-serve against hostile clients and bad deployments (issue 14), each a
 * case of its own; all run, the failures are listed at the end:
 *   stale_echo       an ERROR for a frame with a bad magic echoes no earlier request
 *   header_first     model and shape are checked from the header, before the body
 *   zstd_*           a payload must be exactly one standard zstd frame of raw_len bytes
 *   scale_*          uint8 scales outside the documented range are refused
 *   send_failure     a reply that cannot be sent ends the connection (no stream out of step)
 *   reset_mid_reply  clients that reset while their reply is sent; the server goes on
 *   internal_error   INTERNAL errors carry no file system path; a failed whole-model
 *                    load is remembered (not retried on each INFER_IMAGE)
 *   eviction         per-peer cap; idle connections holding the cap are evicted for a
 *                    fresh client
 *   queue_first      a full queue is BUSY from the header, before the body
 *   manifest_*       a manifest that disagrees with its weights is refused at start-up
 *   emfile           accept at the open-file limit backs off instead of spinning
 * Usage: test_split_serve_security BIN_DIR WORKDIR */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "client.h"
#include "net.h"
#include "quant.h"
#include "split.h"
#include "split_testutil.h"

static const char *g_bin, *g_work;
static bf_deploy g_dep;
static const bf_deploy_split *g_ds;
static char g_deploy[600];

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

typedef struct server {
  pid_t pid;
  int port;
  char log[700];
} server;

/* Starts bf-serve on deploy with extra flags (NULL terminated). */
static int start_server(server *s, const char *name, const char *deploy, long nofile, const char *const *extra) {
  char portf[700], serve[700];
  snprintf(portf, sizeof portf, "%s/%s.port", g_work, name);
  snprintf(s->log, sizeof s->log, "%s/%s.log", g_work, name);
  snprintf(serve, sizeof serve, "%s/bf-serve", g_bin);
  unlink(portf);
  const char *argv[40] = {serve, "--deploy", deploy, "--listen", "127.0.0.1:0", "--port-file", portf, "--threads",
                          "1", "--verbose"};
  int n = 10;
  for (int i = 0; extra && extra[i] && n < 38; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  s->port = 0;
  char out[700];
  snprintf(out, sizeof out, "%s/%s.out", g_work, name);
  if (tu_spawn((char *const *)argv, out, s->log, nofile, &s->pid)) return 1;
  s->port = tu_wait_port(s->pid, portf);
  return s->port > 0 ? 0 : 1;
}

static int stop_server(server *s) {
  if (s->pid <= 0) return 0;
  kill(s->pid, SIGTERM);
  int st = tu_wait_exit(s->pid, 30);
  s->pid = -1;
  TU_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "bf-serve did not stop cleanly (status %d, see %s)", st,
           s->log);
  return 0;
}

/* A TCP connection to 127.0.0.1:port from the loopback address src. */
static int connect_from(const char *src, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  inet_pton(AF_INET, src, &a.sin_addr);
  struct sockaddr_in d = a;
  d.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || connect(fd, (struct sockaddr *)&d, sizeof d)) {
    close(fd);
    return -1;
  }
  return fd;
}

static int send_bytes(int fd, const void *p, size_t n) { return bf_net_send(fd, p, n, bf_now_sec() + 5, 0); }

/* Reads the reply to a bad request: an ERROR with `code`, then the close.
 * *f receives the ERROR's header, msg its text. */
static int expect_error(int fd, uint32_t code, double within, bf_frame *f, char *msg, size_t cap) {
  uint8_t *buf = NULL;
  size_t len;
  bf_frame tmp;
  if (!f) f = &tmp;
  int st;
  double t0 = bf_now_sec();
  int rc = bf_net_recv_frame(fd, 1 << 20, (int)(within * 1000), (int)(within * 1000), &buf, &len, f, &st);
  TU_CHECK(rc == 0, "expected an ERROR %s, got none (%s)", bf_perr_name(code), bf_last_error());
  TU_CHECK(f->type == BF_MSG_ERROR, "expected an ERROR %s, got %s", bf_perr_name(code), bf_msg_name(f->type));
  uint32_t got;
  char m[1024];
  bf_error_unpack(f->body, f->body_len, &got, m, sizeof m);
  if (msg) snprintf(msg, cap, "%s", m);
  free(buf);
  TU_CHECK(got == code, "error %s (%s), expected %s", bf_perr_name(got), m, bf_perr_name(code));
  TU_CHECK(bf_now_sec() - t0 <= within, "the ERROR came after %.2f s (limit %.2f s)", bf_now_sec() - t0, within);
  uint8_t b;
  rc = bf_net_recv(fd, &b, 1, bf_now_sec() + 5, &st);
  TU_CHECK(rc && st == BF_NET_EOF, "connection not closed after the error");
  return 0;
}

/* An INFER frame for split ds (header fields in *h, body in *body). */
static int make_infer(int qscheme, int codec, uint8_t **fr, size_t *fl) {
  size_t n = (size_t)g_ds->feat_h * g_ds->feat_w * g_ds->d_r;
  float *x = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) x[i] = (float)((i * 37) % 11) * 0.1f;
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_INFER;
  h.request_id = 1234;
  memcpy(h.model_id, g_ds->id, BF_MODEL_ID_LEN);
  uint8_t *body;
  size_t bl;
  int rc = bf_features_encode(x, g_ds->feat_h, g_ds->feat_w, g_ds->d_r, qscheme, codec, 3, &h, &body, &bl);
  if (!rc) rc = bf_frame_build(&h, body, bl, fr, fl);
  if (!rc) free(body);
  free(x);
  return rc;
}

/* One INFER on a fresh connection from loopback address src must succeed. */
static int valid_request(int port, const char *src) {
  int fd = connect_from(src, port);
  TU_CHECK(fd >= 0, "connect from %s", src);
  uint8_t *fr, *buf = NULL;
  size_t fl, len;
  TU_CHECK(!make_infer(BF_Q_U8_TENSOR, BF_CODEC_ZSTD, &fr, &fl), "encode");
  send_bytes(fd, fr, fl);
  free(fr);
  bf_frame f;
  int st;
  int rc = bf_net_recv_frame(fd, 1 << 20, 20000, 20000, &buf, &len, &f, &st);
  close(fd);
  if (!rc && f.type == BF_MSG_ERROR) {
    uint32_t code;
    char m[512];
    bf_error_unpack(f.body, f.body_len, &code, m, sizeof m);
    free(buf);
    TU_CHECK(0, "valid request from %s: ERROR %s: %s", src, bf_perr_name(code), m);
  }
  free(buf);
  TU_CHECK(!rc && f.type == BF_MSG_RESULT, "valid request from %s: no RESULT (%s)", src, bf_last_error());
  return 0;
}

/* Sends frame bytes on a fresh connection and expects ERROR code. */
static int send_expect(int port, const uint8_t *fr, size_t fl, uint32_t code) {
  int fd = connect_from("127.0.0.1", port);
  TU_CHECK(fd >= 0, "connect");
  send_bytes(fd, fr, fl);
  int rc = expect_error(fd, code, 5, NULL, NULL, 0);
  close(fd);
  return rc;
}

/* ---------------- cases on the main server ---------------- */

static int t_stale_echo(int port) {
  int fd = connect_from("127.0.0.1", port);
  TU_CHECK(fd >= 0, "connect");
  uint8_t *fr, *buf;
  size_t fl, len;
  TU_CHECK(!make_infer(BF_Q_U8_TENSOR, BF_CODEC_RAW, &fr, &fl), "encode");
  send_bytes(fd, fr, fl);
  free(fr);
  bf_frame f;
  int st;
  TU_CHECK(!bf_net_recv_frame(fd, 1 << 20, 20000, 20000, &buf, &len, &f, &st) && f.type == BF_MSG_RESULT,
           "first request not answered");
  free(buf);
  uint8_t junk[64];
  memset(junk, 'X', sizeof junk);
  send_bytes(fd, junk, sizeof junk);
  int rc = expect_error(fd, BF_PERR_BAD_FRAME, 5, &f, NULL, 0);
  close(fd);
  if (rc) return rc;
  uint8_t zero[BF_MODEL_ID_LEN] = {0};
  TU_CHECK(f.request_id == 0 && !memcmp(f.model_id, zero, sizeof zero),
           "ERROR for a bad magic echoes request %u and a model id (stale header)", f.request_id);
  return 0;
}

static int t_header_first(int port) {
  uint8_t *fr;
  size_t fl;
  TU_CHECK(!make_infer(BF_Q_U8_TENSOR, BF_CODEC_RAW, &fr, &fl), "encode");
  /* the header alone, announcing its body; the body never comes */
  uint8_t hdr[BF_FRAME_HEADER];
  memcpy(hdr, fr, sizeof hdr);
  free(fr);
  hdr[16] ^= 1; /* model id */
  int fd = connect_from("127.0.0.1", port);
  TU_CHECK(fd >= 0, "connect");
  send_bytes(fd, hdr, sizeof hdr);
  int rc = expect_error(fd, BF_PERR_UNKNOWN_MODEL, 1.0, NULL, NULL, 0);
  close(fd);
  if (rc) return rc;
  hdr[16] ^= 1;
  bf_put_u16(hdr + 54, (uint16_t)(g_ds->feat_h + 1)); /* h */
  bf_put_u32(hdr + 60, (uint32_t)((g_ds->feat_h + 1) * g_ds->feat_w * g_ds->d_r));
  fd = connect_from("127.0.0.1", port);
  TU_CHECK(fd >= 0, "connect");
  send_bytes(fd, hdr, sizeof hdr);
  rc = expect_error(fd, BF_PERR_BAD_SHAPE, 1.0, NULL, NULL, 0);
  close(fd);
  return rc;
}

/* An INFER per tensor with the given zstd payload. */
static int zstd_case(int port, const uint8_t *payload, size_t n, uint32_t code) {
  uint8_t *fr;
  size_t fl;
  TU_CHECK(!make_infer(BF_Q_U8_TENSOR, BF_CODEC_ZSTD, &fr, &fl), "encode");
  bf_frame h;
  TU_CHECK(!bf_frame_parse(fr, fl, 1 << 20, &h), "parse");
  uint8_t *body = malloc(8 + n), *f2;
  memcpy(body, h.qparams, 8);
  memcpy(body + 8, payload, n);
  size_t l2;
  TU_CHECK(!bf_frame_build(&h, body, 8 + n, &f2, &l2), "build");
  free(body);
  free(fr);
  int rc = send_expect(port, f2, l2, code);
  free(f2);
  return rc;
}

static int t_zstd(int port) {
  size_t raw = (size_t)g_ds->feat_h * g_ds->feat_w * g_ds->d_r, cap = ZSTD_compressBound(raw) * 2 + 64;
  uint8_t *src = calloc(raw, 1), *z = malloc(cap);
  for (size_t i = 0; i < raw; i++) src[i] = (uint8_t)(i % 5);
  int fails = 0;
  /* two frames of half the bytes each: decode to raw_len together */
  size_t a = ZSTD_compress(z, cap, src, raw / 2, 3);
  size_t b = ZSTD_compress(z + a, cap - a, src + raw / 2, raw - raw / 2, 3);
  printf("    concatenated frames\n");
  fails += zstd_case(port, z, a + b, BF_PERR_BAD_PAYLOAD);
  /* a skippable frame in front of a valid one */
  bf_put_u32(z, 0x184D2A50u);
  bf_put_u32(z + 4, 4);
  memset(z + 8, 0, 4);
  size_t c = ZSTD_compress(z + 12, cap - 12, src, raw, 3);
  printf("    skippable frame first\n");
  fails += zstd_case(port, z, 12 + c, BF_PERR_BAD_PAYLOAD);
  /* a valid frame, then trailing bytes */
  c = ZSTD_compress(z, cap, src, raw, 3);
  memset(z + c, 0, 8);
  printf("    trailing bytes\n");
  fails += zstd_case(port, z, c + 8, BF_PERR_BAD_PAYLOAD);
  /* no declared content size */
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
  c = ZSTD_compress2(cc, z, cap, src, raw);
  ZSTD_freeCCtx(cc);
  printf("    no declared content size\n");
  fails += zstd_case(port, z, c, BF_PERR_BAD_PAYLOAD);
  /* a legacy (v0.7) magic number */
  c = ZSTD_compress(z, cap, src, raw, 3);
  bf_put_u32(z, 0xFD2FB527u);
  printf("    legacy magic\n");
  fails += zstd_case(port, z, c, BF_PERR_BAD_PAYLOAD);
  /* control: the honest frame */
  c = ZSTD_compress(z, cap, src, raw, 3);
  uint8_t *fr, *f2;
  size_t fl, l2;
  make_infer(BF_Q_U8_TENSOR, BF_CODEC_ZSTD, &fr, &fl);
  bf_frame h;
  bf_frame_parse(fr, fl, 1 << 20, &h);
  uint8_t *body = malloc(8 + c);
  memcpy(body, h.qparams, 8);
  memcpy(body + 8, z, c);
  bf_frame_build(&h, body, 8 + c, &f2, &l2);
  int fd = connect_from("127.0.0.1", port);
  send_bytes(fd, f2, l2);
  uint8_t *buf = NULL;
  size_t len;
  bf_frame f;
  int st;
  int rc = bf_net_recv_frame(fd, 1 << 20, 20000, 20000, &buf, &len, &f, &st);
  if (rc || f.type != BF_MSG_RESULT) fails++, fprintf(stderr, "FAIL: the honest zstd frame was not answered\n");
  close(fd);
  free(buf), free(body), free(fr), free(f2), free(src), free(z);
  return fails;
}

static int t_scales(int port) {
  const float bad[] = {FLT_MAX, 1e-40f, 0.0f, -1.0f, NAN, INFINITY, 1e30f, BF_QSCALE_MAX * 2, BF_QSCALE_MIN / 2};
  int fails = 0;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t *fr, *f2;
    size_t fl, l2;
    TU_CHECK(!make_infer(BF_Q_U8_TENSOR, BF_CODEC_RAW, &fr, &fl), "encode");
    bf_frame h;
    TU_CHECK(!bf_frame_parse(fr, fl, 1 << 20, &h), "parse");
    uint8_t *body = malloc(h.body_len);
    memcpy(body, h.body, h.body_len);
    bf_put_f32(body, bad[i]);
    TU_CHECK(!bf_frame_build(&h, body, h.body_len, &f2, &l2), "build");
    printf("    scale %g\n", bad[i]);
    fails += send_expect(port, f2, l2, BF_PERR_BAD_FRAME);
    free(fr), free(f2), free(body);
  }
  return fails;
}

/* The client pipelines STATUS requests and reads nothing: the server's reply
 * cannot be sent within the frame timeout. It must then close the connection
 * (a half-sent frame leaves the stream out of step), not read on. */
static int t_send_failure(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in d;
  memset(&d, 0, sizeof d);
  d.sin_family = AF_INET;
  d.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
  TU_CHECK(!connect(fd, (struct sockaddr *)&d, sizeof d), "connect");
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_STATUS;
  uint8_t *fr;
  size_t fl;
  TU_CHECK(!bf_frame_build(&h, NULL, 0, &fr, &fl), "build");
  size_t n = 400000;
  uint8_t *many = malloc(n * fl);
  for (size_t i = 0; i < n; i++) memcpy(many + i * fl, fr, fl);
  free(fr);
  /* push whole frames until the server stops reading (its reply blocks) */
  size_t off = 0;
  double t0 = bf_now_sec(), last = t0;
  while (off < n * fl && bf_now_sec() - last < 1.5 && bf_now_sec() - t0 < 30) {
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    size_t want = (n * fl - off) / fl * fl;
    if (want > 64 * fl) want = 64 * fl;
    ssize_t k = send(fd, many + off, want, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k > 0) off += (size_t)k, last = bf_now_sec();
    else if (k < 0 && errno != EAGAIN && errno != EINTR) break;
  }
  free(many);
  printf("    pipelined %zu STATUS requests (%zu bytes) without reading\n", off / fl, off);
  sleep_s(4.0); /* past the server's frame (send) timeout of 3 s */
  /* now read: the server must have given up on this connection, and what it
   * did send must be whole frames (at most the last one cut short) */
  size_t cap = 64u << 20, got = 0;
  uint8_t *buf = malloc(cap);
  int ended = 0;
  t0 = bf_now_sec();
  while (!ended && got < cap && bf_now_sec() - t0 < 8) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 500) <= 0) continue;
    ssize_t k = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
    if (k > 0) got += (size_t)k;
    else if (k == 0 || (errno != EAGAIN && errno != EINTR)) ended = 1;
  }
  close(fd);
  size_t o = 0, frames = 0;
  int in_step = 1;
  while (in_step && o + BF_FRAME_HEADER <= got) {
    bf_frame f;
    size_t fl2 = BF_FRAME_HEADER + bf_get_u32(buf + o + 8) + BF_FRAME_TRAILER;
    if (bf_frame_parse_header(buf + o, 1 << 20, &f)) in_step = 0;
    else if (o + fl2 > got) break; /* cut short at the end */
    else if (bf_frame_parse(buf + o, fl2, 1 << 20, &f)) in_step = 0;
    else o += fl2, frames++;
  }
  free(buf);
  printf("    read %zu bytes: %zu whole frames%s; connection %s\n", got, frames,
         in_step ? "" : ", then bytes out of step", ended ? "closed by the server" : "still open");
  TU_CHECK(in_step, "a reply was cut short and the server sent more frames after it (stream out of step)");
  TU_CHECK(ended, "the server kept the connection after a reply it could not send");
  return 0;
}

static int t_reset_mid_reply(int port) {
  for (int i = 0; i < 5; i++) {
    int fd = connect_from("127.0.0.1", port);
    TU_CHECK(fd >= 0, "connect");
    uint8_t *fr;
    size_t fl;
    TU_CHECK(!make_infer(BF_Q_F32, BF_CODEC_RAW, &fr, &fl), "encode");
    bf_frame h;
    memset(&h, 0, sizeof h);
    h.type = BF_MSG_STATUS;
    uint8_t *st;
    size_t sl;
    bf_frame_build(&h, NULL, 0, &st, &sl);
    send_bytes(fd, fr, fl);
    for (int k = 0; k < 50; k++) send_bytes(fd, st, sl);
    free(fr), free(st);
    if (i % 2) sleep_s(0.05);
    struct linger lg = {1, 0}; /* reset, unread replies in the buffer */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
  }
  sleep_s(0.5);
  return valid_request(port, "127.0.0.1");
}

static int flip_byte(const char *path, size_t at) {
  uint8_t *d;
  size_t l;
  BF_TRY(bf_read_file(path, &d, &l));
  d[at < l ? at : l / 2] ^= 0x40;
  int rc = bf_write_file_atomic(path, d, l);
  free(d);
  return rc;
}

static int image_request(int port, char *msg, size_t cap, int *is_error) {
  int fd = connect_from("127.0.0.1", port);
  TU_CHECK(fd >= 0, "connect");
  size_t px = (size_t)g_ds->in_h * g_ds->in_w * 3;
  uint8_t *rgb = calloc(px, 1);
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_INFER_IMAGE;
  h.request_id = 77;
  memcpy(h.model_id, g_ds->id, BF_MODEL_ID_LEN);
  h.qscheme = BF_Q_U8_PIXELS;
  h.n = 1, h.h = (uint16_t)g_ds->in_h, h.w = (uint16_t)g_ds->in_w, h.c = 3;
  h.raw_len = (uint32_t)px;
  uint8_t *fr, *buf = NULL;
  size_t fl, len;
  bf_frame_build(&h, rgb, px, &fr, &fl);
  send_bytes(fd, fr, fl);
  free(fr), free(rgb);
  bf_frame f;
  int st;
  int rc = bf_net_recv_frame(fd, 1 << 20, 60000, 60000, &buf, &len, &f, &st);
  close(fd);
  TU_CHECK(!rc, "INFER_IMAGE: no reply (%s)", bf_last_error());
  *is_error = f.type == BF_MSG_ERROR;
  msg[0] = 0;
  if (*is_error) {
    uint32_t code;
    bf_error_unpack(f.body, f.body_len, &code, msg, cap);
    if (code != BF_PERR_INTERNAL) *is_error = 2;
  }
  free(buf);
  return 0;
}

static int count_lines(const char *path, const char *needle) {
  uint8_t *d;
  size_t l;
  if (bf_read_file(path, &d, &l)) return -1;
  int n = 0;
  char *s = calloc(l + 1, 1);
  memcpy(s, d, l);
  for (char *p = s; (p = strstr(p, needle)); p++) n++;
  free(s), free(d);
  return n;
}

static int t_internal_error(const server *sv) {
  const char *dev = g_ds->device_path;
  TU_CHECK(!flip_byte(dev, 4096), "corrupt %s", dev);
  char msg[1024];
  int err, fails = 0;
  for (int i = 0; i < 3; i++) {
    if (i == 1) TU_CHECK(!flip_byte(dev, 4096), "restore %s", dev); /* the file is good again */
    TU_CHECK(!image_request(sv->port, msg, sizeof msg, &err), "request");
    printf("    INFER_IMAGE %d: %s%s\n", i, err ? "ERROR: " : "RESULT", msg);
    if (err != 1) fails++, fprintf(stderr, "FAIL: INFER_IMAGE %d: expected ERROR INTERNAL (load failed once)\n", i);
    if (strchr(msg, '/') || strstr(msg, "safetensors"))
      fails++, fprintf(stderr, "FAIL: the INTERNAL error sends a file system path to the peer: %s\n", msg);
  }
  int n = count_lines(sv->log, "SHA-256 differs");
  printf("    the server log names the cause %d time(s)\n", n);
  if (n != 1)
    fails++, fprintf(stderr, "FAIL: the whole model was loaded %d times (expected once, failure remembered)\n", n);
  return fails;
}

/* ---------------- cases with their own server ---------------- */

static int peer_got_error(int fd, double wait_s) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, (int)(wait_s * 1000)) == 1;
}

/* The eviction server also computes 200x slower after its first request,
 * with a queue of one, for t_queue_first. */
static server g_evict;

static int t_eviction(void) {
  server sv;
  /* --max-batch 1: t_queue_first needs one request computing and one waiting; with batching the second
   * could join the first one's batch */
  const char *flags[] = {"--max-conns", "4", "--max-conns-per-peer", "2", "--evict-idle-ms", "300", "--queue", "1",
                         "--simulate-load", "200", "--simulate-load-after", "1", "--max-batch", "1", NULL};
  TU_CHECK(!start_server(&sv, "evict", g_deploy, 0, flags), "bf-serve with the eviction flags did not start (see %s)",
           sv.log);
  int a1 = connect_from("127.0.0.2", sv.port), a2 = connect_from("127.0.0.2", sv.port);
  int fails = 0;
  TU_CHECK(a1 >= 0 && a2 >= 0, "connect");
  TU_CHECK(!peer_got_error(a1, 0.2) && !peer_got_error(a2, 0.01), "the first two connections of a peer were refused");
  int a3 = connect_from("127.0.0.2", sv.port);
  printf("    third connection from 127.0.0.2 (per-peer cap 2)\n");
  fails += expect_error(a3, BF_PERR_TOO_MANY_CONN, 2, NULL, NULL, 0);
  close(a3);
  int b1 = connect_from("127.0.0.3", sv.port), b2 = connect_from("127.0.0.3", sv.port);
  TU_CHECK(b1 >= 0 && b2 >= 0, "connect");
  sleep_s(0.6); /* all four idle for longer than --evict-idle-ms */
  printf("    fresh client while 4 idle connections hold the cap of 4\n");
  fails += valid_request(sv.port, "127.0.0.1");
  int fds[4] = {a1, a2, b1, b2}, evicted = 0;
  for (int i = 0; i < 4; i++)
    if (peer_got_error(fds[i], 0.05)) evicted++, fails += expect_error(fds[i], BF_PERR_TOO_MANY_CONN, 2, NULL, NULL, 0);
  printf("    %d idle connection(s) evicted\n", evicted);
  if (evicted != 1)
    fails++, fprintf(stderr, "FAIL: %d connections evicted for one fresh client (expected 1)\n", evicted);
  for (int i = 0; i < 4; i++) close(fds[i]);
  g_evict = sv;
  return fails;
}

/* Queue depth (queued + computing) from a STATUS on connection fd. */
static int queue_depth(int fd) {
  bf_frame h, f;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_STATUS;
  uint8_t *fr, *buf = NULL;
  size_t fl, len;
  if (bf_frame_build(&h, NULL, 0, &fr, &fl)) return -1;
  send_bytes(fd, fr, fl);
  free(fr);
  int st, depth = -1;
  bf_status s;
  if (!bf_net_recv_frame(fd, 1 << 20, 5000, 5000, &buf, &len, &f, &st) && f.type == BF_MSG_STATUS_REPLY &&
      !bf_status_unpack(f.body, f.body_len, &s))
    depth = (int)s.queue_depth;
  free(buf);
  return depth;
}

/* One request computing, one queued (--queue 1): a third is refused BUSY
 * from its header, before its body is read (the body never comes). */
static int t_queue_first(void) {
  server sv = g_evict;
  TU_CHECK(sv.pid > 0, "no eviction server");
  int st = connect_from("127.0.0.7", sv.port), fails = 0;
  int a = connect_from("127.0.0.4", sv.port), b = connect_from("127.0.0.5", sv.port);
  TU_CHECK(st >= 0 && a >= 0 && b >= 0, "connect");
  uint8_t *fr;
  size_t fl;
  TU_CHECK(!make_infer(BF_Q_U8_TENSOR, BF_CODEC_RAW, &fr, &fl), "encode");
  send_bytes(a, fr, fl);
  double t0 = bf_now_sec();
  while (queue_depth(st) < 1 && bf_now_sec() - t0 < 10) sleep_s(0.01);
  send_bytes(b, fr, fl);
  int d = 0;
  while ((d = queue_depth(st)) < 2 && bf_now_sec() - t0 < 10) sleep_s(0.01);
  printf("    queue depth %d (one computing, one waiting)\n", d);
  int c = connect_from("127.0.0.6", sv.port);
  TU_CHECK(c >= 0, "connect");
  send_bytes(c, fr, BF_FRAME_HEADER);
  free(fr);
  if (d >= 2) fails += expect_error(c, BF_PERR_BUSY, 1.0, NULL, NULL, 0);
  else fails++, fprintf(stderr, "FAIL: the queue did not fill (depth %d)\n", d);
  close(a), close(b), close(c), close(st);
  fails += stop_server(&sv);
  g_evict.pid = -1;
  return fails;
}

/* Copies the split into dir with its manifest changed by edit(). */
static int bad_manifest(const char *name, void (*edit)(cJSON *), char *out, size_t cap) {
  char sub[800], p[900], q[900];
  snprintf(out, cap, "%s/%s", g_work, name);
  snprintf(sub, sizeof sub, "%s/split", out);
  BF_TRY(bf_mkdirs(sub));
  const char *files[] = {"device.safetensors", "server.safetensors"};
  for (int i = 0; i < 2; i++) {
    uint8_t *d;
    size_t l;
    snprintf(p, sizeof p, "%s/%s", g_ds->dir, files[i]);
    snprintf(q, sizeof q, "%s/%s", sub, files[i]);
    BF_TRY(bf_read_file(p, &d, &l));
    int rc = bf_write_file_atomic(q, d, l);
    free(d);
    BF_TRY(rc);
  }
  uint8_t *d;
  size_t l;
  snprintf(p, sizeof p, "%s/manifest.json", g_ds->dir);
  BF_TRY(bf_read_file(p, &d, &l));
  cJSON *root = cJSON_ParseWithLength((const char *)d, l);
  free(d);
  if (!root) return bf_error(BF_EINVAL, "manifest");
  edit(root);
  char *txt = cJSON_Print(root);
  cJSON_Delete(root);
  snprintf(q, sizeof q, "%s/manifest.json", sub);
  int rc = bf_write_file_atomic(q, txt, strlen(txt));
  free(txt);
  return rc;
}

static void set_num(cJSON *o, const char *k, int v) { cJSON_SetNumberValue(cJSON_GetObjectItem(o, k), v); }
static void feat_shape(cJSON *root, int k, int d_r) {
  cJSON *sh = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "feature"), "shape");
  cJSON_SetNumberValue(cJSON_GetArrayItem(sh, 1), bf_feature_size(g_ds->in_h, k));
  cJSON_SetNumberValue(cJSON_GetArrayItem(sh, 2), bf_feature_size(g_ds->in_w, k));
  cJSON_SetNumberValue(cJSON_GetArrayItem(sh, 3), d_r);
}
static void edit_classes(cJSON *root) {
  set_num(root, "num_classes", g_ds->num_classes - 2);
  cJSON *cn = cJSON_GetObjectItem(root, "class_names");
  cJSON_DeleteItemFromArray(cn, 0);
  cJSON_DeleteItemFromArray(cn, 0);
}
static void edit_d_r(cJSON *root) {
  set_num(root, "d_r", g_ds->d_r / 2);
  feat_shape(root, g_ds->split_after, g_ds->d_r / 2);
}
static void edit_split(cJSON *root) {
  set_num(root, "split_after", g_ds->split_after - 1);
  feat_shape(root, g_ds->split_after - 1, g_ds->d_r);
}

static int t_manifest(const char *name, void (*edit)(cJSON *), const char *field) {
  char dir[700];
  TU_CHECK(!bad_manifest(name, edit, dir, sizeof dir), "%s: %s", name, bf_last_error());
  server sv;
  int started = !start_server(&sv, name, dir, 0, NULL);
  if (started) {
    kill(sv.pid, SIGKILL);
    tu_wait_exit(sv.pid, 10);
    TU_CHECK(0, "%s: bf-serve started with a manifest whose %s disagrees with the weights", name, field);
  }
  int st = tu_wait_exit(sv.pid, 30);
  TU_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0, "%s: bf-serve exit status %d", name, st);
  int errs = count_lines(sv.log, "error");
  TU_CHECK(errs == 1 && count_lines(sv.log, field) >= 1 && count_lines(sv.log, "manifest.json") >= 1,
           "%s: expected one error line naming manifest.json and %s (see %s)", name, field, sv.log);
  printf("    %s refused at start-up\n", name);
  return 0;
}

static double cpu_sec(pid_t pid) {
  char p[64], s[1024];
  snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "r"); /* /proc files report size 0: read them as a stream */
  if (!f) return -1;
  size_t n = fread(s, 1, sizeof s - 1, f);
  fclose(f);
  s[n] = 0;
  char *e = strrchr(s, ')');
  unsigned long ut = 0, st = 0;
  /* fields after the command: state(3) ... utime(14) stime(15) */
  if (!e || sscanf(e + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int t_emfile(void) {
  server sv;
  TU_CHECK(!start_server(&sv, "emfile", g_deploy, 40, NULL), "bf-serve with 40 files did not start (see %s)", sv.log);
  int fds[60], n = 0;
  for (int i = 0; i < 60; i++)
    if ((fds[n] = connect_from("127.0.0.1", sv.port)) >= 0) n++;
  sleep_s(0.5);
  double c0 = cpu_sec(sv.pid), t0 = bf_now_sec();
  sleep_s(2.0);
  double c1 = cpu_sec(sv.pid), cpu = c1 - c0, wall = bf_now_sec() - t0;
  TU_CHECK(c0 >= 0 && c1 >= 0, "cannot read /proc/%d/stat", (int)sv.pid);
  char fdd[64];
  snprintf(fdd, sizeof fdd, "/proc/%d/fd", (int)sv.pid);
  int nfd = 0;
  DIR *dh = opendir(fdd);
  while (dh && readdir(dh)) nfd++;
  if (dh) closedir(dh);
  printf("    %d connections against a 40-file limit (bf-serve holds %d files): %.2f s CPU in %.2f s\n", n, nfd - 2,
         cpu, wall);
  for (int i = 0; i < n; i++) close(fds[i]);
  int fails = 0;
  if (cpu > 0.2 * wall)
    fails++, fprintf(stderr, "FAIL: accept at the file limit spins (%.2f s CPU in %.2f s)\n", cpu, wall);
  sleep_s(0.5);
  fails += valid_request(sv.port, "127.0.0.1");
  fails += stop_server(&sv);
  return fails;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_split_serve_security BIN_DIR WORKDIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  signal(SIGPIPE, SIG_IGN);
  g_bin = argv[1], g_work = argv[2];
  snprintf(g_deploy, sizeof g_deploy, "%s/deploy", g_work);
  TU_CHECK(!tu_make_deploy(g_work, 10, 15, 8, g_deploy), "deploy: %s", bf_last_error());
  TU_CHECK(!bf_deploy_open(&g_dep, g_deploy), "deploy: %s", bf_last_error());
  g_ds = &g_dep.splits[0];
  server sv;
  const char *flags[] = {"--frame-timeout-ms", "3000", "--idle-timeout-ms", "20000", NULL};
  TU_CHECK(!start_server(&sv, "main", g_deploy, 0, flags), "bf-serve did not start (see %s)", sv.log);
  struct {
    const char *name;
    int fails;
    double sec;
  } res[16];
  int nr = 0;
#define CASE(label, call)                     \
  do {                                        \
    printf("%s\n", label);                    \
    double t_case = bf_now_sec();             \
    res[nr].name = label;                     \
    res[nr].fails = (call);                   \
    res[nr++].sec = bf_now_sec() - t_case;    \
  } while (0)
  CASE("stale_echo", t_stale_echo(sv.port));
  CASE("header_first", t_header_first(sv.port));
  CASE("zstd_frames", t_zstd(sv.port));
  CASE("scale_range", t_scales(sv.port));
  CASE("send_failure", t_send_failure(sv.port));
  CASE("reset_mid_reply", t_reset_mid_reply(sv.port));
  CASE("internal_error", t_internal_error(&sv));
  CASE("still_serving", valid_request(sv.port, "127.0.0.1"));
  CASE("clean_stop", stop_server(&sv));
  CASE("eviction", t_eviction());
  CASE("queue_first", t_queue_first());
  CASE("manifest_num_classes", t_manifest("bad_classes", edit_classes, "num_classes"));
  CASE("manifest_d_r", t_manifest("bad_d_r", edit_d_r, "d_r"));
  CASE("manifest_split_after", t_manifest("bad_split", edit_split, "split_after"));
  CASE("emfile", t_emfile());
  int failed = 0;
  for (int i = 0; i < nr; i++) {
    printf("%-22s %-6s %5.1f s\n", res[i].name, res[i].fails ? "FAILED" : "ok", res[i].sec);
    failed += res[i].fails != 0;
  }
  bf_deploy_close(&g_dep);
  printf("%s (%d of %d cases failed)\n", failed ? "FAILED" : "OK", failed, nr);
  return failed ? 1 : 0;
}
