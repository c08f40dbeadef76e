"""Photo loading, dlib face detection and FFHQ face alignment, and pasting edits back.

The generator and the e4e encoder only understand faces cropped and rotated the way the FFHQ data
set was (Karras et al., "A Style-Based Generator Architecture for Generative Adversarial Networks",
CVPR 2019): an oriented square built from the 68 dlib landmarks (eyes and mouth), resampled to
``output_size`` squared. This module reproduces that crop exactly and also keeps the affine map
between the crop and the photo, so an edited crop can be warped back into the original photo.

Compatible with NVlabs/ffhq-dataset ``download_ffhq.py`` (``recreate_aligned_images``: shrink,
crop, reflect-pad with a blurred blend, QUAD transform, resize) and omertov/encoder4editing
``utils/alignment.py`` (same steps with ``output_size=transform_size=256``), with three deliberate
differences: the largest face is used and a photo without faces raises :class:`NoFaceFoundError`
(upstream keeps the last detection and crashes); detections scoring far below the best one are
dropped (``FaceAligner(min_other_score=...)``: dlib also fires on the mission patch of the
example photo); and by default the intermediate QUAD resolution is chosen from the face size
instead of always ``4 * output_size`` and the padding blur is approximated (see
:func:`align_face`; ``exact=True`` gives FFHQ's pixels bit for bit).

Coordinates: points are ``(x, y)`` in pixel-centre units, i.e. pixel ``(i, j)`` has its centre at
``(i, j)``, as dlib reports landmarks.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from editing.errors import (
    ImageTooLargeError,
    InvalidImageError,
    NoFaceFoundError,
    WeightsUnavailableError,
)

DEFAULT_MAX_PIXELS = 40_000_000
# Formats a photo upload can reasonably be in. Restricting Image.open to these also keeps PIL away
# from plugins that shell out (EPS runs Ghostscript) or parse exotic scientific formats.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
# dlib's HOG frontal detector scans an 80x80 window; every upsampling halves the smallest face found.
_DLIB_WINDOW = 80
# Decoder failures PIL surfaces for corrupt or truncated files, depending on the plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_PREDICTOR_PACKAGE = "face_recognition_models"
_PREDICTOR_FILE = "models/shape_predictor_68_face_landmarks.dat"


# --------------------------------------------------------------------------------------------------
# Loading


def load_image(
    source: str | os.PathLike | bytes | Image.Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Reads a photo and returns it upright, as 8-bit RGB.

    - The EXIF orientation is applied (phone photos are often stored sideways).
    - Animated images (GIF, APNG, WebP) give their first frame.
    - Transparency is composited onto white: the colours stored under fully transparent pixels are
      arbitrary (often black), so dropping the alpha channel could reveal garbage; white is how
      the image looks on a page.
    - 16-bit grey (``I;16*``) and 32-bit integer (``I``, taken to hold 16-bit data, as PIL makes
      of 16-bit PNGs) are scaled by 255/65535, not clipped. CMYK goes through its embedded ICC
      profile when it has one, otherwise PIL's conversion. Grey, palette and YCbCr are expanded.
    - The pixel count is checked from the header before any pixel is decoded. PIL's own
      decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89 M; refusing above twice that) also
      applies, so raising ``max_pixels`` beyond that needs raising PIL's limit too.

    Args:
        source: a file path, the file's bytes, or a PIL image (its pixels are not modified).
        max_pixels: refuse images with more than this many pixels (width * height).

    Returns:
        A new, fully loaded PIL image in mode ``"RGB"``, upright.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        InvalidImageError: not an image in a supported format, or corrupt / truncated.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels)
        return _decode(source, max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise InvalidImageError("The uploaded file is empty.")
        fp: Any = io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        fp = open(source, "rb")  # closed in the finally below
        if os.fstat(fp.fileno()).st_size == 0:
            fp.close()
            raise InvalidImageError("The uploaded file is empty.")
    else:
        raise TypeError(f"source must be a path, bytes or a PIL image, got {type(source).__name__}")
    try:
        try:
            image = Image.open(fp, formats=_registered_formats())  # reads the header only
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(_too_large_message(_bomb_pixels(exc), max_pixels)) from exc
        except UnidentifiedImageError as exc:
            raise InvalidImageError(
                "This file is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF)."
            ) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImageError("The image file is damaged and cannot be read.") from exc
        _check_size(image.size, max_pixels)
        return _decode(image, max_pixels)
    finally:
        fp.close()


def _registered_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format whose plugin this Pillow build lacks (e.g. AVIF).
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _bomb_pixels(exc: Image.DecompressionBombError) -> int | None:
    # PIL refuses before the size is known to the caller; its message carries the pixel count.
    match = re.search(r"Image size \((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else None


def _too_large_message(size: tuple[int, int] | int | None, max_pixels: int) -> str:
    if isinstance(size, tuple):
        got = f" ({size[0]} x {size[1]} pixels)"
    else:
        got = f" ({size / 1e6:.0f} megapixels)" if size else ""
    return (
        f"The image is too large{got}. Please use a photo of at most {max_pixels / 1e6:g} megapixels, "
        f"for example by resizing it first."
    )


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    if size[0] < 1 or size[1] < 1:
        raise InvalidImageError("The image has no pixels.")
    if size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(_too_large_message(size, max_pixels))


def _decode(image: Image.Image, max_pixels: int) -> Image.Image:
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)  # always a new image
        assert upright is not None
        return _to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(_too_large_message(image.size, max_pixels)) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImageError("The image file is damaged or incomplete and cannot be read.") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "F":  # no agreed range (0-1? 0-255? HDR?): guessing could give a black photo
        raise InvalidImageError(
            "Images with floating-point pixels are not supported. Please save the photo as an 8-bit "
            "JPEG or PNG."
        )
    if mode.startswith("I"):  # "I;16", "I;16B", "I;16L", "I;16N", "I"
        values = np.asarray(image).astype(np.float64)  # (H, W), byte order resolved by numpy
        grey = np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK" and image.info.get("icc_profile"):
        converted = _cmyk_to_srgb(image)
        if converted is not None:
            return converted
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise InvalidImageError(f"Images with pixel format {mode!r} are not supported.") from exc


def _cmyk_to_srgb(image: Image.Image) -> Image.Image | None:
    """Converts through the embedded ICC profile; ``None`` when that is impossible."""
    try:
        from PIL import ImageCms  # needs Pillow's LittleCMS extension, absent from some builds
    except ImportError:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, TypeError):
        return None  # a broken profile: the caller falls back to PIL's plain conversion


# --------------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face found by dlib.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detection in photo pixels, right/bottom
            exclusive (PIL's crop convention).
        score: dlib's detection score (at least ``min_score``; about 1 for a clear frontal face).
        landmarks: (68, 2) float64 ``(x, y)`` landmark positions in photo pixels (pixel centres).
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray  # (68, 2)

    def __post_init__(self) -> None:
        landmarks = np.array(self.landmarks, dtype=np.float64)
        if landmarks.shape != (68, 2):
            raise ValueError(f"landmarks must have shape (68, 2), got {landmarks.shape}")
        landmarks.setflags(write=False)
        object.__setattr__(self, "landmarks", landmarks)

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def default_predictor_path() -> Path:
    """Where the ``face-recognition-models`` package keeps the 68-landmark model.

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``,
    which setuptools >= 81 no longer ships.

    Raises:
        WeightsUnavailableError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(_PREDICTOR_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / _PREDICTOR_FILE
            if path.is_file():
                return path
    raise WeightsUnavailableError(
        "The face landmark model (shape_predictor_68_face_landmarks.dat) is missing. Install it with "
        "'pip install face-recognition-models==0.3.0' or pass its path explicitly."
    )


class FaceAligner:
    """Finds faces with dlib and crops them the FFHQ way.

    The dlib detector and the 68-landmark predictor (100 MB) are loaded on first use, once; the
    instance can be shared between threads (dlib calls are serialised by a lock).

    Args:
        predictor_path: ``shape_predictor_68_face_landmarks.dat``; ``None`` finds the copy in the
            ``face-recognition-models`` package.
        upsample: times dlib upsamples the detection image (1 as in FFHQ / e4e); each one halves
            the smallest detectable face and roughly quadruples the detection time.
        min_score: dlib's ``adjust_threshold``: detections scoring below it are dropped (0 is
            dlib's default).
        min_other_score: every detection but the best-scoring one must score at least this; the
            best always stays, so a photo whose only face scores low still works. dlib's HOG
            detector also fires on face-like patterns next to a real face: on the example photo
            it finds the mission patch on the astronaut's suit (0.03-0.22 depending on the
            encoding, the same box size as her face, which scores 1.0-1.4), while clear faces
            score about 1. A value at or below ``min_score`` keeps every detection (FFHQ / e4e
            behaviour).
        detect_max_side: detect on a copy whose longest side is at most this many pixels, then
            predict the landmarks on the full-resolution photo. Detection cost grows with the
            pixel count (1024 px with ``upsample=1``: about 0.3 s on one core).
    """

    def __init__(
        self,
        predictor_path: str | os.PathLike | None = None,
        *,
        upsample: int = 1,
        min_score: float = 0.0,
        min_other_score: float = 0.35,
        detect_max_side: int = 1024,
    ):
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if math.isnan(min_other_score):
            raise ValueError("min_other_score must be a number, got nan")
        if detect_max_side < 64:
            raise ValueError(f"detect_max_side must be >= 64, got {detect_max_side}")
        self.predictor_path = Path(predictor_path) if predictor_path is not None else None
        self.upsample = upsample
        self.min_score = min_score
        self.min_other_score = min_other_score
        self.detect_max_side = detect_max_side
        self._lock = threading.Lock()
        self._detector: Any = None
        self._predictor: Any = None

    def _models(self) -> tuple[Any, Any]:
        # Called with self._lock held.
        if self._predictor is None:
            import dlib  # deferred: loading photos and pasting back do not need dlib

            path = self.predictor_path or default_predictor_path()
            if not path.is_file():
                raise WeightsUnavailableError(f"The face landmark model file {path} does not exist.")
            self._detector = dlib.get_frontal_face_detector()
            self._predictor = dlib.shape_predictor(str(path))
        return self._detector, self._predictor

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """All faces in the photo that pass the score filters, largest detection box first.

        Args:
            image: the photo, mode ``"RGB"`` (see :func:`load_image`).

        Returns:
            The faces, sorted by box area (then score), largest first; never empty.

        Raises:
            NoFaceFoundError: no face was found.
        """
        import dlib

        if image.mode != "RGB":
            raise ValueError(f"image must be an RGB PIL image, got mode {image.mode!r}")
        width, height = image.size
        pixels = np.asarray(image)  # (H, W, 3) uint8
        scale = min(1.0, self.detect_max_side / max(width, height))
        if scale < 1.0:
            small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(image.resize(small_size, Image.Resampling.BILINEAR))
            sx, sy = width / small_size[0], height / small_size[1]
        else:
            small, sx, sy = pixels, 1.0, 1.0
        smallest = math.ceil(_DLIB_WINDOW / 2**self.upsample / scale)  # px, in the photo
        if min(width, height) < smallest:
            raise NoFaceFoundError(
                f"The photo is only {width} x {height} pixels, too small to find a face in: a face must "
                f"be at least about {smallest} pixels wide."
            )

        faces = []
        with self._lock:
            detector, predictor = self._models()
            rects, scores, _ = detector.run(small, self.upsample, self.min_score)
            best = max(scores, default=0.0)
            for rect, score in zip(rects, scores, strict=True):
                if score < self.min_other_score and score != best:
                    continue
                # dlib boxes are inclusive; map pixel centres back to the full-resolution photo.
                left = round((rect.left() + 0.5) * sx - 0.5)
                top = round((rect.top() + 0.5) * sy - 0.5)
                right = round((rect.right() + 0.5) * sx - 0.5)
                bottom = round((rect.bottom() + 0.5) * sy - 0.5)
                shape = predictor(pixels, dlib.rectangle(left, top, right, bottom))
                landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                faces.append(DetectedFace((left, top, right + 1, bottom + 1), float(score), landmarks))
        if not faces:
            raise NoFaceFoundError(
                "No face was found in the photo. Try a well-lit, front-facing photo where the face is "
                f"at least about {smallest} pixels wide."
            )
        faces.sort(key=lambda f: (-f.area, -f.score, f.box))
        return faces

    def align(
        self,
        image: Image.Image,
        *,
        output_size: int = 1024,
        exact: bool = False,
        max_faces: int | None = None,
    ) -> list[AlignedFace]:
        """Detects the faces and aligns each, largest first.

        Args:
            image: the photo, mode ``"RGB"`` (see :func:`load_image`).
            output_size: side of the aligned crops in pixels.
            exact: FFHQ's pixels bit for bit, slower; see :func:`align_face`.
            max_faces: align only the first (largest) this many faces; ``None`` aligns all.

        Returns:
            One :class:`AlignedFace` per face, largest first; never empty.

        Raises:
            NoFaceFoundError: no face was found.
        """
        faces = self.detect(image)
        if max_faces is not None:
            if max_faces < 1:
                raise ValueError(f"max_faces must be >= 1, got {max_faces}")
            faces = faces[:max_faces]
        return [align_face(image, face, output_size=output_size, exact=exact) for face in faces]


# --------------------------------------------------------------------------------------------------
# Alignment


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An FFHQ-aligned face crop and its geometry in the original photo.

    Attributes:
        image: the crop, RGB, ``output_size`` squared.
        landmarks: (68, 2) float64 landmarks in photo pixels.
        box: the detection box ``(left, top, right, bottom)`` in photo pixels, right/bottom exclusive.
        score: the detection score.
        quad: (4, 2) float64 corners of the oriented crop square in photo pixels, in the order
            top-left, bottom-left, bottom-right, top-right of the crop (as FFHQ computes it).
        to_original: (3, 3) float64 affine matrix taking homogeneous crop pixel coordinates
            ``(x, y, 1)`` (pixel centres, crop of side ``output_size``) to photo pixel coordinates.
            It describes the crop actually produced: when FFHQ's shrink step runs, that is off
            ``quad`` by up to about ``shrink / 2`` photo pixels, because FFHQ divides the quad by
            the integer factor while the reduced photo's size is rounded and its pixel centres
            are not at multiples of the factor.
    """

    image: Image.Image
    landmarks: np.ndarray  # (68, 2)
    box: tuple[int, int, int, int]
    score: float
    quad: np.ndarray  # (4, 2)
    to_original: np.ndarray  # (3, 3)

    def __post_init__(self) -> None:
        for name in ("landmarks", "quad", "to_original"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        assert self.image.size[0] == self.image.size[1]
        assert self.to_original.shape == (3, 3)

    @property
    def output_size(self) -> int:
        return self.image.size[0]

    def aligned_to_original(self, points: np.ndarray) -> np.ndarray:
        """Maps (N, 2) crop pixel coordinates to (N, 2) photo pixel coordinates."""
        return _apply(self.to_original, points)

    def original_to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Maps (N, 2) photo pixel coordinates to (N, 2) crop pixel coordinates."""
        return _apply(np.linalg.inv(self.to_original), points)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented FFHQ crop square for 68 dlib landmarks.

    The crop is centred a tenth of the way from the eye midpoint to the mouth midpoint, its x axis
    bisects the eye line and the perpendicular of the eye-to-mouth line, and its half-side is
    ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``.

    Args:
        landmarks: (68, 2) ``(x, y)`` in photo pixels.

    Returns:
        ``(quad, qsize)``: (4, 2) float64 corners top-left, bottom-left, bottom-right, top-right,
        and the side length of the square in photo pixels.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    # The operations and their order follow the reference so the quad matches it bit for bit.
    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = float(np.hypot(*x) * 2)
    return quad, qsize


def align_face(
    image: Image.Image,
    face: DetectedFace,
    *,
    output_size: int = 1024,
    exact: bool = False,
    transform_size: int | None = None,
    enable_padding: bool = True,
) -> AlignedFace:
    """Crops one face the FFHQ way.

    Steps as in FFHQ: shrink very large faces by an integer factor, crop the quad's bounding box
    plus a border, reflect-pad where the quad leaves the photo (blending the padding towards a blur
    and the median colour), sample the quad bilinearly onto a ``transform_size`` square and resize
    it to ``output_size`` with Lanczos. Shrinking and cropping are done in one resize of the needed
    region only (the same pixels, without resampling the whole photo).

    With ``exact=True`` the pixels are FFHQ's bit for bit (``transform_size=4 * output_size``;
    e4e's are ``output_size=transform_size=256``). That costs about 0.5 s at 1024 on one core, and
    seconds more with SciPy's blur when a large face needs padding. The default is a fast path
    whose crop differs from FFHQ's by interpolation noise only (above 50 dB PSNR; measured in
    tests/editing/test_align.py): the intermediate square is the smallest multiple of
    ``output_size`` at least as fine as the face in the (shrunk) photo, at most 4 times (for
    faces smaller than ``output_size``, direct bilinear sampling), and the padding blur and median
    are approximated (see ``_pad_blend``). The geometry (quad, ``to_original``) is the same.

    Args:
        image: the photo, mode ``"RGB"``.
        face: the face to align (its landmarks).
        output_size: side of the crop in pixels (FFHQ: 1024, e4e: 256).
        exact: reproduce FFHQ's pixels exactly (needs SciPy when padding) instead of the fast path.
        transform_size: side of the intermediate bilinear QUAD sample, at least ``output_size``;
            ``None`` chooses as described above.
        enable_padding: pad where the quad leaves the photo (FFHQ: on); off leaves black there.

    Returns:
        The :class:`AlignedFace`.
    """
    if image.mode != "RGB":
        raise ValueError(f"image must be an RGB PIL image, got mode {image.mode!r}")
    if output_size < 1:
        raise ValueError(f"output_size must be positive, got {output_size}")
    quad, qsize = ffhq_quad(face.landmarks)
    quad_photo = quad.copy()
    width, height = image.size

    # Shrink: faces over 4x the output size are first reduced by an integer factor.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        shrunk_size = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad /= shrink
        qsize /= shrink
    else:
        shrunk_size = (width, height)
    # The resize maps pixel edges to pixel edges, so shrunk -> photo scales by these (not `shrink`).
    sx, sy = width / shrunk_size[0], height / shrunk_size[1]
    quad_shrunk = quad.copy()

    # Crop the quad's bounding box plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, shrunk_size[0]),
        min(crop[3] + border, shrunk_size[1]),
    )
    if shrink > 1:
        # Resizing only the cropped region gives the pixels of resize-then-crop: Pillow's filter
        # taps are clipped at the photo's edges, not the box's.
        region = image.resize(
            (crop[2] - crop[0], crop[3] - crop[1]),
            Image.Resampling.LANCZOS,
            box=(crop[0] * sx, crop[1] * sy, crop[2] * sx, crop[3] * sy),
        )
    elif crop[2] - crop[0] < width or crop[3] - crop[1] < height:
        region = image.crop(crop)
    else:
        region = image
    quad -= crop[0:2]

    # Pad where the quad leaves the photo.
    pad = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - region.size[0] + border, 0),
        max(pad[3] - region.size[1] + border, 0),
    )
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        region = _pad_blend(region, pad, qsize, exact=exact)
        quad += pad[:2]

    # Sample the quad. PIL's coordinates put pixel centres at +0.5.
    if transform_size is None:
        factor = 4 if exact else min(4, max(1, math.ceil(qsize / output_size)))
        transform_size = factor * output_size
    if transform_size < output_size:
        raise ValueError(f"transform_size ({transform_size}) must be >= output_size ({output_size})")
    crop_image = region.transform(
        (transform_size, transform_size),
        Image.Transform.QUAD,
        tuple((quad + 0.5).flatten()),
        Image.Resampling.BILINEAR,
    )
    if output_size < transform_size:
        crop_image = crop_image.resize((output_size, output_size), Image.Resampling.LANCZOS)

    return AlignedFace(
        image=crop_image,
        landmarks=face.landmarks,
        box=face.box,
        score=face.score,
        quad=quad_photo,
        to_original=_crop_to_photo(quad_shrunk, sx, sy, output_size),
    )


