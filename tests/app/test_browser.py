"""The app in a real browser: headless Chromium driven through Playwright, the server in this
process on the tiny seeded models (``tests/app/conftest.py``) and the real dlib aligner.

The flow is ``scripts/screenshots.py``'s (the same driver makes the README's screenshots): upload
the example photo, a global edit, a mapper edit, a 3-step optimisation with its frames, the
downloads; then the error messages a user sees. Skipped, with the reason, only when the
``playwright`` package or a Chromium binary is missing: ``scripts/install_browser.sh`` installs
Chromium and ``requirements-dev.txt`` has Playwright (the README's test command runs both).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from scripts.screenshots import TABS, AppPage, chromium, find_chromium, run_flow
from tests.app.conftest import running_app

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -r requirements-dev.txt"
)
CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip("Chromium is not installed: run scripts/install_browser.sh", allow_module_level=True)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(app_weights, app_s_stats, tmp_path_factory):
    with running_app(app_weights, app_s_stats, tmp_path_factory.mktemp("downloads")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium(CHROMIUM) as b:
        yield b


@pytest.fixture
def app_page(browser, server):
    """A new browser tab on the app (a new gradio session)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    app_page = AppPage(page, server, timeout_ms=60_000)
    app_page.open()
    yield app_page
    page.close()


def _image(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_upload_edit_in_each_tab_optimise_and_download(app_page, tmp_path):
    seen = run_flow(app_page, out=tmp_path, steps=3)

    # the example photo: aligned with dlib (one face: the mission patch is filtered), inverted
    assert "Inverted face 1 of 1" in seen["note"] and "Identity similarity" in seen["note"]
    aligned = app_page.image_sources("aligned")
    assert len(aligned) == 1 and _image(app_page.fetch(aligned[0])).shape == (32, 32, 3)

    # each tab's edit showed its metrics
    assert '"global"' in seen["global"] and "channels_moved" in seen["global"]
    assert "clip_similarity" in seen["global"] and "identity_similarity" in seen["global"]
    assert '"mapper"' in seen["mapper"] and "rows_changed" in seen["mapper"]

    # the optimisation showed every step, a preview frame per step, then the result
    steps = [s.split(":")[0] for s in seen["statuses"] if s.startswith("Step")]
    assert steps == ["Step 1/3", "Step 2/3", "Step 3/3"], seen["statuses"]
    assert seen["statuses"][-1].startswith("Done: 3 steps")
    assert len(seen["frames"]) >= 2  # distinct preview images appeared while it ran
    before, after = (_image(app_page.fetch(src)) for src in app_page.image_sources("compare"))
    assert before.shape == after.shape == (32, 32, 3) and not np.array_equal(before, after)

    # the download links work in the browser and give the files they name
    assert set(seen["downloads"]) == {
        "optimize_edit.png", "optimize_w_plus.npy", "optimize_latent.npz", "optimize_parameters.json",
        "optimize_in_photo.png",
    }  # fmt: skip
    png = app_page.download("optimize_edit.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and np.array_equal(_image(png), after)
    w_plus = np.load(io.BytesIO(app_page.download("optimize_w_plus.npy")), allow_pickle=False)
    assert w_plus.shape == (8, 512) and np.isfinite(w_plus).all()
    params = json.loads(app_page.download("optimize_parameters.json"))
    assert params["method"] == "optimize" and params["parameters"]["steps"] == 3

    # one screenshot per tab
    for name in TABS:
        shot = Image.open(tmp_path / f"{name}.png")
        assert shot.format == "PNG" and shot.width == 1280 and shot.height > 900


def test_errors_are_shown_and_the_page_keeps_working(app_page, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    app_page.upload(text)
    assert "not an image in a supported format" in app_page.error_toast("not an image")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "blank.png")
    app_page.upload(tmp_path / "blank.png")
    app_page.error_toast("No face was found")
    app_page.page.locator("#global-edit").click()  # nothing to edit yet
    app_page.error_toast("Upload a photo, pick an example or generate a random face first")
    app_page.tab("optimise")
    app_page.fill("prompt", "   ")
    app_page.page.locator("#optimize").click()
    app_page.error_toast("Prompt is empty")

    assert "Inverted face 1 of 1" in app_page.upload_photo()  # the same page still works
    app_page.tab("global")
    app_page.fill("target", "")
    app_page.page.locator("#global-edit").click()
    app_page.error_toast("Target is empty")
    assert '"global"' in app_page.global_edit(target="face with glasses")
