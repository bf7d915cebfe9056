/* The rate-accuracy curve (issue 16): for every trained candidate, the bytes
 * bf-client would send per image with each codec. Each candidate is exported
 * at the profiling input size into DIR/rate/kK_drR/ with rans tables from
 * profile.rans_images training images (bf-export --rans-data), and its device
 * half codes profile.rate_images test images, evenly spaced in the test
 * split's order (bf_codec_bytes); the exported halves are then removed. The
 * codes are the candidate's own: a quantisation-aware checkpoint
 * (model.quant_bits) is exported with its bits and clip, its tables count its
 * b-bit codes and its bytes are those of the codes bf-client sends for it. The
 * numbers are cached in
 * DIR/rate/kK_drR/codec_bytes.json with what they depend on (checkpoint
 * SHA-256, input size, image counts), so a resumed search measures only what
 * is new and --select-only measures nothing. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_data.h"
#include "rans_export.h"
#include "search_internal.h"
#include "sha256.h"
#include "split.h"

#define CACHE_FORMAT "butterfly-codec-bytes-1"

/* The candidates' train/test split: the fields of bf-train's data config
 * that decide it (trainer.c open_data). */
static int data_cfg(const bf_train_config *t, bf_data_config *dc) {
  bf_data_config_init(dc);
  if (bf_layout_parse(t->data_layout, &dc->layout)) return bf_error(BF_EINVAL, "data.layout: %s", bf_last_error());
  dc->split_seed = t->data_split_seed;
  dc->test_fraction = t->data_test_fraction;
  dc->max_bad_fraction = t->data_max_bad_fraction;
  return 0;
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* 1: a cache for exactly this candidate, checkpoint (sha NULL: its weights
 * are gone, not checked) and settings */
static int read_cache(const char *path, const char *sha, int input_size, const bf_search_config *c, bf_rate_point *r) {
  uint8_t *data;
  size_t len;
  FILE *fp = fopen(path, "rb");
  if (!fp) return 0;
  fclose(fp);
  if (bf_read_file(path, &data, &len)) return 0;
  cJSON *j = cJSON_ParseWithLength((const char *)data, len);
  free(data);
  if (!j) return 0;
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "format"), *h = cJSON_GetObjectItemCaseSensitive(j, "checkpoint_sha256");
  int ok = cJSON_IsString(f) && !strcmp(f->valuestring, CACHE_FORMAT) && cJSON_IsString(h) &&
           (!sha || !strcmp(h->valuestring, sha)) && num(j, "split") == r->split && num(j, "d_r") == r->d_r &&
           num(j, "input_size") == input_size && num(j, "rate_images") == c->rate_images &&
           num(j, "rans_images_requested") == c->rans_images;
  static const char *const keys[BF_RATE_CODECS] = {"raw", "zstd", "rans"};
  for (int k = 0; ok && k < BF_RATE_CODECS; k++) ok = (r->frame_bytes[k] = num(j, keys[k])) > 0;
  if (ok) {
    r->images = (int)num(j, "images");
    r->rans_images = (int)num(j, "rans_images");
    r->bits = (int)num(j, "bits");
    ok = r->images > 0 && r->rans_images > 0 && r->bits >= 2 && r->bits <= 8;
  }
  cJSON_Delete(j);
  return ok;
}

static int write_cache(const char *path, const char *sha, int input_size, const bf_search_config *c,
                       const bf_rate_point *r) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return bf_error(BF_ENOMEM, "%s", path);
  cJSON_AddStringToObject(j, "format", CACHE_FORMAT);
  cJSON_AddNumberToObject(j, "split", r->split);
  cJSON_AddNumberToObject(j, "d_r", r->d_r);
  cJSON_AddStringToObject(j, "checkpoint_sha256", sha);
  cJSON_AddNumberToObject(j, "input_size", input_size);
  cJSON_AddNumberToObject(j, "rate_images", c->rate_images);
  cJSON_AddNumberToObject(j, "rans_images_requested", c->rans_images);
  cJSON_AddNumberToObject(j, "images", r->images);
  cJSON_AddNumberToObject(j, "rans_images", r->rans_images);
  cJSON_AddNumberToObject(j, "bits", r->bits);
  cJSON_AddNumberToObject(j, "raw", r->frame_bytes[BF_RATE_RAW]);
  cJSON_AddNumberToObject(j, "zstd", r->frame_bytes[BF_RATE_ZSTD]);
  cJSON_AddNumberToObject(j, "rans", r->frame_bytes[BF_RATE_RANS]);
  char *t = cJSON_Print(j);
  cJSON_Delete(j);
  int rc = t ? bf_write_file_atomic(path, t, strlen(t)) : bf_error(BF_ENOMEM, "%s", path);
  free(t);
  return rc;
}

