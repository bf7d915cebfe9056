/* Robustness of bf-serve (run under ASan in the sanitizer tree): random
 * bytes, truncated frames, a 4 GiB length field, bad CRC, wrong model id,
 * wrong shape, undecodable zstd, a client stalling mid-frame, the connection
 * cap, 64 concurrent clients. After each the server must still answer valid
 * requests; at the end SIGTERM must give a clean exit (status 0, no leaks).
 * Usage: test_split_robust BIN_DIR WORKDIR */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "net.h"
#include "quant.h"
#include "split.h"
#include "split_testutil.h"

extern char **environ;
static pid_t g_server = -1;
static int g_port;
static bf_deploy g_dep;

static void kill_server(void) {
  if (g_server > 0) {
    kill(g_server, SIGKILL);
    waitpid(g_server, NULL, 0);
    g_server = -1;
  }
}

static int raw_connect(void) {
  int fd;
  if (bf_net_connect("127.0.0.1", g_port, 5000, &fd)) return -1;
  return fd;
}

/* Reads the server's reply after misbehaving: expects an ERROR frame with
 * `code` (0: any error or a plain close) followed by the close. */
static int expect_error(int fd, uint32_t code, const char *what) {
  uint8_t *buf = NULL;
  size_t len;
  bf_frame f;
  int st;
  int rc = bf_net_recv_frame(fd, 1 << 20, 5000, 5000, &buf, &len, &f, &st);
  if (rc == 0 && f.type == BF_MSG_ERROR) {
    uint32_t got;
    char msg[512];
    bf_error_unpack(f.body, f.body_len, &got, msg, sizeof msg);
    free(buf);
    printf("  %-28s -> ERROR %s: %s\n", what, bf_perr_name(got), msg);
    TU_CHECK(!code || got == code, "%s: error %s, expected %s", what, bf_perr_name(got), bf_perr_name(code));
    /* then the connection is closed */
    uint8_t b;
    rc = bf_net_recv(fd, &b, 1, bf_now_sec() + 5, &st);
    TU_CHECK(rc && st == BF_NET_EOF, "%s: connection not closed after the error", what);
    return 0;
  }
  free(buf);
  TU_CHECK(code == 0 && rc < 0 && (st == BF_NET_EOF || st == BF_NET_EOF_CLEAN),
           "%s: expected an ERROR reply, got rc %d status %d (%s)", what, rc, st, bf_last_error());
  printf("  %-28s -> closed\n", what);
  return 0;
}

static int make_infer(const bf_deploy_split *ds, int qscheme, int codec, uint8_t **fr, size_t *fl) {
  size_t n = (size_t)ds->feat_h * ds->feat_w * ds->d_r;
  float *x = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) x[i] = (float)((i * 37) % 11) * 0.1f;
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = BF_MSG_INFER;
  h.request_id = 7;
  memcpy(h.model_id, ds->id, 32);
  uint8_t *body;
  size_t bl;
  int rc = bf_features_encode(x, ds->feat_h, ds->feat_w, ds->d_r, qscheme, codec, 3, &h, &body, &bl);
  if (!rc) rc = bf_frame_build(&h, body, bl, fr, fl);
  if (!rc) free(body);
  free(x);
  return rc;
}

/* A complete valid request on a fresh connection. */
static int valid_request(const char *what) {
  const bf_deploy_split *ds = &g_dep.splits[0];
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", g_port);
  bf_conn c;
  TU_CHECK(!bf_conn_open(&c, addr, 30000, 0), "%s: connect: %s", what, bf_last_error());
  bf_status st;
  TU_CHECK(!bf_conn_status(&c, &st), "%s: status: %s", what, bf_last_error());
  uint8_t *fr;
  size_t fl;
  TU_CHECK(!make_infer(ds, BF_Q_U8_TENSOR, BF_CODEC_ZSTD, &fr, &fl), "encode");
  bf_frame h;
  TU_CHECK(!bf_frame_parse(fr, fl, 1 << 20, &h), "own frame: %s", bf_last_error());
  bf_result r;
  int rc = bf_conn_infer(&c, &h, h.body, h.body_len, (uint32_t)ds->num_classes, &r, NULL, NULL);
  free(fr);
  bf_conn_close(&c);
  TU_CHECK(!rc, "%s: valid request failed: %s", what, bf_last_error());
  TU_CHECK(r.k == 5 && r.cls[0] < 10, "%s: bad result", what);
  return 0;
}

static int send_bytes(int fd, const void *p, size_t n) { return bf_net_send(fd, p, n, bf_now_sec() + 5, 0); }

