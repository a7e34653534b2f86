"""A model trained on a dataset tree generates: the DataModule's tokenizer travels in the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.combined import ENV_VARS
from experiments import fit
from experiments import generate as gen
from tests.datamodules import fixtures
from tests.datamodules.datasets.helpers import IMAGE_SIZE, fake_detection

DATA = {
    "hdtf": ["--data=datamodules.hdtf.HDTFDataModule", "--data.root={root}"],
    "combined": ["--data=datamodules.combined.CombinedDataModule", "--data.hdtf_root={root}"],  # ete.yaml's, HDTF only
}


@pytest.mark.parametrize("data", sorted(DATA))
def test_two_steps_on_a_dataset_tree_then_generate(data, trees, prepared, shared_data, tmp_path, monkeypatch):
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    prepared("hdtf")  # preprocessed once per session into prepared.cache
    args = [a.format(root=trees["hdtf"]) for a in DATA[data]]
    with fake_detection():  # prepare_data finds the clips cached; the drawn faces need the stand-in
        cli = fit.main([
            "--config", "ete.yaml", "--config", "tiny.yaml", *args, f"--data.cache_dir={prepared.cache}",
            f"--data.image_size={IMAGE_SIZE}", "--data.num_frames=4", "--data.batch_size=2", "--data.num_workers=0",
            "--model.init_args.max_mel_frames=20", "--model.init_args.mel_statistics_batches=1",
            "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.global_step == 2
    checkpoint = tmp_path / "trained.ckpt"
    cli.trainer.save_checkpoint(checkpoint)  # what ModelCheckpoint calls
    voice = fixtures.write_wav(tmp_path / "voice.wav", seconds=2.5)
    result = gen.generate(checkpoint, shared_data / "faces" / "actor.jpg", voice, "Hello there.",
                          num_inference_steps=1, seed=0, progress=False)
    assert result.video.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3) and np.isfinite(result.wav).all()
    _, tokenizer = gen.load_checkpoint(checkpoint)
    assert cli.datamodule.tokenizer is not None  # the one documented attribute, set by setup
    assert tokenizer.to_str() == cli.datamodule.tokenizer.to_str()  # the vocabulary the model was trained on
