"""SyncNet face crops: geometry of run_pipeline's crop, tracking, interpolation, detectors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import medfilt

from metrics.errors import MetricInputError
from metrics.facecrop import (
    crop_faces,
    crop_frame,
    crop_windows,
    follow_face,
    s3fd_available,
)


def _reference_crop(image: np.ndarray, x: float, y: float, bs: float, cs: float = 0.4) -> np.ndarray:
    """run_pipeline's ``crop_video`` slice for one frame, before its resize to 224."""
    bsi = int(bs * (1 + 2 * cs))
    frame = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
    my, mx = y + bsi, x + bsi
    return frame[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]


def test_crop_matches_reference_slice_and_is_extended_downwards() -> None:
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    ref = _reference_crop(image, 80.0, 40.0, 20.0)
    assert ref.shape == (56, 56, 3)  # 1.4 x the 40-pixel box
    ours = crop_frame(image, 80.0, 40.0, 20.0, size=56)  # same size: the resize is the identity
    np.testing.assert_array_equal(ours, ref)
    top = crop_frame(image, 80.0, 5.0, 20.0, size=56)  # face near the top: grey padding above
    assert (top[:5] == 110).all()
    assert crop_frame(image, 80.0, 40.0, 20.0).shape == (224, 224, 3)


def test_windows_are_median_filtered_like_reference() -> None:
    boxes = np.stack([np.full(30, 10.0), np.full(30, 20.0), np.full(30, 50.0), np.full(30, 70.0)], 1)
    boxes[10, 2] = 500.0  # one outlier detection
    windows = crop_windows(boxes)
    s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    np.testing.assert_allclose(windows[:, 2], medfilt(s, 13))
    assert windows[10, 0] == 30.0  # the outlier is gone


def test_follow_face_by_iou_and_interpolates_missing_frames() -> None:
    face = np.array([[10, 10, 50, 50, 0.95]])
    other = np.array([[100, 100, 160, 160, 0.99]])
    dets = {0: face, 2: np.concatenate([other, face + [2, 0, 2, 0, 0]]), 4: np.zeros((0, 5)), 6: face + [6, 0, 6, 0, 0]}
    boxes, found = follow_face(dets, 7)
    assert found == 3
    assert boxes[2, 0] == 12  # the face overlapping the previous one, not the more confident one
    assert boxes[4, 0] == pytest.approx(14.0)  # interpolated between frames 2 and 6
    with pytest.raises(MetricInputError, match="no face found in any of 3 frames"):
        follow_face({0: np.zeros((0, 5))}, 3)


def test_crop_faces_with_injected_detector_names_it() -> None:
    frames = np.full((14, 96, 96, 3), 30, np.uint8)
    frames[:, 30:70, 30:60] = 200

    def detector(batch: np.ndarray) -> list[np.ndarray]:
        return [np.array([[30.0, 30.0, 60.0, 70.0, 0.99]]) for _ in batch]

    detector.name = "box"
    out = crop_faces(frames, detector, detect_every=4)
    assert out.detector == "box" and out.detected == 5  # frames 0, 4, 8, 12, 13
    assert out.frames.shape == (14, 224, 224, 3) and out.frames.dtype == np.uint8
    with pytest.raises(MetricInputError, match="uint8"):
        crop_faces(frames.astype(np.float32), detector)


def test_mtcnn_crops_real_clip(shared_data) -> None:
    from datamodules.media import read_video

    frames = read_video(shared_data / "clips" / "man.mp4")[:20]
    out = crop_faces(frames, detect_every=10)
    assert out.detector in {"mtcnn", "s3fd"}
    assert out.detected == 3
    x1, y1, x2, y2 = out.boxes[0]
    assert 60 < x2 - x1 < 512 and 60 < y2 - y1 < 512  # a face-sized box inside the 512x512 frame
    centre = out.frames[:, 80:144, 80:144].astype(float).std()
    assert centre > 5  # the crop holds image content, not padding


@pytest.mark.skipif(not s3fd_available(), reason="S3FD needs the face-alignment package and sfd_face.pth (registry 's3fd')")
def test_s3fd_real_weights_on_real_clip(shared_data) -> None:
    from datamodules.media import read_video

    frames = read_video(shared_data / "clips" / "man.mp4")[:5]
    out = crop_faces(frames)
    assert out.detector == "s3fd" and out.detected == 5


def test_s3fd_network_runs_with_random_weights() -> None:
    pytest.importorskip("face_alignment", reason="face-alignment not installed")
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from metrics.facecrop import s3fd_detector

    net = s3fd().eval()
    detect = s3fd_detector(net, conf=0.0)
    out = detect(np.zeros((1, 128, 128, 3), np.uint8))
    assert len(out) == 1 and out[0].shape[0] > 0 and out[0].shape[1] == 5
    assert np.isfinite(out[0]).all() and ((out[0][:, 4] >= 0) & (out[0][:, 4] <= 1)).all()
