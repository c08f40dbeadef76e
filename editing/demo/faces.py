"""Procedural cartoon faces: the parameters, their priors, a deterministic renderer and a vector encoding.

This is the data world of the offline demo model set (issue 4): a small StyleGAN2, e4e encoder, CLIP,
identity network and attribute oracle are trained on these faces so that text edits can be measured
without the real FFHQ weights. Not a port of anything upstream; the only outside convention it follows
is the FFHQ-aligned crop of NVlabs/ffhq-dataset (Karras et al., CVPR 2019): in a 1024 px aligned crop the
eye centres sit near (385, 480) and (640, 480) and the mouth near (512, 720). The renderer puts them at
the same relative positions at every size, so ``editing.align`` would leave a rendered face where it is.

Attributes are split into those a text edit may change (:data:`EDITABLE_ATTRIBUTES`), those that make a
person who they are and an edit must keep (:data:`IDENTITY_ATTRIBUTES`) and the scene
(:data:`SCENE_ATTRIBUTES`). :func:`params_to_vector` / :func:`vector_to_params` give the fixed-length
encoding the attribute oracle regresses; :data:`VECTOR_DIMS` names each dimension.

Geometry is written in unit coordinates: ``(x, y)`` in [0, 1], y pointing down, (0, 0) the top-left
corner of the image. Faces are drawn at ``SUPERSAMPLE`` times the requested size and box-filtered down.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

HAIR_COLOURS = ("black", "brown", "blond", "red", "grey", "purple")
HAIR_STYLES = ("short", "long", "bald", "mohawk", "curly")
EYE_COLOURS = ("brown", "blue", "green", "grey")

EDITABLE_ATTRIBUTES = ("smile", "hair_colour", "hair_style", "glasses", "beard", "lipstick", "age")
IDENTITY_ATTRIBUTES = ("skin_tone", "face_width", "eye_colour", "eye_size", "nose_size")
SCENE_ATTRIBUTES = ("background_hue",)

# Priors. Purple hair, mohawks and bald heads are rare-ish but frequent enough (>= 8 %) to be learnt.
HAIR_COLOUR_PRIOR = (0.24, 0.24, 0.18, 0.12, 0.12, 0.10)
HAIR_STYLE_PRIOR = (0.34, 0.28, 0.12, 0.10, 0.16)
EYE_COLOUR_PRIOR = (0.40, 0.26, 0.16, 0.18)
GLASSES_PRIOR = 0.30
BEARD_PRIOR = 0.28  # share of faces with a beard; its amount is then uniform in BEARD_SAMPLED_RANGE
BEARD_SAMPLED_RANGE = (0.3, 1.0)
LIPSTICK_PRIOR = 0.22

# Named colours, chosen far apart in RGB so a 64 px face shows them clearly.
HAIR_RGB = {
    "black": (36, 30, 30),
    "brown": (112, 64, 34),
    "blond": (238, 202, 110),
    "red": (200, 70, 30),
    "grey": (178, 178, 184),
    "purple": (146, 60, 200),
}
EYE_RGB = {
    "brown": (105, 55, 20),
    "blue": (40, 110, 225),
    "green": (30, 155, 65),
    "grey": (130, 140, 150),
}
# skin_tone 0 -> first row, 1 -> last row, linear in between.
SKIN_PALETTE = np.array(
    [(255, 228, 206), (242, 198, 162), (214, 158, 114), (166, 110, 72), (104, 66, 44)], dtype=np.float64
)
LIPSTICK_RGB = (206, 24, 62)
FRAME_RGB = (26, 26, 32)
OUTLINE_RGB = (40, 28, 28)

# FFHQ-aligned landmark positions (1024 px crop -> unit coordinates).
EYE_CENTRES = ((385 / 1024, 480 / 1024), (640 / 1024, 480 / 1024))  # image-left eye first
MOUTH_CENTRE = (512 / 1024, 720 / 1024)
HEAD_CENTRE = (0.5, 0.505)  # centre of the skull/face ellipse
HEAD_HALF_HEIGHT = 0.365  # skull top at ~0.14, chin at ~0.87

SUPERSAMPLE = 4

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class FaceParams:
    """Everything that decides how a face looks; :func:`render_face` is a pure function of it."""

    smile: float = 0.0  # mouth curvature: -1 deep frown, 0 neutral, > 0.35 open smile, +1 big grin
    hair_colour: str = "brown"  # one of HAIR_COLOURS (also colours the eyebrows and beard)
    hair_style: str = "short"  # one of HAIR_STYLES
    glasses: bool = False  # dark-framed glasses
    beard: float = 0.0  # beard size: 0 clean-shaven, 0.3 chin beard and moustache, 1 full beard
    lipstick: bool = False  # fuller red lips
    age: float = 0.3  # 0 smooth young skin ... 1 deep wrinkles (forehead, eyes, cheeks)
    eye_colour: str = "brown"  # iris colour, one of EYE_COLOURS
    skin_tone: float = 0.3  # 0 lightest ... 1 darkest of SKIN_PALETTE
    face_width: float = 0.0  # -1 narrow ... +1 wide face (eyes and mouth stay at the FFHQ positions)
    eye_size: float = 0.0  # -1 small ... +1 large eyes
    nose_size: float = 0.0  # -1 small ... +1 large nose
    background_hue: float = 0.6  # HSV hue of the pastel background, in [0, 1)

    def __post_init__(self) -> None:
        for name, choices in (
            ("hair_colour", HAIR_COLOURS),
            ("hair_style", HAIR_STYLES),
            ("eye_colour", EYE_COLOURS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("glasses", "lipstick"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name, (low, high) in _CONTINUOUS_RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, int | float | np.floating) and low <= value <= high):
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if self.background_hue >= 1.0:
            raise ValueError(f"background_hue must be in [0, 1), got {self.background_hue!r}")


_CONTINUOUS_RANGES = {
    "smile": (-1.0, 1.0),
    "beard": (0.0, 1.0),
    "age": (0.0, 1.0),
    "skin_tone": (0.0, 1.0),
    "face_width": (-1.0, 1.0),
    "eye_size": (-1.0, 1.0),
    "nose_size": (-1.0, 1.0),
    "background_hue": (0.0, 1.0),
}


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draws one face from the demo prior.

    Attributes are independent, so an edit of one never has to fight a correlation learnt from the
    data. Continuous attributes are uniform over their range (age skews young), so every level is seen.

    Args:
        rng: the generator to draw from (advanced in place).
    Returns:
        A valid :class:`FaceParams`.
    """

    def pick(choices: tuple[str, ...], prior: tuple[float, ...]) -> str:
        return choices[int(rng.choice(len(choices), p=prior))]

    has_beard = rng.random() < BEARD_PRIOR
    beard = float(rng.uniform(*BEARD_SAMPLED_RANGE)) if has_beard else 0.0
    return FaceParams(
        smile=float(rng.uniform(-1.0, 1.0)),
        hair_colour=pick(HAIR_COLOURS, HAIR_COLOUR_PRIOR),
        hair_style=pick(HAIR_STYLES, HAIR_STYLE_PRIOR),
        glasses=bool(rng.random() < GLASSES_PRIOR),
        beard=beard,
        lipstick=bool(rng.random() < LIPSTICK_PRIOR),
        age=float(rng.beta(1.4, 2.0)),
        eye_colour=pick(EYE_COLOURS, EYE_COLOUR_PRIOR),
        skin_tone=float(rng.uniform(0.0, 1.0)),
        face_width=float(rng.uniform(-1.0, 1.0)),
        eye_size=float(rng.uniform(-1.0, 1.0)),
        nose_size=float(rng.uniform(-1.0, 1.0)),
        background_hue=float(rng.uniform(0.0, 1.0)) % 1.0,
    )


