#include "preprocess_recipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "safetensors.h"

static const char *const KEYS[5] = {"preprocess.input_size", "preprocess.resize", "preprocess.crop",
                                    "preprocess.mean", "preprocess.std"};

void bf_preprocess_to_meta(const bf_preprocess *p, bf_preprocess_meta *m) {
  snprintf(m->size, sizeof m->size, "%d", p->input_size);
  snprintf(m->resize, sizeof m->resize, "%d", p->resize);
  /* %.9g: the float round-trips exactly, so the client normalises with the
   * very values the loader used */
  snprintf(m->mean, sizeof m->mean, "%.9g,%.9g,%.9g", p->mean[0], p->mean[1], p->mean[2]);
  snprintf(m->std, sizeof m->std, "%.9g,%.9g,%.9g", p->std[0], p->std[1], p->std[2]);
  const char *v[5] = {m->size, m->resize, "center", m->mean, m->std};
  for (int i = 0; i < 5; i++) m->kv[2 * i] = KEYS[i], m->kv[2 * i + 1] = v[i];
  m->kv[10] = NULL;
}

static int parse3(const char *path, const char *key, const char *v, float out[3]) {
  const char *s = v;
  for (int i = 0; i < 3; i++) {
    char *end;
    out[i] = strtof(s, &end);
    if (end == s || (i < 2 && *end != ',') || (i == 2 && *end))
      return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' is not three comma-separated numbers", path, key, v);
    s = end + 1;
  }
  return BF_OK;
}

static int parse_int(const char *path, const char *key, const char *v, int lo, int hi, int *out) {
  char *end;
  long x = strtol(v, &end, 10);
  if (end == v || *end || x < lo || x > hi)
    return bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' is not an integer in %d..%d", path, key, v, lo, hi);
  *out = (int)x;
  return BF_OK;
}

int bf_preprocess_read(const char *path, bf_preprocess *p) {
  bf_safetensors st;
  BF_TRY(bf_st_load(&st, path));
  const char *v[5];
  int n = 0;
  for (int i = 0; i < 5; i++) n += (v[i] = bf_st_meta_get(&st, KEYS[i])) != NULL;
  int rc = BF_OK;
  if (n == 0) rc = 0;
  else if (n < 5) {
    for (int i = 0; i < 5 && !rc; i++)
      if (!v[i]) rc = bf_error(BF_EINVAL, "%s: __metadata__ has part of the preprocessing recipe but no '%s'", path, KEYS[i]);
  } else if (strcmp(v[2], "center")) {
    rc = bf_error(BF_EINVAL, "%s: __metadata__.%s = '%s' (only 'center' is known)", path, KEYS[2], v[2]);
  } else if (!(rc = parse_int(path, KEYS[0], v[0], 1, 4096, &p->input_size)) &&
             !(rc = parse_int(path, KEYS[1], v[1], 0, 16384, &p->resize)) && !(rc = parse3(path, KEYS[3], v[3], p->mean)) &&
             !(rc = parse3(path, KEYS[4], v[4], p->std))) {
    for (int i = 0; i < 3 && !rc; i++)
      if (!(p->std[i] > 0)) rc = bf_error(BF_EINVAL, "%s: __metadata__.%s: values must be positive", path, KEYS[4]);
    if (!rc) rc = 1;
  }
  bf_st_free(&st);
  return rc;
}
