/* Profiles measured where the halves run (issue 17): bf-profile times every
 * split point of a deploy directory on the machine it runs on and writes
 * device-profile.json or server-profile.json; bf-search --select-only reads
 * them back (docs/search.md, "Profiles from real machines").
 *
 * One entry per split point: the model id (SHA-256 of its manifest.json, the
 * id in every frame), split, D_r, input size, the timed half's SHA-256, the
 * time (median, p10, p90 of the timed runs) and, on the device, the INFER
 * frame bytes per codec and the energy per image. Plus the whole model of the
 * deepest split (mobile-only on the device, cloud-only on the server). */
#ifndef BF_HWPROFILE_H
#define BF_HWPROFILE_H

#include <stdio.h>

#include "measure.h"
#include "split.h"

#define BF_HWPROF_FORMAT "butterfly-hw-profile-1"
#define BF_HWPROF_MAX 16

typedef enum { BF_HWPROF_DEVICE = 0, BF_HWPROF_SERVER = 1 } bf_hwprof_side;

typedef struct bf_hwprof_entry {
  int split, d_r;
  char model_id[65];    /* hex SHA-256 of manifest.json */
  char half_sha256[65]; /* the timed half (whole model: the device half) */
  int input_h, input_w; /* network input of the export */
  int feat_h, feat_w;
  /* device: engine + per-tensor 8-bit quantisation (bf-search's TM);
   * server: engine on the dequantised features (TC); whole model: engine */
  bf_timing time;
  bf_timing quant; /* device: the quantisation part */
  /* device: INFER frame bytes per image (header + parameters + payload +
   * CRC) for float32, 8-bit raw and 8-bit + zstd, from bf_features_encode */
  double bytes_float32, bytes_raw, bytes_zstd;
  double energy_mj; /* per image: RAPL delta / runs, or power x median time */
} bf_hwprof_entry;

typedef struct bf_hwprof {
  bf_hwprof_side side;
  char host[512];       /* hostname, kernel, machine, CPU model, cores */
  char backend[16];
  int threads, warmup, runs;
  char energy_source[16]; /* "rapl" (measured) or "modelled" (power_mw x time) */
  double power_mw;        /* the configured power of "modelled" */
  int n;
  bf_hwprof_entry e[BF_HWPROF_MAX]; /* sorted by split */
  bf_hwprof_entry whole;            /* the whole model of the deepest split */
} bf_hwprof;

typedef struct bf_hwprof_opts {
  bf_hwprof_side side;
  const char *backend; /* "cpu" */
  int threads, warmup, runs;
  double power_mw;     /* used where RAPL is not readable */
  const char *rapl_dir; /* NULL: /sys/class/powercap */
} bf_hwprof_opts;

const char *bf_hwprof_side_name(bf_hwprof_side s);
/* Default file name: device-profile.json / server-profile.json. */
const char *bf_hwprof_default_file(bf_hwprof_side s);

/* Times every split of the deploy directory (SHA-256s verified first).
 * log (may be NULL): one line per split. */
int bf_hwprof_measure(const bf_deploy *d, const bf_hwprof_opts *o, bf_hwprof *out, FILE *log);
/* Writes the JSON atomically. */
int bf_hwprof_write(const bf_hwprof *p, const char *path);
/* Reads and validates a profile: format, side, every number finite and
 * non-negative, ids well-formed. Errors name the file and the field
 * ("dev.json: splits[1].time_ms.median: ..."). */
int bf_hwprof_read(const char *path, bf_hwprof_side side, bf_hwprof *out);

#endif
