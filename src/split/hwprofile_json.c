/* device-profile.json / server-profile.json (hwprofile.h): writer and the
 * validating reader. A profile comes from another machine, so every field is
 * checked and an error names the file and the field. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "frame.h"
#include "hwprofile.h"

static cJSON *timing_json(const bf_timing *t) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "median", t->median_ms);
  cJSON_AddNumberToObject(j, "p10", t->p10_ms);
  cJSON_AddNumberToObject(j, "p90", t->p90_ms);
  cJSON_AddNumberToObject(j, "min", t->min_ms);
  cJSON_AddNumberToObject(j, "max", t->max_ms);
  return j;
}

static cJSON *entry_json(const bf_hwprof *p, const bf_hwprof_entry *en, int whole) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "model_id", en->model_id);
  cJSON_AddNumberToObject(j, "split", en->split);
  cJSON_AddNumberToObject(j, "d_r", en->d_r);
  cJSON *in = cJSON_AddArrayToObject(j, "input_size");
  cJSON_AddItemToArray(in, cJSON_CreateNumber(en->input_h));
  cJSON_AddItemToArray(in, cJSON_CreateNumber(en->input_w));
  if (!whole) {
    cJSON_AddStringToObject(j, "half_sha256", en->half_sha256);
    cJSON *fs = cJSON_AddArrayToObject(j, "feature_shape");
    cJSON_AddItemToArray(fs, cJSON_CreateNumber(en->feat_h));
    cJSON_AddItemToArray(fs, cJSON_CreateNumber(en->feat_w));
    cJSON_AddItemToArray(fs, cJSON_CreateNumber(en->d_r));
  }
  cJSON_AddItemToObject(j, "time_ms", timing_json(&en->time));
  if (!whole && p->side == BF_HWPROF_DEVICE) {
    cJSON_AddItemToObject(j, "quant_ms", timing_json(&en->quant));
    cJSON *b = cJSON_AddObjectToObject(j, "frame_bytes");
    cJSON_AddNumberToObject(b, "float32", en->bytes_float32);
    cJSON_AddNumberToObject(b, "raw", en->bytes_raw);
    cJSON_AddNumberToObject(b, "zstd", en->bytes_zstd);
  }
  cJSON_AddNumberToObject(j, "energy_mj", en->energy_mj);
  return j;
}

int bf_hwprof_write(const bf_hwprof *p, const char *path) {
  cJSON *r = cJSON_CreateObject();
  if (!r) return bf_error(BF_ENOMEM, "%s", path);
  cJSON_AddStringToObject(r, "format", BF_HWPROF_FORMAT);
  cJSON_AddStringToObject(r, "side", bf_hwprof_side_name(p->side));
  cJSON_AddStringToObject(r, "host", p->host);
  cJSON_AddStringToObject(r, "backend", p->backend);
  cJSON_AddNumberToObject(r, "threads", p->threads);
  cJSON_AddNumberToObject(r, "warmup", p->warmup);
  cJSON_AddNumberToObject(r, "runs", p->runs);
  cJSON_AddStringToObject(r, "input",
                          "fixed pseudo-random N(0,1) values (bf_rng seed 1234); the server half runs on the device "
                          "half's dequantised 8-bit features of that input");
  cJSON_AddStringToObject(r, "energy_source", p->energy_source);
  cJSON_AddNumberToObject(r, "power_mw", p->power_mw);
  cJSON *a = cJSON_AddArrayToObject(r, "splits");
  for (int i = 0; i < p->n; i++) cJSON_AddItemToArray(a, entry_json(p, &p->e[i], 0));
  cJSON_AddItemToObject(r, "whole_model", entry_json(p, &p->whole, 1));
  char *txt = cJSON_Print(r);
  cJSON_Delete(r);
  if (!txt) return bf_error(BF_ENOMEM, "%s", path);
  int rc = bf_write_file_atomic(path, txt, strlen(txt));
  free(txt);
  return rc;
}

/* ---- reader ---- */

/* JSON has no NaN, but Python's json writes NaN / Infinity / -Infinity and
 * JavaScript writes null: the bare words become null here, so the field check
 * below names the field instead of a parse error naming a byte offset. */
static char *nan_to_null(const char *s, size_t len) {
  char *o = malloc(2 * len + 1);
  if (!o) return NULL;
  size_t j = 0;
  int in_str = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (in_str) {
      o[j++] = ch;
      if (ch == '\\' && i + 1 < len) o[j++] = s[++i];
      else if (ch == '"') in_str = 0;
      continue;
    }
    if (ch == '"') in_str = 1;
    const char *words[] = {"-Infinity", "Infinity", "NaN"};
    int hit = 0;
    for (int w = 0; w < 3 && !hit; w++) {
      size_t n = strlen(words[w]);
      if (len - i >= n && !strncmp(s + i, words[w], n)) {
        memcpy(o + j, "null", 4);
        j += 4;
        i += n - 1;
        hit = 1;
      }
    }
    if (!hit) o[j++] = ch;
  }
  o[j] = 0;
  return o;
}

typedef struct rd {
  const char *path;
} rd;

