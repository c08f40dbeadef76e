"""Train the demo identity network: a small ``models.irse.IRSE50`` whose embedding depends on who a
procedural face is (``IDENTITY_ATTRIBUTES`` of ``editing.demo.faces``) and not on what a text edit may
change (``EDITABLE_ATTRIBUTES``) nor on the background (issue 4, offline demo set).

Papers: Deng et al., "ArcFace" (CVPR 2019) for the IR-SE backbone; the loss is the supervised
contrastive loss of Khosla et al., "Supervised Contrastive Learning" (NeurIPS 2020), because the
"people" are sampled afresh every step (an infinite set of classes, which rules out an ArcFace
classification head). The file is a plain state dict with the official ``model_ir_se50.pth`` key names
(TreB1eN/InsightFace_Pytorch ``model.py``), loaded by ``editing.editor.load_identity``; the network
sees faces exactly as StyleCLIP's ID loss feeds them (``models.irse.id_input``: pooled to 256 px,
cropped to the face, pooled to ``input_size``).

A step draws ``people`` people (identity parameters from the renderer's prior) and ``views`` faces of
each: every view redraws all editable and scene parameters, so the only thing the views of a person
share is the identity. Faces are rendered at 64 px and degraded like the demo generator's outputs
(``scripts.demo.train_oracle.degrade``). Loss = SupCon(temperature) over the batch + ``aux_lambda``
times a linear read-out of the identity parameters from the embedding (squared error of the continuous
ones over their range squared, cross-entropy of the eye colour), which makes every identity attribute
count; the read-out head is not saved.

Evaluation (:func:`evaluate`): on held-out people, cosine similarity of two views of the same person
(different edits and backgrounds) vs two different people; verification AUC and best-threshold
accuracy; and the mean similarity after changing one attribute alone, per attribute.

``python -m scripts.demo.train_identity --out demo_models/model_ir_se_demo.pth [--steps N] [--minutes M]
[--seed S] [--threads T]`` writes the weights and ``model_ir_se_demo.json`` (config, metrics);
deterministic for a given seed, step count and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from editing.demo.faces import (
    EDITABLE_ATTRIBUTES,
    EYE_COLOURS,
    IDENTITY_ATTRIBUTES,
    SCENE_ATTRIBUTES,
    FaceParams,
    face_rng,
    sample_params,
)
from editing.weights import stored_state_dict
from models.irse import IRSE50, id_input
from scripts.demo.train_oracle import degrade, log_line, render_params

EVAL_SEED = 424_242  # held-out people; training draws from data seed 2000 + seed
_CONT_IDENTITY = ("skin_tone", "face_width", "eye_size", "nose_size")
_RANGE = {"skin_tone": 1.0, "face_width": 2.0, "eye_size": 2.0, "nose_size": 2.0}
_FIELDS = tuple(f.name for f in fields(FaceParams))
assert set(IDENTITY_ATTRIBUTES) == set(_CONT_IDENTITY) | {"eye_colour"}


@dataclass(frozen=True)
class IdentityTrainConfig:
    """Architecture, data and optimisation of the demo identity network."""

    size: int = 64  # rendered face size in pixels (the demo generator's)
    input_size: int = 32  # network input (id_input pools the face crop to this), a multiple of 16
    widths: tuple[int, ...] = (16, 32, 48, 64)  # IR-SE stage widths
    units: tuple[int, ...] = (1, 1, 2, 1)  # IR-SE units per stage
    embedding_dim: int = 128  # identity embedding size
    drop_ratio: float = 0.1  # dropout before the embedding layer (training only)
    people: int = 32  # people per step
    views: int = 3  # faces per person per step
    steps: int = 1000  # optimisation steps
    lr: float = 2e-3  # AdamW learning rate (cosine decay to 2 % over the run)
    weight_decay: float = 1e-4  # AdamW weight decay
    temperature: float = 0.1  # SupCon temperature
    aux_lambda: float = 1.0  # weight of the identity-parameter read-out loss
    seed: int = 0  # seeds the initialisation, the people, the views and the augmentation


# ---------------------------------------------------------------------------- data
def identity_of(p: FaceParams) -> dict[str, object]:
    """The identity parameters of a face."""
    return {a: getattr(p, a) for a in IDENTITY_ATTRIBUTES}


def person_views(person: FaceParams, rngs: list[np.random.Generator]) -> list[FaceParams]:
    """Faces of one person: each redraws every editable and scene parameter from its own generator."""
    return [replace(sample_params(r), **identity_of(person)) for r in rngs]


def training_batch(step: int, config: IdentityTrainConfig) -> tuple[torch.Tensor, torch.Tensor, list]:
    """One step's faces: ``(img (P * V, 3, S, S) degraded, person labels (P * V,), params)``."""
    seed = 2000 + config.seed
    params, labels = [], []
    for j in range(config.people):
        k = step * config.people + j
        person = sample_params(face_rng(seed, 2 * k))
        views = [np.random.default_rng([seed, 2 * k + 1, v]) for v in range(config.views)]
        params += person_views(person, views)
        labels += [j] * config.views
    img = degrade(render_params(params, config.size), np.random.default_rng([config.seed, step, 11]))
    return img, torch.tensor(labels), params


