/* SHA-256 (FIPS 180-4), written from the standard; used for the manifest's
 * file digests and the model id carried in every frame. */
#ifndef BF_SHA256_H
#define BF_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct bf_sha256 {
  uint32_t h[8];
  uint64_t bytes;
  uint8_t buf[64];
  size_t fill;
} bf_sha256;

void bf_sha256_init(bf_sha256 *s);
void bf_sha256_update(bf_sha256 *s, const void *data, size_t len);
void bf_sha256_final(bf_sha256 *s, uint8_t out[32]);
void bf_sha256_digest(const void *data, size_t len, uint8_t out[32]);
/* Lower-case hex, 64 characters + NUL. */
void bf_sha256_hex(const uint8_t d[32], char out[65]);
/* Parses 64 hex characters; 0 or BF_EINVAL. */
int bf_sha256_from_hex(const char *hex, uint8_t out[32]);
/* Digest of a whole file. */
int bf_sha256_file(const char *path, uint8_t out[32]);

#endif
