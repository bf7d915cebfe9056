/* bf-client: the device side. Runs the device half, quantises, sends the
 * features to bf-serve and prints the top-5 with a per-stage breakdown.
 * Modes: --split K, --split auto (paper section III-C), --cloud-only, --local. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bf_core.h"
#include "cli_common.h"
#include "client.h"
#include "engine.h"
#include "net.h"
#include "preprocess.h"
#include "quant.h"
#include "rans.h"
#include "split.h"
#include "tls.h"

static void usage(void) {
  printf("usage: bf-client --deploy DEPLOY --server HOST:PORT [mode] [options] IMAGE...\n"
         "\n"
         "modes:\n"
         "  --split K               device half of split K, features to the server (default: the\n"
         "                          only split, or auto with several)\n"
         "  --split auto            pick the split with the lowest estimated latency from the\n"
         "                          server's STATUS, the uplink and the measured device time;\n"
         "                          re-probe every --probe-every requests / --probe-sec seconds\n"
         "  --cloud-only            send the RGB8 input, the server runs the whole model\n"
         "  --local                 run the whole model on the device (no server)\n"
         "options:\n"
         "  --uplink-mbps X         emulate an uplink of X Mbit/s by pacing the socket\n"
         "                          (3G 1.1, 4G 5.85, Wi-Fi 18.88; default: no pacing)\n"
         "  --quant per-tensor|per-channel|none   override the manifest's quantisation (8 bits, the\n"
         "                          range of each image; without it a quantisation-aware export's\n"
         "                          codes use its trained bits and clip)\n"
         "  --dump-codes FILE       write each image's feature codes (uint8, NHWC, what was sent; raw\n"
         "                          or rans codec, rans decoded back) to FILE, one after the other\n"
         "  --codec raw|zstd|rans   override the manifest's lossless stage (rans: the export's tables)\n"
         "  --repeat N              run every image N times (benchmarks)\n"
         "  --probe-every N         auto: STATUS probe every N requests (default 10)\n"
         "  --probe-sec S           auto: ... or after S seconds (default 2)\n"
         "  --device-slowdown F     emulate a device F times slower than this machine (sleeps\n"
         "                          after the device half; estimates scale too; default 1)\n"
         "  --timeout-ms MS         connect and reply timeout (default 30000)\n"
         "  --backend NAME, --threads N   device compute\n"
         "TLS 1.3 (docs/security.md):\n"
         "  --tls                   connect with TLS, verify the server with the system's CAs\n"
         "  --tls-ca FILE           ... with the CA certificate(s) in FILE instead (implies --tls)\n"
         "  --tls-cert FILE --tls-key FILE   client certificate and key, for mutual TLS\n"
         "  --tls-server-name NAME  the name (or IP) the server certificate must carry\n"
         "                          (default: the host of --server)\n"
         "output: one 'RESULT key=value ...' line per image, 'AUTO ...' lines when the split\n"
         "choice is (re)made, and a final 'SUMMARY ...' line (connect_ms: TCP connect plus the TLS\n"
         "handshake).\n");
}

enum { M_SPLIT, M_AUTO, M_CLOUD, M_LOCAL };

typedef struct split_rt {
  const bf_deploy_split *ds;
  bf_engine *dev;
  double dev_ms;
} split_rt;

typedef struct opts {
  const char *deploy, *server, *backend, *dump_codes;
  const char *tls_ca, *tls_cert, *tls_key, *tls_name;
  int tls;
  int mode, split_k, quant, codec, threads, repeat, probe_every, timeout_ms;
  double uplink, probe_sec, slowdown;
} opts;

static double now_ms(void) { return bf_now_sec() * 1e3; }

static void sleep_ms(double ms) {
  if (ms <= 0) return;
  struct timespec ts = {(time_t)(ms / 1e3), (long)(fmod(ms, 1e3) * 1e6)};
  nanosleep(&ts, NULL);
}

static size_t frame_bytes(const bf_deploy_split *ds, int q) {
  return (size_t)bf_infer_raw_frame_len(q, (uint64_t)ds->feat_h * ds->feat_w * ds->d_r, (uint32_t)ds->d_r);
}

/* Paper III-C: estimated end-to-end latency of each split; returns the index. */
static int choose(const opts *o, split_rt *sp, int n, const bf_status *st, int verbose_line, double *est) {
  int best = -1;
  double best_ms = 0;
  char line[2048];
  int off = snprintf(line, sizeof line, "AUTO queue=%u load=%.2f service_ms=%.2f", st->queue_depth, st->load_factor,
                     st->recent_service_ms);
  for (int i = 0; i < n; i++) {
    const bf_status_model *m = NULL;
    for (uint32_t j = 0; j < st->n_models; j++)
      if (!memcmp(st->models[j].id, sp[i].ds->id, BF_MODEL_ID_LEN)) m = &st->models[j];
    if (est) est[i] = 1e300;
    if (!m) continue; /* not served there */
    int q = o->quant >= 0 ? o->quant : (int)sp[i].ds->qscheme;
    double dev = sp[i].dev_ms * o->slowdown;
    double up = o->uplink > 0 ? frame_bytes(sp[i].ds, q) * 8.0 / (o->uplink * 1e6) * 1e3 : 0;
    double srv = m->base_ms * (st->load_factor > 0 ? st->load_factor : 1) +
                 st->queue_depth * st->recent_service_ms / (st->workers ? st->workers : 1);
    double tot = dev + up + srv;
    if (est) est[i] = tot;
    if (off < (int)sizeof line - 100)
      off += snprintf(line + off, sizeof line - off, " split%d=%.2f(dev %.2f + up %.2f + srv %.2f)",
                      sp[i].ds->split_after, tot, dev, up, srv);
    if (best < 0 || tot < best_ms) best = i, best_ms = tot;
  }
  if (best >= 0 && verbose_line) printf("%s -> split %d\n", line, sp[best].ds->split_after);
  return best;
}

