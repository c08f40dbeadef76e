"""One registry of every model file the app uses, and how each is found, fetched and verified.

Resolution order for an entry:
1. a local folder given with ``--weights DIR`` holding the official file names
   (``DIR/stylegan2-ffhq-config-f.pt``, ``DIR/mappers/purple_hair.pt``, ``DIR/clip-vit-base-patch32/``);
2. a file shipped inside an installed Python package (the dlib landmark model);
3. the Hugging Face Hub cache, downloading into it when the network allows (with progress bars),
   trying each public mirror in turn.
When nothing works, one :class:`~editing.errors.WeightsUnavailableError` names every missing file
and how to provide it.

Files are verified by size and sha256 where those are known, and are read with
``torch.load(..., weights_only=True)`` only: a checkpoint can never execute code. Where the hosting
of a file is documented but its contents are not verified (``../shared/reference/checkpoints.md``,
section 8), its hash is left ``None`` and the strict state-dict loading checks its contents instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editing.errors import WeightsCorruptError, WeightsUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubSource:
    """A file (or, for folders, a directory prefix) in a Hugging Face Hub model repository."""

    repo_id: str  # e.g. "openai/clip-vit-base-patch32"
    path: str  # path inside the repo; "" for the repo root (folders)
    revision: str | None = None  # branch, tag or commit; None = the default branch


@dataclass(frozen=True)
class WeightFile:
    """A registry entry: one official file, or one folder of files for ``transformers`` models."""

    name: str  # registry key used in code, e.g. "stylegan2-ffhq"
    local_name: str  # path under the --weights folder, the official file name
    description: str  # what it is, for error messages
    sources: tuple[HubSource, ...] = ()  # Hub mirrors, tried in order
    size: int | None = None  # bytes, when known
    sha256: str | None = None  # hex digest, when known
    package: tuple[str, str] | None = None  # (python package, path inside it) shipping the file
    folder_files: tuple[str, ...] = ()  # for folders: files to fetch; the first ones are required
    folder_required: int = 0  # how many of folder_files must exist (the rest are alternatives)

    @property
    def is_folder(self) -> bool:
        return bool(self.folder_files)


MAPPER_NAMES: tuple[str, ...] = (
    "afro", "angry", "beyonce", "bobcut", "bowlcut", "curly_hair", "depp", "hilary_clinton",
    "mohawk", "purple_hair", "surprised", "taylor_swift", "trump", "zuckerberg",
)  # fmt: skip

_SFE = "AIRI-Institute/StyleFeatureEditor"

_ENTRIES: list[WeightFile] = [
    WeightFile(
        name="stylegan2-ffhq",
        local_name="stylegan2-ffhq-config-f.pt",
        description="StyleGAN2 FFHQ 1024 generator (rosinality format)",
        sources=(
            HubSource(_SFE, "pretrained_models/stylegan2-ffhq-config-f.pt"),
            HubSource("Awesimo/jojogan", "stylegan2-ffhq-config-f.pt"),
        ),
    ),
    WeightFile(
        name="e4e-ffhq",
        local_name="e4e_ffhq_encode.pt",
        description="e4e FFHQ encoder (encoder4editing)",
        sources=(
            HubSource("public-data/e4e", "e4e_ffhq_encode.pt"),
            HubSource("AIRI-Institute/HairFastGAN", "pretrained_models/encoder4editing/e4e_ffhq_encode.pt"),
            HubSource(_SFE, "pretrained_models/e4e_ffhq_encode.pt"),
        ),
    ),
    WeightFile(
        name="ir-se50",
        local_name="model_ir_se50.pth",
        description="ArcFace IR-SE50 identity network",
        sources=(HubSource(_SFE, "pretrained_models/model_ir_se50.pth"),),
    ),
    WeightFile(
        name="fs3",
        local_name="fs3.npy",
        description="StyleCLIP global-direction channel relevance for FFHQ 1024 (5376 x 512)",
        sources=(HubSource(_SFE, "pretrained_models/fs3.npy"),),
    ),
    WeightFile(
        name="clip-vit-b32",
        local_name="clip-vit-base-patch32",
        description="CLIP ViT-B/32 (OpenAI weights, transformers format)",
        sources=(HubSource("openai/clip-vit-base-patch32", ""),),
        folder_files=(
            "config.json",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "model.safetensors",
            "pytorch_model.bin",
        ),
        folder_required=5,  # plus one of the two weight files
    ),
    WeightFile(
        name="dlib-landmarks68",
        local_name="shape_predictor_68_face_landmarks.dat",
        description="dlib 68-point face landmark model",
        size=99_693_937,
        sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        package=("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"),
        sources=(HubSource("public-data/dlib_face_landmark_model", "shape_predictor_68_face_landmarks.dat"),),
    ),
]
_ENTRIES += [
    WeightFile(
        name=f"mapper-{m}",
        local_name=f"mappers/{m}.pt",
        description=f"StyleCLIP latent mapper '{m}'",
        sources=(HubSource(_SFE, f"pretrained_models/styleclip_mappers/{m}.pt"),),
    )
    for m in MAPPER_NAMES
]

REGISTRY: dict[str, WeightFile] = {e.name: e for e in _ENTRIES}

FFHQ_MODEL_SET: tuple[str, ...] = ("stylegan2-ffhq", "e4e-ffhq", "ir-se50", "clip-vit-b32")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class WeightStore:
    """Finds, downloads and verifies registry entries.

    Args:
        local_dir: a folder holding official file names (``--weights``); checked first.
        cache_dir: Hugging Face cache folder; ``None`` uses the library default (``HF_HOME``).
        offline: never touch the network; ``None`` follows ``HF_HUB_OFFLINE``.
        endpoint: Hub endpoint URL; ``None`` uses the library default (``HF_ENDPOINT``).
        progress: show download progress bars.
        registry: entries by name (the module-level :data:`REGISTRY` unless testing).
    """

    local_dir: Path | None = None
    cache_dir: Path | None = None
    offline: bool | None = None
    endpoint: str | None = None
    progress: bool = True
    registry: dict[str, WeightFile] = field(default_factory=lambda: dict(REGISTRY))
    _verified: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _reachable: bool | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.local_dir is not None:
            self.local_dir = Path(self.local_dir).expanduser()
            if not self.local_dir.is_dir():
                raise ValueError(f"weights folder {str(self.local_dir)!r} does not exist or is not a folder")
        if self.offline is None:
            self.offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")

    def entry(self, name: str) -> WeightFile:
        try:
            return self.registry[name]
        except KeyError:
            raise ValueError(f"unknown weights entry {name!r}; known: {', '.join(self.registry)}") from None

    # ------------------------------------------------------------------ lookup
    def locate(self, name: str) -> Path | None:
        """Path of an entry already on this machine (local folder, package, Hub cache), else None."""
        e = self.entry(name)
        if self.local_dir is not None:
            p = self.local_dir / e.local_name
            if self._complete(e, p):
                return self._verify(e, p)
            flat = self.local_dir / Path(e.local_name).name  # mappers may sit flat in the folder
            if flat != p and self._complete(e, flat):
                return self._verify(e, flat)
        if e.package is not None:
            spec = importlib.util.find_spec(e.package[0])  # no import: the package's __init__ may fail
            if spec is not None and spec.submodule_search_locations:
                for root in spec.submodule_search_locations:
                    p = Path(root) / e.package[1]
                    if p.is_file():
                        return self._verify(e, p)
        for src in e.sources:
            p = self._from_hub(e, src, local_only=True)
            if p is not None:
                return self._verify(e, p)
        return None

    def fetch(self, name: str) -> Path:
        """Path of an entry, downloading it when needed. Raises WeightsUnavailableError."""
        return self.fetch_all([name])[name]

    def fetch_all(self, names: Iterable[str]) -> dict[str, Path]:
        """Paths of several entries; one error naming every entry that could not be had."""
        found: dict[str, Path] = {}
        missing: list[tuple[WeightFile, list[str]]] = []
        for name in names:
            p = self.locate(name)
            e = self.entry(name)
            reasons: list[str] = []
            if p is None and not self.offline and e.sources and not self._hub_reachable():
                reasons.append(f"{self._hub_host()} cannot be reached (no network or DNS)")
            elif p is None and not self.offline:
                for src in e.sources:
                    try:
                        p = self._from_hub(e, src, local_only=False)
                    except WeightsCorruptError:
                        raise
                    except Exception as exc:  # network, auth, missing repo/file: try the next mirror
                        reasons.append(f"{src.repo_id}/{src.path or '*'}: {_short(exc)}")
                        p = None
                    if p is not None:
                        p = self._verify(e, p)
                        break
            if p is None:
                missing.append((e, reasons))
            else:
                found[name] = p
        if missing:
            raise WeightsUnavailableError(
                self._missing_message(missing), missing=tuple(e for e, _ in missing)
            )
        return found

    def _hub_host(self) -> str:
        from urllib.parse import urlparse

        url = self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        return urlparse(url).hostname or "huggingface.co"

    def _hub_reachable(self) -> bool:
        """One quick name lookup and TCP connect per store: without network the Hub client would
        retry every file with exponential back-off (minutes) before giving up."""
        if self._reachable is None:
            import socket
            from urllib.parse import urlparse

            url = self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
            parsed = urlparse(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                with socket.create_connection((parsed.hostname, port), timeout=3):
                    self._reachable = True
            except OSError:
                self._reachable = False
        return self._reachable

    def can_download(self) -> bool:
        """True when entries missing here could be downloaded now: not offline, and the Hub answered
        this store's one reachability probe (made on the first call, a few seconds at most)."""
        return not self.offline and self._hub_reachable()

    def available(self, names: Iterable[str]) -> bool:
        """True when every entry is already on this machine (no network is used)."""
        return all(self.locate(n) is not None for n in names)

    # ------------------------------------------------------------------ internals
    def _complete(self, e: WeightFile, p: Path) -> bool:
        if not e.is_folder:
            return p.is_file()
        if not p.is_dir():
            return False
        required = e.folder_files[: e.folder_required]
        optional = e.folder_files[e.folder_required :]
        return all((p / f).is_file() for f in required) and (
            not optional or any((p / f).is_file() for f in optional)
        )

    def _from_hub(self, e: WeightFile, src: HubSource, *, local_only: bool) -> Path | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        kwargs: dict[str, Any] = dict(
            repo_id=src.repo_id, revision=src.revision, cache_dir=self.cache_dir, local_files_only=local_only
        )
        if self.endpoint is not None:
            kwargs["endpoint"] = self.endpoint
        if not self.progress:
            kwargs["tqdm_class"] = _silent_tqdm_class()
        try:
            if not e.is_folder:
                return Path(hf_hub_download(filename=src.path, **kwargs))
            folder: Path | None = None
            for i, f in enumerate(e.folder_files):
                sub = f"{src.path}/{f}" if src.path else f
                try:
                    p = Path(hf_hub_download(filename=sub, **kwargs))
                except (EntryNotFoundError, LocalEntryNotFoundError):
                    if i < e.folder_required:
                        raise
                    continue
                folder = p.parent
                if i >= e.folder_required:
                    break  # one weight file is enough
            return folder if folder is not None and self._complete(e, folder) else None
        except LocalEntryNotFoundError:
            if local_only:
                return None
            raise

    def _verify(self, e: WeightFile, p: Path) -> Path:
        if e.is_folder or (e.size is None and e.sha256 is None):
            return p
        st = p.stat()
        if e.size is not None and st.st_size != e.size:
            raise WeightsCorruptError(
                f"{p} has {st.st_size:,} bytes but {e.local_name} should have {e.size:,}: the file is "
                "incomplete or a different file; delete it and download it again."
            )
        if e.sha256 is not None:
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            with self._lock:
                digest = self._verified.get(key)
                if digest is None:
                    digest = self._verified[key] = sha256_of(p)
            if digest != e.sha256:
                raise WeightsCorruptError(
                    f"{p} has sha256 {digest[:12]}… but {e.local_name} should have {e.sha256[:12]}…: "
                    "the file is corrupt or a different file; delete it and download it again."
                )
        return p

    def _missing_message(self, missing: list[tuple[WeightFile, list[str]]]) -> str:
        names = ", ".join(e.local_name for e, _ in missing)
        where = f"the folder {self.local_dir}" if self.local_dir else "a folder"
        tail = (
            "allow downloads (HF_HUB_OFFLINE is set)"
            if self.offline
            else "check the network (downloads failed)"
        )
        # The first line is a complete summary (the CLI prints only it); details follow.
        lines = [f"Missing model files: {names}. Put them into {where} and pass --weights DIR, or {tail}."]
        for e, reasons in missing:
            hubs = ", ".join(f"{s.repo_id}/{s.path}" if s.path else s.repo_id for s in e.sources) or "none"
            lines.append(f"  - {e.local_name}: {e.description}; Hugging Face Hub: {hubs}")
            lines.extend(f"      tried {r}" for r in reasons)
        return "\n".join(lines)


