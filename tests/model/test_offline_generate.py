"""Generation needs nothing but the checkpoint: pretrained parts are rebuilt from the architectures it stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.conventions import SAMPLE_RATE
from experiments import generate as gen
from experiments.fit import NFYCLI
from lightning_modules.networks.vocoder import hifigan_generator
from tests.model.fixtures import SYNTHETIC_DATA


def _save_tiny_pretrained_parts(root: Path) -> dict[str, str]:
    """Small random hub-format folders (save_pretrained; speechbrain's generator.ckpt for the vocoder)."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import GPT2Config, GPT2Model, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(5)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
                  ).save_pretrained(root / "w2v")
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8).save_pretrained(root / "vae")
    GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=640)).save_pretrained(root / "gpt")
    UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=16, cross_attention_dim=32,
                         attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).save_pretrained(root / "sd" / "unet")
    MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
                  motion_norm_num_groups=16).save_pretrained(root / "adapter")
    (root / "hifigan").mkdir()
    torch.save(hifigan_generator(512).state_dict(), root / "hifigan" / "generator.ckpt")
    return {"wav2vec": "w2v", "vae": "vae", "gpt2": "gpt", "unet": "sd", "motion_adapter": "adapter",
            "vocoder": "hifigan"}


@pytest.mark.slow
def test_generate_from_checkpoint_offline_after_the_pretrained_folders_are_gone(tmp_path, shared_data, monkeypatch):
    parts = tmp_path / "parts"
    folders = _save_tiny_pretrained_parts(parts)
    cli = NFYCLI(args=["--config", "ete.yaml", "--config", "tiny.yaml", f"--data={SYNTHETIC_DATA}",
                       "--data.image_size=32", "--data.vocab_size=300", "--model.init_args.max_mel_frames=12",
                       "--trainer.logger=false", "--trainer.callbacks=[]",
                       *[f"--model.init_args.net.init_args.{key}={parts / name}" for key, name in folders.items()]])
    from tests.model.test_generate import _tokenizer

    cli.model.tokenizer = _tokenizer()
    cli.trainer.strategy.connect(cli.model)
    checkpoint = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    trained = {k: v.clone() for k, v in cli.model.state_dict().items()}

    shutil.rmtree(parts)  # nothing left to load the parts from: not the folders, not the hub
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    module, _ = gen.load_checkpoint(checkpoint)
    assert set(module.net.pretrained_architectures) == set(cli.model.net.pretrained_architectures)
    for key, value in module.state_dict().items():  # every weight is the checkpoint's, not a random init
        torch.testing.assert_close(value, trained[key], msg=key)
    voice = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(2.2 * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.float32)
    result = gen.generate(checkpoint, shared_data / "faces" / "actor.jpg", voice, "Hello there.",
                          num_inference_steps=2, seed=1, progress=False)
    assert result.video.shape[1:] == (32, 32, 3) and np.isfinite(result.wav).all()


def test_missing_architecture_names_the_part(tmp_path) -> None:
    from lightning_modules.networks.layers import PretrainedNotFoundError, load_pretrained, stored_architectures

    with stored_architectures({}), pytest.raises(PretrainedNotFoundError, match="GPT-2 audio decoder.*stores no"):
        load_pretrained("GPT-2 audio decoder", "gpt2", lambda source: None)
