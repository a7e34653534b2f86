"""Cost of scoring the paper's protocol (800 clips x 20 s) with the whole metric suite.

The evaluation part of ``python benchmarks/reproduce.py --skip-measure`` (this module prints nothing itself).

Estimated for two ways of running ``python -m experiments.evaluate`` (:data:`SETTINGS`): the
``reference`` (``--device cuda --workers 16``: FVMD at stride 1 and PocketSphinx, as published)
and ``fast`` (also ``--asr whisper_base_en --metric-option fvmd.window_stride=16 --metric-option
lse.detect_every=5``). Three parts:

1. **Networks, by FLOPs** (:func:`count_network_flops`). Every network a metric of
   :data:`metrics.suite.SUITE` runs is built on the meta device at its real size (random init:
   no weights are needed, nothing is computed or allocated) and fed the input its metric gives
   it; ``torch.utils.flop_counter.FlopCounterMode`` counts one unit of work (a frame, a 16-frame
   window, a 0.96 s patch...). :func:`network_costs` multiplies by the units of the protocol
   under a setting (:data:`NETWORKS` says which and why). Two architectures are not in any
   package here: I3D (FVD and KVD load a TorchScript file) and PIPs++ (FVMD imports it from a
   module the user installs). Their counts were taken the same way on the published code and are
   kept in :data:`RECORDED`; PIPs++ is counted live instead whenever its module imports.
2. **Other GPU work, by rate** (:func:`gpu_unit_seconds`): PSNR and SSIM are memory-bound, so
   the bytes their operations read and write are counted (on the meta device) and divided by the
   memory bandwidth; MTCNN's cascade sizes its later stages from what the first one finds, so it
   cannot be counted: its one published GPU throughput is used (facenet-pytorch, P100), scaled by
   pixels; LSE's face crops (one ``grid_sample`` per chunk of frames) by the bytes they move, as
   PSNR and SSIM; the decoded frames' copy to the GPU at an assumed PCIe rate. DNSMOS (an ONNX graph)
   runs on the CPU and S3FD comes with face-alignment, not installed here.
3. **CPU work, by timing** (:func:`time_cpu_work`): decoding, PSNR and SSIM (torch on the CPU),
   STOI, ESTOI, PESQ, MCD with DTW, DNSMOS (onnxruntime), resemblyzer's VAD and mel front end,
   PocketSphinx (the default recogniser for WER), the LSE face detection (MTCNN on the CPU),
   box following and smoothing, crops and MFCCs, FAD's log-mel patches. Each is timed once on one core, after a warm-up call,
   on real example clips (synthetic ones when ``../shared/data/clips`` is absent): the video
   parts on the first second of two clips, the audio parts on 20 s of speech, the protocol's
   length, because DTW grows with the square of it and DNSMOS scores 9 s windows every second.
   :func:`place_cpu_work` puts each where ``experiments.evaluate`` runs it under the setting:
   decoding and the CPU-bound metrics in the worker processes (their core-seconds spread over
   ``--workers``), the CPU side of the device metrics in the main process, one core; parts that
   the GPU takes over are dropped.

Overlapped, not added (:class:`EvaluationEstimate`): the workers decode and score the next clips
while the main process runs the GPU work on the current one, so the total is the longer of the
main process (GPU work, then its own CPU work) and the workers. Assumed: a core for each worker
besides the main process's; the network FLOPs at the TF32 rate (PyTorch runs fp32 convolutions
on TF32 tensor cores by default; fp32 matmuls, as in PIPs++'s correlations and Whisper, run on
CUDA cores at about 67 TFLOP/s, slower than that).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

CLIPS = Path(os.environ.get("NFY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "clips"
WHISPER_TOKENS_PER_SECOND = 3.0
"""Text tokens Whisper decodes per second of speech (about 150 words a minute, 1.2 tokens a word)."""
WHISPER_BASE_EN = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 512, "n_audio_head": 8, "n_audio_layer": 6,
                   "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6}
"""``dims`` of OpenAI's ``base.en.pt`` (registry entry ``whisper_base_en``, the README's ``--asr`` example)."""
FRAME_SIZE = 512  # the paper's frames


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol: ``clips`` clips of ``seconds`` at ``fps`` (Sec. 4.1: 800 x 20 s)."""

    clips: int = 800
    seconds: float = 20.0
    fps: int = 25

    @property
    def frames(self) -> int:
        """Frames per clip."""
        return int(self.seconds * self.fps)

    @property
    def clip_seconds(self) -> float:
        """Seconds of generated media in the whole protocol."""
        return self.clips * self.seconds


@dataclass(frozen=True)
class RecordedCount:
    """FLOPs of a network whose code is not installed here, counted on its published code."""

    flops: int
    source: str


RECORDED: dict[str, RecordedCount] = {
    "i3d": RecordedCount(55_575_957_504, "pytorch-i3d InceptionI3d"),
    "pips": RecordedCount(3_309_061_537_792, "aharley/pips2 Pips"),
}
"""FlopCounterMode counts on the meta device, taken on the published code of each network.

* ``i3d``: piergiaj/pytorch-i3d at 05783d1, ``pytorch_i3d.InceptionI3d(400)`` on (1, 3, 16, 224,
  224): the TF-hub I3D that StyleGAN-V's ``i3d_torchscript.pt`` exports; our FVD/KVD feed it the
  first 16 frames of a clip at 224 px.
* ``pips``: aharley/pips2 at 8b5bd9e, ``nets.pips2.Pips(stride=8)`` (the same network as FVMD's
  ``fvmd.nets.pips2`` at DSL-Lab d0863a3, imports aside) on (1, 16, 3, 256, 256) frames, 400 grid
  points, 16 iterations, as :class:`metrics.features.pips.PipsTracker` runs it; :func:`pips_window`
  reproduces this number exactly when the module imports.
"""


