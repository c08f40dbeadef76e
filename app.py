"""Gradio app for text-driven face editing: StyleCLIP's three methods over StyleGAN2 + e4e.

Paper: Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery" (ICCV 2021):
latent optimisation (section 4), latent mappers (section 5) and global directions (section 6);
photos are inverted with e4e (Tov et al., "Designing an Encoder for StyleGAN Image Manipulation",
SIGGRAPH 2021). The UI follows the StyleCLIP global-direction GUI (orpatashnik/StyleCLIP
``global_torch/``: neutral/target text, α and β sliders) and its optimisation / mapper notebooks.

This file is UI only: every computation is a :class:`~editing.editor.FaceEditor` call. Per-user data
(the inverted face, the pending edit, the undo history) lives in a ``gr.State`` holding a frozen
:class:`Session`; the editor is shared by all users and receives settings as plain arguments.
Domain errors (``FaceEditingError``) and bad values (``ValueError``) become ``gr.Error`` here and
nowhere else. Run ``python app.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the app imports gradio and torch lazily so that `--help` is instant
    from PIL import Image

    from editing.align import AlignedFace
    from editing.editor import FaceEditor
    from editing.edits import EditableLatent, EditResult

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
APP_COMPONENTS = ("generator", "encoder", "aligner", "identity", "clip", "global")
PREVIEW_SIZE = 256  # px of the slider preview (the render stops early, see FaceEditor.render)
MAX_HISTORY = 10  # undo steps kept per session
QUEUE_SIZE = 32  # requests waiting in the queue before new ones are refused
RENDER_CONCURRENCY = 2  # inversions / renders running at once (they share the "render" group)
MAX_UPLOAD = "25mb"  # gradio refuses larger uploads; load_image also caps the pixel count
SWEEP_FRAMES = 9  # frames from -α to α in the α-sweep GIF
FILE_TTL_S = 3600  # downloads older than this are deleted when new ones are written
MAX_SEED = 2**31 - 1

# (neutral, target, α, β): prompt pairs from the StyleCLIP global-direction paper / GUI
PRESETS: tuple[tuple[str, str, float, float], ...] = (
    ("face", "face with glasses", 4.0, 0.15),
    ("face", "smiling face", 4.0, 0.15),
    ("face", "face with curly hair", 4.0, 0.14),
    ("face with hair", "face with blond hair", 4.0, 0.13),
    ("face", "face with makeup", 4.0, 0.12),
    ("face", "angry face", 4.0, 0.12),
    ("face", "old face", 4.0, 0.15),
    ("face", "face with beard", 4.0, 0.14),
)
# Optimisation tab defaults (prompt, steps, lr, λ_L2, λ_ID, augmented CLIP views, latent jitter): the
# StyleCLIP notebook's settings; the demo world takes those `python -m editing evaluate` uses (demo_settings)
OPTIMISATION_DEFAULTS: tuple[str, int, float, float, float, int, float] = (
    "a smiling face",
    40,
    0.1,
    0.008,
    0.005,
    0,
    0.0,
)
# W+ levels the Optimisation tab lets move (models.latent_mapper.LEVELS, kept here so that
# importing the app needs no torch): coarse rows 0-3, medium 4-7, fine the rest
OPTIMISATION_LEVELS = ("coarse", "medium", "fine")
# Optimisation tab presets (prompt, lr, λ_L2, augmented views, W+ levels) off the demo set: prompts of
# the StyleCLIP paper with the notebook's settings (the demo world takes each evaluated prompt's own)
OPTIMISATION_PRESETS: tuple[tuple[str, float, float, int, tuple[str, ...]], ...] = tuple(
    (prompt, 0.1, 0.008, 0, OPTIMISATION_LEVELS)
    for prompt in ("a smiling face", "a person with purple hair", "a face with blond hair")
)
DEMO_OPTIMISATION_PROMPT = "a face with a beard"  # the prompt the demo evaluation's optimisation edits best
AUGMENT_SLIDER_MAX = 8
JITTER_SLIDER_MAX = 1.0  # latent jitter, in standard deviations of each W dimension
# β slider: the StyleCLIP GUI's range; the demo world's edits need up to 0.7 (beard, EvalConfig)
BETA_SLIDER, DEMO_BETA_SLIDER = (0.08, 0.3), (0.08, 0.8)
MAPPER_STRENGTH = 0.1  # Mapper tab strength: upstream's (the demo world takes the evaluation's)
MODES = (("Edit this face", "edit"), ("Free generation (CLIP loss only)", "free_generation"))


# ---------------------------------------------------------------------------------- session
@dataclass(frozen=True)
class Pending:
    """An edit shown in the results, not yet applied.

    Attributes:
        latent: the edited latent.
        image: its render at full resolution.
        record: JSON-ready parameters, info, metrics and timings of the edit.
    """

    latent: EditableLatent
    image: Image.Image
    record: dict


@dataclass(frozen=True)
class Session:
    """One user's face. Stored in ``gr.State``; every handler returns a new one.

    Attributes:
        current: the latent edits start from (the inversion, then whatever was applied).
        current_image: ``current`` rendered at full resolution.
        photo: the uploaded photo (RGB, upright), or None for a generated face.
        faces: every face found in ``photo``, largest first.
        face_index: which of ``faces`` was inverted.
        history: (latent, image) pairs to undo to, oldest first, at most ``MAX_HISTORY``.
        pending: the last edit, until applied or replaced.
        source: how the face was obtained, e.g. "photo" or "seed 3 (ψ 0.7)".
    """

    current: EditableLatent
    current_image: Image.Image
    photo: Image.Image | None = None
    faces: tuple[AlignedFace, ...] = ()
    face_index: int = 0
    history: tuple[tuple[EditableLatent, Image.Image], ...] = ()
    pending: Pending | None = None
    source: str = ""

    @property
    def face(self) -> AlignedFace | None:
        return self.faces[self.face_index] if self.faces else None


# ---------------------------------------------------------------------------------- errors
def user_errors(fn: Callable) -> Callable:
    """Turn the project's errors into ``gr.Error`` (shown to the user; the app keeps running).

    Works for plain and generator handlers (gradio inspects the wrapper: it keeps ``fn``'s
    signature, so ``gr.Progress`` defaults are still injected).
    """
    import gradio as gr

    from editing.errors import FaceEditingError

    caught = (FaceEditingError, ValueError, FileNotFoundError)
    # print_exception=False: a user's mistake is answered in the page, not as a traceback in the log

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except caught as exc:
                raise gr.Error(_message(exc), print_exception=False) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except caught as exc:
            raise gr.Error(_message(exc), print_exception=False) from exc

    return wrapper


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[0].upper() + text[1:]


def need_editor(editor: FaceEditor | None, *parts: str) -> FaceEditor:
    """The editor, or a ValueError saying which model is missing (``parts``: attribute names)."""
    if editor is None:
        raise ValueError("No models are loaded; see the message at the top of the page for what is missing.")
    names = {
        "encoder": "the e4e encoder",
        "aligner": "the face aligner",
        "clip": "CLIP",
        "global_data": "the global-direction data (fs3 and S statistics)",
        "identity": "the identity network",
    }
    for part in parts:
        if getattr(editor, part) is None:
            raise ValueError(f"This app was started without {names[part]}, so this is not available.")
    return editor


def whole_number(x: object, name: str, lo: int, hi: int) -> int:
    """``x`` as an int; ValueError naming ``name`` unless it is a whole number in [lo, hi].

    The number inputs pass floats through unrounded (no ``precision=0``: gradio's rounding fails
    on NaN with an empty error), so 2.5 or NaN sent through the API get this message instead.
    """
    if (
        isinstance(x, bool)
        or not isinstance(x, int | float)
        or not math.isfinite(x)
        or x != int(x)
        or not lo <= x <= hi
    ):
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {x!r}")
    return int(x)


def on_demo_set(editor: FaceEditor | None) -> bool:
    """Whether the app runs on the offline demo model set (its own presets and slider ranges)."""
    return editor is not None and editor.name == "demo"


@functools.cache
def demo_settings():
    """The demo evaluation's :class:`editing.evaluate.EvalConfig`, whose prompts and settings the demo
    world's tabs start with (imported on first use: only a demo editor, which has loaded torch, asks)."""
    from editing.evaluate import EvalConfig

    return EvalConfig()


