"""Which model set a ``FaceEditor`` runs on: the real FFHQ set or the offline demo set.

- ``ffhq``: StyleGAN2 FFHQ (1024 px for the official file), e4e, IR-SE50, CLIP ViT-B/32, the
  official relevance matrix and mappers, from ``--weights DIR``, the Hugging Face cache or a
  download (``editing.weights``).
- ``demo``: the small cartoon-face models this project trains on CPU (``scripts/demo/``) and
  ships in ``demo_models/`` (generator, e4e, CLIP, identity network, mappers) with their
  StyleSpace statistics and relevance in ``precomputed/demo/``. Same classes and code paths as
  the real set; it exists so that every method can be seen working and tested where the real
  weights cannot be downloaded. The same store finds the attribute oracle (``oracle.pt``) that
  ``python -m editing evaluate`` measures edits with.
- ``auto`` (default): ``ffhq`` when its files are present or downloadable, else ``demo``; the
  choice and its reason are reported through ``log``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from editing.errors import WeightsUnavailableError
from editing.weights import REGISTRY, WeightFile, WeightStore

if TYPE_CHECKING:
    from models.oracle import AttributeOracle

MODEL_SETS = ("auto", "ffhq", "demo")
ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "demo_models"
DEMO_PRECOMPUTED = ROOT / "precomputed" / "demo"

_DEMO_ENTRIES = (
    WeightFile(
        "stylegan2-demo", "stylegan2-demo.pt", "demo StyleGAN2 generator (scripts/demo/train_generator.py)"
    ),
    WeightFile("e4e-demo", "e4e_demo_encode.pt", "demo e4e encoder (scripts/demo/train_encoder.py)"),
    WeightFile(
        "ir-se-demo", "model_ir_se_demo.pth", "demo identity network (scripts/demo/train_identity.py)"
    ),
    WeightFile(
        "clip-demo",
        "clip-demo",
        "demo CLIP with its caption tokenizer (scripts/demo/train_clip.py)",
        folder_files=REGISTRY["clip-vit-b32"].folder_files,
        folder_required=REGISTRY["clip-vit-b32"].folder_required,
    ),
)
# Not part of a FaceEditor: the attribute oracle only measures edits (``python -m editing evaluate``).
# ``oracle.json`` beside it holds the training config and metrics; the weights file carries its config.
ORACLE_ENTRY = WeightFile("oracle-demo", "oracle.pt", "demo attribute oracle (scripts/demo/train_oracle.py)")
DEMO_REGISTRY: dict[str, WeightFile] = {e.name: e for e in _DEMO_ENTRIES}
DEMO_REGISTRY["dlib-landmarks68"] = REGISTRY["dlib-landmarks68"]
DEMO_REGISTRY[ORACLE_ENTRY.name] = ORACLE_ENTRY


def demo_store(folder: Path | None = None) -> WeightStore:
    """A store over the shipped demo models (never downloads)."""
    return WeightStore(
        local_dir=folder or DEMO_DIR, offline=True, progress=False, registry=dict(DEMO_REGISTRY)
    )


def demo_oracle(folder: Path | None = None) -> AttributeOracle:
    """The demo attribute oracle (``oracle.pt``), found through the demo store like the other files.

    Raises:
        WeightsUnavailableError: the file is missing; WeightsCorruptError: it is not an oracle file.
    """
    from editing.demo.oracle import load_oracle

    return load_oracle(demo_store(folder).fetch(ORACLE_ENTRY.name))


def demo_mappers(folder: Path | None = None) -> dict[str, Path]:
    """The demo mappers by name (``demo_models/mappers/<name>.pt``; ``train-mapper``'s ``*.state.pt``
    training states are not mappers)."""
    d = (folder or DEMO_DIR) / "mappers"
    if not d.is_dir():
        return {}
    return {p.stem: p for p in sorted(d.glob("*.pt")) if not p.name.endswith(".state.pt")}


def describe_model_set(name: str, size: int) -> str:
    """What a user is looking at: the model set and its generator's resolution (plain text, no Markdown).

    Args:
        name: the editor's model set (``FaceEditor.name``): "ffhq", "demo" or another name.
        size: the generator's output resolution in px (``FaceEditor.size``).
    Returns:
        One sentence; for the demo set a second one saying how to get the FFHQ weights.
    """
    res = f"{size} × {size} px"
    if name == "demo":
        return (
            f"demo model set, {res}: the offline demo world of cartoon faces, not real photos. "
            "For real faces get the FFHQ weights: start with network access and --models ffhq "
            "(downloaded from the Hugging Face Hub) or with --weights DIR holding the official files."
        )
    if name == "ffhq":
        return f"ffhq model set, {res}: StyleGAN2 FFHQ generator, e4e encoder, IR-SE50 identity, CLIP."
    return f"{name} model set, {res}."


def load_editor(
    models: str = "auto",
    *,
    weights: str | Path | None = None,
    offline: bool | None = None,
    components: Sequence[str] = ("generator", "encoder", "aligner"),
    device: str = "auto",
    precision: str = "auto",
    s_stats: str | Path | None = None,
    mappers: dict | None = None,
    log: Callable[[str], None] = print,
    demo_dir: Path | None = None,
    demo_precomputed: Path | None = None,
):
    """Build a :class:`~editing.editor.FaceEditor` on the chosen model set.

    Args:
        models: "auto", "ffhq" or "demo".
        weights: folder with the official FFHQ files (``--weights``); with ``models="demo"`` the demo
            folder (files named as in ``demo_models/``).
        offline: never download (None follows ``HF_HUB_OFFLINE``).
        components: what to load (see ``FaceEditor.from_weights``).
        s_stats: a precompute folder for global directions (default for the demo set:
            ``precomputed/demo``).
        mappers: extra local mappers by name.
        log: receives one line saying which set runs and, for ``auto``, why.
        demo_dir, demo_precomputed: where the demo set lives (tests point these elsewhere).
    Raises:
        ValueError: unknown ``models``.
        WeightsUnavailableError: the chosen set (for ``auto``: both sets) is missing files.
    """
    from editing.editor import FaceEditor

    if models not in MODEL_SETS:
        raise ValueError(f"models must be one of {MODEL_SETS}, got {models!r}")
    if models in ("auto", "ffhq"):
        try:
            store = WeightStore(local_dir=weights, offline=offline)
            editor = FaceEditor.from_weights(
                store,
                components=components,
                device=device,
                precision=precision,
                s_stats=s_stats,
                mappers=mappers,
                name="ffhq",
            )
            log(f"models: ffhq (StyleGAN2 FFHQ generator at {editor.size} px, e4e, IR-SE50, CLIP)")
            return editor
        except WeightsUnavailableError as exc:
            if models == "ffhq":
                raise
            ffhq_error = exc
    if models == "demo":  # --weights / --s-stats name the demo set's folders then
        demo_dir = demo_dir or (Path(weights) if weights is not None else None)
        demo_precomputed = demo_precomputed or (Path(s_stats) if s_stats is not None else None)
    demo_dir = demo_dir or DEMO_DIR
    demo_pre = demo_precomputed or DEMO_PRECOMPUTED
    try:
        if not demo_dir.is_dir():
            names = ", ".join(e.local_name for e in _DEMO_ENTRIES)
            raise WeightsUnavailableError(
                f"Missing model files: {names} (the demo folder {demo_dir} does not exist). "
                "Recreate them with the scripts in scripts/demo/.",
                missing=_DEMO_ENTRIES,
            )
        editor = FaceEditor.from_weights(
            demo_store(demo_dir),
            components=components,
            device=device,
            precision=precision,
            generator_entry="stylegan2-demo",
            encoder_entry="e4e-demo",
            identity_entry="ir-se-demo",
            clip_entry="clip-demo",
            fs3_entry=None,
            s_stats=demo_pre if "global" in components else None,
            mappers={**demo_mappers(demo_dir), **(mappers or {})},
            name="demo",
        )
    except WeightsUnavailableError as demo_error:
        if models == "demo":
            raise
        # neither set: name what the real set needs first, then say the demo set is incomplete too
        first, _, rest = str(ffhq_error).partition("\n")
        raise WeightsUnavailableError(
            f"{first} (the offline demo model set in {demo_dir} is incomplete too)"
            + (f"\n{rest}" if rest else "")
            + f"\n{demo_error}",
            missing=tuple(ffhq_error.missing) + tuple(demo_error.missing),
        ) from demo_error
    why = f" ({len(ffhq_error.missing)} FFHQ file(s) unavailable)" if models == "auto" else ""
    log(f"models: demo (the offline cartoon-face model set in {demo_dir.name}/, {editor.size} px){why}")
    return editor
