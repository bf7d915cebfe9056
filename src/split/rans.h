/* Static-model rANS coder for the quantised features (codec `rans`,
 * docs/protocol.md). Written here: no Debian library offers a table-driven
 * integer rANS whose per-channel static tables we estimate at export and ship
 * beside the manifest (zstd and zlib adapt their own models per stream and
 * cannot take ours; CompressAI's coder is C++ behind Python).
 *
 * Integer only, deterministic on every platform:
 *   - state x: 32 bits, kept in [BF_RANS_L, 256 * BF_RANS_L) between symbols;
 *     renormalised a byte at a time;
 *   - every channel's frequencies sum to BF_RANS_TOTAL = 2^BF_RANS_PROB_BITS
 *     and each symbol of the alphabet (2^bits symbols) has frequency >= 1, so
 *     a code never seen in training still codes (at most 15 bits);
 *   - symbol i of an NHWC code map [h, w, c] uses table i % c;
 *   - spatial prediction, per channel (the tables say which channels): the
 *     symbol coded is the code minus a prediction from the codes of the same
 *     channel already coded, modulo 2^bits. The prediction is LOCO-I's median
 *     edge detector of the left (a), upper (b) and upper-left (d) neighbours:
 *     min(a, b) if d >= max(a, b), max(a, b) if d <= min(a, b), else a + b - d;
 *     a alone in the first row, b alone in the first column, 0 at the first
 *     pixel. Feature maps are smooth where the image is, and the order-0
 *     tables alone cannot see that (zstd could, by its matches).
 *
 * Stream: the encoder's final state (u32 little-endian), then the
 * renormalisation bytes in the order the decoder reads them. The decoder
 * checks that it never reads past the end, that it consumes every byte, and
 * that it ends in the encoder's initial state BF_RANS_L. Any stream that
 * passes decodes to codes inside the alphabet (prediction is modular).
 *
 * Tables file (rans_tables.bin, its SHA-256 in manifest.json):
 *   "BFRANS01" | u32 channels | u32 bits | u32 prob_bits | channels x 2^bits u16 freq
 *   "BFRANS02" | the same | channels x u8 predictor (0 none, 1 median)
 * all little-endian, channel-major. Version 01 (no channel predicted) is
 * written whenever it suffices, so exports without prediction keep their
 * bytes. */
#ifndef BF_RANS_H
#define BF_RANS_H

#include <stddef.h>
#include <stdint.h>

#define BF_RANS_PROB_BITS 15
#define BF_RANS_TOTAL (1u << BF_RANS_PROB_BITS)
#define BF_RANS_L (1u << 23)
#define BF_RANS_MAGIC "BFRANS01"      /* no predictor */
#define BF_RANS_MAGIC_PRED "BFRANS02" /* a predictor byte per channel after the frequencies */
#define BF_RANS_FILE_HEADER 20
#define BF_RANS_MAX_CHANNELS 65535

enum { BF_RANS_PRED_NONE = 0, BF_RANS_PRED_MEDIAN = 1 };

typedef struct bf_rans_tables {
  int channels, bits, alphabet; /* alphabet = 2^bits, bits 1..8 */
  uint16_t *freq;               /* [channels][alphabet] */
  uint16_t *cum;                /* [channels][alphabet + 1], cum[0] = 0, cum[alphabet] = TOTAL */
  uint8_t *pred;                /* [channels]: BF_RANS_PRED_NONE or BF_RANS_PRED_MEDIAN */
} bf_rans_tables;

/* Largest stream of n symbols: a symbol costs at most PROB_BITS bits, so
 * the encoder emits at most 2 bytes per symbol, plus the 4-byte state. */
static inline uint64_t bf_rans_bound(uint64_t n) { return 2 * n + 4; }

/* Tables from explicit frequencies freq[channels * 2^bits] (each >= 1, each
 * channel summing to BF_RANS_TOTAL), no channel predicted. Returns 0 or
 * BF_EINVAL naming the channel and symbol. */
int bf_rans_tables_init(bf_rans_tables *t, int channels, int bits, const uint32_t *freq);
/* Tables from symbol counts counts[channels * 2^bits] (the export's
 * histograms), per channel: freq[s] = 1 + floor(count[s] * (T - A) / n)
 * (T = BF_RANS_TOTAL, A = 2^bits, n = the channel's total count); the
 * T - sum left over goes one each to the symbols with the largest remainder
 * count[s] * (T - A) mod n, ties to the lower symbol. A channel with no
 * counts gets the uniform table T / A. Integer arithmetic only. */
int bf_rans_tables_from_counts(bf_rans_tables *t, int channels, int bits, const uint64_t *counts);
/* Adds a code map's symbol counts, per channel, both as coded without
 * prediction (plain[channels * 2^bits]) and as prediction residuals
 * (resid[...], the median predictor above); n codes, w pixels a row, each
 * code < 2^bits (else BF_EINVAL). */
int bf_rans_count(int channels, int bits, const uint8_t *codes, size_t n, int w, uint64_t *plain, uint64_t *resid);
/* Tables from both histograms of bf_rans_count: each channel gets the
 * prediction whose tables (bf_rans_tables_from_counts' rule) code its own
 * counts in fewer bits, no prediction on a tie. */
int bf_rans_tables_choose(bf_rans_tables *t, int channels, int bits, const uint64_t *plain, const uint64_t *resid);
void bf_rans_tables_free(bf_rans_tables *t);

/* The tables file (format above); *out malloc'ed. */
int bf_rans_tables_serialize(const bf_rans_tables *t, uint8_t **out, size_t *len);
/* Parses and validates a tables file of exactly len bytes: magic, channels
 * 1..65535, bits 1..8, prob_bits, the length, every frequency >= 1 and each
 * channel's sum. `what` names the file in messages. BF_EINVAL on any fault. */
int bf_rans_tables_parse(const uint8_t *buf, size_t len, const char *what, bf_rans_tables *t);

/* Codes the code map sym[n] (NHWC, w pixels a row: n a multiple of
 * w * channels; each code < alphabet, else BF_EINVAL) into out[cap]
 * (cap >= bf_rans_bound(n) always suffices). */
int bf_rans_encode(const bf_rans_tables *t, const uint8_t *sym, size_t n, int w, uint8_t *out, size_t cap,
                   size_t *out_len);
/* Decodes exactly n codes of a map w pixels wide from in[len] (hostile
 * bytes). Returns 0 or BF_PERR_BAD_PAYLOAD (frame.h) with a message:
 * truncated stream, bytes left over, bad initial or final state. */
int bf_rans_decode(const bf_rans_tables *t, const uint8_t *in, size_t len, int w, uint8_t *sym, size_t n);

#endif
