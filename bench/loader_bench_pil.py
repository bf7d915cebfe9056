#!/usr/bin/python3
"""Pillow baseline for bench/loader_bench.sh: the same work as the butterfly
loader's train transform, the torchvision way: open + decode (convert RGB),
Resize(256) (Pillow BILINEAR, antialiased), RandomCrop(224), random
horizontal flip, ToTensor-style /255 and Normalize(ImageNet) to float32 HWC.

usage: loader_bench_pil.py ROOT --procs N --images N [--draft]
--draft lets libjpeg downscale in the DCT domain first (Image.draft), the
same trick the butterfly loader uses."""
import argparse
import os
import random
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZE, RESIZE = 224, 256
DRAFT = False


def work(args):
    path, seed = args
    rng = random.Random(seed)
    im = Image.open(path)
    w, h = im.size
    if w <= h:
        rw, rh = RESIZE, int(RESIZE * h / w)
    else:
        rw, rh = int(RESIZE * w / h), RESIZE
    if DRAFT and im.format == "JPEG":
        im.draft("RGB", (rw, rh))
    im = im.convert("RGB").resize((rw, rh), Image.BILINEAR)
    x0, y0 = rng.randint(0, rw - SIZE), rng.randint(0, rh - SIZE)
    im = im.crop((x0, y0, x0 + SIZE, y0 + SIZE))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    a = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
    return a.shape[0]


def init(draft):
    global DRAFT
    DRAFT = draft


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--draft", action="store_true")
    a = ap.parse_args()
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.root) for f in fs
                   if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if not files:
        print("no images under %s" % a.root, file=sys.stderr)
        return 1
    jobs = [(files[i % len(files)], i) for i in range(a.images)]
    init(a.draft)
    if a.procs == 1:
        for j in jobs[:8]:
            work(j)
        t0, c0 = time.perf_counter(), time.process_time()
        for j in jobs:
            work(j)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    else:
        with Pool(a.procs, initializer=init, initargs=(a.draft,)) as pool:
            pool.map(work, jobs[: 8 * a.procs], chunksize=4)  # start-up out of the timing
            t0 = time.perf_counter()
            pool.map(work, jobs, chunksize=16)
            dt = time.perf_counter() - t0
            dc = float("nan")  # workers' CPU time is not collected
    print('{"procs": %d, "images": %d, "seconds": %.4f, "images_per_s": %.1f, "cpu_s": %.4f, "images_per_cpu_s": %.1f}'
          % (a.procs, a.images, dt, a.images / dt, dc, a.images / dc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
