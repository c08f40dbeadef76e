"""Tests for editing/align.py: photo loading, dlib detection, FFHQ alignment and pasting back.

Golden numbers (tests/golden/align.json) come from the reference alignment run on
assets/astronaut.png: NVlabs/ffhq-dataset 4826aa6 ``download_ffhq.py`` ``recreate_aligned_images``
(patched only for Pillow >= 10: ``ANTIALIAS`` -> ``LANCZOS``) with landmarks from dlib called as in
omertov/encoder4editing 99ea505 ``utils/alignment.get_landmark``. They hold the dlib detections and
scores, the 68 landmarks of the largest face, the reference quad, and a strided subsample plus
mean/std of four reference crops: FFHQ's 1024 (transform 4096), e4e's 256 (transform 256), a 32
crop (transform 128; exercises the shrink step) and a 256 crop of the photo cut at (150, 40)
(transform 1024; exercises the reflect padding and its blur). To regenerate: fetch both repositories,
copy the reference function into a scratch folder outside the repository with that one patch, and
run it on these inputs (the scratch script used was /work/scratch/align/make_golden.py).

The dlib tests need ``dlib`` and the ``face-recognition-models`` package (both in requirements.txt)
and are skipped with the reason when either is missing.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editing.align import (
    AlignedFace,
    DetectedFace,
    FaceAligner,
    align_face,
    default_predictor_path,
    ffhq_quad,
    load_image,
    paste_back,
)
from editing.errors import (
    FaceEditingError,
    ImageTooLargeError,
    InvalidImageError,
    NoFaceFoundError,
    WeightsUnavailableError,
)

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "assets" / "astronaut.png"
GOLDEN = json.loads((ROOT / "tests" / "golden" / "align.json").read_text())


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def golden_face() -> DetectedFace:
    left, top, right, bottom = GOLDEN["detections_inclusive"][GOLDEN["largest"]]
    return DetectedFace(
        (left, top, right + 1, bottom + 1), GOLDEN["scores"][GOLDEN["largest"]], GOLDEN["landmarks"]
    )


def eye_mouth(landmarks: np.ndarray) -> np.ndarray:
    """(4, 2): left eye centre, right eye centre, mouth centre (corners 48, 54), eye midpoint."""
    left, right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    return np.stack([left, right, (landmarks[48] + landmarks[54]) / 2, (left + right) / 2])


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return load_image(ASTRONAUT)


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    pytest.importorskip("dlib", reason="dlib (pip install dlib-bin) is not installed")
    try:
        default_predictor_path()
    except WeightsUnavailableError as exc:
        pytest.skip(str(exc))
    return FaceAligner()


@pytest.fixture(scope="module")
def exact_1024(photo) -> AlignedFace:
    return align_face(photo, golden_face(), output_size=1024, exact=True)


# --------------------------------------------------------------------------------------------------
# Detection and landmarks against the reference


def test_detect_matches_reference(aligner, photo):
    unfiltered = FaceAligner(predictor_path=aligner.predictor_path, min_other_score=0.0)
    faces = unfiltered.detect(photo)
    # dlib also fires (score 0.12) on the mission patch; upstream keeps that LAST detection.
    assert len(faces) == len(GOLDEN["detections_inclusive"]) == 2
    expected = sorted(
        zip(GOLDEN["detections_inclusive"], GOLDEN["scores"], strict=True),
        key=lambda d: -(d[0][2] - d[0][0] + 1) * (d[0][3] - d[0][1] + 1),
    )
    for face, (box, score) in zip(faces, expected, strict=True):
        assert face.box == (box[0], box[1], box[2] + 1, box[3] + 1)
        assert face.score == pytest.approx(score, abs=1e-9)
    assert faces[0].landmarks.shape == (68, 2)
    np.testing.assert_array_equal(faces[0].landmarks, np.array(GOLDEN["landmarks"]))
    np.testing.assert_array_equal(faces[1].landmarks, np.array(GOLDEN["landmarks_last_detection"]))
    assert faces[0].area > faces[1].area


def test_quad_matches_reference(photo):
    quad, qsize = ffhq_quad(np.array(GOLDEN["landmarks"]))
    np.testing.assert_allclose(quad, np.array(GOLDEN["quad"]), rtol=0, atol=1e-9)
    assert qsize == pytest.approx(np.linalg.norm(quad[3] - quad[0]), abs=1e-9)
    aligned = align_face(photo, golden_face(), output_size=256)
    np.testing.assert_allclose(aligned.quad, np.array(GOLDEN["quad"]), rtol=0, atol=1e-9)


def _reference_input(name: str, photo: Image.Image) -> tuple[Image.Image, DetectedFace, int]:
    face = golden_face()
    if name == "edge_256":
        box = GOLDEN["edge_box"]
        shifted = face.landmarks - np.array(box[:2], dtype=np.float64)
        return photo.crop(tuple(box)), DetectedFace((0, 0, 1, 1), 1.0, shifted), 256
    return photo, face, GOLDEN["crops"][name]["size"][0]


@pytest.mark.parametrize("name", ["ffhq_1024", "e4e_256", "shrink_32", "edge_256"])
def test_exact_crop_matches_reference(name, photo, exact_1024):
    image, face, output_size = _reference_input(name, photo)
    transform_size = 256 if name == "e4e_256" else None  # e4e samples at 256 directly
    if name == "ffhq_1024":
        crop = exact_1024.image
    else:
        crop = align_face(
            image, face, output_size=output_size, exact=True, transform_size=transform_size
        ).image
    golden = GOLDEN["crops"][name]
    assert list(crop.size) == golden["size"]
    stride = golden["stride"]
    ours = np.asarray(crop, dtype=np.int64)[::stride, ::stride]
    diff = np.abs(ours - np.array(golden["subsample"]))
    # Bit-identical here; 1 grey level of slack for other SciPy builds (float blur before rounding).
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    pixels = np.asarray(crop, dtype=np.float64).reshape(-1, 3)
    np.testing.assert_allclose(pixels.mean(0), golden["mean"], rtol=0, atol=0.01)
    np.testing.assert_allclose(pixels.std(0), golden["std"], rtol=0, atol=0.01)


@pytest.mark.parametrize(
    ("name", "min_psnr"),
    # measured: 57.6, 50.6, 50.7 dB
    [("ffhq_1024", 55.0), ("e4e_256", 48.0), ("edge_256", 48.0)],
)
def test_fast_path_close_to_reference(name, min_psnr, photo, exact_1024):
    image, face, output_size = _reference_input(name, photo)
    if name == "ffhq_1024":
        reference = exact_1024.image
    else:  # FFHQ's own sampling (4x), which the fast path approximates
        reference = align_face(image, face, output_size=output_size, exact=True).image
    fast = align_face(image, face, output_size=output_size)
    assert psnr(fast.image, reference) >= min_psnr
    np.testing.assert_allclose(fast.to_original, align_face(image, face, output_size=output_size).to_original)


# --------------------------------------------------------------------------------------------------
# Geometry of the crop


def canonical_landmarks(eye_distance: float, eye_to_mouth: float, angle: float, scale: float) -> np.ndarray:
    """68 landmarks whose eyes and mouth corners (the only points FFHQ uses) form an upright face,
    then rotated by ``angle`` (radians) and scaled by ``scale`` about an arbitrary point."""
    lm = np.zeros((68, 2))
    lm[36:42] = (-eye_distance / 2, 0.0)
    lm[42:48] = (eye_distance / 2, 0.0)
    lm[48] = (-20.0, eye_to_mouth)
    lm[54] = (20.0, eye_to_mouth)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return lm @ rotation.T * scale + (700.0, 600.0)


@pytest.mark.parametrize(
    ("eye_distance", "eye_to_mouth", "eyes", "mouth"),
    [
        # Derivation: for an upright face with eye_to_eye (e, 0) and eye_to_mouth (0, m), FFHQ's
        # x axis is (1, 0) and its half-side is s = max(2e, 1.8m); the crop's centre c lies 0.1m
        # below the eye midpoint and a photo point p lands at the unit-crop point 1/2 + (p - c) / 2s.
        # Eyes: p - c = (-+e/2, -0.1m) -> (1/2 -+ e/4s, 1/2 - m/20s); mouth: (0, 0.9m) ->
        # (1/2, 1/2 + 9m/20s).
        (100.0, 80.0, [(0.375, 0.48), (0.625, 0.48)], (0.5, 0.68)),  # s = 2e = 200
        (100.0, 125.0, [(0.5 - 1 / 9, 0.5 - 1 / 36), (0.5 + 1 / 9, 0.5 - 1 / 36)], (0.5, 0.75)),  # s = 1.8m
    ],
)
@pytest.mark.parametrize(("angle", "scale"), [(0.0, 1.0), (math.radians(30), 1.7), (math.radians(-12), 0.6)])
def test_canonical_eye_and_mouth_positions(eye_distance, eye_to_mouth, eyes, mouth, angle, scale):
    landmarks = canonical_landmarks(eye_distance, eye_to_mouth, angle, scale)
    photo = Image.new("RGB", (1400, 1200), (90, 120, 150))
    output_size = 256  # no shrink step: with one, FFHQ's crop is off its quad by a fraction of a pixel
    aligned = align_face(photo, DetectedFace((0, 0, 1, 1), 1.0, landmarks), output_size=output_size)
    points = aligned.original_to_aligned(eye_mouth(landmarks)[:3])
    # Unit-crop positions -> pixel-centre coordinates of the crop.
    expected = np.array([*eyes, mouth]) * output_size - 0.5
    np.testing.assert_allclose(points, expected, rtol=0, atol=1e-9)


def test_astronaut_eyes_follow_ffhq_construction(photo, aligner):
    """The identities the quad construction imposes on any face, in crop coordinates:
    - the point a tenth of the way from the eye midpoint to the mouth is the crop's centre;
    - the eye line's vertical offset equals the eye-to-mouth line's horizontal offset (the x axis
      bisects the eye line and the perpendicular of the eye-mouth line);
    - max(4 |eye_to_eye|, 3.6 |eye_to_mouth|) equals the crop side.
    And the pixels agree: dlib run on the crop finds the eyes where the transform maps them."""
    face = aligner.detect(photo)[0]
    output_size = 1024
    aligned = align_face(photo, face, output_size=output_size)
    left, right, mouth, middle = aligned.original_to_aligned(eye_mouth(face.landmarks))
    eye_to_eye, eye_to_mouth = right - left, mouth - middle
    centre = middle + 0.1 * eye_to_mouth
    np.testing.assert_allclose(centre, [(output_size - 1) / 2] * 2, rtol=0, atol=1e-9)
    assert eye_to_eye[1] == pytest.approx(eye_to_mouth[0], abs=1e-9)
    assert eye_to_eye[0] > 0
    assert max(4 * np.linalg.norm(eye_to_eye), 3.6 * np.linalg.norm(eye_to_mouth)) == pytest.approx(
        output_size
    )
    # For this frontal face: eyes near FFHQ's (0.375, 0.48) and (0.625, 0.48) of the side.
    np.testing.assert_allclose(
        np.stack([left, right]) / output_size, [[0.375, 0.477], [0.625, 0.477]], atol=0.005
    )

    found = aligner.detect(aligned.image)[0]  # the crop itself, re-detected
    again = eye_mouth(found.landmarks)
    np.testing.assert_allclose(again[:2], np.stack([left, right]), rtol=0, atol=0.01 * output_size)


def blob_photo(size: tuple[int, int], centres: np.ndarray, sigma: float) -> Image.Image:
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    field = sum(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres)
    return Image.fromarray(np.uint8(np.rint(20 + 200 * field))).convert("RGB")


def centroid(image: Image.Image, centre: np.ndarray, radius: int) -> np.ndarray:
    x0, y0 = int(centre[0]) - radius, int(centre[1]) - radius
    window = np.asarray(image, dtype=np.float64)[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1, 0] - 20
    window[window < 5] = 0
    yy, xx = np.mgrid[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
    return np.array([(window * xx).sum(), (window * yy).sum()]) / window.sum()


@pytest.mark.parametrize(
    ("zoom", "output_size", "exact"),
    [(1, 256, False), (1, 256, True), (3, 128, False), (3, 128, True)],  # zoom 3 at 128: shrink by 2
)
def test_to_original_matches_pixels(zoom, output_size, exact):
    """Gaussian blobs at the eyes, mouth, jaw ends and chin: their centroids in the crop sit where
    ``original_to_aligned`` puts them, and pasting the crop back leaves them where they were."""
    landmarks = np.array(GOLDEN["landmarks"], dtype=np.float64) * zoom + (zoom - 1) / 2
    face = DetectedFace((0, 0, 1, 1), 1.0, landmarks)
    centres = np.concatenate([eye_mouth(landmarks)[:3], landmarks[[0, 8, 16]]])
    sigma = 3.0 * zoom
    # With zoom 3 the size is odd so the shrunk size is rounded: the shrink is not exactly 2.
    image = blob_photo((512 * zoom + zoom // 2, 512 * zoom - zoom // 2), centres, sigma)
    aligned = align_face(image, face, output_size=output_size, exact=exact)
    if zoom == 3:
        _, qsize = ffhq_quad(landmarks)
        assert int(qsize / output_size * 0.5) > 1  # the shrink step ran
    predicted = aligned.original_to_aligned(centres)
    crop_sigma = sigma * output_size / np.linalg.norm(aligned.quad[3] - aligned.quad[0])
    radius = int(3 * crop_sigma) + 3
    found = np.array([centroid(aligned.image, p, radius) for p in predicted])
    np.testing.assert_allclose(found, predicted, rtol=0, atol=0.05)
    np.testing.assert_allclose(aligned.aligned_to_original(predicted), centres, rtol=0, atol=1e-9)

    pasted = paste_back(image, aligned.image, aligned, feather=0.0)
    found = np.array([centroid(pasted, c, int(3 * sigma) + 3) for c in centres])
    np.testing.assert_allclose(found, centres, rtol=0, atol=0.05 * zoom)


# --------------------------------------------------------------------------------------------------
# Several faces, none, EXIF


def test_many_faces_largest_first(aligner, photo):
    head = photo.crop((0, 0, 512, 300))  # above the mission patch dlib also fires on
    big = head.resize((819, 480), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (512 + 40 + big.width, big.height), (255, 255, 255))
    canvas.paste(head, (0, 0))
    canvas.paste(big, (552, 0))  # the larger face on the right: order is by size, not position
    assert max(canvas.size) > aligner.detect_max_side  # exercises detection on a reduced copy

    faces = aligner.detect(canvas)
    assert len(faces) == 2
    assert faces[0].box[0] > 552 > faces[1].box[2]
    assert faces[0].area / faces[1].area == pytest.approx(1.6**2, rel=0.25)
    # Landmarks are predicted at full resolution: the small face's are those of the photo.
    np.testing.assert_allclose(faces[1].landmarks, np.array(GOLDEN["landmarks"]), atol=3)

    aligned = aligner.align(canvas, output_size=128)
    assert len(aligned) == 2 and all(a.image.size == (128, 128) for a in aligned)
    np.testing.assert_array_equal(aligned[0].landmarks, faces[0].landmarks)
    assert aligner.align(canvas, output_size=128, max_faces=1)[0].box == faces[0].box


def test_low_scoring_detections_next_to_a_clear_face_are_dropped(aligner, photo):
    faces = aligner.detect(photo)  # the mission patch (score 0.12 vs her face's 1.16) is dropped
    assert len(faces) == 1 and faces[0].box == (175, 76, 266, 167) and faces[0].score > 1
    webp = io.BytesIO()
    photo.save(webp, "WEBP")  # the encoding that lifts the patch's score most (to 0.22)
    assert len(aligner.detect(load_image(webp.getvalue()))) == 1
    tiled = Image.new("RGB", (1024, 1024))
    for x in (0, 512):
        for y in (0, 512):
            tiled.paste(photo, (x, y))
    faces = aligner.detect(tiled)  # four faces kept (1.1-1.45), the patch the detector saw (0.1) not
    assert sorted(f.box[:2] for f in faces) == [(175, 76), (175, 594), (693, 76), (693, 594)]
    assert len(FaceAligner(predictor_path=aligner.predictor_path, min_other_score=0).detect(tiled)) == 5
    # the best detection always stays, however low it scores: the patch alone is still found
    patch = photo.crop((0, 250, 512, 512))  # below her face: only the patch (0.11)
    assert len(aligner.detect(patch)) == 1
    with pytest.raises(ValueError, match="min_other_score"):
        FaceAligner(min_other_score=float("nan"))


def test_detect_from_threads(aligner, photo):
    expected = [f.box for f in aligner.detect(photo)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: [f.box for f in aligner.detect(photo)], range(3)))
    assert results == [expected] * 3


@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_no_face(aligner, kind):
    if kind == "flat":
        image = Image.new("RGB", (300, 200), (128, 128, 128))
    else:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8))
    with pytest.raises(NoFaceFoundError, match="No face was found in the photo") as info:
        aligner.align(image)
    assert "at least about 40 pixels wide" in str(info.value)
    assert isinstance(info.value, FaceEditingError)


def test_no_face_message_accounts_for_reduced_detection(aligner):
    with pytest.raises(NoFaceFoundError, match="at least about 80 pixels wide"):
        aligner.detect(Image.new("RGB", (2048, 1024), (10, 10, 10)))  # detected at half size


@pytest.mark.parametrize(
    ("orientation", "stored"),
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),  # stored turned left; viewers turn it right
        (8, Image.Transpose.ROTATE_270),
    ],
)
def test_exif_orientation_is_applied(orientation, stored, photo):
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load_image(png_bytes(photo.transpose(stored), exif=exif))
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(photo))


def test_exif_rotated_photo_aligns_like_upright(aligner, photo):
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = load_image(png_bytes(photo.transpose(Image.Transpose.ROTATE_90), exif=exif))
    upright, rotated = aligner.align(photo, output_size=256)[0], aligner.align(sideways, output_size=256)[0]
    np.testing.assert_array_equal(rotated.landmarks, upright.landmarks)
    np.testing.assert_array_equal(np.asarray(rotated.image), np.asarray(upright.image))


# --------------------------------------------------------------------------------------------------
# Loading: modes, formats, limits, corrupt files


def test_load_from_path_bytes_and_pil_agree(photo):
    from_bytes = load_image(ASTRONAUT.read_bytes())
    from_pil = load_image(Image.open(ASTRONAUT))
    for image in (from_bytes, from_pil):
        assert image.mode == "RGB" and image.size == (512, 512)
        np.testing.assert_array_equal(np.asarray(image), np.asarray(photo))
    with pytest.raises(TypeError, match="source"):
        load_image(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError):
        load_image(ASTRONAUT.with_name("missing.png"))


def test_rgba_is_composited_on_white(photo):
    rgb = np.asarray(photo)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:10] = 0  # transparent rows
    alpha[10:20] = 128
    loaded = np.asarray(load_image(png_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))), np.int64)
    assert (loaded[:10] == 255).all()
    np.testing.assert_array_equal(loaded[20:], rgb[20:])
    half = rgb[10:20].astype(np.float64) * 128 / 255 + 255 * 127 / 255
    assert np.abs(loaded[10:20] - half).max() <= 1

    la = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    loaded = np.asarray(load_image(png_bytes(la)))
    assert (loaded[:10] == 255).all() and (loaded[20:, :, 1] == rgb[20:, :, 0]).all()


def test_palette_with_transparency_and_animation_first_frame():
    frames = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(buffer.getvalue())
    assert loaded.mode == "RGB" and loaded.getpixel((5, 5)) == (255, 0, 0)

    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    buffer = io.BytesIO()
    palette.save(buffer, "GIF", transparency=0)
    loaded = load_image(buffer.getvalue())
    assert loaded.getpixel((0, 0)) == (255, 255, 255) and loaded.getpixel((3, 3)) == (10, 200, 30)


def test_grey_cmyk_and_16_bit(aligner, photo):
    grey = np.asarray(photo.convert("L"))
    loaded = np.asarray(load_image(png_bytes(Image.fromarray(grey, "L"))))
    assert (loaded == grey[:, :, None]).all()

    wide = grey.astype(np.uint16) * 257  # 16-bit PNG ("I;16"): scaled, not clipped at 255
    sixteen = Image.open(io.BytesIO(png_bytes(Image.fromarray(wide))))
    assert sixteen.mode == "I;16"
    loaded16 = load_image(sixteen)
    np.testing.assert_array_equal(np.asarray(loaded16), np.asarray(load_image(Image.fromarray(grey, "L"))))
    as_int32 = Image.fromarray(np.array([[0, 32768, 65535, 70000]], np.int32), "I")
    assert np.asarray(load_image(as_int32))[0, :, 0].tolist() == [0, 128, 255, 255]
    assert (
        aligner.detect(loaded16)[0].box == aligner.detect(load_image(png_bytes(Image.fromarray(grey))))[0].box
    )

    cmyk = photo.convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, "TIFF")
    np.testing.assert_array_equal(np.asarray(load_image(buffer.getvalue())), np.asarray(photo))
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=95)  # Adobe-style CMYK JPEG
    assert psnr(load_image(buffer.getvalue()), photo) > 30
    cmyk.info["icc_profile"] = b"not an ICC profile"  # unusable: PIL's plain conversion instead
    np.testing.assert_array_equal(np.asarray(load_image(cmyk)), np.asarray(photo))


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height RGB, then an undecodable IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage, not zlib")


def test_too_large_is_refused_before_decoding(tmp_path):
    header = _png_header(7000, 7000)  # 49 MP: under PIL's own bomb limit, over ours (40 MP)
    with pytest.raises(ImageTooLargeError, match="7000 x 7000 pixels.*at most 40 megapixels"):
        load_image(header)
    path = tmp_path / "big.png"
    path.write_bytes(header)
    with pytest.raises(ImageTooLargeError):
        load_image(path)
    with pytest.raises(ImageTooLargeError):
        load_image(Image.open(io.BytesIO(header)))  # a lazily opened PIL image too
    # The pixel data cannot be decoded, so the errors above came from the header alone.
    with pytest.raises(InvalidImageError):
        load_image(header, max_pixels=50_000_000)
    with pytest.raises(ImageTooLargeError, match=r"too large \(900 megapixels\)"):  # PIL's bomb error
        load_image(_png_header(30000, 30000), max_pixels=10**12)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(header, max_pixels=0)


def test_empty_file_float_pixels_and_too_small_for_a_face(tmp_path, aligner, photo):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="The uploaded file is empty"):
        load_image(empty)
    floats = Image.fromarray(np.asarray(photo.convert("L"), np.float32) / 255, "F")  # would load black
    buffer = io.BytesIO()
    floats.save(buffer, "TIFF")
    with pytest.raises(InvalidImageError, match="floating-point pixels are not supported"):
        load_image(buffer.getvalue())
    with pytest.raises(NoFaceFoundError, match="only 1 x 1 pixels.*at least about 40 pixels"):
        aligner.detect(Image.new("RGB", (1, 1)))
    with pytest.raises(NoFaceFoundError, match="only 600 x 39 pixels"):
        aligner.detect(Image.new("RGB", (600, 39)))


def test_corrupt_and_unsupported_files(photo):
    for data in (b"", b"definitely not an image", png_bytes(photo)[:5000]):
        with pytest.raises(InvalidImageError):
            load_image(data)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    with pytest.raises(InvalidImageError, match="damaged"):
        load_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    photo.save(buffer, "ICO")  # a real image, but not an accepted photo format
    with pytest.raises(InvalidImageError, match="supported format"):
        load_image(buffer.getvalue())


# --------------------------------------------------------------------------------------------------
# Pasting back


def test_paste_back_unedited_crop_restores_photo(photo, exact_1024):
    aligned = align_face(photo, golden_face(), output_size=1024)
    restored = paste_back(photo, aligned.image, aligned)
    left, top, right, bottom = aligned.box
    face = (slice(top, bottom), slice(left, right))
    # measured: 37.7 dB on the face, 47.9 dB overall (two resamplings of a 7.8x zoom)
    assert psnr(np.asarray(restored)[face], np.asarray(photo)[face]) > 36.5
    assert psnr(restored, photo) > 46
    # From a 256 crop too (the edited image may have any size).
    small = aligned.image.resize((256, 256), Image.Resampling.LANCZOS)
    assert psnr(np.asarray(paste_back(photo, small, aligned))[face], np.asarray(photo)[face]) > 34

    # Outside the crop's square nothing changes.
    corners = aligned.aligned_to_original(
        np.array([[-0.5, -0.5], [1023.5, 1023.5], [-0.5, 1023.5], [1023.5, -0.5]])
    )
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    outside = np.ones((512, 512), bool)
    outside[max(y0, 0) : y1, max(x0, 0) : x1] = False
    np.testing.assert_array_equal(np.asarray(restored)[outside], np.asarray(photo)[outside])


def test_paste_back_where_the_crop_leaves_the_photo(photo):
    box = GOLDEN["edge_box"]
    cut = photo.crop(tuple(box))
    landmarks = np.array(GOLDEN["landmarks"], dtype=np.float64) - box[:2]
    aligned = align_face(cut, DetectedFace((0, 0, 1, 1), 1.0, landmarks), output_size=512)
    assert aligned.quad[:, 0].min() < 0  # part of the crop is padding
    restored = paste_back(cut, aligned.image, aligned)
    assert restored.size == cut.size
    assert psnr(restored, cut) > 38.5  # measured 39.8 dB


def test_paste_back_blends_with_feather_and_mask(photo):
    aligned = align_face(photo, golden_face(), output_size=256)
    red = Image.new("RGB", (256, 256), (255, 0, 0))
    pasted = np.asarray(paste_back(photo, red, aligned, feather=0.2))
    centre = np.rint(aligned.aligned_to_original(np.array([[127.5, 127.5]]))[0]).astype(int)
    assert tuple(pasted[centre[1], centre[0]]) == (255, 0, 0)
    # Just inside a crop corner the feather keeps the photo almost unchanged.
    corner = np.rint(aligned.aligned_to_original(np.array([[3.0, 3.0]]))[0]).astype(int)
    assert (
        np.abs(pasted[corner[1], corner[0]].astype(int) - np.asarray(photo)[corner[1], corner[0]]).max() <= 3
    )
    # Half-way through the feather, a partial blend.
    ramp = np.rint(aligned.aligned_to_original(np.array([[127.5, 25.6]]))[0]).astype(int)
    assert (
        40 < pasted[ramp[1], ramp[0], 0] - 0
        and pasted[ramp[1], ramp[0], 1] < np.asarray(photo)[ramp[1], ramp[0], 1]
    )

    nothing = Image.new("L", (64, 64), 0)
    np.testing.assert_array_equal(
        np.asarray(paste_back(photo, red, aligned, mask=nothing)), np.asarray(photo)
    )
    with pytest.raises(ValueError, match="feather"):
        paste_back(photo, red, aligned, feather=0.7)
    with pytest.raises(ValueError, match="square"):
        paste_back(photo, red.resize((256, 200)), aligned)


# --------------------------------------------------------------------------------------------------
# Set-up errors


def test_predictor_path():
    path = pytest.importorskip("importlib.util").find_spec("face_recognition_models")
    if path is None:
        pytest.skip("face-recognition-models is not installed")
    assert default_predictor_path().name == "shape_predictor_68_face_landmarks.dat"
    aligner = FaceAligner(predictor_path="/nonexistent/shape_predictor_68_face_landmarks.dat")
    pytest.importorskip("dlib")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        aligner.detect(Image.new("RGB", (64, 64)))
    with pytest.raises(ValueError, match="upsample"):
        FaceAligner(upsample=-1)
    with pytest.raises(ValueError, match="mode"):
        align_face(Image.new("L", (64, 64)), golden_face())