def identity_targets(params: list[FaceParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, 4) continuous identity parameters over their range, (B,) eye-colour class index)."""
    cont = torch.tensor([[getattr(p, a) / _RANGE[a] for a in _CONT_IDENTITY] for p in params])
    eye = torch.tensor([EYE_COLOURS.index(p.eye_colour) for p in params])
    return cont.float(), eye


# ---------------------------------------------------------------------------- loss
def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out).

    Args:
        emb: (B, D) unit-norm embeddings.
        labels: (B,) person index; every person must appear at least twice.
        temperature: softmax temperature.
    Returns:
        Scalar: mean over anchors of -mean_{positives p} log softmax_{j != anchor}(cos(a, j) / t)[p].
    """
    b = emb.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=emb.device)
    logits = (emb @ emb.T / temperature).masked_fill(eye, float("-inf"))  # (B, B)
    log_prob = logits.log_softmax(dim=1).masked_fill(eye, 0.0)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    if not bool(pos.any(dim=1).all()):
        raise ValueError("labels: every person must appear at least twice in the batch")
    return -((log_prob * pos).sum(dim=1) / pos.sum(dim=1)).mean()


def make_network(config: IdentityTrainConfig) -> tuple[IRSE50, nn.Linear]:
    """A freshly initialised (seeded) backbone and the identity read-out head (4 continuous + eye colours)."""
    torch.manual_seed(config.seed)
    net = IRSE50(
        input_size=config.input_size,
        widths=config.widths,
        units=config.units,
        embedding_dim=config.embedding_dim,
        drop_ratio=config.drop_ratio,
    )
    head = nn.Linear(config.embedding_dim, len(_CONT_IDENTITY) + len(EYE_COLOURS))
    return net, head