def _pad_blend(region: Image.Image, pad: np.ndarray, qsize: float, *, exact: bool) -> Image.Image:
    """Reflect-pads by ``pad`` (left, top, right, bottom) and fades the padding to blur and median.

    ``exact`` follows FFHQ bit for bit (SciPy's Gaussian on the whole float image, median of all
    pixels). Otherwise the blur is PIL's box approximation on a copy reduced to about a sixth of
    the blur's sigma, and the median is taken over a subsample of about a million pixels: the same
    soft fill, without the seconds SciPy needs on a large face.
    """
    padded = np.pad(np.asarray(region), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")  # (H, W, 3)
    h, w, _ = padded.shape
    sigma = qsize * 0.02
    pixels = np.float32(padded)
    if exact:
        import scipy.ndimage  # deferred: only the exact path needs SciPy

        blurred = scipy.ndimage.gaussian_filter(pixels, [sigma, sigma, 0])
    else:
        factor = max(1, int(sigma / 6))
        small = Image.fromarray(padded, "RGB")
        small = small.reduce(factor) if factor > 1 else small
        small = small.filter(ImageFilter.GaussianBlur(sigma / factor))
        blurred = np.float32(small.resize((w, h), Image.Resampling.BILINEAR) if factor > 1 else small)
    y, x, _ = np.ogrid[:h, :w, :1]
    # mask: 1 at the outer edge, 0 where the photo starts, negative inside it.
    mask = np.maximum(
        1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
        1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]),
    )
    pixels += (blurred - pixels) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    if exact:
        median = np.median(pixels, axis=(0, 1))
    else:
        stride = max(1, int(math.sqrt(h * w / 1e6)))
        median = np.median(pixels[::stride, ::stride], axis=(0, 1))
    pixels += (median - pixels) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(pixels), 0, 255)), "RGB")


