"""Driver of bench/infer_bench.sh (read its header): exports the peer models,
times ours (bf-bench --halves), ONNX Runtime and PyTorch case by case in
interleaved rounds, prints the table. Run through the shell script."""
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from torch import nn

BUILD, WORK = sys.argv[1], sys.argv[2]
T = int(os.environ["THREADS"])
ITERS, ROUNDS, WARMUP = int(os.environ["ITERS"]), int(os.environ["ROUNDS"]), int(os.environ["WARMUP"])
DR = int(os.environ["DR"])
KS = [int(k) for k in os.environ["KS"].split()]
USE_TORCH = os.environ.get("TORCH", "1") != "0"
WAIT = os.environ["WAIT"]
SGEMM = float(os.environ.get("SGEMM") or "nan")
ROOT = os.environ["ROOT"]
WHOLE_K = max(KS)  # the whole model = this split point's two halves (the unit's 1x1 pair adds < 0.5% FLOPs)
CH = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3  # channels after RB1..RB16
torch.set_num_threads(T)
torch.manual_seed(0)


def unit(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


net = torchvision.models.resnet50(num_classes=1000).eval()
blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
peers = {}  # name -> (torch module, onnx path, input shape without batch)


def add_peer(name, module, chw):
    path = os.path.join(WORK, f"peer-{name}-dr{DR}.onnx")
    module = module.eval()
    if not os.path.exists(path):
        with torch.no_grad():
            torch.onnx.export(module, torch.zeros(1, *chw), path + ".tmp", opset_version=13, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                              do_constant_folding=True)
        os.replace(path + ".tmp", path)
    peers[name] = (module, path, chw)


def gflop(module, chw):
    """Multiply-adds x 2 of the convolutions and linear layers for one image."""
    macs = [0]

    def hook(m, _, out):
        if isinstance(m, nn.Conv2d):
            macs[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            macs[0] += out.numel() * m.in_features
    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(torch.zeros(1, *chw))
    for h in hs:
        h.remove()
    return 2 * macs[0] / 1e9


halves = {}
for k in KS:
    dev = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *blocks[:k], unit(CH[k - 1], DR))
    with torch.no_grad():
        fshape = tuple(dev(torch.zeros(1, 3, 224, 224)).shape[1:])
    srv = nn.Sequential(unit(DR, CH[k - 1]), *blocks[k:], net.avgpool, nn.Flatten(1), net.fc)
    add_peer(f"device-k{k}", dev, (3, 224, 224))
    add_peer(f"server-k{k}", srv, fshape)
    halves[k] = (dev, srv)
    d = os.path.join(WORK, f"ours-k{k}-dr{DR}", f"split-{k}")
    peers[f"device-k{k}"] += (os.path.join(d, "device.safetensors"),)
    peers[f"server-k{k}"] += (os.path.join(d, "server.safetensors"),)
dev, srv = halves[WHOLE_K]
add_peer("whole", nn.Sequential(dev, srv), (3, 224, 224))
d = os.path.join(WORK, f"ours-k{WHOLE_K}-dr{DR}", f"split-{WHOLE_K}")
peers["whole"] += (os.path.join(d, "device.safetensors") + "," + os.path.join(d, "server.safetensors"),)

for name in peers:
    peers[name] += (gflop(peers[name][0], peers[name][2]),)
cases = [("whole", 1), ("whole", 8)] + [(f"device-k{k}", 1) for k in KS]
cases += [(f"server-k{k}", b) for k in KS for b in (1, 8)]

sessions = {}


def session(name):
    if name not in sessions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = T
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's own pool: spinning idle threads as OpenMP's active policy, or not
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if WAIT == "passive" else "1")
        sessions[name] = ort.InferenceSession(peers[name][1], so, providers=["CPUExecutionProvider"])
    return sessions[name]


def time_calls(fn):
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(ITERS):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_ours(name, batch):
    cmd = [os.path.join(BUILD, "bin", "bf-bench"), "--halves", peers[name][3], "--batch", str(batch), "--size", "224",
           "--iters", str(ITERS), "--warmup", str(WARMUP), "--threads", str(T)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"infer_bench: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    line = [l for l in r.stdout.splitlines() if l.startswith("latencies_ms=")][0]
    return [float(v) for v in line.split("=", 1)[1].split(",")]


lat = {}
for rnd in range(ROUNDS):
    for name, batch in cases:
        x = np.random.default_rng(0).standard_normal((batch, *peers[name][2]), dtype=np.float32)
        lat.setdefault((name, batch, "ours"), []).extend(run_ours(name, batch))
        s = session(name)
        lat.setdefault((name, batch, "ort"), []).extend(time_calls(lambda: s.run(None, {"x": x})))
        if USE_TORCH:
            m, xt = peers[name][0], torch.from_numpy(x)
            with torch.no_grad():
                lat.setdefault((name, batch, "torch"), []).extend(time_calls(lambda: m(xt)))
        print(f"  [{rnd + 1}/{ROUNDS}] {name} b{batch} timed", file=sys.stderr, flush=True)


def med_p90(v):
    v = sorted(v)
    return statistics.median(v), v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]


