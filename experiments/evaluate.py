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

Generated and ground-truth mp4s are paired by file name (unpaired files are listed); every
clip is decoded with :mod:`datamodules.media` at 25 fps and 16 kHz. Metrics whose weights or
packages are missing are skipped and listed with the reason. A clip that cannot be decoded or
scored is recorded with its reason and the run goes on. Outputs in ``--out``:

* ``per_clip.csv``: one row per clip, a column per per-clip value, ``excluded`` reasons;
* ``summary.json``: final values, counts, failures, skipped metrics, unpaired files;
* ``tables.md`` / ``tables.tex``: the paper's Tables 1-5 with its rows and ours beside them.

The paper's MOS columns are human ratings: they are filled only from ``--ratings`` (a CSV with
``clip,mos_video,mos_audio`` columns, averaged, or a JSON object ``{"mos_video": ...}``).
DNSMOS, a predicted MOS, has its own column.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from datamodules.conventions import FPS, SAMPLE_RATE
from datamodules.media import MediaError, read_audio, read_video
from metrics.paper_tables import (
    DATASETS,
    RESULT_TABLES,
    TABLES,
    OurRow,
    render_latex,
    render_markdown,
)
from metrics.suite import SPECS, Clip, MetricSuite

log = logging.getLogger(__name__)

MIN_FRAMES = 1


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def list_clips(folder: Path) -> dict[str, Path]:
    """``{file name: path}`` of the ``.mp4`` files in ``folder`` (not recursive)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    return {p.name: p for p in sorted(folder.glob("*.mp4"))}


def pair_clips(pred_dir: Path, gt_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair generated and ground-truth mp4s by file name.

    Returns:
        ``(name, pred, gt)`` pairs, prediction names without ground truth, ground-truth names
        without prediction.
    """
    pred, gt = list_clips(pred_dir), list_clips(gt_dir)
    pairs = [(name, pred[name], gt[name]) for name in sorted(pred.keys() & gt.keys())]
    return pairs, sorted(pred.keys() - gt.keys()), sorted(gt.keys() - pred.keys())


def load_clip(path: Path) -> Clip:
    """Decode ``path``: ``(T, 3, H, W)`` uint8 RGB at 25 fps and ``(S,)`` float32 at 16 kHz.

    Raises:
        MediaError: unreadable file, no video/audio stream, or fewer than 1 frame.
    """
    frames = read_video(path, fps=FPS)  # (T, H, W, 3) uint8
    wav = read_audio(path, sample_rate=SAMPLE_RATE)  # (S,) float32
    if frames.shape[0] < MIN_FRAMES:
        raise MediaError(path, "empty", f"{frames.shape[0]} frames")
    return Clip(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(wav))


def load_transcripts(path: Path | None) -> dict[str, str]:
    """``{clip file name: text}`` from JSON: ``{"a.mp4": "text"}`` or ``{"a.mp4": {"text": ...}}``."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise TypeError(f"--transcripts {path}: expected a JSON object of clip name -> text, got {type(data).__name__}")
    return {name: (entry["text"] if isinstance(entry, dict) else str(entry)) for name, entry in data.items()}


def load_ratings(path: Path | None) -> dict[str, float]:
    """Human MOS ratings: mean ``mos_video``/``mos_audio`` from a CSV (one row per rating) or a JSON object."""
    if path is None:
        return {}
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return {k: float(data[k]) for k in ("mos_video", "mos_audio") if k in data}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for key in ("mos_video", "mos_audio"):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if values:
            out[key] = sum(values) / len(values)
    if not out:
        raise ValueError(f"--ratings {path}: no mos_video or mos_audio column with values")
    return out


# --------------------------------------------------------------------------------------------
# Outputs (written atomically: a crash never leaves half a file)
# --------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as handle:
        handle.write(text)
    os.replace(tmp, path)


def per_clip_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text: ``clip``, ``status``, value columns in suite order, ``excluded``."""
    value_cols = sorted({k for r in rows for k in r["values"]}, key=_column_order)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["clip", "status", *value_cols, "excluded"])
    for r in rows:
        excluded = "; ".join(f"{k}: {v}" for k, v in r["excluded"].items())
        writer.writerow([r["clip"], r["status"], *[_csv_value(r["values"].get(c)) for c in value_cols], excluded])
    return buf.getvalue()


def _column_order(column: str) -> int:
    order = [col for spec in SPECS.values() for col in spec.outputs]
    order.insert(order.index("lse_d") + 1, "lse_offset")
    return order.index(column) if column in order else len(order)