def _crop_to_photo(quad_shrunk: np.ndarray, sx: float, sy: float, output_size: int) -> np.ndarray:
    """(3, 3) affine from crop pixel coordinates to photo pixel coordinates.

    In continuous coordinates (pixel centres at +0.5) the QUAD sample followed by the resize maps
    crop point ``a`` to the shrunk photo point ``q0 + 0.5 + (q3 - q0) a_x / S + (q1 - q0) a_y / S``
    (the quad is a parallelogram, so PIL's bilinear term vanishes) and the shrink scales that by
    ``(sx, sy)``.
    """
    q = quad_shrunk
    scale = np.diag([sx, sy])
    linear = scale @ np.stack([q[3] - q[0], q[1] - q[0]], axis=1) / output_size  # (2, 2), columns
    offset = scale @ (q[0] + 0.5) - 0.5 + linear @ np.array([0.5, 0.5])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = offset
    return matrix


# --------------------------------------------------------------------------------------------------
# Pasting back


def paste_back(
    original: Image.Image,
    edited: Image.Image,
    face: AlignedFace,
    *,
    feather: float = 0.1,
    mask: Image.Image | None = None,
) -> Image.Image:
    """Warps an edited crop back into the photo it was aligned from.

    The crop is resampled into the photo with the inverse of the alignment (Lanczos-reduced first
    when the face is smaller in the photo than the crop, so it does not alias) and blended with a
    mask that is 1 inside the crop and falls smoothly to 0 over ``feather`` of its side at the
    edges, times ``mask`` when given. Parts of the crop that lie outside the photo are dropped.

    Args:
        original: the photo the face was aligned from (as returned by :func:`load_image`).
        edited: the edited crop, square, any size (it is taken to cover the same square as
            ``face.image``).
        face: the alignment of this face in ``original``.
        feather: width of the blend at the crop's edges as a fraction of its side, in [0, 0.5].
        mask: optional extra blend weights in crop space, mode ``"L"`` (255 = edited), any square size.

    Returns:
        A new RGB image of the size of ``original``.
    """
    if original.mode != "RGB" or edited.mode != "RGB":
        raise ValueError(f"original and edited must be RGB, got {original.mode!r} and {edited.mode!r}")
    if edited.size[0] != edited.size[1]:
        raise ValueError(f"edited must be square, got size {edited.size}")
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5], got {feather}")
    if mask is not None and (mask.mode != "L" or mask.size[0] != mask.size[1]):
        raise ValueError(f"mask must be a square 'L' image, got mode {mask.mode!r} and size {mask.size}")

    # Continuous (edge-based) crop -> photo map, with the crop measured in units of its side.
    side = face.output_size
    m = face.to_original
    linear = m[:2, :2] * side  # (2, 2): unit crop square -> photo
    offset = m[:2, 2] + 0.5 - m[:2, :2] @ np.array([0.5, 0.5])  # photo point of the crop's corner
    photo_side = math.sqrt(abs(np.linalg.det(linear)))  # the crop's side measured in photo pixels

    # Photo region covered by the crop.
    corners = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=np.float64) @ linear.T + offset
    x0 = max(int(np.floor(corners[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 1, original.size[0])
    y1 = min(int(np.ceil(corners[:, 1].max())) + 1, original.size[1])
    if x0 >= x1 or y0 >= y1:
        return original.copy()

    # PIL's affine warp does not antialias. When the face is smaller in the photo than the crop,
    # warp onto a grid up to 4x finer than the photo from a crop Lanczos-reduced to match, then
    # Lanczos-reduce to the photo: a round trip of the unedited crop then keeps about 38 dB PSNR on
    # the face instead of 34 dB with a direct warp (mirrors FFHQ's 4x supersampled forward warp).
    factor = min(4, max(1, math.ceil(edited.size[0] / photo_side)))
    source_side = min(edited.size[0], max(1, math.ceil(photo_side * factor)))
    source = edited
    if source_side != edited.size[0]:
        source = edited.resize((source_side, source_side), Image.Resampling.LANCZOS)
    size = (x1 - x0, y1 - y0)
    warped = source.transform(
        (size[0] * factor, size[1] * factor),
        Image.Transform.AFFINE,
        _region_to_crop(linear, offset, (x0, y0), source_side, factor),
        Image.Resampling.BILINEAR,
    )
    if factor > 1:
        warped = warped.resize(size, Image.Resampling.LANCZOS)

    # The blend weights are smooth: warp them directly at the photo's resolution.
    weights_side = min(edited.size[0], 1024)
    weights = _feather_mask(weights_side, feather)
    if mask is not None:
        resized = mask.resize((weights_side, weights_side), Image.Resampling.BILINEAR)
        weights *= np.asarray(resized, dtype=np.float32) / 255.0
    alpha = Image.fromarray(weights, "F").transform(
        size,
        Image.Transform.AFFINE,
        _region_to_crop(linear, offset, (x0, y0), weights_side, 1),
        Image.Resampling.BILINEAR,
    )

    background = np.asarray(original.crop((x0, y0, x1, y1)), dtype=np.float32)  # (h, w, 3)
    weight = np.clip(np.asarray(alpha), 0.0, 1.0)[:, :, None]
    blended = background + (np.asarray(warped, dtype=np.float32) - background) * weight
    out = original.copy()
    out.paste(Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB"), (x0, y0))
    return out


def _region_to_crop(
    linear: np.ndarray, offset: np.ndarray, origin: tuple[int, int], side: int, factor: int
) -> tuple[float, ...]:
    """PIL AFFINE data from a photo region sampled ``factor`` times finer to a crop of ``side``.

    Continuous coordinates: region point ``r`` is photo point ``origin + r / factor``, which is the
    unit-square crop point ``linear^-1 (photo - offset)``, i.e. ``side`` times that in the crop.
    """
    inverse = np.linalg.inv(linear)
    a = inverse * (side / factor)
    b = inverse @ (np.asarray(origin, dtype=np.float64) - offset) * side
    return (a[0, 0], a[0, 1], b[0], a[1, 0], a[1, 1], b[1])


def _feather_mask(side: int, feather: float) -> np.ndarray:
    """(side, side) float32 weights: 1 inside, smoothstep down to 0 at the edges over ``feather``."""
    centres = (np.arange(side, dtype=np.float64) + 0.5) / side
    distance = np.minimum(centres, 1.0 - centres)  # to the nearest edge, in crop sides
    if feather > 0:
        t = np.clip(distance / feather, 0.0, 1.0)
        ramp = t * t * (3.0 - 2.0 * t)
    else:
        ramp = np.ones_like(distance)
    return np.outer(ramp, ramp).astype(np.float32)