static int bad(const rd *r, const char *field, const char *what) {
  return bf_error(BF_EINVAL, "%s: %s: %s", r->path, field, what);
}

/* a finite number >= 0 */
static int get_num(const rd *r, const cJSON *o, const char *key, const char *prefix, double *v) {
  char f[160];
  snprintf(f, sizeof f, "%s%s", prefix, key);
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!x) return bad(r, f, "missing");
  if (cJSON_IsNull(x)) return bad(r, f, "NaN or null, not a finite number >= 0");
  if (!cJSON_IsNumber(x)) return bad(r, f, "not a number");
  if (!isfinite(x->valuedouble) || x->valuedouble < 0) {
    char m[96];
    snprintf(m, sizeof m, "%g is not a finite number >= 0", x->valuedouble);
    return bad(r, f, m);
  }
  *v = x->valuedouble;
  return 0;
}

static int get_int(const rd *r, const cJSON *o, const char *key, const char *prefix, int lo, int hi, int *v) {
  double d = 0;
  BF_TRY(get_num(r, o, key, prefix, &d));
  if (d != floor(d) || d < lo || d > hi) {
    char f[160], m[96];
    snprintf(f, sizeof f, "%s%s", prefix, key);
    snprintf(m, sizeof m, "%g is not an integer in %d..%d", d, lo, hi);
    return bad(r, f, m);
  }
  *v = (int)d;
  return 0;
}

static int get_str(const rd *r, const cJSON *o, const char *key, const char *prefix, char *out, size_t cap) {
  char f[160];
  snprintf(f, sizeof f, "%s%s", prefix, key);
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(x)) return bad(r, f, "missing or not a string");
  if (strlen(x->valuestring) >= cap) return bad(r, f, "too long");
  snprintf(out, cap, "%s", x->valuestring);
  return 0;
}

static int get_hex64(const rd *r, const cJSON *o, const char *key, const char *prefix, char *out) {
  BF_TRY(get_str(r, o, key, prefix, out, 65));
  int ok = strlen(out) == 64;
  for (int i = 0; ok && i < 64; i++) ok = isxdigit((unsigned char)out[i]) && !isupper((unsigned char)out[i]);
  if (!ok) {
    char f[160];
    snprintf(f, sizeof f, "%s%s", prefix, key);
    return bad(r, f, "not a SHA-256 in lower-case hex (64 digits)");
  }
  return 0;
}

static int get_timing(const rd *r, const cJSON *o, const char *key, const char *prefix, bf_timing *t) {
  char p[160];
  snprintf(p, sizeof p, "%s%s.", prefix, key);
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsObject(x)) return bad(r, p, "missing or not an object");
  BF_TRY(get_num(r, x, "median", p, &t->median_ms));
  BF_TRY(get_num(r, x, "p10", p, &t->p10_ms));
  BF_TRY(get_num(r, x, "p90", p, &t->p90_ms));
  BF_TRY(get_num(r, x, "min", p, &t->min_ms));
  BF_TRY(get_num(r, x, "max", p, &t->max_ms));
  if (!(t->min_ms <= t->p10_ms && t->p10_ms <= t->median_ms && t->median_ms <= t->p90_ms && t->p90_ms <= t->max_ms))
    return bad(r, p, "not ordered min <= p10 <= median <= p90 <= max");
  return 0;
}

static int get_entry(const rd *r, const cJSON *o, const char *prefix, bf_hwprof_side side, int whole,
                     bf_hwprof_entry *en) {
  memset(en, 0, sizeof *en);
  if (!cJSON_IsObject(o)) return bad(r, prefix, "not an object");
  char p[160];
  snprintf(p, sizeof p, "%s.", prefix);
  BF_TRY(get_hex64(r, o, "model_id", p, en->model_id));
  BF_TRY(get_int(r, o, "split", p, 1, 16, &en->split));
  BF_TRY(get_int(r, o, "d_r", p, 1, 2048, &en->d_r));
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "input_size");
  char f[192];
  snprintf(f, sizeof f, "%sinput_size", p);
  if (!cJSON_IsArray(in) || cJSON_GetArraySize(in) != 2) return bad(r, f, "not [height, width]");
  for (int i = 0; i < 2; i++) {
    const cJSON *v = cJSON_GetArrayItem(in, i);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 32 || v->valuedouble > 4096)
      return bad(r, f, "not [height, width] in 32..4096");
    *(i ? &en->input_w : &en->input_h) = (int)v->valuedouble;
  }
  if (!whole) {
    BF_TRY(get_hex64(r, o, "half_sha256", p, en->half_sha256));
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(o, "feature_shape");
    snprintf(f, sizeof f, "%sfeature_shape", p);
    en->feat_h = bf_feature_size(en->input_h, en->split);
    en->feat_w = bf_feature_size(en->input_w, en->split);
    int want[3] = {en->feat_h, en->feat_w, en->d_r}, ok = cJSON_IsArray(fs) && cJSON_GetArraySize(fs) == 3;
    for (int i = 0; ok && i < 3; i++) ok = cJSON_IsNumber(cJSON_GetArrayItem(fs, i)) &&
                                           cJSON_GetArrayItem(fs, i)->valuedouble == want[i];
    if (!ok) {
      char m[96];
      snprintf(m, sizeof m, "not [%d, %d, %d] (RB%d at %dx%d, D_r %d)", want[0], want[1], want[2], en->split,
               en->input_h, en->input_w, en->d_r);
      return bad(r, f, m);
    }
  }
  BF_TRY(get_timing(r, o, "time_ms", p, &en->time));
  if (!whole && side == BF_HWPROF_DEVICE) {
    BF_TRY(get_timing(r, o, "quant_ms", p, &en->quant));
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "frame_bytes");
    char pb[192];
    snprintf(pb, sizeof pb, "%sframe_bytes.", p);
    if (!cJSON_IsObject(b)) return bad(r, pb, "missing or not an object");
    BF_TRY(get_num(r, b, "float32", pb, &en->bytes_float32));
    BF_TRY(get_num(r, b, "raw", pb, &en->bytes_raw));
    BF_TRY(get_num(r, b, "zstd", pb, &en->bytes_zstd));
    /* the 8-bit raw frame's size follows from the shape: a profile that says
     * otherwise was not made by this format's writer */
    double raw = (double)bf_infer_raw_frame_len(BF_Q_U8_TENSOR, (uint64_t)en->feat_h * en->feat_w * en->d_r,
                                                (uint32_t)en->d_r);
    if (en->bytes_raw != raw) {
      char m[96];
      snprintf(m, sizeof m, "%.0f, but the 8-bit frame of this shape is %.0f bytes", en->bytes_raw, raw);
      snprintf(pb, sizeof pb, "%sframe_bytes.raw", p);
      return bad(r, pb, m);
    }
  }
  BF_TRY(get_num(r, o, "energy_mj", p, &en->energy_mj));
  return 0;
}

