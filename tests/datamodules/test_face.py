"""Face detection on real photos, the square crop, resizing and the face/lip masks."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from datamodules import face as facelib


def _photo(path, max_side: int = 640) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        return np.asarray(image)


def test_detects_one_face_with_plausible_landmarks_in_every_photo(shared_data) -> None:
    photos = sorted((shared_data / "faces").iterdir())
    assert len(photos) == 7
    for path in photos:
        image = _photo(path)
        found = facelib.detect_face(image)
        assert found is not None, path.name
        box, marks = found
        assert box.shape == (4,) and marks.shape == (5, 2)
        assert (box[:2] <= marks.min(0) + 2).all() and (marks.max(0) <= box[2:] + 2).all(), path.name
        assert marks[0, 0] < marks[1, 0] and marks[3, 0] < marks[4, 0]  # left/right order
        assert marks[:2, 1].max() < marks[2, 1] < marks[3:, 1].min()  # eyes above nose above mouth


def test_no_face_in_noise() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    assert facelib.detect_face(noise) is None


def test_landmarks_in_box_detects_inside_box_or_falls_back(shared_data) -> None:
    image = _photo(shared_data / "faces" / "man.jpg")
    box, marks = facelib.detect_face(image)
    again = facelib.landmarks_in_box(image, box)
    iod = np.linalg.norm(marks[1] - marks[0])
    assert np.abs(again - marks).max() < 0.15 * iod
    flat = np.full((200, 200, 3), 128, np.uint8)
    mean = facelib.landmarks_in_box(flat, [50, 40, 150, 160])
    np.testing.assert_allclose(mean, [50, 40] + facelib.MEAN_LANDMARKS * [100, 120])


def test_square_box_scales_and_contains_box() -> None:
    x0, y0, x1, y1 = facelib.square_box([10.3, 20.0, 70.9, 100.0], 1.5)
    assert x1 - x0 == y1 - y0 == 120 and (x1 - x0) % 2 == 0  # 1.5 * max(60.6, 80) = 120
    assert x0 <= 10.3 and y0 <= 20 and x1 >= 70.9 and y1 >= 100
    for box in ([11.0, 21.0, 71.0, 101.0], [12.7, 3.1, 50.2, 44.9], [-7.5, -3.0, 30.0, 33.0]):
        corners = facelib.square_box(box, 1.45)
        assert all(v % 2 == 0 for v in corners)  # whole 4:2:0 chroma samples
        centre = ((corners[0] + corners[2]) / 2, (corners[1] + corners[3]) / 2)
        assert abs(centre[0] - (box[0] + box[2]) / 2) <= 1 and abs(centre[1] - (box[1] + box[3]) / 2) <= 1
    with pytest.raises(ValueError, match="no area"):
        facelib.square_box([5, 5, 5, 5], 1.4)


def test_crop_square_pads_outside_with_edge_pixels() -> None:
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    crop = facelib.crop_square(image, (-2, -1, 4, 5))
    assert crop.shape == (6, 6, 3)
    np.testing.assert_array_equal(crop[1:5, 2:], image)
    np.testing.assert_array_equal(crop[0, 2:], image[0])  # top row repeated
    np.testing.assert_array_equal(crop[5, 2:], image[3])  # bottom row repeated
    np.testing.assert_array_equal(crop[1:5, 0], image[:, 0])  # left column repeated
    with pytest.raises(ValueError, match="outside"):
        facelib.crop_square(image, (10, 10, 20, 20))


def test_resize_frames_shape_and_flat_colour_kept() -> None:
    frames = np.full((3, 50, 50, 3), (10, 120, 250), np.uint8)
    out = facelib.resize_frames(frames, 64)
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to(np.array([10, 120, 250], np.uint8), out.shape))
    assert facelib.resize_frames(frames, 24).shape == (3, 24, 24, 3)


def test_masks_cover_face_and_mouth_only() -> None:
    size = 128
    box = np.array([30.0, 20.0, 98.0, 110.0])
    marks = box[:2] + facelib.MEAN_LANDMARKS * (box[2:] - box[:2])
    face, lip = facelib.face_mask(box, size), facelib.lip_mask(marks, size)
    assert face.dtype == np.uint8 and set(np.unique(face)) == {0, 1}
    ellipse_area = np.pi / 4 * 68 * 90
    assert abs(face.sum() - ellipse_area) < 0.03 * ellipse_area
    for x, y in marks[3:].astype(int):
        assert lip[y, x] == 1  # mouth corners inside
    for x, y in marks[:3].astype(int):
        assert lip[y, x] == 0  # eyes and nose outside
    assert (lip <= face).all() and lip.sum() < face.sum() / 4


def test_crop_coordinates_follow_crop_and_scale() -> None:
    points = facelib.to_crop_coords(np.array([[60.0, 70.0], [10.0, 20.0]]), (10, 20, 110, 120), 200)
    np.testing.assert_allclose(points, [[100.0, 100.0], [0.0, 0.0]])


@pytest.mark.parametrize("size", [64, 256])
def test_resize_agrees_with_pil_bilinear_on_a_real_photo(shared_data, size: int) -> None:
    image = _photo(shared_data / "faces" / "kid_1.jpg", max_side=200)[:180, :180]  # up- and downscaling
    ours = facelib.resize_image(image, size).astype(float)
    pil = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)).astype(float)
    assert ours.shape == (size, size, 3)
    assert np.abs(ours - pil).mean() < 1.5 and np.percentile(np.abs(ours - pil), 99) < 16


@pytest.mark.parametrize("crop", [(10, 30, 110, 130), (40, 30, 160, 150), (-20, -10, 140, 150), (60, 90, 210, 240),
                                  (-80, -20, 60, 120)])  # inside, overhanging, mostly outside (RGB path)
@pytest.mark.parametrize("size", [96, 256])
def test_frame_cropper_matches_rgb_crop_and_resize_on_a_real_photo(shared_data, crop, size: int) -> None:
    image = _photo(shared_data / "faces" / "kid_1.jpg", max_side=200)[:179]  # (179, 133, 3): odd sides
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
    decoded = frame.to_ndarray(format="rgb24")  # what a decoder hands over, back in RGB
    reference = facelib.resize_image(facelib.crop_square(decoded, crop), size).astype(float)
    cropper = facelib.FrameCropper(crop, size)
    out = cropper(frame)
    assert (out.width, out.height, out.format.name) == (size, size, "yuv420p")
    ours = out.to_ndarray(format="rgb24").astype(float)
    diff = np.abs(ours - reference)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 20  # chroma resampled in another order, rounding
    assert cropper(frame) is out  # the same frame given again is cut once


def test_frame_cropper_edges_repeat_like_crop_square() -> None:
    flat = np.full((64, 64, 3), (200, 60, 30), np.uint8)
    flat[:, :8] = (20, 220, 90)  # a left band that the padding must repeat
    frame = av.VideoFrame.from_ndarray(flat, format="rgb24").reformat(format="yuv420p")
    out = facelib.FrameCropper((-32, 0, 32, 64), 64)(frame).to_ndarray(format="rgb24").astype(float)
    reference = facelib.crop_square(frame.to_ndarray(format="rgb24"), (-32, 0, 32, 64)).astype(float)
    assert np.abs(out[:, :36] - reference[:, :36]).max() <= 4  # padded part and band: the band's colour
    with pytest.raises(ValueError, match="outside"):
        facelib.FrameCropper((70, 70, 90, 90), 32)(frame)
    with pytest.raises(ValueError, match="square"):
        facelib.FrameCropper((0, 0, 10, 20), 32)
    with pytest.raises(ValueError, match="odd"):
        facelib.FrameCropper((1, 0, 11, 10), 32)
