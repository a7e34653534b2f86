"""Throughput of the dataset pipeline on the fixture trees of the four datasets.

Prints, per dataset: preprocessing speed (x real time per core: seconds of media per second of
one process), and DataModule throughput (clips/s) from the cache and from LitData chunks with 0
and 2 DataLoader workers (fresh loaders, timed from their first batch). Faces: the fixtures' drawn faces use a fixed centred box instead of
MTCNN (the detector runs once per clip, on the first frame, so it adds a constant per clip).

    python -m benchmarks.datasets [--image-size 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from torch.utils.data import ConcatDataset, DataLoader

from datamodules import face as facelib
from datamodules.batch import collate
from datamodules.combined import MODULES
from datamodules.preprocess import preprocess_clips
from datamodules.streaming import optimize_splits
from tests.datamodules import fixtures

BUILDERS = {"voxceleb": fixtures.build_voxceleb, "fakeavceleb": fixtures.build_fakeavceleb,
            "hdtf": fixtures.build_hdtf, "celebvhq": fixtures.build_celebvhq}


def _rate(make_loader, repeat: int) -> float:
    """Clips/s over ``repeat`` epochs, each on a fresh loader, timed from its first batch (no start-up)."""
    count, seconds = 0, 0.0
    for _ in range(repeat):
        start = None
        for batch in make_loader():
            if start is None:
                start = time.perf_counter()
                continue
            count += len(batch["key"])
        seconds += time.perf_counter() - start
    return count / max(seconds, 1e-9)


def bench(name: str, base: Path, image_size: int, repeat: int) -> dict:
    root = BUILDERS[name](base / name)
    cache = base / "cache" / name
    module = MODULES[name](root=str(root), cache_dir=str(cache), image_size=image_size, english_only=False,
                           num_frames=16, batch_size=1, num_workers=0)
    report = preprocess_clips(module.discover_sources(), cache, module.config, progress=False)
    row = {"x_realtime_per_core": report.media_seconds / max(report.seconds, 1e-9), "kept": report.num_kept}
    module.prepare_data()  # the clips are cached already: this trains the tokenizer, which setup only reads
    module.setup("fit")
    train = module.datasets["train"]
    module.datasets["train"] = ConcatDataset([train] * 8)  # longer epochs over the few fixture clips
    for workers in (0, 2):  # from the cache first: PyAV decoding after litdata.optimize has stalled here
        row[f"cache_w{workers}"] = _rate(lambda: DataLoader(module.datasets["train"], batch_size=1, collate_fn=collate,
                                                            num_workers=workers), repeat)
    records = [{**r, "split": "train"} for r in module.streaming_records()]
    optimize_splits(records, cache, str(base / "chunks" / name), num_workers=1)
    for workers in (0, 2):
        streaming = MODULES[name](root=str(root), cache_dir=str(cache), streaming_dir=str(base / "chunks" / name),
                                  num_frames=16, batch_size=1, num_workers=workers)
        streaming.setup("fit")
        row[f"litdata_w{workers}"] = _rate(lambda: DataLoader(streaming.datasets["train"], batch_size=1,
                                                              collate_fn=collate, num_workers=workers), repeat * 8)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="epochs over the train split per measurement")
    parser.add_argument("--datasets", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    facelib.detect_face = fixtures.fake_detect_face
    print(f"{'dataset':12s} {'kept':>4s} {'xRT/core':>9s} {'cache w0':>9s} {'cache w2':>9s} {'lit w0':>8s} {'lit w2':>8s}"
          "   (clips/s)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            r = bench(name, Path(tmp), args.image_size, args.repeat)
            print(f"{name:12s} {r['kept']:4d} {r['x_realtime_per_core']:9.2f} {r['cache_w0']:9.1f} {r['cache_w2']:9.1f} "
                  f"{r['litdata_w0']:8.1f} {r['litdata_w2']:8.1f}", flush=True)


if __name__ == "__main__":
    main()
