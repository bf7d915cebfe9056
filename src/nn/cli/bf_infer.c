/* bf-infer: runs a weights file on a batch held in a safetensors file; the
 * debugging and reference-testing tool (logits, loss, gradients, one SGD step).
 * Eval-mode logits (and the loss) come from the folded inference engine
 * (src/split/engine.h), the path bf-client and bf-serve run; what needs the
 * training graph (train mode, gradients, the SGD step) runs the model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "engine.h"
#include "model.h"
#include "safetensors.h"

static void usage(void) {
  printf("usage: bf-infer --weights W.safetensors --input X.safetensors --output Y.safetensors [options]\n"
         "\n"
         "X holds 'images' float32 [N,3,H,W] (NCHW, normalised) and optionally 'labels'\n"
         "int64 [N]. Y receives 'logits' [N,C]; with labels 'loss' (scalar); with --grads\n"
         "'grad.<name>' for every trainable parameter (file layout, e.g. OIHW convs).\n"
         "Gradients and the SGD step go through the BN statistics of --mode: the\n"
         "batch's (train) or the running ones held constant (eval, as PyTorch's\n"
         "model.eval(); the running statistics are then saved unchanged).\n"
         "Eval mode without gradients or a step runs the folded inference engine (BN folded\n"
         "into the convs, as bf-export, bf-client and bf-serve); --unfolded runs the training\n"
         "model's eval forward instead (to check one against the other).\n"
         "\n"
         "  --mode eval|train       BN running stats (eval, default) or batch stats (train)\n"
         "  --grads                 write gradients (needs labels)\n"
         "  --unfolded              eval: the training model's forward, not the folded engine\n"
         "  --label-smoothing S     cross-entropy label smoothing (default 0)\n"
         "  --backend NAME          cpu (default) or cuda when built\n"
         "  --threads N             compute threads (default: all cores)\n"
         "  --sgd-lr LR             apply one SGD step (needs labels) ...\n"
         "  --momentum M            ... with momentum (default 0) ...\n"
         "  --weight-decay WD       ... and weight decay (default 0) ...\n"
         "  --nesterov              ... Nesterov momentum ...\n"
         "  --no-decay-bn-bias      ... no weight decay on BN weights/biases and fc.bias ...\n"
         "  --save-weights PATH     ... and write the updated model (with running stats) here\n");
}

typedef struct opts {
  const char *weights, *input, *output, *save, *backend;
  int train, grads, nesterov, no_decay, unfolded;
  long threads;
  double smoothing, lr, momentum, wd;
} opts;

static int parse(int argc, char **argv, opts *o) {
  int rc;
  memset(o, 0, sizeof *o);
  o->backend = "cpu";
  o->lr = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage();
      return -1;
    } else if (cli_is(a, "--weights")) {
      if ((rc = cli_value(argc, argv, &i, &o->weights))) return rc;
    } else if (cli_is(a, "--input")) {
      if ((rc = cli_value(argc, argv, &i, &o->input))) return rc;
    } else if (cli_is(a, "--output")) {
      if ((rc = cli_value(argc, argv, &i, &o->output))) return rc;
    } else if (cli_is(a, "--save-weights")) {
      if ((rc = cli_value(argc, argv, &i, &o->save))) return rc;
    } else if (cli_is(a, "--backend")) {
      if ((rc = cli_value(argc, argv, &i, &o->backend))) return rc;
    } else if (cli_is(a, "--mode")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (!strcmp(v, "train"))
        o->train = 1;
      else if (strcmp(v, "eval"))
        return cli_fail("--mode: '%s' is not eval or train", v);
    } else if (cli_flag(a, "--grads")) {
      o->grads = 1;
    } else if (cli_flag(a, "--unfolded")) {
      o->unfolded = 1;
    } else if (cli_flag(a, "--nesterov")) {
      o->nesterov = 1;
    } else if (cli_flag(a, "--no-decay-bn-bias")) {
      o->no_decay = 1;
    } else if (cli_is(a, "--threads")) {
      if ((rc = cli_int(argc, argv, &i, 0, 1024, &o->threads))) return rc;
    } else if (cli_is(a, "--label-smoothing")) {
      if ((rc = cli_float(argc, argv, &i, 0.0, 0.999, &o->smoothing))) return rc;
    } else if (cli_is(a, "--sgd-lr")) {
      if ((rc = cli_float(argc, argv, &i, 0.0, 1e3, &o->lr))) return rc;
    } else if (cli_is(a, "--momentum")) {
      if ((rc = cli_float(argc, argv, &i, 0.0, 1.0, &o->momentum))) return rc;
    } else if (cli_is(a, "--weight-decay")) {
      if ((rc = cli_float(argc, argv, &i, 0.0, 1.0, &o->wd))) return rc;
    } else {
      return cli_fail("unknown argument '%s' (see --help)", a);
    }
  }
  if (!o->weights) return cli_fail("--weights is required");
  if (!o->input) return cli_fail("--input is required");
  if (!o->output) return cli_fail("--output is required");
  if (o->lr >= 0 && !o->save) return cli_fail("--sgd-lr needs --save-weights PATH");
  if (o->save && o->lr < 0) return cli_fail("--save-weights needs --sgd-lr");
  if (o->unfolded && o->train) return cli_fail("--unfolded is for --mode eval (train mode always runs the model)");
  return 0;
}

typedef struct batch {
  int n, h, w;
  float *nhwc;
  int32_t *labels; /* NULL if absent */
} batch;