def _silent_tqdm_class() -> type:
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):  # huggingface_hub wants a tqdm subclass
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"


# ---------------------------------------------------------------------- reading checkpoint files
def _never(key: str) -> bool:
    return False


def stored_state_dict(
    state_dict: dict[str, torch.Tensor], *, half: bool = False, keep_float32: Callable[[str], bool] = _never
) -> dict[str, torch.Tensor]:
    """A detached, contiguous copy of ``state_dict`` to save; with ``half`` its floating-point tensors
    are float16, except those whose key ``keep_float32`` names: half the file, and a strict
    ``load_state_dict`` casts them back to the model's float32 (the demo set's files use it to stay
    within their size budget)."""

    def stored(k: str, v: torch.Tensor) -> torch.Tensor:
        return v.half() if half and v.is_floating_point() and not keep_float32(k) else v

    return {k: stored(k, v).detach().clone().contiguous() for k, v in state_dict.items()}


def round_to_half(module: torch.nn.Module, keep_float32: Callable[[str], bool] = _never) -> torch.nn.Module:
    """Round ``module``'s floating-point weights and buffers (but those ``keep_float32`` names) to float16
    and back, in place: the model a ``stored_state_dict(half=True)`` file loads as, so that metrics measured
    afterwards hold for the stored file."""
    with torch.no_grad():
        for k, t in module.state_dict().items():  # views of the parameters and buffers
            if t.is_floating_point() and not keep_float32(k):
                t.copy_(t.half().to(t.dtype))
    return module