def _csv_value(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def render_tables(results: dict[str, float], name: str, dataset: str | None) -> tuple[str, str]:
    """Markdown and LaTeX of the paper's Tables 1-5 with our row."""
    ours = OurRow(results, name, dataset)
    md = [render_markdown(TABLES[n], ours) for n in RESULT_TABLES]
    tex = [render_latex(TABLES[n], ours) for n in RESULT_TABLES]
    return "\n".join(md), "\n".join(tex)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _score_clip(suite: MetricSuite, name: str, pred_path: Path, gt_path: Path | None, text: str | None) -> dict[str, Any]:
    """Decode and score one clip; a decode failure or a clip no metric could score is a failure."""
    row: dict[str, Any] = {"clip": name, "status": "ok", "values": {}, "excluded": {}}
    try:
        pred = load_clip(pred_path)
        gt = load_clip(gt_path) if gt_path is not None else None
    except MediaError as err:
        row.update(status="failed", reason=str(err))
        return row
    values, refused = suite.update(pred, gt, text)
    row["values"], row["excluded"] = values, refused
    if not values and refused:
        row.update(status="failed", reason="; ".join(f"{k}: {v}" for k, v in refused.items()))
    return row


def _add_reference_set(suite: MetricSuite, ref_dir: Path) -> list[dict[str, str]]:
    failures = []
    for name, path in tqdm(list_clips(ref_dir).items(), desc="reference set", unit="clip"):
        try:
            suite.add_reference(load_clip(path))
        except (MediaError, ValueError, RuntimeError) as err:
            failures.append({"clip": name, "reason": str(err)})
    return failures


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
) -> dict[str, Any]:
    """Run the suite over a folder of generated clips and write the outputs (module docstring).

    Args:
        pred_dir: generated mp4s.
        out_dir: created if needed.
        gt_dir: ground-truth mp4s with the same file names; ``None`` is no-reference mode.
        ref_set: no-reference mode: real clips for the distribution metrics.
        transcripts: JSON of clip name -> text (WER).
        ratings: human MOS ratings (CSV or JSON).
        dataset: block of Tables 1/3 (one of ``metrics.paper_tables.DATASETS``).
        name: label of our row in the tables.
        metrics: keys of ``metrics.suite.SUITE`` to run (default: all available).
        overrides: per metric key, constructor arguments (e.g. injected networks).
        recognizer: ASR for WER: a recogniser object or a :func:`metrics.asr.make_recognizer`
            spec such as ``"whisper_base_en"`` (default: PocketSphinx).

    Returns:
        The summary written to ``summary.json``.
    """
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    texts = load_transcripts(transcripts)
    human = load_ratings(ratings)
    paired = gt_dir is not None
    if paired:
        pairs, pred_only, gt_only = pair_clips(Path(pred_dir), Path(gt_dir))
        jobs: list[tuple[str, Path, Path | None]] = list(pairs)
    else:
        pred_only, gt_only = [], []
        jobs = [(n, p, None) for n, p in list_clips(Path(pred_dir)).items()]
    suite = MetricSuite(list(metrics) if metrics else None, paired, ref_set is not None, bool(texts), overrides, recognizer)
    ref_failures = _add_reference_set(suite, Path(ref_set)) if (ref_set is not None and not paired) else []

    rows = []
    for clip_name, pred_path, gt_path in tqdm(jobs, desc="scoring", unit="clip"):
        rows.append(_score_clip(suite, clip_name, pred_path, gt_path, texts.get(clip_name)))
    results, failed_metrics = suite.compute()
    results.update(human)
    summary = _summary(rows, results, suite, failed_metrics, pred_only, gt_only, ref_failures, paired, dataset, name)
    _write_outputs(Path(out_dir), rows, summary, results, name, dataset)
    return summary


def _summary(rows, results, suite, failed_metrics, pred_only, gt_only, ref_failures, paired, dataset, name) -> dict[str, Any]:
    failures = [{"clip": r["clip"], "reason": r["reason"]} for r in rows if r["status"] == "failed"]
    exclusions: dict[str, int] = {}
    for r in rows:
        for key in r["excluded"]:
            exclusions[key] = exclusions.get(key, 0) + 1
    lse = suite.metrics.get("lse")
    return {
        "name": name,
        "dataset": dataset,
        "mode": "paired" if paired else "no-reference",
        "num_clips": len(rows),
        "num_scored": len(rows) - len(failures),
        "num_failed": len(failures),
        "failures": failures,
        "exclusions_per_metric": exclusions,
        "unpaired": {"pred_only": pred_only, "gt_only": gt_only},
        "reference_set_failures": ref_failures,
        "metrics_run": sorted(suite.metrics),
        "metrics_skipped": suite.skipped,
        "metrics_failed": failed_metrics,
        "face_detector": sorted(lse.detectors_used) if lse is not None else [],
        "wer_recognizer": suite.recognizer_description,
        "results": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in results.items()},
    }


def _write_outputs(out_dir: Path, rows, summary, results, name, dataset) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "per_clip.csv", per_clip_csv(rows))
    _write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    md, tex = render_tables(results, name, dataset)
    _write_atomic(out_dir / "tables.md", md)
    _write_atomic(out_dir / "tables.tex", tex)


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
    args = parser.parse_args(argv)
    if args.no_ref == (args.gt is not None):
        parser.error("give either --gt DIR (paired mode) or --no-ref")
    if args.ref_set is not None and not args.no_ref:
        parser.error("--ref-set is for --no-ref mode; in paired mode the ground truth is the real set")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: run :func:`evaluate` and print where the outputs are and what was skipped."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    summary = evaluate(
        args.pred, args.out, None if args.no_ref else args.gt, args.ref_set, args.transcripts, args.ratings,
        args.dataset, args.name, args.metrics.split(",") if args.metrics else None, recognizer=args.asr,
    )
    print(f"scored {summary['num_scored']}/{summary['num_clips']} clips; failed: {summary['num_failed']}")
    for failure in summary["failures"]:
        print(f"  failed {failure['clip']}: {failure['reason']}")
    for key, reason in summary["metrics_skipped"].items():
        print(f"  skipped {key}: {reason}")
    if summary["wer_recognizer"] is not None:
        print(f"  WER transcribed by {summary['wer_recognizer']}")
    if summary["unpaired"]["pred_only"] or summary["unpaired"]["gt_only"]:
        print(f"  unpaired: {summary['unpaired']}")
    for key, value in summary["results"].items():
        print(f"  {key:14s} {value if value is None else f'{value:.4f}'}")
    print(f"outputs in {args.out}: per_clip.csv, summary.json, tables.md, tables.tex")
    return summary


if __name__ == "__main__":
    main()
