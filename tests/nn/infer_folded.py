#!/usr/bin/python3
"""bf-infer's eval mode runs the folded inference engine; it must give the
training model's eval forward (bf-infer --unfolded) within 1e-4 relative.

    /usr/bin/python3 tests/nn/infer_folded.py BINDIR WORKDIR

Checkpoints: a plain ResNet-50 (split_after 0, which bf-export refuses) and
one with a butterfly unit after RB5, both from bf-init with every BN's
affine parameters and running statistics randomised (so that the fold is not
the identity). For each: logits and loss (label smoothing 0.1) of both paths,
the same output tensors (names, dtypes, shapes) either way, and an input
without labels gives logits only. A negative running variance, which the
training model runs through, is refused by the fold with one message naming
the checkpoint and the tensor, and no output file: this is also what shows
that the default path is the engine. Exit 0 passed, 1 failed.
"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
import safetensors_np as st  # noqa: E402

TOL = 1e-4
failed = []


def check(ok, what, detail=""):
    print("%s %s%s" % ("ok  " if ok else "FAIL", what, (": " + detail) if detail else ""), flush=True)
    if not ok:
        failed.append(what)


def run(args, expect_ok=True):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    if expect_ok and p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (os.path.basename(args[0]), p.returncode, p.stderr.strip()))
    return p


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def randomise_bn(state, rng):
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = (0.3 + rng.random(v.shape)).astype(np.float32)
        elif k.endswith("running_mean"):
            state[k] = (0.2 * rng.standard_normal(v.shape)).astype(np.float32)
        elif v.ndim == 1 and ("bn" in k or "downsample.1" in k):
            base = 1.0 if k.endswith("weight") else 0.0
            state[k] = (base + 0.2 * rng.standard_normal(v.shape)).astype(np.float32)


def case(bindir, work, rng, k, dr, classes, seed):
    tag = "split_after %d" % k
    w0 = os.path.join(work, "init_%d.safetensors" % k)
    init = [os.path.join(bindir, "bf-init"), "--classes", str(classes), "--split-after", str(k), "--seed", str(seed),
            "--out", w0]
    if k:
        init[-2:-2] = ["--dr", str(dr)]
    run(init)
    state, meta = st.load(w0)
    randomise_bn(state, rng)
    wpath = os.path.join(work, "w_%d.safetensors" % k)
    st.save(wpath, state, meta)
    n = 3
    images = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
    labels = rng.integers(0, classes, n).astype(np.int64)
    xl = os.path.join(work, "xl_%d.safetensors" % k)
    xn = os.path.join(work, "xn_%d.safetensors" % k)
    st.save(xl, {"images": images, "labels": labels})
    st.save(xn, {"images": images})
    infer = os.path.join(bindir, "bf-infer")

    def infer_out(x, extra):
        y = os.path.join(work, "y.safetensors")
        if os.path.exists(y):
            os.remove(y)
        run([infer, "--weights", wpath, "--input", x, "--output", y, "--threads", "2", "--mode", "eval",
             "--label-smoothing", "0.1"] + extra)
        return st.load(y)[0]

    eng, ref = infer_out(xl, []), infer_out(xl, ["--unfolded"])
    layout = {k2: (v.dtype.str, v.shape) for k2, v in eng.items()}
    check(layout == {k2: (v.dtype.str, v.shape) for k2, v in ref.items()} and
          layout == {"logits": ("<f4", (n, classes)), "loss": ("<f4", ())},
          "%s: same output tensors from the engine and the model" % tag, str(layout))
    e = rel(eng["logits"], ref["logits"])
    check(e < TOL, "%s: folded engine logits == model eval forward" % tag, "rel err %.2e (tol %g)" % (e, TOL))
    e = rel(eng["loss"], ref["loss"])
    check(e < TOL, "%s: loss from the engine's logits == model's loss" % tag, "rel err %.2e (tol %g)" % (e, TOL))
    # the randomised BN matters: without its fold the logits would be far off
    y = os.path.join(work, "y0.safetensors")
    run([infer, "--weights", w0, "--input", xl, "--output", y, "--threads", "2"])
    e = rel(st.load(y)[0]["logits"], ref["logits"])
    check(e > 1e-2, "%s: the randomised BN changes the logits (the test can fail)" % tag, "rel diff %.2e" % e)
    nolab = infer_out(xn, [])
    check(sorted(nolab) == ["logits"] and rel(nolab["logits"], eng["logits"]) == 0.0,
          "%s: without labels, the same logits only" % tag, str(sorted(nolab)))
    # a negative variance: the fold refuses it (the model path would run it)
    bad = dict(state)
    name = "layer2.1.bn2.running_var"
    bad[name] = bad[name].copy()
    bad[name][3] = -1.0
    wbad = os.path.join(work, "bad_%d.safetensors" % k)
    st.save(wbad, bad, meta)
    y = os.path.join(work, "ybad.safetensors")
    if os.path.exists(y):
        os.remove(y)
    p = run([infer, "--weights", wbad, "--input", xl, "--output", y, "--threads", "2"], expect_ok=False)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    check(p.returncode != 0 and len(lines) == 1 and wbad in lines[0] and name in lines[0] and not os.path.exists(y),
          "%s: negative running_var refused by the fold, one message, no output" % tag,
          "exit %d, stderr %r" % (p.returncode, p.stderr.strip()))


def main():
    if len(sys.argv) != 3:
        print("usage: infer_folded.py BINDIR WORKDIR")
        return 2
    bindir, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(2026)
    try:
        case(bindir, work, rng, 0, 0, 10, 11)
        case(bindir, work, rng, 5, 3, 7, 12)
    except (RuntimeError, OSError, st.SafetensorsError, subprocess.TimeoutExpired) as e:
        check(False, "run", str(e))
    print("%s (%d failed)" % ("FAILED" if failed else "OK", len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