static int read_batch(const char *path, int classes, batch *b) {
  memset(b, 0, sizeof *b);
  bf_safetensors st;
  if (bf_st_load(&st, path)) return cli_fail_bf(NULL);
  int rc = 0;
  const bf_st_tensor *im = bf_st_find(&st, "images");
  const bf_st_tensor *lb = bf_st_find(&st, "labels");
  if (!im) {
    rc = cli_fail("%s: no tensor 'images' (float32 [N,3,H,W])", path);
    goto done;
  }
  if (im->dtype != BF_DT_F32 || im->ndim != 4 || im->shape[1] != 3 || im->shape[0] < 1 || im->shape[0] > 65536) {
    rc = cli_fail("%s: 'images' must be float32 [N,3,H,W] with 1 <= N <= 65536 (got %s, %d dims)", path,
                  bf_dtype_name(im->dtype), im->ndim);
    goto done;
  }
  b->n = (int)im->shape[0];
  if (im->shape[2] < 32 || im->shape[3] < 32 || im->shape[2] > 4096 || im->shape[3] > 4096) {
    rc = cli_fail("%s: 'images' is %lldx%lld; ResNet-50 needs 32..4096 pixels per side", path,
                  (long long)im->shape[2], (long long)im->shape[3]);
    goto done;
  }
  b->h = (int)im->shape[2], b->w = (int)im->shape[3];
  size_t hw = (size_t)b->h * b->w;
  b->nhwc = bf_malloc(im->numel * sizeof(float), "input batch");
  float *src = bf_malloc(im->numel * sizeof(float), "input batch");
  if (!b->nhwc || !src) {
    free(src);
    rc = cli_fail_bf(path);
    goto done;
  }
  memcpy(src, bf_st_tensor_data(&st, im), im->numel * sizeof(float));
  for (size_t i = 0; i < im->numel; i++)
    if (!isfinite(src[i])) {
      size_t n = i / (3 * hw), c = (i / hw) % 3, p = i % hw;
      double bad = src[i];
      free(src);
      rc = cli_fail("%s: 'images' holds a non-finite value (%g) at image %zu, channel %zu, pixel (%zu,%zu)", path,
                    bad, n, c, p / (size_t)b->w, p % (size_t)b->w);
      goto done;
    }
  for (int n = 0; n < b->n; n++)
    for (size_t p = 0; p < hw; p++)
      for (int c = 0; c < 3; c++) b->nhwc[((size_t)n * hw + p) * 3 + c] = src[((size_t)n * 3 + c) * hw + p];
  free(src);
  if (lb) {
    if (lb->dtype != BF_DT_I64 || lb->ndim != 1 || lb->shape[0] != b->n) {
      rc = cli_fail("%s: 'labels' must be int64 [%d] (got %s, %d dims)", path, b->n, bf_dtype_name(lb->dtype),
                    lb->ndim);
      goto done;
    }
    b->labels = bf_malloc((size_t)b->n * sizeof(int32_t), "labels");
    if (!b->labels) {
      rc = cli_fail_bf(path);
      goto done;
    }
    const uint8_t *d = bf_st_tensor_data(&st, lb);
    for (int i = 0; i < b->n; i++) {
      int64_t v;
      memcpy(&v, d + 8 * (size_t)i, 8);
      if (v < 0 || v >= classes) {
        rc = cli_fail("%s: 'labels'[%d] = %lld is outside 0..%d", path, i, (long long)v, classes - 1);
        goto done;
      }
      b->labels[i] = (int32_t)v;
    }
  }
done:
  bf_st_free(&st);
  return rc;
}

