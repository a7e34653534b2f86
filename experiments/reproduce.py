"""Reproduce the paper's Tables 1-7 from checkpoints and the test splits of their datasets, in one command.

Command line::

    python -m experiments.reproduce --ckpt ete=ete.ckpt [--ckpt ste=ste.ckpt --ckpt dc_off=dc_off.ckpt ...] \\
        --out results/ [--datasets hdtf,voxceleb | demo] [--limit 20] [--baseline hallo=hallo_outputs/ ...] \\
        [--steps 25 --guidance 1.0 --seed 0 --device cuda --batch-size 4 --metrics psnr,ssim,... --asr whisper_base_en] \\
        [--workers 16]

For each checkpoint (``NAME=PATH``; the name is its config: ``ete``, ``ste``, ``dc_off`` ...) and
each test split its DataModule names (the DataModule config that training saved in the
checkpoint: the demo corpus, or any of VoxCeleb, FakeAVCeleb, CelebV-HQ and HDTF), the run:

1. checks every input before any generation starts: the checkpoint files, the DataModules they
   name, the dataset roots, the test splits (present, not empty, the same clips for every
   checkpoint), the ``--baseline`` folders and the options; a problem stops the command with
   one line ``error: ...`` and exit code 2;
2. takes the test clips by the paper's protocol (Sec. 4.1): each clip's first 20 s as
   preprocessed into the DataModule's cache, its first frame (of the source video) as the source
   image, its first 2 s of speech as the voice profile and its transcript as the prompt text; the
   ground truth is the preprocessed clip (face crop, 25 fps, 16 kHz) as an mp4;
3. generates every clip with the pipeline and input checks of :mod:`experiments.generate`, as
   long as its ground truth (``--length clip``, the protocol; ``--length model`` lets the stop head
   end each sentence), ``--batch-size`` clips per pipeline call (default 4; a clip comes out the
   same in any batch; a progress bar of clips per checkpoint and test set). Clips are written atomically, so after a kill the next run keeps every clip already
   written and makes only the others; a clip that fails is listed with its reason and the run goes
   on (a batch that fails is redone clip by clip, so that only the failing clip is lost);
4. scores each folder against the ground truth with :func:`experiments.evaluate.evaluate` (the
   whole metric suite, or ``--metrics``); a folder whose clips did not change since it was last
   scored keeps its scores;
5. writes Tables 1-7 in the paper's layout (:mod:`metrics.paper_tables`).

Outputs in ``--out``:

* ``tables.md``, ``tables.tex``: Tables 1-7; the paper's rows with ours beside them; Tables 1 and 3
  with a block per test set (the paper's four, then any other such as ``demo``); Tables 2, 4 and 5
  with a row per test set; Tables 6 and 7 with a row per ablation config on one test set
  (VoxCeleb, the paper's, when it was run). Every "-" carries the reason (missing weights, human
  ratings not given, missing checkpoint, test set not run), and the notes give clip counts and
  failed clips;
* ``tables.csv``: the same cells, one record per table cell (:data:`metrics.paper_tables.CSV_FIELDS`),
  with unrounded values;
* ``failures.csv``: ``model,dataset,clip,stage,reason`` for every clip that could not be generated
  or scored;
* ``reproduce.json``: per checkpoint and test set, clips generated, kept from an earlier run and
  failed; the test sets; the options; the seconds spent on ground truth, generation and scoring;
* ``test_sets/<dataset>/ground_truth/<key>.mp4`` and ``clips.json`` (key, text, frames, source
  video and time of each clip), ``transcripts.json`` (for WER);
* ``generated/<name>/<dataset>/<key>.mp4``: our clips;
* ``scores/<name>/<dataset>/``: :mod:`experiments.evaluate`'s ``per_clip.csv``, ``summary.json``,
  ``tables.md``/``.tex`` for that one folder.

``--baseline NAME=DIR`` scores someone else's videos on the same clips (files named ``<key>.mp4``,
in ``DIR/<dataset>/`` when that folder exists, else in ``DIR``) and adds their row to Tables 1-5.

The generated clip's length is the model's: :func:`experiments.generate.generate` speaks the text
until its stop head fires and takes no target length, so each pair is cut to the shorter of the
two before scoring (``per_clip.csv`` records the frames cut).

Batches and seeds: ``--batch-size 1`` gives exactly what :func:`experiments.generate.generate` gives
with ``--seed``. In a batch a clip depends on its batch in two ways, both of the pipeline and the
network: one noise tensor per video window is drawn for all rows from one generator seeded with
``--seed``, so a clip's diffusion noise depends on its place in the batch (and so on which clips
an earlier, killed run had already written); and the speech decoder numbers its positions after
the padded text, so a clip whose text is shorter than the batch's longest speaks slightly
differently than alone (training batches are padded the same way). Its inputs and the cut at its
own length do not depend on the batch.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from common.files import write_text_atomic
from datamodules.clip_dataset import ClipDataModule
from datamodules.conventions import FPS, SAMPLE_RATE
from datamodules.demo import DemoDataModule
from datamodules.media import MediaError, Mp4Writer, iter_frames, iter_video_frames
from datamodules.preprocess import CachedClip
from experiments import generate as gen
from experiments.evaluate import evaluate, list_clips, our_row
from lightning_modules.checkpoint import CheckpointError, check_checkpoint
from metrics.paper_tables import (
    ABLATION_CONFIGS,
    ABLATION_TABLES,
    ABLATION_TEST_SET,
    DATASETS,
    RESULT_TABLES,
    TABLES,
    OurRow,
    render_csv,
    render_latex,
    render_markdown,
)

log = logging.getLogger(__name__)

TEST_SETS: dict[str, str] = {"voxceleb": "VoxCeleb", "fakeavceleb": "FakeAVCeleb", "celebvhq": "CelebV-HQ",
                             "hdtf": "HDTF", "demo": "demo"}
"""``--datasets`` names -> the test set's name in the tables (the paper's four blocks, and the demo corpus)."""
MAIN_MODEL = "ete"
"""The checkpoint shown in Tables 1-5 (the paper's proposed model); else the first ``--ckpt``."""
DEFAULT_BATCH_SIZE = 4
"""Clips per pipeline call (``--batch-size``); a batch that fails (e.g. out of memory) is redone clip by clip."""
BATCH_SIZE_EXPECTED = "an integer >= 1 (clips per pipeline call)"
WORKERS_EXPECTED = "an integer >= 1 (processes that decode and score the clips)"
LENGTHS: tuple[str, ...] = ("clip", "model")
"""How long each generated clip is: its ground truth's length (the protocol), or the model's own."""
BASELINE_TAG = "scored here"
"""What a baseline row is called in the tables: someone else's videos, scored by our code on our clips."""


class ReproduceInputError(ValueError):
    """An input the command cannot use; the message names the option, the value and what was expected."""

    def __init__(self, option: str, value: Any, expected: str) -> None:
        self.option, self.value, self.expected = option, value, expected
        super().__init__(f"{option} {value}: {expected}")


# --------------------------------------------------------------------------------------------
# Test sets: the clips of a checkpoint's DataModule's test splits
# --------------------------------------------------------------------------------------------


@dataclass
class TestClip:
    """One test clip by the paper's protocol.

    Attributes:
        key: clip key (file name of its ground truth and generated mp4).
        text: the prompt text (the clip's transcript).
        num_frames: frames of the preprocessed clip (at most 20 s at 25 fps).
        folder: the preprocessed clip folder (ground-truth frames and audio).
        source_video: the original video; its frame at ``start`` is the source image.
        start: second of ``source_video`` where the clip starts.
        face_box: [x0, y0, x1, y1] of the face in the source frame (pixels).
        landmarks: 5 x [x, y] in the source frame (eyes, nose, mouth corners).
    """

    key: str
    text: str
    num_frames: int
    folder: str
    source_video: str
    start: float
    face_box: list[float]
    landmarks: list[list[float]]


@dataclass
class TestSet:
    """The test clips of one dataset, as one checkpoint's DataModule names them."""

    name: str
    clips: list[TestClip] = field(default_factory=list)

    @property
    def label(self) -> str:
        return TEST_SETS.get(self.name, self.name)


def load_datamodule(name: str, path: Path) -> Any:
    """The DataModule that training saved in checkpoint ``path`` (its class and init arguments).

    Raises:
        ReproduceInputError: unreadable checkpoint, no DataModule config in it, or one that
            cannot be built.
    """
    option, who = "--ckpt", f"{name}={path}"
    try:  # the tokenizer is a pickled object, hence weights_only=False (as in experiments.generate)
        state = check_checkpoint(path, weights_only=False)
    except CheckpointError as err:
        raise ReproduceInputError(option, who, f"a checkpoint written by experiments.fit; {err}") from err
    saved = dict(state.get("datamodule_hyper_parameters") or {})
    class_path = saved.get("_class_path")
    if class_path is None:
        raise ReproduceInputError(option, who, "a checkpoint that names its DataModule "
                                  "(datamodule_hyper_parameters with _class_path, as experiments.fit saves it)")
    try:
        module, _, cls_name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        return cls(**{k: v for k, v in saved.items() if not k.startswith("_")})
    except Exception as err:  # any failure to rebuild it is the checkpoint's DataModule config's
        raise ReproduceInputError(option, who, f"a DataModule config that can be built; {class_path}: "
                                  f"{err}") from err


def dataset_modules(datamodule: Any, who: str) -> dict[str, Any]:
    """``{dataset name: DataModule}`` of a DataModule: the parts of a combined one, or itself.

    Raises:
        ReproduceInputError: a DataModule that serves no clips of a dataset (e.g. generated batches).
    """
    parts = getattr(datamodule, "modules", None)
    if isinstance(parts, Mapping):
        return dict(parts)
    if isinstance(datamodule, DemoDataModule):
        return {"demo": datamodule}
    if isinstance(datamodule, ClipDataModule):
        return {datamodule.dataset_name: datamodule}
    raise ReproduceInputError("--ckpt", who, f"a DataModule of datamodules/ (demo corpus or a dataset); "
                              f"{type(datamodule).__name__} has no test split of preprocessed clips to generate from")


def check_roots(who: str, parts: Mapping[str, Any]) -> None:
    """Every dataset root the DataModule names must exist (before its test split is read)."""
    for dataset, part in parts.items():
        root = getattr(part, "root", None)
        if root is not None and not Path(root).is_dir():
            raise ReproduceInputError("--ckpt", who, f"its DataModule names the {dataset} dataset root "
                                      f"{str(root)!r}, which is not there (a folder on this machine was expected)")


def read_test_set(who: str, dataset: str, datamodule: Any, limit: int | None) -> TestSet:
    """The test clips of ``dataset`` after ``datamodule.setup``, sorted by key, the first ``limit``.

    Raises:
        ReproduceInputError: no test split of clip records, or an empty one.
    """
    part = dataset_modules(datamodule, who)[dataset]
    split = getattr(part, "datasets", {}).get("test")
    records = getattr(split, "records", None)
    if split is None or records is None:
        raise ReproduceInputError("--ckpt", who, f"the {dataset} DataModule ({type(part).__name__}) has "
                                  "no test split of preprocessed clips (expected datasets['test'] with records after "
                                  "setup(), as the datamodules/ DataModules give; a LitData streaming_dir is not read)")
    if len(records) == 0:
        raise ReproduceInputError("--ckpt", who, f"a test split with clips; the {dataset} test split is empty (no "
                                  f"test clip in "
                                  f"{getattr(part, 'cache_dir', '?')}/manifest.jsonl)")
    cache = Path(part.cache_dir)
    clips = [_test_clip(cache, group) for group in _by_clip(records)]
    return TestSet(dataset, sorted(clips, key=lambda c: c.key)[:limit])


def _by_clip(records: Sequence[dict]) -> list[list[dict]]:
    """Records grouped per clip (real datasets give one record per utterance), utterances in order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["dataset"], record["key"]), []).append(record)
    return [sorted(group, key=lambda r: r.get("utterance_index", 0)) for group in groups.values()]


def _test_clip(cache: Path, group: list[dict]) -> TestClip:
    """The protocol's inputs of one clip from its manifest record(s)."""
    first = group[0]
    if "utterance" in first:  # real datasets: the Whisper transcript, cut into utterances
        text = " ".join(str(r["utterance"][2]).strip() for r in group if r["utterance"][2])
    else:
        text = first.get("transcript") or ""
    box, marks = _source_face(first)
    return TestClip(first["key"], text, int(first["num_frames"]), str(cache / first["path"]),
                    str(first["video_path"]), float(first.get("start") or 0.0), box, marks)


def _source_face(record: dict) -> tuple[list[float], list[list[float]]]:
    """Face box and landmarks in source pixels: as given by the dataset, else mapped back from the crop.

    Preprocessing stores the box it cropped with (``crop_box``, source pixels) and the face in
    crop pixels; mapping those back gives :func:`experiments.generate.generate` the same crop.
    """
    crop = np.asarray(record["crop_box"], np.float64)
    scale = (crop[2] - crop[0]) / float(record["image_size"])
    box = record.get("face_box")
    if box is None:
        box = (np.asarray(record["face_box_crop"], np.float64).reshape(2, 2) * scale + crop[:2]).reshape(4).tolist()
    marks = record.get("landmarks")
    if marks is None:
        marks = (np.asarray(record["landmarks_crop"], np.float64) * scale + crop[:2]).tolist()
    return [float(v) for v in box], [[float(x), float(y)] for x, y in marks]


# --------------------------------------------------------------------------------------------
# The plan: every input checked before any generation
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the run does: per checkpoint the test sets it runs and why it runs no other; the baselines."""

    checkpoints: dict[str, Path]
    test_sets: dict[str, TestSet]
    runs: dict[str, list[str]]
    not_run: dict[str, dict[str, str]]
    baselines: dict[str, Path]


def plan_run(checkpoints: Mapping[str, Any], datasets: Sequence[str] | None, limit: int | None,
             baselines: Mapping[str, Any]) -> Plan:
    """Check every input and read the test sets; nothing is generated or written.

    Raises:
        ReproduceInputError: the first unusable input (see the module docstring).
    """
    _check_simple_inputs(checkpoints, datasets, limit, baselines)
    plan = Plan({n: Path(p) for n, p in checkpoints.items()}, {}, {}, {}, {n: Path(d) for n, d in baselines.items()})
    named = set()
    for name, path in plan.checkpoints.items():
        who = f"{name}={path}"
        datamodule = load_datamodule(name, path)
        parts = dataset_modules(datamodule, who)
        named |= set(parts)
        chosen = [d for d in parts if datasets is None or d in datasets]
        plan.not_run[name] = {d: _why_not_run(d, parts, datasets) for d in TEST_SETS if d not in chosen}
        check_roots(who, {d: parts[d] for d in chosen})
        if chosen:
            _setup(who, datamodule)
        plan.runs[name] = chosen
        for dataset in chosen:
            _add_test_set(plan, who, read_test_set(who, dataset, datamodule, limit))
    if not any(plan.runs.values()):
        raise ReproduceInputError("--datasets", ",".join(datasets or []), f"a test set that a checkpoint's "
                                  f"DataModule names; they name {', '.join(sorted(named))}")
    return plan


def _check_simple_inputs(checkpoints, datasets, limit, baselines) -> None:
    if not checkpoints:
        raise ReproduceInputError("--ckpt", "(none)", "at least one NAME=PATH checkpoint")
    if limit is not None and not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
        raise ReproduceInputError("--limit", limit, "an integer >= 1 (clips per test set)")
    for dataset in datasets or []:
        if dataset not in TEST_SETS:
            raise ReproduceInputError("--datasets", dataset, f"one of {', '.join(TEST_SETS)}")
    for name, folder in baselines.items():
        if not Path(folder).is_dir():
            raise ReproduceInputError("--baseline", f"{name}={folder}", "an existing folder of generated mp4s "
                                      "(<key>.mp4, or <dataset>/<key>.mp4)")


def _why_not_run(dataset: str, parts: Mapping[str, Any], datasets: Sequence[str] | None) -> str:
    if dataset in parts:
        return f"not run: --datasets selects {','.join(datasets or [])}"
    return f"no {TEST_SETS[dataset]} test set: the checkpoint's DataModule names {', '.join(parts)}"


def _setup(who: str, datamodule: Any) -> None:
    """``setup('test')``: reads the preprocessed manifests (training's ``prepare_data`` wrote them)."""
    try:
        datamodule.setup("test")
    except (OSError, ValueError) as err:  # FileNotFoundError: no manifest or tokenizer; ValueError: a bad one
        raise ReproduceInputError("--ckpt", who, f"a DataModule with a preprocessed cache ({err}); run "
                                  "python -m experiments.prepare (or training) on the dataset first") from err


def _add_test_set(plan: Plan, who: str, found: TestSet) -> None:
    """Keep one test set per dataset: every checkpoint must be scored on the same clips."""
    known = plan.test_sets.setdefault(found.name, found)
    if [c.key for c in known.clips] != [c.key for c in found.clips]:
        raise ReproduceInputError("--ckpt", who, f"the same {found.name} test clips as the other "
                                  "checkpoints (their DataModules differ: different roots, caches or splits)")


# --------------------------------------------------------------------------------------------
# Ground truth and generation
# --------------------------------------------------------------------------------------------


def write_test_set(test_set: TestSet, folder: Path) -> Path:
    """The ground-truth mp4s, ``clips.json`` and ``transcripts.json`` of a test set; returns the mp4 folder.

    A ground-truth file already there is kept (written atomically, it is complete); one of a clip
    outside the test set is removed, so that only the test set's clips pair with generated ones.
    """
    gt = folder / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    wanted = {f"{clip.key}.mp4" for clip in test_set.clips}
    for stale in (p for p in gt.iterdir() if p.name not in wanted):  # an earlier run's larger --limit
        stale.unlink()  # derived from the cache, cheap to make again; generated clips beside it are kept
    for clip in tqdm(test_set.clips, desc=f"ground truth {test_set.name}", unit="clip"):
        if not (gt / f"{clip.key}.mp4").is_file():
            _write_ground_truth(clip, gt / f"{clip.key}.mp4")
    records = [{**asdict(clip)} for clip in test_set.clips]
    write_text_atomic(folder / "clips.json", json.dumps(records, indent=1) + "\n")
    transcripts = {f"{clip.key}.mp4": clip.text for clip in test_set.clips}
    write_text_atomic(folder / "transcripts.json", json.dumps(transcripts, indent=1) + "\n")
    return gt


def _write_ground_truth(clip: TestClip, path: Path) -> None:
    """The preprocessed clip (cropped frames, no re-crop) with its speech, as one mp4."""
    cached = CachedClip(clip.folder)
    size = int(cached.meta["image_size"])
    with Mp4Writer(path, size, size, fps=FPS, sample_rate=SAMPLE_RATE) as writer:
        for frame in iter_frames(cached.folder / "video.mp4", fps=FPS):
            writer.write(frame)
        writer.write_audio(cached.wav())


@dataclass
class GenerationOptions:
    """What every clip is generated with (see :func:`experiments.generate.generate`).

    ``batch_size`` clips share one pipeline call (:func:`experiments.generate.generate_rows`); a clip
    comes out the same in any batch. ``length``: ``"clip"`` (the protocol) makes each clip as long
    as its ground truth (the speech of each sentence spoken at its share of the clip's frames);
    ``"model"`` lets the stop head end each sentence (the pairs are then cut to the shorter when
    scored, recorded in per_clip.csv).
    """

    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH_SIZE
    length: str = "clip"


def generate_clips(module: Any, clips: Sequence[TestClip], folder: Path, options: GenerationOptions,
                   desc: str) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Generate every clip of ``clips`` that ``folder`` lacks, ``options.batch_size`` per pipeline call.

    Returns:
        ``{"clips", "generated", "kept", "failed"}`` and ``[{"clip", "reason"}]``.
    """
    counts = {"clips": len(clips), "generated": 0, "kept": 0, "failed": 0}
    failures = []
    with tqdm(total=len(clips), desc=desc, unit="clip") as bar:
        todo = [clip for clip in clips if not (folder / f"{clip.key}.mp4").is_file()]  # written atomically: complete
        counts["kept"] = len(clips) - len(todo)
        bar.update(counts["kept"])
        for start in range(0, len(todo), options.batch_size):
            batch = todo[start : start + options.batch_size]
            errors = generate_batch(module, batch, folder, options)
            for clip in batch:
                err = errors.get(clip.key)
                if err is None:
                    counts["generated"] += 1
                else:
                    log.debug("%s: %s", clip.key, err, exc_info=err)
                    counts["failed"] += 1
                    failures.append({"clip": clip.key, "reason": f"{type(err).__name__}: {err}"})
                    log.warning("%s: %s failed: %s", desc, clip.key, err)
            bar.update(len(batch))
    return counts, failures


def generate_batch(module: Any, clips: Sequence[TestClip], folder: Path,
                   options: GenerationOptions) -> dict[str, Exception]:
    """Generate ``clips`` in one pipeline call and write ``folder/<key>.mp4``; returns the errors by key.

    A clip whose inputs cannot be prepared is left out of the call; when the call itself fails
    (one clip's bad input, memory), every clip not yet written is redone alone with
    :func:`generate_clip`, so that one clip's failure costs no other clip.
    """
    errors: dict[str, Exception] = {}
    ready: dict[str, tuple[TestClip, gen.PreparedClip]] = {}
    for clip in clips:
        try:
            ready[clip.key] = (clip, prepare_clip(module, clip, options.length))
        except Exception as err:  # one clip must not end a run of hundreds; Ctrl-C (BaseException) still does
            errors[clip.key] = err
    if len(ready) > 1:
        try:
            _write_rows(module, list(ready.values()), folder, options)
            return errors
        except Exception as err:
            log.warning("a batch of %d clips failed (%s: %s); generating them one by one", len(ready),
                        type(err).__name__, err)
    for key, (clip, _) in ready.items():
        path = folder / f"{key}.mp4"
        if path.is_file():  # written before the batch failed
            continue
        try:
            generate_clip(module, clip, path, options)
        except Exception as err:
            errors[key] = err
    return errors


def _write_rows(module: Any, rows: list[tuple[TestClip, gen.PreparedClip]], folder: Path,
                options: GenerationOptions) -> None:
    """One :func:`experiments.generate.generate_rows` call on ``rows``, each clip written atomically."""
    sampling = gen.resolve_sampling(module, options.num_inference_steps, options.guidance_scale)
    outputs = gen.generate_rows(module, [inputs for _, inputs in rows], sampling, options.seed)
    folder.mkdir(parents=True, exist_ok=True)
    for (clip, _), (frames, wav) in zip(rows, outputs, strict=True):
        gen.write_clip(folder / f"{clip.key}.mp4", frames, wav)


def prepare_clip(module: Any, clip: TestClip, length: str = "clip") -> gen.PreparedClip:
    """The model inputs of one clip by the protocol, checked as :func:`experiments.generate.generate` checks
    them; ``length`` as in :class:`GenerationOptions`."""
    return gen.prepare_clip(module, module.tokenizer, source_image(clip), CachedClip(clip.folder).wav(), clip.text,
                            clip.face_box, clip.landmarks, num_frames=_frames(clip, length))


def _frames(clip: TestClip, length: str) -> int | None:
    """The video frames to generate ``clip`` at: its own with ``length="clip"``, else ``None`` (the model's)."""
    return clip.num_frames if length == "clip" else None


def source_image(clip: TestClip) -> np.ndarray:
    """(H, W, 3) uint8: the frame of the clip's source video where the clip starts.

    Raises:
        FileNotFoundError: the source video is gone.
        datamodules.media.MediaError: no frame there.
    """
    if not Path(clip.source_video).is_file():
        raise FileNotFoundError(f"source video {clip.source_video} of clip {clip.key} not found (its first "
                                "frame is the source image)")
    image = next(iter_video_frames(clip.source_video, fps=FPS, start=clip.start), None)
    if image is None:
        raise MediaError(clip.source_video, "empty", f"no frame at {clip.start:.2f} s")
    return image


def generate_clip(module: Any, clip: TestClip, path: Path, options: GenerationOptions) -> None:
    """One clip alone through :func:`experiments.generate.generate`: first frame, first 2 s of speech, the
    transcript, written to ``path`` (the path a batch falls back to)."""
    voice = CachedClip(clip.folder).wav()  # generate takes its first 2 s of speech as the voice profile
    gen.generate(module, source_image(clip), voice, clip.text, out=path,
                 num_inference_steps=options.num_inference_steps, guidance_scale=options.guidance_scale,
                 seed=options.seed, progress=False, face_box=clip.face_box, landmarks=clip.landmarks,
                 num_frames=_frames(clip, options.length))


# --------------------------------------------------------------------------------------------
# Scoring (experiments.evaluate), kept while its inputs do not change
# --------------------------------------------------------------------------------------------


@dataclass
class ScoreOptions:
    """What :func:`experiments.evaluate.evaluate` is called with besides the folders."""

    metrics: Sequence[str] | None = None
    overrides: dict[str, dict[str, Any]] | None = None
    recognizer: Any = None
    device: str = "cpu"
    workers: int | None = None


def score(pred: Path, gt: Path, out: Path, transcripts: Path, name: str, dataset: str,
          options: ScoreOptions) -> dict[str, Any]:
    """The evaluate summary of ``pred`` against ``gt``; a summary of the same inputs is reused.

    The inputs are the file names, sizes and modification times of both folders and the metric
    list; injected ``overrides`` (networks) cannot be compared, so a run with them always scores.
    """
    stamp = {"pred": _listing(pred), "gt": _listing(gt), "metrics": sorted(options.metrics or [])}
    done = out / "inputs.json"
    fresh = options.overrides is None and done.is_file() and (out / "summary.json").is_file()
    if fresh and json.loads(done.read_text()) == stamp:
        return json.loads((out / "summary.json").read_text())
    summary = evaluate(pred, out, gt_dir=gt, transcripts=transcripts, dataset=TEST_SETS.get(dataset) if
                       TEST_SETS.get(dataset) in DATASETS else None,
                       name=name, metrics=options.metrics, overrides=options.overrides, recognizer=options.recognizer,
                       device=options.device, workers=options.workers)
    write_text_atomic(done, json.dumps(stamp) + "\n")
    return summary


def _listing(folder: Path) -> list[list[Any]]:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in list_clips(folder).values()] if folder.is_dir() else []


def baseline_folder(folder: Path, test_set: TestSet) -> Path:
    """``DIR/<dataset>`` (or its table name) when it exists, else ``DIR`` itself."""
    for sub in (test_set.name, test_set.label):
        if (folder / sub).is_dir():
            return folder / sub
    return folder


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    """Rows of the tables: per (model, dataset) its row; per model its failures."""

    rows: dict[tuple[str, str], OurRow] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)


def _with_failures(row: OurRow, failures: list[dict[str, str]], clips: int) -> OurRow:
    """``row`` with a remark on its clips that failed (they are all in failures.csv)."""
    mine = [f for f in failures if f["model"] == row.name and f["dataset"] == row.dataset]
    if not mine:
        return row
    shown = "; ".join(f"{f['clip']} ({f['stage']}: {_short(f['reason'])})" for f in mine[:3])
    more = f" and {len(mine) - 3} more" if len(mine) > 3 else ""
    remark = f"{len(mine)} clip(s) failed of {clips}, listed in failures.csv: {shown}{more}"
    return replace(row, remarks=(*row.remarks, remark))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table_rows(number: int, plan: Plan, results: Results) -> tuple[list[OurRow], list[str] | None]:
    """Our rows of table ``number`` and its blocks (Tables 1 and 3).

    Tables 1-5 hold the main checkpoint (:data:`MAIN_MODEL`) and the baselines on every test set
    run; Tables 1 and 3 also show the paper's test sets that were not run, our row there saying why.
    """
    run = [d for d in TEST_SETS if d in plan.test_sets]  # in the paper's block order, demo last
    if number in ABLATION_TABLES:
        return _ablation_rows(number, plan, results, run), None
    main = MAIN_MODEL if MAIN_MODEL in plan.checkpoints else next(iter(plan.checkpoints))
    blocks = TABLES[number].has_blocks
    rows = []
    for dataset in (d for d in TEST_SETS if d in run or (blocks and TEST_SETS[d] in DATASETS)):
        rows.append(results.rows.get((main, dataset)) or _missing_row(plan, main, dataset))
        rows += [results.rows[(b, dataset)] for b in plan.baselines if (b, dataset) in results.rows]
    return rows, [*DATASETS, *(TEST_SETS[d] for d in run if TEST_SETS[d] not in DATASETS)] if blocks else None


def _missing_row(plan: Plan, name: str, dataset: str | None) -> OurRow:
    """An empty row of checkpoint ``name`` on ``dataset``, saying why it has no values."""
    label = TEST_SETS.get(dataset, ABLATION_TEST_SET)
    if name not in plan.checkpoints:
        train = f" (train it: python -m experiments.fit --config ete.yaml --config {name}.yaml)" if name != "ete" else ""
        return OurRow({}, name, label, missing=f"missing checkpoint: give --ckpt {name}=PATH{train}")
    return OurRow({}, name, label, missing=plan.not_run[name].get(dataset, "no test set was run"))


def _ablation_rows(number: int, plan: Plan, results: Results, run: list[str]) -> list[OurRow]:
    """One row per config of the table (and per checkpoint named by no ablation config) on one test set.

    The test set is VoxCeleb, the paper's, when it was run, else the first one run.
    """
    dataset = next((d for d in run if TEST_SETS[d] == ABLATION_TEST_SET), run[0] if run else None)
    configs = list(ABLATION_CONFIGS[number])
    known = {config for table in ABLATION_CONFIGS.values() for config in table}
    names = configs + [n for n in plan.checkpoints if n not in known]
    return [results.rows.get((name, dataset)) or _missing_row(plan, name, dataset) for name in names]


def write_tables(out: Path, plan: Plan, results: Results) -> None:
    """``tables.md``, ``tables.tex`` and ``tables.csv`` (Tables 1-7) in ``out``."""
    md, tex, rows_csv = [], [], []
    for number in (*RESULT_TABLES, *ABLATION_TABLES):
        rows, blocks = table_rows(number, plan, results)
        md.append(render_markdown(TABLES[number], rows, blocks))
        tex.append(render_latex(TABLES[number], rows, blocks))
        rows_csv.append(render_csv(TABLES[number], rows, blocks, header=number == 1))
    write_text_atomic(out / "tables.md", "\n".join(md))
    write_text_atomic(out / "tables.tex", "\n".join(tex))
    write_text_atomic(out / "tables.csv", "".join(rows_csv))


def write_failures(out: Path, failures: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["model", "dataset", "clip", "stage", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(failures)
    write_text_atomic(out / "failures.csv", buf.getvalue())


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def reproduce(
    checkpoints: Mapping[str, Any],
    out: Any,
    datasets: Sequence[str] | None = None,
    limit: int | None = None,
    baselines: Mapping[str, Any] | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    metrics: Sequence[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    recognizer: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    length: str = "clip",
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate, score and lay out the tables (module docstring); returns what ``reproduce.json`` holds.

    Args:
        checkpoints: config name (``ete``, ``ste``, ``dc_off`` ...) -> checkpoint path.
        out: output folder (created).
        datasets: ``--datasets`` names (:data:`TEST_SETS`) to run; default every test set named.
        limit: at most this many clips per test set (the first by key).
        baselines: row name -> folder of someone else's generated mp4s.
        steps, guidance, seed, device: generation options (default: the checkpoint's settings).
        batch_size: clips per pipeline call.
        length: ``"clip"`` (each clip at its ground truth's length, the protocol) or ``"model"``.
        metrics, overrides, recognizer: what :func:`experiments.evaluate.evaluate` gets.
        workers: scoring processes (``experiments.evaluate --workers``; default its own); the
            scoring runs on ``device`` too.

    Raises:
        ReproduceInputError: a bad input, before anything is generated.
        experiments.generate.GenerationInputError: a bad generation option, likewise.
    """
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ReproduceInputError("--batch-size", batch_size, BATCH_SIZE_EXPECTED)
    if length not in LENGTHS:
        raise ReproduceInputError("--length", length, f"one of {', '.join(LENGTHS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ReproduceInputError("--workers", workers, WORKERS_EXPECTED)
    options = GenerationOptions(steps, guidance, seed, str(gen.check_options(steps, guidance, seed, device)),
                                batch_size, length)
    plan = plan_run(checkpoints, datasets, limit, baselines or {})
    out, clock = Path(out), time.perf_counter()
    gt = {name: write_test_set(ts, out / "test_sets" / name) for name, ts in plan.test_sets.items()}
    results, report = Results(), {"generation": {}, "test_sets": {}, "options": asdict(options), "seconds": {}}
    report["seconds"]["ground_truth"], clock = time.perf_counter() - clock, time.perf_counter()
    for name, path in plan.checkpoints.items():
        report["generation"][name] = _generate_model(name, path, plan, out, options, results)
    report["seconds"]["generation"], clock = time.perf_counter() - clock, time.perf_counter()
    scoring = ScoreOptions(metrics, overrides, recognizer, options.device, workers)
    for name in plan.checkpoints:
        for dataset in plan.runs[name]:
            _score_into(results, name, out / "generated" / name / dataset, gt[dataset], out, plan, dataset, scoring)
    for name, folder in plan.baselines.items():
        for dataset, test_set in plan.test_sets.items():
            _score_into(results, name, baseline_folder(folder, test_set), gt[dataset], out, plan, dataset, scoring,
                        tag=BASELINE_TAG)
    report["seconds"]["scoring"] = time.perf_counter() - clock
    report["test_sets"] = {n: [c.key for c in ts.clips] for n, ts in plan.test_sets.items()}
    write_failures(out, results.failures)
    write_tables(out, plan, results)
    write_text_atomic(out / "reproduce.json", json.dumps(report, indent=1) + "\n")
    return report


def _generate_model(name: str, path: Path, plan: Plan, out: Path, options: GenerationOptions,
                    results: Results) -> dict[str, dict[str, int]]:
    """Generate every test set of one checkpoint (the model is loaded once, only if a clip is missing)."""
    counts = {}
    module = None
    for dataset in plan.runs[name]:
        clips, folder = plan.test_sets[dataset].clips, out / "generated" / name / dataset
        if module is None and any(not (folder / f"{c.key}.mp4").is_file() for c in clips):
            module, _ = gen.load_checkpoint(path, options.device)
        counts[dataset], failed = generate_clips(module, clips, folder, options, f"{name} {dataset}")
        results.failures += [{"model": name, "dataset": TEST_SETS.get(dataset, dataset), "stage": "generation", **f}
                             for f in failed]
    return counts


def _score_into(results: Results, name: str, pred: Path, gt: Path, out: Path, plan: Plan, dataset: str,
                options: ScoreOptions, tag: str = "ours") -> None:
    label = TEST_SETS.get(dataset, dataset)
    pred.mkdir(parents=True, exist_ok=True)  # a test set whose every clip failed has no folder yet
    summary = score(pred, gt, out / "scores" / name / dataset, gt.parent / "transcripts.json", name, dataset, options)
    results.failures += [{"model": name, "dataset": label, "clip": Path(f["clip"]).stem, "stage": "scoring",
                          "reason": f["reason"]} for f in summary["failures"]]
    row = our_row(summary, name, label, tag=tag)
    results.rows[(name, dataset)] = _with_failures(row, results.failures, len(plan.test_sets[dataset].clips))


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict; a value without a name, or a repeated name, is an error."""
    found: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ReproduceInputError(option, value, "NAME=PATH (e.g. ete=outputs/ete/last.ckpt)")
        if name in found:
            raise ReproduceInputError(option, value, f"one {option} per name; {name!r} is given twice")
        found[name] = rest
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", action="append", default=[], required=True,
                        help="NAME=PATH: a checkpoint named by its config (ete, ste, dc_off, ...); repeatable")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--datasets", help=f"comma-separated test sets to run, of {','.join(TEST_SETS)} "
                        "(default: every one the checkpoints' DataModules name)")
    parser.add_argument("--limit", help="at most this many clips per test set (a quick pass)")
    parser.add_argument("--baseline", action="append", default=[],
                        help="NAME=DIR: someone else's generated <key>.mp4 files, scored on the same clips")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per window (default: checkpoint's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or mps")
    parser.add_argument("--batch-size", default=str(DEFAULT_BATCH_SIZE),
                        help=f"clips per pipeline call (default {DEFAULT_BATCH_SIZE}; more on a GPU with memory "
                        "to spare)")
    parser.add_argument("--length", default="clip",
                        help="clip: each clip as long as its ground truth (the protocol; default); model: where "
                        "the stop head ends the speech")
    parser.add_argument("--metrics", help="comma-separated subset of the metric suite (default: all)")
    parser.add_argument("--asr", default="pocketsphinx", help="recogniser for WER (see experiments.evaluate)")
    parser.add_argument("--workers", help="processes that decode and score the clips (see experiments.evaluate; "
                        "default min(4, cores))")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    return parser.parse_args(argv)


def _integer(option: str, value: str | None, expected: str) -> int | None:
    """``value`` of the integer ``option`` as an int (``None`` stays ``None``; the range is checked later)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ReproduceInputError(option, value, expected) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status: 2 on bad input, with one line on stderr."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = reproduce(
            _pairs(args.ckpt, "--ckpt"), args.out, args.datasets.split(",") if args.datasets else None,
            _integer("--limit", args.limit, "an integer >= 1 (clips per test set)"), _pairs(args.baseline, "--baseline"), args.steps, args.guidance, args.seed,
            args.device, args.metrics.split(",") if args.metrics else None, recognizer=args.asr,
            batch_size=_integer("--batch-size", args.batch_size, BATCH_SIZE_EXPECTED), length=args.length,
            workers=_integer("--workers", args.workers, WORKERS_EXPECTED))
    except (ReproduceInputError, gen.GenerationInputError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, per_set in report["generation"].items():
        for dataset, counts in per_set.items():
            print(f"{name} {dataset}: {counts['generated']} generated, {counts['kept']} kept, "
                  f"{counts['failed']} failed of {counts['clips']}")
    print(f"outputs in {args.out}: tables.md, tables.tex, tables.csv, failures.csv, reproduce.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
