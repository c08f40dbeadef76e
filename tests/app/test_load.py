"""Load on the running app through ``gradio_client``: concurrent users, errors among them, memory.

The server runs in this process on the tiny seeded models (``tests/app/conftest.py``), so its
resident memory is this process's (``/proc/self/status``; the clients only add a few objects).
"""

from __future__ import annotations

import gc
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

GLASSES = ("face with glasses", "face")
N_CLIENTS = 8


@pytest.fixture(scope="module")
def server(app_weights, app_s_stats, tmp_path_factory):
    with running_app(app_weights, app_s_stats, tmp_path_factory.mktemp("downloads"), queue_size=32) as url:
        yield url


def _pixels(file: dict) -> np.ndarray:
    """An image output left on the server (``download_files=False``), fetched by its URL."""
    data = httpx.get(file["url"], timeout=30).content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _three_edits(url: str, seed: int) -> list[np.ndarray]:
    """One user: a face from ``seed``, then a global edit, a mapper edit and another global edit,
    each applied before the next. Returns the three results (only those images are downloaded)."""
    c = Client(url, verbose=False, download_files=False)
    c.predict(seed, 0.7, api_name="/random_face")
    results = []
    for api_name, args in (
        ("/edit_global", (*GLASSES, 3.0 + seed % 3, 0.15)),
        ("/edit_mapper", ("purple_hair", 0.4)),
        ("/edit_global", ("smiling face", "face", -2.0, 0.12)),
    ):
        (_, after), metrics, *_ = c.predict(*args, api_name=api_name)
        assert metrics["method"] == api_name.removeprefix("/edit_")
        results.append(_pixels(after))
        c.predict(api_name="/apply")
    return results


def _bad_requests(url: str, folder: Path) -> int:
    """A user sending bad input while the others edit; returns how many errors came back."""
    c = Client(url, verbose=False)
    (folder / "text.png").write_text("not an image")
    Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / "grey.png")
    errors = 0
    for call in (
        lambda: c.predict(handle_file(str(folder / "text.png")), api_name="/invert"),
        lambda: c.predict(handle_file(str(folder / "grey.png")), api_name="/invert"),
        lambda: c.predict(*GLASSES, 4.0, 0.15, api_name="/edit_global"),  # no face yet
        lambda: c.predict("", "face", 4.0, 0.15, api_name="/edit_global"),
    ):
        try:
            call()
        except Exception:
            errors += 1
    return errors


@pytest.mark.slow
def test_concurrent_users_get_their_own_results(server, tmp_path):
    seeds = list(range(10, 10 + N_CLIENTS))
    with ThreadPoolExecutor(max_workers=N_CLIENTS + 1) as pool:
        bad = pool.submit(_bad_requests, server, tmp_path)
        concurrent = list(pool.map(lambda s: _three_edits(server, s), seeds))
        assert bad.result() == 4  # every bad request failed, and failed alone
    for a in range(N_CLIENTS):  # different seeds: different faces, at every step
        for b in range(a + 1, N_CLIENTS):
            assert not np.array_equal(concurrent[a][-1], concurrent[b][-1])
    # each user's results are exactly those of the same user alone: nothing leaked between sessions
    for seed, results in zip(seeds, concurrent, strict=True):
        alone = _three_edits(server, seed)
        for step, (got, expected) in enumerate(zip(results, alone, strict=True)):
            assert np.array_equal(got, expected), f"seed {seed}, edit {step + 1}"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the RSS from /proc (Linux)")
def test_100_edits_do_not_grow_memory(server):
    c = Client(server, verbose=False, download_files=False)  # the server's memory is measured
    c.predict(5, 0.7, api_name="/random_face")

    def edit(i: int) -> None:  # a full global edit: render, metrics, downloads written, new session
        (_, after), metrics, *_ = c.predict(*GLASSES, -5.0 + (i % 21) * 0.5, 0.15, api_name="/edit_global")
        assert metrics["method"] == "global"

    for i in range(5):  # warm-up: caches (text directions, allocator pools) fill here
        edit(i)
    gc.collect()
    before = _rss_mb()
    for i in range(100):
        edit(i)
    gc.collect()
    grown = _rss_mb() - before
    print(f"RSS {before:.0f} MB before, {grown:+.1f} MB after 100 edits")
    assert grown < 100
    assert c.predict(*GLASSES, 0.2, api_name="/channels_moved") >= 0  # still answering
