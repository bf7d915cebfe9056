/* bf-init: writes a freshly initialised ResNet-50 (+ butterfly) weights file. */
#include <stdio.h>
#include <string.h>

#include "cli_common.h"
#include "model.h"

static void usage(void) {
  printf("usage: bf-init --classes C --split-after K [--dr R] [--seed S] --out W.safetensors\n"
         "\n"
         "Writes a ResNet-50 (torchvision v1.5 layout) initialised as torchvision does\n"
         "(Kaiming normal fan_out convs, BN weight 1 / bias 0, nn.Linear default fc),\n"
         "with a butterfly unit after residual block RB<K> (K = 1..16; 0 = none).\n"
         "\n"
         "  --classes C       number of classes (required)\n"
         "  --split-after K   0..16 (required): RB1-3 = layer1.0-2, RB4-7 = layer2.0-3,\n"
         "                    RB8-13 = layer3.0-5, RB14-16 = layer4.0-2\n"
         "  --dr R            reduced channels D_r (required when K > 0; 1..D)\n"
         "  --seed S          RNG seed (default 0); the same seed gives the same file\n"
         "  --out PATH        output safetensors file (written atomically)\n");
}

int main(int argc, char **argv) {
  cli_prog = "bf-init";
  long classes = -1, split = -1, dr = 0;
  uint64_t seed = 0;
  const char *out = NULL;
  int rc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (cli_flag(a, "--help") || cli_flag(a, "-h")) {
      usage();
      return 0;
    } else if (cli_is(a, "--classes")) {
      if ((rc = cli_int(argc, argv, &i, 1, 1000000, &classes))) return rc;
    } else if (cli_is(a, "--split-after")) {
      if ((rc = cli_int(argc, argv, &i, 0, 16, &split))) return rc;
    } else if (cli_is(a, "--dr")) {
      if ((rc = cli_int(argc, argv, &i, 1, 2048, &dr))) return rc;
    } else if (cli_is(a, "--seed")) {
      if ((rc = cli_u64(argc, argv, &i, &seed))) return rc;
    } else if (cli_is(a, "--out")) {
      if ((rc = cli_value(argc, argv, &i, &out))) return rc;
    } else {
      return cli_fail("unknown argument '%s' (see --help)", a);
    }
  }
  if (classes < 0) return cli_fail("--classes is required");
  if (split < 0) return cli_fail("--split-after is required (0 for a plain ResNet-50)");
  if (split > 0 && dr == 0) return cli_fail("--dr is required with --split-after %ld", split);
  if (!out) return cli_fail("--out is required");
  bf_model_config cfg = {(int)classes, (int)split, (int)dr, 0};
  if (bf_model_config_check(&cfg)) return cli_fail_bf(NULL);
  bf_backend *be;
  if (bf_backend_create(&be, "cpu", 1)) return cli_fail_bf(NULL);
  bf_model *m;
  if (bf_model_create(&m, be, &cfg)) {
    bf_backend_destroy(be);
    return cli_fail_bf(NULL);
  }
  char seedbuf[32];
  snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)seed);
  const char *meta[] = {"seed", seedbuf, NULL};
  rc = bf_model_init(m, seed);
  if (!rc) rc = bf_model_save(m, out, meta);
  if (rc) {
    bf_model_free(m);
    bf_backend_destroy(be);
    return cli_fail_bf(out);
  }
  printf("wrote %s: ResNet-50, %d classes, split_after %d, d_r %d, %zu parameters\n", out, cfg.num_classes,
         cfg.split_after, cfg.split_after ? cfg.d_r : 0, bf_model_num_params(m));
  bf_model_free(m);
  bf_backend_destroy(be);
  return 0;
}
