"""Audio metrics on the real example clips (``../shared/data/clips``, AAC 44.1 kHz stereo).

These clips have no ground-truth recording, so they check the no-reference measures (WER
against the spoken prompt, DNSMOS, speaker similarity) and how bad input is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from speechmos import dnsmos as speechmos_dnsmos

from datamodules.media import read_audio
from metrics.asr import PocketSphinxRecognizer
from metrics.dnsmos import DNSMOS
from metrics.errors import MetricInputError
from metrics.functional.dnsmos import KEYS, deep_noise_suppression_mean_opinion_score
from metrics.functional.intelligibility import _stoi_update
from metrics.functional.speaker import speaker_similarity
from metrics.functional.wer import normalized_word_error_rate_per_utterance
from metrics.intelligibility import STOI
from metrics.pesq import WidebandPESQ
from metrics.wer import NormalizedWER

# pocketsphinx's WER on these clips is 0.10-0.31 on raw upper-case prompts; after Whisper's
# normaliser man.mp4 scores 0.097 ("me teary" for "material" is its only long miss), so the
# accepted band is a little wider than the raw one
WER_BAND = (0.05, 0.35)


@pytest.fixture(scope="module")
def clips(shared_data: Path) -> dict[str, np.ndarray]:
    """Every clip decoded to 16 kHz mono float32."""
    names = json.loads((shared_data / "clips" / "transcripts.json").read_text())
    return {name: read_audio(shared_data / "clips" / name) for name in names}


def _wer_per_clip(clips: dict, transcripts: dict, names: list[str]) -> np.ndarray:
    recognizer = PocketSphinxRecognizer()
    hyps = recognizer([torch.from_numpy(clips[n]) for n in names])
    refs = [transcripts[n]["text"] for n in names]
    metric = NormalizedWER()
    metric.update(hyps, refs)
    per_clip = metric.per_clip().numpy()
    np.testing.assert_allclose(per_clip, normalized_word_error_rate_per_utterance(hyps, refs).numpy())
    return per_clip


def test_pocketsphinx_wer_on_every_clip(clips: dict, shared_transcripts: dict) -> None:
    # about 6 s for the five clips on one core: cheap enough for the default run
    per_clip = _wer_per_clip(clips, shared_transcripts, list(clips))
    assert ((per_clip >= WER_BAND[0]) & (per_clip <= WER_BAND[1])).all(), dict(zip(clips, per_clip))


def _check_dnsmos(clips: dict, names: list[str]) -> None:
    audio = [torch.from_numpy(clips[n]) for n in names]
    ours = deep_noise_suppression_mean_opinion_score(audio)  # (B, 4)
    for row, name in zip(ours, names):
        result = speechmos_dnsmos.run(clips[name], 16_000)
        np.testing.assert_allclose(row.numpy(), [result[k] for k in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")], atol=1e-5)
    # clean synthetic speech: fair-to-good predicted quality, nowhere near the 1-5 extremes
    assert ((ours >= 2.5) & (ours <= 4.5)).all(), dict(zip(names, ours.tolist()))


def test_dnsmos_on_a_real_clip_matches_speechmos_and_is_plausible(clips: dict) -> None:
    _check_dnsmos(clips, ["man.mp4"])  # 9.6 s: a single 9.01 s window


@pytest.mark.slow
def test_dnsmos_on_every_clip(clips: dict) -> None:
    _check_dnsmos(clips, list(clips))
    metric = DNSMOS()
    metric.update([torch.from_numpy(c) for c in clips.values()])
    assert set(metric.compute()) == set(KEYS) and metric.per_clip().shape == (len(clips), 4)


def test_speaker_similarity_same_speaker_beats_different_speakers(clips: dict) -> None:
    man, woman, old = clips["man.mp4"], clips["Woman.mp4"], clips["oldMan.mp4"]
    half = man.size // 2
    same = speaker_similarity([man[:half], woman[: woman.size // 2]], [man[half:], woman[woman.size // 2 :]])
    different = speaker_similarity([man, man, woman], [woman, old, old])
    assert float(same.min()) > float(different.max()) + 0.1, (same, different)
    assert (same <= 1).all() and (different > 0).all()


def test_bad_real_input_is_refused_per_clip(clips: dict, shared_data: Path) -> None:
    man, woman = torch.from_numpy(clips["man.mp4"]), torch.from_numpy(clips["Woman.mp4"])
    metric = STOI()
    with pytest.warns(UserWarning) as record:
        # pair 0 fine (a copy with noise), pair 1 mismatched lengths, pair 2 silent
        metric.update([man + 0.01 * torch.randn_like(man), man, torch.zeros_like(woman)], [man, woman, woman])
    messages = " ".join(str(w.message) for w in record)
    assert f"clip 1 excluded: preds has {man.numel()} samples but target has {woman.numel()}" in messages
    assert "clip 2 excluded: preds is silent" in messages
    assert int(metric.num_excluded) == 2 and metric.per_clip().shape == (1,)
    assert 0.5 < float(metric.compute()) <= 1.0

    # a clip decoded at another rate than its reference is refused, not resampled silently
    at_22k = read_audio(shared_data / "clips" / "man.mp4", sample_rate=22_050)
    with pytest.raises(MetricInputError, match="preds are at 22050 Hz but target at 16000 Hz"):
        _stoi_update([at_22k], [man], sample_rate=22_050, target_sample_rate=16_000)
    with pytest.raises(MetricInputError, match="sample_rate=44100"):
        WidebandPESQ(sample_rate=44_100)
    with pytest.raises(MetricInputError, match="sample_rate=22050"):
        DNSMOS(sample_rate=22_050)
