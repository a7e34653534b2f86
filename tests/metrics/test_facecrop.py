"""SyncNet face crops: geometry of run_pipeline's crop, tracking, interpolation, detectors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import medfilt

from metrics.errors import MetricInputError
from metrics.facecrop import (
    crop_faces,
    crop_frame,
    crop_video,
    crop_windows,
    follow_face,
    mtcnn_detector,
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


def test_batched_crops_match_per_frame_crops_on_real_clip(shared_data) -> None:
    """The batched resize (one grid_sample over the clip) against ``crop_frame`` one frame at a time.

    Tolerance: at most 1 uint8 level (float rounding at .5), on under 1 % of the values; the
    windows include a face cut at the frame's edge (grey padding) and an upscaled small crop.
    """
    import torch

    from datamodules.media import read_video

    frames = read_video(shared_data / "clips" / "man.mp4")[:12]  # (12, 512, 512, 3)
    windows = np.array([[256.0, 200.0, 90.0], [250.3, 210.7, 88.4], [20.0, 30.0, 60.0], [500.0, 480.0, 70.0],
                        [256.0, 256.0, 40.2], [100.5, 400.5, 150.0]] * 2)  # (12, 3): cx, cy, s
    per_frame = np.stack([crop_frame(f, *w) for f, w in zip(frames, windows)])  # (12, 224, 224, 3)
    batched = crop_video(torch.from_numpy(frames).permute(0, 3, 1, 2), windows)  # (12, 3, 224, 224)
    assert batched.dtype == torch.uint8 and batched.shape == (12, 3, 224, 224)
    diff = np.abs(batched.permute(0, 2, 3, 1).numpy().astype(int) - per_frame.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    with pytest.raises(MetricInputError, match="empty face crop"):
        crop_video(torch.from_numpy(frames[:1]).permute(0, 3, 1, 2), np.array([[-900.0, 10.0, 5.0]]))


def test_detect_every_interpolates_boxes_close_to_every_frame_detection(shared_data) -> None:
    from datamodules.media import read_video

    frames = read_video(shared_data / "clips" / "man.mp4")[:41]  # (41, 512, 512, 3)
    mtcnn, seen = mtcnn_detector(), []

    def counting(batch: np.ndarray) -> list[np.ndarray]:
        seen.append(len(batch))
        return mtcnn(batch)

    every = crop_faces(frames, mtcnn).boxes
    sparse = crop_faces(frames, counting, detect_every=5)
    assert sum(seen) == 9 == sparse.detected  # ceil(41 / 5): frames 0, 5, ..., 40, the last among them
    seen.clear()
    crop_faces(frames[:40], counting, detect_every=5)
    assert sum(seen) == 8 + 1  # ceil(40 / 5) detections, plus the last frame (39)
    # MTCNN's every-frame boxes jitter by up to ~12 px between neighbouring frames on this clip;
    # the crops use the 13-frame median-filtered windows, which agree within a few pixels (of a
    # ~230 px face in a 512 px frame), and the raw boxes agree within the jitter on average
    assert np.abs(crop_windows(sparse.boxes) - crop_windows(every)).max() < 5.0
    assert np.abs(sparse.boxes - every).mean() < 3.0
    with pytest.raises(ValueError, match="detect_every"):
        crop_faces(frames, counting, detect_every=0)


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