/* The loss of host logits: the backend's softmax_xent, as bf_model_loss. */
static int logits_loss(bf_backend *be, int n, int c, const float *logits, const int32_t *labels, float smoothing,
                       float *loss) {
  float *dl = be->alloc(be, (size_t)n * c * sizeof(float)), *dloss = be->alloc(be, sizeof(float));
  int32_t *dlab = be->alloc(be, (size_t)n * sizeof(int32_t));
  int rc = dl && dloss && dlab ? BF_OK : bf_error(BF_ENOMEM, "out of memory for the loss");
  if (!rc) rc = be->upload(be, dl, logits, (size_t)n * c * sizeof(float));
  if (!rc) rc = be->upload(be, dlab, labels, (size_t)n * sizeof(int32_t));
  if (!rc) rc = be->softmax_xent(be, n, c, dl, dlab, smoothing, dloss, NULL);
  if (!rc) rc = be->download(be, loss, dloss, sizeof(float));
  if (!rc) rc = be->sync(be);
  if (dl) be->free(be, dl);
  if (dloss) be->free(be, dloss);
  if (dlab) be->free(be, dlab);
  return rc;
}

int main(int argc, char **argv) {
  cli_prog = "bf-infer";
  opts o;
  int rc = parse(argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;

  bf_model_config cfg;
  if (bf_model_config_from_file(o.weights, &cfg)) return cli_fail_bf(NULL);
  batch b;
  if ((rc = read_batch(o.input, cfg.num_classes, &b))) {
    free(b.nhwc);
    free(b.labels);
    return rc;
  }
  if ((o.grads || o.lr >= 0) && !b.labels) {
    free(b.nhwc);
    return cli_fail("%s: --grads/--sgd-lr need 'labels' in the input", o.input);
  }
  bf_backend *be = NULL;
  bf_model *m = NULL;
  bf_engine *eng = NULL;
  float *logits = NULL, *gbuf = NULL;
  bf_st_writer w;
  bf_st_writer_init(&w);
  float loss = 0;
  const char *ctx = NULL;
  if ((rc = bf_backend_create(&be, o.backend, (int)o.threads))) goto fail;
  if ((rc = bf_model_create(&m, be, &cfg))) goto fail;
  ctx = o.weights;
  if ((rc = bf_model_load(m, o.weights))) goto fail;
  ctx = NULL;
  logits = bf_malloc((size_t)b.n * cfg.num_classes * sizeof(float), "logits");
  if (!logits) {
    rc = BF_ENOMEM;
    goto fail;
  }
  int64_t lshape[2] = {b.n, cfg.num_classes};
  if (!o.train && !o.grads && o.lr < 0 && !o.unfolded) {
    /* The model is only the fold's source. */
    ctx = o.weights;
    rc = bf_engine_from_model(&eng, be, m, o.weights);
    m = NULL; /* freed by the engine once folded */
    if (rc) goto fail;
    ctx = NULL;
    int oc;
    if ((rc = bf_engine_plan(eng, b.n, b.h, b.w, NULL, NULL, &oc))) goto fail;
    if (oc != cfg.num_classes) {
      rc = bf_error(BF_EINVAL, "engine: %d outputs for a %d-class model", oc, cfg.num_classes);
      goto fail;
    }
    if ((rc = bf_engine_run(eng, b.nhwc, logits))) goto fail;
    if ((rc = bf_st_writer_add(&w, "logits", BF_DT_F32, 2, lshape, logits))) goto fail;
    if (b.labels && (rc = logits_loss(be, b.n, cfg.num_classes, logits, b.labels, (float)o.smoothing, &loss)))
      goto fail;
  } else {
    if ((rc = bf_model_plan(m, b.n, b.h, b.w))) goto fail;
    if ((rc = be->upload(be, bf_model_input(m), b.nhwc, (size_t)b.n * b.h * b.w * 3 * sizeof(float)))) goto fail;
    if ((rc = bf_model_forward(m, o.train))) goto fail;
    if ((rc = be->download(be, logits, bf_model_logits(m), (size_t)b.n * cfg.num_classes * sizeof(float))))
      goto fail;
    if ((rc = bf_st_writer_add(&w, "logits", BF_DT_F32, 2, lshape, logits))) goto fail;
    if (b.labels) {
      if ((rc = be->upload(be, bf_model_labels(m), b.labels, (size_t)b.n * sizeof(int32_t)))) goto fail;
      if ((rc = bf_model_loss(m, (float)o.smoothing, &loss))) goto fail;
    }
  }
  if (b.labels && (rc = bf_st_writer_add(&w, "loss", BF_DT_F32, 0, NULL, &loss))) goto fail;
  if (o.grads || o.lr >= 0) {
    if ((rc = bf_model_backward(m))) goto fail;
  }
  if (o.grads) {
    size_t total = 0;
    int ne = bf_model_num_entries(m);
    for (int i = 0; i < ne; i++)
      if (bf_model_entry(m, i)->kind == BF_ENTRY_PARAM) total += bf_model_entry(m, i)->numel;
    gbuf = bf_malloc(total * sizeof(float), "gradients");
    if (!gbuf) {
      rc = BF_ENOMEM;
      goto fail;
    }
    size_t off = 0;
    for (int i = 0; i < ne; i++) {
      const bf_entry *e = bf_model_entry(m, i);
      if (e->kind != BF_ENTRY_PARAM) continue;
      char name[80];
      snprintf(name, sizeof name, "grad.%s", e->name);
      if ((rc = bf_model_entry_get(m, e, 1, gbuf + off))) goto fail;
      if ((rc = bf_st_writer_add(&w, name, BF_DT_F32, e->ndim, e->shape, gbuf + off))) goto fail;
      off += e->numel;
    }
  }
  if (o.lr >= 0) {
    bf_sgd_params hp = {(float)o.lr, (float)o.momentum, (float)o.wd, o.nesterov};
    if ((rc = bf_model_zero_momentum(m))) goto fail;
    if ((rc = bf_model_sgd(m, &hp, o.no_decay))) goto fail;
    ctx = o.save;
    if ((rc = bf_model_save(m, o.save, NULL))) goto fail;
    ctx = NULL;
  }
  ctx = o.output;
  if ((rc = bf_st_writer_save(&w, o.output))) goto fail;
  if (b.labels)
    printf("batch %d x %dx%d, mode %s, loss %.6f\n", b.n, b.h, b.w, o.train ? "train" : "eval", (double)loss);
  else
    printf("batch %d x %dx%d, mode %s\n", b.n, b.h, b.w, o.train ? "train" : "eval");
  rc = 0;
  goto done;
fail:
  rc = cli_fail_bf(ctx);
done:
  bf_st_writer_free(&w);
  free(gbuf);
  free(logits);
  free(b.nhwc);
  free(b.labels);
  bf_engine_free(eng);
  bf_model_free(m);
  bf_backend_destroy(be);
  return rc;
}