def change_attribute(p: FaceParams, attribute: str, rng: np.random.Generator) -> FaceParams:
    """The same face with one editable attribute set to another, clearly different value.

    Args:
        p: the face.
        attribute: hair_colour, hair_style, glasses, lipstick, beard, smile or age.
        rng: generator (advanced in place).
    """
    if attribute in ("hair_colour", "hair_style"):
        choices = HAIR_COLOURS if attribute == "hair_colour" else HAIR_STYLES
        others = [c for c in choices if c != getattr(p, attribute)]
        return replace(p, **{attribute: others[int(rng.integers(len(others)))]})
    if attribute in ("glasses", "lipstick"):
        return replace(p, **{attribute: not getattr(p, attribute)})
    if attribute == "beard":
        return replace(p, beard=0.0 if p.beard > 0 else float(rng.uniform(0.4, 1.0)))
    if attribute == "smile":
        return replace(p, smile=float(rng.uniform(0.5, 1.0) if p.smile < 0.2 else rng.uniform(-1.0, 0.0)))
    if attribute != "age":
        raise ValueError(f"attribute must be an editable FaceParams field, got {attribute!r}")
    return replace(p, age=float(rng.uniform(0.0, 0.2) if p.age > 0.4 else rng.uniform(0.7, 1.0)))