# --------------------------------------------------------------------------------------------
# Part 1: networks, counted on the meta device
# --------------------------------------------------------------------------------------------


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of ``fn()`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them (no gradients)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


def inception_frame_flops() -> float:
    """pytorch-fid's FID Inception-v3 (pool3) on one 512 px frame, resized to 299 inside as VideoFID runs it."""
    import torchvision
    from pytorch_fid import inception as pfid

    # weights are not needed to count: the published file would only be loaded into meta tensors
    with torch.device("meta"), mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda *a, **k: None):
        net = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                               normalize_input=True).eval()
        frame = torch.rand(1, 3, FRAME_SIZE, FRAME_SIZE)
    return count_flops(lambda: net(frame))


def lpips_pair_flops() -> float:
    """LPIPS v0.1 (torchmetrics' ``_LPIPS``: AlexNet on both frames + linear heads) on one 512 px pair."""
    from torchmetrics.functional.image.lpips import _LPIPS

    with torch.device("meta"):
        # its scaling layer makes CPU buffers whatever the default device: moved after building
        net = _LPIPS(pretrained=False, net="alex", pnet_rand=True).eval().to("meta")
        frame = torch.rand(1, 3, FRAME_SIZE, FRAME_SIZE)
    return count_flops(lambda: net(frame, frame))


def vggish_patch_flops() -> float:
    """torchvggish's VGGish (as :class:`metrics.audio_features.VGGishEmbedder` builds it) on one 0.96 s patch."""
    from torchvggish import torchvggish

    with torch.device("meta"):
        net = torchvggish.VGG(torchvggish.make_layers(), postprocess=False).eval()
        patch = torch.rand(1, 1, 96, 64)
    return count_flops(lambda: net(patch))


def syncnet_window_flops() -> float:
    """Our SyncNet v2, both streams, on one 5-frame window of 224 px crops and its 20 MFCC frames."""
    from metrics.syncnet import SyncNet

    with torch.device("meta"):
        net = SyncNet()
        lips, mfcc = torch.rand(1, 3, 5, 224, 224), torch.rand(1, 1, 13, 20)
    return count_flops(lambda: (net.forward_lip(lips), net.forward_aud(mfcc)))


def speaker_partial_flops() -> float:
    """resemblyzer's GE2E encoder (3-layer LSTM + linear, sizes from its hparams) on one 1.6 s partial."""
    from resemblyzer import hparams

    with torch.device("meta"):
        lstm = torch.nn.LSTM(hparams.mel_n_channels, hparams.model_hidden_size, hparams.model_num_layers,
                             batch_first=True)
        linear = torch.nn.Linear(hparams.model_hidden_size, hparams.model_embedding_size)
        mels = torch.rand(1, hparams.partials_n_frames, hparams.mel_n_channels)  # (1, 160, 40)
    return count_flops(lambda: linear(lstm(mels)[1][0][-1]))


def whisper_window_flops(speech_seconds: float = 20.0) -> float:
    """Whisper base.en on one 30 s window: the encoder, then the decoder over the window's tokens.

    Greedy decoding with a key-value cache does about the work of one decoder pass over the
    whole sequence: the 4 prompt tokens and :data:`WHISPER_TOKENS_PER_SECOND` per second of speech.
    """
    from whisper.model import AudioEncoder, TextDecoder

    d = WHISPER_BASE_EN
    tokens = 4 + math.ceil(WHISPER_TOKENS_PER_SECOND * min(speech_seconds, 30.0))
    with torch.device("meta"):  # Whisper() itself builds a sparse buffer, which meta cannot hold
        encoder = AudioEncoder(d["n_mels"], d["n_audio_ctx"], d["n_audio_state"], d["n_audio_head"], d["n_audio_layer"])
        decoder = TextDecoder(d["n_vocab"], d["n_text_ctx"], d["n_text_state"], d["n_text_head"], d["n_text_layer"])
        mel = torch.rand(1, d["n_mels"], 2 * d["n_audio_ctx"])  # (1, 80, 3000): 30 s
        text = torch.zeros(1, tokens, dtype=torch.long)
    audio = torch.empty(1, d["n_audio_ctx"], d["n_audio_state"], device="meta")
    return count_flops(lambda: encoder(mel)) + count_flops(lambda: decoder(text, audio))


def _pips_flops(pips: type) -> float:
    """PIPs++ (class ``pips`` of the published code) on one FVMD window, as PipsTracker calls it."""
    from metrics.features.pips import (
        PIPS_ITERS,
        PIPS_POINTS,
        PIPS_SIZE,
        _cuda_calls_stay_put,
    )

    with torch.device("meta"):
        net = pips(stride=8).eval()
        frames = torch.rand(1, 16, 3, PIPS_SIZE, PIPS_SIZE) * 255
        start = torch.rand(1, 16, PIPS_POINTS, 2) * PIPS_SIZE
    with _cuda_calls_stay_put(torch.device("meta")):  # its forward calls .cuda()
        return count_flops(lambda: net(start, frames, iters=PIPS_ITERS, feat_init=None, beautify=True))


def pips_window() -> tuple[float, str]:
    """PIPs++ on one FVMD window: counted live when its module imports, else :data:`RECORDED`."""
    from metrics.features.pips import _import_pips

    for module in ("fvmd.nets.pips2", "nets.pips2"):
        try:
            return _pips_flops(_import_pips(module)), f"counted ({module})"
        except ModuleNotFoundError:
            continue
    return float(RECORDED["pips"].flops), f"recorded on {RECORDED['pips'].source} (not installed here)"


COUNTERS: dict[str, Callable[[], float]] = {
    "inception": inception_frame_flops, "lpips": lpips_pair_flops, "vggish": vggish_patch_flops,
    "syncnet": syncnet_window_flops, "ge2e": speaker_partial_flops, "whisper": whisper_window_flops,
}
"""The networks whose architecture is installed here, each counted per unit of its metric's input."""


def count_network_flops() -> dict[str, tuple[float, str]]:
    """FLOPs per unit and how they were obtained, per network key of :data:`NETWORKS`."""
    counts = {key: (fn(), "counted") for key, fn in COUNTERS.items()}
    counts["pips"] = pips_window()
    counts["i3d"] = float(RECORDED["i3d"].flops), f"recorded on {RECORDED['i3d'].source} (the suite loads a TorchScript file)"
    return counts


# --------------------------------------------------------------------------------------------
# How experiments.evaluate is run: the two settings of the estimate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """Options of ``python -m experiments.evaluate`` for the protocol.

    Attributes:
        name: printed name.
        fvmd_stride: FVMD's ``window_stride`` (1: the reference's, which published values need).
        asr: ``--asr``: ``"pocketsphinx"`` (CPU, worker processes) or ``"whisper_base_en"`` (GPU).
        device: ``--device``.
        workers: ``--workers``.
        lse_detect_every: LSE's face detector stride (1: every frame, the reference's).
    """

    name: str
    fvmd_stride: int = 1
    asr: str = "pocketsphinx"
    device: str = "cuda"
    workers: int = 16
    lse_detect_every: int = 1

    @property
    def flags(self) -> str:
        """The command-line flags that give this setting."""
        flags = f"--device {self.device} --workers {self.workers}"
        if self.asr != "pocketsphinx":
            flags += f" --asr {self.asr}"
        if self.fvmd_stride != 1:
            flags += f" --metric-option fvmd.window_stride={self.fvmd_stride}"
        if self.lse_detect_every != 1:
            flags += f" --metric-option lse.detect_every={self.lse_detect_every}"
        return flags


REFERENCE = Setting("reference")
"""The paper's protocol as published: FVMD on every window, WER by the default recogniser."""
FAST = Setting("fast", fvmd_stride=16, asr="whisper_base_en", lse_detect_every=5)
"""FVMD on disjoint windows (not the published FVMD), Whisper on the GPU instead of PocketSphinx and
LSE's face detector on every 5th frame (boxes interpolated between)."""
SETTINGS = (REFERENCE, FAST)


# --------------------------------------------------------------------------------------------
# Network rows of the protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    """What the estimate assumes of the accelerator (defaults: one H100 SXM, NVIDIA's datasheet).

    Attributes:
        flops_per_second: the rate of the counted network FLOPs.
        memory_bytes_per_second: HBM bandwidth, at ``utilisation``, for the memory-bound frame metrics.
        copy_bytes_per_second: host to device copies of the decoded frames (PCIe Gen5 x16 from
            pageable memory; an assumption, not a datasheet value).
        utilisation: the share of the peaks reached.
    """

    flops_per_second: float
    memory_bytes_per_second: float = 3.35e12
    copy_bytes_per_second: float = 20e9
    utilisation: float = 0.40


MTCNN_PUBLISHED_FPS = 25.50
MTCNN_PUBLISHED_PIXELS = 540 * 960
MTCNN_PUBLISHED_SOURCE = "facenet-pytorch's README: 25.50 fps, batched 540x960 frames, Kaggle P100"
"""The one published GPU throughput of the MTCNN the suite runs (facenet-pytorch), not measured here."""


class _BytesCounter(TorchDispatchMode):
    """Bytes every aten operation reads and writes (its tensor arguments and results; views move none)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # torch's protocol
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            leaves = tree_leaves((args, kwargs, out))
            self.bytes += sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))
        return out


def frame_metric_bytes(size: int = FRAME_SIZE) -> float:
    """Bytes PSNR and SSIM read and write on the GPU for one frame pair, counted on the meta device.

    Each aten operation of :func:`metrics.functional.image_quality.frame_psnr` and ``video_ssim``
    is counted with its inputs and outputs, as if none were fused or cached: the frame metrics are
    memory-bound, so this, not their FLOPs, sets their time.
    """
    from metrics.functional.image_quality import frame_psnr, video_ssim

    pair = [torch.empty(1, 1, 3, size, size, dtype=torch.uint8, device="meta") for _ in range(2)]
    counter = _BytesCounter()
    # frame_psnr brings its per-frame values back with .cpu(), which a meta tensor cannot do
    with counter, mock.patch.object(torch.Tensor, "cpu", lambda self, *a, **k: self):
        frame_psnr(*pair)
        video_ssim(*pair)
    return float(counter.bytes)


def face_crop_bytes(size: int = FRAME_SIZE) -> float:
    """Bytes :func:`metrics.facecrop.crop_video` reads and writes on the GPU per frame, counted on the meta device."""
    from metrics.facecrop import crop_video

    frames = torch.empty(8, 3, size, size, dtype=torch.uint8, device="meta")
    windows = np.tile([size / 2, size / 2, size / 4], (8, 1))  # a face half the frame high
    counter = _BytesCounter()
    with counter:
        crop_video(frames, windows)
    return counter.bytes / 8


def gpu_unit_seconds(gpu: Gpu) -> dict[str, tuple[float, str]]:
    """Seconds per unit of the GPU work that is not counted in FLOPs, and how each was obtained."""
    traffic, crop = frame_metric_bytes(), face_crop_bytes()
    bandwidth = gpu.memory_bytes_per_second * gpu.utilisation
    frame = 3 * FRAME_SIZE * FRAME_SIZE  # bytes of one decoded uint8 frame
    fps = MTCNN_PUBLISHED_FPS * MTCNN_PUBLISHED_PIXELS / (FRAME_SIZE * FRAME_SIZE)  # its pyramid scales with pixels
    return {
        "frame_metrics": (traffic / bandwidth, (f"{traffic / 1e6:,.0f} MB read and written per pair (aten operations "
                                                f"counted on the meta device, none fused) at {gpu.utilisation:.0%} of "
                                                f"{gpu.memory_bytes_per_second / 1e12:g} TB/s")),
        "mtcnn": (1.0 / fps, (f"{MTCNN_PUBLISHED_SOURCE}, scaled to {FRAME_SIZE} px by pixels: {fps:.0f} fps; not "
                              "measured on an H100: its later stages cut each candidate box in a Python loop of small "
                              "kernels, so a faster GPU helps little")),
        "face_crops": (crop / bandwidth, (f"{crop / 1e6:,.1f} MB read and written per frame (crop_video's aten "
                                          f"operations counted on the meta device) at {gpu.utilisation:.0%} of "
                                          f"{gpu.memory_bytes_per_second / 1e12:g} TB/s")),
        "copy": (frame / gpu.copy_bytes_per_second, (f"{frame / 1e6:.2f} MB per frame at an assumed "
                                                     f"{gpu.copy_bytes_per_second / 1e9:g} GB/s")),
    }


@dataclass(frozen=True)
class NetworkSpec:
    """One piece of GPU work of a metric, and how many units of it the protocol needs.

    Attributes:
        key: entry of :func:`count_network_flops`, or ``None`` when the network is not counted.
        units: units of work in a protocol under a setting.
        note: why it is not counted, or what the units hold.
        asr: the ``--asr`` this row belongs to (``None``: every setting); shown beside the
            total of the other settings.
        timed: entry of :func:`gpu_unit_seconds` giving its seconds per unit, for work not counted
            in FLOPs.
    """

    metric: str
    network: str
    unit: str
    key: str | None
    units: Callable[[Protocol, Setting], float]
    note: str = ""
    asr: str | None = None
    timed: str | None = None


def _fad_patches(p: Protocol) -> int:
    return int((p.seconds - 0.015) // 0.96)  # metrics.audio_features.vggish_patches


def _speaker_partials(p: Protocol) -> int:
    from resemblyzer import VoiceEncoder

    wav_slices, _ = VoiceEncoder.compute_partial_slices(int(p.seconds * 16_000), 1.3, 0.75)  # embed_utterance's
    return len(wav_slices)


def lse_detections(p: Protocol, every: int) -> int:
    """Frames of one clip LSE's face detector runs on: every ``every``-th and the last (metrics.facecrop.detect_boxes)."""
    return math.ceil(p.frames / every) + (1 if (p.frames - 1) % every else 0)


def fvmd_windows(p: Protocol, stride: int) -> int:
    """16-frame windows of one clip at ``stride`` (metrics.fvmd.fvmd_windows)."""
    return (p.frames - 16) // stride + 1


NETWORKS: tuple[NetworkSpec, ...] = (
    NetworkSpec("FID", "Inception-v3 (pytorch-fid), 512 px -> 299", "frame", "inception",
                lambda p, s: 2 * p.clips * p.frames, "every frame, generated and real"),
    NetworkSpec("FVD", "I3D Kinetics-400, 224 px", "16-frame window", "i3d", lambda p, s: 2 * p.clips,
                "first 16 frames of each clip, generated and real"),
    NetworkSpec("KVD", "I3D again (its own copy, same windows)", "16-frame window", "i3d", lambda p, s: 2 * p.clips),
    NetworkSpec("FVMD", "PIPs++, 400 points, 16 iterations, 256 px", "16-frame window", "pips",
                lambda p, s: 2 * p.clips * fvmd_windows(p, s.fvmd_stride),
                "every window at the setting's stride, generated and real"),
    NetworkSpec("LPIPS", "AlexNet + LPIPS heads, 512 px", "frame pair", "lpips", lambda p, s: p.clips * p.frames),
    NetworkSpec("PSNR, SSIM", "elementwise maps and 11-tap Gaussian filters, 512 px", "frame pair", None,
                lambda p, s: p.clips * p.frames, "not counted: memory-bound, timed by the bytes they move",
                timed="frame_metrics"),
    NetworkSpec("FAD", "VGGish", "0.96 s patch", "vggish", lambda p, s: 2 * p.clips * _fad_patches(p),
                "generated and real"),
    NetworkSpec("LSE", "SyncNet v2, lip + audio streams", "5-frame window", "syncnet",
                lambda p, s: p.clips * (p.frames - 5)),
    NetworkSpec("LSE", "MTCNN face detector (facenet-pytorch)", "frame", None,
                lambda p, s: p.clips * lse_detections(p, s.lse_detect_every),
                "not counted: its later stages run on the boxes the first finds (data-dependent); every frame at "
                "detect_every 1, every 5th and the last at 5", timed="mtcnn"),
    NetworkSpec("LSE", "face crops: one grid_sample per 64 frames, 224 px", "frame", None,
                lambda p, s: p.clips * p.frames, "not counted: memory-bound, timed by the bytes it moves",
                timed="face_crops"),
    NetworkSpec("LSE", "S3FD face detector", "frame", None, lambda p, s: p.clips * lse_detections(p, s.lse_detect_every),
                "not counted: " + ("the timing uses MTCNN" if find_spec("face_alignment") else
                                   "face-alignment is not installed, so the suite crops with MTCNN")),
    NetworkSpec("Speaker sim.", "GE2E 3-layer LSTM (resemblyzer)", "1.6 s partial", "ge2e",
                lambda p, s: 2 * p.clips * _speaker_partials(p), "generated and ground truth"),
    NetworkSpec("DNSMOS", "P.835 + P.808 (ONNX)", "9 s window", None, lambda p, s: p.clips,
                "not counted: an ONNX graph run by onnxruntime on the CPU, timed below"),
    NetworkSpec("WER", "Whisper base.en (--asr whisper_base_en)", "30 s window", "whisper",
                lambda p, s: p.clips * math.ceil(p.seconds / 30.0), asr="whisper_base_en"),
    NetworkSpec("(all)", "copy of the decoded frames to the GPU", "frame", None, lambda p, s: 2 * p.clips * p.frames,
                "not counted: a copy, generated and ground truth", timed="copy"),
)
"""Every network of the suite (metrics.suite.SUITE) and the rest of its GPU work, with its units in a protocol."""


@dataclass(frozen=True)
class NetworkCost:
    """One GPU row of the estimate (neither per-unit figure: not counted, see ``note``)."""

    metric: str
    network: str
    unit: str
    units: float
    flops_per_unit: float | None
    source: str
    note: str
    in_total: bool
    seconds_per_unit: float | None = None

    @property
    def flops(self) -> float:
        """FLOPs of the whole protocol (0 when not counted)."""
        return 0.0 if self.flops_per_unit is None else self.units * self.flops_per_unit

    def seconds(self, flops_per_second: float) -> float:
        """Seconds at ``flops_per_second``, or from the seconds per unit of work not counted in FLOPs."""
        if self.flops_per_unit is None and self.seconds_per_unit is not None:
            return self.units * self.seconds_per_unit
        return self.flops / flops_per_second


def network_costs(flops: dict[str, tuple[float, str]], protocol: Protocol, setting: Setting = REFERENCE,
                  unit_seconds: dict[str, tuple[float, str]] | None = None) -> list[NetworkCost]:
    """The rows of :data:`NETWORKS` for ``protocol`` and ``setting``.

    Args:
        flops: :func:`count_network_flops`.
        protocol: clips and their length.
        setting: FVMD's stride and the recogniser.
        unit_seconds: :func:`gpu_unit_seconds`; without it, the rows it times count 0 s.
    """
    rows = []
    for spec in NETWORKS:
        per_unit, source = flops[spec.key] if spec.key is not None else (None, "")
        seconds = None
        if spec.timed is not None and unit_seconds is not None:
            seconds, source = unit_seconds[spec.timed]
        rows.append(NetworkCost(spec.metric, spec.network, spec.unit, float(spec.units(protocol, setting)), per_unit,
                                source, spec.note, spec.asr in (None, setting.asr), seconds))
    return rows


# --------------------------------------------------------------------------------------------
# Part 2: CPU work, timed on one core
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuCost:
    """One timed CPU part: ``seconds_per_clip_second`` on one core, ``passes`` times per clip-second.

    Attributes:
        suite_key: the metric of :data:`metrics.suite.SPECS` it belongs to (``None``: decoding),
            which says where it runs (:func:`place_cpu_work`).
        on_gpu: the part runs on the GPU instead when the device is one (PSNR and SSIM, the face
            detector); then it is a GPU row.
        where: ``"workers"`` (spread over the worker processes) or ``"main"`` (the process that
            runs the device metrics, one core).
    """

    metric: str
    work: str
    seconds_per_clip_second: float
    passes: int = 1
    suite_key: str | None = None
    on_gpu: bool = False
    where: str = "workers"

    def core_seconds(self, protocol: Protocol) -> float:
        """Core-seconds over the whole protocol."""
        return self.seconds_per_clip_second * self.passes * protocol.clip_seconds


def place_cpu_work(rows: list[CpuCost], setting: Setting) -> list[CpuCost]:
    """The CPU parts ``setting`` runs, each where ``experiments.evaluate`` runs it.

    Decoding and the metrics :func:`metrics.suite.runs_in_workers` names go to the workers; the
    CPU work of the device metrics (LSE's crops and MFCCs, the speaker encoder's VAD, FAD's log-mel
    patches) is done by the main process. Parts that move to the GPU, and PocketSphinx when
    Whisper transcribes, are left out.
    """
    from metrics.suite import SPECS, runs_in_workers

    placed = []
    for row in rows:
        if (row.on_gpu and setting.device != "cpu") or (row.suite_key == "wer" and setting.asr != "pocketsphinx"):
            continue
        spec = SPECS.get(row.suite_key) if row.suite_key is not None else None
        in_workers = spec is None or runs_in_workers(spec, setting.device, setting.asr == "pocketsphinx")
        placed.append(replace(row, where="workers" if in_workers else "main"))
    return placed


@dataclass
class Media:
    """What the CPU parts are timed on: paired video ``(T, 3, H, W)`` uint8 and 16 kHz audio ``(S,)``."""

    videos: list[tuple[torch.Tensor, torch.Tensor]]  # (generated, ground truth)
    wav: tuple[np.ndarray, np.ndarray]  # (generated, ground truth), float32
    decode_seconds_per_second: float
    source: str

    @property
    def video_seconds(self) -> float:
        """Seconds of video in :attr:`videos`."""
        return sum(v.shape[0] for v, _ in self.videos) / 25.0

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio in :attr:`wav`."""
        return self.wav[0].size / 16_000


def _noisy_video(video: torch.Tensor, seed: int) -> torch.Tensor:
    """A stand-in for a generated clip: the real frames with noise, so that the metrics do their full work."""
    g = torch.Generator().manual_seed(seed)
    return (video.int() + torch.randint(-8, 9, video.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def _noisy_wav(wav: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stand-in for generated speech: the real speech with noise."""
    rng = np.random.default_rng(seed)
    return np.clip(wav + 0.01 * rng.standard_normal(wav.size), -1, 1).astype(np.float32)


def load_media(video_seconds: float = 1.0, audio_seconds: float = 20.0, folder: Path = CLIPS) -> Media:
    """Two real clips' first ``video_seconds`` and ``audio_seconds`` of their speech, or synthetic media.

    Decoding is timed on the two clips whole, with :func:`experiments.evaluate.load_clip`.
    """
    from datamodules.media import read_audio
    from experiments.evaluate import load_clip

    paths = sorted(folder.glob("*.mp4"))[:5] if folder.is_dir() else []
    if len(paths) < 2:
        return _synthetic_media(video_seconds, audio_seconds)
    start, clips = time.perf_counter(), [load_clip(path) for path in paths[:2]]
    decode = (time.perf_counter() - start) / sum(c.video.shape[0] / 25.0 for c in clips)
    frames = int(video_seconds * 25)
    speech = np.concatenate([read_audio(path, sample_rate=16_000) for path in paths])
    speech = np.tile(speech, math.ceil(audio_seconds * 16_000 / speech.size))[: int(audio_seconds * 16_000)]
    videos = [(_noisy_video(c.video[:frames], i), c.video[:frames]) for i, c in enumerate(clips)]
    return Media(videos, (_noisy_wav(speech), speech), decode,
                 f"{len(paths[:2])} real 512 px clips ({', '.join(p.name for p in paths[:2])}) and "
                 f"{audio_seconds:g} s of their speech")


def _synthetic_media(video_seconds: float, audio_seconds: float) -> Media:
    """Random 512 px frames (no face: MTCNN searches the whole frame) and speech-like tones."""
    g = torch.Generator().manual_seed(0)
    t = np.arange(int(audio_seconds * 16_000)) / 16_000
    wav = (0.3 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(6 * np.pi * t))).astype(np.float32)
    videos = []
    for i in range(2):
        real = torch.randint(0, 256, (int(video_seconds * 25), 3, FRAME_SIZE, FRAME_SIZE), dtype=torch.uint8, generator=g)
        videos.append((_noisy_video(real, i), real))
    return Media(videos, (_noisy_wav(wav), wav), float("nan"),
                 "synthetic media (example clips not found; decoding not timed)")


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


AUDIO_PARTS = {
    "STOI": "stoi", "ESTOI": "estoi", "PESQ": "pesq", "MCD (dB)": "mcd", "MCD (paper)": "mcd_paper", "DNSMOS": "dnsmos",
    "Speaker sim.": "speaker_sim", "WER": "wer", "LSE": "lse", "FAD": "fad",
}
"""The metric of :data:`metrics.suite.SPECS` each timed audio part belongs to."""


def _audio_parts(media: Media) -> dict[str, tuple[str, Callable[[], object], Callable[[], object]]]:
    """Per metric: the work timed, a warm-up call on 1 s (loads models) and the timed call on all the speech."""
    from resemblyzer import preprocess_wav
    from resemblyzer.audio import wav_to_mel_spectrogram

    from metrics.asr import PocketSphinxRecognizer
    from metrics.audio_features import vggish_patches
    from metrics.dnsmos import DNSMOS
    from metrics.functional.lse import syncnet_mfcc
    from metrics.intelligibility import ESTOI, STOI
    from metrics.mcd import MelCepstralDistortion, PaperMFCCDistance
    from metrics.pesq import WidebandPESQ

    pred, real = (torch.from_numpy(w)[None] for w in media.wav)  # (1, S)
    short = (pred[:, :16_000], real[:, :16_000])
    paired = {"STOI": STOI(num_workers=1), "ESTOI": ESTOI(num_workers=1), "PESQ": WidebandPESQ(num_workers=1),
              "MCD (dB)": MelCepstralDistortion(), "MCD (paper)": PaperMFCCDistance()}
    work = {"MCD (dB)": "WORLD analysis + DTW, per pair", "MCD (paper)": "MFCCs, per pair"}
    parts = {name: (work.get(name, "per pair"), lambda m=m: m.update(*short), lambda m=m: m.update(pred, real))
             for name, m in paired.items()}
    dnsmos, asr = DNSMOS(num_threads=1), PocketSphinxRecognizer()

    def speaker(wavs: tuple[torch.Tensor, ...]) -> None:
        for wav in wavs:
            wav_to_mel_spectrogram(preprocess_wav(wav.numpy()[0]))

    def fad(wavs: tuple[torch.Tensor, ...]) -> None:
        for wav in wavs:
            vggish_patches(wav.numpy()[0])

    parts.update({
        "DNSMOS": ("onnxruntime, generated", lambda: dnsmos.update(short[0]), lambda: dnsmos.update(pred)),
        "Speaker sim.": ("VAD + mel, both clips", lambda: speaker(short), lambda: speaker((pred, real))),
        "WER": ("PocketSphinx (the default --asr)", lambda: asr(short[0]), lambda: asr(pred)),
        "LSE": ("MFCCs", lambda: syncnet_mfcc(short[0][0]), lambda: syncnet_mfcc(pred[0])),
        "FAD": ("log-mel patches, both clips", lambda: fad(short), lambda: fad((pred, real))),
    })
    return parts


def _face_box(media: Media, detector: Callable[[np.ndarray], list[np.ndarray]]) -> np.ndarray:
    """MTCNN's box of the face in the first frame (a centred square when the media hold no face)."""
    found = detector(media.videos[0][0][:1].permute(0, 2, 3, 1).numpy())[0]  # also loads MTCNN's weights
    if len(found):
        return found[:1]
    side = media.videos[0][0].shape[-1]
    return np.array([[side * 0.3, side * 0.3, side * 0.7, side * 0.7, 1.0]])


def _video_parts(media: Media) -> dict[str, tuple[str, str, bool, Callable[[], object]]]:
    """Per part: its metric, the work timed on every video of ``media``, whether a GPU takes it over, the call."""
    from metrics.facecrop import crop_video, crop_windows, follow_face, mtcnn_detector
    from metrics.image_quality import VideoPSNR, VideoSSIM

    detector, frames = mtcnn_detector(), [pred.permute(0, 2, 3, 1).numpy() for pred, _ in media.videos]
    box = _face_box(media, detector)

    def detect() -> None:
        for clip in frames:
            for start in range(0, len(clip), 32):  # crop_faces' batches
                detector(clip[start : start + 32])

    def boxes() -> list[np.ndarray]:  # follow and smooth, as if every frame's box were the first frame's face
        return [crop_windows(follow_face(dict.fromkeys(range(len(clip)), box), len(clip))[0]) for clip in frames]

    windows = boxes()

    def cut() -> None:
        for (pred, _), w in zip(media.videos, windows):
            crop_video(pred, w)

    psnr, ssim = VideoPSNR(), VideoSSIM()
    return {"PSNR": ("psnr", "torch on the CPU", True, lambda: [psnr.update(p[None], g[None]) for p, g in media.videos]),
            "SSIM": ("ssim", "torch on the CPU", True, lambda: [ssim.update(p[None], g[None]) for p, g in media.videos]),
            "LSE detection": ("lse", "face detection, MTCNN on the CPU, every frame", True, detect),
            "LSE boxes": ("lse", "face boxes: follow and smooth, every frame", False, boxes),
            "LSE crops": ("lse", "face crops: cut and resize (crop_video), every frame", True, cut)}


def time_cpu_work(media: Media) -> list[CpuCost]:
    """Seconds per clip-second of every CPU part of the suite, on one core (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [CpuCost("(all)", "decoding with experiments.evaluate.load_clip, generated + ground truth",
                        media.decode_seconds_per_second, passes=2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, (key, work, on_gpu, fn) in _video_parts(media).items():
                rows.append(CpuCost(name.split()[0], work, _seconds(fn) / media.video_seconds, suite_key=key,
                                    on_gpu=on_gpu))
            for name, (work, warm_up, fn) in _audio_parts(media).items():
                warm_up()
                rows.append(CpuCost(name, work, _seconds(fn) / media.audio_seconds, suite_key=AUDIO_PARTS[name]))
    finally:
        torch.set_num_threads(threads)
    return rows


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


@dataclass
class EvaluationEstimate:
    """Seconds of the protocol under one setting.

    The counted networks run at ``flops_per_second`` (the rest of the GPU work at its own rate,
    :class:`NetworkCost`); the CPU parts run where :attr:`CpuCost.where` says: ``"workers"``
    spread over ``workers`` processes, ``"main"`` in the process that drives the GPU. With
    ``overlap`` (what ``experiments.evaluate`` does: the workers decode and score the next clips
    while the main process runs the networks on the current one) the total is the longer of the
    two processes' parts; without it, everything is added.
    """

    networks: list[NetworkCost]
    cpu: list[CpuCost]
    protocol: Protocol
    flops_per_second: float
    workers: int = 16
    overlap: bool = False
    setting: Setting | None = None

    def cpu_seconds(self, row: CpuCost) -> float:
        """Wall seconds of one CPU part: its core-seconds over :attr:`workers`, or on one core in the main process."""
        return row.core_seconds(self.protocol) / (self.workers if row.where == "workers" else 1)

    @property
    def gpu_flops(self) -> float:
        """FLOPs of the networks in the total."""
        return sum(row.flops for row in self.networks if row.in_total)

    @property
    def gpu_total(self) -> float:
        """GPU seconds of the rows in the total."""
        return sum(row.seconds(self.flops_per_second) for row in self.networks if row.in_total)

    @property
    def cpu_total(self) -> float:
        """Wall seconds of all CPU parts (workers' and main process')."""
        return sum(self.cpu_seconds(row) for row in self.cpu)

    @property
    def main_total(self) -> float:
        """Seconds of the main process: the GPU work and its own CPU work, one after the other."""
        return self.gpu_total + sum(self.cpu_seconds(row) for row in self.cpu if row.where == "main")

    @property
    def workers_total(self) -> float:
        """Wall seconds of the workers' parts."""
        return sum(self.cpu_seconds(row) for row in self.cpu if row.where == "workers")

    @property
    def total(self) -> float:
        """The longer of the main process and the workers when they overlap, else GPU then CPU seconds."""
        return max(self.main_total, self.workers_total) if self.overlap else self.gpu_total + self.cpu_total


def estimate_setting(flops: dict[str, tuple[float, str]], unit_seconds: dict[str, tuple[float, str]],
                     cpu: list[CpuCost], protocol: Protocol, gpu: Gpu, setting: Setting) -> EvaluationEstimate:
    """The protocol under ``setting``: its GPU rows, its CPU parts where the code runs them, overlapped."""
    return EvaluationEstimate(network_costs(flops, protocol, setting, unit_seconds), place_cpu_work(cpu, setting),
                              protocol, gpu.flops_per_second * gpu.utilisation, setting.workers, overlap=True,
                              setting=setting)


def _gpu_cell(est: EvaluationEstimate, row: NetworkCost) -> str:
    if row.flops_per_unit is None and row.seconds_per_unit is None:
        return "-"
    return f"{row.seconds(est.flops_per_second):,.1f}" + ("" if row.in_total else "*")


def _network_lines(ests: list[EvaluationEstimate]) -> list[str]:
    names = [est.setting.name if est.setting else "s" for est in ests]
    lines = ["  | metric | GPU work | unit | GFLOP per unit | units | PFLOP | " + " | ".join(f"{n} s" for n in names)
             + " | how |", "  |---|---|---|---:|---:|---:|" + "---:|" * len(ests) + "---|"]
    for i, row in enumerate(ests[0].networks):
        rows = [est.networks[i] for est in ests]
        flop = "-" if row.flops_per_unit is None else f"{row.flops_per_unit / 1e9:,.2f}"
        units = " / ".join(dict.fromkeys(f"{r.units:,.0f}" for r in rows))
        pflop = " / ".join(dict.fromkeys(f"{r.flops / 1e15:,.2f}" for r in rows))
        how = "; ".join(part for part in (row.source, row.note) if part)
        lines.append(f"  | {row.metric} | {row.network} | {row.unit} | {flop} | {units} | {pflop} | "
                     + " | ".join(_gpu_cell(est, r) for est, r in zip(ests, rows)) + f" | {how} |")
    return lines


def _cpu_cell(est: EvaluationEstimate, row: CpuCost) -> str:
    placed = next((r for r in est.cpu if (r.metric, r.work) == (row.metric, row.work)), None)
    if placed is None:
        return "GPU" if row.on_gpu else "-"
    return f"{placed.where} {est.cpu_seconds(placed):,.0f}"


def _cpu_lines(ests: list[EvaluationEstimate], timed: list[CpuCost]) -> list[str]:
    names = [est.setting.name if est.setting else "s" for est in ests]
    p = ests[0].protocol
    lines = ["  | metric | CPU work | s per clip-second, 1 core | x | core-hours | "
             + " | ".join(f"{n}: where, s" for n in names) + " |", "  |---|---|---:|---:|---:|" + "---:|" * len(ests)]
    for row in timed:
        lines.append(f"  | {row.metric} | {row.work} | {row.seconds_per_clip_second:.3f} | {row.passes} | "
                     f"{row.core_seconds(p) / 3600:,.2f} | " + " | ".join(_cpu_cell(est, row) for est in ests) + " |")
    return lines


def _verdict(est: EvaluationEstimate, goal_s: float) -> str:
    met = "met" if est.total <= goal_s else "NOT met"
    name = est.setting.name if est.setting else "evaluation"
    if not est.overlap:
        return (f"  {name} total: {est.gpu_total:,.0f} s GPU + {est.cpu_total:,.0f} s CPU = {est.total:,.0f} s "
                f"({est.total / 60:,.0f} min); goal {goal_s / 60:g} min: {met}")
    main_cpu = est.main_total - est.gpu_total
    return (f"  {name} total: main process {est.gpu_total:,.0f} s GPU + {main_cpu:,.0f} s CPU = {est.main_total:,.0f} s, "
            f"workers {est.workers_total:,.0f} s over {est.workers}; overlapped: = {est.total:,.0f} s "
            f"({est.total / 60:,.0f} min); goal {goal_s / 60:g} min: {met}")


def format_estimates(ests: list[EvaluationEstimate], goal_s: float = 900.0, timed: list[CpuCost] | None = None) -> str:
    """Markdown tables of one or more settings side by side, then each setting's total and verdict on ``goal_s``.

    Args:
        ests: the settings' estimates (same protocol and network rows).
        goal_s: the goal in seconds.
        timed: every timed CPU part (default: the first estimate's), so that parts a setting
            moves to the GPU or leaves out still have their row.
    """
    lines = _network_lines(ests)
    lines += ["  (* beside the total: not run by that setting)", "", *_cpu_lines(ests, timed or ests[0].cpu), ""]
    for est in ests:
        lines.append(_verdict(est, goal_s))
        lines.append("    largest parts: " + ", ".join(f"{name} {secs:,.0f} s" for name, secs in largest_parts(est)))
    return "\n".join(lines)


def format_estimate(est: EvaluationEstimate, goal_s: float = 900.0) -> str:
    """One setting's estimate as Markdown tables and a verdict on ``goal_s``."""
    return format_estimates([est], goal_s)


def largest_parts(est: EvaluationEstimate, count: int = 4) -> list[tuple[str, float]]:
    """The ``count`` parts of the total that take longest: ``(metric: network or work, seconds)``."""
    parts = [(f"{row.metric}: {row.network}", row.seconds(est.flops_per_second)) for row in est.networks if row.in_total]
    parts += [(f"{row.metric}: {row.work} ({row.where})", est.cpu_seconds(row)) for row in est.cpu]
    return sorted(parts, key=lambda part: -part[1])[:count]
