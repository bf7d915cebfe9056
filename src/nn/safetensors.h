/* safetensors reader/writer (format: 8-byte little-endian header size N, N
 * bytes of JSON header, then the byte buffer). The reader validates the whole
 * header before anything is used: every error names the file and the tensor
 * or byte offset at fault. */
#ifndef BF_SAFETENSORS_H
#define BF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum bf_dtype { BF_DT_F32, BF_DT_F64, BF_DT_F16, BF_DT_BF16, BF_DT_I64, BF_DT_I32, BF_DT_U8, BF_DT_BOOL } bf_dtype;

const char *bf_dtype_name(bf_dtype dt);
size_t bf_dtype_size(bf_dtype dt);

#define BF_ST_MAX_DIMS 8

typedef struct bf_st_tensor {
  char *name;
  bf_dtype dtype;
  int ndim;
  int64_t shape[BF_ST_MAX_DIMS];
  size_t numel;
  size_t begin, end; /* offsets into the data buffer */
} bf_st_tensor;

typedef struct bf_st_meta {
  char *key, *value;
} bf_st_meta;

typedef struct bf_safetensors {
  char *path;
  uint8_t *file; /* whole file */
  size_t file_len;
  const uint8_t *data; /* start of the data buffer */
  size_t data_len;
  bf_st_tensor *tensors;
  int n_tensors;
  bf_st_meta *meta;
  int n_meta;
} bf_safetensors;

int bf_st_load(bf_safetensors *st, const char *path);
void bf_st_free(bf_safetensors *st);
const bf_st_tensor *bf_st_find(const bf_safetensors *st, const char *name);
const void *bf_st_tensor_data(const bf_safetensors *st, const bf_st_tensor *t);
const char *bf_st_meta_get(const bf_safetensors *st, const char *key); /* NULL if absent */

/* Writer: tensors are referenced, not copied, until bf_st_writer_save. */
typedef struct bf_st_entry {
  char *name;
  bf_dtype dtype;
  int ndim;
  int64_t shape[BF_ST_MAX_DIMS];
  const void *data;
  size_t bytes;
} bf_st_entry;

typedef struct bf_st_writer {
  bf_st_entry *entries;
  int n, cap;
  bf_st_meta *meta;
  int n_meta, cap_meta;
} bf_st_writer;

void bf_st_writer_init(bf_st_writer *w);
int bf_st_writer_add(bf_st_writer *w, const char *name, bf_dtype dt, int ndim, const int64_t *shape,
                     const void *data);
int bf_st_writer_meta(bf_st_writer *w, const char *key, const char *value);
int bf_st_writer_save(const bf_st_writer *w, const char *path); /* atomic */
void bf_st_writer_free(bf_st_writer *w);

#endif
