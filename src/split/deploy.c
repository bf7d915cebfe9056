/* Reading a deploy directory: one manifest.json per split. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_core.h"
#include "engine.h"
#include "quant.h"
#include "quant_math.h"
#include "rans.h"
#include "sha256.h"
#include "split.h"

static int jint(const cJSON *o, const char *key, const char *path, int lo, int hi, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < lo ||
      v->valuedouble > hi)
    return bf_error(BF_EINVAL, "%s: '%s' missing or not an integer in %d..%d", path, key, lo, hi);
  *out = (int)v->valuedouble;
  return BF_OK;
}

static int jfloat3(const cJSON *o, const char *key, const char *path, float *out) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 3) return bf_error(BF_EINVAL, "%s: '%s' is not 3 numbers", path, key);
  for (int i = 0; i < 3; i++) {
    const cJSON *v = cJSON_GetArrayItem(a, i);
    if (!cJSON_IsNumber(v)) return bf_error(BF_EINVAL, "%s: '%s' is not 3 numbers", path, key);
    out[i] = (float)v->valuedouble;
  }
  return BF_OK;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int file_entry(const cJSON *root, const char *key, const char *mpath, const char *dir, char *path, size_t cap,
                      uint8_t sha[32]) {
  const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, key);
  const char *file = o ? jstr(o, "file") : NULL, *hex = o ? jstr(o, "sha256") : NULL;
  if (!file || !hex) return bf_error(BF_EINVAL, "%s: '%s' needs 'file' and 'sha256'", mpath, key);
  if (strchr(file, '/') || !strcmp(file, "..")) return bf_error(BF_EINVAL, "%s: %s.file must be a plain name", mpath, key);
  snprintf(path, cap, "%s/%s", dir, file);
  int rc = bf_sha256_from_hex(hex, sha);
  return rc ? bf_error_wrap(rc, "%s: %s", mpath, key) : BF_OK;
}

/* quantization.bits (absent: 8) and .clip (a quantisation-aware model's
 * fixed range; absent: the range of each image). */
static int read_qat(const cJSON *q, const char *mpath, bf_deploy_split *s) {
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "bits"), *c = cJSON_GetObjectItemCaseSensitive(q, "clip");
  s->bits = 8;
  s->clip = 0;
  if (b) {
    double v = cJSON_IsNumber(b) ? b->valuedouble : NAN;
    if (!(v >= BF_QUANT_BITS_MIN && v <= BF_QUANT_BITS_MAX) || v != floor(v))
      return bf_error(BF_EINVAL, "%s: quantization.bits must be an integer in %d..%d", mpath, BF_QUANT_BITS_MIN,
                      BF_QUANT_BITS_MAX);
    s->bits = (int)v;
  }
  if (c) {
    float v = cJSON_IsNumber(c) ? (float)c->valuedouble : NAN;
    if (!b) return bf_error(BF_EINVAL, "%s: quantization.clip needs quantization.bits", mpath);
    if (!isfinite(v) || !(v > 0) || !bf_qscale_valid(bf_quant_scale(v, s->bits)))
      return bf_error(BF_EINVAL, "%s: quantization.clip must be a finite number > 0 (the quantiser's range)", mpath);
    if (s->qscheme != BF_Q_U8_TENSOR)
      return bf_error(BF_EINVAL, "%s: quantization.granularity must be per_tensor with quantization.clip", mpath);
    s->clip = v;
  } else if (s->bits != 8) {
    return bf_error(BF_EINVAL, "%s: quantization.bits %d needs quantization.clip (the range of its codes)", mpath,
                    s->bits);
  }
  return BF_OK;
}

/* quantization.rans: {file, sha256}; the tables must code this split's
 * features (d_r channels, 2^bits symbols) */
