/* bf-export: checkpoint -> deploy directory (BN-folded device and server
 * halves + manifest.json), one subfolder per split point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"
#include "cli_common.h"
#include "quant.h"
#include "split.h"

static void usage(void) {
  printf("usage: bf-export --checkpoint W.safetensors [--checkpoint W2 ...] --out-dir DEPLOY [options]\n"
         "\n"
         "Writes DEPLOY/split-<k>/{device,server}.safetensors and manifest.json for each\n"
         "checkpoint (a butterfly model split after RBk). BatchNorm is folded into the convs.\n"
         "With --format onnx (or both) the same folded halves are also written as\n"
         "DEPLOY/split-<k>/{device,server}.onnx (opset 13, NCHW; docs/split.md \"ONNX\").\n"
         "\n"
         "Preprocessing (input size, resize, mean/std) defaults to the training recipe that\n"
         "bf-train records in the checkpoint, so the deployed model sees its inputs as\n"
         "bf-train's evaluation did; the flags override it. A checkpoint without a recipe\n"
         "(older bf-train) falls back to 224, input*8/7, ImageNet mean/std, with a warning.\n"
         "\n"
         "  --format safetensors|onnx|both   what to write (default safetensors; onnx alone\n"
         "                          writes no manifest)\n"
         "  --input-size N          network input N x N\n"
         "  --resize N              shorter side before the center crop (0: no resize; a\n"
         "                          smaller image is zero-padded by the crop)\n"
         "  --mean A,B,C            normalisation mean of x/255\n"
         "  --std A,B,C             normalisation std\n"
         "  --class-names FILE      one class name a line (default class_<i>)\n"
         "  --quant per-tensor|per-channel|none   default feature quantisation (per-tensor)\n"
         "  --codec raw|zstd|rans   default lossless stage on the feature bytes (raw;\n"
         "                          rans needs --rans-data)\n"
         "  --zstd-level L          1..19 (default 3)\n"
         "  --rans-data DIR         estimate the rANS tables (codec rans) on the training\n"
         "                          split of this data set (bf-train's data.root): the device\n"
         "                          half runs on --rans-images training images, evenly spaced\n"
         "                          in the split's canonical order, quantised as bf-client does\n"
         "                          (the layout's own train split, else bf-data's default one)\n"
         "  --rans-images N         images for the tables (default %d; fewer if the split is\n"
         "                          smaller)\n",
         BF_RANS_IMAGES_DEFAULT);
}

static int parse3(const char *flag, const char *v, float *out) {
  char *end;
  const char *p = v;
  for (int i = 0; i < 3; i++) {
    out[i] = strtof(p, &end);
    if (end == p || (i < 2 && *end != ',') || (i == 2 && *end))
      return cli_fail("%s: '%s' is not three comma-separated numbers", flag, v);
    p = end + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  cli_prog = "bf-export";
  const char *ckpt[64], *out = NULL, *v;
  int n_ckpt = 0, rc;
  bf_export_opts o;
  bf_export_opts_init(&o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    long x;
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage();
      return 0;
    } else if (cli_is(a, "--checkpoint")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (n_ckpt == 64) return cli_fail("at most 64 checkpoints");
      ckpt[n_ckpt++] = v;
    } else if (cli_is(a, "--out-dir")) {
      if ((rc = cli_value(argc, argv, &i, &out))) return rc;
    } else if (cli_is(a, "--format")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (!strcmp(v, "safetensors")) o.formats = BF_EXPORT_SAFETENSORS;
      else if (!strcmp(v, "onnx")) o.formats = BF_EXPORT_ONNX;
      else if (!strcmp(v, "both")) o.formats = BF_EXPORT_SAFETENSORS | BF_EXPORT_ONNX;
      else return cli_fail("--format: '%s' is not safetensors, onnx or both", v);
    } else if (cli_is(a, "--input-size")) {
      if ((rc = cli_int(argc, argv, &i, 32, 4096, &x))) return rc;
      o.input_h = o.input_w = (int)x;
    } else if (cli_is(a, "--resize")) {
      if ((rc = cli_int(argc, argv, &i, 0, 8192, &x))) return rc;
      o.resize = (int)x;
    } else if (cli_is(a, "--mean")) {
      if ((rc = cli_value(argc, argv, &i, &v)) || (rc = parse3(a, v, o.mean))) return rc;
      o.have_mean = 1;
    } else if (cli_is(a, "--std")) {
      if ((rc = cli_value(argc, argv, &i, &v)) || (rc = parse3(a, v, o.std))) return rc;
      if (!(o.std[0] > 0 && o.std[1] > 0 && o.std[2] > 0)) return cli_fail("--std: values must be positive");
      o.have_std = 1;
    } else if (cli_is(a, "--class-names")) {
      if ((rc = cli_value(argc, argv, &i, &o.class_names_file))) return rc;
    } else if (cli_is(a, "--quant")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (bf_qscheme_parse_cli(a, v, &o.qscheme)) return cli_fail_bf(NULL);
    } else if (cli_is(a, "--codec")) {
      if ((rc = cli_value(argc, argv, &i, &v))) return rc;
      if (bf_codec_parse_cli(a, v, &o.codec)) return cli_fail_bf(NULL);
    } else if (cli_is(a, "--rans-data")) {
      if ((rc = cli_value(argc, argv, &i, &o.rans_data))) return rc;
    } else if (cli_is(a, "--rans-images")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000, &x))) return rc;
      o.rans_images = (int)x;
    } else if (cli_is(a, "--zstd-level")) {
      if ((rc = cli_int(argc, argv, &i, 1, 19, &x))) return rc;
      o.zstd_level = (int)x;
    } else {
      return cli_fail("unknown argument '%s' (see --help)", a);
    }
  }
  if (!n_ckpt || !out) return cli_fail("--checkpoint and --out-dir are required (see --help)");
  for (int i = 0; i < n_ckpt; i++) {
    char sub[1024];
    if (bf_split_export(ckpt[i], out, &o, sub, sizeof sub)) {
      /* name the checkpoint once: most messages already do */
      return cli_fail_bf(strstr(bf_last_error(), ckpt[i]) ? NULL : ckpt[i]);
    }
    printf("bf-export: %s -> %s\n", ckpt[i], sub);
  }
  return 0;
}
