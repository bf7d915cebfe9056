#!/usr/bin/python3
"""bf-train end-to-end tests (driven by ctest, tests/train/CMakeLists.txt).

usage: train_test.py TEST --bin BF_TRAIN --src SOURCE_DIR --work DIR [--data DIR]

TEST: setup | learn | resume | sigterm | nan | config_errors
Every check that fails raises; the exit status is 1 then (never "skipped").
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

A = None


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(args, expect=None, timeout=600):
    cmd = [A.bin] + args
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(p.stderr[-4000:])
    print("  -> exit %d in %.1f s" % (p.returncode, time.time() - t0), flush=True)
    if expect is not None and p.returncode != expect:
        fail("expected exit %d, got %d: %s" % (expect, p.returncode, p.stderr[-2000:]))
    return p


def config():
    return os.path.join(A.src, "configs", "ci-tiny.ini")


def base(run_dir, *extra):
    return ["--config", config(), "--data.root", A.data, "--run_dir", run_dir, "--no-progress"] + list(extra)


def fresh(name):
    d = os.path.join(A.work, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def read(path):
    with open(path, "rb") as f:
        return f.read()


# A shorter recipe for the resume tests: 2 epochs x 6 steps, 1 test batch.
QUICK = ["--train.epochs", "2", "--train.max_steps_per_epoch", "6", "--train.eval_max_batches", "1",
         "--train.log_every", "1"]


def t_setup():
    shutil.rmtree(A.data, ignore_errors=True)
    tmp = A.data + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", os.path.join(A.src, "tools", "make-synthetic-dataset"), "imagefolder", tmp,
                    "--classes", "4", "--per-class", "80", "--size", "32x32", "--seed", "1"], check=True)
    os.rename(tmp, A.data)


def t_learn():
    d = fresh("learn")
    run(base(d), expect=0)
    res = json.load(open(os.path.join(d, "result.json")))
    print("result.json:", json.dumps(res))
    for k in ("top1", "top5", "split_after", "d_r", "num_params", "offload_bytes_per_image", "train_time_sec"):
        if k not in res:
            fail("result.json lacks '%s'" % k)
    if res["split_after"] != 4 or res["d_r"] != 2:
        fail("result.json split_after/d_r %s/%s, expected 4/2" % (res["split_after"], res["d_r"]))
    # RB4 output of a 32x32 input is 4x4 (stride 8); D_r = 2 channels at 8 bits.
    if res["offload_bytes_per_image"] != 4 * 4 * 2:
        fail("offload_bytes_per_image %s, expected 32" % res["offload_bytes_per_image"])
    # 4 classes: chance is 0.25.
    if res["top1"] < 0.7:
        fail("test top-1 %.3f: the model did not learn (chance 0.25, expected >= 0.7)" % res["top1"])
    lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    epochs = [l for l in lines if l["type"] == "epoch"]
    steps = [l for l in lines if l["type"] == "step"]
    if len(epochs) != 3:
        fail("metrics.jsonl has %d epoch lines, expected 3" % len(epochs))
    if not steps or any(k not in steps[0] for k in ("step", "epoch", "lr", "loss", "accuracy", "images_per_sec")):
        fail("metrics.jsonl step lines incomplete: %s" % (steps[:1],))
    for f in ("config.ini", "split.csv", "last.safetensors", "last.state.safetensors", "best.safetensors"):
        if not os.path.exists(os.path.join(d, f)):
            fail("run directory lacks " + f)
    # The saved config reproduces the effective config.
    p1 = run(["--config", os.path.join(d, "config.ini"), "--print-config"], expect=0).stdout
    p2 = run(base(d) + ["--print-config"], expect=0).stdout
    if p1 != p2:
        fail("config.ini does not reproduce the effective config")


def t_resume():
    a = fresh("resume_a")
    b = fresh("resume_b")
    run(base(a, *QUICK), expect=0)
    # Stop mid-epoch 2 (global step 8 of 12), then continue.
    run(base(b, *QUICK) + ["--stop-after-steps", "8"], expect=0)
    if os.path.exists(os.path.join(b, "result.json")):
        fail("a stopped run wrote result.json")
    st = run(["--resume", b, "--no-progress"], expect=0)
    if "resuming at epoch 2, step 2" not in st.stderr:
        fail("resume did not continue at epoch 2, step 2")
    for f in ("last.safetensors", "last.state.safetensors"):
        wa, wb = read(os.path.join(a, f)), read(os.path.join(b, f))
        if f == "last.safetensors" and wa != wb:
            fail("final weights differ between the uninterrupted and the resumed run")
    # The sidecar differs only in train_time metadata: compare its tensor bytes.
    ha, hb = read(os.path.join(a, "last.state.safetensors")), read(os.path.join(b, "last.state.safetensors"))
    na, nb = int.from_bytes(ha[:8], "little"), int.from_bytes(hb[:8], "little")
    if ha[8 + na:] != hb[8 + nb:]:
        fail("final momentum differs between the uninterrupted and the resumed run")
    # metrics.jsonl: no step repeated after the resume.
    steps = [json.loads(l) for l in open(os.path.join(b, "metrics.jsonl"))]
    nums = [l["step"] for l in steps if l["type"] == "step"]
    if nums != sorted(set(nums)) or nums[-1] != 12:
        fail("metrics.jsonl steps after resume: %s" % nums)
    # Resuming a finished run is an error, and so is a fresh run into it.
    p = run(["--resume", b])
    if p.returncode == 0 or "already finished" not in p.stderr:
        fail("resuming a finished run should fail naming it")
    p = run(base(b, *QUICK))
    if p.returncode == 0 or "--resume" not in p.stderr:
        fail("a fresh run into a used run directory should fail and suggest --resume")


def t_sigterm():
    a = fresh("sigterm_a")
    b = fresh("sigterm_b")
    run(base(a, *QUICK), expect=0)
    cmd = [A.bin] + base(b, *QUICK)
    print("+ " + " ".join(cmd) + "  (SIGTERM after the 3rd step)", flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(b, "metrics.jsonl")
    t0 = time.time()
    while time.time() - t0 < 300:
        if p.poll() is not None:
            break
        try:
            n = sum(1 for l in open(metrics) if '"type":"step"' in l)
        except OSError:
            n = 0
        if n >= 3:
            break
        time.sleep(0.05)
    if p.poll() is not None:
        fail("the run ended before it could be signalled (exit %d)" % p.returncode)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    sys.stderr.write(err[-3000:])
    if p.returncode != 128 + signal.SIGTERM:
        fail("SIGTERM: expected a clean exit with status 143, got %d" % p.returncode)
    if "stopped by a signal" not in err:
        fail("SIGTERM: no stop message")
    for f in ("last.safetensors", "last.state.safetensors"):
        if not os.path.exists(os.path.join(b, f)):
            fail("SIGTERM: no checkpoint " + f)
    # The checkpoint loads (strictly) and the resumed run ends bitwise where
    # the uninterrupted one did.
    run(["--resume", b, "--no-progress"], expect=0)
    if read(os.path.join(a, "last.safetensors")) != read(os.path.join(b, "last.safetensors")):
        fail("SIGTERM + resume: final weights differ from the uninterrupted run")


def t_nan():
    d = fresh("nan")
    # One good epoch and a step (a checkpoint mid-epoch 2), then continue
    # with an absurd learning rate: the loss or the model goes non-finite
    # before the next checkpoint would be written.
    run(base(d, *QUICK) + ["--train.epochs", "3", "--stop-after-steps", "7"], expect=0)
    good = read(os.path.join(d, "last.safetensors"))
    p = run(["--resume", d, "--no-progress", "--train.lr", "1000", "--train.warmup_epochs", "0"])
    if p.returncode != 3:
        fail("non-finite loss: expected exit status 3, got %d" % p.returncode)
    if "non-finite" not in p.stderr or "global step" not in p.stderr or "last good checkpoint" not in p.stderr:
        fail("non-finite loss: message should name the step and the kept checkpoint")
    if read(os.path.join(d, "last.safetensors")) != good:
        fail("non-finite loss: the last good checkpoint was overwritten")


def expect_error(args, needles, code=2):
    p = run(args)
    if p.returncode != code:
        fail("expected exit %d for %s, got %d" % (code, args, p.returncode))
    if p.returncode < 0 or "AddressSanitizer" in p.stderr or "runtime error" in p.stderr:
        fail("crash or sanitizer report")
    for n in needles:
        if n not in p.stderr:
            fail("error message lacks '%s': %s" % (n, p.stderr))


def t_config_errors():
    w = fresh("config_errors")
    os.makedirs(w)
    bad = os.path.join(w, "bad.ini")
    with open(bad, "w") as f:
        f.write("name = x\n[train]\nepochs = 2\nlrr = 0.1\n")
    expect_error(["--config", bad], ["train.lrr", bad + ":4"])
    with open(bad, "w") as f:
        f.write("[train]\nmomentum = 1.5\n")
    expect_error(["--config", bad], ["train.momentum", bad + ":2"])
    with open(bad, "w") as f:
        f.write("[train\nepochs = 2\n")
    expect_error(["--config", bad], [bad + ":1"])
    expect_error(["--config", os.path.join(w, "missing.ini")], ["missing.ini"])
    expect_error(["--config", config(), "--train.foo", "1"], ["train.foo"])
    expect_error(["--config", config(), "--train.epochs", "abc"], ["train.epochs", "abc"])
    expect_error(["--config", config(), "--train.epochs=0"], ["train.epochs"])
    expect_error(["--config", config(), "--train.schedule", "linear"], ["train.schedule", "cosine"])
    expect_error(["--config", config(), "--model.d_r", "0"], ["model.d_r"])
    expect_error(["--config", config(), "--model.split_after", "17"], ["model.split_after"])
    expect_error(["--config", config(), "--train.nesterov", "maybe"], ["train.nesterov"])
    expect_error(["--config", config(), "--data.root", ""], ["data.root"])
    missing = os.path.join(w, "no-such-dataset")
    expect_error(["--config", config(), "--data.root", missing, "--run_dir", os.path.join(w, "r")],
                 ["data.root", missing], code=1)
    expect_error(["--resume", os.path.join(w, "no-such-run")], ["no-such-run"])
    expect_error(["--config", config(), "--resume", w], ["--resume"])
    # --help lists every key with its default; --print-config round-trips.
    h = run(["--help"], expect=0).stdout
    for k in ("data.root", "model.split_after", "model.d_r", "train.lr", "train.schedule", "train.warmup_epochs",
              "train.max_steps_per_epoch", "init", "threads", "backend", "default"):
        if k not in h:
            fail("--help lacks '%s'" % k)
    pc = run(["--config", config(), "--train.lr=0.125", "--print-config"], expect=0).stdout
    if "lr = 0.125" not in pc or "[model]" not in pc:
        fail("--print-config does not show the override")
    # options and keys are spelt with dashes or underscores alike; unknown options are refused
    pc2 = run(["--config", config(), "--train.max-steps-per-epoch", "3", "--run-dir", os.path.join(w, "dash"),
               "--data.test-fraction=0.25", "--print-config"], expect=0).stdout
    for want in ("max_steps_per_epoch = 3", "run_dir = " + os.path.join(w, "dash"), "test_fraction = 0.25"):
        if want not in pc2:
            fail("--print-config does not show the dash-spelt override '%s'" % want)
    expect_error(["--config", config(), "--no-such-option"], ["--no-such-option"])
    expect_error(["--config", config(), "--force=1"], ["--force=1"])
    expect_error(["--config", config(), "--train.max-steps-per-epoch", "-1"], ["train.max_steps_per_epoch"])
    eff = os.path.join(w, "eff.ini")
    with open(eff, "w") as f:
        f.write(pc)
    if run(["--config", eff, "--print-config"], expect=0).stdout != pc:
        fail("--print-config output does not round-trip")


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("test")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--data")
    A = ap.parse_args()
    os.makedirs(A.work, exist_ok=True)
    if A.data is None:
        A.data = os.path.join(A.work, "synth")
    t0 = time.time()
    {"setup": t_setup, "learn": t_learn, "resume": t_resume, "sigterm": t_sigterm, "nan": t_nan,
     "config_errors": t_config_errors}[A.test]()
    print("PASS %s (%.1f s)" % (A.test, time.time() - t0))


if __name__ == "__main__":
    main()
