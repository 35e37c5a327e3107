"""Tests for diffbench.models: shapes, parameter counts, embeddings, gradients, determinism,
stats."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from diffbench.models import (
    VAE,
    Classifier,
    ClassifierConfig,
    ModelStats,
    UNet,
    UNetConfig,
    VAEConfig,
    model_stats,
    timestep_embedding,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def images(b: int = 3) -> torch.Tensor:
    return torch.rand(b, 1, 28, 28) * 2 - 1


def timesteps(b: int = 3) -> torch.Tensor:
    return torch.randint(0, 1000, (b,))


def unzero_(model: nn.Module) -> nn.Module:
    """Re-initialise all-zero weight tensors (the zero-initialised output conv), which would
    otherwise block every gradient upstream of them and make the output identically zero."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return model


# ---- timestep embedding -------------------------------------------------------------------


@pytest.mark.parametrize("dim", [32, 33])
def test_timestep_embedding_shape_and_values(dim):
    emb = timestep_embedding(torch.tensor([0, 1, 999]), dim)
    assert emb.shape == (3, dim) and emb.dtype == torch.float32
    half = dim // 2
    assert torch.equal(emb[0, :half], torch.ones(half))  # cos(0)
    assert torch.equal(emb[0, half : 2 * half], torch.zeros(half))  # sin(0)
    assert not emb[:, 2 * half :].any()  # zero padding for odd dim


def test_timestep_embedding_distinct():
    emb = timestep_embedding(torch.arange(1000), 64)
    dists = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert dists.min() > 1e-3


def test_timestep_embedding_matches_diffusers():
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    t = torch.tensor([0, 1, 7, 250, 999])
    for dim in (32, 128):
        ref = embeddings.get_timestep_embedding(
            t, dim, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        torch.testing.assert_close(timestep_embedding(t, dim), ref)


# ---- shapes and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [UNetConfig.pixel(), UNetConfig.latent()], ids=["pixel", "latent"])
def test_unet_shapes(cfg):
    model = unzero_(UNet(cfg))
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    eps = model(x, timesteps())
    assert eps.shape == x.shape and eps.abs().sum() > 0
    with pytest.raises(ValueError):
        model(torch.randn(3, cfg.in_channels, 32, 32), timesteps())


def test_unet_output_starts_at_zero():
    assert not UNet(UNetConfig.pixel())(images(), timesteps()).any()


def test_unet_rejects_bad_attention_level():
    with pytest.raises(ValueError):
        UNet(UNetConfig(attention_levels=(3,)))


def test_unet_handles_odd_sizes():
    cfg = UNetConfig(in_channels=2, image_size=9, base_channels=16, channel_mults=(1, 2, 2))
    model = unzero_(UNet(cfg))  # 9 -> 5 -> 3 and back
    assert model(torch.randn(2, 2, 9, 9), timesteps(2)).shape == (2, 2, 9, 9)


def test_vae_shapes():
    vae = VAE(VAEConfig())
    x = images()
    assert vae.latent_shape == (4, 7, 7)
    c, h, w = vae.latent_shape
    assert c * h * w <= x[0].numel() / 4
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (3, 4, 7, 7)
    x_hat = vae.decode(mean)
    assert x_hat.shape == x.shape
    assert x_hat.abs().max() <= 1  # tanh output
    x_hat, mean2, logvar2 = vae(x)
    assert x_hat.shape == x.shape and torch.equal(mean, mean2) and torch.equal(logvar, logvar2)


def test_vae_logvar_clamped():
    vae = VAE(VAEConfig())
    with torch.no_grad():
        vae.enc_out[-1].bias.fill_(1e4)
    assert vae.encode(images())[1].max() == 20


@pytest.mark.parametrize("noise_aware", [False, True])
def test_classifier_shapes(noise_aware):
    model = Classifier(ClassifierConfig(noise_aware=noise_aware)).eval()
    x, t = images(), (timesteps() if noise_aware else None)
    feats = model.features(x, t)
    assert feats.shape == (3, model.feature_dim) and model.feature_dim == 128
    logits = model(x, t)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, model.head(feats))


def test_classifier_timestep_contract():
    plain = Classifier(ClassifierConfig())
    aware = Classifier(ClassifierConfig(noise_aware=True)).eval()
    with pytest.raises(ValueError):
        aware(images())
    with pytest.raises(ValueError):
        plain(images(), timesteps())
    x = images()
    assert not torch.allclose(aware(x, torch.full((3,), 10)), aware(x, torch.full((3,), 900)))


# Exact counts recorded from the defaults (breakdown in the comments), so that an accidental
# architecture change fails loudly. Update them deliberately when the architecture changes.
@pytest.mark.parametrize(
    "make, expected",
    [
        # 32-64-64 channels at 28-14-7, 1 res block per level, attention at 7x7 only: ~0.67M
        (lambda: UNet(UNetConfig.pixel()), 671_009),
        # 64-128 channels at 7-4, 1 res block per level, attention at 4x4: ~1.69M
        (lambda: UNet(UNetConfig.latent()), 1_691_332),
        # 32-64-64 channels encoder and decoder, latent 4x7x7: ~0.38M
        (lambda: VAE(VAEConfig()), 382_633),
        # 2 convs at each of 32-64-128 channels + linear head: ~0.29M
        (lambda: Classifier(ClassifierConfig()), 288_170),
        # the same + time MLP (32->128->128) + one FiLM linear (128 -> 2*cout) per conv
        (lambda: Classifier(ClassifierConfig(noise_aware=True)), 424_490),
    ],
    ids=["unet-pixel", "unet-latent", "vae", "classifier", "classifier-noise-aware"],
)
def test_default_parameter_counts(make, expected):
    n = sum(p.numel() for p in make().parameters())
    assert n == expected
    assert 200_000 <= n <= 2_000_000


