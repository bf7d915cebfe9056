/* The input preprocessing a model was trained (and is evaluated) with, as
 * bf-train records it in a checkpoint's __metadata__ and bf-export carries it
 * into a deploy manifest: decode, resize the shorter side to `resize` (0 = no
 * resize), center-crop input_size x input_size (zero-filled where the image is
 * smaller: a 28x28 image in a 32x32 input is padded by 2), then
 * (x/255 - mean[c]) / std[c]. Keys (docs/formats.md):
 *   preprocess.input_size, preprocess.resize, preprocess.crop ("center"),
 *   preprocess.mean, preprocess.std ("a,b,c") */
#ifndef BF_PREPROCESS_RECIPE_H
#define BF_PREPROCESS_RECIPE_H

typedef struct bf_preprocess {
  int input_size; /* square network input */
  int resize;     /* shorter side before the crop; 0 = none */
  float mean[3], std[3];
} bf_preprocess;

/* Key/value strings for bf_model_save's meta list. */
typedef struct bf_preprocess_meta {
  char size[16], resize[16], mean[64], std[64];
  const char *kv[11]; /* 5 pairs + NULL */
} bf_preprocess_meta;
void bf_preprocess_to_meta(const bf_preprocess *p, bf_preprocess_meta *m);

/* Reads the recipe from a safetensors file's metadata: 1 found, 0 the file
 * has none of the keys (a checkpoint from before they were recorded), or a
 * negative BF_E* code (unreadable file, a malformed or partial recipe). */
int bf_preprocess_read(const char *path, bf_preprocess *p);

#endif
