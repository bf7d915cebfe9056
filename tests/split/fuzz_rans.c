/* libFuzzer target for the rANS decoder and the tables parser (hostile
 * payloads and tables files); input layout in fuzz_rans.h. Built by
 * tests/split/fuzz_frame.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_rans.h"
#include "rans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FUZZ_RANS_HEAD) return 0;
  int channels = data[0] % 8 + 1, bits = data[1] % 8 + 1, pixels = data[2], mode = data[3], skew = data[4];
  int w = fuzz_rans_width(mode, pixels);
  const uint8_t *p = data + FUZZ_RANS_HEAD, *end = data + size;
  bf_rans_tables t;
  if (mode & 1) {
    if (end - p < 2) return 0;
    size_t n = bf_get_u16(p);
    p += 2;
    if ((size_t)(end - p) < n) return 0;
    /* a copy: the parser must not read past n */
    uint8_t *blob = malloc(n ? n : 1);
    if (!blob) return 0;
    memcpy(blob, p, n);
    int rc = bf_rans_tables_parse(blob, n, "fuzz", &t);
    free(blob);
    if (rc) return 0;
    p += n;
  } else {
    uint64_t counts[8 * 256];
    fuzz_rans_counts(channels, bits, skew, counts);
    if (bf_rans_tables_from_counts(&t, channels, bits, counts)) abort(); /* always valid */
    fuzz_rans_preds(mode, &t);
  }
  size_t len = (size_t)(end - p), n = (size_t)pixels * t.channels;
  uint8_t *in = malloc(len ? len : 1), *sym = malloc(n ? n : 1);
  if (in && sym) {
    memcpy(in, p, len);
    if (bf_rans_decode(&t, in, len, w, sym, n) == 0) {
      /* what decodes re-encodes to the same stream */
      size_t cap = bf_rans_bound(n), l2;
      uint8_t *re = malloc(cap);
      if (re) {
        if (bf_rans_encode(&t, sym, n, w, re, cap, &l2) || l2 != len || memcmp(re, in, len)) abort();
        free(re);
      }
    }
  }
  free(in);
  free(sym);
  bf_rans_tables_free(&t);
  return 0;
}
