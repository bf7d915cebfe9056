/* bf-profile's measurements (hwprofile.h): every split point of a deploy
 * directory timed on this machine with the engine loops of measure.c, the
 * frame bytes from the client's encoder (bf_features_encode) and the energy
 * from the RAPL counters where Linux exposes them. The JSON side is
 * hwprofile_json.c. */
#include "hwprofile.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "backend.h"
#include "bf_core.h"
#include "engine.h"
#include "quant.h"

const char *bf_hwprof_side_name(bf_hwprof_side s) { return s == BF_HWPROF_SERVER ? "server" : "device"; }
const char *bf_hwprof_default_file(bf_hwprof_side s) {
  return s == BF_HWPROF_SERVER ? "server-profile.json" : "device-profile.json";
}

/* ---- RAPL (powercap): the package zones' energy_uj counters. Since Linux
 * 5.10 they are readable by root only (CVE-2020-8694), so an unprivileged
 * run usually falls back to the modelled figure. A counter wraps at
 * max_energy_range_uj. ---- */
#define RAPL_MAX 8
typedef struct rapl {
  int n;
  char path[RAPL_MAX][600];
  double max_uj[RAPL_MAX];
} rapl;

static int read_double(const char *path, double *v) {
  FILE *fp = fopen(path, "r");
  if (!fp) return -1;
  int ok = fscanf(fp, "%lf", v) == 1;
  fclose(fp);
  return ok ? 0 : -1;
}

/* 1: counters readable; 0: none (the caller models the energy). */
static int rapl_open(rapl *r, const char *dir) {
  memset(r, 0, sizeof *r);
  DIR *dh = opendir(dir);
  if (!dh) return 0;
  struct dirent *de;
  while ((de = readdir(dh)) && r->n < RAPL_MAX) {
    /* top-level package zones "intel-rapl:N" (AMD's use the same name);
     * their subzones "intel-rapl:N:M" are parts of the package */
    const char *c = strchr(de->d_name, ':');
    if (strncmp(de->d_name, "intel-rapl", 10) || !c || strchr(c + 1, ':')) continue;
    char p[600];
    double v, mx;
    snprintf(r->path[r->n], sizeof r->path[r->n], "%s/%s/energy_uj", dir, de->d_name);
    snprintf(p, sizeof p, "%s/%s/max_energy_range_uj", dir, de->d_name);
    if (read_double(r->path[r->n], &v) || read_double(p, &mx) || !(mx > 0)) {
      r->n = 0; /* one unreadable package: no measurement */
      break;
    }
    r->max_uj[r->n++] = mx;
  }
  closedir(dh);
  return r->n > 0;
}

static int rapl_read(const rapl *r, double *uj) {
  for (int i = 0; i < r->n; i++)
    if (read_double(r->path[i], &uj[i])) return bf_error(BF_EIO, "%s: cannot read", r->path[i]);
  return 0;
}

static double rapl_delta_uj(const rapl *r, const double *a, const double *b) {
  double d = 0;
  for (int i = 0; i < r->n; i++) d += b[i] >= a[i] ? b[i] - a[i] : b[i] + r->max_uj[i] - a[i];
  return d;
}

static void host_description(char *out, size_t cap) {
  struct utsname u;
  char cpu[256] = "unknown CPU", line[512];
  FILE *fp = fopen("/proc/cpuinfo", "r");
  while (fp && fgets(line, sizeof line, fp)) {
    /* x86: "model name"; many arm64 kernels print no name, only the part */
    if (!strncmp(line, "model name", 10) || !strncmp(line, "Model", 5) || !strncmp(line, "CPU part", 8)) {
      const char *v = strchr(line, ':');
      if (!v) continue;
      for (v++; *v == ' ' || *v == '\t'; v++) {}
      snprintf(cpu, sizeof cpu, "%.*s", (int)strcspn(v, "\n"), v);
      if (line[0] == 'm') break;
    }
  }
  if (fp) fclose(fp);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (uname(&u)) snprintf(out, cap, "unknown host; %s; %ld cores", cpu, cores);
  else snprintf(out, cap, "%s; %s %s %s; %s; %ld cores", u.nodename, u.sysname, u.release, u.machine, cpu, cores);
}