# --------------------------------------------------------------------------------------------------
# Vector encoding


@dataclass(frozen=True)
class VectorDim:
    """One dimension of :func:`params_to_vector`."""

    name: str  # e.g. "smile", "hair_colour=purple", "background_hue_cos"
    attribute: str  # the FaceParams field it encodes
    kind: Literal["continuous", "binary", "onehot", "circular"]  # how to regress / decode it
    low: float  # smallest value it takes
    high: float  # largest value it takes


def _build_vector_dims() -> tuple[VectorDim, ...]:
    dims: list[VectorDim] = []
    categorical = {"hair_colour": HAIR_COLOURS, "hair_style": HAIR_STYLES, "eye_colour": EYE_COLOURS}
    for f in fields(FaceParams):
        if f.name in categorical:
            dims += [VectorDim(f"{f.name}={c}", f.name, "onehot", 0.0, 1.0) for c in categorical[f.name]]
        elif f.name in ("glasses", "lipstick"):
            dims.append(VectorDim(f.name, f.name, "binary", 0.0, 1.0))
        elif f.name == "background_hue":
            # Hue is an angle: encode it on the circle so 0.99 and 0.01 are neighbours.
            dims.append(VectorDim("background_hue_cos", f.name, "circular", -1.0, 1.0))
            dims.append(VectorDim("background_hue_sin", f.name, "circular", -1.0, 1.0))
        else:
            low, high = _CONTINUOUS_RANGES[f.name]
            dims.append(VectorDim(f.name, f.name, "continuous", low, high))
    return tuple(dims)


VECTOR_DIMS = _build_vector_dims()
VECTOR_SIZE = len(VECTOR_DIMS)
VECTOR_INDEX = {d.name: i for i, d in enumerate(VECTOR_DIMS)}


def attribute_slice(attribute: str) -> slice:
    """The dimensions of :func:`params_to_vector` that encode one FaceParams field.

    Args:
        attribute: a FaceParams field name, e.g. "hair_colour".
    Returns:
        A slice into the vector (one-hot attributes span several dimensions).
    """
    idx = [i for i, d in enumerate(VECTOR_DIMS) if d.attribute == attribute]
    if not idx:
        raise ValueError(f"attribute must be a FaceParams field, got {attribute!r}")
    return slice(idx[0], idx[-1] + 1)


def params_to_vector(p: FaceParams) -> np.ndarray:
    """Encodes a face as a fixed-length vector (the attribute oracle's regression target).

    Args:
        p: the face.
    Returns:
        (VECTOR_SIZE,) float64; continuous values as they are, one-hot groups for the categorical
        attributes, 0/1 for booleans and (cos, sin) of ``2 pi background_hue``. See :data:`VECTOR_DIMS`.
    """
    v = np.zeros(VECTOR_SIZE, dtype=np.float64)
    for i, d in enumerate(VECTOR_DIMS):
        value = getattr(p, d.attribute)
        if d.kind == "onehot":
            v[i] = float(d.name.split("=", 1)[1] == value)
        elif d.kind == "binary":
            v[i] = float(value)
        elif d.kind == "circular":
            angle = 2.0 * math.pi * value
            v[i] = math.cos(angle) if d.name.endswith("_cos") else math.sin(angle)
        else:
            v[i] = value
    return v


