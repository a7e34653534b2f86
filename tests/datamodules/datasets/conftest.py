"""Session-wide fixture trees of the four datasets, and a face detector stand-in for drawn faces."""

from __future__ import annotations

import contextlib

import pytest

from datamodules import face as facelib
from tests.datamodules import fixtures

IMAGE_SIZE = 32
"""Small crops keep the tests fast; the code path is the one used at 512."""


@contextlib.contextmanager
def fake_detection():
    """MTCNN replaced by :func:`fixtures.fake_detect_face` for the drawn faces, inside the block only.

    Never session-wide: other tests in the same worker (generation, real photos) need the real detector.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(facelib, "detect_face", fixtures.fake_detect_face)
        yield


@pytest.fixture(scope="session")
def trees(tmp_path_factory) -> dict:
    """The four dataset trees, built once."""
    base = tmp_path_factory.mktemp("datasets")
    return {
        "voxceleb": fixtures.build_voxceleb(base / "voxceleb"),
        "fakeavceleb": fixtures.build_fakeavceleb(base / "fakeav"),
        "hdtf": fixtures.build_hdtf(base / "HDTF"),
        "celebvhq": fixtures.build_celebvhq(base / "CelebV-HQ"),
    }


@pytest.fixture(scope="session")
def prepared(trees, tmp_path_factory):
    """A DataModule factory whose dataset is preprocessed once per session into a shared cache."""
    from datamodules.combined import MODULES

    cache = tmp_path_factory.mktemp("cache")
    done = set()

    def make(name: str, **kwargs):
        kwargs.setdefault("cache_dir", str(cache))
        kwargs.setdefault("image_size", IMAGE_SIZE)
        kwargs.setdefault("num_workers", 0)
        kwargs.setdefault("batch_size", 2)
        module = MODULES[name](root=str(trees[name]), **kwargs)
        if (name, kwargs["cache_dir"]) not in done:
            with fake_detection():
                module.prepare_data()
            done.add((name, kwargs["cache_dir"]))
        return module

    make.cache = cache
    return make
