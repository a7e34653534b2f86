"""Throughput of the dataset pipeline on the fixture trees of the four datasets.

Prints, per dataset: preprocessing speed (x real time per core: seconds of media per second of
one process), and DataModule throughput (clips/s) from the cache and from LitData chunks with 0
and 2 DataLoader workers (persistent, measured after a warm-up epoch). Faces: the fixtures' drawn faces use a fixed centred box instead of
MTCNN (the detector runs once per clip, on the first frame, so it adds a constant per clip).

    python -m benchmarks.datasets [--image-size 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from datamodules import face as facelib
from datamodules.combined import MODULES
from datamodules.preprocess import preprocess_clips
from datamodules.streaming import optimize_splits
from tests.datamodules import fixtures

BUILDERS = {"voxceleb": fixtures.build_voxceleb, "fakeavceleb": fixtures.build_fakeavceleb,
            "hdtf": fixtures.build_hdtf, "celebvhq": fixtures.build_celebvhq}


def _rate(loader, repeat: int) -> float:
    """Clips/s over ``repeat`` epochs, after one warm-up epoch (worker start-up is not counted)."""
    for _ in loader:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(repeat):
        for batch in loader:
            count += len(batch["key"])
    return count / (time.perf_counter() - start)


def bench(name: str, base: Path, image_size: int, repeat: int) -> dict:
    root = BUILDERS[name](base / name)
    cache = base / "cache" / name
    module = MODULES[name](root=str(root), cache_dir=str(cache), image_size=image_size, english_only=False,
                           num_frames=16, batch_size=1, num_workers=0)
    report = preprocess_clips(module.discover_sources(), cache, module.config, progress=False)
    row = {"x_realtime_per_core": report.media_seconds / max(report.seconds, 1e-9), "kept": report.num_kept}
    module.setup("fit")
    records = [{**r, "split": "train"} for r in module.streaming_records()]
    optimize_splits(records, cache, str(base / "chunks" / name), num_workers=1)
    for workers in (0, 2):
        module.num_workers = workers
        row[f"cache_w{workers}"] = _rate(module.train_dataloader(), repeat)
        streaming = MODULES[name](root=str(root), cache_dir=str(cache), streaming_dir=str(base / "chunks" / name),
                                  num_frames=16, batch_size=1, num_workers=workers)
        streaming.setup("fit")
        row[f"litdata_w{workers}"] = _rate(streaming.train_dataloader(), repeat)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="epochs over the train split per measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    facelib.detect_face = fixtures.fake_detect_face
    print(f"{'dataset':12s} {'kept':>4s} {'xRT/core':>9s} {'cache w0':>9s} {'cache w2':>9s} {'lit w0':>8s} {'lit w2':>8s}"
          "   (clips/s)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in BUILDERS:
            r = bench(name, Path(tmp), args.image_size, args.repeat)
            print(f"{name:12s} {r['kept']:4d} {r['x_realtime_per_core']:9.2f} {r['cache_w0']:9.1f} {r['cache_w2']:9.1f} "
                  f"{r['litdata_w0']:8.1f} {r['litdata_w2']:8.1f}", flush=True)


if __name__ == "__main__":
    main()