/* A STATUS_REPLY that lists one of our models must agree with our manifest. */
static int status_agrees(const bf_status *st, const bf_deploy *dep) {
  for (int i = 0; i < dep->n; i++)
    BF_TRY(bf_status_check_model(st, dep->splits[i].id, dep->splits[i].split_after, dep->splits[i].d_r));
  return BF_OK;
}

typedef struct stats {
  double *total;
  int n;
  double dev, enc, up, srv, bytes;
} stats;

int main(int argc, char **argv) {
  cli_prog = "bf-client";
  opts o = {0};
  o.backend = "cpu";
  o.mode = -1;
  o.quant = o.codec = -1;
  o.repeat = 1;
  o.probe_every = 10;
  o.probe_sec = 2;
  o.slowdown = 1;
  o.timeout_ms = 30000;
  const char **images = calloc((size_t)argc, sizeof *images);
  int n_images = 0, rc;
  if (!images) return cli_fail("out of memory");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    long x;
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage();
      return 0;
    } else if (cli_is(a, "--deploy")) {
      if ((rc = cli_value(argc, argv, &i, &o.deploy))) return rc;
    } else if (cli_is(a, "--server")) {
      if ((rc = cli_value(argc, argv, &i, &o.server))) return rc;
    } else if (cli_is(a, "--backend")) {
      if ((rc = cli_value(argc, argv, &i, &o.backend))) return rc;
    } else if (cli_is(a, "--split")) {
      const char *eq = strchr(a, '=');
      if (eq ? !strcmp(eq + 1, "auto") : (i + 1 < argc && !strcmp(argv[i + 1], "auto"))) {
        o.mode = M_AUTO;
        if (!eq) i++;
      } else {
        if ((rc = cli_int(argc, argv, &i, 1, 16, &x))) return rc;
        o.split_k = (int)x;
        if (o.mode != M_CLOUD && o.mode != M_LOCAL) o.mode = M_SPLIT;
      }
    } else if (cli_flag(a, "--cloud-only")) {
      o.mode = M_CLOUD;
    } else if (cli_flag(a, "--local")) {
      o.mode = M_LOCAL;
    } else if (cli_is(a, "--uplink-mbps")) {
      if ((rc = cli_float(argc, argv, &i, 0, 1e6, &o.uplink))) return rc;
    } else if (cli_is(a, "--quant")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      bf_qscheme qs;
      if (bf_qscheme_parse_cli(a, v, &qs)) return cli_fail_bf(NULL);
      o.quant = (int)qs;
    } else if (cli_is(a, "--dump-codes")) {
      if ((rc = cli_value(argc, argv, &i, &o.dump_codes))) return rc;
    } else if (cli_is(a, "--codec")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      bf_codec cd;
      if (bf_codec_parse_cli(a, v, &cd)) return cli_fail_bf(NULL);
      o.codec = (int)cd;
    } else if (cli_is(a, "--repeat")) {
      if ((rc = cli_int(argc, argv, &i, 1, 100000, &x))) return rc;
      o.repeat = (int)x;
    } else if (cli_is(a, "--probe-every")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000, &x))) return rc;
      o.probe_every = (int)x;
    } else if (cli_is(a, "--probe-sec")) {
      if ((rc = cli_float(argc, argv, &i, 0.001, 1e6, &o.probe_sec))) return rc;
    } else if (cli_is(a, "--device-slowdown")) {
      if ((rc = cli_float(argc, argv, &i, 1, 1000, &o.slowdown))) return rc;
    } else if (cli_is(a, "--timeout-ms")) {
      if ((rc = cli_int(argc, argv, &i, 10, 3600000, &x))) return rc;
      o.timeout_ms = (int)x;
    } else if (cli_is(a, "--threads")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1024, &x))) return rc;
      o.threads = (int)x;
    } else if (cli_flag(a, "--tls")) {
      o.tls = 1;
    } else if (cli_is(a, "--tls-ca")) {
      if ((rc = cli_value(argc, argv, &i, &o.tls_ca))) return rc;
      o.tls = 1;
    } else if (cli_is(a, "--tls-cert")) {
      if ((rc = cli_value(argc, argv, &i, &o.tls_cert))) return rc;
      o.tls = 1;
    } else if (cli_is(a, "--tls-key")) {
      if ((rc = cli_value(argc, argv, &i, &o.tls_key))) return rc;
      o.tls = 1;
    } else if (cli_is(a, "--tls-server-name")) {
      if ((rc = cli_value(argc, argv, &i, &o.tls_name))) return rc;
      o.tls = 1;
    } else if (a[0] == '-' && a[1] == '-') {
      return cli_fail("unknown argument '%s' (see --help)", a);
    } else {
      images[n_images++] = a;
    }
  }
  if (!o.deploy) return cli_fail("--deploy is required (see --help)");
  if (!n_images) return cli_fail("no IMAGE given (see --help)");
  /* Everything below is released at `done`, on success and on every error. */
  bf_deploy dep = {0};
  bf_backend *be = NULL;
  split_rt sp[64];
  memset(sp, 0, sizeof sp);
  int n_sp = 0, status = 0;
  bf_engine *full = NULL;
  bf_conn conn = {.fd = -1};
  uint8_t *rgb = NULL;
  float *x = NULL, *logits = NULL, *feat = NULL;
  stats S = {0};
  bf_tls_ctx *tls = NULL;
  FILE *dump = NULL;
