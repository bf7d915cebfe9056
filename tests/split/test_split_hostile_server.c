/* bf-client against a hostile server (issue 14). A fake server on loopback
 * answers bf-client's STATUS and INFER with hostile STATUS_REPLY, RESULT and
 * ERROR frames, garbage, or a reset in the middle of a reply. bf-client must
 * never crash or read out of bounds (the sanitizer tree runs it under
 * ASan/UBSan): one clear error line on stderr, no RESULT line, a non-zero
 * exit status.
 * Usage: test_split_hostile_server BIN_DIR WORKDIR */
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf_data.h"
#include "net.h"
#include "split.h"
#include "split_testutil.h"

static const bf_deploy_split *g_ds;

/* ---- reply builders: bytes to send in answer to request *q ---- */
typedef struct reply {
  uint8_t *buf;
  size_t len;
  int reset; /* send only part of it, then reset the connection */
} reply;

static void frame_reply(reply *r, const bf_frame *q, int type, const uint8_t *body, size_t n) {
  bf_frame h;
  memset(&h, 0, sizeof h);
  h.type = (uint8_t)type;
  h.request_id = q->request_id;
  if (type == BF_MSG_RESULT) memcpy(h.model_id, q->model_id, BF_MODEL_ID_LEN);
  if (bf_frame_build(&h, body, n, &r->buf, &r->len)) r->buf = NULL;
}

static void result(reply *r, const bf_frame *q, uint32_t k, uint32_t ncls, uint32_t cls0, float logit0, float prob0) {
  uint8_t b[BF_RESULT_BODY];
  memset(b, 0, sizeof b);
  bf_put_u32(b, k);
  bf_put_u32(b + 4, ncls);
  bf_put_f32(b + 8, 1.0f);
  bf_put_f32(b + 12, 1.0f);
  for (uint32_t i = 0; i < BF_TOPK; i++) {
    bf_put_u32(b + 16 + 12 * i, cls0 >= i ? cls0 - i : i);
    bf_put_f32(b + 20 + 12 * i, i ? -1.0f * (float)i : logit0);
    bf_put_f32(b + 24 + 12 * i, i ? 0.01f : prob0);
  }
  frame_reply(r, q, BF_MSG_RESULT, b, sizeof b);
}

static void status(reply *r, const bf_frame *q, uint32_t n_models, size_t body_models, int split_after, float base) {
  uint8_t b[28 + 44];
  memset(b, 0, sizeof b);
  bf_put_u32(b + 8, 1);
  bf_put_f32(b + 20, 1.0f);
  bf_put_u32(b + 24, n_models);
  memcpy(b + 28, g_ds->id, BF_MODEL_ID_LEN);
  bf_put_u16(b + 60, (uint16_t)split_after);
  bf_put_u16(b + 62, (uint16_t)g_ds->d_r);
  bf_put_f32(b + 64, base);
  frame_reply(r, q, BF_MSG_STATUS_REPLY, b, 28 + 44 * body_models);
}

static void error_frame(reply *r, const bf_frame *q, uint32_t code, uint32_t claimed_len, const char *msg) {
  uint8_t b[256];
  size_t n = strlen(msg);
  bf_put_u32(b, code);
  bf_put_u32(b + 4, claimed_len ? claimed_len : (uint32_t)n);
  memcpy(b + 8, msg, n);
  frame_reply(r, q, BF_MSG_ERROR, b, 8 + n);
}

typedef struct scenario {
  const char *name;
  int on_infer; /* 0: the reply to STATUS is hostile; 1: the reply to INFER */
  int id;
  const char *expect; /* substring of bf-client's error line (NULL: any) */
} scenario;

enum {
  S_CLASS_FAR, S_CLASSES_NOT_OURS, S_K_WRONG, S_NAN_PROB, S_OTHER_REQUEST, S_STATUS_OVERFLOW, S_STATUS_NAN,
  S_STATUS_SPLIT, S_ERROR_LEN, S_ERROR_CTRL, S_GARBAGE, S_RESET_RESULT, S_RESET_STATUS
};

