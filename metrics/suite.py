"""The metric suite of the paper in one table, and a runner that feeds decoded clips to it.

:data:`SUITE` describes every metric: its result key and column label, modality, what it
compares against (``reference``: ``"paired"`` ground-truth clip, ``"set"`` of real clips,
``"text"`` transcript, ``"none"``), the registry weights and Python packages it needs, how it
is built (``factory`` + the keyword that injects a network in place of the weights) and whether
it is per-clip or a distribution distance.

:class:`MetricSuite` builds the metrics whose requirements are met, records why the others were
skipped (missing weights, missing package, no ground truth, no transcripts...), updates them one
clip at a time and returns each clip's values (for the per-clip CSV) and the final summary. A
clip without a video or audio track is refused, with the reason, only by the metrics that read
that track.

Where each metric runs (``device``): the metrics with a network (FID, FVD, KVD, FVMD, LPIPS, FAD,
speaker similarity, LSE with its face detector, WER with Whisper) and the frame metrics PSNR and
SSIM are moved to the device, and so are the video frames they read. The others run library code
on the CPU whatever the device (PESQ, STOI, ESTOI, both MCDs, DNSMOS's ONNX models, PocketSphinx):
:attr:`MetricSuite.worker_keys` names them, and on a CPU device every per-clip metric, so that a
caller can score them in worker processes (:meth:`MetricSuite.worker_suite`, whose states
:meth:`MetricSuite.add_states` adds up here, clip by clip, in order).
"""

from __future__ import annotations

import importlib
import logging
import math
import warnings
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from metrics.errors import MetricInputError

log = logging.getLogger(__name__)

