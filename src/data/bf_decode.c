/* PNG (libpng) and JPEG (libjpeg-turbo) decoding to RGB8, header probing and
 * PNG writing. Every failure becomes a BF_EINVAL with a message; no decoder
 * error can abort the process (both libraries' error paths are longjmp'ed). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

#include "bf_data_internal.h"

void bf_decoder_init(bf_decoder *d) { memset(d, 0, sizeof *d); }

typedef struct bf_jpeg {
  struct jpeg_decompress_struct cinfo;
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  int warned;
} bf_jpeg;

void bf_decoder_free(bf_decoder *d) {
  if (!d) return;
  free(d->file);
  free(d->pix);
  free(d->rows);
  if (d->jpeg) {
    bf_jpeg *j = d->jpeg;
    jpeg_destroy_decompress(&j->cinfo);
    free(j);
  }
  memset(d, 0, sizeof *d);
}

static int grow(void **p, size_t *cap, size_t need, const char *what) {
  if (need <= *cap) return 0;
  size_t n = need + need / 4;
  void *q = realloc(*p, n);
  if (!q) return bf_error(BF_ENOMEM, "out of memory allocating %zu bytes for %s", n, what);
  *p = q;
  *cap = n;
  return 0;
}

int bf_decoder_read_file(bf_decoder *d, const char *path) {
  d->file_len = 0;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return bf_error(BF_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return bf_error(BF_EIO, "%s: not a regular file", path);
  }
  if ((size_t)st.st_size > BF_MAX_FILE_BYTES) {
    close(fd);
    return bf_error(BF_EINVAL, "%s: file too large (%lld bytes)", path, (long long)st.st_size);
  }
  size_t want = (size_t)st.st_size;
  if (grow((void **)&d->file, &d->file_cap, want + 1, "image file")) {
    close(fd);
    return BF_ENOMEM;
  }
  size_t got = 0;
  while (got < want) {
    ssize_t r = read(fd, d->file + got, want - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      close(fd);
      return bf_error(BF_EIO, "%s: read error: %s", path, r < 0 ? strerror(errno) : "short read");
    }
    got += (size_t)r;
  }
  close(fd);
  d->file_len = got;
  return 0;
}

/* ------------------------------------------------------------------ probe */
static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int check_dims(int64_t w, int64_t h) {
  if (w <= 0 || h <= 0) return bf_error(BF_EINVAL, "zero image dimensions %lldx%lld", (long long)w, (long long)h);
  if (w > BF_MAX_SIDE || h > BF_MAX_SIDE || w * h > BF_MAX_PIXELS)
    return bf_error(BF_EINVAL, "absurd image dimensions %lldx%lld in header (limit %d per side, %lld pixels)",
                    (long long)w, (long long)h, BF_MAX_SIDE, (long long)BF_MAX_PIXELS);
  return 0;
}

int bf_probe_header(const uint8_t *b, size_t len, int *fmt, int *w, int *h) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  *fmt = BF_FMT_UNKNOWN;
  if (len == 0) return bf_error(BF_EINVAL, "empty file");
  if (len >= 8 && memcmp(b, png_sig, 8) == 0) {
    *fmt = BF_FMT_PNG;
    if (len < 33) return 1;
    if (be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
      return bf_error(BF_EINVAL, "corrupt PNG: first chunk is not IHDR");
    int64_t W = be32(b + 16), H = be32(b + 20);
    int depth = b[24], ct = b[25];
    int ok = (ct == 0 && (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)) ||
             (ct == 3 && (depth == 1 || depth == 2 || depth == 4 || depth == 8)) ||
             ((ct == 2 || ct == 4 || ct == 6) && (depth == 8 || depth == 16));
    if (!ok) return bf_error(BF_EINVAL, "corrupt PNG: invalid color type %d / bit depth %d", ct, depth);
    BF_TRY(check_dims(W, H));
    *w = (int)W;
    *h = (int)H;
    return 0;
  }
  if (len >= 2 && b[0] == 0xFF && b[1] == 0xD8) {
    *fmt = BF_FMT_JPEG;
    size_t p = 2;
    for (;;) {
      /* markers may be preceded by fill bytes 0xFF */
      while (p < len && b[p] == 0xFF && p + 1 < len && b[p + 1] == 0xFF) p++;
      if (p + 4 > len) return 1;
      if (b[p] != 0xFF) return bf_error(BF_EINVAL, "corrupt JPEG: bad marker at byte %zu", p);
      int m = b[p + 1];
      if (m == 0xD9 || m == 0xDA) return bf_error(BF_EINVAL, "corrupt JPEG: no frame header before scan data");
      if (m >= 0xD0 && m <= 0xD7) { /* RSTn: no length */
        p += 2;
        continue;
      }
      size_t seglen = (size_t)b[p + 2] << 8 | b[p + 3];
      if (seglen < 2) return bf_error(BF_EINVAL, "corrupt JPEG: bad segment length at byte %zu", p);
      if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
        if (p + 10 > len) return 1;
        int64_t H = (int64_t)b[p + 5] << 8 | b[p + 6], W = (int64_t)b[p + 7] << 8 | b[p + 8];
        int nc = b[p + 9];
        if (m != 0xC0 && m != 0xC1 && m != 0xC2)
          return bf_error(BF_EINVAL, "unsupported JPEG process (SOF%d: lossless/arithmetic)", m - 0xC0);
        if (nc == 4) return bf_error(BF_EINVAL, "CMYK/YCCK JPEG is not supported (convert it to RGB)");
        if (nc != 1 && nc != 3) return bf_error(BF_EINVAL, "unsupported JPEG with %d components", nc);
        BF_TRY(check_dims(W, H));
        *w = (int)W;
        *h = (int)H;
        return 0;
      }
      p += 2 + seglen;
    }
  }
  return bf_error(BF_EINVAL, "not a PNG or JPEG file (unknown magic bytes)");
}