def global_presets(editor: FaceEditor | None) -> tuple[tuple[str, str, float, float], ...]:
    """(neutral, target, α, β) presets of the Global tab: on the demo set the prompts the evaluation
    checks and the generator draws (not smile), with each one's α / β; the StyleCLIP paper's prompts
    otherwise. The first one fills the inputs at start."""
    if not on_demo_set(editor):
        return PRESETS
    cfg = demo_settings()
    return tuple((cfg.neutral, p.target, *cfg.global_setting(p)) for p in cfg.readable_prompts)


def optimisation_defaults(editor: FaceEditor | None) -> tuple[str, int, float, float, float, int, float]:
    """(prompt, steps, lr, λ_L2, λ_ID, augmented views, latent jitter) of the Optimisation tab at start
    (demo set or not)."""
    if not on_demo_set(editor):
        return OPTIMISATION_DEFAULTS
    o = demo_settings().optimization
    return (DEMO_OPTIMISATION_PROMPT, o.steps, o.lr, o.l2_lambda, o.id_lambda, o.augment, o.jitter)


def optimisation_presets(
    editor: FaceEditor | None,
) -> tuple[tuple[str, float, float, int, tuple[str, ...]], ...]:
    """(prompt, lr, λ_L2, augmented views, W+ levels) presets of the Optimisation tab: on the demo set
    the prompts the evaluation checks and the generator draws, each with its own settings (hair colours
    move only the medium and fine rows); the StyleCLIP paper's prompts otherwise."""
    if not on_demo_set(editor):
        return OPTIMISATION_PRESETS
    cfg = demo_settings()
    own = ((p.target, cfg.optimization_settings(p)) for p in cfg.readable_prompts)
    return tuple((t, o.lr, o.l2_lambda, o.augment, o.levels) for t, o in own)


def beta_slider(editor: FaceEditor | None) -> tuple[float, float]:
    """(min, max) of the Global tab's β slider (demo set or not)."""
    return DEMO_BETA_SLIDER if on_demo_set(editor) else BETA_SLIDER


def mapper_strength_default(editor: FaceEditor | None, name: str | None = None) -> float:
    """The Mapper tab's strength for mapper ``name``: upstream's, or on the demo set the evaluation's
    (the own strength of the evaluated prompt that uses this mapper, where it has one)."""
    if not on_demo_set(editor):
        return MAPPER_STRENGTH
    cfg = demo_settings()
    spec = next((p for p in cfg.prompts if name is not None and name in p.mappers), None)
    return cfg.strength if spec is None else cfg.mapper_strength(spec)