def test_classifier_noise_aware_param_delta():
    # computed by hand: time MLP + FiLM linears (emb_dim 128 -> 2 * cout) for 6 convs
    mlp = (32 * 128 + 128) + (128 * 128 + 128)
    film = sum(128 * 2 * c + 2 * c for c in (32, 32, 64, 64, 128, 128))
    plain = sum(p.numel() for p in Classifier(ClassifierConfig()).parameters())
    aware = sum(p.numel() for p in Classifier(ClassifierConfig(noise_aware=True)).parameters())
    assert aware - plain == mlp + film


# ---- gradients ----------------------------------------------------------------------------


def _unet_loss(cfg):
    model = unzero_(UNet(cfg))
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    return model, model(x, timesteps(2)).square().mean()


def _vae_loss():
    model = VAE(VAEConfig())
    x_hat, mean, logvar = model(images(2))
    return model, x_hat.square().mean() + mean.square().mean() + logvar.exp().mean()


def _classifier_loss(noise_aware):
    model = Classifier(ClassifierConfig(noise_aware=noise_aware, dropout=0.0))
    logits = model(images(4), timesteps(4) if noise_aware else None)
    return model, nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize(
    "build",
    [
        lambda: _unet_loss(UNetConfig.pixel()),
        lambda: _unet_loss(UNetConfig.latent()),
        _vae_loss,
        lambda: _classifier_loss(False),
        lambda: _classifier_loss(True),
    ],
    ids=["unet-pixel", "unet-latent", "vae", "classifier", "classifier-noise-aware"],
)
def test_gradients_reach_every_parameter(build):
    model, loss = build()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


# ---- determinism and state ----------------------------------------------------------------


def test_unet_deterministic_in_eval_mode():
    model = unzero_(UNet(UNetConfig(dropout=0.3)))
    x, t = images(), timesteps()
    model.train()
    assert not torch.equal(model(x, t), model(x, t))  # dropout active: the check below has teeth
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t))


def test_vae_generator_reproducible():
    vae = VAE(VAEConfig())
    x = images()

    def run(seed):
        return vae(x, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert torch.equal(a[1], c[1])  # the encoder itself is deterministic
    assert vae(x)[0].shape == x.shape  # and no generator is fine


def test_vae_scale_factor_in_state_dict():
    vae = VAE(VAEConfig())
    assert vae.scale_factor.dtype == torch.float32 and vae.scale_factor.item() == 1.0
    vae.scale_factor.fill_(0.37)
    state = vae.state_dict()
    assert "scale_factor" in state
    fresh = VAE(VAEConfig())
    fresh.load_state_dict(state)
    assert fresh.scale_factor.item() == pytest.approx(0.37)


# ---- model_stats --------------------------------------------------------------------------


def test_model_stats_linear_by_hand():
    stats = model_stats(nn.Linear(10, 5), torch.randn(7, 10))
    assert stats == ModelStats(parameters=55, flops_per_image=2 * 10 * 5)
    assert stats.as_dict() == {"parameters": 55, "flops_per_image": 100}


@pytest.mark.parametrize(
    "model, inputs",
    [
        (UNet(UNetConfig.pixel()), lambda b: (images(b), timesteps(b))),
        (UNet(UNetConfig.latent()), lambda b: (torch.randn(b, 4, 7, 7), timesteps(b))),
        (VAE(VAEConfig()), lambda b: (images(b),)),
        (Classifier(ClassifierConfig()), lambda b: (images(b),)),
    ],
    ids=["unet-pixel", "unet-latent", "vae", "classifier"],
)
def test_model_stats_scale_with_batch(model, inputs):
    one, four = model_stats(model, *inputs(1)), model_stats(model, *inputs(4))
    assert one.parameters == four.parameters == sum(p.numel() for p in model.parameters())
    assert one.flops_per_image == four.flops_per_image > 0


def test_the_in_place_inference_forward_is_bitwise_the_out_of_place_one():
    """Without autograd the ResBlocks' SiLUs overwrite their inputs; with it they do not: the
    shipped pixel UNet's outputs must be equal bit for bit, in fp32."""
    from diffbench.io.checkpoints import load_model

    unet, _ = load_model(REPO / "fixtures" / "checkpoints" / "pixel.safetensors")
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 250, 600, 999])
    with torch.no_grad():
        in_place = unet(x, t)
    unet.requires_grad_(True)
    with torch.enable_grad():
        out_of_place = unet(x, t).detach()
    assert torch.equal(in_place, out_of_place)


def test_channels_last_weights_give_the_contiguous_outputs_within_5e_6():
    """The Translator runs channels-last weights (oneDNN's faster layout); the outputs may
    differ from the contiguous layout's only by float rounding, within 5e-6."""
    from diffbench.io.checkpoints import load_model

    unet, _ = load_model(REPO / "fixtures" / "checkpoints" / "pixel.safetensors")
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t = torch.full((8,), 299)
    with torch.inference_mode():
        contiguous = unet(x, t)
        channels_last = unet.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last), t)
    assert (channels_last - contiguous).abs().max() <= 5e-6