void bf_resize_dims(int w, int h, int s, int *rw, int *rh) {
  if (s <= 0) {
    *rw = w;
    *rh = h;
  } else if (w <= h) {
    *rw = s;
    *rh = (int)((int64_t)s * h / w);
  } else {
    *rh = s;
    *rw = (int)((int64_t)s * w / h);
  }
}

/* ------------------------------------------------------------------- JPEG */
static void j_error_exit(j_common_ptr c) {
  bf_jpeg *j = (bf_jpeg *)((char *)c->err - offsetof(bf_jpeg, pub));
  c->err->format_message(c, j->msg);
  longjmp(j->jb, 1);
}

static void j_emit(j_common_ptr c, int level) {
  if (level >= 0) return; /* trace messages */
  bf_jpeg *j = (bf_jpeg *)((char *)c->err - offsetof(bf_jpeg, pub));
  if (!j->warned) c->err->format_message(c, j->msg);
  j->warned++;
}

static bf_jpeg *jpeg_state(bf_decoder *d) {
  if (d->jpeg) return d->jpeg;
  bf_jpeg *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->cinfo.err = jpeg_std_error(&j->pub);
  j->pub.error_exit = j_error_exit;
  j->pub.emit_message = j_emit;
  if (setjmp(j->jb)) {
    free(j);
    return NULL;
  }
  jpeg_create_decompress(&j->cinfo);
  d->jpeg = j;
  return j;
}