static const scenario k_scen[] = {
  {"RESULT class 2^31-1 of 2^32-1 classes", 1, S_CLASS_FAR, "RESULT"},
  {"RESULT 1000 classes, manifest has 10", 1, S_CLASSES_NOT_OURS, "classes"},
  {"RESULT k=2 with 10 classes", 1, S_K_WRONG, "RESULT"},
  {"RESULT NaN probability", 1, S_NAN_PROB, "RESULT"},
  {"RESULT for another request", 1, S_OTHER_REQUEST, "request"},
  {"STATUS_REPLY 1000 models in 72 bytes", 0, S_STATUS_OVERFLOW, "STATUS"},
  {"STATUS_REPLY NaN base_ms", 0, S_STATUS_NAN, "STATUS"},
  {"STATUS_REPLY our model, other split", 0, S_STATUS_SPLIT, "split"},
  {"ERROR length beyond its body", 1, S_ERROR_LEN, "ERROR"},
  {"ERROR with control bytes", 1, S_ERROR_CTRL, "INTERNAL"},
  {"garbage instead of a reply", 1, S_GARBAGE, NULL},
  {"reset in the middle of RESULT", 1, S_RESET_RESULT, NULL},
  {"reset in the middle of STATUS_REPLY", 0, S_RESET_STATUS, NULL},
};

static void build(int id, const bf_frame *q, reply *r) {
  memset(r, 0, sizeof *r);
  switch (id) {
    case S_CLASS_FAR: result(r, q, 1, 0xFFFFFFFFu, 0x7FFFFFFFu, 3.0f, 0.9f); break;
    case S_CLASSES_NOT_OURS: result(r, q, 5, 1000, 999, 3.0f, 0.9f); break;
    case S_K_WRONG: result(r, q, 2, 10, 9, 3.0f, 0.9f); break;
    case S_NAN_PROB: result(r, q, 5, 10, 9, 3.0f, NAN); break;
    case S_OTHER_REQUEST: {
      bf_frame q2 = *q;
      q2.request_id++;
      result(r, &q2, 5, 10, 9, 3.0f, 0.9f);
      break;
    }
    case S_STATUS_OVERFLOW: status(r, q, 1000, 1, g_ds->split_after, 1.0f); break;
    case S_STATUS_NAN: status(r, q, 1, 1, g_ds->split_after, NAN); break;
    case S_STATUS_SPLIT: status(r, q, 1, 1, g_ds->split_after + 1, 1.0f); break;
    case S_ERROR_LEN: error_frame(r, q, BF_PERR_BUSY, 0xFFFFFFF0u, "queue full"); break;
    case S_ERROR_CTRL: error_frame(r, q, BF_PERR_INTERNAL, 0, "bad\nline\r\x1b[2J\x07ok!!!!"); break;
    case S_GARBAGE:
      r->len = 300;
      r->buf = malloc(r->len);
      for (size_t i = 0; r->buf && i < r->len; i++) r->buf[i] = (uint8_t)(i * 131 + 7);
      break;
    case S_RESET_RESULT: result(r, q, 5, 10, 9, 3.0f, 0.9f), r->reset = 1; break;
    case S_RESET_STATUS: status(r, q, 1, 1, g_ds->split_after, 1.0f), r->reset = 1; break;
  }
}

/* Serves one bf-client connection: an honest STATUS_REPLY unless the
 * scenario attacks STATUS, then the hostile reply. */
static int fake_server(int lfd, const scenario *sc) {
  struct pollfd p = {lfd, POLLIN, 0};
  TU_CHECK(poll(&p, 1, 60000) == 1, "bf-client did not connect");
  int fd = accept(lfd, NULL, NULL);
  TU_CHECK(fd >= 0, "accept");
  uint8_t *buf = NULL;
  size_t len;
  bf_frame q;
  int st, rc = 0;
  for (int stage = 0; stage < 2 && !rc; stage++) {
    rc = bf_net_recv_frame(fd, 1 << 20, 30000, 30000, &buf, &len, &q, &st);
    if (rc) {
      fprintf(stderr, "FAIL: fake server: no request from bf-client: %s\n", bf_last_error());
      break;
    }
    reply r;
    memset(&r, 0, sizeof r);
    if (stage == sc->on_infer) build(sc->id, &q, &r);
    else status(&r, &q, 1, 1, g_ds->split_after, 1.0f);
    free(buf);
    if (!r.buf) {
      rc = 1;
      break;
    }
    size_t n = r.reset ? r.len / 2 : r.len;
    bf_net_send(fd, r.buf, n, bf_now_sec() + 5, 0);
    free(r.buf);
    if (r.reset) {
      struct linger lg = {1, 0}; /* close with RST */
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      break;
    }
    if (stage == sc->on_infer) {
      /* bf-client must now give up and close */
      uint8_t b;
      bf_net_recv(fd, &b, 1, bf_now_sec() + 30, &st);
      break;
    }
  }
  close(fd);
  return rc;
}