def vector_to_params(v: np.ndarray) -> FaceParams:
    """Decodes :func:`params_to_vector` output, or an oracle's noisy prediction of it.

    Args:
        v: (VECTOR_SIZE,) floats. Continuous values are clipped to their range, one-hot groups take
            their arg-max, booleans are ``> 0.5`` and the hue is the angle of its (cos, sin) pair.
    Returns:
        The closest valid :class:`FaceParams`.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (VECTOR_SIZE,):
        raise ValueError(f"v must have shape ({VECTOR_SIZE},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("v contains NaN or inf")
    values: dict[str, object] = {}
    for f in fields(FaceParams):
        sl = attribute_slice(f.name)
        dims = VECTOR_DIMS[sl]
        kind = dims[0].kind
        if kind == "onehot":
            values[f.name] = dims[int(np.argmax(v[sl]))].name.split("=", 1)[1]
        elif kind == "binary":
            values[f.name] = bool(v[sl.start] > 0.5)
        elif kind == "circular":
            hue = math.atan2(v[sl.start + 1], v[sl.start]) / (2.0 * math.pi) % 1.0
            values[f.name] = 0.0 if hue >= 1.0 else hue  # -1e-17 % 1.0 rounds to 1.0
        else:
            values[f.name] = float(np.clip(v[sl.start], dims[0].low, dims[0].high))
    return FaceParams(**values)


# --------------------------------------------------------------------------------------------------
# Rendering


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(round(min(255.0, x * f))) for x in c)  # type: ignore[return-value]


def skin_rgb(skin_tone: float) -> RGB:
    """The skin colour of a tone in [0, 1] (linear along :data:`SKIN_PALETTE`)."""
    pos = float(np.clip(skin_tone, 0.0, 1.0)) * (len(SKIN_PALETTE) - 1)
    i = min(int(pos), len(SKIN_PALETTE) - 2)
    c = SKIN_PALETTE[i] + (SKIN_PALETTE[i + 1] - SKIN_PALETTE[i]) * (pos - i)
    return tuple(int(round(x)) for x in c)  # type: ignore[return-value]


def background_rgb(hue: float) -> RGB:
    """The pastel background colour of a hue in [0, 1)."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, 0.38, 0.88)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


class _Painter:
    """ImageDraw in unit coordinates."""

    def __init__(self, image: Image.Image) -> None:
        self.draw = ImageDraw.Draw(image)
        self.scale = image.size[0]

    def _xy(self, points: np.ndarray | list) -> list[tuple[float, float]]:
        pts = np.asarray(points, dtype=np.float64) * self.scale
        return [(float(x), float(y)) for x, y in pts]

    def _w(self, width: float) -> int:
        return max(1, int(round(width * self.scale)))

    def polygon(self, points, fill: RGB, outline: RGB | None = None, width: float = 0.0) -> None:
        xy = self._xy(points)
        self.draw.polygon(xy, fill=fill)
        if outline is not None:
            self.draw.line(xy + xy[:1], fill=outline, width=self._w(width), joint="curve")

    def line(self, points, fill: RGB, width: float) -> None:
        self.draw.line(self._xy(points), fill=fill, width=self._w(width), joint="curve")

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, fill: RGB | None, outline=None, width=0.0
    ) -> None:
        s = self.scale
        box = [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]
        self.draw.ellipse(box, fill=fill, outline=outline, width=self._w(width) if outline else 0)

    def rounded_box(self, x0, y0, x1, y1, radius: float, outline: RGB, width: float) -> None:
        s = self.scale
        self.draw.rounded_rectangle(
            [x0 * s, y0 * s, x1 * s, y1 * s], radius=radius * s, outline=outline, width=self._w(width)
        )


def _half_width(p: FaceParams) -> float:
    return 0.262 + 0.042 * p.face_width


def _head_points(p: FaceParams, t: np.ndarray, grow: float = 1.0) -> np.ndarray:
    """Points on the face outline at angles ``t`` (0 = right cheek, pi/2 = chin, 3 pi/2 = skull top)."""
    cx, cy = HEAD_CENTRE
    a = _half_width(p) * grow
    b = HEAD_HALF_HEIGHT * grow
    c, s = np.cos(t), np.sin(t)
    # A slightly boxy skull and a jaw that narrows towards the chin.
    x = cx + a * np.sign(c) * np.abs(c) ** 0.85 * (1.0 - 0.24 * np.clip(s, 0.0, None) ** 2)
    y = cy + b * s
    return np.stack([x, y], axis=1)