def need_session(session: Session | None) -> Session:
    if session is None:
        raise ValueError("Upload a photo, pick an example or generate a random face first.")
    return session


# ---------------------------------------------------------------------------------- input
def invert_photo(editor: FaceEditor | None, path: str | None, face_index: int = 0) -> Session:
    """Photo file → aligned faces → e4e inversion of face ``face_index``.

    Raises:
        InvalidImageError, ImageTooLargeError, NoFaceFoundError: with a sentence for the user.
        ValueError: no photo, or no face when the detector found none.
    """
    from editing.align import load_image
    from editing.errors import NoFaceFoundError

    editor = need_editor(editor, "encoder", "aligner")
    if not path:
        raise ValueError("Upload a photo first.")
    photo = load_image(path)
    faces = tuple(editor.align(photo, output_size=min(editor.size, 1024)))
    if not faces:
        raise NoFaceFoundError(
            "No face was found in this photo. Try a photo where one face is clearly visible, "
            "frontal, well lit and at least about 100 pixels wide, or generate a random face."
        )
    return invert_face(editor, photo, faces, face_index)


def invert_face(
    editor: FaceEditor, photo: Image.Image, faces: Sequence[AlignedFace], face_index: int = 0
) -> Session:
    """A new session (no history, no edit) on the e4e inversion of ``faces[face_index]``."""
    if isinstance(face_index, bool) or not isinstance(face_index, int) or not 0 <= face_index < len(faces):
        raise ValueError(f"face {face_index!r} does not exist: {len(faces)} face(s) were found")
    result = editor.invert(faces[face_index].image, align=False)
    return Session(
        current=editor.latent(result.w_plus),
        current_image=result.reconstruction,
        photo=photo,
        faces=tuple(faces),
        face_index=face_index,
        source="photo",
    )


def reconstruction_report(editor: FaceEditor, session: Session, seconds: float) -> str:
    """Markdown: identity similarity of the reconstruction to the aligned photo, and the time."""
    from editing.synthesis import pil_to_tensor

    face = session.face
    if face is None:
        return f"Generated face: {session.source}."
    lines = [f"Inverted face {session.face_index + 1} of {len(session.faces)} in {seconds:.1f} s."]
    if editor.identity is not None:
        m = editor.measure(
            pil_to_tensor(face.image, editor.size), pil_to_tensor(session.current_image), "face"
        )
        lines.append(
            f"Identity similarity of the reconstruction to the photo: **{m.identity_similarity:.3f}** "
            "(ArcFace cosine; 1 = same identity)."
        )
    return " ".join(lines)


def random_session(editor: FaceEditor | None, seed: float, truncation: float) -> Session:
    """A face generated from ``seed`` with truncation ψ."""
    from editing.edits import check_range

    editor = need_editor(editor)
    seed_int = whole_number(seed, "seed", 0, MAX_SEED)
    psi = check_range(truncation, "truncation", 0.0, 1.0)
    latent = editor.latent(editor.latent_from_seed(seed_int, psi))
    return Session(latent, editor.render_image(latent.w_plus), source=f"seed {seed_int} (ψ {psi:g})")


def face_choices(session: Session) -> list[tuple[str, int]]:
    return [(f"Face {i + 1} ({f.box[2] - f.box[0]} px wide)", i) for i, f in enumerate(session.faces)]


# ---------------------------------------------------------------------------------- edits
def edit_record(method: str, settings: Any, result: EditResult, seconds: float) -> dict:
    """JSON-ready description of an edit (what the parameters download holds)."""
    import dataclasses

    params = {
        k: v
        for k, v in dataclasses.asdict(settings).items()
        if isinstance(v, (int, float, str, bool, type(None)))
    }
    return {
        "method": method,
        "parameters": params,
        "info": result.info,
        "metrics": result.metrics.as_dict() if result.metrics is not None else None,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "seconds": round(seconds, 3),
    }


def metrics_view(record: dict) -> dict:
    """The metrics panel: CLIP similarity, identity similarity, what changed, time."""
    m = record.get("metrics") or {}
    rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
    return {"method": record["method"], **rounded, "seconds": record["seconds"]}


def with_pending(session: Session, result: EditResult, record: dict) -> Session:
    from editing.synthesis import tensor_to_pil

    return replace(session, pending=Pending(result.latent, tensor_to_pil(result.image), record))


def apply_pending(session: Session | None) -> Session:
    """The pending edit becomes the current face; the previous one goes onto the undo history."""
    session = need_session(session)
    if session.pending is None:
        raise ValueError("There is no edit to apply yet: make an edit first.")
    history = (*session.history, (session.current, session.current_image))[-MAX_HISTORY:]
    return replace(
        session,
        current=session.pending.latent,
        current_image=session.pending.image,
        history=history,
        pending=None,
    )


def undo(session: Session | None) -> Session:
    """Back to the face before the last applied edit."""
    session = need_session(session)
    if not session.history:
        raise ValueError("Nothing to undo.")
    (latent, image), history = session.history[-1], session.history[:-1]
    return replace(session, current=latent, current_image=image, history=history, pending=None)


def history_note(session: Session | None) -> str:
    if session is None:
        return "No face yet."
    n = len(session.history)
    return f"Current face: {session.source}; {n} applied edit{'s' * (n != 1)} can be undone."


