/* bf-export's library half: BN folding, the two safetensors halves and the
 * manifest; the ONNX form of the same folded halves (export_onnx.c). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bn_math.h"
#include "export_onnx.h"
#include "model.h"
#include "preprocess_recipe.h"
#include "quant.h"
#include "quant_math.h"
#include "rans_export.h"
#include "safetensors.h"
#include "sha256.h"
#include "split.h"

void bf_export_opts_init(bf_export_opts *o) {
  memset(o, 0, sizeof *o);
  o->resize = -1;
  o->qscheme = BF_Q_U8_TENSOR;
  o->codec = BF_CODEC_RAW;
  o->zstd_level = 3;
  o->formats = BF_EXPORT_SAFETENSORS;
}

int bf_feature_size(int in, int k) {
  int s = (in + 6 - 7) / 2 + 1; /* stem 7x7/2 pad 3 */
  s = (s + 2 - 3) / 2 + 1;      /* maxpool 3/2 pad 1 */
  if (k >= 4) s = (s + 2 - 3) / 2 + 1;
  if (k >= 8) s = (s + 2 - 3) / 2 + 1;
  if (k >= 14) s = (s + 2 - 3) / 2 + 1;
  return s;
}

typedef struct exporter {
  bf_model *m;
  bf_folded *f;    /* owns the buffers the writers point into */
  bf_st_writer *w; /* current part */
} exporter;

static float *keep(exporter *x, size_t n, const char *what) {
  bf_folded *f = x->f;
  if (f->n_bufs == f->cap_bufs) {
    int cap = f->cap_bufs ? 2 * f->cap_bufs : 128;
    float **b = realloc(f->bufs, (size_t)cap * sizeof *b);
    if (!b) {
      bf_error(BF_ENOMEM, "export: out of memory");
      return NULL;
    }
    f->bufs = b, f->cap_bufs = cap;
  }
  float *p = bf_malloc((n ? n : 1) * sizeof(float), what);
  if (p) f->bufs[f->n_bufs++] = p;
  return p;
}

static const bf_entry *entry(exporter *x, const char *name) {
  int n = bf_model_num_entries(x->m);
  for (int i = 0; i < n; i++)
    if (!strcmp(bf_model_entry(x->m, i)->name, name)) return bf_model_entry(x->m, i);
  bf_error(BF_EINVAL, "export: checkpoint has no tensor '%s'", name);
  return NULL;
}

static float *get(exporter *x, const char *name, const bf_entry **e_out) {
  const bf_entry *e = entry(x, name);
  if (!e) return NULL;
  float *p = keep(x, e->numel, name);
  if (!p) return NULL;
  if (bf_model_entry_get(x->m, e, 0, p)) return NULL;
  if (e_out) *e_out = e;
  return p;
}

/* conv `cname` followed by BN `bname` -> out.weight / out.bias */
static int fold(exporter *x, const char *cname, const char *bname, const char *out) {
  char n[128];
  const bf_entry *we;
  snprintf(n, sizeof n, "%s.weight", cname);
  float *w = get(x, n, &we);
  if (!w) return BF_EINVAL;
  float *bn[4];
  static const char *suf[4] = {"weight", "bias", "running_mean", "running_var"};
  for (int i = 0; i < 4; i++) {
    snprintf(n, sizeof n, "%s.%s", bname, suf[i]);
    if (!(bn[i] = get(x, n, NULL))) return BF_EINVAL;
  }
  int64_t O = we->shape[0];
  size_t per = we->numel / (size_t)O;
  float *b = keep(x, (size_t)O, "folded bias");
  if (!b) return BF_ENOMEM;
  for (int64_t o = 0; o < O; o++) {
    float var = bn[3][o], scale, shift;
    if (!(var >= 0)) return bf_error(BF_EINVAL, "BN fold: %s.running_var[%lld] = %g", bname, (long long)o, var);
    /* the eval-mode BN the model computes, folded: conv(x, W) * scale + shift */
    bf_bn_eval_coef(bn[0][o], bn[1][o], bn[2][o], var, (float)BF_BN_EPS, &scale, &shift);
    for (size_t j = 0; j < per; j++) w[(size_t)o * per + j] *= scale;
    b[o] = shift;
  }
  int64_t bs[1] = {O};
  snprintf(n, sizeof n, "%s.weight", out);
  BF_TRY(bf_st_writer_add(x->w, n, BF_DT_F32, 4, we->shape, w));
  snprintf(n, sizeof n, "%s.bias", out);
  return bf_st_writer_add(x->w, n, BF_DT_F32, 1, bs, b);
}

