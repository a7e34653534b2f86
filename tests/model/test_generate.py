"""Generation end to end (checkpoint -> mp4) and one clear error per bad input, nothing half-written."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.media import probe, read_audio, read_video
from experiments import generate as gen
from experiments.fit import NFYCLI
from tests.model.test_resume import STAND_IN


def _tokenizer():
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    texts = ["the quick brown fox jumps over the lazy dog", "hello there, how are you today?"] * 4
    tok.train_from_iterator(texts, vocab_size=300, min_frequency=1, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    return tok


def _write_wav(path: Path, wav: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def _save(cli: NFYCLI, path: Path) -> Path:
    cli.model.tokenizer = _tokenizer()
    cli.trainer.strategy.connect(cli.model)
    cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-init checkpoint of the stand-in network, written the way training writes it."""
    root = tmp_path_factory.mktemp("ckpt")
    (root / "stand_in.yaml").write_text(STAND_IN)
    cli = NFYCLI(args=["--config", str(root / "stand_in.yaml"), "--data.vocab_size=300", "--trainer.logger=false"])
    return _save(cli, root / "random.ckpt")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init checkpoint of ete.yaml + tiny.yaml (the real network), short speech for speed."""
    root = tmp_path_factory.mktemp("tiny")
    cli = NFYCLI(args=["--config", "ete.yaml", "--config", "tiny.yaml", "--data=tests.model.test_module.SyntheticDataModule",
                       "--data.image_size=64", "--data.vocab_size=300", "--model.init_args.max_mel_frames=20",
                       "--trainer.logger=false", "--trainer.callbacks=[]"])
    return _save(cli, root / "tiny.ckpt")


def test_generate_end_to_end_on_tiny_config(tiny_checkpoint: Path, voice: Path, shared_data: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "tiny.mp4"
    result = gen.generate(tiny_checkpoint, shared_data / "faces" / "actor.jpg", voice, "Hello there. How are you?",
                          out=out, num_inference_steps=2, seed=1, progress=False)
    assert len(result.sentences) == 2 and result.video.shape[1:] == (64, 64, 3)
    assert 2 <= len(result.video) <= 2 * 8  # each sentence: 1 .. ceil(20 mel frames * 256 / 640) frames
    assert result.wav.shape == (len(result.video) * SAMPLES_PER_FRAME,) and np.isfinite(result.wav).all()
    assert read_video(out).shape == result.video.shape
    again = gen.generate(tiny_checkpoint, shared_data / "faces" / "actor.jpg", voice, "Hello there. How are you?",
                         num_inference_steps=2, seed=1, progress=False)
    assert np.array_equal(again.video, result.video)  # seeded


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    t = np.arange(int(2.5 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return _write_wav(tmp_path_factory.mktemp("voice") / "voice.wav", tone.astype(np.float32))


def test_generate_writes_synced_mp4(checkpoint: Path, voice: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    text = "Hello there. The quick brown fox jumps over the lazy dog!"
    result = gen.generate(checkpoint, shared_data / "faces" / "man.jpg", voice, text, out=out, num_inference_steps=2,
                          progress=False)
    assert result.sentences == ["Hello there.", "The quick brown fox jumps over the lazy dog!"]
    assert result.video.dtype == np.uint8 and result.video.shape[1:] == (16, 16, 3)
    # the stand-in speaks 13 mel frames (3328 samples) per sentence -> 6 frames each, audio padded to match
    assert result.video.shape[0] == 12 and result.wav.shape == (12 * SAMPLES_PER_FRAME,)
    info = probe(out)
    assert read_video(out).shape == (12, 16, 16, 3)
    assert abs(read_audio(out).size - result.wav.size) <= SAMPLES_PER_FRAME and info is not None
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_cli_and_array_inputs(checkpoint: Path, voice: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    status = gen.main(["--ckpt", str(checkpoint), "--image", str(shared_data / "faces" / "kid_1.jpg"),
                       "--voice", str(voice), "--text", "Hello there.", "--out", str(out), "--steps", "1"])
    assert status == 0 and out.is_file()
    module, tokenizer = gen.load_checkpoint(checkpoint)
    from PIL import Image

    photo = np.asarray(Image.open(shared_data / "faces" / "Woman.png").convert("RGB"))
    a = gen.generate(module, photo, read_audio(voice), "Hello there.", seed=3, progress=False, tokenizer=tokenizer)
    b = gen.generate(module, photo, read_audio(voice), "Hello there.", seed=3, progress=False, tokenizer=tokenizer)
    assert a.path is None and np.array_equal(a.video, b.video)


def test_split_sentences_handles_any_length() -> None:
    long = "word " * 60 + "end."
    pieces = gen.split_sentences(f"First one.  Second, with a comma? {long}")
    assert pieces[:2] == ["First one.", "Second, with a comma?"]
    assert all(len(p.split()) <= gen.MAX_SENTENCE_WORDS for p in pieces) and sum(len(p.split()) for p in pieces) == 2 + 4 + 61


def test_face_crop_and_masks(shared_data: Path) -> None:
    face = gen.load_face(shared_data / "faces" / "oldMan.jpg", 64)  # a 3000x4500 photo
    assert face["ref_image"].shape == (3, 64, 64) and float(face["ref_image"].abs().max()) <= 1.0
    face_area, lip_area = float(face["face_mask"].mean()), float(face["lip_mask"].mean())
    assert 0.15 < face_area < 0.6 and 0.005 < lip_area < face_area
    lip_rows = torch.nonzero(face["lip_mask"][0].sum(1)).flatten()
    assert lip_rows.float().mean() > 32  # the mouth lies in the lower half of the crop


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("missing_ckpt", FileNotFoundError, "not found"),
        ("empty_text", gen.GenerationInputError, "text="),
        ("control_char", gen.GenerationInputError, r"U\+0007"),
        ("no_face", gen.GenerationInputError, "no face|MTCNN found none"),
        ("not_an_image", gen.GenerationInputError, "PIL can read"),
        ("silent_voice", gen.GenerationInputError, "silent"),
        ("short_voice", gen.GenerationInputError, "at least 2 s"),
    ],
)
def test_bad_input_one_clear_error_no_file(case, error, match, checkpoint, voice, shared_data, tmp_path) -> None:
    args = dict(checkpoint=checkpoint, image=shared_data / "faces" / "man.jpg", voice=voice, text="Hello there.")
    if case == "missing_ckpt":
        args["checkpoint"] = tmp_path / "nope.ckpt"
    elif case == "empty_text":
        args["text"] = "  ... "
    elif case == "control_char":
        args["text"] = "Hello \x07there."
    elif case == "no_face":
        from PIL import Image

        Image.fromarray(np.full((128, 128, 3), 127, np.uint8)).save(tmp_path / "grey.png")
        args["image"] = tmp_path / "grey.png"
    elif case == "not_an_image":
        (tmp_path / "fake.jpg").write_text("not an image")
        args["image"] = tmp_path / "fake.jpg"
    elif case == "silent_voice":
        args["voice"] = _write_wav(tmp_path / "silent.wav", np.zeros(3 * SAMPLE_RATE, np.float32))
    elif case == "short_voice":
        args["voice"] = _write_wav(tmp_path / "short.wav", read_audio(voice)[: SAMPLE_RATE])
    out = tmp_path / "out" / "x.mp4"
    with pytest.raises(error, match=match):
        gen.generate(**args, out=out, num_inference_steps=1, progress=False)
    assert not out.parent.exists() or not any(out.parent.iterdir())