static int read_rans(const cJSON *q, const char *mpath, const char *dir, bf_deploy_split *s) {
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(q, "rans");
  if (!r) return BF_OK;
  char path[700];
  uint8_t sha[32], got[32], *data = NULL;
  size_t len;
  BF_TRY(file_entry(q, "rans", mpath, dir, path, sizeof path, sha));
  BF_TRY(bf_read_file(path, &data, &len));
  bf_sha256_digest(data, len, got);
  if (memcmp(got, sha, 32)) {
    free(data);
    return bf_error(BF_EINVAL, "%s: SHA-256 differs from %s's quantization.rans (file changed after export?)", path,
                    mpath);
  }
  s->rans = bf_calloc(1, sizeof *s->rans, "rans tables");
  int rc = s->rans ? bf_rans_tables_parse(data, len, path, s->rans) : BF_ENOMEM;
  free(data);
  if (!rc && (s->rans->channels != s->d_r || s->rans->bits != s->bits))
    rc = bf_error(BF_EINVAL, "%s: tables for %d channels of %d bits, %s has d_r %d, bits %d", path, s->rans->channels,
                  s->rans->bits, mpath, s->d_r, s->bits);
  return rc;
}

static void free_split(bf_deploy_split *s) {
  if (s->rans) bf_rans_tables_free(s->rans);
  free(s->rans);
  s->rans = NULL;
  if (s->class_names)
    for (int i = 0; i < s->num_classes; i++) free(s->class_names[i]);
  free(s->class_names);
  s->class_names = NULL;
}