static int add_block(exporter *x, int rb) {
  bf_rb_info B;
  BF_TRY(bf_rb_layout(rb, &B));
  char c[64], b[64];
  for (int j = 1; j <= 3; j++) {
    snprintf(c, sizeof c, "%s.conv%d", B.prefix, j);
    snprintf(b, sizeof b, "%s.bn%d", B.prefix, j);
    BF_TRY(fold(x, c, b, c));
  }
  if (B.has_downsample) {
    snprintf(c, sizeof c, "%s.downsample.0", B.prefix);
    snprintf(b, sizeof b, "%s.downsample.1", B.prefix);
    BF_TRY(fold(x, c, b, c));
  }
  return BF_OK;
}

/* clip: the quantiser's effective clip (quant_bits > 0). The engine reads
 * quant_bits/quant_clip to quantise between reduce and restore when it runs
 * both (bf-infer eval, bf-client --local), and they must agree with the
 * manifest (bf_deploy_check_engine). */
static int half_meta(bf_st_writer *w, const char *part, const bf_model_config *cfg, float clip) {
  char buf[32];
  if (cfg->quant_bits) {
    snprintf(buf, sizeof buf, "%d", cfg->quant_bits);
    BF_TRY(bf_st_writer_meta(w, "quant_bits", buf));
    snprintf(buf, sizeof buf, "%.9g", (double)clip); /* round-trips the float */
    BF_TRY(bf_st_writer_meta(w, "quant_clip", buf));
  }
  BF_TRY(bf_st_writer_meta(w, "format", BF_HALF_FORMAT));
  BF_TRY(bf_st_writer_meta(w, "part", part));
  BF_TRY(bf_st_writer_meta(w, "bn_folded", "1"));
  BF_TRY(bf_st_writer_meta(w, "bn_eps", "1e-05"));
  BF_TRY(bf_st_writer_meta(w, "weight_layout", "OIHW"));
  snprintf(buf, sizeof buf, "%d", cfg->split_after);
  BF_TRY(bf_st_writer_meta(w, "split_after", buf));
  snprintf(buf, sizeof buf, "%d", cfg->d_r);
  BF_TRY(bf_st_writer_meta(w, "d_r", buf));
  snprintf(buf, sizeof buf, "%d", cfg->num_classes);
  return bf_st_writer_meta(w, "num_classes", buf);
}

void bf_folded_free(bf_folded *f) {
  for (int i = 0; i < 2; i++) bf_st_writer_free(&f->part[i]);
  for (int i = 0; i < f->n_bufs; i++) free(f->bufs[i]);
  free(f->bufs);
  memset(f, 0, sizeof *f);
}

int bf_fold_model(bf_model *m, bf_folded *f) {
  memset(f, 0, sizeof *f);
  const bf_model_config *cfg = bf_model_cfg(m);
  const int k = cfg->split_after;
  exporter x = {m, f, &f->part[0]};
  float clip = 0;
  int rc = cfg->quant_bits ? bf_model_quant_clip_get(m, &clip) : BF_OK;
  /* device half (or the whole network): stem, RB1..RBk, reduction */
  if (!rc) rc = fold(&x, "conv1", "bn1", "conv1");
  for (int rb = 1; rb <= (k ? k : BF_NUM_RB) && !rc; rb++) rc = add_block(&x, rb);
  if (!rc && k) rc = fold(&x, "butterfly.reduce.conv", "butterfly.reduce.bn", "butterfly.reduce.conv");
  if (!rc) rc = half_meta(x.w, k ? "device" : "model", cfg, clip);
  /* server half: restoration, RBk+1..RB16, classifier */
  if (k) {
    x.w = &f->part[1];
    if (!rc) rc = fold(&x, "butterfly.restore.conv", "butterfly.restore.bn", "butterfly.restore.conv");
    for (int rb = k + 1; rb <= BF_NUM_RB && !rc; rb++) rc = add_block(&x, rb);
  }
  if (!rc) {
    const bf_entry *fw, *fb;
    float *w = get(&x, "fc.weight", &fw), *b = w ? get(&x, "fc.bias", &fb) : NULL;
    if (!w || !b) rc = BF_EINVAL;
    if (!rc) rc = bf_st_writer_add(x.w, "fc.weight", BF_DT_F32, 2, fw->shape, w);
    if (!rc) rc = bf_st_writer_add(x.w, "fc.bias", BF_DT_F32, 1, fb->shape, b);
  }
  if (!rc && k) rc = half_meta(x.w, "server", cfg, clip);
  if (rc) {
    bf_folded_free(f);
    return rc;
  }
  f->n_parts = k ? 2 : 1;
  return BF_OK;
}

