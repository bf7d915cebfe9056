#include "batch_io.h"

#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

struct bf_batch_io {
  bf_backend *be;
  size_t px_bytes, lab_bytes;
  uint8_t *stage_u8; /* host_alloc: source of upload_async */
  int32_t *stage_lab;
  uint8_t *dev_u8;   /* backend memory */
  float *dev_stats;  /* [loss, correct] */
  float host_stats[2];
};

int bf_batch_io_create(bf_batch_io **out, bf_backend *be, int batch, int size) {
  *out = NULL;
  bf_batch_io *io = bf_calloc(1, sizeof *io, "batch io");
  if (!io) return BF_ENOMEM;
  io->be = be;
  io->px_bytes = (size_t)batch * size * size * 3;
  io->lab_bytes = (size_t)batch * sizeof(int32_t);
  io->stage_u8 = be->host_alloc(be, io->px_bytes);
  io->stage_lab = io->stage_u8 ? be->host_alloc(be, io->lab_bytes) : NULL;
  io->dev_u8 = io->stage_lab ? be->alloc(be, io->px_bytes) : NULL;
  io->dev_stats = io->dev_u8 ? be->alloc(be, 2 * sizeof(float)) : NULL;
  if (!io->dev_stats) {
    int rc = bf_error_wrap(BF_ENOMEM, "batch buffers (%zu bytes)", io->px_bytes);
    bf_batch_io_free(io);
    return rc;
  }
  *out = io;
  return BF_OK;
}

void bf_batch_io_free(bf_batch_io *io) {
  if (!io) return;
  bf_backend *be = io->be;
  be->free(be, io->dev_stats);
  be->free(be, io->dev_u8);
  be->host_free(be, io->stage_lab);
  be->host_free(be, io->stage_u8);
  free(io);
}

int bf_batch_io_put(bf_batch_io *io, const bf_batch *b, const float mean[3], const float std[3], float *input_dev,
                    int32_t *labels_dev) {
  bf_backend *be = io->be;
  const size_t px = (size_t)b->batch_size * b->h * b->w * 3;
  if (!b->u8 || px != io->px_bytes)
    return bf_error(BF_EINVAL, "batch io: batch of %zu uint8 values, %zu expected", b->u8 ? px : 0, io->px_bytes);
  /* The staging buffers are free again: the previous step's download (or
   * evaluation batch's) waited for every queued copy. */
  memcpy(io->stage_u8, b->u8, px);
  BF_TRY(be->upload_async(be, io->dev_u8, io->stage_u8, px));
  if (labels_dev) {
    memcpy(io->stage_lab, b->labels, io->lab_bytes);
    BF_TRY(be->upload_async(be, labels_dev, io->stage_lab, io->lab_bytes));
  }
  return be->normalize_u8(be, px / 3, io->dev_u8, mean, std, input_dev);
}

int bf_batch_io_finish(bf_batch_io *io, const float *loss_dev, const float *logits, const int32_t *labels_dev, int n,
                       int c, float *loss, int *correct) {
  bf_backend *be = io->be;
  BF_TRY(be->count_correct(be, n, c, logits, labels_dev, io->dev_stats + 1));
  BF_TRY(be->copy(be, io->dev_stats, loss_dev, sizeof(float)));
  BF_TRY(be->download(be, io->host_stats, io->dev_stats, sizeof io->host_stats));
  *loss = io->host_stats[0];
  *correct = (int)io->host_stats[1];
  return BF_OK;
}