static int decode_jpeg(bf_decoder *d, const char *name, int short_side, int *w, int *h, int *ow,
                       int *oh) {
  if (!jpeg_state(d)) return bf_error(BF_ENOMEM, "cannot create the JPEG decoder");
  bf_jpeg *j = d->jpeg;
  struct jpeg_decompress_struct *ci = &j->cinfo;
  j->warned = 0;
  j->msg[0] = 0;
  if (setjmp(j->jb)) {
    jpeg_abort_decompress(ci);
    return bf_error(BF_EINVAL, "%s: corrupt JPEG: %s", name, j->msg);
  }
  jpeg_mem_src(ci, d->file, (unsigned long)d->file_len);
  jpeg_read_header(ci, TRUE);
  if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK || ci->num_components == 4) {
    jpeg_abort_decompress(ci);
    return bf_error(BF_EINVAL, "%s: CMYK/YCCK JPEG is not supported (convert it to RGB)", name);
  }
  if (check_dims(ci->image_width, ci->image_height)) {
    jpeg_abort_decompress(ci);
    return bf_error_wrap(BF_EINVAL, "%s", name);
  }
  *ow = (int)ci->image_width;
  *oh = (int)ci->image_height;
  ci->out_color_space = JCS_RGB;
  ci->dct_method = JDCT_ISLOW;
  ci->scale_num = 8;
  ci->scale_denom = 8;
  if (short_side > 0) {
    int rw, rh;
    bf_resize_dims(*ow, *oh, short_side, &rw, &rh);
    /* only 1/8, 1/4, 1/2: libjpeg-turbo has SIMD IDCTs for those (and 8/8);
     * the other M/8 scales use plain C IDCTs that are slower than a full
     * SIMD decode */
    for (int m = 1; m < 8; m *= 2) {
      int64_t sw = ((int64_t)*ow * m + 7) / 8, sh = ((int64_t)*oh * m + 7) / 8;
      if (sw >= rw && sh >= rh) {
        ci->scale_num = (unsigned)m;
        break;
      }
    }
  }
  jpeg_start_decompress(ci);
  if (ci->output_components != 3) {
    jpeg_abort_decompress(ci);
    return bf_error(BF_EINVAL, "%s: JPEG decodes to %d components, expected RGB", name, ci->output_components);
  }
  size_t W = ci->output_width, H = ci->output_height;
  if (grow((void **)&d->pix, &d->pix_cap, W * H * 3, "decoded image")) {
    jpeg_abort_decompress(ci);
    return BF_ENOMEM;
  }
  while (ci->output_scanline < H) {
    JSAMPROW rows[8];
    int n = 0;
    for (; n < 8 && ci->output_scanline + n < H; n++) rows[n] = d->pix + (ci->output_scanline + n) * W * 3;
    if (jpeg_read_scanlines(ci, rows, (JDIMENSION)n) == 0) break;
    if (j->warned) break;
  }
  if (j->warned) {
    jpeg_abort_decompress(ci);
    return bf_error(BF_EINVAL, "%s: corrupt or truncated JPEG: %s", name, j->msg);
  }
  jpeg_finish_decompress(ci);
  if (j->warned) return bf_error(BF_EINVAL, "%s: corrupt or truncated JPEG: %s", name, j->msg);
  *w = (int)W;
  *h = (int)H;
  return 0;
}

/* -------------------------------------------------------------------- PNG */
typedef struct png_src {
  const uint8_t *p;
  size_t len, pos;
  char msg[256];
} png_src;

static void p_read(png_structp png, png_bytep out, size_t n) {
  png_src *s = png_get_io_ptr(png);
  if (n > s->len - s->pos) png_error(png, "truncated file (unexpected end of data)");
  memcpy(out, s->p + s->pos, n);
  s->pos += n;
}

static void p_error(png_structp png, png_const_charp msg) {
  png_src *s = png_get_error_ptr(png);
  snprintf(s->msg, sizeof s->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void p_warn(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static int decode_png(bf_decoder *d, const char *name, int *w, int *h, int *ow, int *oh) {
  png_src src = {d->file, d->file_len, 0, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, p_error, p_warn);
  if (!png) return bf_error(BF_ENOMEM, "%s: cannot create the PNG decoder", name);
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    return bf_error(BF_ENOMEM, "%s: cannot create the PNG decoder", name);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, NULL);
    return bf_error(BF_EINVAL, "%s: corrupt PNG: %s", name, src.msg);
  }
  png_set_read_fn(png, &src, p_read);
  png_set_user_limits(png, BF_MAX_SIDE, BF_MAX_SIDE);
  png_read_info(png, info);
  png_uint_32 W, H;
  int depth, ct, il;
  png_get_IHDR(png, info, &W, &H, &depth, &ct, &il, NULL, NULL);
  if (check_dims(W, H)) {
    png_destroy_read_struct(&png, &info, NULL);
    return bf_error_wrap(BF_EINVAL, "%s", name);
  }
  if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_scale_16(png);
  /* alpha (and tRNS, which palette expansion turns into alpha) is dropped */
  if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
  if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != (size_t)W * 3) {
    png_destroy_read_struct(&png, &info, NULL);
    return bf_error(BF_EINVAL, "%s: PNG did not convert to RGB8", name);
  }
  if (grow((void **)&d->pix, &d->pix_cap, (size_t)W * H * 3, "decoded image") ||
      grow((void **)&d->rows, &d->rows_cap, (size_t)H * sizeof(void *), "row pointers")) {
    png_destroy_read_struct(&png, &info, NULL);
    return BF_ENOMEM;
  }
  png_bytepp rows = (png_bytepp)d->rows;
  for (size_t y = 0; y < H; y++) rows[y] = d->pix + y * W * 3;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  *w = *ow = (int)W;
  *h = *oh = (int)H;
  return 0;
}