static int contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && (hay[i] | 32) == (needle[i] | 32)) i++;
    if (i == n) return 1;
  }
  return 0;
}

static int run_scenario(const char *client, const char *deploy, const char *img, int port, int lfd, const char *work,
                        const scenario *sc) {
  char addr[64], out[700], err[700];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  snprintf(out, sizeof out, "%s/client_%d.out", work, sc->id);
  snprintf(err, sizeof err, "%s/client_%d.err", work, sc->id);
  char split[16];
  snprintf(split, sizeof split, "%d", g_ds->split_after);
  char *argv[] = {(char *)client, "--deploy", (char *)deploy, "--server", addr, "--split", split, "--threads", "1",
                  "--timeout-ms", "10000", (char *)img, NULL};
  pid_t pid;
  TU_CHECK(!tu_spawn(argv, out, err, 0, &pid), "spawn bf-client: %s", bf_last_error());
  int frc = fake_server(lfd, sc);
  int ws = tu_wait_exit(pid, 60);
  TU_CHECK(!frc, "%s: fake server failed", sc->name);
  TU_CHECK(ws != -1, "%s: bf-client hung", sc->name);
  TU_CHECK(!WIFSIGNALED(ws), "%s: bf-client killed by signal %d", sc->name, WTERMSIG(ws));
  uint8_t *o = NULL, *e = NULL;
  size_t ol = 0, el = 0;
  bf_read_file(out, &o, &ol);
  bf_read_file(err, &e, &el);
  char *es = calloc(el + 1, 1), *os = calloc(ol + 1, 1);
  if (e) memcpy(es, e, el);
  if (o) memcpy(os, o, ol);
  free(e), free(o);
  int lines = 0;
  for (size_t i = 0; i < el; i++) lines += es[i] == '\n';
  int ok = 1;
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) == 0)
    ok = 0, fprintf(stderr, "FAIL %s: exit status 0, expected an error\n", sc->name);
  if (strstr(os, "RESULT image=")) ok = 0, fprintf(stderr, "FAIL %s: bf-client printed a RESULT:\n%s", sc->name, os);
  if (lines != 1 || strncmp(es, "bf-client: ", 11))
    ok = 0,
    fprintf(stderr, "FAIL %s: expected one 'bf-client: ...' error line, got %d lines:\n%s", sc->name, lines, es);
  if (sc->expect && !contains_nocase(es, sc->expect))
    ok = 0, fprintf(stderr, "FAIL %s: error line does not mention '%s': %s", sc->name, sc->expect, es);
  printf("  %-40s %s -> %s", sc->name, ok ? "ok" : "FAILED", es);
  free(es), free(os);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_split_hostile_server BIN_DIR WORKDIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  signal(SIGPIPE, SIG_IGN);
  const char *bin = argv[1], *work = argv[2];
  char deploy[600], client[600], img[600];
  snprintf(deploy, sizeof deploy, "%s/deploy", work);
  snprintf(client, sizeof client, "%s/bf-client", bin);
  snprintf(img, sizeof img, "%s/img.png", work);
  /* split after RB2: the device half bf-client runs is small */
  TU_CHECK(!tu_make_deploy(work, 10, 2, 8, deploy), "deploy: %s", bf_last_error());
  bf_deploy dep;
  TU_CHECK(!bf_deploy_open(&dep, deploy), "deploy: %s", bf_last_error());
  g_ds = &dep.splits[0];
  uint8_t px[64 * 64 * 3];
  tu_image_u8(px, 64, 64, 3);
  TU_CHECK(!bf_png_write(img, px, 64, 64, 3), "png: %s", bf_last_error());
  int lfd, port;
  TU_CHECK(!bf_net_listen("127.0.0.1", 0, 8, &lfd, &port), "listen: %s", bf_last_error());
  int failed = 0;
  for (size_t i = 0; i < sizeof k_scen / sizeof k_scen[0]; i++)
    failed += run_scenario(client, deploy, img, port, lfd, work, &k_scen[i]);
  close(lfd);
  bf_deploy_close(&dep);
  printf("%s (%d of %zu scenarios failed)\n", failed ? "FAILED" : "OK", failed, sizeof k_scen / sizeof k_scen[0]);
  return failed ? 1 : 0;
}
