/* bf-export's side of the rANS codec: the training images the tables are
 * estimated on, and the estimation (rans_export.c). */
#ifndef BF_RANS_EXPORT_H
#define BF_RANS_EXPORT_H

#include "bf_data.h"
#include "rans.h"
#include "split.h"

/* Opens the data set root (bf-train's data.root); an error names it. */
int bf_rans_data_open(const char *root, bf_dataset **ds);
/* Runs the device half (device_path) on min(o->rans_images, train count)
 * training images, evenly spaced in the split's canonical order, prepared
 * as bf-client prepares an image (o's resize, input size, mean/std, all
 * resolved), quantised by bf_features_encode with o->qscheme, and builds
 * tables of 2^bits symbols per channel from the code histograms. */
int bf_rans_estimate(const bf_dataset *ds, const char *device_path, const bf_export_opts *o, int bits,
                     bf_rans_tables *t, int *n_images);

#endif