def _angle_at_height(y: float) -> float:
    """Angle in [-pi/2, pi/2] of :func:`_head_points` where the right side of the outline is at height y.

    The left side at the same height is at ``pi - angle``.
    """
    return math.asin(float(np.clip((y - HEAD_CENTRE[1]) / HEAD_HALF_HEIGHT, -1.0, 1.0)))


def _draw_hair_back(pt: _Painter, p: FaceParams, hair: RGB) -> None:
    """Hair behind the head: the volume around the skull and, for long hair, the part to the shoulders."""
    cx = HEAD_CENTRE[0]
    a = _half_width(p)
    dark = _shade(hair, 0.72)
    if p.hair_style == "short":
        t = np.linspace(math.pi * 0.92, math.pi * 2.08, 40)
        pts = np.stack([cx + (a + 0.03) * np.cos(t), 0.47 + 0.38 * np.sin(t)], axis=1)
        pt.polygon(pts, hair, dark, 0.008)
    elif p.hair_style == "long":
        rx = a + 0.065
        t = np.linspace(math.pi, math.pi * 2, 40)
        top = np.stack([cx + rx * np.cos(t), 0.47 + 0.39 * np.sin(t)], axis=1)
        bottom = [
            (cx + rx + 0.035, 0.9),
            (cx + rx - 0.02, 0.95),
            (cx - rx + 0.02, 0.95),
            (cx - rx - 0.035, 0.9),
        ]
        pt.polygon(np.concatenate([top, bottom]), hair, dark, 0.008)
        for dx in (-0.7, -0.45, 0.45, 0.7):  # strands
            x = cx + dx * rx
            pt.line([(x, 0.35), (x + 0.01 * np.sign(dx), 0.6), (x + 0.02 * np.sign(dx), 0.9)], dark, 0.007)
    elif p.hair_style == "curly":
        rx, ry, cy = a + 0.06, 0.335, 0.45
        pt.ellipse(cx, cy + 0.02, rx, ry, hair)
        for deg in np.arange(150.0, 391.0, 15.0):
            t = math.radians(deg)
            pt.ellipse(cx + rx * math.cos(t), cy + ry * math.sin(t), 0.062, 0.062, hair, dark, 0.008)


def _draw_hair_front(pt: _Painter, p: FaceParams, hair: RGB) -> None:
    """Hair in front of the face: fringe, side curtains, curls or the mohawk crest."""
    cx = HEAD_CENTRE[0]
    a = _half_width(p)
    dark = _shade(hair, 0.72)
    if p.hair_style in ("short", "long"):
        side_y = 0.42 if p.hair_style == "short" else 0.6
        t0 = _angle_at_height(side_y)
        t = np.linspace(math.pi - t0, 2 * math.pi + t0, 48)
        cap = _head_points(p, t, grow=1.02)
        if p.hair_style == "short":
            # Hairline: temples at the sides, a ragged fringe across the forehead.
            xs = np.linspace(cx + 0.15, cx - 0.15, 9)
            fringe = [(x, 0.262 + 0.016 * (i % 2)) for i, x in enumerate(xs)]
            edge = [(cap[-1][0] - 0.01, side_y), (cx + a - 0.05, 0.33)] + fringe
            edge += [(cx - a + 0.05, 0.33), (cap[0][0] + 0.01, side_y)]
        else:
            # Side parting with curtains down both cheeks.
            edge = [
                (cap[-1][0] - 0.045, side_y),
                (cx + a - 0.05, 0.42),
                (cx + 0.13, 0.29),
                (cx - 0.06, 0.235),
                (cx - 0.17, 0.3),
                (cx - a + 0.055, 0.42),
                (cap[0][0] + 0.045, side_y),
            ]
        pt.polygon(np.concatenate([cap, np.asarray(edge)]), hair, dark, 0.008)
        for x0 in (cx - 0.1, cx + 0.02, cx + 0.12):  # strands
            pt.line([(x0, 0.17), (x0 + 0.02, 0.22), (x0 + 0.015, 0.255)], dark, 0.007)
    elif p.hair_style == "curly":
        t0 = _angle_at_height(0.3)
        t = np.linspace(math.pi - t0, 2 * math.pi + t0, 40)
        pt.polygon(_head_points(p, t, grow=1.02), hair)
        for x in np.linspace(cx - a + 0.04, cx + a - 0.04, 8):
            u = (x - cx) / a
            pt.ellipse(x, 0.255 + 0.07 * u * u, 0.045, 0.045, hair, dark, 0.008)
    elif p.hair_style == "mohawk":
        w = 0.062
        crest = [
            (cx - w, 0.255),
            (cx - w, 0.12),
            (cx - w - 0.03, 0.05),
            (cx - w * 0.4, 0.085),
            (cx - 0.012, 0.005),
            (cx + w * 0.4, 0.08),
            (cx + w + 0.03, 0.045),
            (cx + w, 0.12),
            (cx + w, 0.255),
        ]
        pt.polygon(crest, hair, dark, 0.008)
        pt.line([(cx, 0.08), (cx, 0.24)], dark, 0.006)