class Downloads:
    """Writes result files into a private temporary folder (gradio serves them from its cache).

    Args:
        root: the folder; None = a new temporary folder.
        ttl_s: files older than this are deleted when new ones are written.
    """

    def __init__(self, root: Path | None = None, ttl_s: float = FILE_TTL_S):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="face-edit-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s

    def folder(self) -> Path:
        self._prune()
        return Path(tempfile.mkdtemp(dir=self.root))

    def _prune(self) -> None:
        import shutil

        cutoff = time.time() - self.ttl_s
        for d in self.root.iterdir():
            try:
                if d.stat().st_mtime < cutoff:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass

    def write(self, session: Session, pasted: Image.Image | None) -> list[str]:
        """PNG, W+ ``.npy``, latent ``.npz`` (W+ and S offset), parameters JSON, pasted-back PNG."""
        from editing.edits import save_latent_file

        pending = session.pending
        assert pending is not None and pending.image is not None
        d = self.folder()
        method = pending.record["method"]
        paths = [d / f"{method}_edit.png", d / f"{method}_w_plus.npy", d / f"{method}_latent.npz"]
        pending.image.save(paths[0])
        save_latent_file(paths[1], pending.latent)
        save_latent_file(paths[2], pending.latent)
        paths.append(d / f"{method}_parameters.json")
        paths[-1].write_text(json.dumps({**pending.record, "face": session.source}, indent=1))
        if pasted is not None:
            paths.append(d / f"{method}_in_photo.png")
            pasted.save(paths[-1])
        return [str(p) for p in paths]

    def gif(self, frames: Sequence[Image.Image], duration_ms: int = 120) -> str:
        d = self.folder()
        path = d / "alpha_sweep.gif"
        loop = [*frames, *frames[-2:0:-1]]  # ping-pong
        loop[0].save(path, save_all=True, append_images=loop[1:], duration=duration_ms, loop=0)
        return str(path)


def paste_into_photo(session: Session) -> Image.Image | None:
    """The pending edit warped back into the uploaded photo (None for generated faces)."""
    from editing.align import paste_back

    face, pending = session.face, session.pending
    if session.photo is None or face is None or pending is None or pending.image is None:
        return None
    return paste_back(session.photo, pending.image, face)


def global_settings(target: str, neutral: str, alpha: float, beta: float | None):
    from editing.edits import GlobalSettings

    return GlobalSettings(target=target, neutral=neutral, alpha=alpha, beta=beta)


def channels_moved(editor: FaceEditor | None, target: str, neutral: str, beta: float) -> int:
    """S channels a global edit moves at threshold β (the live read-out)."""
    s = global_settings(target, neutral, 1.0, beta)
    return need_editor(editor, "clip", "global_data").channels_moved(s.target, s.neutral, s.beta)


def auto_beta(editor: FaceEditor | None, target: str, neutral: str) -> tuple[float, int]:
    s = global_settings(target, neutral, 1.0, None)
    beta, n = need_editor(editor, "clip", "global_data").auto_beta(s.target, s.neutral)
    return round(float(beta), 4), int(n)


def global_preview(editor: FaceEditor | None, session: Session | None, settings) -> Image.Image:
    """A cheap render of the global edit at ``PREVIEW_SIZE`` (no metrics) for slider drags."""
    from editing.synthesis import tensor_to_pil

    editor = need_editor(editor, "clip", "global_data")
    size = min(PREVIEW_SIZE, editor.size)
    result = editor.edit_global(need_session(session).current, settings, size=size, metrics=False)
    return tensor_to_pil(result.image)


def edit_global(editor: FaceEditor | None, session: Session | None, settings) -> Session:
    editor = need_editor(editor, "clip", "global_data")
    session = need_session(session)
    t0 = time.perf_counter()
    result = editor.edit_global(session.current, settings)
    return with_pending(session, result, edit_record("global", settings, result, time.perf_counter() - t0))


def alpha_sweep(editor: FaceEditor | None, session: Session | None, settings) -> list[Image.Image]:
    """Preview frames with α from −|α| to |α| (|α| at least 1)."""
    editor = need_editor(editor, "clip", "global_data")
    session = need_session(session)
    top = max(abs(settings.alpha), 1.0)
    alphas = [-top + 2 * top * i / (SWEEP_FRAMES - 1) for i in range(SWEEP_FRAMES)]
    return [global_preview(editor, session, replace(settings, alpha=a)) for a in alphas]


def mapper_choices(sources: dict[str, str]) -> list[tuple[str, str]]:
    """Dropdown (label, name) pairs for ``FaceEditor.mapper_sources()``: downloadable ones marked."""
    return [(name if src == "local" else f"{name} (download)", name) for name, src in sources.items()]


def no_mapper_message(editor: FaceEditor | None) -> str:
    """Why the Mapper tab has nothing to offer, and what to do about it."""
    where = "demo_models/mappers/" if on_demo_set(editor) else "DIR/mappers/"
    return (
        "No latent mapper is available for these models: none is on this machine, and none can be "
        "downloaded now (offline, the Hugging Face Hub cannot be reached, or this model set has no "
        f"official mappers). Put mapper files (NAME.pt) into {where} (DIR: the --weights folder) and "
        "restart the app, or train one with python -m editing train-mapper."
    )


def need_mapper(editor: FaceEditor, name: str | None) -> str:
    """``name``, or a ValueError saying that no mapper exists or none was picked."""
    if not name:
        raise ValueError(no_mapper_message(editor) if not editor.mapper_names() else "Pick a mapper first.")
    return name


def mapper_info(editor: FaceEditor | None, name: str | None) -> dict:
    editor = need_editor(editor)
    name = need_mapper(editor, name)
    return {"mapper": name, **editor.mapper_info(name)}


