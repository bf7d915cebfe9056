/* The data-set side of the rANS codec (rans_export.c): the training images
 * bf-export estimates the tables on, and the bytes per image of each codec
 * on a data set's images (bf-search's rate-accuracy curve). */
#ifndef BF_RANS_EXPORT_H
#define BF_RANS_EXPORT_H

#include "bf_data.h"
#include "rans.h"
#include "split.h"

/* Opens the data set root (bf-train's data.root) with dc's layout and
 * train/test split (NULL: bf_data's defaults); an error names it. */
int bf_rans_data_open(const char *root, const bf_data_config *dc, bf_dataset **ds);
/* Runs the device half (device_path) on min(o->rans_images, train count)
 * training images, evenly spaced in the split's canonical order, prepared
 * as bf-client prepares an image (o's resize, input size, mean/std, all
 * resolved), quantised by bf-client's encoder with o->qscheme and `fixed`
 * (a quantisation-aware model's fixed range; NULL: the range of each
 * image), and builds tables of 2^bits symbols per channel (bits: fixed's,
 * else 8) from the code histograms. */
int bf_rans_estimate(const bf_dataset *ds, const char *device_path, const bf_export_opts *o, const bf_qfixed *fixed,
                     bf_rans_tables *t, int *n_images);

/* Mean INFER frame bytes per image (header + body + CRC: what bf-client
 * sends) of the device half of ds on min(n, count) images of `split` of
 * data, chosen and prepared as above, quantised as bf-client quantises
 * them (the manifest's granularity, or its bits and clip) and coded raw, zstd (the manifest's level) and rans (its
 * tables; bytes[2] = 0 without them). *n_used: the images. */
int bf_codec_bytes(const bf_deploy_split *ds, const bf_dataset *data, bf_split split, int n, double bytes[3],
                   int *n_used);

#endif
