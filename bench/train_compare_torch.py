#!/usr/bin/python3
"""PyTorch side of bench/train_compare.sh: torchvision's ResNet-50 trained on
Debian's Fashion-MNIST with exactly bf-train's recipe (configs/fashion-mnist.ini).

Same data: the IDX files of /usr/share/datasets/fashion-mnist (60,000 train /
10,000 test), gray replicated to 3 channels, normalised with mean 0.2860 and
std 0.3530 (bf_data's Fashion-MNIST defaults). Same augmentation as bf_data
with out_size 32, resize 0, pad 4: train = zero-pad 4, random 32x32 crop,
random horizontal flip; test = centred, zero-padded by 2 (torchvision
CenterCrop(32) of a 28x28 image). Batches shuffled per epoch, last partial
train batch dropped. Same optimiser: SGD momentum 0.9 (dampening 0), weight
decay on conv/fc weights only (train.no_decay_bn_bias = 1), per-step learning
rate from the same formula as bf_train_lr_at (src/train/trainer.c).

The random streams differ (initialisation, shuffling, crops): the comparison
is of learning curves and final accuracy, not bitwise.

Needs Debian's python3-torch, python3-torchvision, python3-numpy.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision

MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(root, stem):
    for ext in ("", ".gz"):
        p = os.path.join(root, stem + ext)
        if os.path.exists(p):
            return p
    sys.exit("missing %s[.gz] in %s" % (stem, root))


def lr_at(a, g, spe):
    """bf_train_lr_at for the warm-up + cosine / step / constant schedules."""
    base = a.lr
    T = a.epochs * spe
    W = math.floor(a.warmup_epochs * spe + 0.5)
    if W > 0 and g < W:
        return base * (g + 1.0) / W
    if a.schedule == "cosine":
        p = (g - W) / (T - W) if T > W else 1.0
        p = min(p, 1.0)
        return base * 0.5 * (1.0 + math.cos(math.pi * p))
    return base


def batch_train(x, idx, rng):
    """pad 4 + random 32x32 crop + random flip, as bf_data's TRAIN augmentation."""
    B = len(idx)
    out = np.zeros((B, 32, 32), dtype=np.uint8)
    pad = np.zeros((36, 36), dtype=np.uint8)
    ox = rng.integers(0, 5, size=B)
    oy = rng.integers(0, 5, size=B)
    fl = rng.integers(0, 2, size=B)
    for i, k in enumerate(idx):
        pad[4:32, 4:32] = x[k]
        c = pad[oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        out[i] = c[:, ::-1] if fl[i] else c
    return out


def batch_test(x, idx):
    out = np.zeros((len(idx), 32, 32), dtype=np.uint8)
    out[:, 2:30, 2:30] = x[idx]
    return out


def to_tensor(u8):
    t = torch.from_numpy(u8.astype(np.float32) / 255.0)
    t = (t - MEAN) / STD
    return t.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def evaluate(model, xt, yt, batch, max_batches=0):
    model.eval()
    n = len(yt) if not max_batches else min(len(yt), max_batches * batch)
    loss = c1 = c5 = 0.0
    with torch.no_grad():
        for s in range(0, n, batch):
            idx = np.arange(s, min(s + batch, n))
            logits = model(to_tensor(batch_test(xt, idx)))
            y = torch.from_numpy(yt[idx].astype(np.int64))
            loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            top = logits.topk(5, dim=1).indices
            c1 += (top[:, 0] == y).sum().item()
            c5 += (top == y[:, None]).any(dim=1).sum().item()
    model.train()
    return loss / n, c1 / n, c5 / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--warmup-epochs", type=float, default=0.2)
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    ap.add_argument("--max-steps-per-epoch", type=int, default=0)
    ap.add_argument("--eval-max-batches", type=int, default=0, help="smoke tests only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--checkpoint", default="",
                    help="written after every epoch (default: OUT.ckpt): model, optimizer, curve, step count")
    ap.add_argument("--resume", action="store_true",
                    help="continue from --checkpoint if it exists (same recipe, else an error)")
    a = ap.parse_args()
    ckpt = a.checkpoint or a.out + ".ckpt"

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr = read_idx(find(a.data, "train-images-idx3-ubyte"))
    ytr = read_idx(find(a.data, "train-labels-idx1-ubyte"))
    xte = read_idx(find(a.data, "t10k-images-idx3-ubyte"))
    yte = read_idx(find(a.data, "t10k-labels-idx1-ubyte"))
    model = torchvision.models.resnet50(num_classes=10)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # conv/fc weights vs BN affine + biases
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=a.lr, momentum=a.momentum)
    spe = len(ytr) // a.batch
    if a.max_steps_per_epoch:
        spe = min(spe, a.max_steps_per_epoch)
    crit = nn.CrossEntropyLoss()
    print("torch %s, torchvision %s, %d threads; %d train / %d test; %d steps/epoch of %d" %
          (torch.__version__, torchvision.__version__, torch.get_num_threads(), len(ytr), len(yte), spe, a.batch),
          flush=True)
    # The recipe a checkpoint must share to be resumed (not where files go or
    # how often it prints). Epoch-boundary checkpoints resume exactly: the
    # data order and augmentation of an epoch are seeded by (seed, epoch).
    recipe = {k: v for k, v in vars(a).items() if k not in ("out", "checkpoint", "resume", "log_every")}
    t_start = time.time()
    step_time = 0.0
    g = 0
    epochs = []
    done_sec = 0.0
    if a.resume and os.path.exists(ckpt):
        st = torch.load(ckpt)
        if st["recipe"] != recipe:
            diff = sorted(k for k in recipe if st["recipe"].get(k) != recipe[k])
            sys.exit("%s: written with another recipe (%s differ); remove it or rerun with the same options" %
                     (ckpt, ", ".join(diff)))
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        g, epochs, step_time, done_sec = st["step"], st["epochs"], st["step_time"], st["train_sec"]
        print("resuming %s after epoch %d (step %d)" % (ckpt, len(epochs), g), flush=True)
    for ep in range(len(epochs), a.epochs):
        rng = np.random.default_rng([a.seed, ep])
        perm = rng.permutation(len(ytr))
        wl = wa = 0.0
        wn = 0
        tw = time.time()
        t_ep = 0.0
        for s in range(spe):
            t0 = time.time()
            idx = perm[s * a.batch:(s + 1) * a.batch]
            x = to_tensor(batch_train(xtr, idx, rng))
            y = torch.from_numpy(ytr[idx].astype(np.int64))
            lr = lr_at(a, g, spe)
            for grp in opt.param_groups:
                grp["lr"] = lr
            logits = model(x)
            loss = crit(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.time() - t0
            step_time += dt
            t_ep += dt
            g += 1
            wl += loss.item()
            wa += (logits.argmax(1) == y).float().mean().item()
            wn += 1
            if g % a.log_every == 0:
                print("epoch %d step %d/%d loss %.4f acc %.3f lr %.4g %.1f img/s" %
                      (ep + 1, s + 1, spe, wl / wn, wa / wn, lr, wn * a.batch / (time.time() - tw)), flush=True)
                wl = wa = 0.0
                wn = 0
                tw = time.time()
        te = time.time()
        tl, t1, t5 = evaluate(model, xte, yte, a.batch, a.eval_max_batches)
        epochs.append({"epoch": ep + 1, "test_loss": tl, "test_top1": t1, "test_top5": t5,
                       "images_per_sec": spe * a.batch / t_ep, "eval_sec": time.time() - te})
        print("epoch %d: test loss %.4f top-1 %.4f top-5 %.4f | %.1f img/s" %
              (ep + 1, tl, t1, t5, spe * a.batch / t_ep), flush=True)
        tmp = ckpt + ".tmp"
        with open(tmp, "wb") as f:
            torch.save({"recipe": recipe, "model": model.state_dict(), "opt": opt.state_dict(), "step": g,
                        "epochs": epochs, "step_time": step_time,
                        "train_sec": done_sec + time.time() - t_start}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt)
    res = {"framework": "pytorch", "torch": torch.__version__, "torchvision": torchvision.__version__,
           "threads": torch.get_num_threads(), "top1": epochs[-1]["test_top1"], "top5": epochs[-1]["test_top5"],
           "test_loss": epochs[-1]["test_loss"], "epochs": epochs, "steps": g, "batch_size": a.batch,
           "train_time_sec": done_sec + time.time() - t_start, "images_per_sec": g * a.batch / step_time,
           "recipe": vars(a)}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("top1", "top5", "train_time_sec", "images_per_sec")}))


if __name__ == "__main__":
    main()