int srch_export_opts(const bf_search_config *c, int input_size, bf_data_config *dc, bf_export_opts *eo) {
  bf_export_opts_init(eo);
  eo->input_h = eo->input_w = input_size;
  if (c->rate_images <= 0) return 0;
  BF_TRY(data_cfg(&c->cand, dc));
  eo->rans_data = c->cand.data_root;
  eo->rans_images = c->rans_images;
  eo->rans_data_cfg = dc;
  return 0;
}

/* export with tables + bytes on the test images */
static int measure(const bf_search_config *c, bf_dataset *test, const char *ckpt, const char *root, int input_size,
                   bf_rate_point *r) {
  bf_export_opts eo;
  bf_data_config dc;
  BF_TRY(srch_export_opts(c, input_size, &dc, &eo));
  char sub[BF_TRAIN_PATH_MAX + 64];
  BF_TRY(bf_split_export(ckpt, root, &eo, sub, sizeof sub));
  bf_deploy d;
  BF_TRY(bf_deploy_open(&d, sub));
  int rc = bf_codec_bytes(&d.splits[0], test, BF_SPLIT_TEST, c->rate_images, r->frame_bytes, &r->images);
  if (!rc) {
    r->bits = d.splits[0].bits;
    /* the manifest records how many training images the tables saw */
    r->rans_images = eo.rans_images;
    size_t train = bf_dataset_count(test, BF_SPLIT_TRAIN);
    if ((size_t)r->rans_images > train) r->rans_images = (int)train;
  }
  bf_deploy_close(&d);
  /* the halves (a ResNet-50 each) are not needed again: manifest.json and
   * rans_tables.bin stay as the record of what was measured */
  char half[BF_TRAIN_PATH_MAX + 96];
  static const char *const halves[2] = {"device.safetensors", "server.safetensors"};
  for (int i = 0; i < 2; i++) {
    snprintf(half, sizeof half, "%s/%s", sub, halves[i]);
    if (remove(half) && !rc) rc = bf_error(BF_EIO, "%s: cannot remove", half);
  }
  return rc;
}

int srch_rate_points(search *s, int input_size, int do_measure, bf_rate_point **out, int *n_out) {
  const bf_search_config *c = s->c;
  *out = NULL;
  *n_out = 0;
  if (c->rate_images <= 0 || !s->st.n) return 0;
  bf_rate_point *r = calloc((size_t)s->st.n, sizeof *r);
  if (!r) return bf_error(BF_ENOMEM, "rate points");
  bf_data_config dc;
  bf_dataset *test = NULL;
  int rc = data_cfg(&c->cand, &dc), n = 0;
  for (int i = 0; i < s->st.n && !rc; i++) {
    const bf_search_entry *e = &s->st.e[i];
    if (!e->split) continue;
    bf_rate_point *p = &r[n];
    memset(p, 0, sizeof *p);
    p->split = e->split, p->d_r = e->d_r, p->top1 = e->top1;
    char name[64], root[BF_TRAIN_PATH_MAX + 64], cache[BF_TRAIN_PATH_MAX + 128], ckpt[BF_TRAIN_PATH_MAX + 32], hex[65];
    uint8_t d[32];
    srch_task_name(e->split, e->d_r, name, sizeof name);
    if ((rc = srch_pathf(root, sizeof root, "%s/rate/%s", c->dir, name)) ||
        (rc = srch_pathf(cache, sizeof cache, "%s/codec_bytes.json", root)) ||
        (rc = srch_pathf(ckpt, sizeof ckpt, "%s/last.safetensors", e->run_dir)))
      break;
    /* weights removed since (to free the disk): the cache is the record */
    int have = srch_file_exists(ckpt);
    if (have) {
      if ((rc = bf_sha256_file(ckpt, d))) break;
      bf_sha256_hex(d, hex);
    }
    if (read_cache(cache, have ? hex : NULL, input_size, c, p)) {
      n++;
      continue;
    }
    if (!do_measure || !have) continue;
    if (!test && (rc = bf_rans_data_open(c->cand.data_root, &dc, &test))) break;
    fprintf(s->log, "bf-search: bytes per image of RB%d D_r %d (export with rans tables, then the test images)\n",
            e->split, e->d_r);
    fflush(s->log);
    if ((rc = measure(c, test, ckpt, root, input_size, p)) ||
        (rc = write_cache(cache, hex, input_size, c, p))) {
      rc = bf_error_wrap(rc, "bytes per image of RB%d D_r %d", e->split, e->d_r);
      break;
    }
    fprintf(s->log,
            "bf-search:   raw %.0f B, zstd %.0f B, rans %.0f B per image (%d-bit codes, INFER frame, mean of %d test "
            "images; tables from %d training images)\n",
            p->frame_bytes[BF_RATE_RAW], p->frame_bytes[BF_RATE_ZSTD], p->frame_bytes[BF_RATE_RANS], p->bits,
            p->images, p->rans_images);
    n++;
  }
  if (test) bf_dataset_close(test);
  if (rc) {
    free(r);
    return rc;
  }
  *out = r;
  *n_out = n;
  return 0;
}
