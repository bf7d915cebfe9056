/* Host <-> backend traffic of the training step, built for one host sync per
 * step: uint8 NHWC batches are staged in backend host memory (pinned on
 * CUDA), uploaded without waiting and normalised by the backend
 * (normalize_u8); the loss and the correct-prediction count are gathered in
 * one 2-float backend buffer and downloaded together. */
#ifndef BF_BATCH_IO_H
#define BF_BATCH_IO_H

#include <stdint.h>

#include "backend.h"
#include "bf_data.h"

typedef struct bf_batch_io bf_batch_io;

/* For batches of `batch` images of size x size x 3. */
int bf_batch_io_create(bf_batch_io **out, bf_backend *be, int batch, int size);
void bf_batch_io_free(bf_batch_io *io);
/* Queues b's uint8 pixels and (if labels_dev) labels for upload, then the
 * normalisation with mean/std into input_dev. Does not wait. */
int bf_batch_io_put(bf_batch_io *io, const bf_batch *b, const float mean[3], const float std[3], float *input_dev,
                    int32_t *labels_dev);
/* The step's one sync: counts the rows of logits[n, c] whose first maximum is
 * at their label, then downloads that count with the loss (a backend float).
 * Reports the deferred errors of the step (a bad label, a non-finite loss). */
int bf_batch_io_finish(bf_batch_io *io, const float *loss_dev, const float *logits, const int32_t *labels_dev, int n,
                       int c, float *loss, int *correct);

#endif