Reference = Literal["paired", "set", "text", "none"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the suite.

    Attributes:
        key: result key (column of the per-clip CSV and of :mod:`metrics.paper_tables`).
        label: printed column label.
        modality: ``"video"``, ``"audio"`` or ``"audio-visual"``.
        reference: what the prediction is compared with (see the module docstring).
        kind: ``"per_clip"`` (a value per clip, then the mean) or ``"distribution"``.
        factory: ``"module:Class"`` of the metric.
        weights: registry names the default network needs.
        packages: importable module names the metric needs.
        inject: keyword of ``factory`` that takes an ``nn.Module`` in place of the weights.
        kwargs: fixed constructor arguments.
        columns: result keys the metric fills (``key`` unless it returns several values).
        higher_is_better: direction of ``key``.
        cpu_bound: runs library code on the CPU whatever the device (nothing to move there).
    """

    key: str
    label: str
    modality: str
    reference: Reference
    kind: Literal["per_clip", "distribution"]
    factory: str
    weights: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    inject: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    higher_is_better: bool = False
    cpu_bound: bool = False

    @property
    def needs_gt(self) -> bool:
        """True when the metric needs the paired ground-truth clip."""
        return self.reference == "paired"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Result keys this metric fills."""
        return self.columns or (self.key,)


def _spec(*args: Any, **kwargs: Any) -> MetricSpec:
    return MetricSpec(*args, **kwargs)


SUITE: tuple[MetricSpec, ...] = (
    # video, distributions
    _spec("fid", "FID", "video", "set", "distribution", "metrics.fid:VideoFID", ("inception_fid",), inject="feature_extractor"),
    _spec("fvd", "FVD", "video", "set", "distribution", "metrics.fvd:FrechetVideoDistance", ("i3d_fvd",), inject="feature_extractor"),
    _spec("kvd", "KVD", "video", "set", "distribution", "metrics.fvd:KernelVideoDistance", ("i3d_fvd",), inject="feature_extractor"),
    _spec("fvmd", "FVMD", "video", "set", "distribution", "metrics.fvmd:FrechetVideoMotionDistance", ("pips2",), inject="tracker"),
    # video, per clip against the ground truth
    _spec("psnr", "PSNR", "video", "paired", "per_clip", "metrics.image_quality:VideoPSNR", higher_is_better=True),
    _spec("ssim", "SSIM", "video", "paired", "per_clip", "metrics.image_quality:VideoSSIM", higher_is_better=True),
    _spec("lpips", "LPIPS", "video", "paired", "per_clip", "metrics.image_quality:VideoLPIPS", ("alexnet_lpips",), ("lpips",), inject="net"),
    # audio
    _spec("fad", "FAD", "audio", "set", "distribution", "metrics.fad:FrechetAudioDistance", ("vggish",), ("torchvggish",), inject="feature_extractor"),
    _spec("mcd", "MCD (dB)", "audio", "paired", "per_clip", "metrics.mcd:MelCepstralDistortion", packages=("pysptk", "pyworld"),
          cpu_bound=True),
    _spec("mcd_paper", "MCD (paper)", "audio", "paired", "per_clip", "metrics.mcd:PaperMFCCDistance", packages=("librosa",),
          cpu_bound=True),
    _spec("stoi", "STOI", "audio", "paired", "per_clip", "metrics.intelligibility:STOI", packages=("pystoi",),
          higher_is_better=True, cpu_bound=True),
    _spec("estoi", "ESTOI", "audio", "paired", "per_clip", "metrics.intelligibility:ESTOI", packages=("pystoi",),
          higher_is_better=True, cpu_bound=True),
    _spec("pesq", "PESQ", "audio", "paired", "per_clip", "metrics.pesq:WidebandPESQ", packages=("pesq",),
          higher_is_better=True, cpu_bound=True),
    _spec("speaker_sim", "Speaker sim.", "audio", "paired", "per_clip", "metrics.speaker:SpeakerSimilarity", packages=("resemblyzer",),
          inject="encoder", higher_is_better=True),
    _spec("wer", "WER", "audio", "text", "per_clip", "metrics.wer:NormalizedWER", packages=("jiwer", "whisper_normalizer", "pocketsphinx")),
    _spec("dnsmos", "DNSMOS", "audio", "none", "per_clip", "metrics.dnsmos:DNSMOS", packages=("speechmos", "onnxruntime"),
          columns=("dnsmos", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"), higher_is_better=True,
          cpu_bound=True),  # ONNX models run by onnxruntime on the CPU
    # sync
    _spec("lse", "LSE", "audio-visual", "none", "per_clip", "metrics.lse:LipSyncError", ("syncnet",), ("python_speech_features",),
          inject="net", columns=("lse_c", "lse_d")),
)
SPECS: dict[str, MetricSpec] = {spec.key: spec for spec in SUITE}
COLUMN_LABELS: dict[str, str] = {
    **{s.key: s.label for s in SUITE},
    "lse_c": "LSE-C", "lse_d": "LSE-D", "lse_offset": "AV offset", "psnr_capped": "PSNR (frames capped at 100 dB)",
    "dnsmos_sig": "DNSMOS SIG", "dnsmos_bak": "DNSMOS BAK", "dnsmos_p808": "DNSMOS P.808",
}
DNSMOS_KEYS = ("overall", "sig", "bak", "p808")


@dataclass
class Clip:
    """One decoded clip: ``video`` ``(T, 3, H, W)`` uint8 RGB at 25 fps, ``wav`` ``(S,)`` float32 at 16 kHz.

    Either may be ``None`` when the file has no such track: the metrics that need it then
    refuse the clip (with the reason) and the others still score it.
    """

    video: Tensor | None
    wav: Tensor | None


_TRACK_NAMES = {"video": "video", "wav": "audio"}


# --------------------------------------------------------------------------------------------
# Requirements
# --------------------------------------------------------------------------------------------


def missing_requirement(spec: MetricSpec, injected: dict[str, Any] | None = None) -> str | None:
    """Why ``spec`` cannot be built here (missing package or weights), or ``None``.

    Args:
        spec: the metric.
        injected: constructor arguments that will be passed; an injected network
            (``spec.inject``) replaces the registry weights.
    """
    from metrics.registry import available, expected_path

    missing = [p for p in spec.packages if find_spec(p) is None]
    if missing:
        return f"missing package(s) {missing}; pip install them"
    if spec.inject and spec.inject in (injected or {}):
        return None
    absent = [w for w in spec.weights if not available(w)]
    if absent:
        where = ", ".join(str(expected_path(w)) for w in absent)
        return f"missing weights {absent} (expected at {where}; see `python -m metrics.registry`)"
    return None


def build_metric(spec: MetricSpec, **overrides: Any) -> Metric:
    """Instantiate ``spec.factory`` with ``spec.kwargs`` updated by ``overrides``."""
    module, name = spec.factory.split(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**spec.kwargs, **overrides})


# --------------------------------------------------------------------------------------------
# Per-clip helpers
# --------------------------------------------------------------------------------------------


def align_pair(pred: Clip, gt: Clip) -> tuple[Clip, Clip]:
    """Cut both clips to their common length; resize ``pred`` frames to ``gt``'s size if needed.

    :func:`alignment_report` says what this does to a pair. A track missing on either side
    is left as it is (the metrics that need it refuse the pair).
    """
    pred_video, gt_video, pred_wav, gt_wav = pred.video, gt.video, pred.wav, gt.wav
    if pred_video is not None and gt_video is not None:
        t = min(pred_video.shape[0], gt_video.shape[0])
        pred_video, gt_video = pred_video[:t], gt_video[:t]
        if pred_video.shape[-2:] != gt_video.shape[-2:]:
            resized = F.interpolate(pred_video.float(), size=tuple(gt_video.shape[-2:]), mode="bilinear", align_corners=False)
            pred_video = resized.round().clamp(0, 255).to(torch.uint8)  # (T, 3, H_gt, W_gt)
    if pred_wav is not None and gt_wav is not None:
        s = min(pred_wav.shape[0], gt_wav.shape[0])
        pred_wav, gt_wav = pred_wav[:s], gt_wav[:s]
    return Clip(pred_video, pred_wav), Clip(gt_video, gt_wav)


def alignment_report(pred: Clip, gt: Clip) -> dict[str, int | str | None]:
    """What :func:`align_pair` cuts and resizes in a pair (``None`` where a track is missing).

    Returns:
        ``pred_frames_cut``/``gt_frames_cut`` (frames at 25 fps dropped from the end),
        ``pred_resized_from`` (``"WxH"`` of the generated frames when they were resized to the
        ground truth's size, else ``""``), ``pred_audio_samples_cut``/``gt_audio_samples_cut``
        (16 kHz samples dropped from the end).
    """
    report: dict[str, int | str | None] = dict.fromkeys(
        ("pred_frames_cut", "gt_frames_cut", "pred_resized_from", "pred_audio_samples_cut", "gt_audio_samples_cut"))
    if pred.video is not None and gt.video is not None:
        t = min(pred.video.shape[0], gt.video.shape[0])
        report.update(pred_frames_cut=pred.video.shape[0] - t, gt_frames_cut=gt.video.shape[0] - t)
        h, w = pred.video.shape[-2:]
        report["pred_resized_from"] = "" if (h, w) == tuple(gt.video.shape[-2:]) else f"{w}x{h}"
    if pred.wav is not None and gt.wav is not None:
        s = min(pred.wav.shape[0], gt.wav.shape[0])
        report.update(pred_audio_samples_cut=pred.wav.shape[0] - s, gt_audio_samples_cut=gt.wav.shape[0] - s)
    return report


class MissingTrackError(ValueError):
    """A metric needs a video or audio track that the clip does not have."""


def _track(clip: Clip | None, attr: str, side: str) -> Tensor:
    """``clip.video`` or ``clip.wav``; :class:`MissingTrackError` naming the track and ``side`` when absent."""
    data = getattr(clip, attr, None)
    if data is None:
        raise MissingTrackError(f"no {_TRACK_NAMES[attr]} track in the {side} clip")
    return data


def _count(metric: Metric) -> int:
    try:
        values = metric.per_clip()
    except ValueError:  # some per_clip() refuse an empty state
        return 0
    values = values["lse_d"] if isinstance(values, dict) else values
    return int(values.shape[0])


def _last_values(spec: MetricSpec, metric: Metric) -> dict[str, float]:
    values = metric.per_clip()
    if spec.key == "lse":
        return {"lse_c": float(values["lse_c"][-1]), "lse_d": float(values["lse_d"][-1]),
                "lse_offset": float(values["offset"][-1])}
    if spec.key == "dnsmos":
        return dict(zip(spec.columns, (float(v) for v in values[-1])))
    if spec.key == "psnr":  # the uncapped value (inf for an identical frame) and the one the mean uses
        return {"psnr": float(values[-1]), "psnr_capped": float(metric.per_clip(capped=True)[-1])}
    return {spec.key: float(values[-1])}


def _flatten(spec: MetricSpec, value: Any) -> dict[str, float]:
    if spec.key == "dnsmos":
        return {col: float(value[k]) for col, k in zip(spec.columns, DNSMOS_KEYS)}
    if isinstance(value, dict):
        return {k: float(v) for k, v in value.items()}
    return {spec.key: float(value)}


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def runs_in_workers(spec: MetricSpec, device: str | torch.device, pocketsphinx: bool) -> bool:
    """Whether ``spec``'s metric may run in a worker process on the CPU (module docstring).

    Args:
        spec: the metric.
        device: the suite's device.
        pocketsphinx: whether WER transcribes with PocketSphinx (a library on the CPU).
    """
    if spec.kind != "per_clip":  # one set of running sums, fed from the main process
        return False
    if torch.device(device).type == "cpu" or spec.cpu_bound:
        return True
    return spec.key == "wer" and pocketsphinx


class MetricSuite:
    """Build the available metrics and feed them one clip at a time.

    Args:
        keys: metric keys of :data:`SUITE` to run (default: all).
        paired: True when every prediction has a ground-truth clip; False (no-reference mode)
            skips the ``paired`` metrics and takes the distributions' real side from
            :meth:`add_reference`.
        has_reference_set: no-reference mode only: whether real clips will be given for the
            distribution metrics.
        has_text: whether transcripts are given (WER).
        overrides: per key, constructor arguments (e.g. an injected network, which lifts the
            weights requirement).
        recognizer: ASR for WER: a recogniser ``audio (B, S) -> list[str]``, or a spec of
            :func:`metrics.asr.make_recognizer` (``"pocketsphinx"``, the default, a Whisper
            registry name such as ``"whisper_base_en"``, a hub id or a folder). A recogniser
            that cannot be loaded skips WER with the reason.
        device: where the metrics of :attr:`device_keys` run (module docstring); their networks
            and states are moved there at once, the ones built on first use when they are built.
    """

    def __init__(
        self,
        keys: list[str] | None = None,
        paired: bool = True,
        has_reference_set: bool = False,
        has_text: bool = False,
        overrides: dict[str, dict[str, Any]] | None = None,
        recognizer: Any = None,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = set(keys or []) - set(SPECS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; known: {sorted(SPECS)}")
        self.overrides = overrides or {}
        self.device = torch.device(device)
        self.metrics: dict[str, Metric] = {}
        self.skipped: dict[str, str] = {}
        for spec in (SPECS[k] for k in (keys or list(SPECS))):
            reason = self._mode_reason(spec, paired, has_reference_set, has_text)
            reason = reason or missing_requirement(spec, self.overrides.get(spec.key))
            if reason is None:
                reason = self._try_build(spec)
            if reason is not None:
                self.skipped[spec.key] = reason
                log.info("metric %s skipped: %s", spec.key, reason)
        self.recognizer = self._build_recognizer(recognizer) if "wer" in self.metrics else recognizer
        self.paired, self.has_reference_set, self.has_text = paired, has_reference_set, has_text
        self.worker_keys = [key for key in self.metrics if self._cpu_bound(key)]
        self.device_keys = [key for key in self.metrics if key not in self.worker_keys]
        for key in self.device_keys:
            self.metrics[key].to(self.device)

    def _cpu_bound(self, key: str) -> bool:
        from metrics.asr import PocketSphinxRecognizer

        return runs_in_workers(SPECS[key], self.device, isinstance(self.recognizer, PocketSphinxRecognizer))

    def _build_recognizer(self, recognizer: Any) -> Any:
        if recognizer is not None and not isinstance(recognizer, str):
            return recognizer
        from metrics.asr import make_recognizer

        spec = recognizer or "pocketsphinx"
        try:
            return make_recognizer(spec, device=self.device)
        except (FileNotFoundError, ImportError, ValueError) as err:
            del self.metrics["wer"]
            self.skipped["wer"] = f"recogniser {spec!r} could not be loaded: {type(err).__name__}: {err}"
            log.info("metric wer skipped: %s", self.skipped["wer"])
            return None

    @property
    def recognizer_description(self) -> str | None:
        """Which recogniser produced the WER transcripts, or ``None`` when WER is not run."""
        if "wer" not in self.metrics:
            return None
        return getattr(self.recognizer, "description", type(self.recognizer).__name__)

    @staticmethod
    def _mode_reason(spec: MetricSpec, paired: bool, has_reference_set: bool, has_text: bool) -> str | None:
        if spec.reference == "paired" and not paired:
            return "needs ground-truth clips (no-reference mode)"
        if spec.reference == "set" and not paired and not has_reference_set:
            return "needs a set of real clips (give --ref-set)"
        if spec.reference == "text" and not has_text:
            return "needs transcripts (give --transcripts)"
        return None

    def _try_build(self, spec: MetricSpec) -> str | None:
        try:
            self.metrics[spec.key] = build_metric(spec, **self.overrides.get(spec.key, {}))
        except (FileNotFoundError, ModuleNotFoundError, ImportError, RuntimeError) as err:
            return f"could not be built: {type(err).__name__}: {err}"
        return None

    def _recognise(self, wav: Tensor) -> list[str]:
        return self.recognizer(wav[None])

    def _update_one(self, spec: MetricSpec, metric: Metric, pred: Clip, gt: Clip | None, text: str | None) -> None:
        """Feed one clip to ``metric``; :class:`MissingTrackError` (before any update) if a track it reads is absent."""
        attr = "video" if spec.modality == "video" else "wav"
        if spec.kind == "distribution":
            fake = _track(pred, attr, "generated")
            real = _track(gt, attr, "ground-truth") if gt is not None else None
            metric.update(fake[None], real=False)
            if real is not None:
                metric.update(real[None], real=True)
        elif spec.key == "lse":
            video, wav = _track(pred, "video", "generated"), _track(pred, "wav", "generated")
            metric.update(video[None], wav[None])
        elif spec.key == "dnsmos":
            metric.update(_track(pred, "wav", "generated")[None])
        elif spec.key == "wer":
            metric.update(self._recognise(_track(pred, "wav", "generated")), [text])
        else:  # per clip against the ground truth
            metric.update(_track(pred, attr, "generated")[None], _track(gt, attr, "ground-truth")[None])

    def _on_device(self, clip: Clip | None) -> Clip | None:
        """``clip`` with its frames on the device (one copy per clip for every video metric there)."""
        if clip is None or clip.video is None or self.device.type == "cpu":
            return clip
        return Clip(clip.video.to(self.device), clip.wav)

    def _reads_device_frames(self, key: str) -> bool:
        # LSE detects faces on the CPU frames (its detector moves them) and moves the clip itself to crop
        return SPECS[key].modality == "video" and key in self.device_keys

    def update(self, pred: Clip, gt: Clip | None = None, text: str | None = None,
               keys: list[str] | None = None) -> tuple[dict[str, float], dict[str, str]]:
        """Feed one prediction (and its ground truth / transcript) to every metric, or to those of ``keys``.

        Returns:
            Per-clip values of the per-clip metrics (``{column: value}``) and, per metric that
            refused this clip, the reason.
        """
        if self.paired and gt is not None:
            pred, gt = align_pair(pred, gt)
        chosen = [key for key in self.metrics if keys is None or key in keys]
        moved = (self._on_device(pred), self._on_device(gt)) if any(map(self._reads_device_frames, chosen)) else None
        values: dict[str, float] = {}
        refused: dict[str, str] = {}
        for key in chosen:
            spec, metric = SPECS[key], self.metrics[key]
            clips = moved if moved is not None and self._reads_device_frames(key) else (pred, gt)
            before = _count(metric) if spec.kind == "per_clip" else 0
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    self._update_one(spec, metric, *clips, text)
                except (MetricInputError, ValueError, RuntimeError) as err:
                    refused[key] = str(err)
                    continue
            if spec.kind == "per_clip" and _count(metric) > before:
                values.update(_last_values(spec, metric))
            elif spec.kind == "per_clip" or any("exclud" in str(w.message) for w in caught):
                refused[key] = "; ".join(str(w.message) for w in caught) or "not scored"
        return values, refused

    def in_order(self, by_key: dict[str, Any]) -> dict[str, Any]:
        """``by_key`` (metric key -> anything) in the suite's order, e.g. refusals gathered in two processes."""
        return {key: by_key[key] for key in self.metrics if key in by_key}

    # ----------------------------------------------------------------------------------------
    # Scoring in worker processes
    # ----------------------------------------------------------------------------------------

    def worker_suite(self) -> MetricSuite | None:
        """A suite of the :attr:`worker_keys` metrics on the CPU, built as this one (``None`` if there are none).

        Build it in each worker process; feed it clips there, send :meth:`take_states` back
        after each one, and :meth:`add_states` here.

        Raises:
            RuntimeError: a metric that was built here cannot be built there.
        """
        if not self.worker_keys:
            return None
        suite = MetricSuite(self.worker_keys, self.paired, self.has_reference_set, self.has_text, self.overrides,
                            self.recognizer, device="cpu")
        if suite.skipped:
            raise RuntimeError(f"metrics built in the main process could not be built in a worker: {suite.skipped}")
        return suite

    def take_states(self) -> dict[str, dict[str, Any]]:
        """Every metric's state (the face detectors LSE used included), then reset: one clip's worth to send back."""
        states = {}
        for key, metric in self.metrics.items():
            # copies of the lists: reset() empties them in place
            states[key] = {name: list(v) if isinstance(v, list) else v for name, v in metric.metric_state.items()}
            if key == "lse":
                states[key]["detectors_used"], metric.detectors_used = metric.detectors_used, set()
            metric.reset()
        return states

    def add_states(self, states: dict[str, dict[str, Any]]) -> None:
        """Add what :meth:`take_states` of a worker suite returned, after what is here.

        The per-clip metrics keep list states (values, appended in order) and tensor states
        that are counts (added), so clip after clip this ends where one suite fed every clip would.
        """
        for key, state in states.items():
            metric = self.metrics[key]
            for name, value in state.items():
                local = getattr(metric, name)
                if isinstance(local, set):  # LSE's detectors_used
                    local |= value
                elif isinstance(local, list):
                    local.extend(v.to(metric.device) for v in value)
                else:
                    setattr(metric, name, local + value.to(local.device))

    def add_reference(self, clip: Clip) -> dict[str, str]:
        """No-reference mode: add a real clip to the real side of the distribution metrics.

        Returns:
            Per distribution metric that could not take the clip (missing track), the reason.
        """
        refused = {}
        for key, metric in self.metrics.items():
            spec = SPECS[key]
            if spec.kind != "distribution":
                continue
            data = self._on_device(clip).video if spec.modality == "video" else clip.wav
            if data is None:
                refused[key] = f"no {spec.modality} track in the reference clip"
            else:
                metric.update(data[None], real=True)
        return refused

    def compute(self) -> tuple[dict[str, float], dict[str, str]]:
        """Final values (``{column: value}``) and the metrics whose compute failed, with why."""
        results: dict[str, float] = {}
        failed: dict[str, str] = {}
        for key, metric in self.metrics.items():
            spec = SPECS[key]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    flat = _flatten(spec, metric.compute())
            except (MetricInputError, ValueError, RuntimeError) as err:
                failed[key] = f"{type(err).__name__}: {err}"
                flat = {col: math.nan for col in spec.outputs}
            results.update(flat)
        return results, failed