static int read_class_names(const char *path, int n, char ***out) {
  char **names = bf_calloc((size_t)n, sizeof *names, "class names");
  if (!names) return BF_ENOMEM;
  *out = names;
  if (!path) {
    for (int i = 0; i < n; i++) {
      char b[32];
      snprintf(b, sizeof b, "class_%d", i);
      if (!(names[i] = strdup(b))) return bf_error(BF_ENOMEM, "out of memory");
    }
    return BF_OK;
  }
  uint8_t *data;
  size_t len;
  BF_TRY(bf_read_file(path, &data, &len));
  char *s = (char *)data, *save = NULL;
  int k = 0;
  for (char *line = strtok_r(s, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
    if (!*line) continue;
    if (k == n) {
      free(data);
      return bf_error(BF_EINVAL, "%s: more than %d class names", path, n);
    }
    if (!(names[k++] = strdup(line))) {
      free(data);
      return bf_error(BF_ENOMEM, "out of memory");
    }
  }
  free(data);
  if (k != n) return bf_error(BF_EINVAL, "%s: %d class names for a %d-class model", path, k, n);
  return BF_OK;
}

static cJSON *farr(const float *v, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < n && a; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(round((double)v[i] * 1e6) / 1e6));
  return a;
}

static int file_obj(cJSON *root, const char *key, const char *dir, const char *file, const char *layers) {
  char path[1024], hex[65];
  uint8_t d[32];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  BF_TRY(bf_sha256_file(path, d));
  bf_sha256_hex(d, hex);
  uint8_t *data;
  size_t len;
  BF_TRY(bf_read_file(path, &data, &len));
  free(data);
  cJSON *o = cJSON_AddObjectToObject(root, key);
  if (!o) return bf_error(BF_ENOMEM, "manifest: out of memory");
  cJSON_AddStringToObject(o, "file", file);
  cJSON_AddStringToObject(o, "sha256", hex);
  cJSON_AddNumberToObject(o, "bytes", (double)len);
  cJSON_AddStringToObject(o, "layers", layers);
  return BF_OK;
}

static const char *qscheme_name(bf_qscheme q) {
  return q == BF_Q_F32 ? "none" : q == BF_Q_U8_CHANNEL ? "per_channel" : "per_tensor";
}

/* The flags over the checkpoint's recipe; without a recipe (a checkpoint
 * from before bf-train recorded it) the former defaults, said on stderr since
 * they may well not be what the model was trained with. */
