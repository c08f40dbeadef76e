"""Tiny seeded models in the official file formats (a ``--weights`` folder), and the app on them."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.seeded.tiny import write_tiny_s_stats, write_tiny_weights

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "assets" / "astronaut.png"


@pytest.fixture(scope="session")
def app_weights(tmp_path_factory) -> Path:
    """generator, e4e, IR-SE, CLIP, fs3 and one mapper under their official names."""
    return write_tiny_weights(tmp_path_factory.mktemp("app_weights"))


@pytest.fixture(scope="session")
def app_s_stats(app_weights) -> Path:
    """S statistics from 1000 samples (the official recipe's 100k is too slow for tests)."""
    return write_tiny_s_stats(app_weights, app_weights.parent / "app_s_stats")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(demo, queue_size: int = 8) -> str:
    """Starts ``demo`` in this process on a free port; returns its URL (``demo.close()`` stops it)."""
    port = free_port()
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def running_app(weights: Path, s_stats: Path, downloads: Path, queue_size: int = 8) -> Iterator[str]:
    """The app on the tiny models, as ``python app.py`` builds it, served from this process.

    Torch runs one intra-op thread meanwhile: the tiny networks gain nothing from two, and on a
    loaded 2-core machine two threads per op (times two concurrent renders) make every small op
    wait for a core, about 5x slower. The previous thread count is restored afterwards.

    Yields:
        The app's URL.
    """
    import torch

    import app

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = app.build_parser().parse_args(
        ["--weights", str(weights), "--models", "ffhq", "--offline", "--device", "cpu"]
        + ["--precision", "fp32", "--s-stats", str(s_stats)]
    )
    editor, note = app.load_models(args)
    assert editor is not None, note
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demo = app.build_demo(editor, model_note=note, downloads=app.Downloads(downloads))
    try:
        yield launch(demo, queue_size)
    finally:
        demo.close()
        torch.set_num_threads(threads)
