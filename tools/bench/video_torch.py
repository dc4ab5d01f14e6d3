"""The peer of tools/bench/video: PyTorch's DataLoader over the same WebDataset shards (read from disk with
Python's tarfile), each clip decoded with PyAV (FFmpeg, as torchvision.io.read_video and PyTorchVideo do) and
augmented the way Uni-Perceiver's and TimeSformer's video code does it, with torch ops on the frame tensor.

Per clip, the same work as upmoe's training path (docs/pipeline.md): T frames 32 apart at 30 fps (scaled to
the clip's rate) from a random start; a seek to the keyframe before the first of them, then decoding forward
to the last; RGB frames; the shorter side scaled to a random size in [256/224, 320/224] x SIZE (bilinear),
one random SIZE x SIZE crop and one flip for the whole clip; normalised with mean = std = 0.5.
Prints clips/s of steady-state batches (the first batch, which pays for worker start-up, excluded).
usage: video_torch.py BATCHES BATCH_SIZE WORKERS SIZE FRAMES SHARD..."""
import io
import math
import random
import sys
import tarfile
import time

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

INTERVAL = 32  # Uni-Perceiver's stride: frames 32 apart at 30 fps


def frame_indices(n, fps, T, rng):
    """upmoe's training policy (pipeline/video_sample.c), written again here."""
    if n < T:
        return [i * n // T for i in range(T)]
    stride = max(1.0, INTERVAL * (fps or 30.0) / 30.0)
    span = math.floor(stride * (T - 1)) + 1
    if span > n:
        stride, span = (n - 1) / (T - 1), n
    start = rng.randrange(n - span + 1) if span < n else 0
    return [min(start + math.floor(i * stride + 1e-9), n - 1) for i in range(T)]


def decode(data, T, rng):
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        s.thread_type = "NONE"  # one thread per worker, as upmoe's decode threads
        fps = float(s.average_rate or 30)
        n = s.frames or int(float(s.duration * s.time_base) * fps)
        want = frame_indices(n, fps, T, rng)
        first = want[0] / fps
        c.seek(int(first / s.time_base) + (s.start_time or 0), stream=s, backward=True, any_frame=False)
        got = {}
        for f in c.decode(s):
            k = round((f.pts - (s.start_time or 0)) * s.time_base * fps) if f.pts is not None else None
            if k is None:
                continue
            if k in want:
                got[k] = f.to_ndarray(format="rgb24")
            if k >= want[-1]:
                break
        last = None
        frames = []
        for k in want:  # a frame the decode never reached repeats the last one it did
            last = got.get(k, last)
            if last is None:
                last = next(iter(got.values()))
            frames.append(last)
    return torch.from_numpy(np.stack(frames))  # [T, H, W, 3] uint8


def augment(x, size, rng):
    x = x.permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    h, w = x.shape[2:]
    short = rng.randint(int(256 / 224 * size), int(320 / 224 * size))
    oh, ow = (short, int(w / h * short)) if h <= w else (int(h / w * short), short)
    x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    y0, x0 = rng.randint(0, oh - size), rng.randint(0, ow - size)
    x = x[:, :, y0:y0 + size, x0:x0 + size]
    if rng.random() < 0.5:
        x = x.flip(3)
    return (x / 255.0 - 0.5) / 0.5


class Shards(IterableDataset):
    def __init__(self, paths, size, frames):
        self.paths, self.size, self.frames = paths, size, frames

    def __iter__(self):
        info = get_worker_info()
        mine = self.paths[info.id::info.num_workers] if info else self.paths
        rng = random.Random(info.id if info else 0)
        while True:  # repeat forever, like the sampler
            for path in mine:
                with tarfile.open(path, mode="r|") as tar:
                    sample = {}
                    for m in tar:
                        key, ext = m.name.split(".", 1)
                        if sample and sample["key"] != key:
                            yield self.item(sample, rng)
                            sample = {}
                        sample["key"] = key
                        sample[ext] = tar.extractfile(m).read()
                    if sample:
                        yield self.item(sample, rng)

    def item(self, s, rng):
        return augment(decode(s["mp4"], self.frames, rng), self.size, rng), int(s["cls"])


def main():
    batches, bs, workers, size, frames = map(int, sys.argv[1:6])
    torch.set_num_threads(1)
    loader = DataLoader(Shards(sys.argv[6:], size, frames), batch_size=bs, num_workers=workers)
    it = iter(loader)
    next(it)
    t0 = time.monotonic()
    for _ in range(batches):
        x, y = next(it)
        assert x.shape == (bs, frames, 3, size, size), x.shape
    dt = time.monotonic() - t0
    print(f"torch: {batches * bs / dt:.2f} clips/s")


if __name__ == "__main__":
    main()
