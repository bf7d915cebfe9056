/* bf-search: search.jsonl, the record of the finished trainings (search_internal.h). */
#include "search_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"

int srch_state_add(state *s, const bf_search_entry *e) {
  if (s->n == s->cap) {
    int nc = s->cap ? 2 * s->cap : 32;
    bf_search_entry *ne = realloc(s->e, (size_t)nc * sizeof *ne);
    if (!ne) return bf_error(BF_ENOMEM, "search state");
    s->e = ne;
    unsigned char *ns = realloc(s->seen, (size_t)nc);
    if (!ns) return bf_error(BF_ENOMEM, "search state");
    s->seen = ns;
    s->cap = nc;
  }
  s->seen[s->n] = 0;
  s->e[s->n++] = *e;
  return 0;
}

int srch_state_find(const state *s, int split, int d_r) {
  for (int i = s->n - 1; i >= 0; i--)
    if (s->e[i].split == split && s->e[i].d_r == d_r) return i;
  return -1;
}

void srch_state_free(state *s) {
  free(s->e);
  free(s->seen);
  memset(s, 0, sizeof *s);
}

int srch_state_load(state *s) {
  FILE *fp = fopen(s->path, "r");
  if (!fp) return 0;
  char line[8192];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof line, fp)) {
    lineno++;
    size_t len = strlen(line);
    if (len && line[len - 1] != '\n' && !feof(fp)) {
      rc = bf_error(BF_EINVAL, "%s:%d: line too long", s->path, lineno);
      break;
    }
    if (len <= 1) continue;
    cJSON *j = cJSON_Parse(line);
    if (!j) {
      /* a torn last line (killed mid-write): ignore it, the training is redone */
      if (line[len - 1] != '\n') break;
      rc = bf_error(BF_EINVAL, "%s:%d: not JSON", s->path, lineno);
      break;
    }
    bf_search_entry e = {0};
    cJSON *sp = cJSON_GetObjectItem(j, "split"), *dr = cJSON_GetObjectItem(j, "d_r"),
          *t1 = cJSON_GetObjectItem(j, "top1"), *t5 = cJSON_GetObjectItem(j, "top5"),
          *rd = cJSON_GetObjectItem(j, "run_dir"), *se = cJSON_GetObjectItem(j, "seconds");
    if (!cJSON_IsNumber(sp) || !cJSON_IsNumber(dr) || !cJSON_IsNumber(t1) || !cJSON_IsString(rd)) {
      cJSON_Delete(j);
      rc = bf_error(BF_EINVAL, "%s:%d: missing split/d_r/top1/run_dir", s->path, lineno);
      break;
    }
    e.split = sp->valueint;
    e.d_r = dr->valueint;
    e.top1 = t1->valuedouble;
    e.top5 = cJSON_IsNumber(t5) ? t5->valuedouble : -1;
    e.seconds = cJSON_IsNumber(se) ? se->valuedouble : 0;
    snprintf(e.run_dir, sizeof e.run_dir, "%s", rd->valuestring);
    cJSON_Delete(j);
    if ((rc = srch_state_add(s, &e))) break;
  }
  fclose(fp);
  return rc;
}

int srch_state_append(state *s, const bf_search_entry *e) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return bf_error(BF_ENOMEM, "search state line");
  cJSON_AddStringToObject(j, "kind", e->split ? "candidate" : "baseline");
  cJSON_AddNumberToObject(j, "split", e->split);
  cJSON_AddNumberToObject(j, "d_r", e->d_r);
  cJSON_AddNumberToObject(j, "top1", e->top1);
  cJSON_AddNumberToObject(j, "top5", e->top5);
  cJSON_AddStringToObject(j, "run_dir", e->run_dir);
  cJSON_AddNumberToObject(j, "seconds", e->seconds);
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!txt) return bf_error(BF_ENOMEM, "search state line");
  FILE *fp = fopen(s->path, "a");
  int rc = 0;
  if (!fp) rc = bf_error(BF_EIO, "%s: cannot open for appending", s->path);
  else {
    if (fprintf(fp, "%s\n", txt) < 0 || fflush(fp) || fsync(fileno(fp)))
      rc = bf_error(BF_EIO, "%s: write failed", s->path);
    if (fclose(fp) && !rc) rc = bf_error(BF_EIO, "%s: close failed", s->path);
  }
  free(txt);
  if (!rc) rc = srch_state_add(s, e);
  if (!rc) s->seen[s->n - 1] = 1;
  return rc;
}
