"""Model-set selection: ``--models auto|ffhq|demo`` on tiny seeded files in both layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from editing.editor import layout_of, load_generator
from editing.errors import WeightsUnavailableError
from editing.model_sets import load_editor
from editing.precompute import layout_metadata, s_statistics, save_precomputed
from scripts.seeded.e4e import make_e4e_checkpoint
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.mapper import mapper_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint
from tests.tiny_clip import make_tiny_clip_folder

TINY_IRSE = {"widths": (16, 32, 48, 64), "units": (1, 1, 1, 1)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    """A demo folder (demo file names) and its precompute folder, from tiny seeded models."""
    root = tmp_path_factory.mktemp("demo")
    d, pre = root / "demo_models", root / "precomputed_demo"
    d.mkdir()
    gen = make_stylegan2_checkpoint(size=32, n_mlp=2, seed=31)
    torch.save(gen, d / "stylegan2-demo.pt")
    e4e = make_e4e_checkpoint(seed=32, n_styles=8, **TINY_IRSE)
    torch.save(e4e, d / "e4e_demo_encode.pt")
    torch.save(make_irse50_checkpoint(**TINY_IRSE), d / "model_ir_se_demo.pth")
    make_tiny_clip_folder(d / "clip-demo", context_length=64)
    (d / "mappers").mkdir()
    torch.save(mapper_checkpoint(levels=("coarse",), stylegan_size=32, seed=3), d / "mappers" / "smile.pt")
    g, w_avg = load_generator(d / "stylegan2-demo.pt")
    layout = layout_of(g)
    fs3 = torch.nn.functional.normalize(torch.randn(layout.n_covered_channels, 16), dim=1).numpy()
    save_precomputed(pre, s_statistics(g, w_avg, n_samples=2000), fs3, {"layout": layout_metadata(layout)})
    return d, pre


def _load(models, demo, *, weights=None, components=("generator",), logs=None):
    d, pre = demo
    return load_editor(
        models,
        weights=weights,
        offline=True,
        components=components,
        device="cpu",
        precision="fp32",
        log=(logs.append if logs is not None else lambda _: None),
        demo_dir=d,
        demo_precomputed=pre,
    )


def test_auto_falls_back_to_the_demo_set_and_says_so(demo, tmp_path):
    logs: list[str] = []
    ed = _load("auto", demo, weights=tmp_path, components=("generator", "clip", "global"), logs=logs)
    assert ed.name == "demo" and len(logs) == 1
    assert logs[0].startswith("models: demo") and "FFHQ file(s) unavailable" in logs[0]
    assert ed.mapper_names() == ["smile"] and ed.global_data is not None
    from editing.edits import GlobalSettings

    src = ed.latent(ed.latent_from_seed(1))
    res = ed.edit_global(src, GlobalSettings("a smiling face", alpha=3.0, beta=0.05), metrics=False)
    assert res.info["channels_moved"] > 0


def test_explicit_sets(demo, tmp_path):
    assert _load("demo", demo, components=("generator", "encoder", "identity")).name == "demo"
    with pytest.raises(WeightsUnavailableError, match="stylegan2-ffhq-config-f.pt") as e:
        _load("ffhq", demo, weights=tmp_path)
    assert all(m.name != "stylegan2-demo" for m in e.value.missing)
    # the FFHQ layout present: auto takes it
    ffhq = tmp_path / "ffhq"
    ffhq.mkdir()
    shutil.copy(demo[0] / "stylegan2-demo.pt", ffhq / "stylegan2-ffhq-config-f.pt")
    logs: list[str] = []
    assert _load("auto", demo, weights=ffhq, logs=logs).name == "ffhq" and logs[0].startswith("models: ffhq")
    with pytest.raises(ValueError, match="models must be"):
        _load("celeba", demo)


def test_neither_set_names_the_real_files_first(tmp_path):
    with pytest.raises(WeightsUnavailableError) as e:
        load_editor("auto", weights=tmp_path, offline=True, demo_dir=tmp_path / "none", log=lambda _: None)
    first = str(e.value).splitlines()[0]
    assert first.startswith("Missing model files: stylegan2-ffhq-config-f.pt") and "demo" in first
    assert {m.name for m in e.value.missing} >= {"stylegan2-ffhq", "stylegan2-demo"}
    assert "stylegan2-demo.pt" in str(e.value)  # the demo set's missing files are listed after


def test_demo_mappers_ignore_training_states(tmp_path):
    from editing.model_sets import demo_mappers

    (tmp_path / "mappers").mkdir()
    for name in ("bald.pt", "bald.state.pt", "notes.txt"):
        (tmp_path / "mappers" / name).write_bytes(b"")
    assert demo_mappers(tmp_path) == {"bald": tmp_path / "mappers" / "bald.pt"}
    assert demo_mappers(tmp_path / "nowhere") == {}


def test_demo_set_from_weights_and_s_stats_folders(demo, tmp_path):
    """With --models demo, --weights and --s-stats name the demo folders (precompute and train-mapper
    on a rebuilt set, before it replaces demo_models/); they used to be ignored silently."""
    d, pre = demo
    copy, copy_pre = tmp_path / "rebuilt", tmp_path / "rebuilt_pre"
    shutil.copytree(d, copy)
    shutil.copytree(pre, copy_pre)
    (copy / "mappers" / "smile.pt").rename(copy / "mappers" / "frown.pt")  # tells the folders apart
    logs: list[str] = []
    kwargs = dict(
        weights=copy,
        s_stats=copy_pre,
        offline=True,
        components=("generator", "clip", "global"),
        device="cpu",
        precision="fp32",
    )
    ed = load_editor("demo", log=logs.append, **kwargs)
    assert ed.mapper_names() == ["frown"] and "rebuilt/" in logs[0] and ed.global_data is not None
    (copy_pre / "fs3.npy").unlink()  # the copy's precompute folder is the one read
    with pytest.raises(Exception, match="fs3"):
        load_editor("demo", log=lambda _: None, **kwargs)
