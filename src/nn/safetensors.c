#include "safetensors.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

/* A header larger than this is certainly not ours and likely hostile. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

static const struct {
  const char *name;
  size_t size;
} k_dtypes[] = {[BF_DT_F32] = {"F32", 4}, [BF_DT_F64] = {"F64", 8}, [BF_DT_F16] = {"F16", 2},
                [BF_DT_BF16] = {"BF16", 2}, [BF_DT_I64] = {"I64", 8}, [BF_DT_I32] = {"I32", 4},
                [BF_DT_U8] = {"U8", 1},    [BF_DT_BOOL] = {"BOOL", 1}};

const char *bf_dtype_name(bf_dtype dt) { return k_dtypes[dt].name; }
size_t bf_dtype_size(bf_dtype dt) { return k_dtypes[dt].size; }

static int dtype_parse(const char *s, bf_dtype *out) {
  for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
    if (strcmp(s, k_dtypes[i].name) == 0) {
      *out = (bf_dtype)i;
      return 1;
    }
  return 0;
}

void bf_st_free(bf_safetensors *st) {
  if (!st) return;
  for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
  for (int i = 0; i < st->n_meta; i++) {
    free(st->meta[i].key);
    free(st->meta[i].value);
  }
  free(st->tensors);
  free(st->meta);
  free(st->file);
  free(st->path);
  memset(st, 0, sizeof *st);
}

static int cmp_begin(const void *a, const void *b) {
  const bf_st_tensor *x = *(const bf_st_tensor *const *)a, *y = *(const bf_st_tensor *const *)b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static int parse_header(bf_safetensors *st, const char *path, const char *json, size_t json_len) {
  cJSON *root = cJSON_ParseWithLength(json, json_len);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    long off = at ? (long)(at - json) + 8 : 8;
    return bf_error(BF_EINVAL, "%s: header is not valid JSON (near byte offset %ld)", path, off);
  }
  int rc = BF_OK;
  if (!cJSON_IsObject(root)) {
    rc = bf_error(BF_EINVAL, "%s: header is not a JSON object", path);
    goto done;
  }
  int count = cJSON_GetArraySize(root);
  st->tensors = bf_calloc((size_t)count, sizeof *st->tensors, "safetensors header");
  if (!st->tensors) {
    rc = BF_ENOMEM;
    goto done;
  }
  for (cJSON *it = root->child; it; it = it->next) {
    const char *name = it->string;
    if (strcmp(name, "__metadata__") == 0) {
      if (!cJSON_IsObject(it)) {
        rc = bf_error(BF_EINVAL, "%s: __metadata__ is not an object", path);
        goto done;
      }
      if (st->meta) {
        rc = bf_error(BF_EINVAL, "%s: __metadata__ appears twice", path);
        goto done;
      }
      st->meta = bf_calloc((size_t)cJSON_GetArraySize(it), sizeof *st->meta, "safetensors metadata");
      if (!st->meta) {
        rc = BF_ENOMEM;
        goto done;
      }
      for (cJSON *m = it->child; m; m = m->next) {
        if (!cJSON_IsString(m)) {
          rc = bf_error(BF_EINVAL, "%s: __metadata__.%s is not a string", path, m->string);
          goto done;
        }
        bf_st_meta *e = &st->meta[st->n_meta];
        e->key = strdup(m->string);
        e->value = strdup(m->valuestring);
        if (!e->key || !e->value) {
          free(e->key);
          free(e->value);
          rc = bf_error(BF_ENOMEM, "%s: out of memory", path);
          goto done;
        }
        st->n_meta++;
      }
      continue;
    }
    bf_st_tensor *t = &st->tensors[st->n_tensors];
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsObject(it) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
        cJSON_GetArraySize(offs) != 2) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s': header entry needs dtype, shape and data_offsets[2]", path, name);
      goto done;
    }
    if (!dtype_parse(dt->valuestring, &t->dtype)) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s': unknown dtype '%s'", path, name, dt->valuestring);
      goto done;
    }
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > BF_ST_MAX_DIMS) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s': %d dimensions (at most %d)", path, name, t->ndim, BF_ST_MAX_DIMS);
      goto done;
    }
    size_t numel = 1;
    int d = 0;
    for (cJSON *s = shape->child; s; s = s->next, d++) {
      if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble > 1e12 ||
          s->valuedouble != (double)(int64_t)s->valuedouble) {
        rc = bf_error(BF_EINVAL, "%s: tensor '%s': bad shape entry %d", path, name, d);
        goto done;
      }
      t->shape[d] = (int64_t)s->valuedouble;
      if (t->shape[d] && numel > (SIZE_MAX / 16) / (size_t)t->shape[d]) {
        rc = bf_error(BF_EINVAL, "%s: tensor '%s': shape too large", path, name);
        goto done;
      }
      numel *= (size_t)t->shape[d];
    }
    t->numel = numel;
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble, e = cJSON_GetArrayItem(offs, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || b < 0 ||
        e < b || b != (double)(uint64_t)b || e != (double)(uint64_t)e) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s': bad data_offsets", path, name);
      goto done;
    }
    t->begin = (size_t)b;
    t->end = (size_t)e;
    if (t->end > st->data_len) {
      rc = bf_error(BF_EINVAL,
                    "%s: tensor '%s': data_offsets [%zu, %zu] run past the end of the data (%zu bytes; file "
                    "truncated?)",
                    path, name, t->begin, t->end, st->data_len);
      goto done;
    }
    if (t->end - t->begin != numel * bf_dtype_size(t->dtype)) {
      rc = bf_error(BF_EINVAL, "%s: tensor '%s': %zu bytes at offset %zu but shape x %s needs %zu", path, name,
                    t->end - t->begin, t->begin, bf_dtype_name(t->dtype), numel * bf_dtype_size(t->dtype));
      goto done;
    }
    t->name = strdup(name);
    if (!t->name) {
      rc = bf_error(BF_ENOMEM, "%s: out of memory", path);
      goto done;
    }
    st->n_tensors++;
  }
  /* The spec requires the buffer to be covered exactly, without overlap. */
  if (st->n_tensors > 0) {
    const bf_st_tensor **order = bf_malloc((size_t)st->n_tensors * sizeof *order, "safetensors header");
    if (!order) {
      rc = BF_ENOMEM;
      goto done;
    }
    for (int i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n_tensors, sizeof *order, cmp_begin);
    size_t pos = 0;
    for (int i = 0; i < st->n_tensors && !rc; i++) {
      if (order[i]->begin != pos)
        rc = bf_error(BF_EINVAL, "%s: tensor '%s' starts at data offset %zu, expected %zu (overlap or hole)", path,
                      order[i]->name, order[i]->begin, pos);
      pos = order[i]->end;
    }
    if (!rc && pos != st->data_len)
      rc = bf_error(BF_EINVAL, "%s: %zu trailing bytes after the last tensor (data ends at offset %zu)", path,
                    st->data_len - pos, pos);
    free(order);
  } else if (st->data_len != 0) {
    rc = bf_error(BF_EINVAL, "%s: no tensors but %zu data bytes", path, st->data_len);
  }
