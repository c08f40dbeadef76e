"""Train the demo CLIP: a small ``transformers.CLIPModel`` and a CLIP BPE tokenizer learnt on the procedural
cartoon faces of ``editing.demo.faces`` and their captions (issue 4, offline demo model set).

CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021) is
trained here with its own symmetric contrastive loss on ``(render_face(p), caption(p))`` pairs. The folder is
in exactly the transformers layout of ``openai/clip-vit-base-patch32`` (config.json, model.safetensors,
vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) and loads through
``editing.clip_text.ClipEncoder.from_folder``, so every StyleCLIP method (Patashnik et al., ICCV 2021,
orpatashnik/StyleCLIP) runs on it unchanged.

* Tokenizer: the byte-level BPE of CLIP (openai/CLIP ``clip/simple_tokenizer.py``: bytes mapped to printable
  characters, ``</w>`` ending each word, lower case, ``<|startoftext|>`` / ``<|endoftext|>``), its merges
  learnt here on captions, StyleCLIP's 79 prompt templates and the editing prompts. Words are split by the
  pre-tokenizer of ``transformers.CLIPTokenizer`` itself, so training and use agree.
* Images: the vision tower sees exactly what ``ClipEncoder.encode_image`` gives it, StyleCLIP's
  ``clip_preprocess`` (nearest x7, average pooling; no mean/std) of [-1, 1] images. With ``image_size`` 64
  this is the identity at 64 px and an exact 2x2 / 4x4 box filter at 128 / 256 px.
* Data: infinite, rendered on the fly. Half of each batch are single-attribute variants of the other half
  (glasses toggled, another hair colour, ...), hard negatives that make one-attribute text directions match
  one-attribute image changes, drawn more often for the small details (smile, beard, lipstick); for most
  of those pairs the two texts differ only in that attribute. The other texts are captions, short editing
  prompts ("face with glasses", "bald") or a neutral "face", a share of all of them wrapped in one of
  StyleCLIP's ImageNet templates as Δt does. A quarter of the pairs are blurred alike (Gaussian or 2x
  down/up), as the demo generator's output is softer than the renderer's.
* Loss: CLIP's contrastive loss plus ``direction_lambda`` x a contrastive loss over those pairs'
  directions (:func:`direction_loss`): each pair's normalised image change must pick its own normalised
  text change among the batch's, both ways (InfoNCE, temperature ``direction_temperature``). Without a
  direction term the mouth, beard and lipstick were not learnt in 1200 steps; its first form,
  1 − cos(image change, text change), was met by one shared direction for every attribute (all Δt on
  one line, demo_models/README.md), which the contrastive form rules out. ``neutral_pair_share`` of the
  pairs use Δt's own texts, a neutral "face" / "a face" against "face with glasses", "smiling face", ...

``python -m scripts.demo.train_clip --out demo_models/clip-demo [--steps N] [--seed S] [--threads T]``;
deterministic for a given seed, step count and thread count. Writes ``<out>/training.json`` (config,
timings, metrics from :func:`evaluate`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from editing.clip_text import ClipEncoder, clip_preprocess
from editing.demo.captions import OLD_MIN, YOUNG_MAX, AttributePhrase, attribute_phrases, caption
from editing.demo.faces import HAIR_COLOURS, HAIR_STYLES, FaceParams, render_face, sample_params
from editing.global_directions import IMAGENET_TEMPLATES, delta_t, prompt_embedding

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
NEUTRAL_TEXTS = ("face", "a face", "a photo of a face", "a person", "a cartoon face", "portrait")
# Prompts that read as adjectives ("a bald face"); every other prompt is a noun phrase ("face with glasses").
ADJECTIVE_PROMPTS = frozenset(
    "smiling happy grinning frowning sad unhappy bearded clean-shaven beardless old elderly young youthful "
    "bald".split()
)
# Typical user prompts beyond attribute_phrases, for the tokenizer.
EXTRA_PROMPTS = (
    "face",
    "a face",
    "face with glasses",
    "a smiling face",
    "a face with a smile",
    "purple hair",
    "bald",
    "beard",
    "blond hair",
    "a person with purple hair",
    "face with purple hair",
    "face with blond hair",
    "face with a beard",
    "face with lipstick",
    "face with grey hair",
    "bald face",
    "smiling face",
    "old face",
    "young face",
    "frowning face",
    "face with curly hair",
    "face with long hair",
    "face with a mohawk",
)


@dataclass(frozen=True)
class ClipTrainConfig:
    """Tokenizer, architecture and optimisation of the demo CLIP."""

    image_size: int = 64  # vision input in pixels; size * 7 % image_size == 0 for 64/128/256 px faces
    patch_size: int = 8  # ViT patch in pixels (8 x 8 patches: mouth, lips and beard span several)
    vision_width: int = 128  # ViT hidden size
    vision_layers: int = 4  # ViT blocks
    text_width: int = 128  # text transformer hidden size
    text_layers: int = 4  # text transformer blocks
    heads: int = 4  # attention heads in both towers
    projection_dim: int = 128  # joint embedding size
    context_length: int = 48  # text tokens incl. BOS/EOS (the longest templated captions fit)
    vocab_size: int = 1400  # BPE vocabulary incl. the 512 byte tokens and the two specials
    tokenizer_captions: int = 40_000  # captions the BPE merges are learnt from
    batch: int = 128  # image-text pairs per step (half of them single-attribute variants)
    steps: int = 500  # optimisation steps (demo_models/README.md)
    lr: float = 1.5e-3  # AdamW peak learning rate
    warmup: int = 50  # linear warm-up steps, then cosine decay to 0
    weight_decay: float = 0.05  # AdamW decoupled weight decay (matrices only)
    pair_share: float = 0.8  # face/variant pairs whose two texts differ only in the changed attribute
    # vary_one's odds per attribute of VARIED (smile, glasses, hair colour, hair style, beard, lipstick, age)
    varied_prior: tuple[float, ...] = (0.22, 0.10, 0.08, 0.08, 0.20, 0.20, 0.12)
    direction_lambda: float = 0.5  # weight of the contrastive pair direction loss (see direction_loss)
    direction_temperature: float = 0.1  # temperature of that loss's InfoNCE over the batch's directions
    neutral_pair_share: float = 0.3  # pairs whose texts are a neutral "face" vs the attribute prompt
    phrase_share: float = 0.3  # other texts that are short editing prompts instead of captions
    neutral_share: float = 0.02  # texts that are a neutral "face" (keeps t("face") near the image mean)
    template_share: float = 0.35  # texts wrapped in one of the 79 ImageNet templates
    shared_hair_share: float = 0.5  # batches whose faces (before variation) all share one hair colour/style
    blur_share: float = 0.25  # images blurred (Gaussian or 2x down/up), like a small generator's output
    blur_sigma: tuple[float, float] = (0.4, 1.2)  # range of the Gaussian blur's sigma in pixels
    seed: int = 0  # seeds the initialisation, the tokenizer corpus and every batch


# --------------------------------------------------------------------------------------------------
# Tokenizer


def _byte_unicode() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE in CLIP's vocabulary order (``bytes_to_unicode``:
    the printable bytes as themselves first, then the others mapped to 256, 257, ...)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def tokenizer_corpus(n_captions: int, seed: int) -> list[str]:
    """Texts the BPE is learnt from: captions, editing prompts and templates around prompts.

    Args:
        n_captions: number of random captions.
        seed: numpy seed of faces and captions.
    Returns:
        A list of strings (order fixed by ``seed``).
    """
    rng = np.random.default_rng(seed)
    texts = [caption(sample_params(rng), rng) for _ in range(n_captions)]
    prompts = list(EXTRA_PROMPTS) + [q for ph in attribute_phrases().values() for q in ph.prompts]
    texts += [t.format(q) for t in IMAGENET_TEMPLATES for q in prompts]
    return texts


def _pre_tokenizer():
    """The normaliser and word splitter of ``transformers.CLIPTokenizer`` (byte-level characters out)."""
    from transformers import CLIPTokenizer

    chars = _byte_unicode()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + [BOS, EOS])}
    backend = CLIPTokenizer(vocab=vocab, merges=[]).backend_tokenizer
    return backend.normalizer, backend.pre_tokenizer


def train_bpe(texts: Sequence[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learns CLIP-format BPE merges from texts.

    Args:
        texts: training texts.
        vocab_size: total vocabulary: 256 bytes + 256 word-final bytes + merges + the two specials.
    Returns:
        ``vocab`` (token -> id, CLIP's order: bytes, word-final bytes, merged tokens, BOS, EOS) and the
        ``merges`` in rank order. Ties between equally frequent pairs go to the lexically smallest.
    """
    if vocab_size < 514:
        raise ValueError(f"vocab_size must be >= 514 (bytes and specials), got {vocab_size}")
    normalizer, pre_tokenizer = _pre_tokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [[*w[:-1], w[-1] + "</w>"] for w in sorted(counts)]
    freqs = [counts[w] for w in sorted(counts)]
    merges: list[tuple[str, str]] = []
    while 514 + len(merges) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, f in zip(words, freqs, strict=True):
            for a, b in zip(w[:-1], w[1:], strict=True):
                pairs[(a, b)] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for i, w in enumerate(words):
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(joined)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
    chars = _byte_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]], context: int) -> None:
    """Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json (openai layout)."""
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    config = {
        **specials,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": context,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------
# Model


def make_model(config: ClipTrainConfig, vocab_size: int):
    """A freshly initialised ``transformers.CLIPModel`` of the demo size (seeded by ``config.seed``)."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=vocab_size,
        hidden_size=config.text_width,
        intermediate_size=4 * config.text_width,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.heads,
        max_position_embeddings=config.context_length,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision = dict(
        hidden_size=config.vision_width,
        intermediate_size=4 * config.vision_width,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
    )
    torch.manual_seed(config.seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim))


# --------------------------------------------------------------------------------------------------
# Data


def phrase_holds(p: FaceParams, phrase: AttributePhrase) -> bool:
    """Whether an editing prompt is clearly true of a face (same thresholds as the captions)."""
    a, target = phrase.attribute, phrase.target
    if a == "smile":
        return p.smile >= 0.6 if target > 0 else p.smile <= -0.6
    if a == "beard":
        return p.beard >= 0.3 if target > 0 else p.beard < 0.02
    if a == "age":
        return p.age > OLD_MIN if target > 0 else p.age < YOUNG_MAX
    if a == "hair_colour":
        return p.hair_colour == target and p.hair_style != "bald"
    return getattr(p, a) == target


def _prompt_of(phrase: AttributePhrase, rng: np.random.Generator) -> str:
    """One of a phrase's prompts, the canonical one half of the time."""
    return phrase.prompts[0 if rng.random() < 0.5 else int(rng.integers(len(phrase.prompts)))]


def phrase_text(p: FaceParams, rng: np.random.Generator) -> str:
    """A short editing prompt true of ``p``, e.g. "face with glasses", "a bald face", "purple hair"."""
    true = [ph for ph in attribute_phrases().values() if phrase_holds(p, ph)]
    chosen = [true[i] for i in rng.permutation(len(true))[: 1 + int(rng.random() < 0.3)]]
    return compose([_prompt_of(ph, rng) for ph in chosen], rng)


def compose(prompts: list[str], rng: np.random.Generator) -> str:
    """Joins editing prompts into a short text: "bald", "a smiling face with glasses", "a person"."""
    if not prompts:
        return NEUTRAL_TEXTS[int(rng.integers(len(NEUTRAL_TEXTS)))]
    adjectives = [q for q in prompts if q in ADJECTIVE_PROMPTS]
    nouns = [q for q in prompts if q not in ADJECTIVE_PROMPTS]
    form = int(rng.integers(3))
    if form == 0 and len(prompts) == 1:
        return prompts[0]
    subject = " ".join([*adjectives, ("face", "person")[int(rng.integers(2))]])
    if rng.random() < 0.5:
        subject = ("an " if subject[0] in "aeiou" else "a ") + subject
    return subject + (" with " + " and ".join(nouns) if nouns else "")


# Attributes vary_one changes (the odds are ClipTrainConfig.varied_prior): hair is learnt easily, small
# details (mouth, beard, lips) need the contrast more.
VARIED = ("smile", "glasses", "hair_colour", "hair_style", "beard", "lipstick", "age")


def vary_one(
    p: FaceParams, rng: np.random.Generator, prior: Sequence[float] = ClipTrainConfig.varied_prior
) -> tuple[FaceParams, str]:
    """The same face with one editable attribute changed clearly (a hard negative).

    Args:
        p: the face.
        rng: generator (advanced in place).
        prior: probability of each attribute of :data:`VARIED`.
    Returns:
        The variant and the name of the FaceParams field that changed.
    """
    attribute = VARIED[int(rng.choice(len(VARIED), p=np.asarray(prior) / np.sum(prior)))]
    if attribute == "smile":  # not smiling -> big smile (the edit users ask for), smiling -> neutral or frown
        q = replace(p, smile=float(rng.uniform(0.6, 1.0) if p.smile < 0.3 else rng.uniform(-1.0, 0.1)))
    elif attribute in ("glasses", "lipstick"):
        q = replace(p, **{attribute: not getattr(p, attribute)})
    elif attribute in ("hair_colour", "hair_style"):
        choices = HAIR_COLOURS if attribute == "hair_colour" else HAIR_STYLES
        others = [c for c in choices if c != getattr(p, attribute)]
        q = replace(p, **{attribute: others[int(rng.integers(len(others)))]})
    elif attribute == "beard":
        q = replace(p, beard=0.0 if p.beard > 0 else float(rng.uniform(0.5, 1.0)))
    else:
        q = replace(p, age=float(rng.uniform(0.0, 0.15) if p.age > 0.4 else rng.uniform(0.75, 1.0)))
    return q, attribute


def change_key(base: FaceParams, variant: FaceParams, attribute: str) -> str:
    """Which way a one-attribute change goes: ``"glasses+"``, ``"smile-"``, ``"hair_colour>blond"``, ...

    Pairs with the same key change the image the same way (towards the same value); the contrastive
    direction loss treats them as positives of each other.
    """
    if attribute in ("hair_colour", "hair_style"):
        return f"{attribute}>{getattr(variant, attribute)}"
    return attribute + ("+" if float(getattr(variant, attribute)) > float(getattr(base, attribute)) else "-")


def delta_t_prompt(prompt: str) -> str:
    """An editing prompt in Δt's form: "smiling face", "face with glasses", "face with a beard"."""
    if prompt in ADJECTIVE_PROMPTS:
        return f"{prompt} face"
    return "face with " + ("a " + prompt if prompt in ("beard", "mohawk") else prompt)


def pair_texts(
    base: FaceParams,
    variant: FaceParams,
    attribute: str,
    rng: np.random.Generator,
    neutral_share: float = ClipTrainConfig.neutral_pair_share,
) -> list[str]:
    """Texts for a face and its variant that both name the changed attribute when it shows.

    Both share the same context (maybe one other true prompt, maybe the same template), so the only
    difference between the texts is the attribute, as between Δt's "face with glasses" and "face".
    A ``neutral_share`` of the pairs are exactly Δt's form: a neutral "face" / "a face" for the face
    without the attribute (for hair colour: the base face) and the bare attribute prompt ("face with
    glasses", "smiling face", "bald face") for the other.
    """
    phrases = attribute_phrases().values()
    if rng.random() < neutral_share:
        own = [
            [ph.prompts[0] for ph in phrases if ph.attribute == attribute and phrase_holds(p, ph)][:1]
            for p in (base, variant)
        ]
        neutral = ("face", "a face")[int(rng.integers(2))]
        if own[1]:
            texts = [neutral, own[1][0]]
        elif own[0]:
            texts = [own[0][0], neutral]
        else:
            texts = [neutral, neutral]
        texts = [t if t in ("face", "a face") else delta_t_prompt(t) for t in texts]
        if rng.random() < 0.5:
            template = IMAGENET_TEMPLATES[int(rng.integers(len(IMAGENET_TEMPLATES)))]
            texts = [template.format(re.sub(r"^an? ", "", t)) for t in texts]
        return texts
    others = [ph for ph in phrases if ph.attribute != attribute and phrase_holds(base, ph)]
    context = (
        [_prompt_of(others[int(rng.integers(len(others)))], rng)] if others and rng.random() < 0.5 else []
    )
    texts = []
    for p in (base, variant):
        own = [_prompt_of(ph, rng) for ph in phrases if ph.attribute == attribute and phrase_holds(p, ph)][:1]
        texts.append(compose(own + context, rng))
    if rng.random() < 0.35:
        template = IMAGENET_TEMPLATES[int(rng.integers(len(IMAGENET_TEMPLATES)))]
        texts = [template.format(re.sub(r"^an? ", "", t)) for t in texts]
    return texts


def faces_to_tensor(faces: Sequence[FaceParams], size: int = 64) -> torch.Tensor:
    """Renders faces into a (N, 3, size, size) float32 tensor in [-1, 1]."""
    arr = np.stack([np.asarray(render_face(p, size)) for p in faces])  # (N, size, size, 3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def text_for(p: FaceParams, rng: np.random.Generator, config: ClipTrainConfig) -> str:
    """One training text for a face: caption, editing prompt or neutral, maybe inside a template."""
    u = rng.random()
    if u < config.neutral_share:
        text = NEUTRAL_TEXTS[int(rng.integers(len(NEUTRAL_TEXTS)))]
    elif u < config.neutral_share + config.phrase_share:
        text = phrase_text(p, rng)
    else:
        text = caption(p, rng)
    if rng.random() < config.template_share:
        text = re.sub(r"^an? ", "", text.rstrip("."))  # the templates bring their own article
        text = IMAGENET_TEMPLATES[int(rng.integers(len(IMAGENET_TEMPLATES)))].format(text)
    return text


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blurs each image with its own Gaussian (separable, reflect padding).

    Args:
        img: (N, 3, H, W) float.
        sigma: (N,) standard deviations in pixels (> 0).
    Returns:
        (N, 3, H, W), same dtype.
    """
    n, c, h, w = img.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-(x[None] ** 2) / (2 * sigma[:, None].to(img.dtype) ** 2))  # (N, K)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N * 3, K)
    y = F.pad(img.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def make_batch(
    rng: np.random.Generator, config: ClipTrainConfig
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """A training batch: ``batch // 2`` faces, their single-attribute variants and one text each.

    Hair colour and style are the easiest cues and, left alone, the only ones a short training learns;
    batches in which every face has the same hair force the towers to use glasses, beard, mouth, ...

    Returns:
        ``img`` (batch, 3, 64, 64) float32 in [-1, 1], ``batch`` texts and ``paired`` (batch // 2,) int64:
        where >= 0, face i and its variant ``batch // 2 + i`` have texts that differ only in the changed
        attribute, and ``paired[i]`` numbers the way the image changes (:func:`change_key`; equal numbers,
        same change); -1 where the texts do not form such a pair.
    """
    half = config.batch // 2
    base = [sample_params(rng) for _ in range(half)]
    if rng.random() < config.shared_hair_share:  # hair cannot tell these faces apart: look at the rest
        hair = sample_params(rng)
        base = [replace(p, hair_colour=hair.hair_colour, hair_style=hair.hair_style) for p in base]
    varied = [vary_one(p, rng, config.varied_prior) for p in base]
    faces = base + [q for q, _ in varied]
    texts = [text_for(p, rng, config) for p in faces]
    paired = torch.full((half,), -1, dtype=torch.long)
    keys: dict[str, int] = {}
    for i, (p, (q, attribute)) in enumerate(zip(base, varied, strict=True)):
        if rng.random() < config.pair_share:
            texts[i], texts[half + i] = pair_texts(p, q, attribute, rng, config.neutral_pair_share)
            if texts[i] != texts[half + i]:
                paired[i] = keys.setdefault(change_key(p, q, attribute), len(keys))
    img = faces_to_tensor(faces)
    # Blur a face and its variant alike, so that the pair still differs in the attribute alone.
    blur_pair = rng.random(half) < config.blur_share
    gaussian = rng.random(half) < 0.7  # else 2x down / bilinear up
    sigma = rng.uniform(*config.blur_sigma, size=half)
    blur = torch.from_numpy(np.concatenate([blur_pair & gaussian] * 2))
    if blur.any():
        img[blur] = gaussian_blur(img[blur], torch.from_numpy(np.concatenate([sigma, sigma])[blur.numpy()]))
    box = torch.from_numpy(np.concatenate([blur_pair & ~gaussian] * 2))
    if box.any():
        soft = F.interpolate(F.avg_pool2d(img[box], 2), scale_factor=2, mode="bilinear", align_corners=False)
        img[box] = soft
    return img, texts, paired


# --------------------------------------------------------------------------------------------------
# Training


def embed(model, tokenizer, img: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and text embeddings through the same calls as ``ClipEncoder``: (B, D) each."""
    x = clip_preprocess(img, image_size=model.config.vision_config.image_size)
    img_feats = F.normalize(model.visual_projection(model.vision_model(pixel_values=x).pooler_output), dim=-1)
    tok = tokenizer(
        texts,
        padding="longest",
        truncation=True,
        max_length=model.config.text_config.max_position_embeddings,
        return_tensors="pt",
    )
    out = model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    text_feats = F.normalize(model.text_projection(out.pooler_output), dim=-1)
    return img_feats, text_feats


def contrastive_loss(model, img_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss over (B, D) normalised embeddings (scalar)."""
    scale = model.logit_scale.clamp(max=math.log(100.0)).exp()
    logits = scale * img_feats @ text_feats.T  # (B, B)
    labels = torch.arange(len(text_feats))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def direction_loss(
    img_feats: torch.Tensor, text_feats: torch.Tensor, paired: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Contrastive (InfoNCE) loss over the one-attribute pairs' directions (scalar, 0 if none).

    Face ``i`` and its variant ``B // 2 + i`` differ in one attribute and, where ``paired[i] >= 0``, so
    do their texts. Each pair's normalised image change must pick its own normalised text change among
    all the batch's text changes, and each text change its image change (symmetric, like CLIP's loss);
    pairs with the same ``paired`` number (same change, e.g. glasses put on) count as positives of each
    other. Unlike 1 − cos(Δimage, Δtext) (the previous version of this loss), it cannot be met by one
    shared direction for every attribute: that collapse made all Δt nearly parallel (demo_models/README.md).
    """
    half = len(img_feats) // 2
    keep = paired >= 0
    if keep.sum() < 2:
        return img_feats.sum() * 0.0
    d_img = F.normalize((img_feats[half:] - img_feats[:half])[keep], dim=-1)
    d_text = F.normalize((text_feats[half:] - text_feats[:half])[keep], dim=-1)
    group = paired[keep]
    positive = group[:, None] == group[None, :]  # (P, P), diagonal true
    logits = d_img @ d_text.T / temperature

    def one_way(lg: torch.Tensor) -> torch.Tensor:
        pos = lg.masked_fill(~positive, float("-inf")).logsumexp(-1)
        return (lg.logsumexp(-1) - pos).mean()

    return (one_way(logits) + one_way(logits.T)) / 2


def make_optimizer(model, config: ClipTrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(step: int, config: ClipTrainConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train(
    config: ClipTrainConfig, log: Callable[[str], None] = print
) -> tuple[object, dict[str, int], list[tuple[str, str]], dict[str, float]]:
    """Learns the tokenizer, then trains the model.

    Args:
        config: the run.
        log: progress printer.
    Returns:
        ``(model, vocab, merges, stats)``: the trained ``CLIPModel`` (eval mode), the tokenizer (see
        :func:`train_bpe`) and timings with the final loss.
    """
    from transformers import CLIPTokenizer

    t0 = time.perf_counter()
    vocab, merges = train_bpe(tokenizer_corpus(config.tokenizer_captions, config.seed + 1), config.vocab_size)
    # tokenizers wants tuples here (lists fail with "Merges must be tuples in memory")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in merges])
    tokenizer.model_max_length = config.context_length
    log(f"tokenizer: {len(vocab)} tokens, {len(merges)} merges, {time.perf_counter() - t0:.1f}s")
    model = make_model(config, len(vocab))
    model.train()
    opt = make_optimizer(model, config)
    rng = np.random.default_rng(config.seed)
    t1 = time.perf_counter()
    ema = None
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, config)
        img, texts, paired = make_batch(rng, config)
        img_feats, text_feats = embed(model, tokenizer, img, texts)
        loss = contrastive_loss(model, img_feats, text_feats)
        if config.direction_lambda > 0:
            loss = loss + config.direction_lambda * direction_loss(
                img_feats, text_feats, paired, config.direction_temperature
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == config.steps - 1:
            elapsed = time.perf_counter() - t1
            log(
                f"step {step:5d}/{config.steps} loss {ema:.3f} scale {model.logit_scale.exp().item():.1f} "
                f"{elapsed / (step + 1):.2f}s/step"
            )
    model.eval()
    stats = {
        "tokenizer_seconds": t1 - t0,
        "train_seconds": time.perf_counter() - t1,
        "final_loss_ema": float(ema),
    }
    return model, vocab, merges, stats


def save_folder(
    model,
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    folder: Path,
    context: int,
    half: bool = False,
) -> None:
    """Writes the model and tokenizer files into ``folder`` (openai/clip-vit-base-patch32 layout).

    With ``half`` the weights are stored as float16 (half the size) while config.json keeps
    ``"dtype": "float32"``, so ``from_pretrained`` still builds a float32 model (the stored values
    cast up; embeddings agree with the float32 folder's to cos 0.9999999).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if half:
        import copy

        copy.deepcopy(model).half().save_pretrained(folder, safe_serialization=True)
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in config:
                config[key] = "float32"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        model.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder, vocab, merges, context)


# --------------------------------------------------------------------------------------------------
# Evaluation

NEUTRAL_PROMPT = "face"
# key -> (Δt target against NEUTRAL_PROMPT, how a face gains the attribute, a face that lacks it)
DIRECTIONS: dict[str, tuple[str, Callable[[FaceParams], FaceParams], Callable[[FaceParams], bool]]] = {
    "smile": ("a smiling face", lambda p: replace(p, smile=0.9), lambda p: p.smile < 0.1),
    "glasses": ("face with glasses", lambda p: replace(p, glasses=True), lambda p: not p.glasses),
    "blond_hair": (
        "face with blond hair",
        lambda p: replace(p, hair_colour="blond"),
        lambda p: p.hair_colour != "blond" and p.hair_style != "bald",
    ),
    "beard": ("face with a beard", lambda p: replace(p, beard=0.9), lambda p: p.beard == 0.0),
    "purple_hair": (
        "face with purple hair",
        lambda p: replace(p, hair_colour="purple"),
        lambda p: p.hair_colour != "purple" and p.hair_style != "bald",
    ),
    "bald": ("a bald face", lambda p: replace(p, hair_style="bald"), lambda p: p.hair_style != "bald"),
    "grey_hair": (
        "face with grey hair",
        lambda p: replace(p, hair_colour="grey"),
        lambda p: p.hair_colour != "grey" and p.hair_style != "bald",
    ),
    "lipstick": ("face with lipstick", lambda p: replace(p, lipstick=True), lambda p: not p.lipstick),
}


def direction_pairs(key: str, n: int, seed: int) -> tuple[list[FaceParams], list[FaceParams]]:
    """``n`` held-out faces lacking attribute ``key`` and the same faces with it (see :data:`DIRECTIONS`)."""
    _, gain, lacks = DIRECTIONS[key]
    rng = np.random.default_rng(seed)
    before: list[FaceParams] = []
    while len(before) < n:
        p = sample_params(rng)
        if lacks(p):
            before.append(p)
    return before, [gain(p) for p in before]


@torch.inference_mode()
def direction_scores(encoder: ClipEncoder, key: str, n: int = 64, seed: int = 777) -> dict[str, float]:
    """How well one attribute's text direction matches the image change (the criteria of issue 4).

    Args:
        encoder: the CLIP to measure.
        key: one of :data:`DIRECTIONS`.
        n: face pairs.
        seed: numpy seed of the held-out faces.
    Returns:
        ``cos_mean``: mean over pairs of cos(E(after) − E(before), Δt(target, "face"));
        ``cos_of_mean``: cos between the mean image change and Δt;
        ``loss_drop_rate``: share of pairs whose StyleCLIP CLIP loss 1 − cos(E(img), t(target)) is lower
        after the edit; ``loss_drop``: mean decrease of that loss.
    """
    target = DIRECTIONS[key][0]
    before, after = direction_pairs(key, n, seed)
    e0 = encoder.encode_image(faces_to_tensor(before))
    e1 = encoder.encode_image(faces_to_tensor(after))
    dt = delta_t(encoder, target, NEUTRAL_PROMPT)
    change = e1 - e0
    cos = F.cosine_similarity(change, dt[None], dim=-1)
    t = encoder.encode_text([target])[0]
    loss0, loss1 = 1 - e0 @ t, 1 - e1 @ t
    return {
        "cos_mean": cos.mean().item(),
        "cos_of_mean": F.cosine_similarity(change.mean(0), dt, dim=0).item(),
        "loss_drop_rate": (loss1 < loss0).float().mean().item(),
        "loss_drop": (loss0 - loss1).mean().item(),
    }


# task -> (class prompts, class of a face or None to leave the face out)
ZERO_SHOT: dict[str, tuple[tuple[str, ...], Callable[[FaceParams], int | None]]] = {
    "hair_colour": (
        tuple(f"face with {c} hair" for c in HAIR_COLOURS),
        lambda p: None if p.hair_style == "bald" else HAIR_COLOURS.index(p.hair_colour),
    ),
    "hair_style": (
        (
            "face with short hair",
            "face with long hair",
            "a bald face",
            "face with a mohawk",
            "face with curly hair",
        ),
        lambda p: HAIR_STYLES.index(p.hair_style),
    ),
    "glasses": (("face", "face with glasses"), lambda p: int(p.glasses)),
    "lipstick": (("face", "face with lipstick"), lambda p: int(p.lipstick)),
    "beard": (
        ("a clean-shaven face", "face with a beard"),
        lambda p: 0 if p.beard == 0 else (1 if p.beard >= 0.3 else None),
    ),
    "smile": (
        ("a frowning face", "a smiling face"),
        lambda p: 0 if p.smile <= -0.6 else (1 if p.smile >= 0.6 else None),
    ),
    "age": (
        ("a young face", "an old face"),
        lambda p: 0 if p.age < YOUNG_MAX else (1 if p.age > OLD_MIN else None),
    ),
}


@torch.inference_mode()
def zero_shot_accuracy(encoder: ClipEncoder, n: int = 400, seed: int = 4242) -> dict[str, float]:
    """Balanced zero-shot accuracy (mean per-class recall) of template-averaged prompts on held-out faces."""
    rng = np.random.default_rng(seed)
    faces = [sample_params(rng) for _ in range(n)]
    feats = torch.cat([encoder.encode_image(faces_to_tensor(faces[i : i + 100])) for i in range(0, n, 100)])
    out = {}
    for task, (prompts, label_of) in ZERO_SHOT.items():
        classes = torch.stack([prompt_embedding(encoder, q) for q in prompts])  # (C, D)
        labels = [label_of(p) for p in faces]
        keep = [i for i, y in enumerate(labels) if y is not None]
        pred = (feats[keep] @ classes.T).argmax(-1)
        y = torch.tensor([labels[i] for i in keep])
        recalls = [(pred[y == c] == c).float().mean().item() for c in range(len(prompts)) if (y == c).any()]
        out[task] = float(np.mean(recalls))
    return out


# key of DIRECTIONS -> Δt target against NEUTRAL_PROMPT for the distinctness / diagonal checks
MATRIX_TARGETS: dict[str, str] = {
    "smile": "smiling face",
    "glasses": "face with glasses",
    "purple_hair": "face with purple hair",
    "bald": "bald face",
    "blond_hair": "face with blond hair",
    "beard": "face with a beard",
}


def _mean_abs_off_diagonal(m: torch.Tensor) -> float:
    off = ~torch.eye(len(m), dtype=torch.bool)
    return m[off].abs().mean().item()


@torch.inference_mode()
def direction_matrix(encoder: ClipEncoder, n: int = 32, seed: int = 777) -> dict[str, object]:
    """Whether the attributes' text and image directions are distinct and match each other.

    The 1 − cos(Δimage, Δtext) criterion of one pair at a time is met by a collapsed model whose text
    directions are all one line; this compares the attributes of :data:`MATRIX_TARGETS` with each other.

    Args:
        encoder: the CLIP to measure.
        n: face pairs per attribute (held-out faces of :func:`direction_pairs`).
        seed: their numpy seed.
    Returns:
        ``keys``; ``text_cos`` / ``image_cos``: 6 x 6 cosines between the Δt(target, "face") and between
        the mean normalised image changes (E(after) − E(before), normalised per pair, then averaged);
        ``text_offdiag_abs`` / ``image_offdiag_abs``: mean |off-diagonal cosine| of those (distinct: small);
        ``cross_cos``: row a, column b = cos(mean image change of a, Δt of b); ``diagonal``: its diagonal;
        ``diagonal_wins``: per attribute, whether its own Δt is the best match of its image change.
    """
    keys = list(MATRIX_TARGETS)
    dts = torch.stack([delta_t(encoder, MATRIX_TARGETS[k], NEUTRAL_PROMPT) for k in keys])  # (6, D)
    changes = []
    for key in keys:
        before, after = direction_pairs(key, n, seed)
        change = encoder.encode_image(faces_to_tensor(after)) - encoder.encode_image(faces_to_tensor(before))
        changes.append(F.normalize(F.normalize(change, dim=-1).mean(0), dim=0))
    d_img = torch.stack(changes)  # (6, D)
    text_cos, image_cos, cross = dts @ dts.T, d_img @ d_img.T, d_img @ dts.T
    diag = cross.diagonal()
    return {
        "keys": keys,
        "text_cos": [[round(v, 4) for v in row] for row in text_cos.tolist()],
        "image_cos": [[round(v, 4) for v in row] for row in image_cos.tolist()],
        "cross_cos": [[round(v, 4) for v in row] for row in cross.tolist()],
        "text_offdiag_abs": _mean_abs_off_diagonal(text_cos),
        "image_offdiag_abs": _mean_abs_off_diagonal(image_cos),
        "diagonal": dict(zip(keys, diag.tolist(), strict=True)),
        "diagonal_wins": dict(zip(keys, (cross.argmax(1) == torch.arange(len(keys))).tolist(), strict=True)),
    }


def evaluate(encoder: ClipEncoder) -> dict[str, object]:
    """Direction scores for every key of :data:`DIRECTIONS`, the direction matrix and zero-shot accuracies."""
    return {
        "directions": {key: direction_scores(encoder, key) for key in DIRECTIONS},
        "direction_matrix": direction_matrix(encoder),
        "zero_shot_balanced_accuracy": zero_shot_accuracy(encoder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (transformers CLIP layout)")
    parser.add_argument("--steps", type=int, default=ClipTrainConfig.steps, help="optimisation steps")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (loads as float32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ClipTrainConfig(steps=args.steps, seed=args.seed)
    model, vocab, merges, stats = train(config, log=lambda s: print(s, flush=True))
    save_folder(model, vocab, merges, args.out, config.context_length, half=args.half)
    encoder = ClipEncoder.from_folder(args.out)
    metrics = evaluate(encoder)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    report = {
        "config": asdict(config),
        "threads": args.threads,
        **stats,
        "folder_bytes": size,
        "metrics": metrics,
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