int bf_decoder_decode(bf_decoder *d, const char *name, int short_side, int *w, int *h, int *ow,
                      int *oh) {
  int fmt, pw, ph;
  int rc = bf_probe_header(d->file, d->file_len, &fmt, &pw, &ph);
  if (rc < 0) return bf_error_wrap(rc, "%s", name);
  if (rc == 1) return bf_error(BF_EINVAL, "%s: truncated file (header incomplete)", name);
  if (fmt == BF_FMT_JPEG) return decode_jpeg(d, name, short_side, w, h, ow, oh);
  return decode_png(d, name, w, h, ow, oh);
}

void bf_image_free(bf_image *img) {
  if (!img) return;
  free(img->rgb);
  img->rgb = NULL;
  img->w = img->h = 0;
}

int bf_image_decode_file(const char *path, int min_w, int min_h, bf_image *img) {
  memset(img, 0, sizeof *img);
  bf_decoder d;
  bf_decoder_init(&d);
  int rc = bf_decoder_read_file(&d, path);
  int w = 0, h = 0, ow, oh;
  if (!rc) {
    /* translate "at least min_w x min_h" into a shorter-side target that
     * decode_jpeg turns back into the same bound */
    int s = 0;
    if (min_w > 0 && min_h > 0) {
      int fmt, pw, ph;
      if (bf_probe_header(d.file, d.file_len, &fmt, &pw, &ph) == 0) {
        /* smallest s with resize_dims(pw, ph, s) >= (min_w, min_h) */
        double a = (double)min_w / pw, b = (double)min_h / ph, f = a > b ? a : b;
        s = (int)((pw < ph ? pw : ph) * f + 0.999999);
        if (s >= (pw < ph ? pw : ph)) s = 0;
      }
    }
    rc = bf_decoder_decode(&d, path, s, &w, &h, &ow, &oh);
  }
  if (!rc) {
    img->rgb = d.pix;
    d.pix = NULL;
    img->w = w;
    img->h = h;
  }
  bf_decoder_free(&d);
  return rc;
}

/* ------------------------------------------------------------- PNG writer */
typedef struct png_sink {
  uint8_t *p;
  size_t len, cap;
  int oom;
} png_sink;

static void s_write(png_structp png, png_bytep data, size_t n) {
  png_sink *s = png_get_io_ptr(png);
  if (s->oom) return;
  if (s->len + n > s->cap) {
    size_t c = (s->len + n) * 2 + 4096;
    uint8_t *q = realloc(s->p, c);
    if (!q) {
      s->oom = 1;
      return;
    }
    s->p = q;
    s->cap = c;
  }
  memcpy(s->p + s->len, data, n);
  s->len += n;
}
static void s_flush(png_structp png) { (void)png; }

int bf_png_write(const char *path, const uint8_t *pix, int w, int h, int channels) {
  if ((channels != 1 && channels != 3) || w <= 0 || h <= 0)
    return bf_error(BF_EINVAL, "%s: bad PNG parameters %dx%dx%d", path, w, h, channels);
  png_src err = {0};
  png_sink sink = {0};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, p_error, p_warn);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(&png, NULL);
    return bf_error(BF_ENOMEM, "%s: cannot create the PNG encoder", path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    free(sink.p);
    return bf_error(BF_EBACKEND, "%s: PNG encoding failed: %s", path, err.msg);
  }
  png_set_write_fn(png, &sink, s_write, s_flush);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
               channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(pix + (size_t)y * w * channels));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  if (sink.oom) {
    free(sink.p);
    return bf_error(BF_ENOMEM, "%s: out of memory encoding PNG", path);
  }
  /* Many small files (data set export, written into a fresh directory that
   * tools/prepare-fashion-mnist moves in place at the end): a plain write,
   * without the temp file + fsync of bf_write_file_atomic. A failed write
   * removes the partial file. */
  FILE *f = fopen(path, "wb");
  int rc = 0;
  if (!f) {
    rc = bf_error(BF_EIO, "%s: cannot create: %s", path, strerror(errno));
  } else {
    size_t wr = fwrite(sink.p, 1, sink.len, f);
    if (fclose(f) != 0 || wr != sink.len) {
      rc = bf_error(BF_EIO, "%s: write failed", path);
      remove(path);
    }
  }
  free(sink.p);
  return rc;
}