def peak_rss_kb(cmd):
    # through a small fresh interpreter: a child forked from this process
    # (torch loaded) would report this process's size as its own peak
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run(["/usr/bin/python3", "-c", probe] + cmd, capture_output=True, text=True).stdout.split()
    if len(out) != 2 or out[0] != "0":
        sys.exit(f"infer_bench: {' '.join(cmd)} failed")
    return int(out[1])


print(f"\n| case | batch | ours median / p90 ms | ORT median / p90 ms | PyTorch median / p90 ms | ORT/ours (median) |")
print("|---|---|---|---|---|---|")
for name, batch in cases:
    o, r = med_p90(lat[(name, batch, "ours")]), med_p90(lat[(name, batch, "ort")])
    t = med_p90(lat[(name, batch, "torch")]) if USE_TORCH else (float("nan"),) * 2
    label = name if name != "whole" else f"whole (k={WHOLE_K} halves)"
    print(f"| {label} | {batch} | {o[0]:.2f} / {o[1]:.2f} | {r[0]:.2f} / {r[1]:.2f} | {t[0]:.2f} / {t[1]:.2f} "
          f"| {r[0] / o[0]:.2f}x |")


def fma_peak():
    out = subprocess.run(["bash", os.path.join(ROOT, "bench", "peak_flops.sh"), str(T)], capture_output=True,
                         text=True).stdout
    return out.strip()


# the peak was measured before the timings; again now: on a shared machine the best of the two is the hardware's
p0, p1 = os.environ["PEAK0"], fma_peak()
vals = [float(l.rsplit("gflops=", 1)[1]) for l in (p0, p1) if "gflops=" in l]
PEAK = max(vals) if vals else float("nan")
isa = p0.split("isa=", 1)[1].split()[0] if "isa=" in p0 else "?"
print(f"\nfp32 FMA peak (bench/peak_flops.sh, {isa}, {T} threads): {PEAK:.0f} GFLOP/s "
      f"(before / after the timings: {' / '.join(f'{v:.0f}' for v in vals)}); "
      f"OpenBLAS sgemm peak (2048^3, same run): {SGEMM:.0f} GFLOP/s")
print("\n| case | batch | GFLOP per image | ours GFLOP/s | ours % of FMA peak | ORT GFLOP/s | ORT % of FMA peak |")
print("|---|---|---|---|---|---|---|")
for name, batch in cases:
    g = peers[name][4] * batch
    o, r = med_p90(lat[(name, batch, "ours")])[0], med_p90(lat[(name, batch, "ort")])[0]
    label = name if name != "whole" else f"whole (k={WHOLE_K} halves)"
    print(f"| {label} | {batch} | {peers[name][4]:.3f} | {g / o * 1e3:.0f} | {g / o * 1e3 / PEAK:.0%} "
          f"| {g / r * 1e3:.0f} | {g / r * 1e3 / PEAK:.0%} |")
wm = med_p90(lat[("whole", 1, "ours")])[0]
wr = med_p90(lat[("whole", 1, "ort")])[0]
wg = peers["whole"][4]
print(f"\nwhole model batch 1: ours {wg / wm * 1e3:.0f} GFLOP/s, ORT {wg / wr * 1e3:.0f} GFLOP/s: "
      f"{wg / wm * 1e3 / PEAK:.0%} and {wg / wr * 1e3 / PEAK:.0%} of the FMA peak, "
      f"{wg / wm * 1e3 / SGEMM:.0%} and {wg / wr * 1e3 / SGEMM:.0%} of the OpenBLAS sgemm peak")
n = str(max(ITERS, 10))
ours_kb = peak_rss_kb([os.path.join(BUILD, "bin", "bf-bench"), "--halves", peers["whole"][3], "--batch", "1",
                       "--iters", n, "--warmup", "1", "--threads", str(T)])
ort_code = ("import sys, numpy as np, onnxruntime as ort\n"
            "so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[2]); so.inter_op_num_threads = 1\n"
            "so.add_session_config_entry('session.intra_op.allow_spinning', '0')\n"
            "s = ort.InferenceSession(sys.argv[1], so, providers=['CPUExecutionProvider'])\n"
            "x = np.zeros((1, 3, 224, 224), np.float32)\n"
            "for _ in range(int(sys.argv[3])): s.run(None, {'x': x})\n")
ort_kb = peak_rss_kb([sys.executable, "-c", ort_code, peers["whole"][1], str(T), n])
print(f"peak memory (max RSS), whole model batch 1, {n} calls: ours {ours_kb / 1024:.0f} MB, "
      f"ORT (python + onnxruntime) {ort_kb / 1024:.0f} MB")
