"""A corpus of bad (and merely unusual) inputs sent to the running app through ``gradio_client``.

Every file is generated here from the example photo (no binaries are committed). Each input must
give a clear error (a sentence naming the problem, not gradio's generic "an exception occurred")
or, where the input is fine after all (RGBA, grey, 16-bit, CMYK, EXIF-rotated, animated), a
sensible result; afterwards the app must still answer normal requests, and another user's
session must be untouched. NaN and infinity cannot be written by ``gradio_client`` (strict JSON),
so those go to gradio's HTTP API directly.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import ASTRONAUT, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

GLASSES = ("face with glasses", "face")
NOT_AN_IMAGE = "not an image in a supported format"
DAMAGED = "damaged or incomplete"
NO_FACE = "No face was found in the photo"
TOO_LARGE = "too large"
OPTIMIZE = (
    "a smiling face",
    2,
    0.008,
    0.005,
    0.1,
    "edit",
    0,
    0,
)  # prompt, steps, λL2, λID, lr, mode, seed, views


# ------------------------------------------------------------------------------------------ files
def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height RGB, with (far too little) pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16 x 16 JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), (90, 60, 40)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiled(photo: Image.Image, n: int) -> Image.Image:
    tiled = Image.new("RGB", (photo.width * n, photo.height * n))
    for x in range(n):
        for y in range(n):
            tiled.paste(photo, (x * photo.width, y * photo.height))
    return tiled


def _on_canvas(photo: Image.Image, side: int, canvas: int = 400) -> Image.Image:
    out = Image.new("RGB", (canvas, canvas), (200, 200, 200))
    out.paste(photo.resize((side, side), Image.Resampling.LANCZOS), ((canvas - side) // 2,) * 2)
    return out


def _corrupt_middle(data: bytes, start: float, length: int) -> bytes:
    out = bytearray(data)
    i = int(len(out) * start)
    out[i : i + length] = np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8).tobytes()
    return bytes(out)


def _build_files(photo: Image.Image) -> dict[str, bytes]:
    png, jpeg = _encode(photo, "PNG"), _encode(photo, "JPEG", quality=90)
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    rgba = np.dstack([np.asarray(photo), np.full(photo.size[::-1], 255, np.uint8)])
    rgba[:40, :, 3] = 0  # transparent top rows: composited on white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; viewers (and load_image) turn it right
    sideways = photo.transpose(Image.Transpose.ROTATE_90)
    second = Image.new("RGB", photo.size, (0, 0, 255))
    return {
        "text.png": b"this is not an image\n" * 20,
        "text.txt": b"hello",
        "document.pdf": pdf,
        "pdf_named.jpg": pdf,
        "svg.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9"/></svg>',
        "icon.ico": _encode(photo, "ICO"),  # a real image, but not a photo format
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "header_only.png": png[:64],
        "corrupt_idat.png": _corrupt_middle(png, 0.5, 2000),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "corrupt.jpg": _corrupt_middle(jpeg, 0.33, 3000),
        "one_pixel.png": _encode(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"),
        "huge_20000.png": _png_claiming(20000, 20000),
        "huge_20000.jpg": _jpeg_claiming(20000, 20000),
        "big_7000.png": _png_claiming(7000, 7000),  # under PIL's bomb limit, over the app's 40 MP
        "float.tiff": _encode(Image.fromarray(np.asarray(photo.convert("L"), np.float32) / 255, "F"), "TIFF"),
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG", quality=95),
        "grey16.png": _encode(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG"),
        "rgba.png": _encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "grey.png": _encode(photo.convert("L"), "PNG"),
        "exif_rotated.png": _encode(sideways, "PNG", exif=exif),
        "exif_rotated.jpg": _encode(sideways, "JPEG", quality=95, exif=exif),
        "rotated_without_exif.png": _encode(sideways, "PNG"),
        "animated.gif": _encode(photo, "GIF", save_all=True, append_images=[second], duration=100, loop=0),
        "webp.webp": _encode(photo, "WEBP"),
        "no_face.png": _encode(Image.new("RGB", (300, 200), (128, 128, 128)), "PNG"),
        "noise.png": _encode(
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)), "PNG"
        ),
        "many_faces.png": _encode(_tiled(photo, 2), "PNG"),
        "tiny_face.png": _encode(_on_canvas(photo, 128), "PNG"),  # her face ~24 px: below dlib's 40
        "small_face.png": _encode(_on_canvas(photo, 192), "PNG"),  # ~37 px: still found
    }


# --------------------------------------------------------------------------- expected outcomes
def _faces(n: int) -> Callable[[tuple], None]:
    def check(out: tuple) -> None:
        aligned, note, faces = out[:3]
        assert f"Inverted face 1 of {n}" in note and len(faces["choices"]) == n
        assert np.asarray(Image.open(aligned)).shape == (32, 32, 3)

    return check


def _like_upright(max_mean_diff: float) -> Callable[[tuple, np.ndarray], None]:
    """The aligned crop of a rotated copy is (about) that of the upright photo."""

    def check(out: tuple, upright: np.ndarray) -> None:
        _faces(1)(out)
        crop = np.asarray(Image.open(out[0]).convert("RGB"), np.float64)
        assert np.abs(crop - upright).mean() <= max_mean_diff

    return check


PHOTOS: dict[str, str | Callable] = {
    "text.png": NOT_AN_IMAGE,
    "text.txt": NOT_AN_IMAGE,
    "document.pdf": NOT_AN_IMAGE,
    "pdf_named.jpg": NOT_AN_IMAGE,
    "svg.svg": NOT_AN_IMAGE,
    "icon.ico": NOT_AN_IMAGE,
    "empty.png": "The uploaded file is empty",
    "truncated.png": DAMAGED,
    "header_only.png": DAMAGED,
    "corrupt_idat.png": DAMAGED,
    "truncated.jpg": DAMAGED,
    "corrupt.jpg": DAMAGED,
    "one_pixel.png": "only 1 x 1 pixels, too small",
    "huge_20000.png": TOO_LARGE + r" \(400 megapixels\)",
    "huge_20000.jpg": TOO_LARGE + r" \(400 megapixels\)",
    "big_7000.png": TOO_LARGE + r" \(7000 x 7000 pixels\).*at most 40 megapixels",
    "float.tiff": "floating-point pixels are not supported",
    "cmyk.jpg": _faces(1),
    "grey16.png": _faces(1),
    "rgba.png": _faces(1),
    "grey.png": _faces(1),
    "exif_rotated.png": _like_upright(0.0),  # lossless: the very same crop
    "exif_rotated.jpg": _like_upright(6.0),  # JPEG noise only
    "rotated_without_exif.png": NO_FACE,  # so the EXIF cases above really were turned upright
    "animated.gif": _faces(1),  # first frame
    "webp.webp": _faces(1),  # lossy encoding lifts the mission patch's score; still filtered out
    "no_face.png": NO_FACE,
    "noise.png": NO_FACE,
    "many_faces.png": _faces(4),
    "tiny_face.png": NO_FACE + ".*at least about 40 pixels wide",
    "small_face.png": _faces(1),
}

# (api name, arguments, message): values the UI cannot send but the API can
API_CALLS: dict[str, tuple[str, tuple, str]] = {
    "empty target": ("/edit_global", (" ", "face", 4.0, 0.15), "Target is empty"),
    "empty neutral": ("/edit_global", ("face with glasses", "", 4.0, 0.15), "Neutral is empty"),
    "10000-char target": ("/edit_global", ("a" * 10_000, "face", 4.0, 0.15), "10000 characters long"),
    "10000-char prompt": ("/edit_optimize", ("x" * 10_000, *OPTIMIZE[1:]), "Prompt is 10000 characters"),
    "empty prompt": ("/edit_optimize", ("   ", *OPTIMIZE[1:]), "Prompt is empty"),
    "alpha too large": ("/edit_global", (*GLASSES, 50.0, 0.15), "greater than maximum value 10"),
    "alpha -1e308": ("/edit_global", (*GLASSES, -1e308, 0.15), "less than minimum value -10"),
    "beta too large": ("/edit_global", (*GLASSES, 4.0, 5.0), "greater than maximum value 0.3"),
    "beta negative": ("/edit_global", (*GLASSES, 4.0, -1.0), "less than minimum value 0.08"),
    "channels beta": ("/channels_moved", (*GLASSES, 2.0), "greater than maximum value 0.3"),
    "steps 0": ("/edit_optimize", (OPTIMIZE[0], 0, *OPTIMIZE[2:]), "less than minimum value 1"),
    "steps 1e9": ("/edit_optimize", (OPTIMIZE[0], 1e9, *OPTIMIZE[2:]), "greater than maximum value 300"),
    "steps 2.5": ("/edit_optimize", (OPTIMIZE[0], 2.5, *OPTIMIZE[2:]), "Steps must be a whole number"),
    "lr 0": ("/edit_optimize", (*OPTIMIZE[:4], 0.0, *OPTIMIZE[5:]), "less than minimum value 0.01"),
    "lr 100": ("/edit_optimize", (*OPTIMIZE[:4], 100.0, *OPTIMIZE[5:]), "greater than maximum value 1"),
    "views 99": ("/edit_optimize", (*OPTIMIZE[:7], 99), "greater than maximum value 8"),
    "views 2.5": ("/edit_optimize", (*OPTIMIZE[:7], 2.5), "Augmented views must be a whole number"),
    "jitter 5": ("/edit_optimize", (*OPTIMIZE, ["coarse"], 5.0), "greater than maximum value 1"),
    "jitter -1": ("/edit_optimize", (*OPTIMIZE, ["coarse"], -1.0), "less than minimum value 0"),
    "l2 lambda negative": ("/edit_optimize", (OPTIMIZE[0], 2, -1, *OPTIMIZE[3:]), "less than minimum"),
    "unknown mode": ("/edit_optimize", (*OPTIMIZE[:5], "bogus", 0, 0), "not in the list of choices"),
    "optimise seed 2.5": (
        "/edit_optimize",
        (*OPTIMIZE[:5], "free_generation", 2.5, 0),
        "Seed must be a whole number from 0 to 2147483647, got 2.5",
    ),
    "no levels": ("/edit_optimize", (*OPTIMIZE, []), "Tick at least one W. level"),
    "unknown level": ("/edit_optimize", (*OPTIMIZE, ["eyes"]), "not in the list of choices"),
    "optimise seed 1e20": ("/edit_optimize", (*OPTIMIZE[:6], 1e20, 0), "Seed must be a whole number"),
    "seed negative": ("/random_face", (-5, 0.7), "less than minimum value 0"),
    "seed 1e20": ("/random_face", (1e20, 0.7), "Seed must be a whole number"),
    "seed 2.5": ("/random_face", (2.5, 0.7), "Seed must be a whole number"),
    "truncation 2": ("/random_face", (1, 2.0), "greater than maximum value 1"),
    "truncation negative": ("/random_face", (1, -1.0), "less than minimum value 0"),
    "strength 100": ("/edit_mapper", ("purple_hair", 100.0), "greater than maximum value 1"),
    "unknown mapper": ("/edit_mapper", ("no_such_mapper", 0.1), "no_such_mapper is not in the list of"),
    "mapper path": ("/edit_mapper", ("../../etc/passwd", 0.1), "is not in the list of choices"),
    "unknown mapper info": ("/mapper_info", ("nope",), "nope is not in the list of choices"),
    "face index": ("/select_face", (5,), "5 is not in the list of choices"),
}

# (api name, JSON body, message): NaN and infinity, which only raw JSON can carry
RAW_CALLS: dict[str, tuple[str, str, str]] = {
    "alpha NaN": ("edit_global", '["face with glasses", "face", NaN, 0.15]', "Alpha must be between -10 and"),
    "alpha inf": ("edit_global", '["face with glasses", "face", Infinity, 0.15]', "greater than maximum"),
    "beta NaN": ("edit_global", '["face with glasses", "face", 1.0, NaN]', "Beta must be between 0 and 1"),
    "steps NaN": (
        "edit_optimize",
        '["a smile", NaN, 0.008, 0.005, 0.1, "edit", 0, 0, ["coarse", "medium", "fine"], 0.0]',
        "Steps must be a whole",
    ),
    "jitter NaN": (
        "edit_optimize",
        '["a smile", 2, 0.008, 0.005, 0.1, "edit", 0, 0, ["coarse", "medium", "fine"], NaN]',
        "Jitter must be finite",
    ),
    "lr NaN": (
        "edit_optimize",
        '["a smile", 2, 0.008, 0.005, NaN, "edit", 0, 0, ["coarse", "medium", "fine"], 0.0]',
        "Lr must be finite",
    ),
    "lr inf": (
        "edit_optimize",
        '["a smile", 2, 0.008, 0.005, Infinity, "edit", 0, 0, ["coarse", "medium", "fine"], 0.0]',
        "greater than maximum",
    ),
    "l2 NaN": (
        "edit_optimize",
        '["a smile", 2, NaN, 0.005, 0.1, "edit", 0, 0, ["coarse", "medium", "fine"], 0.0]',
        "L2_lambda must be finite",
    ),
    "views NaN": (
        "edit_optimize",
        '["a smile", 2, 0.008, 0.005, 0.1, "edit", 0, NaN, ["coarse", "medium", "fine"], 0.0]',
        "Augmented views must",
    ),
    "seed NaN": ("random_face", "[NaN, 0.7]", "Seed must be a whole number from 0 to 2147483647, got nan"),
    "seed inf": ("random_face", "[Infinity, 0.7]", "Seed must be a whole number from 0 to 2147483647, got"),
    "optimise seed NaN": (
        "edit_optimize",
        '["a smile", 2, 0.008, 0.005, 0.1, "free_generation", NaN, 0, ["coarse", "medium", "fine"], 0.0]',
        "Seed must be a whole number",
    ),
    "truncation NaN": ("random_face", "[1, NaN]", "Truncation must be between 0 and 1"),
    "strength NaN": ("edit_mapper", '["purple_hair", NaN]', "Strength must be between -1 and 1"),
    "strength -inf": ("edit_mapper", '["purple_hair", -Infinity]', "less than minimum value -1"),
}


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server(app_weights, app_s_stats, tmp_path_factory):
    with running_app(app_weights, app_s_stats, tmp_path_factory.mktemp("downloads")) as url:
        yield url


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(ASTRONAUT).convert("RGB")


@pytest.fixture(scope="module")
def files(photo, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_inputs")
    paths = {}
    for name, data in _build_files(photo).items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def bystander(server):
    """Another user, with the astronaut inverted before the corpus runs: (client, its face)."""
    c = Client(server, verbose=False)
    out = c.predict(handle_file(str(ASTRONAUT)), api_name="/invert")
    return c, np.asarray(Image.open(out[0]).convert("RGB"), np.float64), np.asarray(Image.open(out[3]))


@pytest.fixture(scope="module")
def client(server, bystander) -> Client:
    """The user sending the bad inputs; a face first, so that edits get as far as their checks."""
    c = Client(server, verbose=False)
    c.predict(handle_file(str(ASTRONAUT)), api_name="/invert")
    return c


# ------------------------------------------------------------------------------------- tests
def test_the_corpus_has_at_least_30_inputs():
    assert len(PHOTOS) + len(API_CALLS) + len(RAW_CALLS) >= 30 and len(PHOTOS) >= 30


@pytest.mark.parametrize("name", list(PHOTOS))
def test_photo(name, files, client, bystander):
    expect = PHOTOS[name]
    t0 = time.perf_counter()
    if isinstance(expect, str):
        with pytest.raises(Exception, match=expect) as info:
            client.predict(handle_file(str(files[name])), api_name="/invert")
        assert "Traceback" not in str(info.value)
        if name.startswith(("huge", "big")):  # refused from the header, before any decoding
            assert time.perf_counter() - t0 < 3.0
        return
    out = client.predict(handle_file(str(files[name])), api_name="/invert")
    if name.startswith("exif"):
        expect(out, bystander[1])
    else:
        expect(out)


@pytest.mark.parametrize("name", list(API_CALLS))
def test_api_value(name, client):
    api_name, args, message = API_CALLS[name]
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=api_name)


@pytest.mark.parametrize("name", list(RAW_CALLS))
def test_nan_and_infinity(name, server):
    api_name, data, message = RAW_CALLS[name]
    body = '{"data": ' + data + "}"
    r = httpx.post(
        f"{server}gradio_api/call/{api_name}", content=body, headers={"content-type": "application/json"}
    )
    event = r.json()["event_id"]
    stream = httpx.get(f"{server}gradio_api/call/{api_name}/{event}", timeout=30).text
    assert "event: error" in stream and message in stream, stream


def test_unusual_prompts_are_fine(client):
    for target in ("😀🎉 face with 👓", "戴眼镜的脸", "face with glasses!!! <script>alert(1)</script>"):
        (before, after), metrics, *_ = client.predict(target, "face", 4.0, 0.15, api_name="/edit_global")
        assert metrics["method"] == "global" and metrics["channels_moved"] >= 0


def test_the_app_still_answers_and_other_sessions_are_untouched(server, client, bystander):
    other, _, reconstruction = bystander
    (before, after), metrics, *_ = other.predict(*GLASSES, 4.0, 0.15, api_name="/edit_global")
    assert np.array_equal(np.asarray(Image.open(before)), reconstruction)  # still its own face
    assert metrics["method"] == "global"
    (before, after), metrics, *_ = client.predict("purple_hair", 0.3, api_name="/edit_mapper")
    assert metrics["method"] == "mapper"
    assert Client(server, verbose=False).predict(3, 0.7, api_name="/random_face")[1].startswith("Generated")