static int resolve_preprocess(const char *checkpoint, const bf_export_opts *in, bf_export_opts *o) {
  *o = *in;
  bf_preprocess p;
  int found = bf_preprocess_read(checkpoint, &p);
  if (found < 0) return found;
  if (!found) {
    static const float im_mean[3] = {0.485f, 0.456f, 0.406f}, im_std[3] = {0.229f, 0.224f, 0.225f};
    p.input_size = 224;
    p.resize = -1; /* input*8/7 below */
    memcpy(p.mean, im_mean, sizeof p.mean);
    memcpy(p.std, im_std, sizeof p.std);
    /* the ONNX halves alone record no preprocessing: nothing to warn about */
    if ((in->formats & BF_EXPORT_SAFETENSORS) && (!in->input_h || in->resize < 0 || !in->have_mean || !in->have_std))
      fprintf(stderr,
              "bf-export: warning: %s records no preprocessing recipe (trained before bf-train wrote one); "
              "unless given by flags: input 224, resize input*8/7, ImageNet mean/std\n",
              checkpoint);
  }
  if (!o->input_h) o->input_h = o->input_w = p.input_size;
  if (o->resize < 0) o->resize = p.resize >= 0 ? p.resize : (o->input_h < o->input_w ? o->input_h : o->input_w) * 8 / 7;
  if (!o->have_mean) memcpy(o->mean, p.mean, sizeof o->mean);
  if (!o->have_std) memcpy(o->std, p.std, sizeof o->std);
  return BF_OK;
}