def load_torch_file(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    Raises:
        WeightsCorruptError: the file is not a readable checkpoint, or needs code execution to load.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise WeightsCorruptError(
            f"{path.name} could not be read as a safe PyTorch checkpoint ({_short(exc)}). It is corrupt, "
            "incomplete, or a format that would need code execution to load; use the official file."
        ) from exc


def _expect_mapping(obj: Any, path: Path, what: str) -> dict:
    if not isinstance(obj, dict):
        raise WeightsCorruptError(f"{path.name} is not a {what} checkpoint (found {type(obj).__name__}).")
    return obj


def read_generator_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Read a rosinality-format StyleGAN2 file.

    Returns:
        ``(g_ema state dict, latent_avg (512,) or None)``; training checkpoints have no latent_avg.
    """
    path = Path(path)
    ckpt = _expect_mapping(load_torch_file(path, mmap=True), path, "StyleGAN2")
    if "g_ema" not in ckpt:
        raise WeightsCorruptError(f"{path.name} has no 'g_ema' entry; keys: {sorted(ckpt)[:8]}")
    return dict(ckpt["g_ema"]), ckpt.get("latent_avg")


def read_irse_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``model_ir_se50.pth`` (a plain state dict)."""
    path = Path(path)
    return dict(_expect_mapping(load_torch_file(path), path, "IR-SE50"))


def read_mapper_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a StyleCLIP mapper file: only the ``mapper.*`` keys (prefix removed), never the decoder.

    The file is memory-mapped so the bundled generator copy (~130 MB) is never read into memory.

    Returns:
        ``(mapper state dict, opts dict)``.
    """
    path = Path(path)
    ckpt = _expect_mapping(load_torch_file(path, mmap=True), path, "mapper")
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, dict):
        raise WeightsCorruptError(f"{path.name} has no state dict.")
    mapper = {k[len("mapper.") :]: v.clone() for k, v in sd.items() if k.startswith("mapper.")}
    if not mapper:
        raise WeightsCorruptError(f"{path.name} holds no 'mapper.*' weights; it is not a StyleCLIP mapper.")
    opts = ckpt.get("opts") or {}
    return mapper, dict(opts) if isinstance(opts, dict) else {}