static int read_manifest(const char *dir, bf_deploy_split *s) {
  memset(s, 0, sizeof *s);
  char mpath[600];
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
  uint8_t *data;
  size_t len;
  BF_TRY(bf_read_file(mpath, &data, &len));
  bf_sha256_digest(data, len, s->id);
  bf_sha256_hex(s->id, s->id_hex);
  cJSON *root = cJSON_ParseWithLength((const char *)data, len);
  free(data);
  if (!root) return bf_error(BF_EINVAL, "%s: not valid JSON", mpath);
  int rc = BF_OK;
  const char *fmt = jstr(root, "format");
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
  const cJSON *nm = cJSON_GetObjectItemCaseSensitive(root, "normalization");
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization");
  const cJSON *fe = cJSON_GetObjectItemCaseSensitive(root, "feature");
  const cJSON *cn = cJSON_GetObjectItemCaseSensitive(root, "class_names");
  if (!fmt || strcmp(fmt, BF_DEPLOY_FORMAT)) {
    rc = bf_error(BF_EINVAL, "%s: format is not %s", mpath, BF_DEPLOY_FORMAT);
    goto done;
  }
  if (!in || !nm || !q || !fe || !cJSON_IsArray(cn)) {
    rc = bf_error(BF_EINVAL, "%s: needs input, normalization, quantization, feature and class_names", mpath);
    goto done;
  }
  if ((rc = jint(root, "split_after", mpath, 1, 16, &s->split_after)) ||
      (rc = jint(root, "d_r", mpath, 1, 2048, &s->d_r)) ||
      (rc = jint(root, "num_classes", mpath, 1, 1000000, &s->num_classes)) ||
      (rc = jint(in, "height", mpath, 32, 4096, &s->in_h)) || (rc = jint(in, "width", mpath, 32, 4096, &s->in_w)) ||
      (rc = jint(in, "resize_shorter", mpath, 0, 8192, &s->resize)) ||
      (rc = jfloat3(nm, "mean", mpath, s->mean)) || (rc = jfloat3(nm, "std", mpath, s->std)))
    goto done;
  for (int i = 0; i < 3; i++)
    if (!(s->std[i] > 0)) {
      rc = bf_error(BF_EINVAL, "%s: normalization.std must be positive", mpath);
      goto done;
    }
  s->feat_h = bf_feature_size(s->in_h, s->split_after);
  s->feat_w = bf_feature_size(s->in_w, s->split_after);
  {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(fe, "shape");
    int ok = cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 4;
    int want[4] = {1, s->feat_h, s->feat_w, s->d_r};
    for (int i = 0; ok && i < 4; i++) {
      const cJSON *v = cJSON_GetArrayItem(shape, i);
      ok = cJSON_IsNumber(v) && v->valuedouble == want[i];
    }
    if (!ok) {
      rc = bf_error(BF_EINVAL, "%s: feature.shape is not [1,%d,%d,%d]", mpath, s->feat_h, s->feat_w, s->d_r);
      goto done;
    }
  }
  const char *gran = jstr(q, "granularity"), *codec = jstr(q, "codec");
  if (!gran || !codec) {
    rc = bf_error(BF_EINVAL, "%s: quantization needs granularity and codec", mpath);
    goto done;
  }
  if (!strcmp(gran, "per_tensor")) s->qscheme = BF_Q_U8_TENSOR;
  else if (!strcmp(gran, "per_channel")) s->qscheme = BF_Q_U8_CHANNEL;
  else if (!strcmp(gran, "none")) s->qscheme = BF_Q_F32;
  else {
    rc = bf_error(BF_EINVAL, "%s: quantization.granularity '%s'", mpath, gran);
    goto done;
  }
  if (!strcmp(codec, "raw")) s->codec = BF_CODEC_RAW;
  else if (!strcmp(codec, "zstd")) s->codec = BF_CODEC_ZSTD;
  else if (!strcmp(codec, "rans")) s->codec = BF_CODEC_RANS;
  else {
    rc = bf_error(BF_EINVAL, "%s: quantization.codec '%s'", mpath, codec);
    goto done;
  }
  /* read_rans checks the tables' bits against read_qat's */
  if ((rc = read_qat(q, mpath, s)) || (rc = read_rans(q, mpath, dir, s))) goto done;
  if (s->codec == BF_CODEC_RANS && !s->rans) {
    rc = bf_error(BF_EINVAL, "%s: quantization.codec is rans but there is no quantization.rans", mpath);
    goto done;
  }
  s->zstd_level = 3;
  jint(q, "zstd_level", mpath, 1, 19, &s->zstd_level);
  if (cJSON_GetArraySize(cn) != s->num_classes) {
    rc = bf_error(BF_EINVAL, "%s: %d class names for %d classes", mpath, cJSON_GetArraySize(cn), s->num_classes);
    goto done;
  }
  s->class_names = bf_calloc((size_t)s->num_classes, sizeof(char *), "class names");
  if (!s->class_names) {
    rc = BF_ENOMEM;
    goto done;
  }
  for (int i = 0; i < s->num_classes; i++) {
    const cJSON *v = cJSON_GetArrayItem(cn, i);
    s->class_names[i] = strdup(cJSON_IsString(v) ? v->valuestring : "?");
    if (!s->class_names[i]) {
      rc = bf_error(BF_ENOMEM, "out of memory");
      goto done;
    }
  }
  if ((rc = file_entry(root, "device", mpath, dir, s->device_path, sizeof s->device_path, s->device_sha)) ||
      (rc = file_entry(root, "server", mpath, dir, s->server_path, sizeof s->server_path, s->server_sha)))
    goto done;
done:
  cJSON_Delete(root);
  if (rc) free_split(s);
  return rc;
}

static int cmp_split(const void *a, const void *b) {
  return ((const bf_deploy_split *)a)->split_after - ((const bf_deploy_split *)b)->split_after;
}

