/* Files of a run directory that bf_train_run writes whole (docs/formats.md):
 * result.json, and metrics.jsonl cut back to a resumed checkpoint. */
#ifndef BF_TRAIN_RUN_FILES_H
#define BF_TRAIN_RUN_FILES_H

#include <stdint.h>

#include "config.h"
#include "trainer.h"

/* Keeps only the lines of metrics.jsonl at or before global step `gs`; no
 * file is fine. */
int bf_train_metrics_truncate(const char *path, int64_t gs);
/* dir/result.json (atomic) from a finished run's result. */
int bf_train_write_result(const bf_train_config *c, const bf_train_result *res, int threads, const char *dir);

#endif