int bf_split_export(const char *checkpoint, const char *out_dir, const bf_export_opts *opts, char *subdir, size_t cap) {
  bf_model_config cfg;
  BF_TRY(bf_model_config_from_file(checkpoint, &cfg));
  bf_export_opts resolved, *o = &resolved;
  BF_TRY(resolve_preprocess(checkpoint, opts, o));
  if (cfg.split_after < 1)
    return bf_error(BF_EINVAL, "%s: split_after = 0 (no butterfly unit): nothing to split", checkpoint);
  if (o->input_h < 32 || o->input_w < 32 || o->input_h > 4096 || o->input_w > 4096)
    return bf_error(BF_EINVAL, "export: input size %dx%d outside 32..4096", o->input_h, o->input_w);
  if (o->codec == BF_CODEC_RANS && !o->rans_data)
    return bf_error(BF_EINVAL, "export: codec rans needs the training data for its tables (--rans-data)");
  /* opened before anything is written: a missing data set leaves no file */
  if (o->rans_data && !(o->formats & BF_EXPORT_SAFETENSORS))
    return bf_error(BF_EINVAL, "export: rans tables go with the manifest: --rans-data needs --format safetensors or both");
  bf_dataset *rans_ds = NULL;
  if (o->rans_data) BF_TRY(bf_rans_data_open(o->rans_data, o->rans_data_cfg, &rans_ds));
  bf_rans_tables rt = {0};
  int rans_n = 0;
  bf_backend *be = NULL;
  int rc0 = bf_backend_create(&be, "cpu", 1);
  if (rc0) {
    if (rans_ds) bf_dataset_close(rans_ds);
    return rc0;
  }
  bf_model *m = NULL;
  bf_folded f = {0};
  bf_st_writer *dev = &f.part[0], *srv = &f.part[1];
  char **names = NULL;
  cJSON *root = NULL;
  char *json = NULL;
  char dir[1024], path[1100];
  float clip = 0;
  int rc = bf_model_create(&m, be, &cfg);
  if (!rc) rc = bf_model_load(m, checkpoint);
  if (!rc) rc = read_class_names(o->class_names_file, cfg.num_classes, &names);
  if (!rc && cfg.quant_bits) {
    /* trained with a fixed-range quantiser: the client must use exactly it */
    if (o->qscheme != BF_Q_U8_TENSOR)
      rc = bf_error(BF_EINVAL, "%s: quantisation-aware checkpoint (quant_bits %d): features are sent as per-tensor "
                    "codes of its learned clip; --quant %s does not apply", checkpoint, cfg.quant_bits,
                    qscheme_name(o->qscheme));
    if (!rc) rc = bf_model_quant_clip_get(m, &clip);
    if (!rc && !bf_qscale_valid(bf_quant_scale(clip, cfg.quant_bits)))
      rc = bf_error(BF_EINVAL, "%s: the quantiser's clip %g gives a scale the protocol refuses", checkpoint,
                    (double)clip);
  }
  if (rc) goto done;
  snprintf(dir, sizeof dir, "%s/split-%d", out_dir, cfg.split_after);
  /* Both halves are folded before anything is written, so a checkpoint that
   * cannot be folded leaves no file behind. */
  rc = bf_fold_model(m, &f);
  if (!rc) rc = bf_mkdirs(dir);
  if (rc) goto done;
  if (o->formats & BF_EXPORT_ONNX) {
    snprintf(path, sizeof path, "%s/device.onnx", dir);
    if ((rc = bf_onnx_write_half(dev, &cfg, 0, checkpoint, path))) goto done;
    snprintf(path, sizeof path, "%s/server.onnx", dir);
    if ((rc = bf_onnx_write_half(srv, &cfg, 1, checkpoint, path))) goto done;
  }
  if (!(o->formats & BF_EXPORT_SAFETENSORS)) {
    if (subdir) snprintf(subdir, cap, "%s", dir);
    goto done;
  }
  snprintf(path, sizeof path, "%s/device.safetensors", dir);
  if ((rc = bf_st_writer_save(dev, path))) goto done;
  snprintf(path, sizeof path, "%s/server.safetensors", dir);
  if ((rc = bf_st_writer_save(srv, path))) goto done;
  if (rans_ds) {
    /* the codes bf-client will send: a quantisation-aware model's bits and
     * clip, else 8 bits over the range of each image */
    bf_qfixed fx = {cfg.quant_bits, clip};
    uint8_t *tb = NULL;
    size_t tl = 0;
    snprintf(path, sizeof path, "%s/device.safetensors", dir);
    rc = bf_rans_estimate(rans_ds, path, o, cfg.quant_bits ? &fx : NULL, &rt, &rans_n);
    if (!rc) rc = bf_rans_tables_serialize(&rt, &tb, &tl);
    snprintf(path, sizeof path, "%s/%s", dir, BF_RANS_TABLES_FILE);
    if (!rc) rc = bf_write_file_atomic(path, tb, tl);
    free(tb);
    if (rc) { /* no half without its manifest */
      snprintf(path, sizeof path, "%s/device.safetensors", dir);
      remove(path);
      snprintf(path, sizeof path, "%s/server.safetensors", dir);
      remove(path);
      goto done;
    }
  }

  int fh = bf_feature_size(o->input_h, cfg.split_after), fwid = bf_feature_size(o->input_w, cfg.split_after);
  root = cJSON_CreateObject();
  if (!root) {
    rc = bf_error(BF_ENOMEM, "manifest: out of memory");
    goto done;
  }
  cJSON_AddStringToObject(root, "format", BF_DEPLOY_FORMAT);
  cJSON_AddNumberToObject(root, "split_after", cfg.split_after);
  cJSON_AddNumberToObject(root, "d_r", cfg.d_r);
  cJSON_AddNumberToObject(root, "num_classes", cfg.num_classes);
  cJSON *in = cJSON_AddObjectToObject(root, "input");
  cJSON_AddNumberToObject(in, "height", o->input_h);
  cJSON_AddNumberToObject(in, "width", o->input_w);
  cJSON_AddNumberToObject(in, "channels", 3);
  cJSON_AddStringToObject(in, "layout", "NHWC");
  cJSON_AddNumberToObject(in, "resize_shorter", o->resize);
  cJSON_AddStringToObject(in, "crop", "center");
  cJSON *nm = cJSON_AddObjectToObject(root, "normalization");
  cJSON_AddItemToObject(nm, "mean", farr(o->mean, 3));
  cJSON_AddItemToObject(nm, "std", farr(o->std, 3));
  cJSON_AddStringToObject(nm, "formula", "(x/255 - mean[c]) / std[c]");
  cJSON *cn = cJSON_AddArrayToObject(root, "class_names");
  for (int i = 0; i < cfg.num_classes; i++) cJSON_AddItemToArray(cn, cJSON_CreateString(names[i]));
  cJSON *fe = cJSON_AddObjectToObject(root, "feature");
  cJSON *shape = cJSON_AddArrayToObject(fe, "shape");
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(1));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(fh));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(fwid));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(cfg.d_r));
  cJSON_AddStringToObject(fe, "layout", "NHWC");
  cJSON_AddStringToObject(fe, "dtype", "float32");
  size_t elems = (size_t)fh * fwid * cfg.d_r;
  cJSON_AddNumberToObject(fe, "bytes_float32", (double)elems * 4);
  cJSON_AddNumberToObject(fe, "bytes_uint8", (double)elems);
  cJSON_AddNumberToObject(fe, "input_bytes_rgb8", (double)o->input_h * o->input_w * 3);
  cJSON *q = cJSON_AddObjectToObject(root, "quantization");
  cJSON_AddStringToObject(q, "scheme", o->qscheme == BF_Q_F32 ? "float32" : "uint8_affine");
  cJSON_AddStringToObject(q, "granularity", qscheme_name(o->qscheme));
  cJSON_AddStringToObject(q, "codec", o->codec == BF_CODEC_ZSTD ? "zstd" : o->codec == BF_CODEC_RANS ? "rans" : "raw");
  cJSON_AddNumberToObject(q, "zstd_level", o->zstd_level);
  if (cfg.quant_bits) { /* absent: 8 bits, the range of each image */
    cJSON_AddNumberToObject(q, "bits", cfg.quant_bits);
    cJSON_AddNumberToObject(q, "clip", (double)clip); /* cJSON prints doubles so they read back exactly */
  }
  if (rans_ds) {
    uint8_t d[32];
    char hex[65];
    snprintf(path, sizeof path, "%s/%s", dir, BF_RANS_TABLES_FILE);
    if ((rc = bf_sha256_file(path, d))) goto done;
    bf_sha256_hex(d, hex);
    cJSON *r = cJSON_AddObjectToObject(q, "rans");
    cJSON_AddStringToObject(r, "file", BF_RANS_TABLES_FILE);
    cJSON_AddStringToObject(r, "sha256", hex);
    cJSON_AddNumberToObject(r, "channels", rt.channels);
    cJSON_AddNumberToObject(r, "symbols", rt.alphabet);
    cJSON_AddNumberToObject(r, "prob_bits", BF_RANS_PROB_BITS);
    int np = 0; /* informational, as the three above: the tables file is what readers check */
    for (int c = 0; c < rt.channels; c++) np += rt.pred[c] != BF_RANS_PRED_NONE;
    cJSON_AddNumberToObject(r, "predicted_channels", np);
    cJSON_AddNumberToObject(r, "images", rans_n);
    cJSON_AddStringToObject(r, "split", "train");
  }
  cJSON_AddBoolToObject(root, "bn_folded", 1);
  cJSON_AddNumberToObject(root, "bn_eps", BF_BN_EPS);
  char layers[64];
  snprintf(layers, sizeof layers, "stem,RB1..RB%d,reduce", cfg.split_after);
  if ((rc = file_obj(root, "device", dir, "device.safetensors", layers))) goto done;
  if (cfg.split_after < BF_NUM_RB)
    snprintf(layers, sizeof layers, "restore,RB%d..RB16,avgpool,fc", cfg.split_after + 1);
  else
    snprintf(layers, sizeof layers, "restore,avgpool,fc");
  if ((rc = file_obj(root, "server", dir, "server.safetensors", layers))) goto done;
  {
    uint8_t d[32];
    char hex[65];
    if ((rc = bf_sha256_file(checkpoint, d))) goto done;
    bf_sha256_hex(d, hex);
    cJSON *src = cJSON_AddObjectToObject(root, "source");
    const char *base = strrchr(checkpoint, '/');
    cJSON_AddStringToObject(src, "checkpoint", base ? base + 1 : checkpoint);
    cJSON_AddStringToObject(src, "sha256", hex);
  }
  json = cJSON_Print(root);
  if (!json) {
    rc = bf_error(BF_ENOMEM, "manifest: out of memory");
    goto done;
  }
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  size_t jl = strlen(json);
  json[jl] = '\n'; /* replace NUL by newline for the file, restore after */
  rc = bf_write_file_atomic(path, json, jl + 1);
  json[jl] = 0;
  if (!rc && subdir) snprintf(subdir, cap, "%s", dir);
done:
  if (names)
    for (int i = 0; i < cfg.num_classes; i++) free(names[i]);
  free(names);
  free(json);
  cJSON_Delete(root);
  bf_folded_free(&f);
  bf_model_free(m);
  bf_backend_destroy(be);
  if (rans_ds) bf_dataset_close(rans_ds);
  bf_rans_tables_free(&rt);
  return rc;
}
