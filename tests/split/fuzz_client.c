/* libFuzzer target for what bf-client parses from a server it must not
 * trust: RESULT, STATUS_REPLY and ERROR bodies with the client's own checks
 * (class count from its manifest, the split it expects). Input: one byte for
 * the client's class count (1..256), then a frame. The frame's body_len and
 * CRC are made consistent first, so that mutations reach the body parsers
 * instead of stopping at the CRC; the bare bytes also go to each unpacker.
 * Built with clang -fsanitize=fuzzer,address by tests/split/fuzz_frame.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "frame.h"

static void unpack_all(const uint8_t *b, size_t n, uint32_t classes) {
  static const uint8_t id[BF_MODEL_ID_LEN] = {1, 2, 3};
  bf_result r;
  (void)bf_result_unpack(b, n, classes, &r);
  bf_status s;
  if (!bf_status_unpack(b, n, &s)) (void)bf_status_check_model(&s, id, 13, 8);
  uint32_t code;
  char msg[64];
  (void)bf_error_unpack(b, n, &code, msg, sizeof msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint32_t classes = (uint32_t)data[0] + 1;
  data++, size--;
  /* copies: the parsers must not rely on bytes past the end */
  uint8_t *raw = malloc(size ? size : 1);
  if (!raw) return 0;
  memcpy(raw, data, size);
  unpack_all(raw, size, classes);
  free(raw);
  if (size < BF_FRAME_HEADER) return 0;
  uint8_t *buf = malloc(size + BF_FRAME_TRAILER);
  if (!buf) return 0;
  memcpy(buf, data, size);
  bf_put_u32(buf + 8, (uint32_t)(size - BF_FRAME_HEADER));
  bf_put_u32(buf + size, (uint32_t)crc32(0L, buf, (uInt)size));
  bf_frame f;
  if (bf_frame_parse(buf, size + BF_FRAME_TRAILER, 1u << 20, &f) == 0) unpack_all(f.body, f.body_len, classes);
  free(buf);
  return 0;
}