/* What one timed part needs. */
typedef struct part {
  const bf_hwprof_opts *o;
  const rapl *r;
  int have_rapl;
  double *t, *t2; /* runs each */
} part;

/* Energy of the timed runs per image: RAPL, or the configured power x the
 * median time. */
static int energy_of(const part *pt, const double *e0, const double *e1, const bf_timing *tm, double *mj) {
  if (pt->have_rapl) *mj = rapl_delta_uj(pt->r, e0, e1) / 1000.0 / pt->o->runs;
  else *mj = pt->o->power_mw * tm->median_ms / 1000.0;
  return 0;
}

/* Frame bytes of the features x[h, w, c] for float32, 8-bit and 8-bit + zstd. */
static int encoded_bytes(const float *x, int h, int w, int c, int zstd_level, bf_hwprof_entry *en) {
  static const struct {
    bf_qscheme q;
    bf_codec codec;
  } kinds[3] = {{BF_Q_F32, BF_CODEC_RAW}, {BF_Q_U8_TENSOR, BF_CODEC_RAW}, {BF_Q_U8_TENSOR, BF_CODEC_ZSTD}};
  double *dst[3] = {&en->bytes_float32, &en->bytes_raw, &en->bytes_zstd};
  for (int k = 0; k < 3; k++) {
    bf_frame f;
    memset(&f, 0, sizeof f);
    uint8_t *body = NULL;
    size_t len = 0;
    BF_TRY(bf_features_encode(x, h, w, c, kinds[k].q, kinds[k].codec, zstd_level, &f, &body, &len));
    free(body);
    *dst[k] = (double)bf_frame_len(len);
  }
  return 0;
}

static void entry_ids(const bf_deploy_split *ds, const uint8_t *half_sha, bf_hwprof_entry *en) {
  memset(en, 0, sizeof *en);
  en->split = ds->split_after;
  en->d_r = ds->d_r;
  snprintf(en->model_id, sizeof en->model_id, "%s", ds->id_hex);
  for (int i = 0; i < 32; i++) snprintf(en->half_sha256 + 2 * i, 3, "%02x", half_sha[i]);
  en->input_h = ds->in_h;
  en->input_w = ds->in_w;
  en->feat_h = ds->feat_h;
  en->feat_w = ds->feat_w;
}

/* One split: the device half (+ quantisation), or the server half on the
 * dequantised features of the device half (run once, untimed). */
