"""Speed of the preprocessing core and of the cached-clip DataLoader.

Prints three tables:

1. preprocessing speed at image sizes 256 and 512 as "x real time per core": seconds of media
   processed / (wall seconds x cores used); also per CPU second (load-independent, since the
   machine may be shared) and the one-off MTCNN start-up, which is left out of the timing;
2. quality of the cache: PSNR of the cached H.264 frames against the uncompressed crop (source
   frame -> RGB -> crop -> bilinear resize, the reference path of :mod:`datamodules.face`),
   and the cache's video size in MB per minute of media;
3. DataLoader throughput in clips/s (batches of the contract, 2 clips each) with 0 and 2 workers,
   over the clips just preprocessed, with the dataset class the DataModules use.

Clips: the real ones in ``../shared/data/clips`` (default) or a demo corpus (``--root``).
The machine's load average and core count are printed next to the figures. Target: at least
5x real time per core at 512.

Usage: ``python benchmarks/preprocess.py [--root data/demo] [--sizes 256 512] [--workers 0]
[--limit 20] [--keep DIR] [--preset superfast] [--crf 18] [--keyframe-interval 50] [--no-quality]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datamodules.preprocess import PreprocessConfig, load_manifest, preprocess_clips  # noqa: E402
from datamodules.sources import ClipSource  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = 5.0


def shared_sources(folder: Path) -> list[ClipSource]:
    """The real sample clips, transcripts from ``transcripts.json``."""
    texts = json.loads((folder / "clips" / "transcripts.json").read_text())
    return [ClipSource(key=Path(name).stem, video_path=str(folder / "clips" / name), speaker=Path(name).stem,
                       dataset="shared", transcript=entry["text"].lower(), split="train")
            for name, entry in sorted(texts.items())]


def demo_sources(root: Path) -> list[ClipSource]:
    """Clips of the demo corpus at ``root`` (built if absent)."""
    from datamodules.demo import DemoDataModule
    from datamodules.demo_corpus import ensure_demo_corpus

    ensure_demo_corpus(root)
    return DemoDataModule(root=str(root)).sources()


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_preprocessing(sources: list[ClipSource], cache: Path, config: PreprocessConfig, workers: int) -> dict:
    """Preprocess ``sources`` with ``config`` into a fresh ``cache``; wall/CPU seconds and media seconds."""
    shutil.rmtree(cache, ignore_errors=True)
    size = config.image_size
    cpu, wall = _cpu_seconds(), time.perf_counter()
    report = preprocess_clips(sources, cache, config, num_workers=workers, progress=False)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    cores = max(1, workers)
    return {"size": size, "clips": report.num_kept, "rejected": report.num_rejected, "media_s": report.media_seconds,
            "wall_s": wall, "cpu_s": cpu, "cores": cores,
            "x_rt_per_core": report.media_seconds / (wall * cores), "x_rt_per_cpu_s": report.media_seconds / cpu}


def _crop_resize(image: np.ndarray, crop: tuple[int, int, int, int], size: int) -> np.ndarray:
    from datamodules.face import crop_square, resize_image

    return resize_image(crop_square(image, crop), size)


def cache_quality(sources: list[ClipSource], cache: Path) -> dict:
    """PSNR (dB, over all frames of all clips) of the cached video against the uncompressed crop.

    The reference is cut from the source with the clip's own crop box in RGB (``crop_square``
    + ``resize_image``), so the figure covers both the YUV crop/scale path and H.264.
    """
    from datamodules.media import iter_video_frames, read_video
    from datamodules.preprocess import CachedClip, clip_folder

    squared, count, video_bytes, media_s = 0.0, 0, 0, 0.0
    for source in sources:
        folder = clip_folder(cache, source)
        if not (folder / "meta.json").is_file():
            continue
        clip = CachedClip(folder)
        meta, crop = clip.meta, tuple(clip.meta["crop_box"])
        cached = read_video(folder / "video.mp4")[: clip.num_frames].astype(np.float64)  # (T, S, S, 3)
        cut = functools.partial(_crop_resize, crop=crop, size=int(meta["image_size"]))
        reference = iter_video_frames(source.video_path, start=meta["start"], transform=cut)
        for image, ours in zip(reference, cached):
            squared += float(np.mean((image.astype(np.float64) - ours) ** 2))
            count += 1
        video_bytes += (folder / "video.mp4").stat().st_size
        media_s += float(meta["duration"])
    mse = squared / max(count, 1)
    return {"psnr": 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf"), "frames": count,
            "mb_per_min": video_bytes / 1e6 / (media_s / 60.0) if media_s else 0.0}


def time_loader(cache: Path, workers: int, batches: int, num_frames: int = 16) -> tuple[float, Optional[float]]:
    """Clips per second of a shuffled 2-clip-batch DataLoader over the preprocessed ``cache``.

    Returns:
        ``(clips per wall second, clips per CPU second)``; the second only with 0 workers (the
        loading then runs in this process, whose CPU time is known while it runs).
    """
    from torch.utils.data import DataLoader

    from datamodules.batch import collate, validate_batch
    from datamodules.samples import CachedClipDataset
    from datamodules.tokenizer import train_tokenizer

    records = load_manifest(cache)
    tokenizer = train_tokenizer([r["transcript"] or "a" for r in records], 300)
    ids = [[i for i in tokenizer.encode(r["transcript"] or "a").ids if i] for r in records]
    dataset = CachedClipDataset(records, cache, ids, num_frames=num_frames, motion_frames=2, random_window=True)
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    clips, started, cpu, seen = 0, None, 0.0, 0
    while seen < batches + 1:
        for batch in loader:
            if started is None:  # the first batch pays the worker start-up
                validate_batch(batch)
                started, cpu = time.perf_counter(), time.process_time()
            else:
                clips += len(batch["key"])
            seen += 1
            if seen >= batches + 1:
                break
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return clips / wall, (clips / cpu if workers == 0 else None)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Preprocessing and DataLoader speed")
    parser.add_argument("--root", type=Path, default=None, help="demo corpus (default: the shared real clips)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, default=0, help="preprocessing processes (0 = this one)")
    parser.add_argument("--limit", type=int, default=20, help="at most this many clips")
    parser.add_argument("--batches", type=int, default=10, help="DataLoader batches timed per setting")
    parser.add_argument("--keep", type=Path, default=None, help="keep the caches here (default: a temp dir)")
    defaults = PreprocessConfig()
    parser.add_argument("--preset", default=defaults.preset, help="x264 preset of the cached video")
    parser.add_argument("--crf", type=int, default=defaults.crf, help="x264 crf of the cached video")
    parser.add_argument("--keyframe-interval", type=int, default=defaults.keyframe_interval,
                        help="frames between keyframes of the cached video (0: x264's 250)")
    parser.add_argument("--no-quality", action="store_true", help="skip the PSNR of the cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sources = (demo_sources(args.root) if args.root else shared_sources(SHARED))[: args.limit]
    work = args.keep or Path(tempfile.mkdtemp(prefix="nfy-bench-"))
    load_before = os.getloadavg()

    from datamodules.face import get_detector

    started = time.perf_counter()
    get_detector()
    print(f"MTCNN start-up (once per process, not timed below): {time.perf_counter() - started:.2f} s")
    configs = [PreprocessConfig(image_size=size, preset=args.preset, crf=args.crf,
                                keyframe_interval=args.keyframe_interval or None) for size in args.sizes]
    rows = [time_preprocessing(sources, work / str(c.image_size), c, args.workers) for c in configs]
    print(f"\npreprocessing: {len(sources)} clips from {args.root or SHARED / 'clips'}, "
          f"{args.workers} workers, x264 {args.preset} crf {args.crf} keyframe interval "
          f"{args.keyframe_interval or 250}, target >= {TARGET:.0f}x real time per core at 512")
    print(f"{'size':>5} {'clips':>5} {'media s':>8} {'wall s':>7} {'cpu s':>6} {'x RT/core':>9} {'x RT/cpu-s':>10}")
    for r in rows:
        print(f"{r['size']:>5} {r['clips']:>5} {r['media_s']:>8.1f} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
              f"{r['x_rt_per_core']:>9.2f} {r['x_rt_per_cpu_s']:>10.2f}")
    if not args.no_quality:
        print("\ncache quality: PSNR of the cached video vs the uncompressed RGB crop")
        print(f"{'size':>5} {'frames':>6} {'PSNR dB':>8} {'MB/min':>7}")
        for size in args.sizes:
            q = cache_quality(sources, work / str(size))
            print(f"{size:>5} {q['frames']:>6} {q['psnr']:>8.2f} {q['mb_per_min']:>7.1f}")
    print(f"\nDataLoader (CachedClipDataset, 2-clip batches, 18-frame windows, {args.batches} batches)")
    print(f"{'size':>5} {'workers':>7} {'clips/s':>8} {'clips/cpu-s':>11}")
    for size in args.sizes:
        for workers in (0, 2):
            per_s, per_cpu_s = time_loader(work / str(size), workers, args.batches)
            print(f"{size:>5} {workers:>7} {per_s:>8.1f} {'-' if per_cpu_s is None else f'{per_cpu_s:.1f}':>11}")
    load_after = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} cores; load average (1/5/15 min) before "
          f"{'/'.join(f'{v:.1f}' for v in load_before)}, after {'/'.join(f'{v:.1f}' for v in load_after)}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
