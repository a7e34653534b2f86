"""Face detection, the square face crop and the face/lip masks (paper Sec. 3, E_vs).

* Detection: facenet-pytorch's :class:`~facenet_pytorch.MTCNN` (its weights ship in the wheel),
  one detector per process on the CPU (:func:`get_detector`).
* Crop: the face box is scaled about its centre (``box_scale``, ~1.45), made square and
  rounded to even pixels; parts outside the frame are filled by edge replication. Every frame
  of a clip is cut with the same box, then resized with FFmpeg's swscale (bilinear, through
  PyAV; see :func:`resize_image` for why not torch or PIL). Decoded video is cut and resized
  in its own YUV format by :class:`FrameCropper` (an FFmpeg filter graph), which saves the
  round trip through RGB; even box corners let it cut 4:2:0 chroma without resampling.
* Masks, drawn in crop coordinates from the 5 MTCNN landmarks (left eye, right eye, nose, left
  and right mouth corner): the face mask is the ellipse inscribed in the face box, the lip mask
  an ellipse around the mouth corners widened by a share of the inter-ocular distance (IOD),
  so that it covers the open mouth and the chin movement of speech at any face size.
"""

from __future__ import annotations

import itertools
import logging
import os
from fractions import Fraction
from typing import Optional, Sequence

import av
import numpy as np
import torch

log = logging.getLogger(__name__)

# Landmarks of an average frontal face as fractions of an MTCNN face box (x, y): used when a
# dataset gives only a box and the detector finds no face inside it.
MEAN_LANDMARKS: np.ndarray = np.array(
    [[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.78], [0.65, 0.78]], np.float64
)
LIP_MARGIN_X: float = 0.25
"""Lip-mask half-width beyond each mouth corner, in inter-ocular distances."""
LIP_MARGIN_Y: float = 0.35
"""Lip-mask half-height above and below the mouth line, in inter-ocular distances."""

_DETECTORS: dict = {}


def get_detector(thresholds: Sequence[float] = (0.6, 0.7, 0.7), min_face_size: int = 20):
    """The process' MTCNN (created on first use, CPU, one intra-op thread when in a worker)."""
    key = (tuple(float(t) for t in thresholds), int(min_face_size))
    if key not in _DETECTORS:
        from facenet_pytorch import MTCNN  # weights ship in the wheel

        _DETECTORS[key] = MTCNN(keep_all=True, thresholds=list(key[0]), min_face_size=key[1], device="cpu")
        log.debug("MTCNN created in process %d with thresholds %s", os.getpid(), key[0])
    return _DETECTORS[key]


