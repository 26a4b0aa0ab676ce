"""The judge is exact (detect(render(scene)) == scene), robust to noise and shifts, and reports what is unexplained."""

from dataclasses import replace

import numpy as np
import pytest

from hyperbagel.world import palette as P
from hyperbagel.world.detect import detect, detection_of
from hyperbagel.world.render import render, template
from hyperbagel.world.scene import Obj, Scene, is_valid, problems, sample_scene

N_ROUND_TRIP = 10_000


def test_templates_follow_the_contract():
    # Triangle of side 6: |c + 0.5 − 3| ≤ (r + 1) / 2, apex up, top and bottom rows filled.
    assert template("triangle", 6).astype(int).tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
    ]
    assert template("circle", 6).astype(int).tolist() == [
        [0, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 0],
    ]
    for shape in P.SHAPES:  # every shape touches all four sides of its box
        for s in (6, 10, 12, 20):
            t = template(shape, s)
            assert t[0].any() and t[-1].any() and t[:, 0].any() and t[:, -1].any()


def test_render_is_exact_and_deterministic():
    scene = Scene((Obj("square", "red", "small", 5, 7), Obj("circle", "cyan", "large", 30, 30)))
    image = render(scene)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image[7, 5].tolist() == [220, 40, 40] and image[18, 16].tolist() == [220, 40, 40]
    assert image[40, 40].tolist() == [40, 200, 210] and image[0, 0].tolist() == [0, 0, 0]
    assert render(scene).tobytes() == image.tobytes()
    gray = render(replace(scene, background="gray"))
    assert gray[0, 0].tolist() == [120, 120, 120]


@pytest.mark.parametrize("resolution", [64, 32])
def test_detect_render_round_trip(resolution):
    rng = np.random.default_rng(resolution)
    for _ in range(N_ROUND_TRIP):
        scene = sample_scene(rng, resolution)
        assert detect(render(scene)).scene == scene, scene


@pytest.mark.parametrize("resolution", [64, 32])
def test_detect_under_gaussian_noise(resolution):
    rng = np.random.default_rng(100 + resolution)
    for _ in range(500):
        scene = sample_scene(rng, resolution)
        noisy = np.clip(render(scene) + rng.normal(0, 8, (resolution, resolution, 3)), 0, 255).astype(np.uint8)
        detection = detect(noisy)
        assert detection.scene == scene
        assert detection.speckles == 0


@pytest.mark.parametrize("resolution", [64, 32])
@pytest.mark.parametrize("dx,dy", [(1, 0), (-1, 0), (0, 1), (0, -1)])
def test_detect_after_one_pixel_shift(resolution, dx, dy):
    rng = np.random.default_rng(200 + resolution)
    for _ in range(250):
        scene = sample_scene(rng, resolution)
        shifted = np.roll(render(scene), (dy, dx), axis=(0, 1))  # the 1-px margin is background, so roll = shift
        expected = tuple(replace(o, x=o.x + dx, y=o.y + dy) for o in scene.objects)
        assert detect(shifted).scene.objects == Scene(expected).objects


def test_detection_measurements_match_the_scene():
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = sample_scene(rng)
        assert detect(render(scene)) == detection_of(scene)


def test_detect_reports_what_it_cannot_explain():
    image = render(Scene((Obj("square", "red", "large", 10, 10),)))
    image[40:43, 40:43] = (100, 100, 30)  # far from every palette colour: unexplained
    image[50, 50] = (40, 180, 60)  # one green pixel: speckle
    image[55:57, 20:22] = (120, 120, 120)  # grey on a black background: unexplained
    d = detect(image)
    assert d.scene == Scene((Obj("square", "red", "large", 10, 10),))
    assert d.speckles == 1
    assert d.unexplained_fraction == pytest.approx(13 / 64**2)


def test_detect_unknown_shape_and_sizes():
    image = render(Scene((Obj("square", "blue", "small", 4, 4),)))
    image[30:50, 38:42] = (245, 245, 245)  # a white cross: no template fits
    image[38:42, 30:50] = (245, 245, 245)
    image[5:21, 40:56] = (235, 215, 40)  # a 16 px square: a tie between 12 and 20 goes to small
    found = {f.obj.color: f for f in detect(image).found}
    assert found["white"].obj.shape == P.UNKNOWN_SHAPE and found["white"].iou < P.MIN_SHAPE_IOU
    assert found["yellow"].obj.shape == "square" and found["yellow"].obj.size == "small"
    assert found["blue"].obj == Obj("square", "blue", "small", 4, 4)


def test_detect_background_vote():
    image = render(Scene((Obj("circle", "red", "large", 20, 20),), background="gray"))
    assert detect(image).scene.background == "gray"
    with pytest.raises(ValueError):
        detect(np.zeros((48, 48, 3), dtype=np.uint8))


def test_validity_rules():
    assert is_valid(Scene((Obj("square", "red", "small", 1, 1), Obj("square", "red", "small", 15, 1))))
    touching = Scene((Obj("square", "red", "small", 1, 1), Obj("square", "red", "small", 14, 1)))  # 1 px apart
    assert any("closer" in p for p in problems(touching))
    assert problems(Scene((Obj("square", "red", "small", 0, 5),)))  # no margin
    assert not problems(Scene((Obj("square", "red", "large", 43, 5),)))  # box ends at 63 = R − margin
    assert problems(Scene((Obj("square", "red", "large", 44, 5),)))
    assert problems(Scene(()))
    assert problems(Scene(tuple(Obj("square", "red", "small", 1 + 15 * i, 1) for i in range(4)) + (
        Obj("circle", "red", "small", 1, 30),
    )))  # fmt: skip


@pytest.mark.parametrize("resolution", [64, 32])
def test_sampled_scenes_are_valid_and_varied(resolution):
    rng = np.random.default_rng(7)
    scenes = [sample_scene(rng, resolution) for _ in range(2000)]
    assert all(is_valid(s) for s in scenes)
    counts = np.bincount([len(s.objects) for s in scenes], minlength=5)[1:]
    assert counts.min() > 400  # uniform over 1–4
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == set(P.SHAPES) and {o.color for o in objs} == set(P.COLORS)
