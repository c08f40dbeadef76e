"""``FaceEditor``: owns the models, the device and the numeric precision, and composes
photo → aligned face → W+ → image. Editing methods are pure functions elsewhere in ``editing/``;
this class only wires them to loaded models.

Device and dtype are chosen here and nowhere else. Weights stay float32; ``precision="bf16"``
runs the heavy convolutions under bfloat16 autocast (on CPU this roughly halves synthesis time;
the benchmark script reports its PSNR against float32). Per-request settings are plain arguments:
a ``FaceEditor`` holds no per-user state and is safe to share between concurrent requests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from editing.align import AlignedFace, FaceAligner, load_image
from editing.errors import WeightsCorruptError
from editing.inversion import encode, face_to_tensor
from editing.synthesis import tensor_to_pil
from editing.weights import WeightStore, load_torch_file, read_generator_checkpoint, read_irse_checkpoint
from models.e4e import Encoder4Editing, e4e_from_checkpoint
from models.irse import IRSE50, IDLoss
from models.stylegan2 import Generator

PRECISIONS = ("auto", "fp32", "bf16")
COMPONENTS = ("generator", "encoder", "aligner", "identity", "clip")
W_AVG_SAMPLES = 4096  # mapped samples averaged when a generator file has no latent_avg


@dataclass(frozen=True)
class InversionResult:
    """A photo (or aligned face) inverted into the generator.

    Attributes:
        w_plus: (1, n_latent, 512) float32 on CPU, including e4e's latent_avg.
        reconstruction: the generator's render of ``w_plus`` at full resolution.
        aligned: the alignment (None when the input was already aligned).
        timings: seconds per stage ("align", "encode", "render").
    """

    w_plus: torch.Tensor
    reconstruction: Image.Image
    aligned: AlignedFace | None
    timings: dict[str, float] = field(default_factory=dict)


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_precision(precision: str, device: torch.device) -> str:
    """Resolve ``"auto"``: bfloat16 autocast where the hardware computes it natively (CPUs with
    AVX512-BF16/AMX, CUDA GPUs with bf16 support), float32 elsewhere. On this project's 2-core CPU
    bf16 halves synthesis time at 53 dB PSNR to float32 (``benchmarks/bench_pipeline.py``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        except (AttributeError, RuntimeError):
            return "fp32"
    return "fp32"


class FaceEditor:
    """Models plus device/precision, with the pipeline steps as methods.

    Args:
        generator: a StyleGAN2 :class:`~models.stylegan2.Generator`.
        w_avg: (1, 512) average w for truncation (the checkpoint's ``latent_avg``).
        encoder: e4e encoder, with ``encoder_latent_avg`` (n_latent, 512); needed to invert photos.
        aligner: dlib face aligner; needed for photos that are not aligned yet.
        identity: ArcFace ID loss / similarity (optional).
        clip: :class:`~editing.clip_text.ClipEncoder` (optional until editing).
        device: "auto", "cpu", "cuda", …
        precision: "fp32", "bf16" (autocast for synthesis and encoding) or "auto" (bf16 where
            the hardware has native bf16, see :func:`pick_precision`).
        name: which model set this is (shown to users).
    """

    def __init__(
        self,
        *,
        generator: Generator,
        w_avg: torch.Tensor,
        encoder: Encoder4Editing | None = None,
        encoder_latent_avg: torch.Tensor | None = None,
        aligner: FaceAligner | None = None,
        identity: IDLoss | None = None,
        clip: Any = None,
        device: str | torch.device | None = "auto",
        precision: str = "auto",
        name: str = "ffhq",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if encoder is not None and encoder_latent_avg is None:
            raise ValueError("encoder_latent_avg is required with an encoder")
        if encoder is not None and encoder.n_styles != generator.n_latent:
            raise ValueError(
                f"the encoder predicts {encoder.n_styles} W+ rows but the generator has {generator.n_latent}"
            )
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.name = name
        self.generator = generator.eval().requires_grad_(False).to(self.device)
        self.w_avg = w_avg.reshape(1, -1).float().to(self.device)
        self.encoder = None if encoder is None else encoder.eval().requires_grad_(False).to(self.device)
        self.encoder_latent_avg = (
            None if encoder_latent_avg is None else encoder_latent_avg.float().to(self.device)
        )
        self.aligner = aligner
        self.identity = None if identity is None else identity.to(self.device)
        self.clip = None if clip is None else clip.to(self.device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_weights(
        cls,
        store: WeightStore,
        *,
        components: Sequence[str] = ("generator", "encoder", "aligner"),
        device: str | torch.device | None = "auto",
        precision: str = "auto",
        generator_entry: str = "stylegan2-ffhq",
        encoder_entry: str = "e4e-ffhq",
        identity_entry: str = "ir-se50",
        clip_entry: str = "clip-vit-b32",
        name: str = "ffhq",
    ) -> FaceEditor:
        """Load the requested components from a :class:`~editing.weights.WeightStore`.

        Every needed file is located (or downloaded) first, so one
        :class:`~editing.errors.WeightsUnavailableError` names all that are missing.
        """
        unknown = sorted(set(components) - set(COMPONENTS))
        if unknown or "generator" not in components:
            raise ValueError(
                f"components must include 'generator' and come from {COMPONENTS}, got {components}"
            )
        entries = {
            "generator": generator_entry,
            "encoder": encoder_entry,
            "identity": identity_entry,
            "clip": clip_entry,
            "aligner": "dlib-landmarks68",
        }
        paths = store.fetch_all([entries[c] for c in components])
        path = {c: paths[entries[c]] for c in components}

        generator, w_avg = load_generator(path["generator"])
        encoder = latent_avg = aligner = identity = clip = None
        if "encoder" in components:
            encoder, latent_avg = load_encoder(path["encoder"])
        if "aligner" in components:
            aligner = FaceAligner(predictor_path=path["aligner"])
        if "identity" in components:
            identity = load_identity(path["identity"])
        if "clip" in components:
            from editing.clip_text import ClipEncoder

            clip = ClipEncoder.from_folder(path["clip"])
        return cls(
            generator=generator,
            w_avg=w_avg,
            encoder=encoder,
            encoder_latent_avg=latent_avg,
            aligner=aligner,
            identity=identity,
            clip=clip,
            device=device,
            precision=precision,
            name=name,
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_latent(self) -> int:
        return self.generator.n_latent

    @property
    def size(self) -> int:
        return self.generator.size

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bfloat16 autocast when ``precision == "bf16"``, else nothing."""
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    # ------------------------------------------------------------------ pipeline steps
    @torch.inference_mode()
    def latent_from_seed(self, seed: int, truncation: float = 0.7) -> torch.Tensor:
        """W+ (1, n_latent, 512) float32 of a random face: z ~ N(0, I) seeded, mapped, truncated."""
        if not 0.0 <= truncation <= 1.0:
            raise ValueError(f"truncation must be in [0, 1], got {truncation}")
        if not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed must be a non-negative integer below 2**63, got {seed}")
        z = torch.randn(1, self.generator.style_dim, generator=torch.Generator().manual_seed(int(seed)))
        w = self.generator.mapping(z.to(self.device))
        w = self.generator.truncate(w, self.w_avg, truncation)
        return w[:, None, :].expand(-1, self.n_latent, -1).float().cpu().contiguous()

    @torch.inference_mode()
    def render(self, w_plus: torch.Tensor, *, size: int | None = None) -> torch.Tensor:
        """W+ (B, n_latent, 512) → image (B, 3, size, size) float32 in ~[-1, 1] on CPU.

        ``size`` below the generator's resolution stops synthesis early (a cheap preview).
        """
        with self.autocast():
            img = self.generator.synthesis(w_plus.to(self.device, torch.float32), out_size=size)
        return img.float().cpu()

    def render_image(self, w_plus: torch.Tensor, *, size: int | None = None) -> Image.Image:
        """W+ (1, n_latent, 512) → PIL image."""
        return tensor_to_pil(self.render(w_plus, size=size))

    def align(self, image: Any, *, output_size: int = 1024) -> list[AlignedFace]:
        """All faces of a photo (path, bytes or PIL), largest first, FFHQ-aligned.

        Raises:
            InvalidImageError, ImageTooLargeError, NoFaceFoundError.
        """
        if self.aligner is None:
            raise RuntimeError("this FaceEditor was built without an aligner")
        return self.aligner.align(load_image(image), output_size=output_size)

    @torch.inference_mode()
    def encode(self, aligned: Image.Image) -> torch.Tensor:
        """An FFHQ-aligned face → W+ (1, n_latent, 512) float32 on CPU."""
        if self.encoder is None:
            raise RuntimeError("this FaceEditor was built without an encoder")
        with self.autocast():
            w_plus = encode(self.encoder, face_to_tensor(aligned, self.device), self.encoder_latent_avg)
        return w_plus.float().cpu()

    def invert(self, image: Any, *, align: bool = True, face_index: int = 0) -> InversionResult:
        """Photo → (alignment) → e4e → W+ → reconstruction.

        Args:
            image: path, bytes or PIL image; an already aligned face when ``align=False``.
            align: detect and align the face first.
            face_index: which face when there are several (0 = largest).
        """
        t0 = time.perf_counter()
        aligned = None
        if align:
            faces = self.align(image, output_size=min(self.size, 1024))
            if not 0 <= face_index < len(faces):
                raise ValueError(f"face_index {face_index} is out of range: {len(faces)} face(s) found")
            aligned = faces[face_index]
            face_image = aligned.image
        else:
            face_image = load_image(image)
        t1 = time.perf_counter()
        w_plus = self.encode(face_image)
        t2 = time.perf_counter()
        rec = self.render_image(w_plus)
        t3 = time.perf_counter()
        timings = {"align": t1 - t0, "encode": t2 - t1, "render": t3 - t2}
        return InversionResult(w_plus=w_plus, reconstruction=rec, aligned=aligned, timings=timings)


# ---------------------------------------------------------------------- strict loaders
def load_generator(path: str | Path) -> tuple[Generator, torch.Tensor]:
    """A rosinality-format file → (Generator in eval mode, w_avg (1, 512)).

    When the file has no ``latent_avg`` (training checkpoints), w_avg is the mean of
    ``W_AVG_SAMPLES`` mapped samples with a fixed seed.
    """
    sd, latent_avg = read_generator_checkpoint(path)
    try:
        generator = Generator.from_state_dict(sd).eval()
    except ValueError as exc:
        raise WeightsCorruptError(f"{Path(path).name} is not a usable StyleGAN2 generator: {exc}") from exc
    if latent_avg is None:
        with torch.inference_mode():
            latent_avg = generator.mean_latent(W_AVG_SAMPLES, generator=torch.Generator().manual_seed(0))
    return generator, latent_avg.reshape(1, -1).float()


def load_encoder(path: str | Path) -> tuple[Encoder4Editing, torch.Tensor]:
    """An e4e file → (encoder in eval mode, latent_avg (n_latent, 512)); decoder keys are ignored."""
    try:
        return e4e_from_checkpoint(load_torch_file(path, mmap=True))
    except ValueError as exc:
        raise WeightsCorruptError(f"{Path(path).name} is not a usable e4e encoder: {exc}") from exc


def load_identity(path: str | Path) -> IDLoss:
    """``model_ir_se50.pth`` → the ArcFace ID loss / similarity module."""
    try:
        return IDLoss(IRSE50.from_state_dict(read_irse_checkpoint(path)))
    except ValueError as exc:
        raise WeightsCorruptError(f"{Path(path).name} is not a usable IR-SE50 network: {exc}") from exc
