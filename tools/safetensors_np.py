#!/usr/bin/python3
"""Minimal safetensors reader/writer on numpy (no `safetensors` package needed).

File layout (https://github.com/huggingface/safetensors, "Format"):
  8 bytes   little-endian u64 N = header length
  N bytes   UTF-8 JSON object {name: {"dtype": str, "shape": [int...],
            "data_offsets": [begin, end]}, "__metadata__": {str: str}}
            (may be padded at the end with spaces)
  rest      byte buffer; offsets are relative to its start, little-endian
            row-major data.

Library use:
    import safetensors_np as st
    tensors, meta = st.load("w.safetensors")        # dict name -> np.ndarray
    st.save("w2.safetensors", tensors, meta)
    st.save_raw(path, header_dict, buffer_bytes)    # for crafting bad files

Command line:
    safetensors_np.py info FILE          list tensors (name dtype shape offsets)
    safetensors_np.py stats FILE [NAME]  min/max/mean/std per tensor
"""
import json
import struct
import sys

import numpy as np

# safetensors dtype name <-> little-endian numpy dtype
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class SafetensorsError(ValueError):
    pass


def _np_to_st_dtype(dt):
    dt = np.dtype(dt).newbyteorder("<") if np.dtype(dt).byteorder == ">" else np.dtype(dt)
    for name, d in DTYPES.items():
        if d == dt or (d.kind == dt.kind and d.itemsize == dt.itemsize):
            return name
    raise SafetensorsError("unsupported numpy dtype %s" % dt)


def parse_header(blob, path="<bytes>"):
    """Returns (header dict incl. __metadata__, header_len). Validates framing."""
    if len(blob) < 8:
        raise SafetensorsError("%s: file too short for header length (%d bytes)" % (path, len(blob)))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise SafetensorsError("%s: header length %d past end of file (%d bytes)" % (path, n, len(blob)))
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError("%s: header is not valid JSON: %s" % (path, e))
    if not isinstance(header, dict):
        raise SafetensorsError("%s: header is not a JSON object" % path)
    return header, n


def load(path, strict=True):
    """Reads a safetensors file. Returns (tensors, metadata).

    tensors: dict name -> numpy array (native-endian copy, shape [] -> 0-d).
    metadata: dict from "__metadata__" (empty if absent).
    strict: also check that the tensors tile the buffer without gaps/overlap.
    """
    with open(path, "rb") as f:
        blob = f.read()
    header, n = parse_header(blob, path)
    buf = memoryview(blob)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise SafetensorsError("%s: tensor %s: bad header entry (%s)" % (path, name, e))
        if any(s < 0 for s in shape):
            raise SafetensorsError("%s: tensor %s: negative dimension" % (path, name))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= begin <= end <= len(buf)):
            raise SafetensorsError("%s: tensor %s: data offsets [%d, %d] outside buffer of %d bytes"
                                   % (path, name, begin, end, len(buf)))
        if end - begin != count * dtype.itemsize:
            raise SafetensorsError("%s: tensor %s: %d bytes for shape %s %s"
                                   % (path, name, end - begin, list(shape), info["dtype"]))
        arr = np.frombuffer(buf[begin:end], dtype=dtype).reshape(shape)
        tensors[name] = arr.astype(dtype.newbyteorder("="), copy=True)
        spans.append((begin, end, name))
    if strict:
        spans.sort()
        pos = 0
        for begin, end, name in spans:
            if begin != pos:
                raise SafetensorsError("%s: tensor %s: data offset %d, expected %d (gap or overlap)"
                                       % (path, name, begin, pos))
            pos = end
        if pos != len(buf):
            raise SafetensorsError("%s: %d trailing bytes after last tensor" % (path, len(buf) - pos))
    return tensors, {str(k): str(v) for k, v in meta.items()}


def build(tensors, metadata=None, align=8):
    """Serialises to bytes. tensors: dict name -> array-like (order kept).
    Arrays keep their dtype; python ints/floats become I64/F32 scalars is NOT
    guessed: pass numpy arrays."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    pos = 0
    for name, arr in tensors.items():
        a = np.asarray(arr)
        st_dtype = _np_to_st_dtype(a.dtype)
        data = np.ascontiguousarray(a, dtype=DTYPES[st_dtype]).tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(a.shape),
                        "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    return build_raw(header, b"".join(chunks), align)


def build_raw(header, buffer, align=8, header_bytes=None):
    """Frames an arbitrary header (dict, or raw bytes via header_bytes) and
    buffer. Pads the JSON with spaces so the buffer starts 8-byte aligned."""
    hb = header_bytes if header_bytes is not None else json.dumps(header, separators=(",", ":")).encode()
    if align and header_bytes is None:
        hb += b" " * ((-(8 + len(hb))) % align)
    return struct.pack("<Q", len(hb)) + hb + bytes(buffer)


def save(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(build(tensors, metadata))


def save_raw(path, header, buffer, header_bytes=None):
    with open(path, "wb") as f:
        f.write(build_raw(header, buffer, header_bytes=header_bytes))


def read_raw(path):
    """Returns (header dict incl. __metadata__, buffer bytes) without decoding
    tensors: for tests that edit a valid file's header."""
    with open(path, "rb") as f:
        blob = f.read()
    header, n = parse_header(blob, path)
    return header, blob[8 + n:]


def _main(argv):
    if len(argv) < 2 or argv[0] not in ("info", "stats"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    cmd, path = argv[0], argv[1]
    try:
        tensors, meta = load(path)
    except (OSError, SafetensorsError) as e:
        print("safetensors_np: error: %s" % e, file=sys.stderr)
        return 1
    if meta:
        print("__metadata__ " + json.dumps(meta, sort_keys=True))
    header, _ = read_raw(path)
    for name, a in tensors.items():
        if len(argv) > 2 and name not in argv[2:]:
            continue
        if cmd == "info":
            print("%-48s %-4s %-18s %s" % (name, header[name]["dtype"], list(a.shape),
                                         header[name]["data_offsets"]))
        else:
            f = a.astype(np.float64)
            print("%-48s %-18s min %.6g max %.6g mean %.6g std %.6g" % (
                name, list(a.shape), f.min() if f.size else 0, f.max() if f.size else 0,
                f.mean() if f.size else 0, f.std() if f.size else 0))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