def id_input_matrices(size: int, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``id_input`` on a ``size`` px image as two matrices: ``id_input(img) = R @ img @ C.T``.

    Every step of ``id_input`` (adaptive average pooling, cropping) averages rectangles, so it is
    separable and linear; applying it to one-pixel images gives the (input_size, size) row and column
    operators. Training uses them because they are ~40x faster than pooling up to 256 px.
    """
    basis = torch.eye(size, dtype=torch.float64)  # (size, size): basis[k] has a 1 at row k
    rows = id_input(basis[:, None, :, None].expand(size, 3, size, size).contiguous(), input_size)
    cols = id_input(basis[:, None, None, :].expand(size, 3, size, size).contiguous(), input_size)
    return rows[:, 0, :, 0].T.float(), cols[:, 0, 0, :].T.float()  # (input_size, size) each


def identity_loss(
    net: IRSE50,
    head: nn.Linear,
    img: torch.Tensor,
    labels: torch.Tensor,
    params: list,
    config: IdentityTrainConfig,
    crop: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """SupCon + aux_lambda * identity read-out loss of a batch of (B, 3, S, S) faces in [-1, 1].

    ``crop``: :func:`id_input_matrices` for S (same result as ``id_input``, faster); None uses ``id_input``.
    """
    if crop is None:
        x = id_input(img, net.input_size)
    else:
        x = torch.einsum("ph,bchw,qw->bcpq", crop[0], img, crop[1])  # (B, 3, input_size, input_size)
    emb = net(x)  # (B, D), unit norm
    loss = supcon_loss(emb, labels, config.temperature)
    if config.aux_lambda:
        cont, eye = identity_targets(params)
        out = head(emb * math.sqrt(emb.shape[1]))  # unit-variance coordinates for the linear head
        n = len(_CONT_IDENTITY)
        aux = (out[:, :n] - cont).pow(2).sum(dim=1).mean() + F.cross_entropy(out[:, n:], eye)
        loss = loss + config.aux_lambda * aux
    return loss


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def embed(net: IRSE50, params: list[FaceParams], size: int = 64, batch: int = 128) -> torch.Tensor:
    """(N, D) embeddings of clean renders, through the ID loss's crop (eval mode, mode restored)."""
    was_training = net.training
    net.eval()
    out = []
    for i in range(0, len(params), batch):
        out.append(net(id_input(render_params(params[i : i + batch], size), net.input_size)))
    net.train(was_training)
    return torch.cat(out)


def verification_metrics(same: torch.Tensor, diff: torch.Tensor) -> dict[str, float]:
    """AUC (probability a same-person pair outscores a different-person pair) and the best-threshold
    accuracy on equally weighted same / different pairs; plus both distributions' mean, std, p5, p95."""
    auc = float(
        (same[:, None] > diff[None, :]).double().mean()
        + 0.5 * (same[:, None] == diff[None, :]).double().mean()
    )
    thresholds = torch.cat([same, diff]).sort().values
    acc = max(0.5 * float((same >= t).double().mean() + (diff < t).double().mean()) for t in thresholds)
    out = {"auc": round(auc, 4), "best_accuracy": round(acc, 4)}
    for name, v in (("same", same), ("different", diff)):
        q = v.double().quantile(torch.tensor([0.05, 0.95], dtype=torch.float64))
        out.update(
            {
                f"{name}_mean": round(float(v.mean()), 4),
                f"{name}_std": round(float(v.std()), 4),
                f"{name}_p5": round(float(q[0]), 4),
                f"{name}_p95": round(float(q[1]), 4),
            }
        )
    return out


def eval_people(n: int, seed: int = EVAL_SEED) -> tuple[list[FaceParams], list[FaceParams]]:
    """Two views of each of ``n`` held-out people (different edits and backgrounds)."""
    a, b = [], []
    for k in range(n):
        person = sample_params(face_rng(seed, 2 * k))
        va, vb = person_views(person, [np.random.default_rng([seed, 2 * k + 1, v]) for v in range(2)])
        a.append(va)
        b.append(vb)
    return a, b


def one_attribute_changes(base: list[FaceParams], seed: int = EVAL_SEED) -> dict[str, list[FaceParams]]:
    """For every attribute, the ``base`` faces with that attribute alone redrawn (a value that differs)."""
    out: dict[str, list[FaceParams]] = {}
    for a in EDITABLE_ATTRIBUTES + IDENTITY_ATTRIBUTES + SCENE_ATTRIBUTES:
        faces = []
        for i, p in enumerate(base):
            rng = np.random.default_rng([seed, 7, _FIELDS.index(a), i])
            value = getattr(p, a)
            while value == getattr(p, a):  # booleans / classes: make sure it changes
                value = getattr(sample_params(rng), a)
            faces.append(replace(p, **{a: value}))
        out[a] = faces
    return out


def evaluate(net: IRSE50, n: int = 200, size: int = 64) -> dict:
    """Verification on ``n`` held-out people and per-attribute sensitivity (see the module doc)."""
    a, b = eval_people(n)
    ea, eb = embed(net, a, size), embed(net, b, size)
    same = (ea * eb).sum(dim=1)  # (n,)
    sim = ea @ eb.T  # (n, n)
    diff = sim[~torch.eye(n, dtype=torch.bool)]  # (n * (n - 1),)
    result = verification_metrics(same, diff)
    sens = {}
    for attr, faces in one_attribute_changes(a[: min(n, 100)]).items():
        sens[attr] = round(float((ea[: len(faces)] * embed(net, faces, size)).sum(dim=1).mean()), 4)
    result["cos_after_changing_one_attribute"] = sens
    return result


# ---------------------------------------------------------------------------- training
def train(
    config: IdentityTrainConfig,
    minutes: float | None = None,
    log: Callable[[str], None] = log_line,
    log_every: int = 100,
) -> tuple[IRSE50, dict]:
    """Train the identity network from scratch.

    Returns:
        ``(network in eval mode, stats)`` with steps done, seconds and the final running loss.
    """
    net, head = make_network(config)
    net.train()
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    crop = id_input_matrices(config.size, config.input_size)
    start = time.perf_counter()
    running, step = None, 0
    for step in range(1, config.steps + 1):
        opt.param_groups[0]["lr"] = config.lr * (0.02 + 0.49 * (1 + math.cos(math.pi * step / config.steps)))
        img, labels, batch_params = training_batch(step, config)
        loss = identity_loss(net, head, img, labels, batch_params, config, crop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        elapsed = time.perf_counter() - start
        if step % log_every == 0 or step == config.steps:
            msg = f"step {step}/{config.steps}  loss {running:.4f}  {elapsed / 60:.1f} min"
            if step % (5 * log_every) == 0:
                a, b = eval_people(64)
                ea, eb = embed(net, a, config.size), embed(net, b, config.size)
                m = verification_metrics((ea * eb).sum(1), (ea @ eb.T)[~torch.eye(64, dtype=torch.bool)])
                msg += f"  AUC {m['auc']:.4f}  same {m['same_mean']:.3f}  different {m['different_mean']:.3f}"
            log(msg)
        if minutes is not None and elapsed > minutes * 60:
            log(f"time cap of {minutes} min reached at step {step}")
            break
    stats = {"steps": step, "seconds": round(time.perf_counter() - start, 1), "final_loss": running}
    return net.eval(), stats


def save_identity(net: IRSE50, path: Path) -> None:
    """Write the plain state dict (official ``model_ir_se50.pth`` key names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stored_state_dict(net.state_dict()), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pth file")
    parser.add_argument("--steps", type=int, default=IdentityTrainConfig.steps, help="optimisation steps")
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, data and augmentation seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = IdentityTrainConfig(steps=args.steps, seed=args.seed)
    net, stats = train(config, args.minutes)
    metrics = {**stats, **evaluate(net, size=config.size), "threads": args.threads}
    save_identity(net, args.out)
    metrics["file_bytes"] = args.out.stat().st_size
    args.out.with_suffix(".json").write_text(
        json.dumps({"config": asdict(config), "metrics": metrics}, indent=2) + "\n"
    )
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
