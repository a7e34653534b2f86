"""Generation end to end (checkpoint -> mp4) and one clear error per bad input, nothing half-written."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.media import probe, read_audio, read_video, write_mp4
from experiments import generate as gen
from experiments.fit import NFYCLI
from lightning_modules.pipeline import NFYPipeline
from tests.model.fixtures import STAND_IN, SYNTHETIC_DATA


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
    cli = NFYCLI(args=["--config", "ete.yaml", "--config", "tiny.yaml", f"--data={SYNTHETIC_DATA}",
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


def test_cli_sampler_dtype_and_compile_reach_the_pipeline(checkpoint: Path, voice: Path, shared_data: Path,
                                                          tmp_path: Path, monkeypatch) -> None:
    built = []
    original = NFYPipeline.__init__

    def spy(self, network, scheduler, **options):
        built.append((type(scheduler).__name__, options))
        original(self, network, scheduler, **options)

    monkeypatch.setattr(NFYPipeline, "__init__", spy)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # the wiring, not the compiler, is under test
    out = tmp_path / "fast.mp4"
    status = gen.main(["--ckpt", str(checkpoint), "--image", str(shared_data / "faces" / "kid_1.jpg"),
                       "--voice", str(voice), "--text", "Hello there.", "--out", str(out), "--steps", "3",
                       "--sampler", "dpm++", "--dtype", "bfloat16", "--compile"])
    assert status == 0 and out.is_file()
    assert built == [("DPMSolverMultistepScheduler", {"dtype": torch.bfloat16, "compile": True})]
    built.clear()
    assert gen.main(["--ckpt", str(checkpoint), "--image", str(shared_data / "faces" / "kid_1.jpg"),
                     "--voice", str(voice), "--text", "Hello there.", "--out", str(tmp_path / "plain.mp4"),
                     "--steps", "1"]) == 0
    assert built == [("DDIMScheduler", {"dtype": torch.float32, "compile": False})]


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


# ---------------------------------------------------------------------------------- checked before the work
@pytest.fixture
def no_model_work(monkeypatch):
    """Loading a checkpoint or generating fails the test: the input at hand must be refused before either."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded or run before the bad input was refused")

    monkeypatch.setattr(gen.NFYLitModule, "load_from_checkpoint", refuse)
    monkeypatch.setattr(NFYPipeline, "__call__", refuse)


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores file modes: take a folder even root cannot write in
        folder = Path("/sys")
        if not folder.is_dir():
            pytest.skip("no folder here that root cannot write in")
    return folder


def _image(tmp_path: Path, size: int) -> Path:
    from PIL import Image

    Image.fromarray(np.full((size, size, 3), 127, np.uint8)).save(tmp_path / f"{size}px.png")
    return tmp_path / f"{size}px.png"


BEFORE_LOADING = {  # case: (argument named by the error, match)
    "steps_zero": ("num_inference_steps", ">= 1"),
    "steps_negative": ("num_inference_steps", ">= 1"),
    "guidance_nan": ("guidance_scale", "finite"),
    "seed_overflow": ("seed", "integer in"),
    "device_unknown": ("device", "cpu"),
    "cuda_without_gpu": ("device", "CUDA is not available"),
    "out_is_a_folder": ("out", "folder"),
    "out_read_only": ("out", "cannot write"),
    "out_under_a_file": ("out", "not a folder"),
    "out_not_mp4": ("out", r"\.mp4"),
    "out_is_the_voice": ("out", "voice"),
    "text_chinese": ("text", r"U\+4F60"),
    "text_emoji": ("text", r"U\+1F44B"),
    "text_cyrillic": ("text", r"U\+041F"),
    "text_none": ("text", "a str"),
    "image_1x1_file": ("image", "at least 20"),
    "image_1x1_array": ("image", "at least 20"),
    "face_box_alone": ("landmarks", "face_box and landmarks"),
    "landmarks_shape": ("landmarks", r"5 x \[x, y\]"),
    "voice_stereo_array": ("voice", r"\(S,\)"),
    "voice_int_array": ("voice", "float"),
    "voice_nan_array": ("voice", "finite"),
    "checkpoint_folder": ("checkpoint", "folder"),
    "sampler_unknown": ("sampler", "ddim, dpm"),
    "dtype_unknown": ("dtype", "float32, bfloat16"),
}


