/* run_files.h: result.json and the metrics.jsonl cut of a resume (moved
 * out of trainer.c, which keeps the loop). */
#include "run_files.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_core.h"

/* Keeps only the metrics lines at or before global step `gs` (a resumed run
 * repeats the steps after its checkpoint). */
int bf_train_metrics_truncate(const char *path, int64_t gs) {
  struct stat sb;
  if (stat(path, &sb) != 0) return BF_OK; /* nothing logged yet */
  uint8_t *data;
  size_t len;
  BF_TRY(bf_read_file(path, &data, &len));
  char *out = bf_malloc(len + 1, "metrics.jsonl rewrite");
  if (!out) {
    free(data);
    return BF_ENOMEM;
  }
  size_t o = 0;
  char *p = (char *)data;
  while (*p) {
    char *nl = strchr(p, '\n');
    size_t l = nl ? (size_t)(nl - p) : strlen(p);
    char save = p[l];
    p[l] = 0;
    cJSON *j = cJSON_Parse(p);
    int keep = 0;
    if (j) {
      const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
      keep = cJSON_IsNumber(s) && s->valuedouble <= (double)gs;
      cJSON_Delete(j);
    }
    if (keep) {
      memcpy(out + o, p, l);
      o += l;
      out[o++] = '\n';
    }
    p[l] = save;
    p += l + (nl ? 1 : 0);
  }
  int rc = bf_write_file_atomic(path, out, o);
  free(out);
  free(data);
  return rc;
}

int bf_train_write_result(const bf_train_config *c, const bf_train_result *res, int threads, const char *dir) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return bf_error(BF_ENOMEM, "result.json");
  cJSON_AddStringToObject(j, "format", "butterfly-train-result-v1");
  cJSON_AddStringToObject(j, "name", c->name);
  cJSON_AddStringToObject(j, "status", "completed");
  cJSON_AddNumberToObject(j, "top1", res->top1);
  cJSON_AddNumberToObject(j, "top5", res->top5);
  cJSON_AddNumberToObject(j, "topk", res->topk);
  cJSON_AddNumberToObject(j, "test_loss", res->test_loss);
  cJSON_AddNumberToObject(j, "best_top1", res->best_top1);
  cJSON_AddNumberToObject(j, "best_epoch", res->best_epoch);
  cJSON_AddNumberToObject(j, "split_after", res->split_after);
  cJSON_AddNumberToObject(j, "d_r", res->d_r);
  cJSON_AddNumberToObject(j, "num_classes", res->num_classes);
  cJSON_AddNumberToObject(j, "image_size", res->image_size);
  cJSON_AddNumberToObject(j, "num_params", (double)res->num_params);
  cJSON *shape = cJSON_AddArrayToObject(j, "offload_shape");
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(res->feat_h));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(res->feat_w));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(res->feat_c));
  cJSON_AddNumberToObject(j, "offload_bytes_per_image", (double)res->offload_bytes_per_image);
  cJSON_AddNumberToObject(j, "epochs", res->epochs_done);
  cJSON_AddNumberToObject(j, "steps", (double)res->global_step);
  cJSON_AddNumberToObject(j, "steps_per_epoch", (double)res->steps_per_epoch);
  cJSON_AddNumberToObject(j, "batch_size", c->batch_size);
  cJSON_AddNumberToObject(j, "train_time_sec", res->train_time);
  cJSON_AddNumberToObject(j, "images_per_sec", res->images_per_sec);
  cJSON_AddStringToObject(j, "backend", c->backend);
  cJSON_AddNumberToObject(j, "threads", threads);
  cJSON_AddStringToObject(j, "init", c->init);
  cJSON_AddStringToObject(j, "data_root", c->data_root);
  char *s = cJSON_Print(j);
  cJSON_Delete(j);
  if (!s) return bf_error(BF_ENOMEM, "result.json");
  char path[BF_TRAIN_PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/result.json", dir);
  size_t n = strlen(s);
  s[n] = '\n'; /* replace the NUL: cJSON_Print output has room only for it */
  int rc = bf_write_file_atomic(path, s, n + 1);
  free(s);
  return rc;
}