#define FAIL_TO_DONE(rc) \
  do {                   \
    status = (rc);       \
    goto done;           \
  } while (0)
  if (bf_deploy_open(&dep, o.deploy)) FAIL_TO_DONE(cli_fail_bf(NULL));
  if (o.dump_codes && !(dump = fopen(o.dump_codes, "wb")))
    FAIL_TO_DONE(cli_fail("--dump-codes %s: cannot create: %s", o.dump_codes, strerror(errno)));
  if (o.mode < 0) o.mode = dep.n > 1 ? M_AUTO : M_SPLIT;
  if (o.mode != M_LOCAL && !o.server) FAIL_TO_DONE(cli_fail("--server HOST:PORT is required (or --local)"));
  const bf_deploy_split *ds0 = o.split_k ? bf_deploy_find(&dep, o.split_k) : &dep.splits[0];
  if (!ds0) FAIL_TO_DONE(cli_fail("%s has no export split after RB%d", o.deploy, o.split_k));
  for (int i = 1; i < dep.n; i++)
    if (dep.splits[i].in_h != ds0->in_h || dep.splits[i].in_w != ds0->in_w || dep.splits[i].resize != ds0->resize)
      FAIL_TO_DONE(cli_fail("%s: splits disagree on the input size or resize", o.deploy));
  if (ds0->in_h != ds0->in_w) FAIL_TO_DONE(cli_fail("%s: input %dx%d is not square", o.deploy, ds0->in_w, ds0->in_h));

  if (bf_backend_create(&be, o.backend, o.threads)) FAIL_TO_DONE(cli_fail_bf("backend"));
  if (o.mode == M_LOCAL) {
    const char *both[2] = {ds0->device_path, ds0->server_path};
    if (bf_deploy_verify(ds0, 1, 1) || bf_engine_load(&full, be, both, 2) ||
        bf_deploy_check_engine(ds0, full, "whole-model"))
      FAIL_TO_DONE(cli_fail_bf("whole model"));
  } else if (o.mode == M_SPLIT || o.mode == M_AUTO) {
    for (int i = 0; i < dep.n && n_sp < 64; i++) {
      const bf_deploy_split *ds = &dep.splits[i];
      if (o.mode == M_SPLIT && ds != ds0) continue;
      split_rt *r = &sp[n_sp];
      r->ds = ds;
      if (bf_deploy_verify(ds, 1, 0) || bf_engine_load(&r->dev, be, (const char *[]){ds->device_path}, 1) ||
          bf_deploy_check_engine(ds, r->dev, "device-half"))
        FAIL_TO_DONE(cli_fail_bf("device half"));
      int fh, fw, fc;
      if (bf_engine_plan(r->dev, 1, ds->in_h, ds->in_w, &fh, &fw, &fc)) FAIL_TO_DONE(cli_fail_bf("device half"));
      if (fh != ds->feat_h || fw != ds->feat_w || fc != ds->d_r)
        FAIL_TO_DONE(cli_fail("split-%d: device half gives %dx%dx%d, manifest says %dx%dx%d", ds->split_after, fh, fw,
                              fc, ds->feat_h, ds->feat_w, ds->d_r));
      if (o.mode == M_AUTO) { /* measure the device half once (after a warm-up run) */
        float *in = calloc((size_t)ds->in_h * ds->in_w * 3, sizeof(float));
        float *out = malloc((size_t)fh * fw * fc * sizeof(float));
        int bad = !in || !out ? cli_fail("out of memory") : 0;
        for (int k = 0; k < 2 && !bad; k++) {
          double t = now_ms();
          if (bf_engine_run(r->dev, in, out)) bad = cli_fail_bf("device half");
          r->dev_ms = now_ms() - t;
        }
        free(in);
        free(out);
        if (bad) FAIL_TO_DONE(bad);
      }
      n_sp++;
    }
  }
  bf_status st;
  double connect_ms = 0;
  if (o.mode != M_LOCAL) {
    signal(SIGPIPE, SIG_IGN); /* a vanished server is an error message, not a signal (TLS writes) */
    if (o.tls && bf_tls_client_new(&tls, o.tls_ca, o.tls_cert, o.tls_key, o.tls_name)) FAIL_TO_DONE(cli_fail_bf(NULL));
    double tc = now_ms();
    if (bf_conn_open_tls(&conn, o.server, o.timeout_ms, o.uplink, tls)) FAIL_TO_DONE(cli_fail_bf(NULL));
    connect_ms = now_ms() - tc;
    int loopback = 1;
    if (!tls && !bf_net_is_loopback(conn.host, &loopback) && !loopback)
      fprintf(stderr, "bf-client: warning: plain TCP to %s: the features cross the network in clear text "
                      "(--tls-ca: docs/security.md)\n", o.server);
    if (bf_conn_status(&conn, &st) || status_agrees(&st, &dep)) FAIL_TO_DONE(cli_fail_bf("STATUS"));
    /* the server must serve the models we are going to use */
    for (int i = 0; i < (o.mode == M_CLOUD ? 1 : n_sp); i++) {
      const bf_deploy_split *ds = o.mode == M_CLOUD ? ds0 : sp[i].ds;
      int found = 0;
      for (uint32_t j = 0; j < st.n_models; j++) found |= !memcmp(st.models[j].id, ds->id, BF_MODEL_ID_LEN);
      if (!found && (o.mode != M_AUTO || n_sp == 1))
        FAIL_TO_DONE(cli_fail("server %s does not serve split-%d (model %.16s): it answers for another model or export",
                        o.server, ds->split_after, ds->id_hex));
    }
  }
  int cur = 0;
  if (o.mode == M_AUTO) {
    cur = choose(&o, sp, n_sp, &st, 1, NULL);
    if (cur < 0)
      FAIL_TO_DONE(cli_fail("server %s serves none of the splits in %s (another model?)", o.server, o.deploy));
  }
  size_t px = (size_t)ds0->in_h * ds0->in_w;
  rgb = malloc(px * 3);
  x = malloc(px * 3 * sizeof(float));
  logits = malloc((size_t)ds0->num_classes * sizeof(float));
  size_t feat_cap = 0;
  for (int i = 0; i < n_sp; i++) {
    size_t n = (size_t)sp[i].ds->feat_h * sp[i].ds->feat_w * sp[i].ds->d_r;
    if (n > feat_cap) feat_cap = n;
  }
  feat = malloc((feat_cap ? feat_cap : 1) * sizeof(float));
  S.total = calloc((size_t)n_images * o.repeat, sizeof(double));
  if (!rgb || !x || !logits || !feat || !S.total) FAIL_TO_DONE(cli_fail("out of memory"));
  const char *mode_name = o.mode == M_LOCAL ? "local" : o.mode == M_CLOUD ? "cloud" : o.mode == M_AUTO ? "auto" : "split";
  double last_probe = now_ms();
  int since_probe = 0;
  for (int r = 0; r < o.repeat && !status; r++)
    for (int ii = 0; ii < n_images && !status; ii++) {
      const char *path = images[ii];
      if (o.mode == M_AUTO && (since_probe >= o.probe_every || now_ms() - last_probe > o.probe_sec * 1e3)) {
        if (bf_conn_status(&conn, &st) || status_agrees(&st, &dep)) {
          status = cli_fail_bf("STATUS");
          break;
        }
        double est[64];
        int next = choose(&o, sp, n_sp, &st, 0, est);
        /* hysteresis: move only for a clear (10%) gain, so noise does not flap */
        if (next >= 0 && next != cur && est[next] < 0.9 * est[cur]) {
          choose(&o, sp, n_sp, &st, 1, NULL);
          cur = next;
        }
        since_probe = 0;
        last_probe = now_ms();
      }
      double t0 = now_ms();
      if (bf_load_image_rgb(path, ds0->resize, ds0->in_w, rgb)) {
        status = cli_fail_bf(path);
        break;
      }
      double t_prep = now_ms();
      double dev_ms = 0, enc_ms = 0, up_ms = 0, srv_ms = 0;
      size_t bytes = 0;
      bf_result res;
      memset(&res, 0, sizeof res);
      const bf_deploy_split *ds = ds0;
      if (o.mode == M_LOCAL) {
        bf_normalize_rgb(rgb, px, ds->mean, ds->std, x);
        if (bf_engine_plan(full, 1, ds->in_h, ds->in_w, NULL, NULL, NULL) || bf_engine_run(full, x, logits)) {
          status = cli_fail_bf("whole model");
          break;
        }
        bf_result_topk(logits, ds->num_classes, &res);
        dev_ms = now_ms() - t_prep;
      } else if (o.mode == M_CLOUD) {
        bf_frame h;
        memset(&h, 0, sizeof h);
        h.type = BF_MSG_INFER_IMAGE;
        memcpy(h.model_id, ds->id, BF_MODEL_ID_LEN);
        h.qscheme = BF_Q_U8_PIXELS;
        h.codec = BF_CODEC_RAW;
        h.n = 1, h.h = (uint16_t)ds->in_h, h.w = (uint16_t)ds->in_w, h.c = 3;
        h.raw_len = (uint32_t)(px * 3);
        if (bf_conn_infer(&conn, &h, rgb, px * 3, (uint32_t)ds->num_classes, &res, &up_ms, &bytes)) {
          status = cli_fail_bf(NULL);
          break;
        }
        srv_ms = res.server_ms;
      } else {
        split_rt *s = &sp[cur];
        ds = s->ds;
        bf_normalize_rgb(rgb, px, ds->mean, ds->std, x);
        double t1 = now_ms();
        if (bf_engine_run(s->dev, x, feat)) {
          status = cli_fail_bf("device half");
          break;
        }
        dev_ms = now_ms() - t1;
        if (o.slowdown > 1) {
          sleep_ms(dev_ms * (o.slowdown - 1));
          dev_ms = now_ms() - t1;
        }
        double t2 = now_ms();
        bf_frame h;
        memset(&h, 0, sizeof h);
        h.type = BF_MSG_INFER;
        memcpy(h.model_id, ds->id, BF_MODEL_ID_LEN);
        uint8_t *body;
        size_t blen;
        int q = o.quant >= 0 ? o.quant : (int)ds->qscheme, c = o.codec >= 0 ? o.codec : (int)ds->codec;
        /* a quantisation-aware model: the fixed range it was trained with */
        bf_qfixed fx;
        if (bf_features_encode_ex(feat, ds->feat_h, ds->feat_w, ds->d_r, (bf_qscheme)q,
                                  o.quant < 0 ? bf_deploy_qfixed(ds, &fx) : NULL, (bf_codec)c, ds->zstd_level, ds->rans,
                                  &h, &body, &blen)) {
          status = cli_fail_bf("encode");
          break;
        }
        enc_ms = now_ms() - t2;
        if (dump) { /* the payload after the (scale, zero point) pairs; rans: decoded back */
          size_t nq = h.qscheme == BF_Q_U8_TENSOR ? 1 : h.qscheme == BF_Q_U8_CHANNEL ? h.c : 0;
          if ((h.codec != BF_CODEC_RAW && h.codec != BF_CODEC_RANS) || h.qscheme == BF_Q_F32) {
            free(body);
            status = cli_fail("--dump-codes needs uint8 codes with --codec raw or rans");
            break;
          }
          uint8_t *codes = body + nq * 8, *dec = NULL;
          if (h.codec == BF_CODEC_RANS &&
              (!(dec = bf_malloc(h.raw_len, "codes")) ||
               bf_rans_decode(ds->rans, codes, blen - nq * 8, h.w, dec, h.raw_len))) {
            free(dec);
            free(body);
            status = cli_fail_bf("--dump-codes: rans stream");
            break;
          }
          size_t wr = fwrite(dec ? dec : codes, 1, h.raw_len, dump);
          free(dec);
          if (wr != h.raw_len) {
            free(body);
            status = cli_fail("--dump-codes %s: write failed: %s", o.dump_codes, strerror(errno));
            break;
          }
        }
        rc = bf_conn_infer(&conn, &h, body, blen, (uint32_t)ds->num_classes, &res, &up_ms, &bytes);
        free(body);
        if (rc) {
          status = cli_fail_bf(NULL);
          break;
        }
        srv_ms = res.server_ms;
        since_probe++;
      }
      double total = now_ms() - t0;
      char top5[512];
      int off = 0;
      for (uint32_t k = 0; k < res.k; k++)
        off += snprintf(top5 + off, sizeof top5 - off, "%s%u:%.6f:%.4f", k ? "," : "", res.cls[k], res.logit[k],
                        res.prob[k]);
      printf("RESULT image=%s mode=%s split=%d top1=%u class=%s prob=%.4f top5=%s prep_ms=%.2f device_ms=%.2f "
             "encode_ms=%.2f upload_ms=%.2f server_ms=%.2f total_ms=%.2f bytes=%zu\n",
             path, mode_name, o.mode == M_CLOUD || o.mode == M_LOCAL ? 0 : ds->split_after, res.cls[0],
             ds->class_names[res.cls[0]], res.prob[0], top5, t_prep - t0, dev_ms, enc_ms, up_ms, srv_ms, total,
             bytes);
      fflush(stdout);
      S.total[S.n++] = total;
      S.dev += dev_ms, S.enc += enc_ms, S.up += up_ms, S.srv += srv_ms, S.bytes += (double)bytes;
    }
  if (!status && S.n) {
    double *t = S.total;
    for (int i = 1; i < S.n; i++) /* insertion sort for the median */
      for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
        double tmp = t[j];
        t[j] = t[j - 1], t[j - 1] = tmp;
      }
    double sum = 0;
    for (int i = 0; i < S.n; i++) sum += t[i];
    printf("SUMMARY mode=%s images=%d uplink_mbps=%g total_ms_mean=%.2f total_ms_median=%.2f device_ms_mean=%.2f "
           "encode_ms_mean=%.2f upload_ms_mean=%.2f server_ms_mean=%.2f bytes_mean=%.0f connect_ms=%.3f tls=%d\n",
           mode_name, S.n, o.uplink, sum / S.n, t[S.n / 2], S.dev / S.n, S.enc / S.n, S.up / S.n, S.srv / S.n,
           S.bytes / S.n, connect_ms, tls != NULL);
  }
done:
  if (dump && fclose(dump) && !status) status = cli_fail("--dump-codes %s: %s", o.dump_codes, strerror(errno));
  bf_conn_close(&conn);
  bf_tls_free(tls);
  for (int i = 0; i < 64; i++) bf_engine_free(sp[i].dev); /* also a half that failed its checks */
  bf_engine_free(full);
  bf_backend_destroy(be);
  bf_deploy_close(&dep);
  free(images), free(rgb), free(x), free(logits), free(feat), free(S.total);
  return status;
}
