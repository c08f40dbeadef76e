"""The demo world: procedural faces (editing.demo.faces) and their captions (editing.demo.captions)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from editing.demo.captions import (
    EYE_COLOUR_WORDS,
    FROWN_MAX,
    HAIR_COLOUR_WORDS,
    OLD_MIN,
    SMILE_MIN,
    YOUNG_MAX,
    attribute_phrases,
    background_name,
    caption,
)
from editing.demo.faces import (
    EDITABLE_ATTRIBUTES,
    EYE_CENTRES,
    EYE_COLOURS,
    HAIR_COLOURS,
    HAIR_RGB,
    HAIR_STYLES,
    IDENTITY_ATTRIBUTES,
    MOUTH_CENTRE,
    SCENE_ATTRIBUTES,
    VECTOR_DIMS,
    VECTOR_SIZE,
    FaceParams,
    attribute_slice,
    background_rgb,
    params_to_vector,
    render_batch,
    render_face,
    sample_params,
    vector_to_params,
)

BASE = FaceParams(smile=0.1, hair_colour="brown", hair_style="short", skin_tone=0.3, age=0.1)


def _pixels(p: FaceParams, size: int = 64) -> np.ndarray:
    return np.asarray(render_face(p, size)).astype(np.float64)


def _diff(a: FaceParams, b: FaceParams, size: int = 64) -> np.ndarray:
    """(size, size) summed absolute RGB difference."""
    return np.abs(_pixels(a, size) - _pixels(b, size)).sum(axis=2)


def _share_inside(diff: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> float:
    """Share of the total difference inside a box given in unit coordinates."""
    n = diff.shape[0]
    box = diff[int(y0 * n) : int(np.ceil(y1 * n)), int(x0 * n) : int(np.ceil(x1 * n))]
    return float(box.sum() / diff.sum())


def _centroid(diff: np.ndarray) -> tuple[float, float]:
    """Difference-weighted centre in unit coordinates (pixel centres at (i + 0.5) / n)."""
    n = diff.shape[0]
    ys, xs = np.mgrid[0:n, 0:n]
    w = diff / diff.sum()
    return float(((xs + 0.5) * w).sum() / n), float(((ys + 0.5) * w).sum() / n)


# --------------------------------------------------------------------------------------------------
# Rendering


def test_same_seed_gives_identical_pixels_and_face_i_ignores_batch_size():
    a, pa = render_batch(7, 6, 64)
    b, pb = render_batch(7, 6, 64)
    assert a.dtype == np.uint8 and a.shape == (6, 64, 64, 3)
    assert np.array_equal(a, b) and pa == pb
    c, pc = render_batch(7, 3, 64)
    assert np.array_equal(a[:3], c) and pa[:3] == pc
    d, _ = render_batch(8, 6, 64)
    assert not np.array_equal(a, d)
    assert np.array_equal(np.asarray(render_face(pa[0], 64)), a[0])


def test_render_face_output_and_bad_size():
    image = render_face(BASE, 128)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (128, 128)
    with pytest.raises(ValueError, match="size"):
        render_face(BASE, 8)


def test_eyes_and_mouth_sit_at_the_ffhq_aligned_positions():
    size = 256
    for i, (ex, ey) in enumerate(EYE_CENTRES):
        diff = _diff(BASE, dataclasses.replace(BASE, eye_colour="blue"), size)
        half = np.zeros_like(diff)
        cols = slice(0, size // 2) if i == 0 else slice(size // 2, size)
        half[:, cols] = diff[:, cols]
        cx, cy = _centroid(half)  # the iris is centred on the eye
        assert abs(cx - ex) < 1.5 / size and abs(cy - ey) < 1.5 / size
    diff = _diff(BASE, dataclasses.replace(BASE, lipstick=True), size)
    mx, my = _centroid(diff)
    assert abs(mx - MOUTH_CENTRE[0]) < 1.0 / size and abs(my - MOUTH_CENTRE[1]) < 0.015


@pytest.mark.parametrize(
    ("change", "box"),
    [
        ({"glasses": True}, (0.18, 0.38, 0.82, 0.56)),  # eye band, temples to the ears
        ({"smile": 0.9}, (0.36, 0.62, 0.64, 0.80)),
        ({"smile": -0.9}, (0.36, 0.62, 0.64, 0.80)),
        ({"lipstick": True}, (0.36, 0.62, 0.64, 0.80)),
        ({"eye_colour": "green"}, (0.28, 0.42, 0.72, 0.52)),
        ({"beard": 1.0}, (0.15, 0.5, 0.85, 1.0)),
        ({"age": 1.0}, (0.2, 0.25, 0.8, 0.75)),
        ({"hair_style": "bald"}, (0.15, 0.0, 0.85, 0.5)),
        ({"hair_colour": "purple"}, (0.15, 0.0, 0.85, 0.5)),  # short hair and eyebrows
        ({"nose_size": 1.0}, (0.42, 0.5, 0.58, 0.66)),
    ],
)
def test_attribute_changes_pixels_in_its_region(change, box):
    diff = _diff(BASE, dataclasses.replace(BASE, **change))
    assert diff.sum() > (600 if "nose_size" in change else 2000), "the change is not visible at 64 px"
    assert _share_inside(diff, *box) > 0.97


@pytest.mark.parametrize("style", ["short", "long", "curly", "mohawk"])
def test_hair_pixels_take_the_named_colour(style):
    palette = np.array([HAIR_RGB[c] for c in HAIR_COLOURS], dtype=np.float64)
    for colour in HAIR_COLOURS:
        other = "black" if colour != "black" else "blond"
        p = dataclasses.replace(BASE, hair_style=style, hair_colour=colour)
        pixels = _pixels(p)
        full = np.abs(np.subtract(HAIR_RGB[colour], HAIR_RGB[other])).sum()
        mask = _diff(p, dataclasses.replace(p, hair_colour=other)) > 0.8 * full  # hair, not its outline
        assert mask.sum() > 15
        mean = pixels[mask].mean(axis=0)
        nearest = HAIR_COLOURS[int(np.argmin(np.linalg.norm(palette - mean, axis=1)))]
        assert nearest == colour, (style, colour, mean)


def test_beard_takes_the_hair_colour_on_a_bald_head():
    p = dataclasses.replace(BASE, hair_style="bald", beard=1.0, hair_colour="red")
    pixels = _pixels(p)
    mask = _diff(p, dataclasses.replace(p, beard=0.0)) > 30
    r, g, b = pixels[mask].mean(axis=0)
    assert r > g + 60 and r > b + 60


def test_lipstick_and_eye_colour_move_towards_their_colours():
    lips = dataclasses.replace(BASE, lipstick=True)
    mask = _diff(BASE, lips) > 30
    r, g, b = _pixels(lips)[mask].mean(axis=0)
    r0, g0, b0 = _pixels(BASE)[mask].mean(axis=0)
    assert r - g > r0 - g0 + 40
    blue = dataclasses.replace(BASE, eye_colour="blue")
    mask = _diff(BASE, blue) > 30
    r, g, b = _pixels(blue)[mask].mean(axis=0)
    assert b > r + 60


def test_identity_attributes_change_the_face():
    # darker skin -> darker cheeks
    cheek = slice(36, 40), slice(18, 22)
    tones = [_pixels(dataclasses.replace(BASE, skin_tone=t))[cheek].mean() for t in (0.0, 0.5, 1.0)]
    assert tones[0] > tones[1] + 20 > tones[2] + 40
    # wider face -> more skin along the cheek row (eyes and mouth stay where they are)
    row = int(0.62 * 256)

    def skin_width(width: float) -> int:
        p = dataclasses.replace(BASE, face_width=width)
        line = _pixels(p, 256)[row]
        skin = np.array(render_face(p, 256).getpixel((100, row)), dtype=np.float64)  # left cheek
        return int((np.abs(line - skin).sum(axis=1) < 12).sum())

    assert skin_width(1.0) > skin_width(0.0) + 12 > skin_width(-1.0) + 24
    big_eyes = _diff(BASE, dataclasses.replace(BASE, eye_size=1.0))
    assert big_eyes.sum() > 1000 and _share_inside(big_eyes, 0.28, 0.40, 0.72, 0.54) > 0.97


def test_background_is_the_named_hue_and_only_the_background_changes():
    p = dataclasses.replace(BASE, background_hue=0.6)
    assert tuple(np.asarray(render_face(p, 64))[1, 1]) == background_rgb(0.6)
    q = dataclasses.replace(p, background_hue=0.1)
    diff = _diff(p, q)
    centre = diff[20:44, 24:40]  # the face
    assert centre.sum() == 0 and diff.sum() > 0
    assert background_name(0.6) == "blue" and background_name(0.08) == "orange"
    assert background_name(0.99) == "red" and background_name(0.182) is None


def test_sampled_faces_are_diverse():
    rng = np.random.default_rng(0)
    params = [sample_params(rng) for _ in range(2000)]
    for name, choices in (
        ("hair_colour", HAIR_COLOURS),
        ("hair_style", HAIR_STYLES),
        ("eye_colour", EYE_COLOURS),
    ):
        counts = Counter(getattr(p, name) for p in params)
        assert set(counts) == set(choices)
        assert min(counts.values()) > 0.07 * len(params), (name, counts)
    beard = np.array([p.beard for p in params])
    assert 0.2 < (beard > 0).mean() < 0.4  # mostly clean-shaven
    assert 0.2 < np.mean([p.glasses for p in params]) < 0.4
    assert 0.15 < np.mean([p.lipstick for p in params]) < 0.3
    for name in ("smile", "age", "skin_tone", "face_width", "eye_size", "nose_size", "background_hue"):
        values = np.array([getattr(p, name) for p in params])
        assert values.std() > 0.15, name
    images, _ = render_batch(0, 32, 64)
    flat = images.reshape(32, -1).astype(np.float64)
    distances = np.abs(flat[:, None] - flat[None]).mean(axis=2)
    assert distances[~np.eye(32, dtype=bool)].min() > 5  # no two faces alike


# --------------------------------------------------------------------------------------------------
# Parameters and vectors


def test_attribute_groups_partition_the_params():
    names = {f.name for f in dataclasses.fields(FaceParams)}
    groups = [set(EDITABLE_ATTRIBUTES), set(IDENTITY_ATTRIBUTES), set(SCENE_ATTRIBUTES)]
    assert set().union(*groups) == names and sum(map(len, groups)) == len(names)


def test_params_vector_round_trip():
    rng = np.random.default_rng(1)
    assert len(VECTOR_DIMS) == VECTOR_SIZE == len({d.name for d in VECTOR_DIMS})
    for _ in range(300):
        p = sample_params(rng)
        v = params_to_vector(p)
        assert v.shape == (VECTOR_SIZE,) and v.dtype == np.float64
        for d, x in zip(VECTOR_DIMS, v, strict=True):
            assert d.low <= x <= d.high, d.name
        q = vector_to_params(v)
        assert dataclasses.replace(q, background_hue=p.background_hue) == p
        assert abs(q.background_hue - p.background_hue) < 1e-12
    # every field is encoded, one-hot groups sum to one
    covered = []
    for f in dataclasses.fields(FaceParams):
        sl = attribute_slice(f.name)
        covered += range(sl.start, sl.stop)
        if VECTOR_DIMS[sl.start].kind == "onehot":
            assert params_to_vector(BASE)[sl].sum() == 1.0
    assert sorted(covered) == list(range(VECTOR_SIZE))


def test_vector_to_params_decodes_noisy_predictions():
    v = params_to_vector(dataclasses.replace(BASE, hair_colour="purple", glasses=True, smile=0.5))
    noisy = v + np.random.default_rng(2).normal(0.0, 0.1, VECTOR_SIZE)
    noisy[attribute_slice("smile")] = 1.7  # outside the range: clipped
    q = vector_to_params(noisy)
    assert q.hair_colour == "purple" and q.glasses and q.smile == 1.0
    assert vector_to_params(np.zeros(VECTOR_SIZE)).background_hue == 0.0
    with pytest.raises(ValueError, match="shape"):
        vector_to_params(np.zeros(VECTOR_SIZE + 1))
    with pytest.raises(ValueError, match="NaN"):
        vector_to_params(np.full(VECTOR_SIZE, np.nan))


@pytest.mark.parametrize(
    "bad",
    [
        {"hair_colour": "green"},
        {"hair_style": "bun"},
        {"eye_colour": "red"},
        {"smile": 1.5},
        {"beard": -0.1},
        {"background_hue": 1.0},
        {"glasses": 1},
    ],
)
def test_face_params_reject_bad_values(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        dataclasses.replace(BASE, **bad)


# --------------------------------------------------------------------------------------------------
# Captions


def _mentions(phrase: str, text: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text) is not None


# Whether a face has what a prompt of each attribute_phrases() key says.
_HAS = {
    "smile": lambda p: p.smile >= SMILE_MIN,
    "frown": lambda p: p.smile <= FROWN_MAX,
    "beard": lambda p: p.beard > 0,
    "clean_shaven": lambda p: p.beard == 0,
    "old": lambda p: p.age > OLD_MIN,
    "young": lambda p: p.age < YOUNG_MAX,
}


@pytest.fixture(scope="module")
def captioned() -> list[tuple[FaceParams, str]]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(4000):
        p = sample_params(rng)
        out.append((p, caption(p, rng)))
    return out


def test_every_prompt_is_learnt_from_captions_and_never_contradicts_the_face(captioned):
    phrases = attribute_phrases()
    assert {"smile", "glasses", "blond_hair", "beard", "purple_hair", "bald"} <= set(phrases)
    for key, phrase in phrases.items():
        assert phrase.vector_dim in {d.name for d in VECTOR_DIMS} and phrase.direction in (-1, 1)

        def has(p, phrase=phrase, key=key):
            return _HAS[key](p) if key in _HAS else getattr(p, phrase.attribute) == phrase.target

        for prompt in phrase.prompts:
            hits = [p for p, text in captioned if _mentions(prompt, text)]
            assert len(hits) >= 3, f"{prompt!r} is too rare in captions to be learnt"
            wrong = [p for p in hits if not has(p)]
            assert not wrong, f"{prompt!r} said of a face without it: {wrong[0]}"


def test_captions_never_contradict_colours(captioned):
    for p, text in captioned:
        for colour, words in HAIR_COLOUR_WORDS.items():
            for w in words:
                if (
                    _mentions(f"{w} hair", text)
                    or _mentions(f"{w}-haired", text)
                    or _mentions(f"{w} mohawk", text)
                ):
                    assert p.hair_colour == colour, (text, p)
        for colour, words in EYE_COLOUR_WORDS.items():
            for w in words:
                if _mentions(f"{w} eyes", text) or _mentions(f"{w}-eyed", text):
                    assert p.eye_colour == colour, (text, p)
        if "glasses" in text or "spectacle" in text or "bespectacled" in text:
            assert p.glasses, text
        if "lipstick" in text or "red lips" in text:
            assert p.lipstick, text
        if "mohawk" in text:
            assert p.hair_style == "mohawk", text
        if "background" in text or "backdrop" in text or " wall" in text:
            assert background_name(p.background_hue) in text, text


def test_captions_mention_the_face_and_vary(captioned):
    # the most salient attributes are usually mentioned
    glasses_said = [("glasses" in t or "spectacle" in t) for p, t in captioned if p.glasses]
    assert np.mean(glasses_said) > 0.7
    hair_said = [("hair" in t or "bald" in t or "mohawk" in t) for p, t in captioned]
    assert np.mean(hair_said) > 0.6
    texts = [t for _, t in captioned]
    assert len(set(texts)) > 0.95 * len(texts)
    assert max(len(t.split()) for t in texts) <= 40
    assert not any("  " in t or t.startswith(" ") for t in texts)
    for word in (" man", " woman", " he ", " she ", " his ", " her "):
        assert not any(word in f" {t} " for t in texts), word
    rng = np.random.default_rng(4)
    face = sample_params(rng)
    assert len({caption(face, rng) for _ in range(30)}) > 20
    assert caption(face, np.random.default_rng(5)) == caption(face, np.random.default_rng(5))