static int measure_split(bf_backend *be, const bf_deploy_split *ds, const part *pt, bf_hwprof_entry *en) {
  const bf_hwprof_opts *o = pt->o;
  int server = o->side == BF_HWPROF_SERVER;
  entry_ids(ds, server ? ds->server_sha : ds->device_sha, en);
  const char *dp = ds->device_path, *sp = ds->server_path;
  bf_engine *dev = NULL, *srv = NULL;
  float *in = NULL, *feat = NULL, *deq = NULL, *logits = NULL;
  uint8_t *q = NULL;
  double e0[RAPL_MAX], e1[RAPL_MAX];
  int oh, ow, oc, lh, lw, lc, rc;
  if ((rc = bf_engine_load(&dev, be, &dp, 1)) || (rc = bf_engine_plan(dev, 1, ds->in_h, ds->in_w, &oh, &ow, &oc)))
    goto done;
  size_t nin = (size_t)ds->in_h * ds->in_w * (size_t)bf_engine_input_channels(dev), nf = (size_t)oh * ow * oc;
  in = bf_malloc(nin * sizeof *in, "profile input");
  feat = bf_malloc(nf * sizeof *feat, "features");
  deq = bf_malloc(nf * sizeof *deq, "features");
  q = bf_malloc(nf, "8-bit features");
  if (!in || !feat || !deq || !q) {
    rc = BF_ENOMEM;
    goto done;
  }
  bf_measure_fill_input(in, nin);
  float scale = 1;
  int32_t zp = 0;
  if (!server) {
    if ((rc = bf_measure_device_half(dev, in, feat, (size_t)oh * ow, oc, q, o->warmup, 0, NULL, NULL, &scale, &zp)) ||
        (pt->have_rapl && (rc = rapl_read(pt->r, e0))) ||
        (rc = bf_measure_device_half(dev, in, feat, (size_t)oh * ow, oc, q, 0, o->runs, pt->t, pt->t2, &scale, &zp)) ||
        (pt->have_rapl && (rc = rapl_read(pt->r, e1))))
      goto done;
    bf_timing_summarize(pt->t, o->runs, &en->time);
    bf_timing_summarize(pt->t2, o->runs, &en->quant);
    if ((rc = energy_of(pt, e0, e1, &en->time, &en->energy_mj)) ||
        (rc = encoded_bytes(feat, oh, ow, oc, ds->zstd_level, en)))
      goto done;
  } else {
    if ((rc = bf_measure_device_half(dev, in, feat, (size_t)oh * ow, oc, q, 0, 1, pt->t, pt->t2, &scale, &zp)))
      goto done;
    bf_dequantize(q, (size_t)oh * ow, oc, 0, &scale, &zp, deq);
    if ((rc = bf_engine_load(&srv, be, &sp, 1)) || (rc = bf_engine_plan(srv, 1, oh, ow, &lh, &lw, &lc))) goto done;
    logits = bf_malloc((size_t)lh * lw * lc * sizeof *logits, "logits");
    if (!logits) {
      rc = BF_ENOMEM;
      goto done;
    }
    if ((rc = bf_measure_engine(srv, deq, logits, o->warmup, 0, NULL)) ||
        (pt->have_rapl && (rc = rapl_read(pt->r, e0))) ||
        (rc = bf_measure_engine(srv, deq, logits, 0, o->runs, pt->t)) || (pt->have_rapl && (rc = rapl_read(pt->r, e1))))
      goto done;
    bf_timing_summarize(pt->t, o->runs, &en->time);
    rc = energy_of(pt, e0, e1, &en->time, &en->energy_mj);
  }
done:
  if (dev) bf_engine_free(dev);
  if (srv) bf_engine_free(srv);
  free(in);
  free(feat);
  free(deq);
  free(q);
  free(logits);
  return rc ? bf_error_wrap(rc, "profiling %s (RB%d)", ds->dir, ds->split_after) : 0;
}

/* The whole model (both halves of the deepest split in one engine). */
static int measure_whole(bf_backend *be, const bf_deploy_split *ds, const part *pt, bf_hwprof_entry *en) {
  entry_ids(ds, ds->device_sha, en);
  const char *paths[2] = {ds->device_path, ds->server_path};
  bf_engine *e = NULL;
  float *in = NULL, *out = NULL;
  double e0[RAPL_MAX], e1[RAPL_MAX];
  int oh, ow, oc, rc;
  if ((rc = bf_engine_load(&e, be, paths, 2)) || (rc = bf_engine_plan(e, 1, ds->in_h, ds->in_w, &oh, &ow, &oc)))
    goto done;
  size_t nin = (size_t)ds->in_h * ds->in_w * (size_t)bf_engine_input_channels(e);
  in = bf_malloc(nin * sizeof *in, "profile input");
  out = bf_malloc((size_t)oh * ow * oc * sizeof *out, "logits");
  if (!in || !out) {
    rc = BF_ENOMEM;
    goto done;
  }
  bf_measure_fill_input(in, nin);
  if ((rc = bf_measure_engine(e, in, out, pt->o->warmup, 0, NULL)) || (pt->have_rapl && (rc = rapl_read(pt->r, e0))) ||
      (rc = bf_measure_engine(e, in, out, 0, pt->o->runs, pt->t)) || (pt->have_rapl && (rc = rapl_read(pt->r, e1))))
    goto done;
  bf_timing_summarize(pt->t, pt->o->runs, &en->time);
  rc = energy_of(pt, e0, e1, &en->time, &en->energy_mj);
done:
  if (e) bf_engine_free(e);
  free(in);
  free(out);
  return rc ? bf_error_wrap(rc, "profiling the whole model of %s", ds->dir) : 0;
}

