#!/usr/bin/python3
"""PyTorch CPU baseline for bf-bench: torchvision ResNet-50 on synthetic data.

    /usr/bin/python3 bench/torch_cpu.py --mode train|infer --size S --batch B \
        --iters N --warmup W --threads T [--classes C] [--memory-format auto|contiguous|channels_last]

train: model.train(), forward + cross-entropy + backward + SGD step (lr 0.1,
momentum 0.9, wd 1e-4) per iteration. infer: model.eval() under
torch.inference_mode(). Prints `images_per_sec=<float>` (the faster memory
format with --memory-format auto, the default, which times both and says which
in `memory_format=`), plus per-format figures and seconds per iteration.
"""
import argparse
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    import torchvision
except ImportError as e:
    print("torch_cpu: error: cannot import torch/torchvision (%s); use /usr/bin/python3" % e, file=sys.stderr)
    sys.exit(77)


def bench(args, fmt):
    torch.manual_seed(0)
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    model = torchvision.models.resnet50(num_classes=args.classes).to(memory_format=mf)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=mf)
    y = torch.randint(0, args.classes, (args.batch,))
    if args.mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return args.batch * args.iters / total, total / args.iters, min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["train", "infer"], required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--memory-format", choices=["auto", "contiguous", "channels_last"], default="auto")
    args = ap.parse_args()
    if min(args.size, args.batch, args.iters, args.classes) < 1 or args.warmup < 0 or args.threads < 0:
        ap.error("--size, --batch, --iters, --classes must be >= 1; --warmup, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    fmts = ["contiguous", "channels_last"] if args.memory_format == "auto" else [args.memory_format]
    print("torch %s torchvision %s threads=%d mode=%s size=%d batch=%d iters=%d warmup=%d classes=%d"
          % (torch.__version__, torchvision.__version__, torch.get_num_threads(), args.mode, args.size,
             args.batch, args.iters, args.warmup, args.classes), flush=True)
    best = None
    for fmt in fmts:
        ips, mean_s, min_s = bench(args, fmt)
        print("images_per_sec_%s=%.3f sec_per_iter_%s=%.4f min_sec_per_iter_%s=%.4f"
              % (fmt, ips, fmt, mean_s, fmt, min_s), flush=True)
        if best is None or ips > best[0]:
            best = (ips, fmt)
    print("memory_format=%s" % best[1])
    print("images_per_sec=%.3f" % best[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