int bf_deploy_open(bf_deploy *d, const char *dir) {
  memset(d, 0, sizeof *d);
  char p[1024];
  struct stat st;
  snprintf(p, sizeof p, "%s/manifest.json", dir);
  int cap = 0;
  if (stat(p, &st) == 0) {
    d->splits = bf_calloc(1, sizeof *d->splits, "deploy");
    if (!d->splits) return BF_ENOMEM;
    int rc = read_manifest(dir, &d->splits[0]);
    if (rc) {
      bf_deploy_close(d);
      return rc;
    }
    d->n = 1;
    return BF_OK;
  }
  DIR *dh = opendir(dir);
  if (!dh) return bf_error(BF_EIO, "%s: cannot open deploy directory", dir);
  struct dirent *de;
  int rc = BF_OK;
  while (!rc && (de = readdir(dh))) {
    if (de->d_name[0] == '.') continue;
    char sub[600];
    snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
    snprintf(p, sizeof p, "%s/manifest.json", sub);
    if (stat(p, &st) != 0) continue;
    if (d->n == cap) {
      cap = cap ? 2 * cap : 8;
      bf_deploy_split *ns = realloc(d->splits, (size_t)cap * sizeof *ns);
      if (!ns) {
        rc = bf_error(BF_ENOMEM, "out of memory");
        break;
      }
      d->splits = ns;
    }
    rc = read_manifest(sub, &d->splits[d->n]);
    if (!rc) d->n++;
  }
  closedir(dh);
  if (!rc && d->n == 0) rc = bf_error(BF_EINVAL, "%s: no manifest.json in it or its subfolders (run bf-export)", dir);
  if (!rc) {
    qsort(d->splits, (size_t)d->n, sizeof *d->splits, cmp_split);
    for (int i = 1; i < d->n && !rc; i++)
      if (d->splits[i].split_after == d->splits[i - 1].split_after)
        rc = bf_error(BF_EINVAL, "%s: two exports split after RB%d (%s, %s)", dir, d->splits[i].split_after,
                      d->splits[i - 1].dir, d->splits[i].dir);
  }
  if (rc) bf_deploy_close(d);
  return rc;
}

void bf_deploy_close(bf_deploy *d) {
  for (int i = 0; i < d->n; i++) free_split(&d->splits[i]);
  free(d->splits);
  memset(d, 0, sizeof *d);
}

int bf_deploy_verify(const bf_deploy_split *s, int device, int server) {
  uint8_t got[32];
  if (device) {
    BF_TRY(bf_sha256_file(s->device_path, got));
    if (memcmp(got, s->device_sha, 32))
      return bf_error(BF_EINVAL, "%s: SHA-256 differs from the manifest (file changed after export?)", s->device_path);
  }
  if (server) {
    BF_TRY(bf_sha256_file(s->server_path, got));
    if (memcmp(got, s->server_sha, 32))
      return bf_error(BF_EINVAL, "%s: SHA-256 differs from the manifest (file changed after export?)", s->server_path);
  }
  return BF_OK;
}

const bf_deploy_split *bf_deploy_find(const bf_deploy *d, int k) {
  for (int i = 0; i < d->n; i++)
    if (d->splits[i].split_after == k) return &d->splits[i];
  return NULL;
}

const bf_deploy_split *bf_deploy_find_id(const bf_deploy *d, const uint8_t *id) {
  for (int i = 0; i < d->n; i++)
    if (!memcmp(d->splits[i].id, id, BF_MODEL_ID_LEN)) return &d->splits[i];
  return NULL;
}

int bf_deploy_check_engine(const bf_deploy_split *s, const bf_engine *e, const char *what) {
  /* The manifest's fields size the server's buffers and the shapes it
   * accepts; the engine's come from the weights. A manifest edited by hand,
   * or paired with another export's weights, must not reach inference. */
  const char *names[3] = {"split_after", "d_r", "num_classes"};
  int man[3] = {s->split_after, s->d_r, s->num_classes};
  int eng[3] = {bf_engine_split_after(e), bf_engine_d_r(e), bf_engine_num_classes(e)};
  for (int i = 0; i < 3; i++)
    if (man[i] != eng[i])
      return bf_error(BF_EINVAL,
                      "%s/manifest.json: %s is %d, but the %s weights have %d (manifest edited, or from another "
                      "export?)",
                      s->dir, names[i], man[i], what, eng[i]);
  /* the quantiser the client applies must be the one the model was trained with */
  int ebits;
  float eclip;
  bf_engine_quant(e, &ebits, &eclip);
  if ((s->clip > 0 ? s->bits : 0) != ebits || s->clip != eclip)
    return bf_error(BF_EINVAL,
                    "%s/manifest.json: quantization bits %d clip %g, but the %s weights were trained with bits %d "
                    "clip %g (manifest edited, or from another export?)",
                    s->dir, s->clip > 0 ? s->bits : 0, (double)s->clip, what, ebits, (double)eclip);
  return BF_OK;
}