int bf_hwprof_measure(const bf_deploy *d, const bf_hwprof_opts *o, bf_hwprof *out, FILE *log) {
  memset(out, 0, sizeof *out);
  if (d->n < 1 || d->n > BF_HWPROF_MAX)
    return bf_error(BF_EINVAL, "deploy directory: %d split points (1..%d)", d->n, BF_HWPROF_MAX);
  if (o->runs < 1 || o->warmup < 0 || o->threads < 1)
    return bf_error(BF_EINVAL, "profile: runs >= 1, warmup >= 0 and threads >= 1 needed");
  if (!(o->power_mw >= 0)) return bf_error(BF_EINVAL, "profile: power must be >= 0 mW");
  for (int i = 0; i < d->n; i++) BF_TRY(bf_deploy_verify(&d->splits[i], 1, 1));
  out->side = o->side;
  host_description(out->host, sizeof out->host);
  snprintf(out->backend, sizeof out->backend, "%s", o->backend ? o->backend : "cpu");
  out->threads = o->threads;
  out->warmup = o->warmup;
  out->runs = o->runs;
  out->power_mw = o->power_mw;
  rapl r;
  part pt = {o, &r, rapl_open(&r, o->rapl_dir ? o->rapl_dir : "/sys/class/powercap"), NULL, NULL};
  snprintf(out->energy_source, sizeof out->energy_source, "%s",
           pt.have_rapl ? "rapl" : o->side == BF_HWPROF_DEVICE || o->power_mw > 0 ? "modelled" : "none");
  pt.t = bf_calloc((size_t)o->runs, sizeof *pt.t, "timings");
  pt.t2 = bf_calloc((size_t)o->runs, sizeof *pt.t2, "timings");
  bf_backend *be = NULL;
  int rc = pt.t && pt.t2 ? bf_backend_create(&be, out->backend, o->threads) : BF_ENOMEM;
  for (int i = 0; i < d->n && !rc; i++) {
    rc = measure_split(be, &d->splits[i], &pt, &out->e[i]);
    if (!rc) out->n++;
    if (!rc && log) {
      const bf_hwprof_entry *en = &out->e[i];
      fprintf(log, "bf-profile: %s RB%d D_r %d %dx%d: %.3f ms (p10 %.3f, p90 %.3f)", bf_hwprof_side_name(o->side),
              en->split, en->d_r, en->input_h, en->input_w, en->time.median_ms, en->time.p10_ms, en->time.p90_ms);
      if (o->side == BF_HWPROF_DEVICE)
        fprintf(log, ", frame %.0f B raw / %.0f B zstd, %.3f mJ (%s)", en->bytes_raw, en->bytes_zstd, en->energy_mj,
                out->energy_source);
      fprintf(log, "\n");
      fflush(log);
    }
  }
  if (!rc) rc = measure_whole(be, &d->splits[d->n - 1], &pt, &out->whole);
  if (!rc && log)
    fprintf(log, "bf-profile: %s whole model (RB%d export): %.3f ms (p10 %.3f, p90 %.3f)\n",
            bf_hwprof_side_name(o->side), out->whole.split, out->whole.time.median_ms, out->whole.time.p10_ms,
            out->whole.time.p90_ms);
  if (be) bf_backend_destroy(be);
  free(pt.t);
  free(pt.t2);
  return rc;
}
