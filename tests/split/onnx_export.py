"""bf-export --format onnx (issue 13, docs/split.md "ONNX").

  onnx_export.py reference BIN_DIR WORK_DIR   (python with onnx + onnxruntime)
      Three checkpoints (split after RB1, RB8, RB16; D_r 4/16/32; 10/7/100
      classes; random BN statistics and affine parameters so the folding
      matters) are exported to ONNX; onnx.checker accepts both halves; ONNX
      Runtime runs device.onnx then server.onnx on the same images as bf-infer
      (eval mode, the unfolded model) and the logits agree within 1e-4
      relative (max |ort - ours| / max |ours|), at 64x64 with batch 2 and at
      96x80 with batch 1 (the graphs' N, H, W are symbolic). The 8-bit
      quantisation of docs/split.md between the halves keeps top-1.
  onnx_export.py errors BIN_DIR WORK_DIR      (numpy only; also under ASan)
      A valid export writes exactly the expected files; a checkpoint with a
      missing tensor or a mis-shaped tensor gets one error line naming the
      tensor and the file, a non-zero exit, and no file.
"""
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import safetensors_np as st  # noqa: E402

TOL = 1e-4


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if expect_ok and p.returncode != 0:
        sys.exit("FAIL: %s exited %d:\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def make_checkpoint(bindir, path, k, d_r, classes, seed):
    """bf-init, then random BN statistics/affine (a fresh init's BN is the identity)."""
    run([os.path.join(bindir, "bf-init"), "--classes", str(classes), "--split-after", str(k), "--dr", str(d_r),
         "--seed", str(seed), "--out", path])
    t, meta = st.load(path)
    rng = np.random.default_rng(seed)
    for name in list(t):
        a = t[name]
        if name.endswith("running_mean"):
            t[name] = rng.normal(0, 0.2, a.shape).astype(np.float32)
        elif name.endswith("running_var"):
            t[name] = rng.uniform(0.5, 2.0, a.shape).astype(np.float32)
        elif a.ndim == 1 and name.endswith(".weight"):  # BN gamma; the last BN of a block damped
            hi = 0.6 if ".bn3." in name or "downsample.1" in name else 1.5
            t[name] = rng.uniform(0.3, hi, a.shape).astype(np.float32)
        elif a.ndim == 1 and name.endswith(".bias") and name != "fc.bias":
            t[name] = rng.normal(0, 0.1, a.shape).astype(np.float32)
    st.save(path, t, meta)


def bf_infer(bindir, work, weights, images):
    xin, xout = os.path.join(work, "x.safetensors"), os.path.join(work, "y.safetensors")
    st.save(xin, {"images": images})
    # --unfolded: the training model's eval forward, so that the ONNX halves
    # are checked against BN as trained, not against our own fold
    run([os.path.join(bindir, "bf-infer"), "--weights", weights, "--input", xin, "--output", xout, "--mode", "eval",
         "--unfolded", "--threads", "2"])
    return st.load(xout)[0]["logits"]


# The 8-bit feature coding of src/split/quant.c (bf_quant_params, bf_quantize,
# bf_dequantize), per image as bf-client sends it; the same code is in
# docs/split.md.
def quantize(f, per_channel=False):
    axes = (2, 3) if per_channel else (1, 2, 3)  # f: float32 [N, D_r, h, w]
    lo = np.minimum(f.min(axis=axes, keepdims=True), 0).astype(np.float64)
    hi = np.maximum(f.max(axis=axes, keepdims=True), 0).astype(np.float64)
    s = (hi - lo) / 255.0
    ok = (s > 1e-30) & np.isfinite(s)
    s = np.where(ok, s, 1.0)
    zp = np.where(ok, np.clip(np.rint(-lo / s), 0, 255), 0).astype(np.int32)
    scale = s.astype(np.float32)
    q = np.clip(np.rint(f.astype(np.float64) / scale.astype(np.float64)) + zp, 0, 255).astype(np.uint8)
    return q, scale, zp


def dequantize(q, scale, zp):
    return (q.astype(np.int32) - zp).astype(np.float32) * scale


def rel_err(ours, ref):
    return float(np.max(np.abs(ours.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def reference(bindir, work):
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    fails = 0
    cases = [(1, 4, 10), (8, 16, 7), (16, 32, 100)]
    for i, (k, d_r, classes) in enumerate(cases):
        ckpt = os.path.join(work, "rb%d.safetensors" % k)
        out = os.path.join(work, "deploy")
        make_checkpoint(bindir, ckpt, k, d_r, classes, 100 + i)
        run([os.path.join(bindir, "bf-export"), "--checkpoint", ckpt, "--out-dir", out, "--format", "onnx"])
        dev_path = os.path.join(out, "split-%d" % k, "device.onnx")
        srv_path = os.path.join(out, "split-%d" % k, "server.onnx")
        for path in (dev_path, srv_path):
            onnx.checker.check_model(onnx.load(path), full_check=True)  # raises on a bad file
            ops = sorted({n.op_type for n in onnx.load(path).graph.node})
            print("RB%d %s: onnx.checker ok, ops %s" % (k, os.path.basename(path), ",".join(ops)))
        dev = ort.InferenceSession(dev_path, so, providers=["CPUExecutionProvider"])
        srv = ort.InferenceSession(srv_path, so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(7 + i)
        for n, h, w in ((2, 64, 64), (1, 96, 80)):
            images = rng.normal(0, 1, (n, 3, h, w)).astype(np.float32)
            ours = bf_infer(bindir, work, ckpt, images).astype(np.float64)
            feats = dev.run(["features"], {"image": images})[0]
            logits = srv.run(["logits"], {"features": feats})[0]
            e = rel_err(logits, ours)
            ok = logits.shape == (n, classes) and e <= TOL
            fails += not ok
            print("%s RB%d D_r %d %d classes, %dx3x%dx%d: features %s, logits %s, rel err %.2e (tol %g, max |logit| "
                  "%.3g)" % ("ok  " if ok else "FAIL", k, d_r, classes, n, h, w, feats.shape, logits.shape, e, TOL,
                             np.max(np.abs(ours))))
            for per_channel in (False, True):
                q, scale, zp = quantize(feats, per_channel)
                deq = dequantize(q, scale, zp)
                lq = srv.run(["logits"], {"features": deq})[0]
                worst = float(np.max(np.abs(deq - feats) / scale))
                same = bool(np.all(lq.argmax(1) == ours.argmax(1)))
                ok = same and worst <= 0.5 + 1e-3
                fails += not ok
                print("%s   8-bit %s: top-1 %s, max |dequantised - float| = %.3f quantisation steps" %
                      ("ok  " if ok else "FAIL", "per channel" if per_channel else "per tensor",
                       "kept" if same else "CHANGED", worst))
        shutil.rmtree(out)
        os.remove(ckpt)
    return fails


def errors(bindir, work):
    fails = 0
    ckpt = os.path.join(work, "good.safetensors")
    run([os.path.join(bindir, "bf-init"), "--classes", "5", "--split-after", "3", "--dr", "8", "--out", ckpt])
    out = os.path.join(work, "good")
    run([os.path.join(bindir, "bf-export"), "--checkpoint", ckpt, "--out-dir", out, "--format", "both"])
    got = sorted(os.listdir(os.path.join(out, "split-3")))
    want = ["device.onnx", "device.safetensors", "manifest.json", "server.onnx", "server.safetensors"]
    ok = got == want
    fails += not ok
    print("%s --format both writes %s" % ("ok  " if ok else "FAIL", got))
    shutil.rmtree(out)
    t, meta = st.load(ckpt)
    bad = {
        "missing": ("layer2.0.conv2.weight", lambda t: t.pop("layer2.0.conv2.weight")),
        "misshaped": ("butterfly.restore.bn.running_var",
                      lambda t: t.__setitem__("butterfly.restore.bn.running_var", np.ones(3, np.float32))),
    }
    for what, (tensor, spoil) in bad.items():
        tt = dict(t)
        spoil(tt)
        path = os.path.join(work, "%s.safetensors" % what)
        st.save(path, tt, meta)
        for fmt in ("onnx", "both"):
            out = os.path.join(work, "out_%s_%s" % (what, fmt))
            shutil.rmtree(out, ignore_errors=True)
            p = run([os.path.join(bindir, "bf-export"), "--checkpoint", path, "--out-dir", out, "--format", fmt,
                     "--input-size", "64", "--resize", "0", "--mean", "0,0,0", "--std", "1,1,1"], expect_ok=False)
            lines = p.stderr.strip().splitlines()
            files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs] if os.path.exists(out) else []
            ok = (p.returncode != 0 and len(lines) == 1 and tensor in lines[0] and path in lines[0] and not files
                  and "Sanitizer" not in p.stderr)
            fails += not ok
            print("%s %s tensor, --format %s: exit %d, files %s, stderr: %s" %
                  ("ok  " if ok else "FAIL", what, fmt, p.returncode, files, p.stderr.strip()))
        os.remove(path)
    os.remove(ckpt)
    return fails


def main():
    mode, bindir, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    fails = reference(bindir, work) if mode == "reference" else errors(bindir, work)
    print("onnx_export %s: %s" % (mode, "FAILED (%d)" % fails if fails else "all passed"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
