/* Fused resize + crop + pad + flip: computes only the out_size^2 window of the
 * resized image that the crop keeps, straight from the decoded pixels, with a
 * separable antialiased triangle (bilinear) filter whose support widens with
 * the downscale factor (the same family of filter as Pillow's BILINEAR resize,
 * which torchvision's Resize uses). At scale 1 it copies pixels exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_data_internal.h"

void bf_aug_scratch_free(bf_aug_scratch *s) {
  if (!s) return;
  free(s->wx);
  free(s->wy);
  free(s->xb);
  free(s->yb);
  free(s->xn);
  free(s->yn);
  free(s->tmp);
  memset(s, 0, sizeof *s);
}

static inline float tri(float x) {
  x = fabsf(x);
  return x < 1.0f ? 1.0f - x : 0.0f;
}

/* Taps for n outputs at resized coordinates o0.. (resized length R, source S).
 * Output i reads src[b[i] .. b[i]+cnt[i]) with weights w[i*maxk ..]; cnt 0 =
 * outside the image (padding). */
static void make_taps(int S, int R, int o0, int n, int maxk, int *b, int *cnt, float *w) {
  double scale = (double)S / R, ss = scale > 1.0 ? scale : 1.0, support = ss;
  for (int i = 0; i < n; i++) {
    int x = o0 + i;
    float *wi = w + (size_t)i * maxk;
    if (x < 0 || x >= R) {
      b[i] = 0;
      cnt[i] = 0;
      continue;
    }
    double center = (x + 0.5) * scale;
    double lo_d = center - support + 0.5, hi_d = center + support + 0.5;
    int lo = lo_d < 0 ? 0 : (int)lo_d, hi = hi_d > S ? S : (int)hi_d;
    if (hi - lo > maxk) hi = lo + maxk;
    float sum = 0;
    int k = 0;
    for (int s = lo; s < hi; s++, k++) {
      wi[k] = tri((float)((s + 0.5 - center) / ss));
      sum += wi[k];
    }
    /* drop zero-weight taps at both ends (keeps the inner loops short) */
    int first = 0, last = k;
    while (first < last && wi[first] == 0.0f) first++;
    while (last > first && wi[last - 1] == 0.0f) last--;
    if (first > 0) memmove(wi, wi + first, (size_t)(last - first) * sizeof(float));
    k = last - first;
    lo += first;
    if (k == 0 || sum <= 0.0f) { /* cannot happen for valid sizes; nearest pixel */
      int s = (int)center;
      b[i] = s < S ? s : S - 1;
      cnt[i] = 1;
      wi[0] = 1.0f;
      continue;
    }
    for (int j = 0; j < k; j++) wi[j] /= sum;
    b[i] = lo;
    cnt[i] = k;
  }
}

static int grow(void **p, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  void *q = realloc(*p, need);
  if (!q) return bf_error(BF_ENOMEM, "out of memory allocating %zu bytes for augmentation", need);
  *p = q;
  *cap = need;
  return 0;
}

int bf_augment_window(bf_aug_scratch *s, const uint8_t *src, int sw, int sh, int rw, int rh,
                      int x0, int y0, int n, int flip, uint8_t *out) {
  if (sw <= 0 || sh <= 0 || rw <= 0 || rh <= 0 || n <= 0)
    return bf_error(BF_EINVAL, "augment: bad sizes src %dx%d resized %dx%d out %d", sw, sh, rw, rh, n);
  double fx = (double)sw / rw, fy = (double)sh / rh;
  int kx = (int)ceil(2.0 * (fx > 1 ? fx : 1)) + 2, ky = (int)ceil(2.0 * (fy > 1 ? fy : 1)) + 2;
  size_t need = (size_t)n * (size_t)(kx > ky ? kx : ky);
  if (need > s->wcap) {
    size_t c = need;
    void **fl[2] = {(void **)&s->wx, (void **)&s->wy};
    void **in[4] = {(void **)&s->xb, (void **)&s->yb, (void **)&s->xn, (void **)&s->yn};
    for (int k = 0; k < 2; k++) {
      void *q = realloc(*fl[k], c * sizeof(float));
      if (!q) return bf_error(BF_ENOMEM, "out of memory for resize weights");
      *fl[k] = q;
    }
    for (int k = 0; k < 4; k++) {
      void *q = realloc(*in[k], c * sizeof(int));
      if (!q) return bf_error(BF_ENOMEM, "out of memory for resize taps");
      *in[k] = q;
    }
    s->wcap = c;
  }
  make_taps(sw, rw, x0, n, kx, s->xb, s->xn, s->wx);
  make_taps(sh, rh, y0, n, ky, s->yb, s->yn, s->wy);
  /* source columns the horizontal pass needs */
  int xmin = sw, xmax = 0;
  for (int j = 0; j < n; j++)
    if (s->xn[j]) {
      if (s->xb[j] < xmin) xmin = s->xb[j];
      if (s->xb[j] + s->xn[j] > xmax) xmax = s->xb[j] + s->xn[j];
    }
  size_t rowb = (size_t)n * 3;
  if (xmax <= xmin) { /* window entirely in the padding */
    memset(out, 0, (size_t)n * rowb);
    return 0;
  }
  size_t span = (size_t)(xmax - xmin) * 3;
  if (grow((void **)&s->tmp, &s->tcap, span * sizeof(float))) return BF_ENOMEM;
  float *acc = s->tmp;
  for (int i = 0; i < n; i++) {
    uint8_t *o = out + (size_t)i * rowb;
    if (!s->yn[i]) {
      memset(o, 0, rowb);
      continue;
    }
    /* vertical pass over the needed span of source columns (vectorises) */
    const float *wi = s->wy + (size_t)i * ky;
    const uint8_t *r0 = src + ((size_t)s->yb[i] * sw + xmin) * 3;
    float w0 = wi[0];
    for (size_t c = 0; c < span; c++) acc[c] = w0 * r0[c];
    for (int k = 1; k < s->yn[i]; k++) {
      const uint8_t *rk = r0 + (size_t)k * sw * 3;
      float wk = wi[k];
      for (size_t c = 0; c < span; c++) acc[c] += wk * rk[c];
    }
    /* horizontal pass, mirrored when flipping, rounded to uint8 */
    for (int j = 0; j < n; j++) {
      uint8_t *oj = o + (size_t)(flip ? n - 1 - j : j) * 3;
      int cnt = s->xn[j];
      if (!cnt) {
        oj[0] = oj[1] = oj[2] = 0;
        continue;
      }
      const float *wj = s->wx + (size_t)j * kx;
      const float *a = acc + (size_t)(s->xb[j] - xmin) * 3;
      float r = 0, g = 0, b = 0;
      for (int k = 0; k < cnt; k++, a += 3) {
        r += wj[k] * a[0];
        g += wj[k] * a[1];
        b += wj[k] * a[2];
      }
      int qr = (int)(r + 0.5f), qg = (int)(g + 0.5f), qb = (int)(b + 0.5f);
      oj[0] = (uint8_t)(qr < 0 ? 0 : qr > 255 ? 255 : qr);
      oj[1] = (uint8_t)(qg < 0 ? 0 : qg > 255 ? 255 : qg);
      oj[2] = (uint8_t)(qb < 0 ? 0 : qb > 255 ? 255 : qb);
    }
  }
  return 0;
}
