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
import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from editing import global_directions as gd
from editing.align import AlignedFace, FaceAligner, load_image
from editing.edits import EditableLatent, EditMetrics, EditResult, GlobalSettings, MapperSettings
from editing.errors import WeightsCorruptError
from editing.inversion import encode, face_to_tensor
from editing.mapper import apply_mapper, edited_rows, load_mapper, mapper_levels
from editing.synthesis import tensor_to_pil
from editing.weights import WeightStore, load_torch_file, read_generator_checkpoint, read_irse_checkpoint
from models.e4e import Encoder4Editing, e4e_from_checkpoint
from models.irse import IRSE50, IDLoss
from models.latent_mapper import LevelsMapper
from models.stylegan2 import Generator

PRECISIONS = ("auto", "fp32", "bf16")
COMPONENTS = ("generator", "encoder", "aligner", "identity", "clip", "global")
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


@dataclass(frozen=True)
class GlobalDirectionData:
    """What global directions need for one generator.

    Attributes:
        fs3: (C, D) float32 channel relevance, rows over ``layout.covered`` (official fs3 layout).
        s_std: one (dim_l,) float32 tensor of S standard deviations per S layer.
        layout: the generator's StyleSpace layout.
        source: where the numbers come from (shown to users), e.g. "official fs3.npy".
    """

    fs3: torch.Tensor
    s_std: tuple[torch.Tensor, ...]
    layout: gd.StyleSpaceLayout
    source: str = ""

    def __post_init__(self):
        if self.fs3.ndim != 2 or self.fs3.shape[0] != self.layout.n_covered_channels:
            raise ValueError(
                f"fs3 must have {self.layout.n_covered_channels} rows for this generator, "
                f"got shape {tuple(self.fs3.shape)}"
            )
        if [int(t.numel()) for t in self.s_std] != list(self.layout.dims):
            raise ValueError("s_std must hold one array per S layer with that layer's channel count")


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
        global_data: relevance and S statistics for global directions (optional).
        mappers: latent-mapper files by name (locally trained or official), loaded on first use.
        store: where official mappers not in ``mappers`` are fetched from (registry
            ``mapper-<name>``); None = only ``mappers``.
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
        global_data: GlobalDirectionData | None = None,
        mappers: Mapping[str, str | Path] | None = None,
        store: WeightStore | None = None,
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
        if global_data is not None:
            dims = tuple(layer.dim for layer in generator.style_layers())
            if tuple(global_data.layout.dims) != dims:
                raise ValueError("global_data was computed for a generator with a different S layout")
            global_data = GlobalDirectionData(
                fs3=global_data.fs3.float().to(self.device),
                s_std=tuple(t.reshape(-1).float().to(self.device) for t in global_data.s_std),
                layout=global_data.layout,
                source=global_data.source,
            )
        self.global_data = global_data
        self.mapper_files = {k: Path(v) for k, v in (mappers or {}).items()}
        self.store = store
        # caches of pure functions of their keys (not per-user state): safe to share
        self._lock = threading.Lock()
        self._text_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._mapper_cache: OrderedDict[str, LevelsMapper] = OrderedDict()
        self._w_std: torch.Tensor | None = None  # see w_std

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
        fs3_entry: str | None = "fs3",  # None: the relevance comes with the s_stats folder
        s_stats: str | Path | None = None,  # a precompute folder (s_stats.npz + meta.json)
        mappers: Mapping[str, str | Path] | None = None,
        name: str = "ffhq",
    ) -> FaceEditor:
        """Load the requested components from a :class:`~editing.weights.WeightStore`.

        Every needed file is located (or downloaded) first, so one
        :class:`~editing.errors.WeightsUnavailableError` names all that are missing.
        ``"global"`` loads the relevance matrix (``fs3_entry``) and the S statistics: from the
        ``s_stats`` file when given, else computed from the generator once and cached (see
        :func:`global_data_for`). Official mappers are fetched from ``store`` on first use;
        ``mappers`` adds local ones by name.
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
            "global": fs3_entry,
        }
        if fs3_entry is None and "global" in components and s_stats is None:
            raise ValueError("global directions need fs3_entry or an s_stats folder holding fs3.npy")
        wanted = [c for c in components if entries[c] is not None]
        paths = store.fetch_all([entries[c] for c in wanted])
        path = {c: paths[entries[c]] for c in wanted}

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
        global_data = None
        if "global" in components:
            global_data = global_data_for(generator, w_avg, fs3_path=path.get("global"), s_stats=s_stats)
        return cls(
            generator=generator,
            w_avg=w_avg,
            encoder=encoder,
            encoder_latent_avg=latent_avg,
            aligner=aligner,
            identity=identity,
            clip=clip,
            global_data=global_data,
            mappers=mappers,
            store=store,
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

    @property
    def w_std(self) -> torch.Tensor:
        """(512,) standard deviation of each W dimension under the mapping network, on the device
        (the scale of latent optimisation's ``jitter``; computed once, 4096 seeded latents)."""
        from editing.optimization import w_std_of

        with self._lock:
            if self._w_std is None:
                self._w_std = w_std_of(self.generator)
            return self._w_std

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
            img = face_to_tensor(aligned, self.device, self.encoder.input_size)
            w_plus = encode(self.encoder, img, self.encoder_latent_avg)
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

    # ------------------------------------------------------------------ latents and S
    def latent(self, w_plus: torch.Tensor) -> EditableLatent:
        """Wrap a W+ (1, n_latent, 512) as an editable latent, checking its shape."""
        if w_plus.ndim != 3 or tuple(w_plus.shape) != (1, self.n_latent, self.generator.style_dim):
            raise ValueError(f"w_plus must be (1, {self.n_latent}, 512), got {tuple(w_plus.shape)}")
        return EditableLatent(w_plus.detach().float().cpu())

    def _styles(self, latent: EditableLatent) -> list[torch.Tensor]:
        styles = self.generator.w_plus_to_styles(latent.w_plus.to(self.device))
        if latent.s_delta is not None:
            if len(latent.s_delta) != len(styles):
                raise ValueError(f"the latent's S offset has {len(latent.s_delta)} layers, not {len(styles)}")
            styles = [s + d.to(s) for s, d in zip(styles, latent.s_delta, strict=True)]
        return styles

    @torch.inference_mode()
    def render_latent(self, latent: EditableLatent, *, size: int | None = None) -> torch.Tensor:
        """An editable latent → image (1, 3, size, size) float32 CPU in ~[-1, 1]."""
        if latent.s_delta is None:
            return self.render(latent.w_plus, size=size)
        with self.autocast():
            img = self.generator.synthesis_from_styles(self._styles(latent), out_size=size)
        return img.float().cpu()

    # ------------------------------------------------------------------ text
    def _need_clip(self) -> Any:
        if self.clip is None:
            raise RuntimeError("this FaceEditor was built without CLIP")
        return self.clip

    def _cached(self, key: tuple, fn) -> torch.Tensor:
        with self._lock:
            if key in self._text_cache:
                self._text_cache.move_to_end(key)
                return self._text_cache[key]
        value = fn()
        with self._lock:
            self._text_cache[key] = value
            while len(self._text_cache) > 256:
                self._text_cache.popitem(last=False)
        return value

    def text_embedding(self, text: str) -> torch.Tensor:
        """Template-averaged CLIP embedding of ``text``: (D,) unit float32 on the device."""
        clip = self._need_clip()
        return self._cached(("emb", text), lambda: gd.prompt_embedding(clip, text))

    def text_direction(self, target: str, neutral: str) -> torch.Tensor:
        """Δt = normalise(t_target − t_neutral), (D,) on the device (cached per prompt pair)."""
        clip = self._need_clip()
        return self._cached(("dt", target, neutral), lambda: gd.delta_t(clip, target, neutral))

    # ------------------------------------------------------------------ global directions
    def _need_global(self) -> GlobalDirectionData:
        if self.global_data is None:
            raise RuntimeError("this FaceEditor has no global-direction data (fs3 and S statistics)")
        return self.global_data

    def channels_moved(self, target: str, neutral: str, beta: float) -> int:
        """How many S channels an edit would move at threshold β (for a live slider read-out)."""
        data = self._need_global()
        r = self._cached(
            ("r", target, neutral),
            lambda: gd.relevance_scores(data.fs3, self.text_direction(target, neutral)),
        )
        return gd.channels_moved(r, beta)

    def auto_beta(self, target: str, neutral: str) -> tuple[float, int]:
        """The largest β in [0.1, 0.3) that still moves more than 20 channels, and its count."""
        data = self._need_global()
        return gd.auto_beta(data.fs3, self.text_direction(target, neutral))

    def global_delta(self, settings: GlobalSettings) -> tuple[list[torch.Tensor], int, float]:
        """α·Δs for the settings: (per-layer (dim_l,) tensors on the device, channels moved, β used)."""
        data = self._need_global()
        dt = self.text_direction(settings.target, settings.neutral)
        beta = settings.beta
        if beta is None:
            beta, _ = gd.auto_beta(data.fs3, dt)
        ds, n_moved = gd.delta_s(data.fs3, dt, beta, data.s_std, data.layout)
        return [settings.alpha * d for d in ds], n_moved, beta

    def edit_global(
        self,
        latent: EditableLatent,
        settings: GlobalSettings,
        *,
        size: int | None = None,
        metrics: bool = True,
        source_image: torch.Tensor | None = None,
    ) -> EditResult:
        """StyleCLIP global direction: s' = s + α·Δs, rendered at ``size`` (None = full).

        α = 0 reproduces the input image exactly. ``size=256`` is the cheap slider preview.
        """
        t0 = time.perf_counter()
        ds, n_moved, beta = self.global_delta(settings)
        edited = latent if settings.alpha == 0 else latent.add_s_delta(ds)
        t1 = time.perf_counter()
        img = self.render_latent(edited, size=size)
        t2 = time.perf_counter()
        info = {"method": "global", "beta": beta, "channels_moved": n_moved, "alpha": settings.alpha}
        m = None
        if metrics:
            src = latent if source_image is None else source_image
            m = self.measure(src, img, settings.target, settings.neutral, {"channels_moved": n_moved})
        timings = {"direction": t1 - t0, "render": t2 - t1, "metrics": time.perf_counter() - t2}
        return EditResult(edited, img, m, info, timings)

    # ------------------------------------------------------------------ mappers
    def mapper_sources(self) -> dict[str, str]:
        """Mappers this editor can use now, by name: ``"local"`` for a file on this machine (given
        in ``mappers``, or an official one in the weights folder or the Hub cache), ``"download"``
        for an official one the store can download now (not offline, Hub reachable).

        Local mappers come first (their given order, then the registry's), then downloadable ones.
        Official mappers that are neither here nor downloadable are left out. The store's one-time
        reachability probe runs only when some official mapper is not on this machine.
        """
        local = dict.fromkeys(self.mapper_files, "local")
        remote: dict[str, str] = {}
        if self.store is not None:
            official = [e[len("mapper-") :] for e in self.store.registry if e.startswith("mapper-")]
            missing = []
            for name in official:
                if name in local:
                    continue
                if self.store.locate(f"mapper-{name}") is not None:
                    local[name] = "local"
                else:
                    missing.append(name)
            if missing and self.store.can_download():
                remote = dict.fromkeys(missing, "download")
        return {**local, **remote}

    def mapper_names(self) -> list[str]:
        """Mappers this editor can use now: local files first, then downloadable official ones
        (see :meth:`mapper_sources`)."""
        return list(self.mapper_sources())

    def mapper(self, name: str) -> LevelsMapper:
        """The named mapper on this editor's device (loaded once, a few kept in memory)."""
        with self._lock:
            if name in self._mapper_cache:
                self._mapper_cache.move_to_end(name)
                return self._mapper_cache[name]
        if name in self.mapper_files:
            path = self.mapper_files[name]
        elif self.store is not None and f"mapper-{name}" in self.store.registry:
            path = self.store.fetch(f"mapper-{name}")
        else:
            known = ", ".join(self.mapper_names()) or "none"
            raise ValueError(f"unknown mapper {name!r}; available: {known}")
        m = load_mapper(path, n_latent=self.n_latent).to(self.device).requires_grad_(False)
        with self._lock:
            self._mapper_cache[name] = m
            while len(self._mapper_cache) > 8:
                self._mapper_cache.popitem(last=False)
        return m

    def mapper_info(self, name: str) -> dict:
        """Levels of a mapper and the W+ rows they edit, for display."""
        m = self.mapper(name)
        return {
            "levels": {
                i.name: {"rows": [i.rows.start, i.rows.stop - 1], "enabled": i.enabled}
                for i in mapper_levels(m)
            },
            "edited_rows": list(edited_rows(m)),
        }

    def edit_mapper(
        self,
        latent: EditableLatent,
        settings: MapperSettings,
        *,
        size: int | None = None,
        metrics: bool = True,
        target: str | None = None,
        neutral: str = "face",
        source_image: torch.Tensor | None = None,
    ) -> EditResult:
        """StyleCLIP latent mapper: w' = w + strength·M(w); the S offset (if any) is kept.

        ``target`` is the text the metrics score against (default: the mapper's name in words).
        """
        t0 = time.perf_counter()
        m = self.mapper(settings.mapper)
        with torch.inference_mode():
            w = apply_mapper(m, latent.w_plus.to(self.device), settings.strength)
        edited = latent.with_w_plus(w)
        t1 = time.perf_counter()
        img = self.render_latent(edited, size=size)
        t2 = time.perf_counter()
        rows = list(edited_rows(m))
        info = {
            "method": "mapper",
            "mapper": settings.mapper,
            "strength": settings.strength,
            "edited_rows": rows,
        }
        res = None
        if metrics:
            text = target or settings.mapper.replace("_", " ")
            src = latent if source_image is None else source_image
            res = self.measure(src, img, text, neutral, {"rows_changed": len(rows)})
        timings = {"mapper": t1 - t0, "render": t2 - t1, "metrics": time.perf_counter() - t2}
        return EditResult(edited, img, res, info, timings)

    # ------------------------------------------------------------------ optimisation
    def edit_optimize(
        self,
        latent: EditableLatent | None,
        target: str,
        settings: Any = None,
        *,
        on_step: Any = None,
        metrics: bool = True,
        seed: int = 0,
        neutral: str = "face",
        source_image: torch.Tensor | None = None,
    ) -> EditResult:
        """StyleCLIP latent optimisation towards ``target`` (see :mod:`editing.optimization`).

        Args:
            latent: the face to edit (mode ``"edit"``); ignored in ``"free_generation"``, which
                starts from a random face drawn with ``seed`` at ``settings.truncation``.
            target: the text the image should match (encoded as is, like upstream).
            settings: :class:`~editing.optimization.OptimizationSettings` (default: the notebook's).
            on_step: called with each :class:`~editing.optimization.StepInfo` (losses, and a
                preview every ``settings.preview_every`` steps); return False to stop early.
        Returns:
            The result; ``info`` holds steps done, whether it was cancelled and the loss history.
        """
        from editing.edits import check_prompt
        from editing.optimization import OptimizationSettings, optimize_latent, start_latent

        settings = settings or OptimizationSettings()
        target = check_prompt(target, "target")
        clip = self._need_clip()
        t0 = time.perf_counter()
        if settings.mode == "free_generation":
            start = EditableLatent(
                start_latent(self.generator, self.w_avg, seed=seed, truncation=settings.truncation)
                .float()
                .cpu()
            )
        else:
            if latent is None:
                raise ValueError("latent optimisation in edit mode needs a face to start from")
            start = latent
        with torch.no_grad():
            text = clip.encode_text([target]).float()  # (1, D)
        result = optimize_latent(
            self.generator,
            clip,
            text,
            start.w_plus.to(self.device),
            settings=settings,
            identity=self.identity,
            s_offset=None if start.s_delta is None else [d.to(self.device) for d in start.s_delta],
            on_step=on_step,
            autocast=self.autocast,
            w_std=self.w_std if settings.jitter > 0 else None,
        )
        edited = EditableLatent(result.w_plus, result.s_delta)
        t1 = time.perf_counter()
        img = self.render_latent(edited)
        t2 = time.perf_counter()
        changed_rows = int(((edited.w_plus - start.w_plus).abs().amax(dim=2) > 0).sum())
        info = {
            "method": "optimize",
            "mode": settings.mode,
            "steps": result.steps,
            "cancelled": result.cancelled,
            "final_losses": dataclasses.asdict(result.history[-1]) if result.history else None,
            "clip_loss_history": [round(h.clip, 5) for h in result.history],
        }
        m = None
        if metrics:
            src = start if source_image is None or settings.mode == "free_generation" else source_image
            m = self.measure(src, img, target, neutral, {"rows_changed": changed_rows})
        timings = {"optimize": t1 - t0, "render": t2 - t1, "metrics": time.perf_counter() - t2}
        return EditResult(edited, img, m, info, timings)

    # ------------------------------------------------------------------ metrics
    @torch.inference_mode()
    def measure(
        self,
        source: EditableLatent | torch.Tensor,
        edited_img: torch.Tensor,
        target: str,
        neutral: str = "face",
        changed: Mapping[str, int] | None = None,
    ) -> EditMetrics:
        """CLIP similarity to ``target`` (edited and source), the directional score, ArcFace identity.

        Args:
            source: the unedited latent (rendered here at the edited image's size) or its image
                (1, 3, H', H'), pooled to the edited size when larger (pass it to skip a render).
            edited_img: (1, 3, H, H) in [-1, 1].
        """
        size = edited_img.shape[-1]
        if isinstance(source, torch.Tensor):
            src_img = source if source.shape[-1] == size else F.adaptive_avg_pool2d(source, (size, size))
        else:
            src_img = self.render_latent(source, size=size)
        clip_sim = clip_src = directional = ident = None
        if self.clip is not None:
            both = torch.cat([src_img, edited_img]).to(self.device)
            with self.autocast():
                feats = self.clip.encode_image(both).float()  # (2, D) unit rows
            t = self.text_embedding(target)
            clip_src, clip_sim = (feats @ t).tolist()
            if neutral.strip() != target.strip():
                diff = feats[1] - feats[0]
                norm = torch.linalg.vector_norm(diff)
                if norm > 0:
                    directional = float((diff / norm) @ self.text_direction(target, neutral))
        if self.identity is not None:
            with self.autocast():
                ident = float(
                    self.identity.identity_similarity(
                        src_img.to(self.device), edited_img.to(self.device)
                    ).float()
                )
        return EditMetrics(clip_sim, clip_src, directional, ident, dict(changed or {}))


# ---------------------------------------------------------------------- global-direction data
def layout_of(generator: Generator) -> gd.StyleSpaceLayout:
    """The StyleSpace layout of a generator (any size or channel widths)."""
    layers = generator.style_layers()
    return gd.StyleSpaceLayout.from_layers(
        [la.dim for la in layers], [la.is_torgb for la in layers], [la.resolution for la in layers]
    )


def generator_fingerprint(generator: Generator) -> str:
    """SHA-256 over the generator's parameters and buffers (names, shapes, values): a cache key."""
    import hashlib

    h = hashlib.sha256()
    for key, value in generator.state_dict().items():
        t = value.detach().float().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/text-face-editing`` (``~/.cache/text-face-editing``)."""
    import os

    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "text-face-editing"


def global_data_for(
    generator: Generator,
    w_avg: torch.Tensor,
    *,
    fs3_path: str | Path | None = None,
    s_stats: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> GlobalDirectionData:
    """Relevance and S statistics for a generator.

    Args:
        generator, w_avg: the generator and its (1, 512) average w.
        fs3_path: an ``fs3.npy`` (official or from ``python -m editing precompute``); None = the
            one in the ``s_stats`` folder.
        s_stats: a precompute folder (``s_stats.npz`` + ``meta.json``). When None, the statistics
            are computed from the generator with the official recipe (100k samples, ψ 0.7, ~12 s
            on 2 CPU cores at 1024 px) once and cached under ``cache_dir`` by generator
            fingerprint, so the official pickle is never needed.
    Raises:
        ValueError: the files do not fit the generator.
    """
    from editing.precompute import (
        layout_metadata,
        load_official_fs3,
        load_precomputed,
        s_statistics,
        save_precomputed,
    )

    layout = layout_of(generator)
    pre = None
    if s_stats is not None:
        pre = load_precomputed(s_stats)
        if tuple(pre.layout.dims) != tuple(layout.dims):
            raise ValueError(f"{s_stats} was computed for another generator (S dims differ)")
        stats, source = pre.s_stats, f"S statistics from {s_stats}"
    else:
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder = folder / "s_stats" / generator_fingerprint(generator)[:16]
        try:
            stats = load_precomputed(folder).s_stats
        except (FileNotFoundError, ValueError):
            stats = s_statistics(generator, w_avg)
            try:
                meta = {"layout": layout_metadata(layout), "note": "cached by FaceEditor"}
                save_precomputed(folder, stats, None, meta)
            except OSError:
                pass  # a read-only cache only costs the recomputation next time
        source = "S statistics computed from the generator"
    if fs3_path is not None:
        fs3 = load_official_fs3(fs3_path, layout, clip_dim=None)
        source = f"relevance {Path(fs3_path).name}; {source}"
    elif pre is not None and pre.fs3 is not None:
        fs3 = pre.fs3
    else:
        raise ValueError("no relevance matrix: give fs3_path or a precompute folder with fs3.npy")
    return GlobalDirectionData(
        fs3=torch.from_numpy(np.ascontiguousarray(fs3)),
        s_std=tuple(torch.from_numpy(np.asarray(s, dtype=np.float32)) for s in stats.std),
        layout=layout,
        source=source,
    )


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
