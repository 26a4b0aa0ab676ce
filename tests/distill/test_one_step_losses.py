"""The 1-step stages' losses and pieces on hand-checked cases: ADP's hinge losses and times, the pixel discriminator,
the reward model's BCE, padding and gradient, ReFL's hinge, the judge-labelled pairs, and Spearman/AUC by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hyperbagel.distill.adp import adp_discriminator_loss, adp_generator_loss, disc_times, input_times, pair_mse
from hyperbagel.distill.pixel_discriminator import PixelDiscriminator
from hyperbagel.distill.refl import refl_objective
from hyperbagel.distill.reward import (
    HardenedReward,
    RewardModel,
    RewardModelConfig,
    encode_texts,
    refl_loss,
    reward_bce,
    shift_images,
)
from hyperbagel.eval.reward_eval import agreement, auc, spearman
from hyperbagel.flow.schedule import shift_time
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.world.detect import detection_of
from hyperbagel.world.render import render
from hyperbagel.world.tasks import t2i
from hyperbagel.world.tasks.match import KINDS, damage, judge, sample_pair
from hyperbagel.world.vocab import all_words

# ----- ADP -----


def test_adp_discriminator_hinge_by_hand():
    real = torch.tensor([[2.0, 0.5]])  # relu(1 − 2) = 0, relu(1 − 0.5) = 0.5 → 0.25
    fake = torch.tensor([[-2.0, 0.3]])  # relu(1 − 2) = 0, relu(1 + 0.3) = 1.3 → 0.65
    latent, pixel = adp_discriminator_loss(real, fake, real * 0, fake * 0)
    assert latent.item() == pytest.approx(0.9)
    assert pixel.item() == pytest.approx(2.0)  # all logits 0: 1 + 1
    # confident, correct logits give no gradient; the others push real up and fake down
    r = real.clone().requires_grad_(True)
    f = fake.clone().requires_grad_(True)
    adp_discriminator_loss(r, f, torch.zeros(1, 1), torch.zeros(1, 1))[0].backward()
    assert r.grad.tolist() == [[0.0, -0.5]] and f.grad.tolist() == [[0.0, 0.5]]


def test_adp_generator_loss_weights_the_two_discriminators():
    latent = torch.tensor([[1.0, 3.0]]).requires_grad_(True)  # mean 2
    pixel = torch.tensor([[-4.0]]).requires_grad_(True)
    loss = adp_generator_loss(latent, pixel, 0.85, 0.15)
    assert loss.item() == pytest.approx(-(0.85 * 2.0 + 0.15 * -4.0))
    loss.backward()  # descending it raises both discriminators' scores of the fakes
    assert torch.all(latent.grad < 0) and torch.all(pixel.grad < 0)
    assert latent.grad[0, 0].item() == pytest.approx(-0.85 / 2) and pixel.grad.item() == pytest.approx(-0.15)
    assert pair_mse(torch.ones(1, 2, 3), torch.zeros(1, 2, 3)).item() == 1.0


def test_input_times_mix_pure_noise_and_a_cubic_schedule():
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    assert torch.equal(input_times(gens[:8], 1.0, 3.0), torch.ones(8))
    t = input_times(gens, 0.0, 3.0)
    assert 0 < t.min() and t.max() <= 1
    assert t.mean().item() == pytest.approx(0.75, abs=0.01)  # E[1 − u³] = 3/4
    half = input_times([torch.Generator().manual_seed(i) for i in range(4000)], 0.5, 3.0)
    assert (half == 1).float().mean().item() == pytest.approx(0.5, abs=0.03)
    again = input_times([torch.Generator().manual_seed(i) for i in range(4000)], 0.5, 3.0)
    assert torch.equal(half, again)  # a pure function of the generators


def test_disc_times_are_shifted_uniform():
    s = disc_times([torch.Generator().manual_seed(i) for i in range(500)], 0.1, 0.9, 3.0)
    lo, hi = shift_time(torch.tensor([0.1, 0.9]), 3.0)
    assert lo <= s.min() and s.max() <= hi
    assert torch.equal(disc_times([torch.Generator().manual_seed(1)], 0.5, 0.5, 1.0), torch.tensor([0.5]))


def test_pixel_discriminator_gives_one_logit_per_8px_patch():
    d = PixelDiscriminator()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = d(x)
    assert out.shape == (2, 64)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        PixelDiscriminator((32, 60))


# ----- the reward model -----


def test_reward_bce_and_refl_hinge_by_hand():
    r = torch.tensor([0.0, 2.0])
    assert reward_bce(r, torch.tensor([1, 0])).item() == pytest.approx((math.log(2) + math.log(1 + math.e**2)) / 2)
    r = torch.tensor([1.0, 4.0], requires_grad=True)
    loss = refl_loss(r, 3.0)
    assert loss.item() == pytest.approx(1.0)  # (3 − 1 + 0) / 2
    loss.backward()
    assert r.grad.tolist() == [-0.5, 0.0]  # no gradient once a sample's reward reaches α
    x = torch.zeros(2, 3, requires_grad=True)
    total, hinge, anchor = refl_objective(torch.tensor([1.0, 4.0]), 3.0, x, torch.ones(2, 3), 0.5)
    assert hinge.item() == 1.0 and anchor.item() == 1.0 and total.item() == pytest.approx(1.5)
    total, _, anchor = refl_objective(torch.tensor([5.0]), 3.0, x, None, 0.5)
    assert total.item() == 0.0 and anchor.item() == 0.0


@pytest.fixture(scope="module")
def small_reward():
    tok = ShapesTokenizer.build(list(all_words()))
    torch.manual_seed(0)
    model = RewardModel(RewardModelConfig(vocab_size=tok.vocab_size, dim=32, layers=1, heads=2, mlp=64,
                                          stem=(8, 16))).eval()
    return model, tok


def test_reward_ignores_padding_and_passes_gradient_to_pixels(small_reward):
    model, tok = small_reward
    rng = np.random.default_rng(0)
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    short, long = "a red circle", t2i.caption_prompt(t2i.scene_for_prompt(t2i.color_attr(
        "circle", "red", "square", "blue"), rng))["prompt"]
    ids, valid = encode_texts(tok, [short, long], model.cfg.max_text)
    assert valid[0].sum() == 3 and valid[1].sum() > 3
    both = model(pixels, ids, valid)
    alone_ids, alone_valid = encode_texts(tok, [short], model.cfg.max_text)
    alone = model(pixels[:1], alone_ids, alone_valid)
    assert torch.allclose(both[0], alone[0], atol=1e-5)  # the padded row scores as if alone
    x = pixels.clone().requires_grad_(True)
    model(x, ids, valid).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError):
        encode_texts(tok, ["a red circle " * 20], model.cfg.max_text)


def test_shift_images_by_hand():
    x = torch.zeros(2, 3, 5, 5)
    x[:, :, 2, 2] = 1.0  # one lit pixel in the centre
    x[1, :, 0, :] = 0.5  # and, in the second image, its top row at 0.5
    shifted = shift_images(x, torch.tensor([[1, -2], [-1, 0]]))
    assert shifted[0, 0, 3, 0] == 1 and shifted[0].sum() == 3  # down 1, left 2
    assert shifted[1, 0, 1, 2] == 1  # up 1
    assert torch.equal(shifted[1, :, 4], x[1, :, 4]) and shifted[1, 0, 0, 0] == 0  # the bottom row repeats; the old
    # top row left the frame
    assert torch.equal(shift_images(x, torch.zeros(2, 2, dtype=torch.long)), x)
    g = x.clone().requires_grad_(True)
    shift_images(g, torch.tensor([[2, 2], [0, 1]])).sum().backward()
    assert g.grad.abs().sum() > 0


class _Stub:
    """A reward that is ``scale`` × the mean brightness of the image's top-left quarter (so shifts matter)."""

    def __init__(self, scale):
        self.scale, self.model = scale, None

    def __call__(self, pixels, texts):
        assert len(texts) == len(pixels)
        return self.scale * pixels[:, :, :32, :32].mean((1, 2, 3))


