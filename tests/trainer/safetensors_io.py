"""A small safetensors reader and writer for the tests (Debian ships no safetensors package): load()
checks the same format rules as trainer/safetensors.c and returns torch tensors; save() writes the
reference layout (tensors sorted by name, compact JSON header padded with spaces to 8 bytes)."""
import json
import os
import struct
import sys

import torch

assert sys.byteorder == "little", "safetensors data is little-endian; this reader assumes the host is too"

MAX_HEADER = 100_000_000
MAX_DIMS = 8

DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"key {dup!r} appears twice in the header")
    return dict(pairs)


def parse_header(path, raw):
    """(entries sorted by offset as (name, dtype, shape, begin, end), metadata, data start) of the file
    bytes raw; raises ValueError naming path (and the tensor) on any violation of the format."""
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER:
        raise ValueError(f"{path}: header length {n} exceeds the limit of {MAX_HEADER}")
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} is larger than the {len(raw) - 8} bytes after it")
    head = bytes(raw[8:8 + n])
    if not head.startswith(b"{"):
        raise ValueError(f"{path}: the header does not start with '{{'")
    try:
        header = json.loads(head.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    data_len = len(raw) - 8 - n
    entries = []
    for name, e in header.items():
        entries.append(_entry(path, name, e, data_len))
    entries.sort(key=lambda x: (x[3], x[4]))
    pos = 0
    for name, _, _, begin, end in entries:
        if begin != pos:
            what = "hole before" if begin > pos else "overlap at"
            raise ValueError(f"{path}: {what} tensor {name!r}: data_offsets start at {begin}, expected {pos}")
        pos = end
    if pos != data_len:
        raise ValueError(f"{path}: {data_len - pos} trailing bytes after the last tensor")
    return entries, metadata, 8 + n


def _entry(path, name, e, data_len):
    if not name:
        raise ValueError(f"{path}: a tensor has an empty name")
    if not isinstance(e, dict):
        raise ValueError(f"{path}: tensor {name!r}: entry is not an object")
    dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
    if dtype not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_uint(d) for d in shape):
        raise ValueError(f"{path}: tensor {name!r}: bad shape {shape!r}")
    if not isinstance(offs, list) or len(offs) != 2 or not all(_is_uint(o) for o in offs) or offs[0] > offs[1]:
        raise ValueError(f"{path}: tensor {name!r}: bad data_offsets {offs!r}")
    count = 1
    for d in shape:
        count *= d
    if count * SIZES[dtype] != offs[1] - offs[0]:
        raise ValueError(f"{path}: tensor {name!r}: shape {shape} of {dtype} does not match data_offsets {offs}")
    if offs[1] > data_len:
        raise ValueError(f"{path}: tensor {name!r}: data_offsets {offs} run past the data ({data_len} bytes)")
    return name, dtype, shape, offs[0], offs[1]


def load(path):
    """(name -> tensor, metadata) of the safetensors file at path. Tensors own their memory."""
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    entries, metadata, start = parse_header(path, raw)
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=DTYPES[dtype])
        else:
            chunk = bytearray(raw[start + begin:start + end])
            tensors[name] = torch.frombuffer(chunk, dtype=DTYPES[dtype]).reshape(shape)
    return tensors, metadata


def tensor_bytes(t):
    """The raw little-endian bytes of tensor t in row-major order."""
    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def encode(tensors, metadata=None):
    """The bytes of a safetensors file of tensors (name -> torch tensor) and metadata (str -> str)."""
    header, blobs, off = {}, [], 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        t = tensors[name]
        if t.dtype not in NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name here")
        if t.dim() > MAX_DIMS:
            raise ValueError(f"tensor {name!r}: more than {MAX_DIMS} dimensions")
        b = tensor_bytes(t)
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def save(path, tensors, metadata=None):
    """Writes tensors (name -> torch tensor, stored sorted by name) and metadata to path, atomically."""
    data = encode(tensors, metadata)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
