"""Score generated talking-face clips with the paper's metric suite and lay out its tables.

Paired mode (ground truth available)::

    python -m experiments.evaluate --pred gen/ --gt test/ --out results/ --dataset HDTF --name nfy \
        [--transcripts transcripts.json] [--ratings ratings.csv]

No-reference mode (generated clips only: FID/FVD/KVD/FVMD/FAD against ``--ref-set``, LSE,
WER against ``--transcripts``, DNSMOS)::

    python -m experiments.evaluate --pred gen/ --no-ref --ref-set real/ --transcripts t.json --out results/

WER transcribes the generated speech with ``--asr`` (see :func:`metrics.asr.make_recognizer`):
``pocketsphinx`` (default, offline), a Whisper registry name such as ``whisper_base_en``
(OpenAI's checkpoint in ``$NFY_CACHE``, needs ``pip install 'nfy[whisper]'``), a hub id or a
``save_pretrained`` folder. ``summary.json`` names it under ``wer_recognizer``.

Generated and ground-truth clips (.mp4, .mov, .m4v, .mkv, .webm, .avi in any letter case) are
paired by file name without letter case and extension (``Upper.MP4`` pairs with ``upper.mp4``);
files that do not pair, several files sharing one name, and non-video files are listed. Every
clip is decoded with :mod:`datamodules.media` at 25 fps and 16 kHz; before scoring, a pair is cut
to its common length and the generated frames are resized to the ground truth's size. Metrics
whose weights or packages are missing are skipped and listed with the reason. A clip that
cannot be decoded or scored is recorded with its reason and the run goes on; a clip without an
audio (video) track loses only its audio (video) metrics. Outputs in ``--out`` (mode 0666 minus
the umask):

* ``per_clip.csv``: one row per clip: a column per per-clip value, what was done to the pair
  (frames and audio samples cut, size resized from, frame rate converted), missing tracks and
  ``excluded`` reasons;
* ``summary.json`` (strict JSON: a non-finite value is ``null``): final values, clips per value,
  the reason behind every missing value, conventions, failures, skipped metrics, unpaired files;
* ``tables.md`` / ``tables.tex``: the paper's Tables 1-5 with its rows and ours beside them,
  units, clip counts, and a footnoted reason for every "-".

Where the work runs: ``--device cuda`` (or ``cuda:N``, ``mps``; default ``cpu``) moves every metric
network (Inception, I3D, PIPs++, LPIPS' AlexNet, VGGish, the speaker encoder, SyncNet and the face
detector, Whisper) and PSNR/SSIM to that device, with the frames they read. ``--workers N``
(default ``min(4, cores)``) decodes the clips in N processes, which also score the metrics that run
library code on the CPU (PESQ, STOI, ESTOI, both MCDs, DNSMOS, PocketSphinx; on a CPU device every
per-clip metric) a few clips ahead of this process; the results are those of ``--workers 1``.
``--metric-option KEY.NAME=VALUE`` passes a constructor argument to one metric (VALUE as JSON, e.g.
``fvmd.window_stride=16``: FVMD on every 16th window only, faster but not the published FVMD).
``summary.json`` says where the clips were scored under ``scored_on``.

PSNR: a frame identical to its ground truth has infinite PSNR. The aggregate caps every frame
at 100 dB (libvpx's ``MAX_PSNR``, x264) before the means; ``per_clip.csv`` keeps the uncapped
``psnr`` beside ``psnr_capped``, and ``summary.json`` names the convention under ``conventions``.

The paper's MOS columns are human ratings: they are filled only from ``--ratings`` (a CSV with
``clip,mos_video,mos_audio`` columns, averaged, or a JSON object ``{"mos_video": ...}``).
DNSMOS, a predicted MOS, has its own column.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.devices import check_device
from common.files import write_text_atomic
from common.workers import exit_with_parent
from datamodules.conventions import FPS, SAMPLE_RATE
from datamodules.media import MediaError, probe, read_audio, read_video
from metrics.functional.image_quality import PSNR_CAP_DB
from metrics.paper_tables import (
    DATASETS,
    RESULT_TABLES,
    TABLES,
    OurRow,
    render_latex,
    render_markdown,
)
from metrics.suite import SPECS, SUITE, Clip, MetricSuite, align_pair, alignment_report

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
"""File name endings read as clips, in any letter case."""


def clip_key(name: str) -> str:
    """Pairing key of a file name: lower case, without a video extension (``"Upper.MP4"`` -> ``"upper"``)."""
    lower = name.lower()
    for ext in VIDEO_EXTENSIONS:
        if lower.endswith(ext):
            return lower[: -len(ext)]
    return lower


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def list_clips(folder: Path) -> dict[str, Path]:
    """``{file name: path}`` of the video files in ``folder`` (:data:`VIDEO_EXTENSIONS`, any case; not recursive)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and _is_video(p)}