int bf_hwprof_read(const char *path, bf_hwprof_side side, bf_hwprof *out) {
  memset(out, 0, sizeof *out);
  rd r = {path};
  uint8_t *data;
  size_t len;
  BF_TRY(bf_read_file(path, &data, &len));
  char *txt = nan_to_null((const char *)data, len);
  free(data);
  if (!txt) return bf_error(BF_ENOMEM, "%s", path);
  cJSON *root = cJSON_Parse(txt);
  free(txt);
  if (!root) return bf_error(BF_EINVAL, "%s: not valid JSON", path);
  int rc = 0;
  char fmt[64], sd[16];
  if ((rc = get_str(&r, root, "format", "", fmt, sizeof fmt))) goto done;
  if (strcmp(fmt, BF_HWPROF_FORMAT)) {
    rc = bad(&r, "format", "not " BF_HWPROF_FORMAT " (a bf-profile output)");
    goto done;
  }
  if ((rc = get_str(&r, root, "side", "", sd, sizeof sd))) goto done;
  if (strcmp(sd, bf_hwprof_side_name(side))) {
    char m[96];
    snprintf(m, sizeof m, "'%s', expected '%s' (bf-profile --side %s)", sd, bf_hwprof_side_name(side),
             bf_hwprof_side_name(side));
    rc = bad(&r, "side", m);
    goto done;
  }
  out->side = side;
  if ((rc = get_str(&r, root, "host", "", out->host, sizeof out->host)) ||
      (rc = get_str(&r, root, "backend", "", out->backend, sizeof out->backend)) ||
      (rc = get_int(&r, root, "threads", "", 1, 1 << 20, &out->threads)) ||
      (rc = get_int(&r, root, "warmup", "", 0, 1 << 30, &out->warmup)) ||
      (rc = get_int(&r, root, "runs", "", 1, 1 << 30, &out->runs)) ||
      (rc = get_str(&r, root, "energy_source", "", out->energy_source, sizeof out->energy_source)) ||
      (rc = get_num(&r, root, "power_mw", "", &out->power_mw)))
    goto done;
  if (strcmp(out->energy_source, "rapl") && strcmp(out->energy_source, "modelled") &&
      strcmp(out->energy_source, "none")) {
    rc = bad(&r, "energy_source", "not rapl, modelled or none");
    goto done;
  }
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "splits");
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > BF_HWPROF_MAX) {
    rc = bad(&r, "splits", "missing, empty or more than 16 entries");
    goto done;
  }
  for (int i = 0; i < cJSON_GetArraySize(a); i++) {
    char p[32];
    snprintf(p, sizeof p, "splits[%d]", i);
    if ((rc = get_entry(&r, cJSON_GetArrayItem(a, i), p, side, 0, &out->e[i]))) goto done;
    for (int j = 0; j < i; j++)
      if (out->e[j].split == out->e[i].split) {
        char m[64];
        snprintf(m, sizeof m, "RB%d is listed twice", out->e[i].split);
        snprintf(p, sizeof p, "splits[%d].split", i);
        rc = bad(&r, p, m);
        goto done;
      }
    out->n++;
  }
  rc = get_entry(&r, cJSON_GetObjectItemCaseSensitive(root, "whole_model"), "whole_model", side, 1, &out->whole);
done:
  cJSON_Delete(root);
  return rc;
}
