"""Face crops for SyncNet from full-frame talking-face videos (syncnet_python's run_pipeline).

Steps, as in the reference ``run_pipeline.py``:

1. detect faces in every frame (every ``detect_every``-th frame, the rest interpolated):
   S3FD at a 0.25 scale with confidence >= 0.9 when its weights (registry entry ``s3fd``,
   ``sfd_face.pth``) and the ``face-alignment`` package (which ships the S3FD network and its
   box decoding) are present, facenet-pytorch's MTCNN (probability >= 0.9) otherwise;
2. follow one face: the detection overlapping the previous one most (IoU > 0.5), else the most
   confident; frames without a detection are interpolated linearly from their neighbours;
3. box half-size ``s = max(w, h) / 2`` and centre, each median-filtered over 13 frames
   (``scipy.signal.medfilt``, zero-padded at the ends as in the reference);
4. crop ``[cy - s, cy + 1.8 s] x [cx - 1.4 s, cx + 1.4 s]`` (a 1.4x box, extended downwards to
   the chin) from the frame padded with grey 110, resized bilinearly to 224x224: all frames of
   a clip at once on the metric's device (:func:`crop_video`), the samples :func:`crop_frame`
   takes one frame at a time.

The result says which detector ran (``FaceCrops.detector``): scores computed on MTCNN crops
are close to, but not the same as, the reference's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import medfilt
from torch import Tensor

from common.frozen import freeze
from metrics.errors import MetricInputError

log = logging.getLogger(__name__)

CROP_SIZE = 224
CROP_SCALE = 0.4  # run_pipeline's --crop_scale
PAD_VALUE = 110
CONF_THRESHOLD = 0.9
S3FD_SCALE = 0.25  # run_pipeline's --facedet_scale
S3FD_MEAN_RGB = (123.0, 117.0, 104.0)  # the reference subtracts BGR (104, 117, 123) from an RGB frame's channels reversed
SMOOTH_KERNEL = 13
IOU_THRESHOLD = 0.5

Detector = Callable[[np.ndarray], list[np.ndarray]]
"""``(N, H, W, 3)`` uint8 RGB frames -> per frame a ``(K, 5)`` array of x1, y1, x2, y2, score."""


@dataclass
class FaceCrops:
    """Face crops of one video.

    Attributes:
        frames: ``(T, 224, 224, 3)`` uint8 RGB.
        boxes: ``(T, 4)`` float64 x1, y1, x2, y2 of the followed face (after interpolation).
        detector: ``"s3fd"`` or ``"mtcnn"`` (or the name given to an injected detector).
        detected: frames where the detector found the face (the rest were interpolated).
    """

    frames: np.ndarray
    boxes: np.ndarray
    detector: str
    detected: int


# --------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------


def s3fd_available() -> bool:
    """True when both the ``face-alignment`` package and the ``s3fd`` weights are present."""
    from importlib.util import find_spec

    from metrics.registry import available

    return find_spec("face_alignment") is not None and available("s3fd")


def load_s3fd(path: str | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """face-alignment's S3FD network with ``sfd_face.pth`` (registry entry ``s3fd``) loaded, on ``device``."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from metrics.registry import weights_path

    net = s3fd()
    state = torch.load(path or weights_path("s3fd"), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return freeze(net).to(device)


@functools.cache
def _s3fd(device: torch.device) -> torch.nn.Module:
    """The process' S3FD with the registry's weights, one per device (loaded once, not per clip)."""
    return load_s3fd(device=device)


def s3fd_detector(net: torch.nn.Module, scale: float = S3FD_SCALE, conf: float = CONF_THRESHOLD) -> Detector:
    """Frame-wise S3FD as the reference runs it (scaled frame, RGB minus mean, NMS at 0.1), on ``net``'s device."""
    from face_alignment.detection.sfd.bbox import nms
    from face_alignment.detection.sfd.detect import get_predictions

    device = next(net.parameters()).device
    mean = torch.tensor(S3FD_MEAN_RGB, device=device).view(1, 3, 1, 1)

    def detect(frames: np.ndarray) -> list[np.ndarray]:
        out = []
        for frame in frames:
            x = torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False) - mean
            with torch.no_grad():
                olist = list(net(x))
            for i in range(len(olist) // 2):
                olist[2 * i] = F.softmax(olist[2 * i], dim=1)
            boxes = get_predictions([o.cpu().numpy() for o in olist], 1)
            boxes = np.asarray(boxes[0]) if len(boxes) and np.asarray(boxes).size else np.zeros((0, 5))
            boxes = boxes[boxes[:, 4] > conf] if boxes.size else np.zeros((0, 5))
            if len(boxes):
                boxes = boxes[nms(boxes, 0.1)]
                boxes[:, :4] /= scale
            out.append(boxes.reshape(-1, 5))
        return out

    detect.name = "s3fd"
    return detect


@functools.cache
def _mtcnn(device: torch.device):
    """The process' MTCNN on ``device``: facenet-pytorch's default stage thresholds (0.6, 0.7, 0.7)
    and 20 px smallest face, as the preprocessing's; all faces kept."""
    from facenet_pytorch import MTCNN  # weights ship in the wheel

    return MTCNN(keep_all=True, thresholds=[0.6, 0.7, 0.7], min_face_size=20, device=device)


def mtcnn_detector(conf: float = CONF_THRESHOLD, device: str | torch.device = "cpu") -> Detector:
    """facenet-pytorch's MTCNN (weights in the wheel) on ``device``, faces with probability >= ``conf``."""
    mtcnn = _mtcnn(torch.device(device))

    def detect(frames: np.ndarray) -> list[np.ndarray]:
        boxes, probs = mtcnn.detect(list(frames))
        out = []
        for b, p in zip(boxes, probs):
            if b is None:
                out.append(np.zeros((0, 5)))
                continue
            dets = np.concatenate([np.asarray(b, np.float64), np.asarray(p, np.float64)[:, None]], 1)
            out.append(dets[dets[:, 4] >= conf])
        return out

    detect.name = "mtcnn"
    return detect


def default_detector(device: str | torch.device = "cpu") -> Detector:
    """S3FD when available (see :func:`s3fd_available`), else MTCNN (``detector.name`` says which), on ``device``."""
    if s3fd_available():
        return s3fd_detector(_s3fd(torch.device(device)))
    log.info("S3FD unavailable (needs face-alignment and sfd_face.pth): cropping with MTCNN")
    return mtcnn_detector(device=device)


# --------------------------------------------------------------------------------------------
# Tracking, smoothing, cropping
# --------------------------------------------------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def follow_face(detections: dict[int, np.ndarray], num_frames: int) -> tuple[np.ndarray, int]:
    """One box per frame: follow the face by IoU, interpolate frames without a detection.

    Args:
        detections: frame index -> ``(K, 5)`` detections of that frame.
        num_frames: video length.

    Returns:
        ``(T, 4)`` boxes and the number of frames with a followed detection.

    Raises:
        MetricInputError: no face in any frame.
    """
    frames, picked, prev = [], [], None
    for index in sorted(detections):
        dets = detections[index]
        if len(dets) == 0:
            continue
        ious = [_iou(d, prev) for d in dets] if prev is not None else []
        best = int(np.argmax(ious)) if ious and max(ious) > IOU_THRESHOLD else int(np.argmax(dets[:, 4]))
        prev = dets[best, :4]
        frames.append(index)
        picked.append(prev)
    if not picked:
        raise MetricInputError("LSE", f"no face found in any of {num_frames} frames")
    picked_arr = np.stack(picked)  # (K, 4)
    grid = np.arange(num_frames)
    boxes = np.stack([np.interp(grid, frames, picked_arr[:, j]) for j in range(4)], 1)  # (T, 4)
    return boxes, len(frames)


def crop_windows(boxes: np.ndarray) -> np.ndarray:
    """Smoothed ``(T, 3)`` centre x, centre y and half-size s of the crop per frame."""
    s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    return np.stack([medfilt(v, kernel_size=SMOOTH_KERNEL) for v in (cx, cy, s)], 1)


def crop_frame(frame: np.ndarray, cx: float, cy: float, s: float, size: int = CROP_SIZE) -> np.ndarray:
    """Crop ``(H, W, 3)`` uint8 around one face as the reference does, resized to ``size``."""
    pad = int(s * (1 + 2 * CROP_SCALE))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
    my, mx = cy + pad, cx + pad
    face = padded[int(my - s) : int(my + s * (1 + 2 * CROP_SCALE)), int(mx - s * (1 + CROP_SCALE)) : int(mx + s * (1 + CROP_SCALE))]
    if face.size == 0:
        raise MetricInputError("LSE", f"empty face crop at centre ({cx:.1f}, {cy:.1f}) size {s:.1f}")
    x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].float()  # (1, 3, h, w)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (1, 3, 224, 224)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _crop_bounds(windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(T, 4)`` int rows ``r0, r1`` and columns ``c0, c1`` of each crop, in frame coordinates.

    The reference's slice of the frame padded by ``int(1.8 s)`` (numpy's slice semantics kept,
    so that a crop reaching past the padding is cut as the reference cuts it); negative or past
    the frame: the grey padding.
    """
    bounds = np.empty((len(windows), 4), np.int64)
    for t, (cx, cy, s) in enumerate(windows):
        pad = int(s * (1 + 2 * CROP_SCALE))
        my, mx = cy + pad, cx + pad
        r0, r1, _ = slice(int(my - s), int(my + s * (1 + 2 * CROP_SCALE))).indices(height + 2 * pad)
        c0, c1, _ = slice(int(mx - s * (1 + CROP_SCALE)), int(mx + s * (1 + CROP_SCALE))).indices(width + 2 * pad)
        if r1 <= r0 or c1 <= c0:
            raise MetricInputError("LSE", f"empty face crop at centre ({cx:.1f}, {cy:.1f}) size {s:.1f}")
        bounds[t] = r0 - pad, r1 - pad, c0 - pad, c1 - pad
    return bounds


def _sample_grid(start: Tensor, stop: Tensor, extent: int, size: int) -> Tensor:
    """``(N, size)`` grid_sample coordinates resizing ``[start, stop)`` of an axis of ``extent`` pixels.

    The source positions of ``F.interpolate(mode="bilinear", align_corners=False)`` on the crop,
    clamped to the crop's own first and last pixel (as interpolate and cv2.resize clamp at the
    border of the image they are given), then mapped to the whole frame's normalised coordinates.
    """
    length = (stop - start).to(torch.float64)[:, None]  # (N, 1)
    dst = torch.arange(size, dtype=torch.float64, device=start.device)[None] + 0.5  # (1, size)
    src = torch.minimum((dst * length / size - 0.5).clamp(min=0), length - 1) + start[:, None]  # (N, size) pixels
    return ((2 * src + 1) / extent - 1).float()


def crop_video(video: Tensor, windows: np.ndarray, size: int = CROP_SIZE, chunk: int = 64) -> Tensor:
    """:func:`crop_frame` on every frame at once, on ``video``'s device.

    One ``grid_sample`` per chunk of frames instead of a pad, a slice and a resize per frame:
    the same bilinear samples as :func:`crop_frame` (up to float rounding, at most one uint8
    level). The grey padding comes from sampling ``frame - 110`` with zeros outside the frame.

    Args:
        video: ``(T, 3, H, W)`` uint8 RGB.
        windows: ``(T, 3)`` centre x, centre y and half-size of each crop (:func:`crop_windows`).
        size: output side.
        chunk: frames per ``grid_sample`` call (bounds its float32 copies).

    Returns:
        ``(T, 3, size, size)`` uint8 on ``video``'s device.

    Raises:
        MetricInputError: a window gives an empty crop.
    """
    _, _, height, width = video.shape
    bounds = torch.from_numpy(_crop_bounds(np.asarray(windows, np.float64), height, width)).to(video.device)
    out = []
    for t in range(0, len(video), chunk):
        b = bounds[t : t + chunk]
        ys, xs = _sample_grid(b[:, 0], b[:, 1], height, size), _sample_grid(b[:, 2], b[:, 3], width, size)
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1)  # (n, size, size, 2): x, y
        frames = video[t : t + chunk].float() - PAD_VALUE
        crops = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + PAD_VALUE
        out.append(crops.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def detect_boxes(frames: np.ndarray, detector: Detector, detect_every: int = 1, batch: int = 32) -> tuple[np.ndarray, int]:
    """The followed face's ``(T, 4)`` box per frame, detecting on every ``detect_every``-th frame and the last.

    Boxes between detections are interpolated linearly (:func:`follow_face`); returns them and
    the number of frames with a followed detection.

    Raises:
        ValueError: ``detect_every`` is not an integer >= 1.
        MetricInputError: no face found.
    """
    if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
        raise ValueError(f"detect_every must be an integer >= 1 (frames between detections), got {detect_every!r}")
    index = list(range(0, len(frames), detect_every))
    if index[-1] != len(frames) - 1:
        index.append(len(frames) - 1)
    dets: dict[int, np.ndarray] = {}
    for start in range(0, len(index), batch):
        chunk = index[start : start + batch]
        dets.update(zip(chunk, detector(frames[chunk])))
    return follow_face(dets, len(frames))


def crop_faces(
    frames: np.ndarray,
    detector: Detector | None = None,
    detector_name: str | None = None,
    detect_every: int = 1,
    device: str | torch.device = "cpu",
) -> FaceCrops:
    """224x224 SyncNet face crops of a full-frame video.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        detector: frame-batch detector (see :data:`Detector`); ``None`` picks S3FD or MTCNN on ``device``.
        detector_name: name reported (default: the detector's ``name`` attribute, else "custom").
        detect_every: run the detector on every n-th frame (and the last) only, the boxes between
            interpolated (faster; 1 as the reference).
        device: where the crops are cut and resized (:func:`crop_video`).

    Returns:
        :class:`FaceCrops`.

    Raises:
        MetricInputError: bad frame array or no face found.
        ValueError: bad ``detect_every``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise MetricInputError("LSE", f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if detector is None:
        detector = default_detector(device)
    detector_name = detector_name or getattr(detector, "name", "custom")
    boxes, found = detect_boxes(frames, detector, detect_every)
    video = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2)  # (T, 3, H, W)
    crops = crop_video(video, crop_windows(boxes)).permute(0, 2, 3, 1).cpu().numpy()  # (T, 224, 224, 3)
    return FaceCrops(crops, boxes, detector_name, found)