@pytest.mark.parametrize("case", list(BEFORE_LOADING))
def test_bad_argument_refused_before_loading(case, checkpoint, voice, shared_data, tmp_path, monkeypatch,
                                             no_model_work) -> None:
    args = dict(checkpoint=checkpoint, image=shared_data / "faces" / "man.jpg", voice=voice, text="Hello there.",
                out=tmp_path / "out.mp4", num_inference_steps=1)
    changes = {
        "steps_zero": lambda: dict(num_inference_steps=0),
        "steps_negative": lambda: dict(num_inference_steps=-3),
        "guidance_nan": lambda: dict(guidance_scale=float("nan")),
        "seed_overflow": lambda: dict(seed=2**64),
        "device_unknown": lambda: dict(device="gpu0"),
        "cuda_without_gpu": lambda: dict(device="cuda"),
        "out_is_a_folder": lambda: dict(out=tmp_path),
        "out_read_only": lambda: dict(out=_read_only_folder(tmp_path) / "sub" / "out.mp4"),
        "out_under_a_file": lambda: dict(out=voice / "out.mp4"),
        "out_not_mp4": lambda: dict(out=tmp_path / "out.wav"),
        "out_is_the_voice": lambda: dict(voice=tmp_path / "voice.mp4", out=tmp_path / "voice.mp4"),
        "text_chinese": lambda: dict(text="你好，世界。"),
        "text_emoji": lambda: dict(text="Hello there 👋."),
        "text_cyrillic": lambda: dict(text="Привет."),
        "text_none": lambda: dict(text=None),
        "image_1x1_file": lambda: dict(image=_image(tmp_path, 1)),
        "image_1x1_array": lambda: dict(image=np.zeros((1, 1, 3), np.uint8)),
        "face_box_alone": lambda: dict(face_box=[10, 10, 60, 60]),
        "landmarks_shape": lambda: dict(face_box=[10, 10, 60, 60], landmarks=[[20, 20]] * 3),
        "voice_stereo_array": lambda: dict(voice=np.zeros((3 * SAMPLE_RATE, 2), np.float32)),
        "voice_int_array": lambda: dict(voice=np.ones(3 * SAMPLE_RATE, np.int16)),
        "voice_nan_array": lambda: dict(voice=np.full(3 * SAMPLE_RATE, np.nan, np.float32)),
        "checkpoint_folder": lambda: dict(checkpoint=tmp_path),
        "sampler_unknown": lambda: dict(sampler="euler"),
        "dtype_unknown": lambda: dict(dtype="int8"),
    }
    if case == "cuda_without_gpu":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if case == "out_is_the_voice":
        write_mp4(tmp_path / "voice.mp4", np.zeros((63, 16, 16, 3), np.uint8), audio=read_audio(voice))
    args.update(changes[case]())
    argument, match = BEFORE_LOADING[case]
    with pytest.raises(gen.GenerationInputError, match=match) as caught:
        gen.generate(**args, progress=False)
    assert caught.value.argument == argument and "\n" not in str(caught.value)
    assert not (tmp_path / "out.mp4").exists()


def test_text_policy_latin_script_accepted() -> None:
    """Accented Latin letters, typographic punctuation and common symbols are what the model speaks."""
    gen.check_characters("Café, naïve façade – “déjà vu”… 42 € at 3½ °C; Øresund, Łódź!")
    with pytest.raises(gen.GenerationInputError, match=r"U\+3042 HIRAGANA LETTER A at 6"):
        gen.check_characters("Hello あ.")


