"""The peer of tools/bench/pipeline: PyTorch's DataLoader with torchvision transforms over the same
WebDataset shards, streamed over HTTP (urllib) and read with Python's tarfile, decoded with PIL.
Prints images/s of steady-state batches (the first batch, which pays for worker start-up, excluded).
usage: pipeline_torch.py BATCHES BATCH_SIZE WORKERS SIZE URL..."""
import io
import sys
import tarfile
import time
import urllib.request

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms


class Shards(IterableDataset):
    def __init__(self, urls, size):
        self.urls = urls
        self.tf = transforms.Compose([
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])

    def __iter__(self):
        info = get_worker_info()
        mine = self.urls[info.id::info.num_workers] if info else self.urls
        while True:  # repeat forever, like the sampler
            for url in mine:
                with urllib.request.urlopen(url) as r, tarfile.open(fileobj=r, mode="r|") as tar:
                    sample = {}
                    for m in tar:
                        key, ext = m.name.split(".", 1)
                        if sample and sample["key"] != key:
                            yield self.item(sample)
                            sample = {}
                        sample["key"] = key
                        sample[ext] = tar.extractfile(m).read()
                    if sample:
                        yield self.item(sample)

    def item(self, s):
        img = Image.open(io.BytesIO(s["jpg"])).convert("RGB")
        return self.tf(img), int(s["cls"])


def main():
    batches, bs, workers, size = map(int, sys.argv[1:5])
    urls = sys.argv[5:]
    torch.set_num_threads(1)
    loader = DataLoader(Shards(urls, size), batch_size=bs, num_workers=workers)
    it = iter(loader)
    next(it)
    t0 = time.monotonic()
    for _ in range(batches):
        x, y = next(it)
        assert x.shape == (bs, 3, size, size)
    dt = time.monotonic() - t0
    print(f"torch: {batches * bs / dt:.1f} images/s")


if __name__ == "__main__":
    main()