def ignored_files(folder: Path) -> list[str]:
    """Paths of the files in ``folder`` that are not read as clips (hidden files left out)."""
    return [str(p) for p in sorted(folder.iterdir()) if p.is_file() and not _is_video(p) and not p.name.startswith(".")]


class Pairing(NamedTuple):
    """Generated and ground-truth clips matched by :func:`clip_key`.

    Attributes:
        pairs: ``(generated file name, generated path, ground-truth path)``.
        pred_only: generated file names without ground truth.
        gt_only: ground-truth file names without a generated clip.
        ambiguous: paths of files that share a key with another file of the same folder
            (``a.mp4`` and ``A.mov``): none of them is paired.
        ignored: paths of files that are not videos.
    """

    pairs: list[tuple[str, Path, Path]]
    pred_only: list[str]
    gt_only: list[str]
    ambiguous: list[str]
    ignored: list[str]


def _by_key(clips: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    groups: dict[str, list[Path]] = {}
    for path in clips.values():
        groups.setdefault(clip_key(path.name), []).append(path)
    unique = {key: paths[0] for key, paths in groups.items() if len(paths) == 1}
    return unique, sorted(str(p) for paths in groups.values() if len(paths) > 1 for p in paths)


def pair_clips(pred_dir: Path, gt_dir: Path) -> Pairing:
    """Pair generated and ground-truth clips by file name, ignoring letter case and the video extension."""
    pred, pred_ambiguous = _by_key(list_clips(pred_dir))
    gt, gt_ambiguous = _by_key(list_clips(gt_dir))
    pairs = sorted(((pred[k].name, pred[k], gt[k]) for k in pred.keys() & gt.keys()), key=lambda p: clip_key(p[0]))
    return Pairing(
        pairs,
        sorted(pred[k].name for k in pred.keys() - gt.keys()),
        sorted(gt[k].name for k in gt.keys() - pred.keys()),
        pred_ambiguous + gt_ambiguous,
        ignored_files(pred_dir) + ignored_files(gt_dir),
    )


def load_clip(path: Path) -> Clip:
    """Decode ``path``: ``(T, 3, H, W)`` uint8 RGB at 25 fps and ``(S,)`` float32 at 16 kHz.

    A file without a video track, or without a (non-empty) audio track, gives ``None`` for it:
    only the metrics that need that track leave the clip out.

    Raises:
        MediaError: unreadable file, or neither a video nor an audio track.
    """
    video = wav = None
    try:
        frames = read_video(path, fps=FPS)  # (T, H, W, 3) uint8
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    except MediaError as err:
        if err.reason != "no_video":
            raise
    try:
        wav = torch.from_numpy(read_audio(path, sample_rate=SAMPLE_RATE))  # (S,) float32
    except MediaError as err:
        if err.reason not in ("no_audio", "empty"):
            raise
    if video is None and wav is None:
        raise MediaError(path, "empty", "neither a video nor an audio track")
    return Clip(video, wav)


def load_transcripts(path: Path | None) -> dict[str, str]:
    """``{clip key: text}`` from JSON ``{"a.mp4": "text"}`` or ``{"a.mp4": {"text": ...}}`` (see :func:`clip_key`)."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise TypeError(f"--transcripts {path}: expected a JSON object of clip name -> text, got {type(data).__name__}")
    return {clip_key(name): (entry["text"] if isinstance(entry, dict) else str(entry)) for name, entry in data.items()}


def load_ratings(path: Path | None) -> tuple[dict[str, float], dict[str, int]]:
    """Human MOS ratings: mean ``mos_video``/``mos_audio`` from a CSV (one row per rating) or a JSON object.

    Returns:
        The means, and per key how many clips were rated (distinct ``clip`` values of the CSV,
        or its rows without that column; none for JSON, which gives only means).
    """
    if path is None:
        return {}, {}
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return {k: float(data[k]) for k in ("mos_video", "mos_audio") if k in data}, {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    means, counts = {}, {}
    for key in ("mos_video", "mos_audio"):
        rated = [r for r in rows if r.get(key) not in (None, "")]
        if rated:
            means[key] = sum(float(r[key]) for r in rated) / len(rated)
            counts[key] = len({r["clip"] for r in rated}) if "clip" in rated[0] else len(rated)
    if not means:
        raise ValueError(f"--ratings {path}: no mos_video or mos_audio column with values")
    return means, counts


# --------------------------------------------------------------------------------------------
# Outputs (written atomically with common.files: a crash never leaves half a file)
# --------------------------------------------------------------------------------------------

ALIGNMENT_COLUMNS = (
    "pred_frames_cut", "gt_frames_cut", "pred_resized_from", "pred_fps_converted", "gt_fps_converted",
    "pred_audio_samples_cut", "gt_audio_samples_cut",
)
"""per_clip.csv columns (paired mode) saying what was done to a pair before scoring (:func:`_adjustments`)."""


def per_clip_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text: ``clip`` (``gt_clip``), ``status``, value columns in suite order, what was cut or
    converted (paired mode), ``missing_tracks``, ``excluded``."""
    paired = any("gt_clip" in r for r in rows)
    value_cols = sorted({k for r in rows for k in r["values"]}, key=_column_order)
    info_cols = [*(ALIGNMENT_COLUMNS if paired else ("pred_fps_converted",)), "missing_tracks"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["clip", *(["gt_clip"] if paired else []), "status", *value_cols, *info_cols, "excluded"])
    for r in rows:
        excluded = "; ".join(f"{k}: {v}" for k, v in r["excluded"].items())
        info = [_csv_value(r.get("adjustments", {}).get(c)) for c in info_cols]
        writer.writerow([r["clip"], *([r.get("gt_clip", "")] if paired else []), r["status"],
                         *[_csv_value(r["values"].get(c)) for c in value_cols], *info, excluded])
    return buf.getvalue()


def _column_order(column: str) -> int:
    order = [col for spec in SPECS.values() for col in spec.outputs]
    order.insert(order.index("lse_d") + 1, "lse_offset")
    order.insert(order.index("psnr") + 1, "psnr_capped")
    return order.index(column) if column in order else len(order)


def _csv_value(value: float | str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def render_tables(ours: OurRow) -> tuple[str, str]:
    """Markdown and LaTeX of the paper's Tables 1-5 with our row."""
    md = [render_markdown(TABLES[n], ours) for n in RESULT_TABLES]
    tex = [render_latex(TABLES[n], ours) for n in RESULT_TABLES]
    return "\n".join(md), "\n".join(tex)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _fps_conversion(path: Path) -> str:
    """``"30->25"`` when the file's frame rate is not the 25 fps it is decoded at, else ``""``."""
    fps = probe(path).fps
    return "" if fps is None or abs(fps - FPS) < 1e-3 else f"{fps:g}->{FPS:g}"


def _missing_tracks(pred: Clip, gt: Clip | None) -> str:
    sides = [("pred", pred), ("gt", gt)] if gt is not None else [("pred", pred)]
    return "; ".join(f"{side} {track}" for side, clip in sides for track, data in (("video", clip.video), ("audio", clip.wav))
                     if data is None)


def _adjustments(pred_path: Path, gt_path: Path | None, pred: Clip, gt: Clip | None) -> dict[str, Any]:
    """What was cut, resized or converted in a pair, and which tracks are missing (per_clip.csv columns)."""
    found: dict[str, Any] = {"pred_fps_converted": _fps_conversion(pred_path), "missing_tracks": _missing_tracks(pred, gt)}
    if gt is not None and gt_path is not None:
        found.update(alignment_report(pred, gt), gt_fps_converted=_fps_conversion(gt_path))
    return found


# --------------------------------------------------------------------------------------------
# Decoding and the CPU-bound metrics in worker processes (a DataLoader's), the rest here
# --------------------------------------------------------------------------------------------


def default_workers() -> int:
    """``min(4, cores this process may use)``: the default of ``--workers``."""
    from metrics.functional.parallel import default_workers as cores

    return min(4, cores())


def check_workers(workers: Any, argument: str = "workers") -> int:
    """``workers`` if it is an integer >= 1; else ValueError naming ``argument`` and the value."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"{argument}={workers!r}: expected an integer >= 1 (processes that decode the clips and score "
                         "the CPU-bound metrics; 1 scores in this process)")
    return workers


class _Scored(NamedTuple):
    """One clip as :class:`_ClipScorer` hands it over: its row so far, the decoded pair (the tracks
    this process still reads), the CPU-bound metrics' values, refusals and states."""

    row: dict[str, Any]
    pred: Clip | None
    gt: Clip | None
    values: dict[str, float]
    refused: dict[str, str]
    states: dict[str, dict[str, Any]]


class _ClipScorer(Dataset):
    """Item ``i``: clip ``i`` (and its ground truth) decoded, paired and scored by ``suite.worker_keys``.

    Made in a worker process when there are several (forked: the suite, its overrides and its
    recogniser are inherited, not pickled), which builds its own :meth:`MetricSuite.worker_suite`.
    """

    def __init__(self, jobs: list[tuple[str, Path, Path | None]], texts: dict[str, str], suite: MetricSuite) -> None:
        self.jobs, self.texts = jobs, texts
        self._make_suite = suite.worker_suite
        self._suite: MetricSuite | None = None
        self._built = False
        modalities = {SPECS[key].modality for key in suite.device_keys}
        self._keep_video = bool(modalities & {"video", "audio-visual"})  # what is read here travels back
        self._keep_wav = bool(modalities & {"audio", "audio-visual"})

    def __len__(self) -> int:
        return len(self.jobs)

    def _worker_suite(self) -> MetricSuite | None:
        if not self._built:
            self._suite, self._built = self._make_suite(), True
        return self._suite

    def _kept(self, clip: Clip | None) -> Clip | None:
        if clip is None:
            return None
        return Clip(clip.video if self._keep_video else None, clip.wav if self._keep_wav else None)

    def __getitem__(self, index: int) -> _Scored:
        name, pred_path, gt_path = self.jobs[index]
        row: dict[str, Any] = {"clip": name, "status": "ok", "values": {}, "excluded": {}}
        if gt_path is not None:
            row["gt_clip"] = gt_path.name
        try:
            pred = load_clip(pred_path)
            gt = load_clip(gt_path) if gt_path is not None else None
            row["adjustments"] = _adjustments(pred_path, gt_path, pred, gt)
        except MediaError as err:
            row.update(status="failed", reason=str(err))
            return _Scored(row, None, None, {}, {}, {})
        if gt is not None:  # cut and resized once, here, for the metrics of both processes
            pred, gt = align_pair(pred, gt)
        values, refused, states = {}, {}, {}
        suite = self._worker_suite()
        if suite is not None:
            with _one_thread():
                values, refused = suite.update(pred, gt, self.texts.get(clip_key(name)))
            states = suite.take_states()
        return _Scored(row, self._kept(pred), self._kept(gt), values, refused, states)


class _Decoded(Dataset):
    """Item ``i``: ``(name, clip, None)`` of the ``i``-th of ``clips``, or ``(name, None, why)`` if it cannot be decoded."""

    def __init__(self, clips: list[tuple[str, Path]]) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[str, Clip | None, str | None]:
        name, path = self.clips[index]
        try:
            return name, load_clip(path), None
        except MediaError as err:
            return name, None, str(err)


def _as_is(item: Any) -> Any:
    return item


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One BLAS, OpenMP and torch thread, in a worker or in this process.

    Sums split over another number of threads are added in another order (librosa's mel filters
    through BLAS differ in the 10th digit), so the CPU-bound metrics always run on one thread: the
    results do not depend on ``workers``. pystoi and the like are faster so anyway.
    """
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def _init_worker(parent_pid: int, worker_id: int) -> None:
    """A worker ends with the process that started it (see :mod:`common.workers`)."""
    exit_with_parent(parent_pid)


def _loader(dataset: Dataset, workers: int) -> DataLoader:
    """The items of ``dataset`` in order: made here (``workers`` 1) or by ``workers`` forked processes, two each ahead."""
    if workers <= 1:
        return DataLoader(dataset, batch_size=None, collate_fn=_as_is)
    return DataLoader(dataset, batch_size=None, collate_fn=_as_is, num_workers=workers,
                      multiprocessing_context="fork" if os.name == "posix" else None,
                      worker_init_fn=functools.partial(_init_worker, os.getpid()))


def _finish_row(suite: MetricSuite, scored: _Scored, text: str | None) -> dict[str, Any]:
    """Add a worker's states and score the device metrics here; a clip no metric could score is a failure."""
    row = scored.row
    if row["status"] != "ok":
        return row
    suite.add_states(scored.states)
    values, refused = dict(scored.values), dict(scored.refused)
    if suite.device_keys:
        here, refused_here = suite.update(scored.pred, scored.gt, text, keys=suite.device_keys)
        values.update(here)
        refused.update(refused_here)
    row["values"], row["excluded"] = values, suite.in_order(refused)
    if not values and refused:
        row.update(status="failed", reason="; ".join(f"{k}: {v}" for k, v in row["excluded"].items()))
    return row


def _score_clips(suite: MetricSuite, jobs: list[tuple[str, Path, Path | None]], texts: dict[str, str],
                 workers: int) -> list[dict[str, Any]]:
    """One row per job, in order (see :func:`_finish_row`)."""
    loader = _loader(_ClipScorer(jobs, texts, suite), workers)
    return [_finish_row(suite, scored, texts.get(clip_key(scored.row["clip"])))
            for scored in tqdm(loader, total=len(jobs), desc="scoring", unit="clip")]


def _add_reference_set(suite: MetricSuite, ref_dir: Path, workers: int) -> tuple[list[dict[str, str]], int]:
    """Feed the real clips of ``ref_dir``; returns the clips (or their metrics) left out, and how many went in."""
    failures, added = [], 0
    clips = list(list_clips(ref_dir).items())
    for name, clip, error in tqdm(_loader(_Decoded(clips), workers), total=len(clips), desc="reference set", unit="clip"):
        if error is not None:
            failures.append({"clip": name, "reason": error})
            continue
        try:
            refused = suite.add_reference(clip)
        except (ValueError, RuntimeError) as err:
            failures.append({"clip": name, "reason": str(err)})
            continue
        added += 1
        failures += [{"clip": name, "reason": f"{key}: {reason}"} for key, reason in refused.items()]
    return failures, added


def evaluate(
    pred_dir: Path,
    out_dir: Path,
    gt_dir: Path | None = None,
    ref_set: Path | None = None,
    transcripts: Path | None = None,
    ratings: Path | None = None,
    dataset: str | None = None,
    name: str = "nfy",
    metrics: Sequence[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    recognizer: Any = None,
    device: str | torch.device = "cpu",
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the suite over a folder of generated clips and write the outputs (module docstring).

    Args:
        pred_dir: generated clips.
        out_dir: created if needed.
        gt_dir: ground-truth clips with the same file names (letter case and video extension
            aside); ``None`` is no-reference mode.
        ref_set: no-reference mode: real clips for the distribution metrics.
        transcripts: JSON of clip name -> text (WER).
        ratings: human MOS ratings (CSV or JSON).
        dataset: block of Tables 1/3 (one of ``metrics.paper_tables.DATASETS``).
        name: label of our row in the tables.
        metrics: keys of ``metrics.suite.SUITE`` to run (default: all available).
        overrides: per metric key, constructor arguments (e.g. injected networks).
        recognizer: ASR for WER: a recogniser object or a :func:`metrics.asr.make_recognizer`
            spec such as ``"whisper_base_en"`` (default: PocketSphinx).
        device: where the metric networks and PSNR/SSIM run (cpu, cuda, cuda:N, mps).
        workers: processes that decode the clips and score the CPU-bound metrics (default
            :func:`default_workers`; 1 does everything in this process).

    Returns:
        The summary written to ``summary.json`` (non-finite values as ``None``).

    Raises:
        ValueError: ``device`` is not on this machine, ``workers`` is not an integer >= 1, or an
            unknown ``dataset``: before any clip is read.
    """
    device = check_device(device)
    workers = default_workers() if workers is None else check_workers(workers)
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    texts = load_transcripts(transcripts)
    human, rated = load_ratings(ratings)
    paired = gt_dir is not None
    if paired:
        pairing = pair_clips(Path(pred_dir), Path(gt_dir))
        jobs: list[tuple[str, Path, Path | None]] = list(pairing.pairs)
    else:
        pairing = Pairing([], [], [], [], ignored_files(Path(pred_dir)))
        jobs = [(n, p, None) for n, p in list_clips(Path(pred_dir)).items()]
    suite = MetricSuite(list(metrics) if metrics else None, paired, ref_set is not None, bool(texts), overrides, recognizer,
                        device)
    with_refs = ref_set is not None and not paired
    ref_failures, ref_count = _add_reference_set(suite, Path(ref_set), workers) if with_refs else ([], 0)
    rows = _score_clips(suite, jobs, texts, workers)
    results, failed_metrics = suite.compute()
    results.update(human)
    scored_on = {"device": str(device), "workers": workers, "in_workers": sorted(suite.worker_keys)}
    run = _Run(rows, results, suite, failed_metrics, pairing, ref_failures, ref_count, paired, rated, ratings is not None,
               scored_on)
    summary = _summary(run, dataset, name)
    _write_outputs(Path(out_dir), rows, summary, our_row(summary))
    return _json_safe(summary)


class _Run(NamedTuple):
    """Everything a run produced, for the summary and the tables."""

    rows: list[dict[str, Any]]
    results: dict[str, float]
    suite: MetricSuite
    failed_metrics: dict[str, str]
    pairing: Pairing
    ref_failures: list[dict[str, str]]
    ref_count: int
    paired: bool
    rated: dict[str, int]
    ratings_given: bool
    scored_on: dict[str, Any]


def _psnr_convention(rows: list[dict[str, Any]]) -> dict[str, Any]:
    infinite = sum(1 for r in rows if math.isinf(r["values"].get("psnr", 0.0)))
    return {
        "name": "per-frame cap at 100 dB (libvpx MAX_PSNR, x264)",
        "cap_db": PSNR_CAP_DB,
        "rule": f"each frame's PSNR is capped at {PSNR_CAP_DB:g} dB before the mean per clip and the mean over "
                "clips, so a frame identical to its ground truth counts 100 dB instead of making the mean "
                "infinite; per_clip.csv keeps the uncapped value (psnr, inf for such a clip) beside the capped "
                "one (psnr_capped) that the mean averages",
        "clips_with_infinite_psnr": infinite,
    }


def _column_counts(run: _Run) -> dict[str, int | str]:
    """Per result key, the clips behind the value (generated vs real in no-reference mode)."""
    counts: dict[str, int | str] = {}
    for key in run.suite.metrics:
        spec = SPECS[key]
        if spec.kind == "per_clip":
            counts.update({col: sum(1 for r in run.rows if col in r["values"]) for col in spec.outputs})
        else:
            n = sum(1 for r in run.rows if r["status"] == "ok" and key not in r["excluded"])
            counts[key] = n if run.paired else f"{n} vs {run.ref_count} real"
    counts.update({key: f"{n} rated" for key, n in run.rated.items()})
    return counts


_METRIC_OF_COLUMN = {col: spec.key for spec in SUITE for col in spec.outputs}
_TABLE_KEYS = sorted({c.key for n in RESULT_TABLES for c in TABLES[n].columns + TABLES[n].extra_columns})


def _missing_reason(key: str, value: float | None, run: _Run, counts: dict[str, int | str]) -> str:
    if key in ("mos_video", "mos_audio"):
        if run.ratings_given:
            return f"human ratings: the --ratings file has no {key} values"
        return "human ratings: give --ratings FILE (CSV with clip,mos_video,mos_audio columns)"
    metric = _METRIC_OF_COLUMN[key]
    if metric in run.suite.skipped:
        return run.suite.skipped[metric]
    if metric not in run.suite.metrics:
        return "not requested (--metrics)"
    if counts.get(key) == 0:
        return "no clip could be scored (see the excluded column of per_clip.csv)"
    if metric in run.failed_metrics:
        return f"could not be computed: {run.failed_metrics[metric]}"
    return f"not finite ({value})" if value is not None and not math.isnan(value) else "no value"


def _missing_results(run: _Run, counts: dict[str, int | str]) -> dict[str, str]:
    """Why each table column has no finite value."""
    missing = {}
    for key in _TABLE_KEYS:
        value = run.results.get(key)
        if value is None or not math.isfinite(value):
            missing[key] = _missing_reason(key, value, run, counts)
    return missing


def _summary(run: _Run, dataset: str | None, name: str) -> dict[str, Any]:
    failures = [{"clip": r["clip"], "reason": r["reason"]} for r in run.rows if r["status"] == "failed"]
    exclusions: dict[str, int] = {}
    for r in run.rows:
        for key in r["excluded"]:
            exclusions[key] = exclusions.get(key, 0) + 1
    lse = run.suite.metrics.get("lse")  # None when LSE was not run
    counts = _column_counts(run)
    return {
        "name": name,
        "dataset": dataset,
        "mode": "paired" if run.paired else "no-reference",
        "num_clips": len(run.rows),
        "num_scored": len(run.rows) - len(failures),
        "num_failed": len(failures),
        "failures": failures,
        "exclusions_per_metric": exclusions,
        "unpaired": {"pred_only": run.pairing.pred_only, "gt_only": run.pairing.gt_only, "ambiguous": run.pairing.ambiguous},
        "ignored_files": run.pairing.ignored,
        "reference_set_failures": run.ref_failures,
        "metrics_run": sorted(run.suite.metrics),
        "metrics_skipped": run.suite.skipped,
        "metrics_failed": run.failed_metrics,
        "face_detector": sorted(getattr(lse, "detectors_used", ())),
        "wer_recognizer": run.suite.recognizer_description,
        "conventions": {"psnr": _psnr_convention(run.rows)} if "psnr" in run.suite.metrics else {},
        "results": {k: (v if math.isfinite(v) else None) for k, v in run.results.items()},
        "results_missing": _missing_results(run, counts),
        "clips_per_result": counts,
        "scored_on": run.scored_on,
    }


def our_row(summary: dict[str, Any], name: str | None = None, dataset: str | None = None,
            tag: str = "ours") -> OurRow:
    """The tables' row of a run from its ``summary.json`` content (values, clip counts, reasons, PSNR note).

    Args:
        summary: what :func:`evaluate` returned or wrote.
        name: row label (default: the run's ``name``).
        dataset: test set of the row (default: the run's ``dataset``); any name, also one the
            paper does not use.
        tag: printed after the name (``"ours"``; ``"scored here"`` for a baseline's videos).
    """
    notes = {}
    psnr = summary["conventions"].get("psnr")
    if psnr is not None:
        notes["psnr"] = (f"each frame's PSNR capped at {psnr['cap_db']:g} dB before averaging (libvpx/x264); "
                         f"{psnr['clips_with_infinite_psnr']} of {summary['clips_per_result'].get('psnr', 0)} clips have a "
                         "frame identical to the ground truth (uncapped PSNR inf, kept in per_clip.csv)")
    return OurRow(summary["results"], name or summary["name"], dataset or summary["dataset"], summary["num_scored"],
                  summary["clips_per_result"], summary["results_missing"], notes, tag=tag)


def _write_outputs(out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any], ours: OurRow) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "per_clip.csv", per_clip_csv(rows))
    write_text_atomic(out_dir / "summary.json", json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    md, tex = render_tables(ours)
    write_text_atomic(out_dir / "tables.md", md)
    write_text_atomic(out_dir / "tables.tex", tex)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder of generated mp4s")
    parser.add_argument("--gt", type=Path, help="folder of ground-truth mp4s (same file names)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-ref", action="store_true", help="generated clips only, no ground truth")
    parser.add_argument("--ref-set", type=Path, help="no-ref mode: real clips for FID/FVD/KVD/FVMD/FAD")
    parser.add_argument("--transcripts", type=Path, help="JSON of clip name -> text (WER)")
    parser.add_argument("--ratings", type=Path, help="human MOS ratings: CSV clip,mos_video,mos_audio or JSON")
    parser.add_argument("--dataset", choices=DATASETS, help="block of Tables 1 and 3")
    parser.add_argument("--name", default="nfy", help="label of our row in the tables")
    parser.add_argument("--metrics", help=f"comma-separated subset of {','.join(SPECS)}")
    parser.add_argument("--asr", default="pocketsphinx",
                        help="recogniser for WER: pocketsphinx, a Whisper registry name (whisper_base_en, ...), "
                        "an OpenAI .pt file, a hub id or a save_pretrained folder")
    parser.add_argument("--device", default="cpu",
                        help="where the metric networks and PSNR/SSIM run: cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--workers", type=int,
                        help="processes that decode the clips and score PESQ, STOI, ESTOI, MCD, DNSMOS and PocketSphinx "
                        "(on a CPU device every per-clip metric); default min(4, cores), 1: all in this process")
    parser.add_argument("--metric-option", action="append", default=[], metavar="KEY.NAME=VALUE",
                        help="a constructor argument of one metric, VALUE read as JSON (else a string), repeatable; "
                        "e.g. fvmd.window_stride=16 (faster, not the published FVMD)")
    args = parser.parse_args(argv)
    if args.no_ref == (args.gt is not None):
        parser.error("give either --gt DIR (paired mode) or --no-ref")
    if args.ref_set is not None and not args.no_ref:
        parser.error("--ref-set is for --no-ref mode; in paired mode the ground truth is the real set")
    return args


def _print_unpaired(summary: dict[str, Any]) -> None:
    lists = (
        ("unpaired, no ground truth", summary["unpaired"]["pred_only"]),
        ("unpaired, no generated clip", summary["unpaired"]["gt_only"]),
        ("unpaired, several files share one name (case and extension ignored)", summary["unpaired"]["ambiguous"]),
        (f"ignored, not a video file ({' '.join(VIDEO_EXTENSIONS)})", summary["ignored_files"]),
    )
    for what, names in lists:
        if names:
            print(f"  {what}: {', '.join(names)}")


def metric_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["fvmd.window_stride=16"]`` -> ``{"fvmd": {"window_stride": 16}}`` (VALUE read as JSON, else kept as text).

    Raises:
        ValueError: an item that is not ``KEY.NAME=VALUE`` with ``KEY`` a metric of the suite.
    """
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        target, equals, text = item.partition("=")
        key, dot, name = target.partition(".")
        if not (equals and dot and name.isidentifier()):
            raise ValueError(f"--metric-option {item!r}: expected KEY.NAME=VALUE, e.g. fvmd.window_stride=16")
        if key not in SPECS:
            raise ValueError(f"--metric-option {item!r}: unknown metric {key!r}; known: {', '.join(SPECS)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options.setdefault(key, {})[name] = value
    return options


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: run :func:`evaluate` and print where the outputs are and what was skipped.

    A device this machine lacks, a bad ``--workers`` or ``--metric-option``: one ``error:`` line on
    stderr and exit status 2, before any clip is read.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        device = check_device(args.device, "--device")
        workers = default_workers() if args.workers is None else check_workers(args.workers, "--workers")
        overrides = metric_options(args.metric_option)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = evaluate(
        args.pred, args.out, None if args.no_ref else args.gt, args.ref_set, args.transcripts, args.ratings,
        args.dataset, args.name, args.metrics.split(",") if args.metrics else None, overrides or None,
        recognizer=args.asr, device=device, workers=workers,
    )
    print(f"scored {summary['num_scored']}/{summary['num_clips']} clips on {device} with {workers} worker "
          f"process(es); failed: {summary['num_failed']}")
    for failure in summary["failures"]:
        print(f"  failed {failure['clip']}: {failure['reason']}")
    for key, reason in summary["metrics_skipped"].items():
        print(f"  skipped {key}: {reason}")
    if summary["wer_recognizer"] is not None:
        print(f"  WER transcribed by {summary['wer_recognizer']}")
    _print_unpaired(summary)
    psnr = summary["conventions"].get("psnr")
    if psnr is not None:
        print(f"  psnr: {psnr['name']}; {psnr['clips_with_infinite_psnr']} clip(s) with a frame identical to the ground truth")
    for key, value in summary["results"].items():
        print(f"  {key:14s} {value if value is None else f'{value:.4f}'}")
    print(f"outputs in {args.out}: per_clip.csv, summary.json, tables.md, tables.tex")
    return summary


if __name__ == "__main__":
    main()
