import pytest
import torch

from nas_kws.features import FeatureConfig, Frontend


@pytest.mark.parametrize("config, shape", [
    (FeatureConfig.logmel(), (40, 101)),
    (FeatureConfig.mfcc(10), (10, 51)),
    (FeatureConfig.mfcc(40), (40, 51)),
    (FeatureConfig.dscnn(), (10, 49)),
])
def test_frontend_shapes_match_config(config, shape):
    assert config.shape == shape
    feats = Frontend(config)(torch.randn(3, config.num_samples) * 0.1)
    assert feats.shape == (3, 1, *shape)
    assert torch.isfinite(feats).all()


def test_logmel_is_log_of_power():
    silent = Frontend(FeatureConfig.logmel())(torch.zeros(1, 16000))
    assert torch.allclose(silent, torch.full_like(silent, torch.log(torch.tensor(1e-6)).item()))


def test_feature_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown key.*n_mel.*valid keys"):
        FeatureConfig.from_dict({"n_mel": 40})
    with pytest.raises(ValueError, match="n_mfcc"):
        FeatureConfig(kind="mfcc", n_mfcc=0)
    with pytest.raises(ValueError, match="kind"):
        FeatureConfig(kind="cqt")


@pytest.mark.parametrize("config", [FeatureConfig.logmel(), FeatureConfig.dscnn()])
def test_mel_power_is_torchaudios_to_rounding(config):
    import torchaudio

    from nas_kws.features import MelPower

    ours = MelPower(config)
    waves = torch.randn(2 * ours.chunk + 3, config.num_samples) * 0.1   # a partial last chunk
    theirs = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, n_mels=config.n_mels, center=config.center)(waves)
    assert torch.allclose(ours(waves), theirs, rtol=1e-5, atol=1e-6 * theirs.max().item())
    assert torch.allclose(ours(waves[0]), theirs[0], rtol=1e-5, atol=1e-6 * theirs.max().item())
