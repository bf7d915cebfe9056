#!/usr/bin/env python3
"""PyTorch reference numbers for bench/gpu_train.sh: torchvision ResNet-50 on
synthetic data on one CUDA GPU.

Configurations (each printed as one `name key=value ...` line):
  train.fp32          eager, channels_last, fp32 with TF32 disabled
                      (the same arithmetic as butterfly's default CUDA mode)
  train.bf16          eager, channels_last, torch.autocast(bfloat16)  (AMP)
  train.bf16.compile  as train.bf16 under torch.compile, if it works here
  infer1.fp32         batch-1 eval latency, eager fp32 (no TF32), channels_last
  infer1.bf16         batch-1 eval latency, eager autocast(bfloat16)

Training step = forward, cross-entropy, backward, SGD (momentum 0.9,
weight decay 1e-4), the same work as `bf-bench --mode train`.

Needs torch with CUDA and torchvision. Written for an H100 machine; it has
not been run on this project's CI (no GPU there).
"""
import argparse
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--infer-iters", type=int, default=200)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    ap.add_argument("--only", default="", help="comma-separated subset of configuration names")
    args = ap.parse_args()

    try:
        import torch
        import torchvision
    except ImportError as e:
        print(f"gpu_train_torch.py: error: {e} (needs torch with CUDA and torchvision)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_train_torch.py: error: torch.cuda.is_available() is False", file=sys.stderr)
        return 2

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"# torch {torch.__version__} torchvision {torchvision.__version__} "
          f"device {torch.cuda.get_device_name(0)} cudnn {torch.backends.cudnn.version()}", flush=True)
    only = set(filter(None, args.only.split(",")))

    def wanted(name):
        return not only or name in only

    def set_tf32(on):
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on

    def make_model():
        torch.manual_seed(0)
        m = torchvision.models.resnet50(num_classes=args.classes)
        return m.to(dev).to(memory_format=torch.channels_last)

    def synthetic(batch):
        g = torch.Generator(device=dev).manual_seed(7)
        x = torch.randn(batch, 3, args.size, args.size, device=dev, generator=g)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, args.classes, (batch,), device=dev, generator=g)
        return x, y

    def bench_train(name, amp, compile_model):
        model = make_model().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        x, y = synthetic(args.batch)

        def step(model_fn):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model_fn(x), y)
            loss.backward()
            opt.step()
            return loss

        fn = torch.compile(model) if compile_model else model
        for _ in range(args.warmup):
            step(fn)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            loss = step(fn)
        loss.item()  # one host sync, as bf-bench's loss download
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        ips = args.batch * args.iters / dt
        print(f"{name} images_per_sec={ips:.3f} sec_per_iter={dt / args.iters:.6f} batch={args.batch} "
              f"size={args.size}", flush=True)

    @torch.inference_mode()
    def bench_infer1(name, amp):
        model = make_model().eval()
        x, _ = synthetic(1)
        for _ in range(20):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                model(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.infer_iters):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                model(x)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.infer_iters
        print(f"{name} latency_ms={dt * 1e3:.3f} images_per_sec={1.0 / dt:.3f}", flush=True)

    rc = 0
    if wanted("train.fp32"):
        set_tf32(False)
        bench_train("train.fp32", amp=False, compile_model=False)
    set_tf32(True)
    if wanted("train.bf16"):
        bench_train("train.bf16", amp=True, compile_model=False)
    if wanted("train.bf16.compile") and not args.no_compile:
        try:
            bench_train("train.bf16.compile", amp=True, compile_model=True)
        except Exception as e:  # torch.compile needs a working inductor/triton setup
            print(f"# train.bf16.compile skipped: {type(e).__name__}: {e}".splitlines()[0], flush=True)
    if wanted("infer1.fp32"):
        set_tf32(False)
        bench_infer1("infer1.fp32", amp=False)
    set_tf32(True)
    if wanted("infer1.bf16"):
        bench_infer1("infer1.bf16", amp=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