def edit_mapper(
    editor: FaceEditor | None, session: Session | None, name: str | None, strength: float
) -> Session:
    from editing.edits import MapperSettings

    editor = need_editor(editor)
    settings = MapperSettings(mapper=need_mapper(editor, name), strength=strength)
    session = need_session(session)
    t0 = time.perf_counter()
    result = editor.edit_mapper(session.current, settings, metrics=editor.clip is not None)
    return with_pending(session, result, edit_record("mapper", settings, result, time.perf_counter() - t0))


def optimization_settings(
    steps: float,
    l2_lambda: float,
    id_lambda: float,
    lr: float,
    mode: str,
    augment: float = 0,
    levels: list[str] | tuple[str, ...] | None = OPTIMISATION_LEVELS,
    jitter: float = 0.0,
):
    from editing.optimization import MAX_STEPS, OptimizationSettings

    n = whole_number(steps, "steps", 1, MAX_STEPS)
    levels = OPTIMISATION_LEVELS if levels is None else levels
    if not levels:
        raise ValueError("Tick at least one W+ level to optimise (coarse, medium or fine).")
    return OptimizationSettings(
        levels=tuple(levels),
        steps=n,
        lr=lr,
        l2_lambda=l2_lambda,
        id_lambda=id_lambda,
        mode=mode,
        preview_every=max(1, n // 10),
        augment=whole_number(augment, "augmented views", 0, AUGMENT_SLIDER_MAX),
        jitter=jitter,
    )


def run_optimization(
    editor: FaceEditor | None,
    session: Session | None,
    target: str,
    settings,
    seed: float,
) -> Iterator[tuple[Any, ...]]:
    """Latent optimisation in a worker thread; yields ``("step", StepInfo)`` as steps finish and
    ``("done", Session)`` at the end. Closing the generator (gradio's cancel) makes the worker's
    ``on_step`` return False, so the optimisation stops after the step in progress.
    """
    from editing.edits import check_prompt

    editor = need_editor(editor, "clip")
    target = check_prompt(target, "prompt")
    seed_int = whole_number(seed, "seed", 0, MAX_SEED)
    if settings.mode == "edit":
        session = need_session(session)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def on_step(info) -> bool:
        events.put(("step", info))
        return not stop.is_set()

    def work() -> None:
        t0 = time.perf_counter()
        try:
            result = editor.edit_optimize(
                None if session is None else session.current,
                target,
                settings,
                on_step=on_step,
                seed=seed_int,
                metrics=True,
            )
            events.put(("result", (result, time.perf_counter() - t0)))
        except BaseException as exc:  # handed to the generator, which re-raises it in the handler
            events.put(("error", exc))

    threading.Thread(target=work, name="optimize", daemon=True).start()
    try:
        while True:
            kind, payload = events.get()
            if kind == "step":
                yield ("step", payload)
            elif kind == "error":
                raise payload
            else:
                result, seconds = payload
                record = edit_record("optimize", settings, result, seconds)
                record["parameters"]["prompt"] = target
                if settings.mode == "free_generation":
                    record["parameters"]["seed"] = seed_int
                base = session
                if base is None:  # free generation without a face: the result starts a session
                    from editing.synthesis import tensor_to_pil

                    image = tensor_to_pil(result.image)
                    base = Session(result.latent, image, source=f"free generation, seed {seed_int}")
                yield ("done", with_pending(base, result, record))
                return
    finally:
        stop.set()


# ---------------------------------------------------------------------------------- UI
def _banner(editor: FaceEditor | None, model_note: str) -> str:
    if editor is None:
        first, _, rest = (model_note or "No model files were found.").partition("\n")
        details = f"\n\n```\n{rest.strip()}\n```" if rest.strip() else ""
        return (
            f"### ⚠️ No models loaded\n{first}{details}\n\n"
            "Put the official files into a folder and start the app with `python app.py --weights DIR`, "
            "allow downloads (do not pass `--offline`, unset `HF_HUB_OFFLINE`), or use the offline demo "
            "model set with `--models demo` once `demo_models/` holds it. Everything below stays "
            "disabled until then."
        )
    from editing.model_sets import describe_model_set

    about = describe_model_set(editor.name, editor.size)
    lines = [f"**Models:** {about} Running on {editor.device.type}, {editor.precision}."]
    if model_note:
        lines.append(f"<small>{model_note}</small>")
    return "\n\n".join(lines)


def build_demo(editor: FaceEditor | None, *, model_note: str = "", downloads: Downloads | None = None):
    """The Blocks app over ``editor`` (None: the page explains which model files are missing).

    Args:
        editor: a loaded editor (components: generator, encoder, aligner, identity, clip, global),
            shared by all sessions; None for the "no models" page.
        model_note: a line about the models (or, with no editor, the missing-weights message).
        downloads: where result files are written (default: a new temporary folder).
    Returns:
        The ``gr.Blocks``; call ``.queue(...)`` and ``.launch(...)`` on it (see :func:`main`).
    """
    import gradio as gr

    from editing.edits import ALPHA_RANGE, STRENGTH_RANGE

    files = downloads or Downloads()
    has = editor is not None
    mapper_sources = editor.mapper_sources() if has else {}
    default_mapper = next(iter(mapper_sources), None)
    presets = global_presets(editor)
    opt_prompt, opt_steps, opt_lr, opt_l2, opt_id, opt_views, opt_jitter = optimisation_defaults(editor)
    examples = sorted(str(p) for p in ASSETS.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)

    def results(session: Session) -> tuple:
        """compare, metrics, downloads, pasted — for a session with a full-resolution pending edit."""
        pasted = paste_into_photo(session)
        pending = session.pending
        return (
            (session.current_image, pending.image),
            metrics_view(pending.record),
            files.write(session, pasted),
            pasted,
        )

    def cleared(session: Session) -> tuple:
        return session, session.current_image, history_note(session), None, None, None, None

    # ------------------------------------------------------------------ handlers
    @user_errors
    def on_photo(upload, progress=gr.Progress()):
        # unprocessed upload (gradio checked that the file is its own upload): load_image reads it,
        # so a file that is not an image gets load_image's message instead of a PIL traceback
        path = upload.get("path") if isinstance(upload, dict) else upload
        if not path:
            return (gr.skip(),) * 10
        progress(0.1, desc="Aligning and inverting")
        t0 = time.perf_counter()
        s = invert_photo(editor, path)
        dropdown = gr.Dropdown(choices=face_choices(s), value=0, visible=len(s.faces) > 1)
        return (
            s.face.image,
            reconstruction_report(editor, s, time.perf_counter() - t0),
            dropdown,
            *cleared(s),
        )

    @user_errors
    def on_select_face(session, index, progress=gr.Progress()):
        progress(0.1, desc="Inverting")
        t0 = time.perf_counter()
        old = need_session(session)
        s = invert_face(need_editor(editor, "encoder"), old.photo, old.faces, index)
        return (s.face.image, reconstruction_report(editor, s, time.perf_counter() - t0), *cleared(s))

    @user_errors
    def on_random(seed, truncation):
        s = random_session(editor, seed, truncation)
        return (None, f"Generated face: {s.source}.", gr.Dropdown(choices=[], visible=False), *cleared(s))

    @user_errors
    def on_channels(target, neutral, beta):
        return channels_moved(editor, target, neutral, beta)

    @user_errors
    def on_auto_beta(target, neutral):
        return auto_beta(editor, target, neutral)

    @user_errors
    def on_global_preview(session, target, neutral, alpha, beta):
        s = need_session(session)
        before = s.current_image.resize((min(PREVIEW_SIZE, s.current_image.width),) * 2)
        return (before, global_preview(editor, session, global_settings(target, neutral, alpha, beta)))

    @user_errors
    def on_edit_global(session, target, neutral, alpha, beta, progress=gr.Progress()):
        progress(0.2, desc="Rendering")
        s = edit_global(editor, session, global_settings(target, neutral, alpha, beta))
        return (s, *results(s), s.pending.record["info"]["channels_moved"])

    @user_errors
    def on_alpha_sweep(session, target, neutral, alpha, beta, progress=gr.Progress()):
        progress(0.1, desc="Rendering frames")
        return files.gif(alpha_sweep(editor, session, global_settings(target, neutral, alpha, beta)))

    @user_errors
    def on_mapper_info(name):
        return mapper_info(editor, name)

    def on_mapper_strength(name):
        return mapper_strength_default(editor, name)

    @user_errors
    def on_edit_mapper(session, name, strength, progress=gr.Progress()):
        progress(0.2, desc="Applying the mapper")
        s = edit_mapper(editor, session, name, strength)
        return (s, *results(s))

    @user_errors
    def on_optimize(
        session,
        target,
        steps,
        l2_lambda,
        id_lambda,
        lr,
        mode,
        seed,
        augment=0,
        levels=OPTIMISATION_LEVELS,
        jitter=0.0,
        progress=gr.Progress(),
    ):
        settings = optimization_settings(steps, l2_lambda, id_lambda, lr, mode, augment, levels, jitter)
        with contextlib.closing(run_optimization(editor, session, target, settings, seed)) as events:
            yield from optimization_frames(events, progress)

    def optimization_frames(events, progress):
        """UI updates for the events of :func:`run_optimization`: a frame per step, then the result."""
        from editing.synthesis import tensor_to_pil

        for kind, payload in events:
            if kind == "step":
                progress((payload.step, payload.total), desc="Optimising")
                frame = gr.skip() if payload.preview is None else tensor_to_pil(payload.preview)
                status = f"Step {payload.step}/{payload.total}: CLIP loss {payload.losses.clip:.4f}"
                yield (gr.skip(), frame, status, gr.skip(), gr.skip(), gr.skip(), gr.skip())
            else:
                s = payload
                info = s.pending.record["info"]
                status = f"Done: {info['steps']} steps in {s.pending.record['seconds']:.1f} s."
                yield (s, s.pending.image, status, *results(s))

    @user_errors
    def on_apply(session):
        s = apply_pending(session)
        return s, s.current_image, history_note(s)

    @user_errors
    def on_undo(session):
        s = undo(session)
        return s, s.current_image, history_note(s)

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title="Text-driven face editing", delete_cache=(1800, 3600)) as demo:
        session = gr.State(None)
        gr.Markdown(
            "# Text-driven face editing\nStyleCLIP (global directions, latent mappers, latent "
            "optimisation) on StyleGAN2 with e4e inversion. Upload a photo or generate a face, then "
            "describe the change."
        )
        gr.Markdown(_banner(editor, model_note), elem_id="model-banner")

        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(
                    label="Photo",
                    sources=["upload", "clipboard", "webcam"],
                    type="filepath",
                    image_mode=None,  # load_image handles EXIF, modes and size limits itself
                    elem_id="photo",
                    interactive=has,
                )
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[photo], label="Examples")
                face_select = gr.Dropdown(label="Face", choices=[], visible=False, elem_id="face-select")
                with gr.Accordion("Random face", open=not examples):
                    seed = gr.Number(label="Seed", value=0, minimum=0, step=1, elem_id="seed")
                    truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")
                    random_btn = gr.Button("Generate", elem_id="random-face", interactive=has)
            with gr.Column(scale=1):
                aligned = gr.Image(label="Aligned crop", type="pil", format="png", elem_id="aligned")
                inversion_note = gr.Markdown(label="Inversion", elem_id="inversion-note")
            with gr.Column(scale=1):
                current = gr.Image(
                    label="Current face (edits start here)", type="pil", format="png", elem_id="current"
                )
                history = gr.Markdown(history_note(None), label="History", elem_id="history")
                with gr.Row():
                    apply_btn = gr.Button("Apply and continue", elem_id="apply", variant="primary")
                    undo_btn = gr.Button("Undo", elem_id="undo")

        with gr.Tabs():
            with gr.Tab("Global directions", id="global"):
                with gr.Row():
                    neutral = gr.Textbox(label="Neutral text", value=presets[0][0], elem_id="neutral")
                    target = gr.Textbox(label="Target text", value=presets[0][1], elem_id="target")
                with gr.Row():
                    alpha = gr.Slider(
                        *ALPHA_RANGE, value=presets[0][2], step=0.1, label="α (strength)", elem_id="alpha"
                    )
                    beta = gr.Slider(
                        *beta_slider(editor),
                        value=presets[0][3],
                        step=0.005,
                        label="β (disentanglement)",
                        elem_id="beta",
                    )
                with gr.Row():
                    channels = gr.Number(
                        label="Channels moved", precision=0, interactive=False, elem_id="channels"
                    )
                    auto_btn = gr.Button("Auto β", elem_id="auto-beta")
                    global_btn = gr.Button("Render edit", variant="primary", elem_id="global-edit")
                    sweep_btn = gr.Button("α sweep GIF", elem_id="alpha-sweep")
                gr.Examples(
                    examples=[list(p) for p in presets],
                    inputs=[neutral, target, alpha, beta],
                    label="Presets (neutral, target, α, β)",
                )
                sweep = gr.Image(label="α sweep", type="filepath", elem_id="sweep")
            with gr.Tab("Latent mapper", id="mapper"):
                if has and not mapper_sources:
                    gr.Markdown(f"⚠️ {no_mapper_message(editor)}", elem_id="mapper-note")
                elif "download" in mapper_sources.values():
                    gr.Markdown(
                        "Mappers marked *(download)* are fetched from the Hugging Face Hub the first "
                        "time they are used.",
                        elem_id="mapper-note",
                    )
                mapper = gr.Dropdown(
                    choices=mapper_choices(mapper_sources),
                    value=default_mapper,
                    label="Mapper",
                    elem_id="mapper",
                )
                strength = gr.Slider(
                    *STRENGTH_RANGE,
                    value=mapper_strength_default(editor, default_mapper),
                    step=0.01,
                    label="Strength",
                    elem_id="strength",
                )
                mapper_levels = gr.JSON(label="Levels (W+ rows each level edits)", elem_id="mapper-info")
                mapper_btn = gr.Button("Apply mapper", variant="primary", elem_id="mapper-edit")
            with gr.Tab("Optimisation", id="optimize"):
                prompt = gr.Textbox(label="Prompt", value=opt_prompt, elem_id="prompt")
                with gr.Row():
                    steps = gr.Slider(1, 300, value=opt_steps, step=1, label="Steps", elem_id="steps")
                    lr = gr.Slider(0.01, 1.0, value=opt_lr, step=0.01, label="Learning rate", elem_id="lr")
                with gr.Row():
                    l2_lambda = gr.Slider(
                        0.0, 0.1, value=opt_l2, step=0.001, label="λ L2", elem_id="l2-lambda"
                    )
                    id_lambda = gr.Slider(
                        0.0, 0.1, value=opt_id, step=0.001, label="λ ID", elem_id="id-lambda"
                    )
                with gr.Row():
                    mode = gr.Radio(choices=list(MODES), value="edit", label="Mode", elem_id="mode")
                    opt_seed = gr.Number(
                        label="Seed (free generation)", value=0, minimum=0, step=1, elem_id="opt-seed"
                    )
                    augment = gr.Slider(
                        0,
                        AUGMENT_SLIDER_MAX,
                        value=opt_views,
                        step=1,
                        label="Augmented CLIP views (0 = StyleCLIP's loss)",
                        elem_id="augment",
                    )
                    jitter = gr.Slider(
                        0.0,
                        JITTER_SLIDER_MAX,
                        value=opt_jitter,
                        step=0.05,
                        label="Latent jitter, W std (0 = StyleCLIP's loss)",
                        elem_id="jitter",
                    )
                    opt_levels = gr.CheckboxGroup(
                        choices=list(OPTIMISATION_LEVELS),
                        value=list(OPTIMISATION_LEVELS),
                        label="W+ levels that move (coarse: shape and hair style; fine: colours)",
                        elem_id="opt-levels",
                    )
                gr.Examples(
                    examples=[
                        [t, lr_, l2_, v, list(lv)] for t, lr_, l2_, v, lv in optimisation_presets(editor)
                    ],
                    inputs=[prompt, lr, l2_lambda, augment, opt_levels],
                    label="Presets (prompt, learning rate, λ L2, augmented views, W+ levels)",
                )
                with gr.Row():
                    opt_btn = gr.Button("Optimise", variant="primary", elem_id="optimize")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Row():
                    opt_preview = gr.Image(label="Progress", type="pil", format="png", elem_id="opt-preview")
                    opt_status = gr.Markdown(label="Status", elem_id="opt-status")

        gr.Markdown("## Result")
        with gr.Row():
            compare = gr.ImageSlider(label="Before / after", type="pil", format="png", elem_id="compare")
            pasted = gr.Image(label="Edit in the photo", type="pil", format="png", elem_id="pasted")
        with gr.Row():
            metrics = gr.JSON(label="Metrics", elem_id="metrics")
            downloads = gr.File(label="Downloads", file_count="multiple", elem_id="downloads")

        # ------------------------------------------------------------------ events
        reset = [session, current, history, compare, metrics, downloads, pasted]
        photo.change(
            on_photo,
            [photo],
            [aligned, inversion_note, face_select, *reset],
            api_name="invert",
            preprocess=False,
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        face_select.input(
            on_select_face,
            [session, face_select],
            [aligned, inversion_note, *reset],
            api_name="select_face",
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        random_btn.click(
            on_random,
            [seed, truncation],
            [aligned, inversion_note, face_select, *reset],
            api_name="random_face",
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        gr.on(
            [target.change, neutral.change, beta.change],
            on_channels,
            [target, neutral, beta],
            [channels],
            api_name="channels_moved",
            trigger_mode="always_last",
            concurrency_limit=4,
        )
        auto_btn.click(
            on_auto_beta, [target, neutral], [beta, channels], api_name="auto_beta", concurrency_limit=4
        )
        alpha.input(
            on_global_preview,
            [session, target, neutral, alpha, beta],
            [compare],
            api_name="global_preview",
            trigger_mode="always_last",
            show_progress="hidden",
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        gr.on(
            [global_btn.click, alpha.release],
            on_edit_global,
            [session, target, neutral, alpha, beta],
            [session, compare, metrics, downloads, pasted, channels],
            api_name="edit_global",
            trigger_mode="always_last",
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        sweep_btn.click(
            on_alpha_sweep,
            [session, target, neutral, alpha, beta],
            [sweep],
            api_name="alpha_sweep",
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        mapper.change(on_mapper_info, [mapper], [mapper_levels], api_name="mapper_info", concurrency_limit=4)
        if on_demo_set(editor):  # each demo mapper starts at the strength the evaluation uses for it
            mapper.change(
                on_mapper_strength, [mapper], [strength], api_visibility="private", concurrency_limit=4
            )
        if default_mapper is not None and mapper_sources[default_mapper] == "local":  # no download
            demo.load(
                on_mapper_info, [mapper], [mapper_levels], api_visibility="private", concurrency_limit=4
            )
        mapper_btn.click(
            on_edit_mapper,
            [session, mapper, strength],
            [session, compare, metrics, downloads, pasted],
            api_name="edit_mapper",
            concurrency_id="render",
            concurrency_limit=RENDER_CONCURRENCY,
        )
        opt_event = opt_btn.click(
            on_optimize,
            [session, prompt, steps, l2_lambda, id_lambda, lr, mode, opt_seed, augment, opt_levels, jitter],
            [session, opt_preview, opt_status, compare, metrics, downloads, pasted],
            api_name="edit_optimize",
            concurrency_id="optimize",
            concurrency_limit=1,
        )
        cancel_btn.click(None, None, None, cancels=[opt_event])
        apply_btn.click(
            on_apply, [session], [session, current, history], api_name="apply", concurrency_limit=None
        )
        undo_btn.click(
            on_undo, [session], [session, current, history], api_name="undo", concurrency_limit=None
        )
    return demo


# ---------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Text-driven face editing (StyleCLIP) in the browser.")
    p.add_argument("--weights", type=Path, default=None, help="folder holding the official model files")
    p.add_argument(
        "--models",
        default="auto",
        choices=("auto", "ffhq", "demo"),
        help="model set: auto (default: FFHQ when its files are present or downloadable, else the "
        "demo set), ffhq or demo",
    )
    p.add_argument("--offline", action="store_true", help="never download (also: HF_HUB_OFFLINE=1)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, …")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument(
        "--s-stats", type=Path, default=None, help="precompute folder with S statistics (default: cached)"
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    p.add_argument("--queue-size", type=int, default=QUEUE_SIZE, help="requests waiting before refusal")
    return p


def load_models(args: argparse.Namespace) -> tuple[FaceEditor | None, str]:
    """Load the editor once; (None, the reason) when model files are missing or corrupt."""
    from editing.errors import FaceEditingError
    from editing.model_sets import load_editor

    notes: list[str] = []
    try:
        editor = load_editor(
            args.models,
            weights=args.weights,
            offline=True if args.offline else None,
            components=APP_COMPONENTS,
            device=args.device,
            precision=args.precision,
            s_stats=args.s_stats,
            log=notes.append,
        )
    except FaceEditingError as exc:
        return None, str(exc)
    return editor, " ".join(notes)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.queue_size < 1:
        parser.error("--queue-size must be at least 1")
    try:
        editor, note = load_models(args)
    except ValueError as exc:  # a bad --weights folder, --device, …
        parser.error(str(exc))
    if editor is None:
        print(f"app: starting without models: {note.splitlines()[0]}")
    demo = build_demo(editor, model_note=note)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    main()