def _draw_age_lines(pt: _Painter, p: FaceParams, skin: RGB) -> None:
    strength = float(np.clip((p.age - 0.15) / 0.7, 0.0, 1.0))
    if strength <= 0.0:
        return
    line = _mix(skin, _shade(skin, 0.45), 0.4 + 0.6 * strength)
    w = 0.006 + 0.005 * strength
    cx = HEAD_CENTRE[0]
    for k in range(1 + int(strength * 2.99)):  # forehead
        y = 0.345 - 0.03 * k
        xs = np.linspace(cx - 0.09, cx + 0.09, 9)
        pt.line([(x, y + 0.012 * ((x - cx) / 0.09) ** 2 - 0.004 * math.sin(9 * x)) for x in xs], line, w)
    for sign in (-1.0, 1.0):
        ex, ey = EYE_CENTRES[0] if sign < 0 else EYE_CENTRES[1]
        # nasolabial folds, eye bags, crow's feet
        pt.line([(cx + sign * 0.052, 0.605), (cx + sign * 0.082, 0.655), (cx + sign * 0.09, 0.71)], line, w)
        pt.line([(ex - 0.035, ey + 0.05), (ex, ey + 0.06), (ex + 0.035, ey + 0.05)], line, w)
        ox = ex + sign * 0.072
        for dy in (-0.018, 0.0, 0.018):
            pt.line([(ox, ey + dy * 0.4), (ox + sign * 0.03, ey + dy)], line, w * 0.9)


def _draw_beard(pt: _Painter, p: FaceParams, hair: RGB) -> None:
    amount = p.beard
    if amount < 0.02:
        return
    cx = HEAD_CENTRE[0]
    side_y = 0.75 - 0.21 * amount  # how far up the cheeks it reaches
    drop = 0.005 + 0.075 * amount  # how far below the chin it hangs
    t0 = _angle_at_height(side_y)
    t = np.linspace(t0, math.pi - t0, 40)
    outline = _head_points(p, t, grow=1.03)
    outline[:, 1] += drop * np.sin(t) ** 4
    right, left = outline[0], outline[-1]
    upper = [
        (left[0] + 0.02, left[1] - 0.01),
        (cx - 0.1, 0.665),
        (cx - 0.055, 0.652),
        (cx, 0.647),
        (cx + 0.055, 0.652),
        (cx + 0.1, 0.665),
        (right[0] - 0.02, right[1] - 0.01),
    ]
    pt.polygon(np.concatenate([outline, np.asarray(upper)]), hair, _shade(hair, 0.7), 0.007)
    dark = _shade(hair, 0.78)
    for k in range(5):  # a little texture
        x = cx + (k - 2) * 0.05
        y = 0.78 + 0.02 * (k % 2) + 0.04 * amount
        pt.line([(x, y), (x + 0.006, y + 0.03)], dark, 0.006)