done:
  cJSON_Delete(root);
  return rc;
}

int bf_st_load(bf_safetensors *st, const char *path) {
  memset(st, 0, sizeof *st);
  int rc = bf_read_file(path, &st->file, &st->file_len);
  if (rc) return rc;
  st->path = strdup(path);
  if (!st->path) {
    bf_st_free(st);
    return bf_error(BF_ENOMEM, "out of memory");
  }
  if (st->file_len < 8) {
    rc = bf_error(BF_EINVAL, "%s: file is %zu bytes, too short for a safetensors header (8-byte length first)",
                  path, st->file_len);
    bf_st_free(st);
    return rc;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | st->file[i];
  if (n > ST_MAX_HEADER || n > st->file_len - 8) {
    rc = bf_error(BF_EINVAL, "%s: header length %llu at byte offset 0 runs past the end of the file (%zu bytes)",
                  path, (unsigned long long)n, st->file_len);
    bf_st_free(st);
    return rc;
  }
  if (n < 2) {
    rc = bf_error(BF_EINVAL, "%s: header of %llu bytes cannot hold a JSON object", path, (unsigned long long)n);
    bf_st_free(st);
    return rc;
  }
  st->data = st->file + 8 + n;
  st->data_len = st->file_len - 8 - (size_t)n;
  rc = parse_header(st, path, (const char *)st->file + 8, (size_t)n);
  if (rc) bf_st_free(st);
  return rc;
}

const bf_st_tensor *bf_st_find(const bf_safetensors *st, const char *name) {
  for (int i = 0; i < st->n_tensors; i++)
    if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
  return NULL;
}

const void *bf_st_tensor_data(const bf_safetensors *st, const bf_st_tensor *t) { return st->data + t->begin; }

const char *bf_st_meta_get(const bf_safetensors *st, const char *key) {
  for (int i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
  return NULL;
}

void bf_st_writer_init(bf_st_writer *w) { memset(w, 0, sizeof *w); }

void bf_st_writer_free(bf_st_writer *w) {
  for (int i = 0; i < w->n; i++) free(w->entries[i].name);
  for (int i = 0; i < w->n_meta; i++) {
    free(w->meta[i].key);
    free(w->meta[i].value);
  }
  free(w->entries);
  free(w->meta);
  memset(w, 0, sizeof *w);
}

int bf_st_writer_add(bf_st_writer *w, const char *name, bf_dtype dt, int ndim, const int64_t *shape,
                     const void *data) {
  if (ndim < 0 || ndim > BF_ST_MAX_DIMS) return bf_error(BF_EINVAL, "tensor '%s': %d dimensions", name, ndim);
  if (w->n == w->cap) {
    int cap = w->cap ? 2 * w->cap : 64;
    bf_st_entry *e = realloc(w->entries, (size_t)cap * sizeof *e);
    if (!e) return bf_error(BF_ENOMEM, "out of memory adding tensor '%s'", name);
    w->entries = e;
    w->cap = cap;
  }
  bf_st_entry *e = &w->entries[w->n];
  memset(e, 0, sizeof *e);
  e->name = strdup(name);
  if (!e->name) return bf_error(BF_ENOMEM, "out of memory adding tensor '%s'", name);
  e->dtype = dt;
  e->ndim = ndim;
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    e->shape[i] = shape[i];
    numel *= (size_t)shape[i];
  }
  e->bytes = numel * bf_dtype_size(dt);
  e->data = data;
  w->n++;
  return BF_OK;
}

int bf_st_writer_meta(bf_st_writer *w, const char *key, const char *value) {
  if (w->n_meta == w->cap_meta) {
    int cap = w->cap_meta ? 2 * w->cap_meta : 8;
    bf_st_meta *m = realloc(w->meta, (size_t)cap * sizeof *m);
    if (!m) return bf_error(BF_ENOMEM, "out of memory adding metadata");
    w->meta = m;
    w->cap_meta = cap;
  }
  bf_st_meta *m = &w->meta[w->n_meta];
  m->key = strdup(key);
  m->value = strdup(value);
  if (!m->key || !m->value) {
    free(m->key);
    free(m->value);
    return bf_error(BF_ENOMEM, "out of memory adding metadata");
  }
  w->n_meta++;
  return BF_OK;
}

int bf_st_writer_save(const bf_st_writer *w, const char *path) {
  cJSON *root = cJSON_CreateObject();
  if (!root) return bf_error(BF_ENOMEM, "out of memory writing %s", path);
  int rc = BF_OK;
  if (w->n_meta) {
    cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
    for (int i = 0; m && i < w->n_meta; i++)
      if (!cJSON_AddStringToObject(m, w->meta[i].key, w->meta[i].value)) m = NULL;
    if (!m) rc = bf_error(BF_ENOMEM, "out of memory writing %s", path);
  }
  size_t off = 0;
  for (int i = 0; i < w->n && !rc; i++) {
    const bf_st_entry *e = &w->entries[i];
    cJSON *t = cJSON_AddObjectToObject(root, e->name);
    cJSON *shape = t ? cJSON_AddArrayToObject(t, "shape") : NULL;
    cJSON *offs = t ? cJSON_AddArrayToObject(t, "data_offsets") : NULL;
    if (!t || !shape || !offs || !cJSON_AddStringToObject(t, "dtype", bf_dtype_name(e->dtype))) {
      rc = bf_error(BF_ENOMEM, "out of memory writing %s", path);
      break;
    }
    for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + e->bytes)));
    off += e->bytes;
  }
  char *json = rc ? NULL : cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (rc) return rc;
  if (!json) return bf_error(BF_ENOMEM, "out of memory writing %s", path);
  /* Pad the header with spaces to a multiple of 8 so tensor data is aligned. */
  size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
  uint8_t hdr[8];
  for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  bf_atomic_file af;
  rc = bf_atomic_open(&af, path);
  if (rc) {
    free(json);
    return rc;
  }
  static const char spaces[8] = "        ";
  rc = bf_atomic_write(&af, hdr, 8);
  if (!rc) rc = bf_atomic_write(&af, json, jl);
  if (!rc) rc = bf_atomic_write(&af, spaces, padded - jl);
  for (int i = 0; i < w->n && !rc; i++) rc = bf_atomic_write(&af, w->entries[i].data, w->entries[i].bytes);
  free(json);
  if (rc) {
    bf_atomic_abort(&af);
    return rc;
  }
  return bf_atomic_commit(&af);
}