def detect_face(
    image: np.ndarray, thresholds: Sequence[float] = (0.6, 0.7, 0.7), min_face_size: int = 20
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Most confident face in an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB.
        thresholds: MTCNN's three stage thresholds.
        min_face_size: smallest face side in pixels that MTCNN searches for.

    Returns:
        ``(box, landmarks)``: box (4,) float64 [x0, y0, x1, y1] and landmarks (5, 2) float64 in
        image pixels, or ``None`` when no face is found.
    """
    detector = get_detector(thresholds, min_face_size)
    with torch.no_grad():
        boxes, probs, points = detector.detect(np.ascontiguousarray(image), landmarks=True)
    if boxes is None or len(boxes) == 0:
        return None
    best = int(np.argmax(probs))
    return np.asarray(boxes[best], np.float64), np.asarray(points[best], np.float64).reshape(5, 2)


def landmarks_in_box(
    image: np.ndarray, box: Sequence[float], thresholds: Sequence[float] = (0.6, 0.7, 0.7)
) -> np.ndarray:
    """Landmarks of the face inside a given box: MTCNN on the box (with margin), else the mean face.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        box: [x0, y0, x1, y1] face box in pixels.

    Returns:
        (5, 2) float64 landmarks in image pixels. When the detector finds no face whose centre
        lies inside ``box``, :data:`MEAN_LANDMARKS` placed in the box (an approximation).
    """
    box = np.asarray(box, np.float64)
    x0, y0, x1, y1 = square_box(box, 1.5)
    patch = crop_square(image, (x0, y0, x1, y1))
    found = detect_face(patch, thresholds, min_face_size=max(12, int((x1 - x0) / 6)))
    if found is not None:
        marks = found[1] + [x0, y0]
        centre = marks.mean(0)
        if box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]:
            return marks
    log.debug("no landmarks found inside box %s: using the mean-face layout", box.tolist())
    return box[:2] + MEAN_LANDMARKS * (box[2:] - box[:2])


def square_box(box: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    """Scale ``box`` [x0, y0, x1, y1] about its centre and make it a square of whole pixels.

    The side is ``scale * max(width, height)`` rounded up to an even number and the top-left
    corner is rounded to even coordinates (so 4:2:0 chroma planes are cut at whole samples);
    the result may extend past the image (see :func:`crop_square`).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = int(np.ceil(scale * max(x1 - x0, y1 - y0) / 2.0)) * 2
    if side <= 0:
        raise ValueError(f"face box {list(box)} has no area")
    left = 2 * int(round(((x0 + x1) / 2.0 - side / 2.0) / 2.0))
    top = 2 * int(round(((y0 + y1) / 2.0 - side / 2.0) / 2.0))
    return left, top, left + side, top + side


def crop_square(image: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Cut ``crop`` (x0, y0, x1, y1 integers) out of (H, W, C) ``image``; outside pixels repeat the edge."""
    x0, y0, x1, y1 = crop
    h, w = image.shape[:2]
    pad = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
    inner = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if inner.size == 0:
        raise ValueError(f"crop {crop} lies outside the {w}x{h} image")
    if any(p for pair in pad[:2] for p in pair):
        inner = np.pad(inner, pad, mode="edge")
    return inner


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one (h, w, 3) uint8 RGB image to (size, size, 3) with FFmpeg's swscale (bilinear).

    swscale widens its bilinear filter when shrinking, so downscaling is antialiased; it is
    about 2.5x faster than PIL and 6x faster than ``torch.interpolate(antialias=True)`` on one
    CPU thread, and agrees with PIL's bilinear resize within 0.1 grey level on average.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=size, height=size, interpolation="BILINEAR").to_ndarray()  # (S, S, 3)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize (T, h, w, 3) uint8 frames to (T, size, size, 3) uint8 (see :func:`resize_image`)."""
    return np.stack([resize_image(frame, size) for frame in frames])


class FrameCropper:
    """Cut a square box out of decoded video frames and resize it, inside FFmpeg (no RGB round trip).

    The same cut as :func:`crop_square` followed by :func:`resize_image`, done on the frame's
    own planes by a filter graph (``crop``, then ``pad`` + ``fillborders=smear`` for the part
    outside the frame, which repeats the edge pixels, then bilinear ``scale``), with yuv420p
    frames out, ready for the H.264 encoder. On 512x512 H.264 frames it takes ~0.2 ms where
    RGB conversion + numpy crop + swscale take ~6 ms. The result differs from the RGB path
    only where chroma is resampled in another order and by rounding (on average 0.35 grey
    levels on the real clips, about one on a sharp photo).

    The corners must be even (as :func:`square_box` gives them), so that 4:2:0 chroma is cut at
    whole samples. On a frame of odd width (height) that the box overhangs, the last column
    (row) counts as outside and is replaced by the one before it. A box more than half outside
    the frame on one side (not a face box's square) goes through the RGB path instead.

    Args:
        crop: (x0, y0, x1, y1) even integer box in source pixels, square; may extend past the frame.
        size: side of the output frames.
        threads: FFmpeg filter threads; 1 (default) suits one process per core, 0 lets FFmpeg choose.
    """

    def __init__(self, crop: Sequence[int], size: int, threads: int = 1) -> None:
        x0, y0, x1, y1 = (int(v) for v in crop)
        if x1 - x0 != y1 - y0 or x1 <= x0:
            raise ValueError(f"crop {list(crop)} is not a non-empty square")
        if any(v % 2 for v in (x0, y0, x1, y1)):
            raise ValueError(f"crop {list(crop)} has odd corners (4:2:0 chroma needs even ones, see square_box)")
        self.crop, self.size, self.threads = (x0, y0, x1, y1), int(size), int(threads)
        self._graph, self._key = None, None
        self._last_in, self._last_out = None, None

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The (size, size) yuv420p crop of ``frame`` (a frame given twice in a row is cut once)."""
        if frame is self._last_in:
            return self._last_out
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:
            self._graph, self._key = self._build(*key), key
        if self._graph is None:  # the box lies mostly outside the frame: the RGB path
            image = resize_image(crop_square(frame.to_ndarray(format="rgb24"), self.crop), self.size)
            out = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        else:
            self._graph.push(frame)
            out = self._graph.pull()
        self._last_in, self._last_out = frame, out
        return out

    def _build(self, width: int, height: int, pix_fmt: str) -> Optional[av.filter.Graph]:
        x0, y0, x1, y1 = self.crop
        # the part inside the frame, with even sides: every border filled below is then even too
        if min(x1, width) <= max(0, x0) or min(y1, height) <= max(0, y0):
            raise ValueError(f"crop {self.crop} lies outside the {width}x{height} image")
        ix0, iy0 = max(0, x0), max(0, y0)
        ix1 = x1 if x1 <= width else width - width % 2
        iy1 = y1 if y1 <= height else height - height % 2
        left, top, right, bottom, side = ix0 - x0, iy0 - y0, x1 - ix1, y1 - iy1, x1 - x0
        if ix1 <= ix0 or iy1 <= iy0 or 2 * max(left, top, right, bottom) > side:
            return None  # fillborders smears at most half the frame per side
        graph = av.filter.Graph()
        graph.threads = self.threads
        nodes = [
            graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=Fraction(1, 1000)),
            graph.add("crop", f"w={ix1 - ix0}:h={iy1 - iy0}:x={ix0}:y={iy0}:exact=1"),
        ]
        if left or top or right or bottom:
            nodes.append(graph.add("pad", f"w={side}:h={side}:x={left}:y={top}"))
            nodes.append(graph.add("fillborders", f"left={left}:right={right}:top={top}:bottom={bottom}:mode=smear"))
        nodes.append(graph.add("scale", f"w={self.size}:h={self.size}:flags=bilinear"))
        nodes.append(graph.add("format", "pix_fmts=yuv420p"))
        nodes.append(graph.add("buffersink"))
        for src, dst in itertools.pairwise(nodes):
            src.link_to(dst)
        graph.configure()
        return graph


def to_crop_coords(points: np.ndarray, crop: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Map (N, 2) source pixels to pixels of the ``size`` x ``size`` resized crop."""
    scale = size / float(crop[2] - crop[0])
    return (np.asarray(points, np.float64) - [crop[0], crop[1]]) * scale


def _ellipse(size: int, centre: np.ndarray, half_axes: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    half_axes = np.maximum(half_axes, 0.5)
    inside = ((xx - centre[0]) / half_axes[0]) ** 2 + ((yy - centre[1]) / half_axes[1]) ** 2 <= 1.0
    return inside.astype(np.uint8)


def face_mask(box: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 {0, 1}: the ellipse inscribed in face ``box`` [x0, y0, x1, y1] (crop pixels)."""
    box = np.asarray(box, np.float64)
    return _ellipse(size, (box[:2] + box[2:]) / 2.0, (box[2:] - box[:2]) / 2.0)


def lip_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 {0, 1}: ellipse around the mouth corners (crop pixels), sized by the IOD.

    Half-width: half the mouth width + ``LIP_MARGIN_X`` IOD; half-height: ``LIP_MARGIN_Y`` IOD.
    """
    marks = np.asarray(landmarks, np.float64).reshape(5, 2)
    iod = float(np.linalg.norm(marks[1] - marks[0]))
    left, right = marks[3], marks[4]
    centre = (left + right) / 2.0
    half_w = float(np.linalg.norm(right - left)) / 2.0 + LIP_MARGIN_X * iod
    return _ellipse(size, centre, np.array([half_w, LIP_MARGIN_Y * iod]))