static void *client_thread(void *arg) {
  int *ok = arg;
  *ok = valid_request("concurrent client") == 0;
  return NULL;
}

static int attacks(void) {
  const bf_deploy_split *ds = &g_dep.splits[0];
  uint8_t *fr;
  size_t fl;
  TU_CHECK(!make_infer(ds, BF_Q_U8_CHANNEL, BF_CODEC_RAW, &fr, &fl), "encode");
  int fd;
  bf_rng r;
  bf_rng_seed(&r, 42);

  /* random bytes */
  uint8_t junk[4096];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)bf_rng_u64(&r);
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  send_bytes(fd, junk, sizeof junk);
  TU_CHECK(!expect_error(fd, BF_PERR_BAD_FRAME, "random bytes"), "random bytes");
  close(fd);
  /* random bytes after a valid magic */
  memcpy(junk, "BFLY", 4);
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  send_bytes(fd, junk, sizeof junk);
  TU_CHECK(!expect_error(fd, 0, "magic + random bytes"), "magic + random");
  close(fd);
  /* truncated frame, then the client hangs up */
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  send_bytes(fd, fr, fl / 2);
  close(fd);
  TU_CHECK(!valid_request("after truncated frame"), "after truncated");
  /* 4 GiB length field */
  uint8_t big[BF_FRAME_HEADER];
  memcpy(big, fr, sizeof big);
  bf_put_u32(big + 8, 0xFFFFFFFFu);
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  send_bytes(fd, big, sizeof big);
  TU_CHECK(!expect_error(fd, BF_PERR_TOO_LARGE, "4 GiB length field"), "4GiB");
  close(fd);
  /* bad CRC */
  uint8_t *bad = malloc(fl);
  memcpy(bad, fr, fl);
  bad[fl - 1] ^= 0x5a;
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  send_bytes(fd, bad, fl);
  TU_CHECK(!expect_error(fd, BF_PERR_BAD_FRAME, "bad CRC"), "crc");
  close(fd);
  free(bad);
  /* wrong model id (frame otherwise valid) */
  {
    bf_frame h;
    bf_frame_parse(fr, fl, 1 << 20, &h);
    h.model_id[0] ^= 1;
    uint8_t *f2;
    size_t l2;
    TU_CHECK(!bf_frame_build(&h, h.body, h.body_len, &f2, &l2), "build");
    TU_CHECK((fd = raw_connect()) >= 0, "connect");
    send_bytes(fd, f2, l2);
    TU_CHECK(!expect_error(fd, BF_PERR_UNKNOWN_MODEL, "wrong model id"), "model id");
    close(fd);
    free(f2);
    /* wrong shape for this model */
    bf_frame_parse(fr, fl, 1 << 20, &h);
    float feat[4 * 4 * 3] = {0};
    uint8_t *body;
    size_t bl;
    TU_CHECK(!bf_features_encode(feat, 4, 4, 3, BF_Q_U8_TENSOR, BF_CODEC_RAW, 3, &h, &body, &bl), "enc");
    TU_CHECK(!bf_frame_build(&h, body, bl, &f2, &l2), "build");
    TU_CHECK((fd = raw_connect()) >= 0, "connect");
    send_bytes(fd, f2, l2);
    TU_CHECK(!expect_error(fd, BF_PERR_BAD_SHAPE, "wrong shape"), "shape");
    close(fd);
    free(f2);
    free(body);
    /* zstd payload that does not decode */
    bf_frame_parse(fr, fl, 1 << 20, &h);
    h.codec = BF_CODEC_ZSTD;
    uint8_t zb[8 + 64];
    memset(zb, 0x77, sizeof zb);
    bf_put_f32(zb, 0.1f);
    bf_put_u32(zb + 4, 3);
    h.qscheme = BF_Q_U8_TENSOR;
    TU_CHECK(!bf_frame_build(&h, zb, sizeof zb, &f2, &l2), "build");
    TU_CHECK((fd = raw_connect()) >= 0, "connect");
    send_bytes(fd, f2, l2);
    TU_CHECK(!expect_error(fd, BF_PERR_BAD_PAYLOAD, "undecodable zstd"), "zstd");
    close(fd);
    free(f2);
  }
  TU_CHECK(!valid_request("after bad frames"), "after bad frames");
  /* stall mid-frame: the frame timeout (1 s) closes it, others are served meanwhile */
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  send_bytes(fd, fr, 30);
  TU_CHECK(!valid_request("while a client stalls"), "during stall");
  TU_CHECK(!expect_error(fd, BF_PERR_TIMEOUT, "stall mid-frame"), "stall");
  close(fd);
  /* connection cap (--max-conns 70): hold 70 idle connections, the 71st is refused */
  int held[70], n_held = 0;
  for (int i = 0; i < 70; i++)
    if ((held[n_held] = raw_connect()) >= 0) n_held++;
  TU_CHECK(n_held == 70, "could not open 70 connections");
  struct timespec ts = {0, 300 * 1000 * 1000};
  nanosleep(&ts, NULL);
  TU_CHECK((fd = raw_connect()) >= 0, "connect");
  TU_CHECK(!expect_error(fd, BF_PERR_TOO_MANY_CONN, "connection cap"), "cap");
  close(fd);
  for (int i = 0; i < n_held; i++) close(held[i]);
  nanosleep(&ts, NULL);
  /* 64 concurrent clients */
  pthread_t th[64];
  int ok[64];
  double t0 = bf_now_sec();
  for (int i = 0; i < 64; i++) TU_CHECK(!pthread_create(&th[i], NULL, client_thread, &ok[i]), "thread");
  int n_ok = 0;
  for (int i = 0; i < 64; i++) {
    pthread_join(th[i], NULL);
    n_ok += ok[i];
  }
  printf("  64 concurrent clients: %d ok in %.1f s\n", n_ok, bf_now_sec() - t0);
  TU_CHECK(n_ok == 64, "only %d of 64 concurrent clients succeeded", n_ok);
  free(fr);
  return valid_request("at the end");
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_split_robust BIN_DIR WORKDIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  signal(SIGPIPE, SIG_IGN);
  const char *bin = argv[1], *work = argv[2];
  TU_CHECK(!bf_mkdirs(work), "mkdir");
  char ckpt[600], deploy[600], portf[600], serve[600], log[600];
  snprintf(ckpt, sizeof ckpt, "%s/m.safetensors", work);
  snprintf(deploy, sizeof deploy, "%s/deploy", work);
  snprintf(portf, sizeof portf, "%s/port", work);
  snprintf(serve, sizeof serve, "%s/bf-serve", bin);
  snprintf(log, sizeof log, "%s/serve.log", work);
  bf_backend *be;
  TU_CHECK(!bf_backend_create(&be, "cpu", 1), "backend");
  TU_CHECK(!tu_make_model(be, ckpt, 10, 13, 8, 5), "model: %s", bf_last_error());
  bf_backend_destroy(be);
  bf_export_opts o;
  bf_export_opts_init(&o);
  o.input_h = o.input_w = 64;
  TU_CHECK(!bf_split_export(ckpt, deploy, &o, NULL, 0), "export: %s", bf_last_error());
  TU_CHECK(!bf_deploy_open(&g_dep, deploy), "deploy: %s", bf_last_error());
  unlink(portf);
  char *args[] = {serve, "--deploy", deploy, "--listen", "127.0.0.1:0", "--port-file", portf, "--threads", "1",
                  "--frame-timeout-ms", "1000", "--idle-timeout-ms", "20000", "--max-conns", "70",
                  "--max-conns-per-peer", "70", "--verbose", NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  TU_CHECK(!posix_spawn(&g_server, serve, &fa, NULL, args, environ), "spawn %s", serve);
  posix_spawn_file_actions_destroy(&fa);
  atexit(kill_server);
  for (int i = 0; i < 600; i++) {
    uint8_t *d;
    size_t l;
    if (!bf_read_file(portf, &d, &l)) {
      g_port = atoi((char *)d);
      free(d);
      break;
    }
    int st;
    TU_CHECK(waitpid(g_server, &st, WNOHANG) == 0, "bf-serve died at startup (see %s)", log);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  TU_CHECK(g_port > 0, "bf-serve did not start");
  printf("bf-serve on port %d\n", g_port);
  int rc = attacks();
  /* clean shutdown */
  kill(g_server, SIGTERM);
  int st = 0;
  pid_t w = 0;
  for (int i = 0; i < 300 && w == 0; i++) {
    w = waitpid(g_server, &st, WNOHANG);
    struct timespec ts = {0, 100 * 1000 * 1000};
    if (w == 0) nanosleep(&ts, NULL);
  }
  TU_CHECK(w == g_server, "bf-serve did not stop within 30 s of SIGTERM");
  g_server = -1;
  TU_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "bf-serve exit status %d after SIGTERM (see %s)", st, log);
  bf_deploy_close(&g_dep);
  printf("%s\n", rc ? "FAILED" : "OK");
  return rc;
}