def test_hardened_reward_combines_models_and_averages_shifted_views():
    pixels = torch.zeros(3, 3, 64, 64)
    pixels[:, :, :32, :32] = torch.tensor([1.0, -1.0, 0.5])[:, None, None, None]
    texts = ["a", "b", "c"]
    low, high = _Stub(1.0), _Stub(3.0)
    plain = HardenedReward([low])(pixels, texts)
    assert torch.allclose(plain, torch.tensor([1.0, -1.0, 0.5]))
    assert torch.allclose(HardenedReward([low, high], "min")(pixels, texts), torch.tensor([1.0, -3.0, 0.5]))
    assert torch.allclose(HardenedReward([low, high], "mean")(pixels, texts), torch.tensor([2.0, -2.0, 1.0]))
    hard = HardenedReward([low], views=4, max_shift=8)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    a, b = hard(pixels, texts, gens()), hard(pixels, texts, gens())
    assert torch.equal(a, b)  # the shifts are the generators' draws
    assert not torch.allclose(a, plain) and (a.abs() <= plain.abs() + 1e-6).all()  # shifted views see less of it
    assert torch.equal(hard(pixels, texts), plain)  # no generators: no shift
    for bad in (dict(combine="max"), dict(views=0), dict(max_shift=-1)):
        with pytest.raises(ValueError):
            HardenedReward([low], **bad)
    with pytest.raises(ValueError):
        HardenedReward([])


# ----- judge-labelled pairs -----


def test_pairs_are_labelled_by_the_exact_judge():
    rng = np.random.default_rng(0)
    seen = {k: [] for k in KINDS}
    for _ in range(300):
        item, scene, kind = sample_pair(rng)
        verdict = judge(item, render(scene))
        assert verdict == t2i.check_t2i(item, detection_of(scene))  # the judge on pixels = on the scene
        seen[kind].append(verdict)
    assert all(seen["matched"])  # a prompt and its own scene always pass
    for kind in ("text", "image", "other"):  # spoiled pairs mostly fail, but not by assumption
        assert 0 < np.mean(seen[kind]) < 0.8, kind


def test_damage_keeps_shape_and_dtype_and_can_break_a_match():
    rng = np.random.default_rng(1)
    item = t2i.single_object("circle")
    image = render(t2i.scene_for_prompt(item, rng, extras=False))
    broken = [judge(item, damage(rng, image)) for _ in range(200)]
    assert 0 < np.mean(broken) < 1
    out = damage(rng, image)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_spearman_and_auc_by_hand():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)
    assert auc(scores, labels) == pytest.approx(0.75)  # 3 of the 4 (pass, fail) pairs ordered right
    assert auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5  # a tie counts half
    a, b = np.array([3.0, 1.0, 2.0, 2.0, 5.0]), np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 8.0])) == pytest.approx(1.0)
    assert math.isnan(spearman(np.array([1.0, 2.0]), np.array([1.0, 1.0])))
    rep = agreement(scores, labels, ["x", "y", "x", "y"])
    assert rep["reward_pass"] == pytest.approx(0.575) and rep["judge_mean"] == 0.5
    assert rep["by_kind"]["x"]["n"] == 2 and rep["by_kind"]["x"]["auc"] == 1.0
