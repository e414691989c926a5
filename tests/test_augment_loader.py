import numpy as np
import torch
import torch.nn.functional as F

from nas_kws.config import AugmentConfig
from nas_kws.data.augment import Augmenter, SpecAugment
from nas_kws.data.loader import BatchLoader


def _loader(**kw):
    audio = np.arange(20 * 8, dtype=np.int16).reshape(20, 8)
    labels = np.array([0] * 16 + [1] * 4)
    return BatchLoader(audio, labels, batch_size=6, **kw)


def test_loader_covers_every_clip_once_and_is_seeded():
    loader = _loader(shuffle=True, seed=3)
    first = torch.cat([w[:, 0] for w, _ in loader])
    assert sorted((first * 32768 / 8).round().long().tolist()) == list(range(20))
    again = torch.cat([w[:, 0] for w, _ in _loader(shuffle=True, seed=3)])
    assert torch.equal(first, again)
    loader.set_epoch(1)
    assert not torch.equal(first, torch.cat([w[:, 0] for w, _ in loader]))


def test_loader_rows_match_labels():
    for waves, labels in _loader(shuffle=True, seed=0):
        rows = (waves[:, 0] * 32768 / 8).round().long()
        assert torch.equal(labels, (rows >= 16).long())


def test_balanced_sampling_evens_out_classes():
    loader = _loader(balanced=True, seed=0)
    loader.batch_size = 20
    counts = torch.zeros(2)
    for epoch in range(20):
        loader.set_epoch(epoch)
        for _, labels in loader:
            counts += torch.bincount(labels, minlength=2)
    assert abs(counts[0] / counts.sum() - 0.5) < 0.1


def test_augmenter_shift_noise_and_silence_loudness():
    g = torch.Generator().manual_seed(0)
    waves = torch.zeros(400, 1600)
    waves[:, 800] = 1.0
    noise = torch.ones(3, 1600)
    labels = torch.tensor([0, 1] * 200)
    cfg = AugmentConfig(shift_ms=10, noise_prob=1.0, noise_max=0.1, silence_noise_max=1.0)
    aug = Augmenter(cfg,
                    noise, sample_rate=16000, silence_index=1)
    out = aug(waves, labels, g)
    level = out[:, 0]
    assert level[labels == 0].max() <= 0.1 and level[labels == 1].mean() > 0.3
    peak = (out - level[:, None]).argmax(1)
    assert (peak - 800).abs().max() <= 160 and (peak != 800).any()


def test_augmenter_shift_is_a_window_of_the_zero_padded_clip():
    m = 32   # shift_ms 2 at 16 kHz; a clip shorter than the shift comes out silent at some shifts
    for length in (200, 20):
        waves = torch.randn(64, length)
        cfg = AugmentConfig(shift_ms=2, noise_prob=0.0)
        out = Augmenter(cfg, torch.zeros(0, length), 16000)(
            waves, torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(5))
        offsets = torch.randint(-m, m + 1, (64,), generator=torch.Generator().manual_seed(5)) + m
        windows = F.pad(waves, (m, m)).unfold(1, length, 1)
        assert torch.equal(out, windows[torch.arange(64), offsets])


def test_spec_augment_without_masks_returns_the_features_and_draws_nothing():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 1, 40, 101)
    assert SpecAugment(freq_masks=2, freq_width=0, time_masks=0, time_width=9)(feats, g) is feats
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


def test_spec_augment_masks_within_limits():
    g = torch.Generator().manual_seed(0)
    feats = torch.ones(50, 1, 40, 101)
    out = SpecAugment(freq_masks=2, freq_width=5, time_masks=0, time_width=0)(feats, g)
    masked_bins = (out[:, 0, :, 0] == 0).sum(1)
    assert masked_bins.max() <= 10 and masked_bins.sum() > 0
    assert torch.equal(out[:, :, :, 0:1].expand_as(out), out)
