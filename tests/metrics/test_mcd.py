"""MCD: our distance stage equals mel-cepstral-distance and pymcd in their own conventions;
the standard MCD and the paper MFCC distance are built from those stages end to end."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import torch
from mel_cepstral_distance import compare_mfccs
from pymcd.mcd import Calculate_MCD

from metrics.errors import MetricInputError
from metrics.functional.mcd import (
    MCD_SCALE,
    cepstral_distance,
    dtw_path,
    mel_cepstral_distortion,
    mel_cepstrum,
    paper_mfcc_distance,
)
from metrics.mcd import MelCepstralDistortion, PaperMFCCDistance
from tests.metrics.tester import check_metric_contract

ATOL = 1e-9  # identical float64 arithmetic on identical cepstra


def _voice(seed: int, seconds: float = 1.0, sample_rate: int = 16_000) -> np.ndarray:
    """Harmonic speech-like signal with a random pitch contour, float32 (S,) in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * rng.random() * t)  # (S,)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wav = sum(rng.random() * np.sin(k * phase) / k for k in range(1, 10))
    wav = 0.3 * wav * (0.5 * (1 + np.sin(2 * np.pi * 3 * t))) ** 2 + 0.003 * rng.standard_normal(t.size)
    return np.clip(wav, -1, 1).astype(np.float32)


@pytest.mark.parametrize("first", [0, 1])
@pytest.mark.parametrize("align", ["dtw", "pad"])
def test_distance_stage_equals_mel_cepstral_distance(first: int, align: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 14)), rng.standard_normal((53, 14))  # (T, D) cepstra
    # mel-cepstral-distance: no 10/ln10*sqrt(2) factor, coefficients s..D-1, exact DTW with radius None
    theirs, _ = compare_mfccs(a.T, b.T, s=first, D=14, aligning=align, dtw_radius=None)
    assert cepstral_distance(a, b, first=first, scale=1.0, align=align) == pytest.approx(theirs, abs=ATOL)
    # the standard dB MCD is theirs times the factor
    assert cepstral_distance(a, b, first=first, align=align) == pytest.approx(MCD_SCALE * theirs, abs=1e-8)


def test_distance_stage_equals_pymcd_convention() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((30, 14)), rng.standard_normal((35, 14))
    calc = Calculate_MCD("dtw")
    path = dtw_path(a[:, 1:], b[:, 1:])  # pymcd aligns on c1.. (its fastdtw is radius 1, approximate)
    frames, cost = calc.calculate_mcd_distance(a, b, [tuple(p) for p in path])
    theirs = calc.log_spec_dB_const * cost / frames  # ... but measures c0 too
    ours = cepstral_distance(a, b, first=0, align="dtw", align_first=1)
    assert ours == pytest.approx(theirs, abs=1e-8)
    # excluding c0 (the standard) gives a different, smaller number
    assert cepstral_distance(a, b, first=1, align="dtw") < ours


def test_pymcd_plain_end_to_end(tmp_path: Path) -> None:
    rate = 22_050  # pymcd's only rate; alpha 0.65 and order 13 are its settings
    ref, syn = _voice(2, 1.0, rate), _voice(3, 1.0, rate)
    soundfile.write(tmp_path / "ref.wav", ref, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "syn.wav", syn, rate, subtype="FLOAT")
    theirs = Calculate_MCD("plain").calculate_mcd(str(tmp_path / "ref.wav"), str(tmp_path / "syn.wav"))
    c_ref, c_syn = mel_cepstrum(ref, rate, alpha=0.65), mel_cepstrum(syn, rate, alpha=0.65)
    ours = cepstral_distance(c_ref, c_syn, first=0, align="pad")
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_standard_mcd_end_to_end() -> None:
    ref, syn = _voice(4), _voice(5, 1.2)
    ours = mel_cepstral_distortion([torch.from_numpy(syn)], [torch.from_numpy(ref)])
    c_ref, c_syn = mel_cepstrum(ref), mel_cepstrum(syn)
    assert c_ref.shape[1] == 14  # c0..c13
    theirs, _ = compare_mfccs(c_ref.T, c_syn.T, s=1, D=14, aligning="dtw", dtw_radius=None)
    np.testing.assert_allclose(ours.numpy(), [MCD_SCALE * theirs], rtol=1e-9)
    assert 1.0 < float(ours) < 20.0
    assert float(mel_cepstral_distortion(torch.from_numpy(ref), torch.from_numpy(ref))) == 0.0


@pytest.mark.parametrize("n_mfcc", [13, 20])
def test_paper_mfcc_distance_end_to_end(n_mfcc: int) -> None:
    ref, syn = _voice(6), _voice(7, 1.1)
    ours = paper_mfcc_distance([torch.from_numpy(syn)], [torch.from_numpy(ref)], n_mfcc=n_mfcc)
    m_ref = librosa.feature.mfcc(y=ref, sr=16_000, n_mfcc=n_mfcc, n_mels=128)  # (n_mfcc, T)
    m_syn = librosa.feature.mfcc(y=syn, sr=16_000, n_mfcc=n_mfcc, n_mels=128)
    # mel-cepstral-distance with s=0 and its missing dB factor is exactly a plain Euclidean distance
    theirs, _ = compare_mfccs(
        m_ref.astype(np.float64), m_syn.astype(np.float64), s=0, D=n_mfcc, aligning="dtw", dtw_radius=None
    )
    np.testing.assert_allclose(ours.numpy(), [theirs], rtol=1e-9)
    standard = mel_cepstral_distortion([torch.from_numpy(syn)], [torch.from_numpy(ref)])
    assert float(ours) > 3 * float(standard)  # the conventions differ by far more than noise


def test_metric_contract() -> None:
    batches = [
        (torch.from_numpy(np.stack([_voice(s, 0.5), _voice(s + 1, 0.5)])), torch.from_numpy(np.stack([_voice(s + 2, 0.5)] * 2)))
        for s in (10, 20)
    ]
    for metric_class in (MelCepstralDistortion, PaperMFCCDistance):
        check_metric_contract(metric_class, batches, atol=1e-9)


def test_bad_clips_are_excluded() -> None:
    preds = [torch.from_numpy(_voice(8)), torch.zeros(16_000), torch.from_numpy(_voice(9))[:100]]
    target = [torch.from_numpy(_voice(10))] * 3
    metric = MelCepstralDistortion()
    with pytest.warns(UserWarning) as record:
        metric.update(preds, target)
    messages = " ".join(str(w.message) for w in record)
    assert "clip 1 excluded: preds is silent" in messages
    assert "clip 2 excluded: preds has 100 samples, need at least 1600" in messages
    assert int(metric.num_excluded) == 2 and metric.per_clip().shape == (1,)
    with pytest.raises(MetricInputError, match="clip 0: target contains 1 non-finite"):
        bad = torch.from_numpy(_voice(11)).clone()
        bad[5] = float("inf")
        mel_cepstral_distortion([preds[0]], [bad])
