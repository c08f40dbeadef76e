"""The Gradio app end to end through ``gradio_client``: the server runs in-process on a free port,
on tiny seeded models written in the official file formats (``tests/app/conftest.py``) and the
real dlib aligner. Every call goes through gradio's queue, (de)serialisation and session state."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from editing.weights import MAPPER_NAMES
from models.latent_mapper import LEVELS
from tests.app.conftest import ASTRONAUT, launch, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

GLASSES = ("face with glasses", "face")


@pytest.fixture(scope="module")
def server(app_weights, app_s_stats, tmp_path_factory):
    with running_app(app_weights, app_s_stats, tmp_path_factory.mktemp("downloads")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def inverted(client):
    """The astronaut photo uploaded and inverted (the module's session starts here)."""
    return client.predict(handle_file(str(ASTRONAUT)), api_name="/invert")


def _image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _fails(client, *args, api_name: str, match: str) -> None:
    with pytest.raises(Exception, match=match):
        client.predict(*args, api_name=api_name)


@pytest.fixture(scope="module")
def editor(app_weights, app_s_stats):
    """The tiny editor as ``python app.py`` loads it (offline), for building pages without serving."""
    args = app.build_parser().parse_args(
        ["--weights", str(app_weights), "--models", "ffhq", "--offline", "--device", "cpu"]
        + ["--precision", "fp32", "--s-stats", str(app_s_stats)]
    )
    editor, note = app.load_models(args)
    assert editor is not None, note
    return editor


def _props(config: dict) -> dict[str, dict]:
    """Component props by elem_id, from a page's config (as JSON, as the browser gets it)."""
    components = json.loads(json.dumps(config["components"], default=str))
    return {c["props"]["elem_id"]: c["props"] for c in components if c["props"].get("elem_id")}


def test_upload_gives_the_aligned_crop_the_reconstruction_and_its_identity_score(client, inverted):
    aligned, note, faces, current, history, compare, metrics, downloads, pasted = inverted
    assert _image(aligned).shape == (32, 32, 3)  # aligned at the generator's resolution
    assert _image(current).shape == (32, 32, 3)
    assert "Identity similarity of the reconstruction" in note and "Inverted face 1 of 1" in note
    assert "0 applied edits" in history and compare is None and metrics is None
    # one face: the mission patch dlib also fires on is filtered out, so no selector
    assert faces["visible"] is False and [c[1] for c in faces["choices"]] == [0]


def test_several_faces_give_a_selector(server, tmp_path):
    pair = Image.new("RGB", (1024, 512))
    photo = Image.open(ASTRONAUT)
    pair.paste(photo, (0, 0))
    pair.paste(photo.resize((384, 384)), (512, 64))  # a smaller copy: faces are ordered by size
    pair.save(tmp_path / "pair.png")
    c = Client(server, verbose=False)
    aligned, note, faces, current, *_ = c.predict(handle_file(str(tmp_path / "pair.png")), api_name="/invert")
    assert faces["visible"] is True and [ch[1] for ch in faces["choices"]] == [0, 1]
    assert "Inverted face 1 of 2" in note
    aligned2, note2, *rest = c.predict(1, api_name="/select_face")
    assert "Inverted face 2 of 2" in note2 and not np.array_equal(_image(aligned2), _image(aligned))
    # back to face 1: the same inversion as the upload (deterministic)
    aligned1, _, current1, *_ = c.predict(0, api_name="/select_face")
    assert np.array_equal(_image(aligned1), _image(aligned))
    assert np.array_equal(_image(current1), _image(current))


def test_channel_count_and_auto_beta(client):
    few = client.predict(*GLASSES, 0.3, api_name="/channels_moved")
    many = client.predict(*GLASSES, 0.08, api_name="/channels_moved")
    assert isinstance(few, (int, float)) and 0 <= few < many  # a lower threshold moves more channels
    beta, count = client.predict(*GLASSES, api_name="/auto_beta")
    assert 0.1 <= beta < 0.3 and count > 20
    assert client.predict(*GLASSES, beta, api_name="/channels_moved") == count


def test_global_edit_changes_the_image_and_reports_metrics_and_downloads(client, inverted):
    before_path = inverted[3]
    (before, after), metrics, files, pasted, channels = client.predict(
        *GLASSES, 6.0, 0.12, api_name="/edit_global"
    )
    assert np.array_equal(_image(before), _image(before_path))
    assert _image(after).shape == (32, 32, 3) and not np.array_equal(_image(after), _image(before))
    assert metrics["method"] == "global" and metrics["channels_moved"] == channels > 0
    assert -1 <= metrics["clip_similarity"] <= 1 and -1 <= metrics["identity_similarity"] <= 1
    assert metrics["seconds"] > 0
    names = {Path(f).name: f for f in files}
    assert set(names) == {
        "global_edit.png", "global_w_plus.npy", "global_latent.npz", "global_parameters.json",
        "global_in_photo.png",
    }  # fmt: skip
    assert np.array_equal(_image(names["global_edit.png"]), _image(after))
    assert np.load(names["global_w_plus.npy"]).shape == (8, 512)
    with np.load(names["global_latent.npz"]) as z:
        assert "w_plus" in z.files and any(k.startswith("s_delta_") for k in z.files)
    params = json.loads(Path(names["global_parameters.json"]).read_text())
    assert params["parameters"] == {
        "target": "face with glasses",
        "neutral": "face",
        "alpha": 6.0,
        "beta": 0.12,
    }
    # the edit pasted back into the photo: the photo's size, changed only around the face
    photo = _image(ASTRONAUT)
    in_photo = _image(pasted)
    assert in_photo.shape == photo.shape
    changed = np.argwhere(np.abs(in_photo.astype(int) - photo).max(axis=2) > 0)
    assert len(changed) > 0 and (changed.max(axis=0) - changed.min(axis=0)).max() < 200
    # α = 0 renders the current face unchanged
    (before0, after0), *_ = client.predict(*GLASSES, 0.0, 0.12, api_name="/edit_global")
    assert np.array_equal(_image(after0), _image(before0))


def test_slider_preview_and_alpha_sweep(client, monkeypatch):
    monkeypatch.setattr(app, "SWEEP_FRAMES", 4)  # the server runs in this process; 4 renders suffice
    before, after = client.predict(*GLASSES, 6.0, 0.12, api_name="/global_preview")
    assert _image(after).shape == _image(before).shape == (32, 32, 3)  # preview size capped at 32
    gif = Image.open(client.predict(*GLASSES, 3.0, 0.12, api_name="/alpha_sweep"))
    assert gif.format == "GIF" and gif.n_frames == 2 * app.SWEEP_FRAMES - 2


def test_the_page_names_its_model_set_resolution_presets_and_usable_mappers(server):
    props = _props(httpx.get(server + "config", timeout=30).json())
    banner = props["model-banner"]["value"]
    assert "ffhq model set, 32 × 32 px" in banner and "1024" not in banner and "cartoon" not in banner
    neutral, target, alpha, beta = app.PRESETS[0]  # FFHQ keeps the StyleCLIP paper's prompts
    assert props["neutral"]["value"] == neutral and props["target"]["value"] == target
    # offline: only the mapper in the weights folder, none of the 14 official ones
    assert props["mapper"]["choices"] == [["purple_hair", "purple_hair"]]
    assert props["mapper"]["value"] == "purple_hair" and "mapper-note" not in props


def test_mapper_list_holds_local_mappers_then_downloadable_ones(editor, monkeypatch):
    store = editor.store
    assert store.offline and editor.mapper_sources() == {"purple_hair": "local"}
    monkeypatch.setattr(store, "offline", False)
    monkeypatch.setattr(store, "_reachable", False)  # the probe found no Hub: still only local ones
    assert editor.mapper_names() == ["purple_hair"]
    monkeypatch.setattr(store, "_reachable", True)
    sources = editor.mapper_sources()
    assert list(sources)[0] == "purple_hair" and len(sources) == 14  # the registry's 14, local first
    assert {n for n, src in sources.items() if src == "download"} == set(MAPPER_NAMES) - {"purple_hair"}
    props = _props(app.build_demo(editor).get_config_file())
    assert props["mapper"]["value"] == "purple_hair"
    assert ["afro (download)", "afro"] in props["mapper"]["choices"]
    assert "Hugging Face Hub" in props["mapper-note"]["value"]


def test_without_usable_mappers_the_tab_and_the_button_say_so(editor, monkeypatch):
    registry = {k: v for k, v in editor.store.registry.items() if not k.startswith("mapper-")}
    monkeypatch.setattr(editor.store, "registry", registry)
    assert editor.mapper_sources() == {}
    props = _props(app.build_demo(editor).get_config_file())
    assert props["mapper"]["choices"] == [] and props["mapper"].get("value") is None
    assert "No latent mapper is available" in props["mapper-note"]["value"]
    assert "DIR/mappers/" in props["mapper-note"]["value"]
    with pytest.raises(ValueError, match="No latent mapper is available"):
        app.edit_mapper(editor, None, None, 0.1)
    with pytest.raises(ValueError, match="No latent mapper is available"):
        app.mapper_info(editor, "")


def test_the_demo_set_gets_its_banner_and_the_demo_worlds_presets(editor, monkeypatch):
    from editing.evaluate import PROMPTS, EvalConfig

    monkeypatch.setattr(editor, "name", "demo")
    props = _props(app.build_demo(editor, model_note="models: demo").get_config_file())
    banner = props["model-banner"]["value"]
    assert "demo model set, 32 × 32 px" in banner and "demo world of cartoon faces" in banner
    assert "--models ffhq" in banner and "--weights DIR" in banner and "ffhq model set" not in banner
    presets = app.global_presets(editor)
    neutral, target, alpha, beta = presets[0]
    assert props["neutral"]["value"] == neutral == "a face" and props["target"]["value"] == target
    assert props["alpha"]["value"] == alpha and props["beta"]["value"] == beta
    # the presets are the prompts `python -m editing evaluate` checks in the demo world, with its α / β,
    # less those whose attribute the demo generator does not draw (smile shifted the hair colour)
    cfg = EvalConfig()
    specs = [p for p in PROMPTS if p.attribute not in cfg.unreadable]
    assert list(cfg.readable_prompts) == specs
    assert [p[1] for p in presets] == [s.target for s in specs] and "smile" not in {s.name for s in specs}
    assert list(presets) == [(cfg.neutral, s.target, *cfg.global_setting(s)) for s in specs]
    assert app.global_presets(None) == app.PRESETS
    # the optimisation tab starts with the evaluation's settings and a prompt it checks and can draw
    opt = cfg.optimization
    prompt, steps, lr, l2, id_lambda, augment, jitter = app.optimisation_defaults(editor)
    assert (steps, lr, l2, id_lambda, augment, jitter) == (
        opt.steps,
        opt.lr,
        opt.l2_lambda,
        opt.id_lambda,
        opt.augment,
        opt.jitter,
    )
    assert prompt in [s.target for s in specs] and 0 < augment <= props["augment"]["maximum"]
    assert 0 < jitter <= props["jitter"]["maximum"]
    keys = ("prompt", "steps", "lr", "l2-lambda", "id-lambda", "augment", "jitter")
    assert [props[k]["value"] for k in keys] == [prompt, steps, lr, l2, id_lambda, augment, jitter]
    assert app.optimisation_defaults(None) == app.OPTIMISATION_DEFAULTS
    # optimisation presets: each evaluated prompt with its own settings (hair colours: medium + fine)
    opt_presets = app.optimisation_presets(editor)
    own = [(s.target, cfg.optimization_settings(s)) for s in specs]
    assert list(opt_presets) == [(t, o.lr, o.l2_lambda, o.augment, o.levels) for t, o in own]
    purple = next(p for p in opt_presets if "purple" in p[0])
    assert purple[4] == ("medium", "fine") and all(p[3] <= props["augment"]["maximum"] for p in opt_presets)
    assert app.optimisation_presets(None) == app.OPTIMISATION_PRESETS
    assert app.OPTIMISATION_LEVELS == LEVELS  # the torch-free copy the app's levels box shows
    # the mapper strength is the evaluation's for the shown mapper (glasses has its own, 0.1)
    first_mapper = next(iter(editor.mapper_sources()), None)
    assert props["strength"]["value"] == app.mapper_strength_default(editor, first_mapper)
    glasses = next(s for s in specs if s.name == "glasses")
    assert glasses.mapper_strength is not None and glasses.mapper_strength != cfg.strength
    assert app.mapper_strength_default(editor, "glasses") == glasses.mapper_strength
    assert app.mapper_strength_default(editor, "purple_hair") == cfg.strength  # no own strength
    assert (
        app.mapper_strength_default(editor, None)
        == app.mapper_strength_default(editor, "afro")
        == cfg.strength
    )
    # every preset fits the β slider (Gradio refuses values outside it: the browser flow caught β 0.7)
    lo, hi = props["beta"]["minimum"], props["beta"]["maximum"]
    assert (lo, hi) == app.DEMO_BETA_SLIDER and all(lo <= p[3] <= hi for p in presets)
    assert all(app.BETA_SLIDER[0] <= p[3] <= app.BETA_SLIDER[1] for p in app.PRESETS)
    assert app.beta_slider(None) == app.BETA_SLIDER
    assert (
        app.mapper_strength_default(None)
        == app.mapper_strength_default(None, "glasses")
        == app.MAPPER_STRENGTH
    )


def test_user_errors_leave_no_traceback_in_the_server_log(client, capfd):
    capfd.readouterr()
    _fails(client, "", "face", 4.0, 0.15, api_name="/edit_global", match="Target is empty")
    assert "Traceback" not in "".join(capfd.readouterr())


def test_mapper_info_and_edit(client):
    info = client.predict("purple_hair", api_name="/mapper_info")
    assert info["levels"]["coarse"]["rows"] == [0, 3] and info["edited_rows"] == list(range(8))
    (before, after), metrics, files, pasted = client.predict("purple_hair", 0.5, api_name="/edit_mapper")
    assert metrics["method"] == "mapper" and metrics["rows_changed"] == 8
    assert not np.array_equal(_image(after), _image(before))
    (before0, after0), *_ = client.predict("purple_hair", 0.0, api_name="/edit_mapper")
    assert np.array_equal(_image(after0), _image(before0))


def test_optimisation_streams_a_frame_per_step_then_the_result(client):
    job = client.submit("a smiling face", 3, 0.008, 0.005, 0.1, "edit", 0, 0, api_name="/edit_optimize")
    final = job.result(timeout=60)
    outputs = job.outputs()
    statuses = [o[1] for o in outputs]
    assert statuses[:3] == [s for s in statuses[:3] if s.startswith("Step ")]
    assert [s.split(":")[0] for s in statuses[:3]] == ["Step 1/3", "Step 2/3", "Step 3/3"]
    assert all(isinstance(o[0], str) and Path(o[0]).is_file() for o in outputs[:3])  # a frame each
    preview, status, (before, after), metrics, files, pasted = final
    assert status.startswith("Done: 3 steps") and metrics["method"] == "optimize"
    assert metrics["rows_changed"] > 0 and not np.array_equal(_image(after), _image(before))
    assert any(Path(f).name == "optimize_w_plus.npy" for f in files)


def test_optimisation_moves_only_the_ticked_levels(client):
    """The W+ levels box: only the medium rows (4-7) move; all three (the default) move every row."""
    args = ("a smiling face", 2, 0.008, 0.005, 0.1, "edit", 0, 0)
    *_, metrics, _, _ = client.submit(*args, ["medium"], api_name="/edit_optimize").result(timeout=60)
    assert metrics["rows_changed"] == 4
    *_, metrics, _, _ = client.submit(*args, api_name="/edit_optimize").result(timeout=60)
    assert metrics["rows_changed"] > 4


def test_optimisation_jitter_reaches_the_run(client):
    """The latent jitter slider (last API argument): 0 is the plain loss; a jitter averages the CLIP loss
    over jittered neighbours, which changes the path and so the result."""
    args = ("a smiling face", 2, 0.008, 0.005, 0.1, "edit", 0, 0, list(app.OPTIMISATION_LEVELS))
    plain = client.submit(*args, 0.0, api_name="/edit_optimize").result(timeout=60)
    again = client.submit(*args, 0.0, api_name="/edit_optimize").result(timeout=60)
    jittered = client.submit(*args, 0.5, api_name="/edit_optimize").result(timeout=60)
    assert plain[3]["clip_similarity"] == again[3]["clip_similarity"]  # runs are repeatable
    assert jittered[3]["clip_similarity"] != plain[3]["clip_similarity"]


def test_cancel_stops_the_optimisation_worker(client):
    job = client.submit("a smiling face", 300, 0.008, 0.005, 0.1, "edit", 0, 0, api_name="/edit_optimize")
    deadline = time.monotonic() + 30
    while len(job.outputs()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(job.outputs()) >= 2
    job.cancel()
    deadline = time.monotonic() + 30
    while any(t.name == "optimize" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name == "optimize" for t in threading.enumerate())  # on_step returned False
    assert len(job.outputs()) < 300
    assert client.predict(*GLASSES, 0.2, api_name="/channels_moved") >= 0  # still answering


def test_apply_and_undo(client, inverted):
    reconstruction = _image(inverted[3])
    (_, edited), *_ = client.predict(*GLASSES, 6.0, 0.12, api_name="/edit_global")
    current, note = client.predict(api_name="/apply")
    assert np.array_equal(_image(current), _image(edited)) and "1 applied edit can" in note
    # the next edit starts from the applied face
    (before, mapped), *_ = client.predict("purple_hair", 0.3, api_name="/edit_mapper")
    assert np.array_equal(_image(before), _image(edited))
    current, note = client.predict(api_name="/apply")
    assert np.array_equal(_image(current), _image(mapped)) and "2 applied edits can" in note
    current, note = client.predict(api_name="/undo")
    assert np.array_equal(_image(current), _image(edited)) and "1 applied edit can" in note
    current, note = client.predict(api_name="/undo")
    assert np.array_equal(_image(current), reconstruction) and "0 applied edits" in note
    _fails(client, api_name="/undo", match="Nothing to undo")
    _fails(client, api_name="/apply", match="no edit to apply")


def test_bad_input_comes_back_as_an_error_and_the_app_keeps_answering(client, server, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    _fails(client, handle_file(str(text)), api_name="/invert", match="not an image")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    _fails(client, handle_file(str(blank)), api_name="/invert", match="No face was found")
    _fails(client, "", "face", 4.0, 0.15, api_name="/edit_global", match="Target is empty")
    _fails(client, *GLASSES, 50.0, 0.15, api_name="/edit_global", match="maximum")
    _fails(
        client, "  ", 3, 0.008, 0.005, 0.1, "edit", 0, 0, api_name="/edit_optimize", match="Prompt is empty"
    )
    _fails(client, "no_such_mapper", 0.1, api_name="/edit_mapper", match="not in the list of choices")
    # NaN cannot be written by gradio_client (strict JSON); send it over the HTTP API directly
    body = '{"data": ["face with glasses", "face", NaN, 0.15]}'
    r = httpx.post(
        f"{server}gradio_api/call/edit_global", content=body, headers={"content-type": "application/json"}
    )
    event = r.json()["event_id"]
    stream = httpx.get(f"{server}gradio_api/call/edit_global/{event}", timeout=30).text
    assert "event: error" in stream and "Alpha must be between -10 and 10, got nan" in stream
    # the session is intact and the app still answers
    (before, after), metrics, *_ = client.predict(*GLASSES, 2.0, 0.15, api_name="/edit_global")
    assert metrics["method"] == "global"


def test_sessions_are_separate_and_random_faces_need_no_photo(server, client, inverted):
    other = Client(server, verbose=False)
    _fails(other, *GLASSES, 4.0, 0.15, api_name="/edit_global", match="Upload a photo")
    aligned, note, faces, current, history, *_ = other.predict(3, 0.7, api_name="/random_face")
    assert aligned is None and "seed 3" in note and faces["visible"] is False
    again = other.predict(3, 0.7, api_name="/random_face")[3]
    assert np.array_equal(_image(current), _image(again))
    (before, _), _, files, pasted, _ = other.predict(*GLASSES, 4.0, 0.15, api_name="/edit_global")
    assert np.array_equal(_image(before), _image(current)) and pasted is None and len(files) == 4
    # the first client's face is untouched
    (before1, _), *_ = client.predict(*GLASSES, 4.0, 0.15, api_name="/edit_global")
    assert not np.array_equal(_image(before1), _image(current))


def test_without_models_the_app_starts_and_says_what_is_missing(tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    # --models ffhq: with the default auto, missing FFHQ files fall back to the shipped demo set
    argv = ["--weights", str(empty), "--offline", "--device", "cpu", "--models", "ffhq"]
    args = app.build_parser().parse_args(argv)
    editor, note = app.load_models(args)
    assert editor is None and "stylegan2-ffhq-config-f.pt" in note and "e4e_ffhq_encode.pt" in note
    demo = app.build_demo(None, model_note=note)
    url = launch(demo)
    try:
        page = httpx.get(url + "config", timeout=30).json()
        banner = next(c for c in page["components"] if c.get("props", {}).get("elem_id") == "model-banner")
        assert "No models loaded" in banner["props"]["value"] and "--weights DIR" in banner["props"]["value"]
        c = Client(url, verbose=False)
        _fails(c, 1, 0.7, api_name="/random_face", match="No models are loaded")
        _fails(c, handle_file(str(ASTRONAUT)), api_name="/invert", match="No models are loaded")
    finally:
        demo.close()