def _draw_eyes(pt: _Painter, p: FaceParams, hair: RGB) -> None:
    s = 1.0 + 0.25 * p.eye_size
    iris = EYE_RGB[p.eye_colour]
    brow = _shade(hair, 0.8) if p.hair_colour != "black" else hair
    for sign, (ex, ey) in zip((-1.0, 1.0), EYE_CENTRES, strict=True):
        pt.ellipse(ex, ey, 0.054 * s, 0.033 * s, (255, 255, 255), OUTLINE_RGB, 0.007)
        pt.ellipse(ex, ey, 0.027 * s, 0.027 * s, iris)
        pt.ellipse(ex, ey, 0.011 * s, 0.011 * s, (10, 10, 14))
        pt.ellipse(ex + 0.009, ey - 0.009, 0.005, 0.005, (255, 255, 255))
        # upper lid
        lid = [
            (ex + k * 0.054 * s, ey - 0.033 * s * math.sqrt(max(0.0, 1 - k * k)) * 0.95)
            for k in np.linspace(-1, 1, 9)
        ]
        pt.line(lid, OUTLINE_RGB, 0.011)
        inner = ex - sign * 0.035
        outer = ex + sign * 0.058
        pt.line([(inner, 0.418), (ex, 0.400), (outer, 0.414)], brow, 0.02)


def _draw_nose(pt: _Painter, p: FaceParams, skin: RGB) -> None:
    ns = 1.0 + 0.5 * p.nose_size  # width factor
    base = 0.63 + 0.014 * p.nose_size  # a bigger nose is also longer
    cx = HEAD_CENTRE[0]
    pt.ellipse(cx, base - 0.012, 0.024 * ns, 0.014, _shade(skin, 0.9))
    pt.line([(cx + 0.012, 0.53), (cx + 0.02 * ns, base - 0.035)], _shade(skin, 0.85), 0.008)
    nostrils = [
        (cx - 0.03 * ns, base - 0.018),
        (cx - 0.019 * ns, base),
        (cx + 0.019 * ns, base),
        (cx + 0.03 * ns, base - 0.018),
    ]
    pt.line(nostrils, _shade(skin, 0.7), 0.009)


def _draw_mouth(pt: _Painter, p: FaceParams, skin: RGB) -> None:
    mx, my = MOUTH_CENTRE
    smile = p.smile
    half = 0.086 + 0.026 * max(smile, 0.0)
    curve = 0.062 * smile  # corners rise by curve / 2, the middle drops by curve / 2
    lips = LIPSTICK_RGB if p.lipstick else _mix(_shade(skin, 0.82), (176, 86, 86), 0.4)
    up_t, low_t = (0.013, 0.018) if p.lipstick else (0.007, 0.009)
    u = np.linspace(-1.0, 1.0, 25)
    x = mx + half * u
    centre_line = my + curve * (0.5 - u * u)
    bulge = (1.0 - u * u) ** 0.7
    opening = 0.0 if smile <= 0.35 else 0.012 + 0.05 * (smile - 0.35) / 0.65
    top = centre_line - up_t * bulge
    bottom = centre_line + opening * (1.0 - u * u) + low_t * bulge
    outer = np.concatenate([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])
    pt.polygon(outer, lips, _shade(lips, 0.8), 0.004)
    if opening > 0:
        inner_low = centre_line + opening * (1.0 - u * u)
        inside = np.concatenate([np.stack([x, centre_line], 1), np.stack([x, inner_low], 1)[::-1]])
        pt.polygon(inside, (96, 22, 34))
        teeth_low = centre_line + min(opening, 0.018) * (1.0 - u * u) ** 0.6
        ti = slice(3, 22)
        teeth = np.concatenate(
            [np.stack([x[ti], centre_line[ti]], 1), np.stack([x[ti], teeth_low[ti]], 1)[::-1]]
        )
        pt.polygon(teeth, (250, 250, 246))
    else:
        pt.line(np.stack([x, centre_line], 1), _shade(lips, 0.55), 0.006)