def _corrupt(kind: str, checkpoint: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    data = checkpoint.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_a_training_checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "no_tokenizer":
        state = torch.load(checkpoint, weights_only=False)
        del state["nfy_tokenizer"]
        torch.save(state, path)
    return path


@pytest.mark.parametrize("kind", ["empty", "random_bytes", "truncated", "not_a_training_checkpoint", "no_tokenizer"])
def test_unreadable_checkpoint_one_line(kind, checkpoint, voice, shared_data, tmp_path) -> None:
    bad = _corrupt(kind, checkpoint, tmp_path)
    with pytest.raises(gen.GenerationInputError) as caught:
        gen.generate(bad, shared_data / "faces" / "man.jpg", voice, "Hello there.", out=tmp_path / "out.mp4",
                     num_inference_steps=1, progress=False)
    message = str(caught.value)
    assert caught.value.argument == "checkpoint" and str(bad) in message and "\n" not in message
    assert not (tmp_path / "out.mp4").exists()


def test_cli_bad_input_exit_2_one_line_debug_shows_traceback(checkpoint, voice, shared_data, tmp_path,
                                                             capsys) -> None:
    base = ["--image", str(shared_data / "faces" / "man.jpg"), "--voice", str(voice), "--text", "Hello there.",
            "--out", str(tmp_path / "out.mp4")]
    assert gen.main(["--ckpt", str(checkpoint), *base, "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --steps 0:") and err.count("\n") == 1, err
    truncated = _corrupt("truncated", checkpoint, tmp_path)
    assert gen.main(["--ckpt", str(truncated), *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --ckpt {str(truncated)!r}:") and err.count("\n") == 1, err
    assert gen.main(["--ckpt", str(truncated), *base, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


@pytest.fixture
def no_generation(monkeypatch):
    """Generating fails the test: what the loaded model decides must be refused before any generation."""

    def refuse(*args, **kwargs):
        raise AssertionError("generation started before the bad input was refused")

    monkeypatch.setattr(NFYPipeline, "__call__", refuse)


def _big_tokenizer():
    """A tokenizer with ids far beyond the model's 300: trained on the README's varied text."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    lines = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    tok.train_from_iterator(lines, vocab_size=2000, min_frequency=1, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    return tok


def test_model_limits_checked_before_generation(tiny_checkpoint, voice, shared_data, tmp_path, no_generation) -> None:
    args = dict(image=shared_data / "faces" / "actor.jpg", voice=voice, out=tmp_path / "out.mp4", progress=False)
    long_sentence = " ".join(["abcdefghijklmnopqrstuvwxyz"] * 12) + "."  # 12 words, over 256 byte-level tokens
    with pytest.raises(gen.GenerationInputError, match=r"at most 256 tokens.*sentence 2 has \d+") as caught:
        gen.generate(tiny_checkpoint, text=f"Hello there. {long_sentence}", num_inference_steps=1, **args)
    assert caught.value.argument == "text"
    with pytest.raises(gen.GenerationInputError, match="1000") as caught:
        gen.generate(tiny_checkpoint, text="Hello there.", num_inference_steps=1001, **args)
    assert caught.value.argument == "num_inference_steps"
    with pytest.raises(gen.GenerationInputError, match="300") as caught:
        gen.generate(tiny_checkpoint, text="Generate a talking face video from a photo.", num_inference_steps=1,
                     tokenizer=_big_tokenizer(), **args)
    assert caught.value.argument == "tokenizer"
    assert not (tmp_path / "out.mp4").exists()


def test_demo_refuses_bad_steps_before_training(monkeypatch, tmp_path, capsys) -> None:
    """The demo passes --steps to generate after minutes of corpus building and training: checked first."""
    from datamodules import demo_corpus
    from experiments import demo

    def refuse(*args, **kwargs):
        raise AssertionError("the demo started its work before checking --steps")

    monkeypatch.setattr(demo_corpus, "ensure_demo_corpus", refuse)
    with pytest.raises(SystemExit) as caught:
        demo.main(["--steps", "0", "--root", str(tmp_path / "corpus"), "--out", str(tmp_path / "out")])
    assert caught.value.code == 2 and "--steps" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- length and batching
def test_split_frames_shares_a_length_among_sentences_by_their_characters() -> None:
    assert gen.split_frames(10, ["Hi there.", "Hi."]) == [7, 3]
    assert gen.split_frames(3, ["A much longer sentence than the other one.", "Ok."]) == [2, 1]
    assert sum(gen.split_frames(501, ["a b c.", "d e.", "f g h i."])) == 501
    assert gen.split_frames(1, ["Alone."]) == [1]
    with pytest.raises(gen.GenerationInputError, match="num_frames"):
        gen.split_frames(1, ["One.", "Two."])  # a frame per sentence at least


def test_generate_at_a_given_length(checkpoint: Path, voice: Path, shared_data: Path, tmp_path: Path) -> None:
    """num_frames: the video has exactly that many frames whatever the model's own speech length."""
    text = "Hello there. The quick brown fox jumps over the lazy dog!"
    result = gen.generate(checkpoint, shared_data / "faces" / "man.jpg", voice, text, num_inference_steps=1,
                          num_frames=31, progress=False)  # the stand-in would speak 12 frames
    assert result.video.shape[0] == 31 and result.wav.shape == (31 * SAMPLES_PER_FRAME,)
    with pytest.raises(gen.GenerationInputError, match="num_frames"):
        gen.generate(checkpoint, shared_data / "faces" / "man.jpg", voice, text, num_frames=0, progress=False)


def test_batched_clips_equal_the_clips_generated_alone(tiny_checkpoint: Path, voice: Path,
                                                      shared_data: Path) -> None:
    """generate_rows: clips of different texts, faces and lengths in one batch come out as each alone
    with the same seed (the real tiny network: pre-net dropout at inference, alignment aid, Griffin-Lim)."""
    module, tokenizer = gen.load_checkpoint(tiny_checkpoint)
    clips = [gen.prepare_clip(module, tokenizer, shared_data / "faces" / face, voice, text, num_frames=frames)
             for face, text, frames in (("actor.jpg", "Hello there. How are you?", 13),
                                        ("man.jpg", "Fine, thanks.", None))]
    sampling = gen.resolve_sampling(module, 2, None)
    together = gen.generate_rows(module, clips, sampling, seed=4)
    assert together[0][0].shape[0] == 13
    for clip, (frames, wav) in zip(clips, together):
        ((frames_1, wav_1),) = gen.generate_rows(module, [clip], sampling, seed=4)
        assert frames.shape == frames_1.shape and wav.shape == wav_1.shape
        assert np.abs(frames.astype(int) - frames_1.astype(int)).max() <= 1  # float rounding, then uint8
        # Griffin-Lim amplifies the float differences of batched matmuls to about 1 % of the signal
        assert np.linalg.norm(wav - wav_1) <= 5e-2 * np.linalg.norm(wav_1) and np.abs(wav_1).max() > 1e-3
    assert not np.array_equal(together[0][0][:5], together[1][0][:5])
