"""Session-wide fixture trees of the four datasets, preprocessed once (helpers.py holds what tests import)."""

from __future__ import annotations

import pytest

from tests.datamodules import fixtures
from tests.datamodules.datasets.helpers import IMAGE_SIZE, fake_detection


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