def _draw_glasses(pt: _Painter, p: FaceParams) -> None:
    cx = HEAD_CENTRE[0]
    a = _half_width(p)
    rx, top, bottom = 0.082, 0.058, 0.054
    for sign, (ex, ey) in zip((-1.0, 1.0), EYE_CENTRES, strict=True):
        pt.rounded_box(ex - rx, ey - top, ex + rx, ey + bottom, 0.035, FRAME_RGB, 0.016)
        pt.line([(ex + sign * rx, ey - 0.03), (cx + sign * (a + 0.005), ey - 0.01)], FRAME_RGB, 0.014)
    (lx, ly), (rx_, _) = EYE_CENTRES
    pt.line([(lx + rx, ly - 0.012), (cx, ly - 0.025), (rx_ - rx, ly - 0.012)], FRAME_RGB, 0.014)


def render_face(params: FaceParams, size: int = 64) -> Image.Image:
    """Draws a front-facing, FFHQ-aligned cartoon face.

    Args:
        params: the face.
        size: output width and height in pixels (>= 16).
    Returns:
        PIL RGB image, ``size`` x ``size``; a pure function of ``params`` and ``size``.
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    p = params
    big = size * SUPERSAMPLE
    bg = background_rgb(p.background_hue)
    image = Image.new("RGB", (big, big), bg)
    pt = _Painter(image)
    skin = skin_rgb(p.skin_tone)
    hair = HAIR_RGB[p.hair_colour]
    cx = HEAD_CENTRE[0]
    a = _half_width(p)

    shirt = background_rgb((p.background_hue + 0.5) % 1.0)
    shirt = _shade(shirt, 0.55)
    pt.ellipse(cx, 1.17, 0.5, 0.27, shirt, _shade(shirt, 0.7), 0.008)
    _draw_hair_back(pt, p, hair)
    neck = _shade(skin, 0.86)
    neck_w = 0.1 + 0.02 * p.face_width
    pt.polygon(
        [(cx - neck_w, 0.7), (cx + neck_w, 0.7), (cx + neck_w, 0.93), (cx, 0.96), (cx - neck_w, 0.93)], neck
    )
    for sign in (-1.0, 1.0):  # ears
        ex = cx + sign * (a - 0.008)
        pt.ellipse(ex, 0.52, 0.036, 0.06, skin, _shade(skin, 0.7), 0.007)
        pt.ellipse(ex + sign * 0.008, 0.52, 0.015, 0.035, _shade(skin, 0.82))
    face = _head_points(p, np.linspace(0.0, 2.0 * math.pi, 96, endpoint=False))
    pt.polygon(face, skin, _shade(skin, 0.68), 0.008)
    if p.hair_style in ("bald", "mohawk"):
        pt.ellipse(cx - 0.07, 0.205, 0.06, 0.028, _mix(skin, (255, 255, 255), 0.35))
    _draw_age_lines(pt, p, skin)
    _draw_beard(pt, p, hair)
    _draw_hair_front(pt, p, hair)
    _draw_eyes(pt, p, hair)
    _draw_nose(pt, p, skin)
    _draw_mouth(pt, p, skin)
    if p.glasses:
        _draw_glasses(pt, p)
    return image.reduce(SUPERSAMPLE)


def face_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for face ``index`` of batch ``seed``: face i is the same whatever the batch size."""
    return np.random.default_rng([seed, index])


def render_batch(seed: int, n: int, size: int = 64) -> tuple[np.ndarray, list[FaceParams]]:
    """Samples and renders ``n`` faces.

    Face ``i`` depends only on ``(seed, i)``, so batches can be rendered in chunks or in parallel.

    Args:
        seed: batch seed (>= 0).
        n: number of faces (>= 0).
        size: image size in pixels.
    Returns:
        ``images`` (n, size, size, 3) uint8 RGB and the ``n`` :class:`FaceParams`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    params = [sample_params(face_rng(seed, i)) for i in range(n)]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, p in enumerate(params):
        images[i] = np.asarray(render_face(p, size))
    return images, params


def preview_grid(images: np.ndarray, columns: int = 8, upscale: int = 1) -> Image.Image:
    """Tiles (n, H, W, 3) uint8 images into one PIL image, optionally upscaled by an integer factor."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    image = Image.fromarray(grid)
    if upscale != 1:
        image = image.resize((columns * w * upscale, rows * h * upscale), Image.Resampling.NEAREST)
    return image
