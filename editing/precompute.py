"""StyleSpace precompute for StyleCLIP global directions: S statistics and channel relevance (fs3).

Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery", ICCV 2021, section 6
(global directions: "channelwise relevance" Δi_c); S statistics as in Wu et al., "StyleSpace
Analysis" (CVPR 2021). Compatible with orpatashnik/StyleCLIP ``global_directions/GetCode.py``
(``S_mean_std``), ``global_directions/SingleChannel.py`` and ``global_torch/SingleChannel.py``
(``fs3.npy``, with ``GetFs``), ``global_torch/manipulate.py`` (``GenerateS``, ``GetCodeMS``,
``EditOneC``). The consumer is :mod:`editing.global_directions`.

Recipe, as read from upstream:

* **S statistics**: z = ``np.random.RandomState(seed).randn(n, 512)`` (seed 5, n 100 000), mapped,
  truncated towards ``w_avg`` with ψ 0.7, turned into the S vectors; per-channel mean and
  population std (NumPy's default ``ddof=0``; upstream ``tmp.std(axis=0)``). Truncation: the TF
  recipe (``GetCode.py``, which made the official files) applies ψ with ``truncation_cutoff=8``
  to the W+ rows but then keeps only row 0 and broadcasts it to every layer, so *every* layer
  sees the truncated w; that is ``truncation_cutoff=None`` here (the default). The later
  ``global_torch`` port keeps the per-row cutoff (rows 0–7 truncated: S layers 0–11 at 1024 px);
  pass ``truncation_cutoff=8`` for that. Sums are accumulated per batch in float64 and merged
  with Chan et al.'s parallel update, so the result does not depend on the batch size.
* **Channel relevance**: the images are the first ``n_images`` (100) samples of the same z stream.
  For each covered channel (layer, c), each image's own S is copied, that one channel is set to
  ``mean[c] ± sigma·std[c]`` (upstream sets it to the mean, then ``EditOneC`` adds ±5·std), both
  are rendered with the constant noise, converted to 8 bits (upstream's uint8 images), encoded by
  CLIP and L2-normalised; the per-image difference (+ minus −) is normalised, averaged over the
  images and normalised again (``GetFs``). A channel whose two renders are identical (std 0, or
  a dead channel) gets a zero row instead of upstream's 0/0.
* **Upstream side effect** (``cumulative_means``): upstream's loop does
  ``M.dlatents = copy.copy(dlatents_o)`` (a shallow copy of a list of NumPy views) and then sets
  ``M.dlatents[l][:, c]`` to the mean in place, so every channel it has visited *stays* at its mean
  for all later channels: by the last covered layer the 100 images share all coarser channels.
  The official ``fs3.npy`` was made that way. ``cumulative_means=True`` reproduces it exactly;
  the default ``False`` follows the paper (every channel measured around the images' own S).

Differences that remain from upstream: CLIP sees the render through
:func:`editing.clip_text.clip_preprocess` (area resampling of the image to 224 px; upstream uses
PIL bicubic on the uint8 image), with CLIP's mean/std normalisation when the encoder has
``normalize=True`` (:func:`run_precompute` uses that, as upstream's ``preprocess`` does).
``render_size`` below the generator's size renders the skip image at that resolution instead of the
full image (CLIP sees 224 px anyway): at 1024 px a 256-px render is about 2.4x cheaper on CPU, but
the rows are not those of a full render (on seeded random-weight models their cosine to the
full-size rows averaged 0.75; see ``precomputed/README.md``), so the default is the full size.

Files (``precomputed/<name>/``, written by :func:`save_precomputed`, no pickles):
``s_stats.npz`` with float32 arrays ``mean_<i>`` and ``std_<i>`` per S layer i (generation order),
``fs3.npy`` float32 (covered channels, clip_dim) in the official layout, and ``meta.json``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from editing.global_directions import StyleSpaceLayout, layout_for

FORMAT_VERSION = 1
DEFAULT_N_SAMPLES = 100_000  # GetCode.py num_img
DEFAULT_TRUNCATION = 0.7  # GetCode.py truncation_psi
DEFAULT_SEED = 5  # GetCode.py random_state
DEFAULT_N_IMAGES = 100  # SingleChannel.py num_images
DEFAULT_SIGMA = 5.0  # SingleChannel.py M.alpha = [-5, 5] (in units of the channel's std)
DEFAULT_STATS_BATCH = 1000  # GetCode.py num_once
DEFAULT_RENDER_BATCH = 8  # renders per synthesis call
DEFAULT_SAVE_EVERY = 16  # channels between saves of the partial relevance
S_STATS_FILE = "s_stats.npz"
FS3_FILE = "fs3.npy"
META_FILE = "meta.json"
PARTIAL_FS3 = "fs3.partial.npy"  # resumable relevance (with a .json progress file beside it)
_UNIT_ROW_TOL = 1e-2  # |norm - 1| allowed in a loaded fs3 (float16 files round to ~1e-3)


# --------------------------------------------------------------------------------------------
# S statistics


@dataclass(frozen=True)
class SStats:
    """Per-channel statistics of S for one generator, with the settings that produced them.

    Attributes:
        mean: one float32 array (dims[l],) per S layer, generation order.
        std: same shapes; population standard deviation (ddof 0, as upstream).
        n_samples: how many z were drawn.
        truncation: ψ applied towards w_avg.
        truncation_cutoff: None (every W+ row truncated: the TF recipe of the official files) or
            k (rows < k only: the ``global_torch`` port).
        seed: ``np.random.RandomState`` seed of z.
    """

    mean: tuple[np.ndarray, ...]
    std: tuple[np.ndarray, ...]
    n_samples: int
    truncation: float
    truncation_cutoff: int | None
    seed: int

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(np.asarray(m, dtype=np.float32) for m in self.mean))
        object.__setattr__(self, "std", tuple(np.asarray(s, dtype=np.float32) for s in self.std))
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std must hold the same non-zero number of layers, got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        for i, (m, s) in enumerate(zip(self.mean, self.std, strict=True)):
            if m.ndim != 1 or m.shape != s.shape:
                raise ValueError(f"layer {i}: mean {m.shape} and std {s.shape} must be equal 1-D shapes")
            if not (np.isfinite(m).all() and np.isfinite(s).all()):
                raise ValueError(f"layer {i}: mean/std hold non-finite values")
        _check_positive_int(self.n_samples, "n_samples")
        _check_truncation(self.truncation, self.truncation_cutoff)
        _check_seed(self.seed)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(m.shape[0] for m in self.mean)

    def settings(self) -> dict[str, Any]:
        """The recipe as JSON-able values (for ``meta.json`` and resume checks)."""
        return {
            "n_samples": self.n_samples,
            "truncation": self.truncation,
            "truncation_cutoff": self.truncation_cutoff,
            "seed": self.seed,
            "z": "numpy.random.RandomState(seed).randn(n_samples, style_dim)",
            "std_ddof": 0,
        }


def sample_styles(
    generator: nn.Module,
    w_avg: torch.Tensor | None,
    n: int,
    *,
    truncation: float = DEFAULT_TRUNCATION,
    truncation_cutoff: int | None = None,
    seed: int = DEFAULT_SEED,
    batch: int = DEFAULT_STATS_BATCH,
) -> Iterator[list[torch.Tensor]]:
    """The S vectors of the first ``n`` samples of upstream's z stream, in batches.

    z comes from ``np.random.RandomState(seed).randn`` drawn batch after batch, which is the same
    stream as one ``randn(n, style_dim)`` call (upstream draws 1000 at a time), cast to float32.

    Args:
        generator: a :class:`models.stylegan2.Generator` (``mapping``, ``truncate``,
            ``w_plus_to_styles``, ``n_latent``, ``style_dim``).
        w_avg: (1, style_dim) or (style_dim,) average w; may be None only when ``truncation == 1``.
        n: number of samples.
        truncation: ψ in [0, 1].
        truncation_cutoff: None (truncate every W+ row) or k ≥ 1 (rows < k only).
        seed: RandomState seed.
        batch: samples per yielded batch.
    Yields:
        Lists of ``generator.n_styles`` float32 tensors (b, dims[l]) on the generator's device.
    """
    _check_positive_int(n, "n")
    _check_positive_int(batch, "batch")
    _check_truncation(truncation, truncation_cutoff)
    _check_seed(seed)
    device = _device_of(generator)
    if truncation != 1.0:
        if w_avg is None:
            raise ValueError("w_avg is required when truncation != 1")
        w_avg = torch.as_tensor(w_avg).reshape(1, -1).to(device=device, dtype=torch.float32)
        if w_avg.shape[1] != generator.style_dim:
            raise ValueError(f"w_avg must have {generator.style_dim} values, got {w_avg.shape[1]}")
    rng = np.random.RandomState(seed)
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = torch.from_numpy(rng.randn(b, generator.style_dim).astype(np.float32)).to(device)
        with torch.inference_mode():
            w = generator.mapping(z)  # (b, 512)
            if truncation == 1.0:
                w_plus = w
            elif truncation_cutoff is None or truncation_cutoff >= generator.n_latent:
                w_plus = generator.truncate(w, w_avg, truncation)  # one w for every layer
            else:
                w_plus = w[:, None, :].repeat(1, generator.n_latent, 1)  # (b, n_latent, 512)
                k = truncation_cutoff
                w_plus[:, :k] = generator.truncate(w_plus[:, :k], w_avg[:, None], truncation)
            styles = generator.w_plus_to_styles(w_plus)
        yield [s.float() for s in styles]
        done += b


def s_statistics(
    generator: nn.Module,
    w_avg: torch.Tensor | None,
    *,
    n_samples: int = DEFAULT_N_SAMPLES,
    truncation: float = DEFAULT_TRUNCATION,
    truncation_cutoff: int | None = None,
    seed: int = DEFAULT_SEED,
    batch: int = DEFAULT_STATS_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> SStats:
    """Per-channel mean and std of S over seeded samples (upstream ``GetCode.py`` ``s_mean_std``).

    Memory is bounded by ``batch``: each batch's mean and centred sum of squares are computed in
    float64 and merged into running ones (Chan et al.), so results agree across batch sizes to
    float64 rounding and are float32 in the end.

    Args:
        generator: a StyleGAN2 generator (see :func:`sample_styles`); run where it lives.
        w_avg: (1, 512) average w (the checkpoint's ``latent_avg``); None only with ψ = 1.
        n_samples: z samples (100 000 upstream).
        truncation: ψ (0.7 upstream).
        truncation_cutoff: None = every layer truncated (the official files), or k (rows < k).
        seed: RandomState seed (5 upstream).
        batch: samples per mapping call.
        on_progress: called as ``on_progress(done, n_samples)`` after each batch.
    Returns:
        :class:`SStats` with one (dims[l],) float32 mean and std per S layer.
    """
    count = 0
    mean: list[torch.Tensor] | None = None
    m2: list[torch.Tensor] | None = None
    for styles in sample_styles(
        generator,
        w_avg,
        n_samples,
        truncation=truncation,
        truncation_cutoff=truncation_cutoff,
        seed=seed,
        batch=batch,
    ):
        b = styles[0].shape[0]
        acc_device = styles[0].device if styles[0].device.type in ("cpu", "cuda") else torch.device("cpu")
        batch_mean, batch_m2 = [], []
        for s in styles:
            x = s.to(device=acc_device, dtype=torch.float64)  # (b, dim)
            mu = x.mean(0)
            batch_mean.append(mu)
            batch_m2.append(((x - mu) ** 2).sum(0))
        if mean is None:
            mean, m2 = batch_mean, batch_m2
        else:
            total = count + b
            for i in range(len(mean)):
                delta = batch_mean[i] - mean[i]
                mean[i] = mean[i] + delta * (b / total)
                m2[i] = m2[i] + batch_m2[i] + delta**2 * (count * b / total)
        count += b
        if on_progress is not None:
            on_progress(count, n_samples)
    assert mean is not None and m2 is not None and count == n_samples
    return SStats(
        mean=tuple(m.cpu().numpy().astype(np.float32) for m in mean),
        std=tuple(torch.sqrt(v / count).cpu().numpy().astype(np.float32) for v in m2),
        n_samples=n_samples,
        truncation=float(truncation),
        truncation_cutoff=truncation_cutoff,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# channel relevance (fs3)


def generator_layout(generator: nn.Module) -> StyleSpaceLayout:
    """The S layout read from the generator's own layers, so narrow generators with explicit
    per-resolution widths (the demo set) get their real channel counts, not ``layout_for``'s."""
    layers = generator.style_layers()
    return StyleSpaceLayout.from_layers(
        [la.dim for la in layers], [la.is_torgb for la in layers], [la.resolution for la in layers]
    )


def channel_relevance(
    generator: nn.Module,
    clip: nn.Module,
    s_stats: SStats,
    *,
    w_avg: torch.Tensor | None,
    n_images: int = DEFAULT_N_IMAGES,
    sigma: float = DEFAULT_SIGMA,
    layers: Sequence[int] | None = None,
    render_size: int | None = None,
    batch: int = DEFAULT_RENDER_BATCH,
    quantize: bool = True,
    cumulative_means: bool = False,
    rows: tuple[int, int] | None = None,
    resume_path: str | os.PathLike | None = None,
    save_every: int = DEFAULT_SAVE_EVERY,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """CLIP image-space direction of every covered S channel (upstream ``SingleChannel.py``).

    Work is split into chunks of ``save_every`` channels; within a chunk, the (channel, image,
    ∓) renders are stacked and synthesised ``batch`` at a time (the two renders of a pair always
    share a call). With ``resume_path`` the finished rows are written after every chunk to that
    ``.npy`` (plus ``<resume_path>.json`` with the progress and a fingerprint of the models and
    settings); calling again with the same arguments continues after the last saved chunk and
    returns exactly the array an uninterrupted run returns.

    Args:
        generator: StyleGAN2 generator (``w_plus_to_styles``, ``synthesis_from_styles``,
            ``style_layers``, ``size``, ``channel_multiplier``); runs where it lives.
        clip: image encoder with ``encode_image(img (B, 3, H, W) in [-1, 1]) -> (B, D)``
            L2-normalised (:class:`editing.clip_text.ClipEncoder`); images are moved to its device.
        s_stats: the S statistics; their seed/ψ/cutoff also pick the images (the first
            ``n_images`` samples of the same stream, as upstream).
        w_avg: (1, 512) average w; None only with ψ = 1.
        n_images: images averaged per channel (100 upstream).
        sigma: the channel is set to mean ± sigma·std (5 upstream); a negative value swaps the
            two renders, which negates every row.
        layers: S layer indices to cover, ascending; default: the layout's covered layers
            (non-toRGB at ≤ 128 px: [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15] at 1024 px).
        render_size: resolution of the rendered skip image, a power of two between the finest
            covered layer's resolution and the generator's size (default: full size).
        batch: renders per synthesis call (even, ≥ 2).
        quantize: round renders to 8 bits first, as upstream's uint8 images.
        cumulative_means: reproduce upstream's side effect (visited channels stay at their mean).
        rows: compute only result rows [start, stop) (to split the work between machines, or for
            tests); the rows equal those of a full run. Default: all.
        resume_path: ``.npy`` path for the partial result; None disables saving.
        save_every: channels per chunk (and between saves).
        on_progress: called as ``on_progress(done_rows, n_rows)`` after each chunk.
    Returns:
        (n_rows, D) float32 (n_rows: all channels of ``layers``, or stop − start), rows in the
        order of ``layers`` then channel; unit rows, or zero rows for channels that do not change
        the render.
    """
    layout = generator_layout(generator)
    layers = tuple(layout.covered if layers is None else (int(i) for i in layers))
    _check_layers(layers, layout)
    if tuple(s_stats.dims) != tuple(layout.dims):
        raise ValueError(f"s_stats has layer dims {s_stats.dims}, the generator has {layout.dims}")
    _check_positive_int(n_images, "n_images")
    sigma = _check_finite(sigma, "sigma")
    if sigma == 0:
        raise ValueError("sigma must be non-zero")
    render_size = generator.size if render_size is None else render_size
    finest = max(layout.resolutions[i] for i in layers)
    if (
        not isinstance(render_size, int)
        or render_size & (render_size - 1)
        or not finest <= render_size <= generator.size
    ):
        raise ValueError(
            f"render_size must be a power of two between {finest} (the finest covered layer) and "
            f"{generator.size}, got {render_size!r}"
        )
    _check_positive_int(batch, "batch")
    if batch < 2:
        raise ValueError(f"batch must be at least 2 (a pair of renders), got {batch}")
    _check_positive_int(save_every, "save_every")

    device = _device_of(generator)
    clip_device = _device_of(clip)
    base = next(
        sample_styles(
            generator,
            w_avg,
            n_images,
            truncation=s_stats.truncation,
            truncation_cutoff=s_stats.truncation_cutoff,
            seed=s_stats.seed,
            batch=n_images,
        )
    )  # n_styles tensors (n_images, dims[l])
    means = [torch.from_numpy(m).to(device) for m in s_stats.mean]
    stds = [torch.from_numpy(s).to(device) for s in s_stats.std]

    # channel j of the result -> (S layer, channel in layer); offsets of each covered layer
    ch_layer = np.concatenate([np.full(layout.dims[i], i) for i in layers])
    ch_index = np.concatenate([np.arange(layout.dims[i]) for i in layers])
    offsets = dict(zip(layers, np.cumsum([0] + [layout.dims[i] for i in layers])[:-1].tolist(), strict=True))
    n_total = int(ch_layer.shape[0])
    first, last = (0, n_total) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= first < last <= n_total:
        raise ValueError(f"rows must satisfy 0 <= start < stop <= {n_total}, got {rows!r}")
    total = last - first

    settings = {
        "n_images": n_images,
        "sigma": sigma,
        "layers": list(layers),
        "render_size": render_size,
        "quantize": bool(quantize),
        "cumulative_means": bool(cumulative_means),
        "rows": [first, last],
        "autocast": str(torch.get_autocast_dtype(device.type))
        if torch.is_autocast_enabled(device.type)
        else None,
        **s_stats.settings(),
    }  # batch and save_every only change float rounding: a resume may use other values
    out, done, progress_path = None, 0, None
    if resume_path is not None:
        resume_path = Path(resume_path)
        progress_path = resume_path.with_name(resume_path.name + ".json")
        fingerprint = _fingerprint(generator, clip, s_stats, settings)
        out, done = _load_partial(resume_path, progress_path, fingerprint, total)
    pairs_per_call = batch // 2

    with torch.inference_mode():
        while done < total:
            start, stop = first + done, first + min(done + save_every, total)  # result rows of this chunk
            acc = None  # (stop - start, D) float64 sums of normalised differences
            chunk_ch = np.repeat(np.arange(start, stop), n_images)  # one entry per (channel, image) pair
            chunk_img = np.tile(np.arange(n_images), stop - start)
            for p0 in range(0, chunk_ch.shape[0], pairs_per_call):
                ch = chunk_ch[p0 : p0 + pairs_per_call]
                img_idx = chunk_img[p0 : p0 + pairs_per_call]
                styles = _pair_styles(
                    base, means, stds, ch, img_idx, ch_layer, ch_index, offsets, sigma, cumulative_means
                )
                img = generator.synthesis_from_styles(styles, noise_mode="const", out_size=render_size)
                if quantize:
                    img = _to_8bit(img)
                feats = clip.encode_image(img.to(clip_device)).double()  # (2P, D), unit rows
                feats = feats / torch.linalg.vector_norm(feats, dim=1, keepdim=True).clamp_min(1e-300)
                diff = feats[1::2] - feats[0::2]  # (+) minus (−), per pair
                norm = torch.linalg.vector_norm(diff, dim=1, keepdim=True)
                diff = torch.where(norm > 0, diff / torch.where(norm > 0, norm, 1.0), 0.0)
                if acc is None:
                    acc = torch.zeros(stop - start, diff.shape[1], dtype=torch.float64, device=diff.device)
                acc.index_add_(0, torch.from_numpy(ch - start).to(diff.device), diff)
            mean_dir = acc / n_images
            norm = torch.linalg.vector_norm(mean_dir, dim=1, keepdim=True)
            mean_dir = torch.where(norm > 0, mean_dir / torch.where(norm > 0, norm, 1.0), 0.0)
            if out is None:
                out = np.zeros((total, mean_dir.shape[1]), dtype=np.float32)
            if out.shape[1] != mean_dir.shape[1]:
                raise ValueError(
                    f"the partial result {resume_path} has {out.shape[1]} columns, "
                    f"CLIP gives {mean_dir.shape[1]}"
                )
            out[start - first : stop - first] = mean_dir.cpu().numpy().astype(np.float32)
            done = stop - first
            if resume_path is not None:
                _save_partial(resume_path, progress_path, out, done, total, fingerprint)
            if on_progress is not None:
                on_progress(done, total)
    assert out is not None
    return out


def _pair_styles(
    base: list[torch.Tensor],  # n_styles x (n_images, dim)
    means: list[torch.Tensor],
    stds: list[torch.Tensor],
    ch: np.ndarray,  # (P,) result channel of each pair
    img_idx: np.ndarray,  # (P,) image of each pair
    ch_layer: np.ndarray,
    ch_index: np.ndarray,
    offsets: dict[int, int],
    sigma: float,
    cumulative: bool,
) -> list[torch.Tensor]:
    """S for P pairs of renders, interleaved (−, +): n_styles tensors (2P, dim)."""
    device = base[0].device
    rows = torch.from_numpy(np.repeat(img_idx, 2)).to(device)  # (2P,)
    pair_ch = np.repeat(ch, 2)
    sign = np.tile(np.array([-1.0, 1.0]), len(ch))
    styles = []
    for layer, (s, mean, std) in enumerate(zip(base, means, stds, strict=True)):
        x = s.index_select(0, rows)  # (2P, dim)
        if cumulative and layer in offsets:
            # every channel visited before this one (upstream's shallow copy) sits at its mean
            visited = np.clip(pair_ch - offsets[layer], 0, x.shape[1])
            mask = (
                torch.arange(x.shape[1], device=device)[None, :]
                < torch.from_numpy(visited).to(device)[:, None]
            )
            x = torch.where(mask, mean[None, :], x)
        hit = np.nonzero(ch_layer[pair_ch] == layer)[0]
        if hit.size:
            c = torch.from_numpy(ch_index[pair_ch[hit]]).to(device)
            # float32(mean + a·std) computed in float64, as upstream's in-place numpy update
            value = mean.double()[c] + torch.from_numpy(sign[hit] * sigma).to(device) * std.double()[c]
            x[torch.from_numpy(hit).to(device), c] = value.to(x.dtype)
        styles.append(x)
    return styles


def _to_8bit(img: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to upstream's uint8 levels (x·127.5 + 128, clipped, floored) and back."""
    q = torch.floor(img.float() * 127.5 + 128.0).clamp_(0, 255)
    return q / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# resume files


def _fingerprint(generator: nn.Module, clip: nn.Module, s_stats: SStats, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for module in (generator, clip):
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for a in (*s_stats.mean, *s_stats.std):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _load_partial(
    path: Path, progress_path: Path, fingerprint: str, total: int
) -> tuple[np.ndarray | None, int]:
    if not progress_path.is_file():
        return None, 0
    progress = json.loads(progress_path.read_text())
    if progress.get("fingerprint") != fingerprint or progress.get("total") != total:
        raise ValueError(
            f"resume_path {str(path)!r} holds relevance made with other models or settings: delete "
            f"{path.name} and {progress_path.name}, or choose another path"
        )
    out = np.load(path, allow_pickle=False)
    done = int(progress["done"])
    if out.ndim != 2 or out.shape[0] != total or out.dtype != np.float32 or not 0 <= done <= total:
        raise ValueError(f"resume_path {str(path)!r} is not a partial relevance file of {total} rows")
    return out, done


def _save_partial(
    path: Path, progress_path: Path, out: np.ndarray, done: int, total: int, fingerprint: str
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)  # rows first: a crash before the JSON below only redoes a chunk
    _write_json(
        progress_path, {"format": FORMAT_VERSION, "done": done, "total": total, "fingerprint": fingerprint}
    )


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# files


@dataclass(frozen=True)
class Precomputed:
    """What :func:`load_precomputed` returns.

    Attributes:
        s_stats: the S statistics.
        fs3: (covered channels, D) float32 relevance, or None when only statistics were made.
        meta: the contents of ``meta.json``.
        layout: the generator's S layout (``covered`` = the layers of ``fs3``'s rows).
    """

    s_stats: SStats
    fs3: np.ndarray | None
    meta: dict[str, Any]
    layout: StyleSpaceLayout

    @property
    def s_std(self) -> list[np.ndarray]:
        """Per-layer std, the ``s_std`` argument of :func:`editing.global_directions.delta_s`."""
        return list(self.s_stats.std)


def save_precomputed(
    folder: str | os.PathLike,
    s_stats: SStats,
    fs3: np.ndarray | None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``s_stats.npz``, ``fs3.npy`` (when given) and ``meta.json`` into ``folder``.

    Args:
        folder: created when missing; existing files of the same names are replaced.
        s_stats: statistics; ``mean_<i>``/``std_<i>`` float32 arrays in the npz.
        fs3: (covered channels, D) relevance or None (statistics only).
        metadata: extra JSON-able facts (generator name, size, channel_multiplier, sha256,
            relevance settings, layers, …); merged over the recorded defaults.
    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "s_stats": {**s_stats.settings(), "dims": list(s_stats.dims), "file": S_STATS_FILE},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if metadata:
        meta.update(metadata)
    arrays = {f"mean_{i}": m for i, m in enumerate(s_stats.mean)}
    arrays.update({f"std_{i}": s for i, s in enumerate(s_stats.std)})
    tmp = folder / (S_STATS_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, folder / S_STATS_FILE)
    if fs3 is not None:
        fs3 = np.asarray(fs3)
        if fs3.ndim != 2 or not np.issubdtype(fs3.dtype, np.floating):
            raise ValueError(f"fs3 must be a 2-D float array, got {fs3.dtype} {fs3.shape}")
        tmp = folder / (FS3_FILE + ".tmp.npy")
        np.save(tmp, np.ascontiguousarray(fs3, dtype=np.float32))
        os.replace(tmp, folder / FS3_FILE)
        meta["fs3"] = {**meta.get("fs3", {}), "file": FS3_FILE, "shape": list(fs3.shape), "dtype": "float32"}
    elif (folder / FS3_FILE).exists():
        (folder / FS3_FILE).unlink()  # stale relevance of other statistics
    _write_json(folder / META_FILE, meta)
    return folder


def load_precomputed(folder: str | os.PathLike) -> Precomputed:
    """Read a folder written by :func:`save_precomputed` (``allow_pickle=False`` throughout).

    Raises:
        FileNotFoundError: ``s_stats.npz`` or ``meta.json`` is missing.
        ValueError: the files disagree with each other or with the recorded layout.
    """
    folder = Path(folder)
    try:
        return _load_precomputed(folder)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{folder / META_FILE} lacks or mangles an entry: {exc!r}") from exc


def _load_precomputed(folder: Path) -> Precomputed:
    meta = json.loads((folder / META_FILE).read_text())
    info = meta["s_stats"]
    with np.load(folder / S_STATS_FILE, allow_pickle=False) as npz:
        n = len([k for k in npz.files if k.startswith("mean_")])
        expected = {f"mean_{i}" for i in range(n)} | {f"std_{i}" for i in range(n)}
        if set(npz.files) != expected:
            raise ValueError(f"{folder / S_STATS_FILE} must hold mean_0..mean_{n - 1} and std_0..std_{n - 1}")
        mean = tuple(npz[f"mean_{i}"] for i in range(n))
        std = tuple(npz[f"std_{i}"] for i in range(n))
    s_stats = SStats(
        mean=mean,
        std=std,
        n_samples=int(info["n_samples"]),
        truncation=float(info["truncation"]),
        truncation_cutoff=info.get("truncation_cutoff"),
        seed=int(info["seed"]),
    )
    lay = meta.get("layout")
    if lay is not None:
        layout = StyleSpaceLayout(
            dims=lay["dims"], is_torgb=lay["is_torgb"], resolutions=lay["resolutions"], covered=lay["covered"]
        )
    else:
        layout = layout_for(int(meta["size"]), int(meta.get("channel_multiplier", 2)))
    if tuple(layout.dims) != s_stats.dims:
        raise ValueError(f"{folder}: s_stats dims {s_stats.dims} do not match the layout {layout.dims}")
    fs3 = None
    if (folder / FS3_FILE).is_file():
        fs3 = load_official_fs3(folder / FS3_FILE, layout, clip_dim=None)
    return Precomputed(s_stats=s_stats, fs3=fs3, meta=meta, layout=layout)


def load_official_fs3(
    path: str | os.PathLike, layout: StyleSpaceLayout, *, clip_dim: int | None = 512
) -> np.ndarray:
    """Load and check an ``fs3.npy`` (official StyleCLIP file or one written here).

    Args:
        path: the ``.npy`` file; read with ``allow_pickle=False``.
        layout: the generator's layout; rows must equal ``layout.n_covered_channels``
            ((5376, 512) for FFHQ 1024).
        clip_dim: required number of columns (512 for CLIP ViT-B/32); None accepts any.
    Returns:
        (rows, D) float32 (any float dtype on disk is accepted and cast).
    Raises:
        ValueError: not a 2-D float array of that many rows, non-finite values, or rows that are
            neither unit vectors nor zero.
    """
    path = Path(path)
    try:
        fs3 = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(
            f"{path.name} is not a plain .npy array (pickled objects are refused): {exc}"
        ) from exc
    if not isinstance(fs3, np.ndarray) or not np.issubdtype(fs3.dtype, np.floating):
        raise ValueError(f"{path.name} must hold a float array, got {getattr(fs3, 'dtype', type(fs3))}")
    rows = layout.n_covered_channels
    if fs3.ndim != 2 or fs3.shape[0] != rows or (clip_dim is not None and fs3.shape[1] != clip_dim):
        raise ValueError(
            f"{path.name} has shape {fs3.shape}, expected ({rows}, {clip_dim or 'clip_dim'}) for this "
            f"generator's {len(layout.covered)} covered S layers ((5376, 512) for FFHQ 1024); is it the "
            f"file of another generator or CLIP?"
        )
    fs3 = fs3.astype(np.float32)
    if not np.isfinite(fs3).all():
        raise ValueError(f"{path.name} holds non-finite values")
    norms = np.linalg.norm(fs3, axis=1)
    bad = ~((np.abs(norms - 1) <= _UNIT_ROW_TOL) | (norms == 0))
    if bad.any():
        raise ValueError(
            f"{path.name}: {int(bad.sum())} rows are not unit vectors (e.g. row {int(np.argmax(bad))})"
        )
    return fs3


def layout_metadata(layout: StyleSpaceLayout) -> dict[str, list]:
    """The layout as JSON-able lists (the ``layout`` entry of ``meta.json``)."""
    return {
        "dims": list(layout.dims),
        "is_torgb": list(layout.is_torgb),
        "resolutions": list(layout.resolutions),
        "covered": list(layout.covered),
    }


# --------------------------------------------------------------------------------------------
# command line (wired into editing/cli.py as ``python -m editing precompute``)


def add_precompute_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m editing precompute`` (model arguments such as ``--weights`` are
    added by the CLI)."""
    p = parser
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: precomputed/<models name>)"
    )
    p.add_argument("--n-samples", type=int, default=DEFAULT_N_SAMPLES, help="z samples for S statistics")
    p.add_argument("--n-images", type=int, default=DEFAULT_N_IMAGES, help="images averaged per channel")
    p.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="channel set to mean ± sigma·std")
    p.add_argument(
        "--render-size",
        type=int,
        default=None,
        help="relevance render resolution (default: full size; 256 at 1024 px: ~2.4x cheaper, rows differ)",
    )
    p.add_argument("--batch", type=int, default=DEFAULT_RENDER_BATCH, help="renders per synthesis call")
    p.add_argument("--stats-batch", type=int, default=DEFAULT_STATS_BATCH, help="samples per mapping call")
    p.add_argument("--save-every", type=int, default=DEFAULT_SAVE_EVERY, help="channels between saves")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="numpy RandomState seed of z")
    p.add_argument("--truncation", type=float, default=DEFAULT_TRUNCATION, help="psi")
    p.add_argument(
        "--truncation-cutoff",
        type=int,
        default=None,
        help="truncate only W+ rows below this (global_torch); default: all rows (official files)",
    )
    p.add_argument(
        "--upstream-cumulative",
        action="store_true",
        help="reproduce upstream's side effect: visited channels stay at their mean",
    )
    p.add_argument("--stats-only", action="store_true", help="only S statistics (no CLIP needed)")


def run_precompute(args: argparse.Namespace, editor_factory: Callable[[tuple[str, ...]], Any]) -> dict:
    """Run ``precompute``: S statistics (reused when the folder already holds matching ones), then
    the relevance (resumable: rerun the same command after an interruption).

    Args:
        args: parsed arguments (:func:`add_precompute_arguments`, plus the CLI's ``--weights``).
        editor_factory: ``components -> FaceEditor`` (with ``.generator``, ``.w_avg``, ``.clip``,
            ``.device``, ``.autocast()``, ``.name``).
    Returns:
        A JSON-able summary (output folder, shapes, seconds).
    """
    from editing.clip_text import ClipEncoder
    from editing.editor import generator_fingerprint

    t0 = time.perf_counter()
    components = ("generator",) if args.stats_only else ("generator", "clip")
    editor = editor_factory(components)
    generator = editor.generator
    out = Path(args.out) if args.out is not None else Path("precomputed") / editor.name
    layout = generator_layout(generator)
    meta: dict[str, Any] = {
        "generator": editor.name,
        "size": generator.size,
        "channel_multiplier": generator.channel_multiplier,
        "generator_sha256": _generator_sha256(args),
        "generator_fingerprint": generator_fingerprint(generator),
        "layout": layout_metadata(layout),
        "device": str(editor.device),
    }
    wanted = {
        "n_samples": args.n_samples,
        "truncation": float(args.truncation),
        "truncation_cutoff": args.truncation_cutoff,
        "seed": args.seed,
    }
    s_stats = _reusable_stats(out, wanted, meta)
    if s_stats is None:
        print(f"S statistics: {args.n_samples} samples", flush=True)
        s_stats = s_statistics(
            generator,
            editor.w_avg,
            n_samples=args.n_samples,
            truncation=args.truncation,
            truncation_cutoff=args.truncation_cutoff,
            seed=args.seed,
            batch=args.stats_batch,
            on_progress=_printer("S statistics", every=max(args.n_samples // 10, 1)),
        )
        save_precomputed(out, s_stats, None, meta)
    t1 = time.perf_counter()
    summary: dict[str, Any] = {
        "out": str(out),
        "s_layers": len(s_stats.dims),
        "stats_seconds": round(t1 - t0, 1),
    }
    if args.stats_only:
        return summary

    render_size = args.render_size or generator.size
    fs3_meta = {
        "n_images": args.n_images,
        "sigma": float(args.sigma),
        "render_size": render_size,
        "quantize": True,
        "cumulative_means": bool(args.upstream_cumulative),
        "clip_normalize": True,
        "precision": getattr(editor, "precision", "fp32"),
        "layers": list(layout.covered),
    }
    done = _reusable_fs3(out, s_stats, fs3_meta)
    if done is not None:
        print(f"relevance: {out / FS3_FILE} is complete for these settings", flush=True)
        summary.update(fs3_shape=list(done.shape), relevance_seconds=0.0)
        return summary
    # upstream's CLIP preprocess normalises with CLIP's mean/std: a view of the same weights that does
    clip = ClipEncoder(editor.clip.model, editor.clip.tokenizer, normalize=True)
    partial = out / PARTIAL_FS3
    print(
        f"relevance: {layout.n_covered_channels} channels x {args.n_images} images at {render_size} px "
        f"(resumable: {partial})",
        flush=True,
    )
    with editor.autocast():
        fs3 = channel_relevance(
            generator,
            clip,
            s_stats,
            w_avg=editor.w_avg,
            n_images=args.n_images,
            sigma=args.sigma,
            render_size=render_size,
            batch=args.batch,
            cumulative_means=args.upstream_cumulative,
            resume_path=partial,
            save_every=args.save_every,
            on_progress=_printer("relevance", every=1, started=time.perf_counter()),
        )
    meta["fs3"] = fs3_meta
    save_precomputed(out, s_stats, fs3, meta)
    for p in (partial, partial.with_name(partial.name + ".json")):
        p.unlink(missing_ok=True)
    summary.update(fs3_shape=list(fs3.shape), relevance_seconds=round(time.perf_counter() - t1, 1))
    return summary


def _reusable_fs3(out: Path, s_stats: SStats, fs3_meta: dict) -> np.ndarray | None:
    try:
        pre = load_precomputed(out)
    except (ValueError, KeyError, OSError):
        return None
    recorded = {k: v for k, v in pre.meta.get("fs3", {}).items() if k in fs3_meta}
    same_stats = all(np.array_equal(a, b) for a, b in zip(pre.s_stats.std, s_stats.std, strict=True))
    return pre.fs3 if pre.fs3 is not None and recorded == fs3_meta and same_stats else None


def _reusable_stats(out: Path, wanted: dict, meta: dict) -> SStats | None:
    if not (out / S_STATS_FILE).is_file() or not (out / META_FILE).is_file():
        return None
    try:
        pre = load_precomputed(out)
    except (ValueError, KeyError, OSError):
        return None
    have = {k: pre.s_stats.settings()[k] for k in wanted}
    # the fingerprint hashes the loaded weights, so any generator (FFHQ file or retrained demo) counts
    keys = ("size", "channel_multiplier", "generator_sha256", "generator_fingerprint")
    same_model = all(pre.meta.get(k) == meta[k] for k in keys)
    if have != wanted or not same_model:
        return None
    print(f"S statistics: reusing {out / S_STATS_FILE}", flush=True)
    return pre.s_stats


def _generator_sha256(args: argparse.Namespace) -> str | None:
    """sha256 of the generator file when it is on this machine (None otherwise)."""
    try:
        from editing.weights import WeightStore, sha256_of

        path = WeightStore(local_dir=getattr(args, "weights", None), offline=True).locate("stylegan2-ffhq")
        return None if path is None else sha256_of(path)
    except Exception:  # the hash is informative only
        return None


def _printer(label: str, *, every: int, started: float | None = None) -> Callable[[int, int], None]:
    start = time.perf_counter() if started is None else started
    state = {"last": 0}

    def report(done: int, total: int) -> None:
        if done - state["last"] < every and done != total:
            return
        state["last"] = done
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done) if done else math.nan
        print(f"{label}: {done}/{total} ({elapsed:.0f} s, ~{eta:.0f} s left)", flush=True)

    return report


# --------------------------------------------------------------------------------------------
# checks


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _check_positive_int(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return int(x)


def _check_finite(x: object, name: str) -> float:
    if (
        isinstance(x, bool)
        or not isinstance(x, (int, float, np.integer, np.floating))
        or not math.isfinite(x)
    ):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return float(x)


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def _check_truncation(psi: object, cutoff: object) -> None:
    psi = _check_finite(psi, "truncation")
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f"truncation must be in [0, 1], got {psi}")
    if cutoff is not None and (
        isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 1
    ):
        raise ValueError(f"truncation_cutoff must be None or a positive integer, got {cutoff!r}")


def _check_layers(layers: tuple[int, ...], layout: StyleSpaceLayout) -> None:
    if not layers or list(layers) != sorted(set(layers)):
        raise ValueError(f"layers must be a non-empty ascending sequence without repeats, got {list(layers)}")
    for i in layers:
        if not 0 <= i < layout.n_layers:
            raise ValueError(f"layers: {i} is outside the generator's {layout.n_layers} S layers")
        if layout.is_torgb[i]:
            raise ValueError(f"layers: {i} is a toRGB layer; relevance covers only convolutions")
