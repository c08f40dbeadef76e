"""Drive the app in headless Chromium and screenshot each editing tab (the README's pictures).

    python -m scripts.screenshots --models demo --out docs/screenshots
    python -m scripts.screenshots --tiny --out docs/screenshots       # tiny seeded models

Starts ``python app.py`` on a free port (``--models``, ``--weights``, ``--s-stats`` are passed on;
``--tiny`` first writes the tiny seeded weights of ``scripts/seeded/tiny.py`` into a temporary
folder), opens it in Chromium through Playwright, uploads the example photo, makes a global edit,
a mapper edit and a short optimisation, and writes ``global.png``, ``mapper.png`` and
``optimise.png`` into ``--out``. :class:`AppPage` is the driver; ``tests/app/test_browser.py``
runs the same flow as a test.

Needs the ``playwright`` package and a Chromium binary (Debian: ``apt-get install chromium``, see
``scripts/install_browser.sh``); Playwright's own browser download is not used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "assets" / "astronaut.png"
TABS = {"global": "Global directions", "mapper": "Latent mapper", "optimise": "Optimisation"}
TIMEOUT_MS = 60_000  # for one step of the flow (an inversion or edit on full-size CPU models: seconds)


def find_chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM``, then ``chromium`` / ``chromium-browser`` on PATH)."""
    candidates = [os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) from the system's binary."""
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise RuntimeError("Chromium was not found; run scripts/install_browser.sh (or set $CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the module stays importable (tests skip with the reason)
    PlaywrightError = Exception


class AppPage:
    """The app's page in a browser, driven the way a user does it (elements by their ``elem_id``).

    Args:
        page: a Playwright ``Page``.
        url: the app's address.
        timeout_ms: how long one step (upload, edit, optimisation) may take.
    """

    def __init__(self, page: Any, url: str, timeout_ms: int = TIMEOUT_MS):
        self.page = page
        self.url = url
        self.timeout_ms = timeout_ms
        page.set_default_timeout(timeout_ms)

    def open(self) -> None:
        self.page.goto(self.url)
        self.page.locator("#photo").wait_for()

    # ------------------------------------------------------------------ reading the page
    def text(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id}").inner_text()

    def wait_for_text(self, elem_id: str, text: str) -> str:
        """Waits until the element's text contains ``text``; returns the text."""
        self.page.locator(f"#{elem_id}").filter(has_text=text).wait_for()
        return self.text(elem_id)

    def image_sources(self, elem_id: str) -> list[str]:
        return [img.get_attribute("src") or "" for img in self.page.locator(f"#{elem_id} img").all()]

    def fetch(self, src: str) -> bytes:
        """The bytes behind an image or link ``src`` (through the page's own session)."""
        response = self.page.request.get(src if "://" in src else self.url.rstrip("/") + "/" + src)
        assert response.ok, f"GET {src}: {response.status}"
        return response.body()

    def error_toast(self, text: str) -> str:
        """Waits for an error notification containing ``text``; closes them all; returns its text."""
        toast = self.page.locator(".toast-body").filter(has_text=text).first
        toast.wait_for()
        message = toast.inner_text()
        # Close them all (gradio stacks notifications) so that the next check sees a fresh one;
        # a toast still fading in is inert, hence force, and one may vanish meanwhile.
        for close in self.page.locator(".toast-body .toast-close").all():
            try:
                close.click(force=True, timeout=2000)
            except PlaywrightError:
                pass
        return message

    def downloads(self) -> dict[str, str]:
        """File name -> link of the files in the Downloads box."""
        links = [a.get_attribute("href") or "" for a in self.page.locator("#downloads a[href]").all()]
        return {Path(href.split("?")[0]).name: href for href in links if href}

    def download(self, name: str) -> bytes:
        """Clicks the Downloads link of file ``name`` and returns what the browser saved."""
        link = self.page.locator(f"#downloads a[href$='/{name}']").first
        with self.page.expect_download() as info:
            link.click()
        return Path(info.value.path()).read_bytes()

    # ------------------------------------------------------------------ actions
    def upload(self, path: str | os.PathLike) -> None:
        """Uploads a photo, replacing the one shown (without waiting for the result)."""
        self.clear_photo()
        self.page.locator("#photo input[type=file]").set_input_files(str(path))

    def upload_photo(self, path: str | os.PathLike = ASTRONAUT) -> str:
        """Uploads a photo and waits for the aligned crop and a new inversion note; returns the note.

        (A new note: its text changes; it says how long the inversion took, so even the same
        photo uploaded again gives a different one in practice.)
        """
        before = self.text("inversion-note")
        self.upload(path)
        self.page.wait_for_function(
            "before => { const n = document.querySelector('#inversion-note');"
            " return n && n.innerText.includes('Inverted face') && n.innerText !== before; }",
            arg=before,
        )
        self.page.locator("#aligned img").wait_for()
        return self.text("inversion-note")

    def clear_photo(self) -> None:
        clear = self.page.locator("#photo button[aria-label='Clear']")
        if clear.count():
            clear.first.click()

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=TABS[name]).click()

    def fill(self, elem_id: str, value: str) -> None:
        box = self.page.locator(f"#{elem_id} textarea, #{elem_id} input").first
        box.fill(value)
        # Commit the value (a slider's number box reads it on blur). Not by pressing Tab: that
        # would focus the next control, and leaving an α box later fires an edit of its own.
        box.blur()

    def wait_idle(self) -> None:
        """Waits until no component shows progress (every event has finished)."""
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=status-tracker]')]"
            ".every(e => e.classList.contains('hide') || !e.offsetParent)"
        )

    def global_edit(self, target: str = "face with glasses", neutral: str = "face") -> str:
        """Global-directions tab: the texts, "Render edit"; waits for the metrics; returns them."""
        self.tab("global")
        self.fill("neutral", neutral)
        self.fill("target", target)
        self.page.locator("#global-edit").click()
        self.wait_for_text("metrics", "channels_moved")
        self.wait_idle()
        return self.text("metrics")

    def mapper_edit(self, name: str = "purple_hair") -> str:
        """Mapper tab: picks mapper ``name``, waits for its levels, "Apply mapper"; returns the metrics."""
        self.tab("mapper")
        box = self.page.locator("#mapper input").first
        box.click()
        box.fill(name)
        self.page.get_by_role("option", name=name, exact=True).click()
        self.page.locator("#mapper-info").filter(has_text="edited_rows").wait_for()
        self.page.locator("#mapper-edit").click()
        self.wait_for_text("metrics", '"mapper"')
        self.wait_idle()
        return self.text("metrics")

    def optimise(self, prompt: str | None = None, steps: int = 3) -> tuple[list[str], list[str]]:
        """Optimisation tab: ``steps`` steps of ``prompt`` (None: the prompt the tab starts with);
        returns every status line and preview frame shown.

        A MutationObserver records them in the page: steps on small models come faster than
        polling from here could see them.
        """
        self.tab("optimise")
        if prompt is not None:
            self.fill("prompt", prompt)
        self.fill("steps", str(steps))
        self.page.evaluate(_RECORD_PROGRESS)
        self.page.locator("#optimize").click()
        self.page.locator("#opt-status [data-testid=markdown]").filter(has_text="Done").wait_for()
        self.wait_for_text("metrics", '"optimize"')
        self.wait_idle()
        seen = self.page.evaluate("window.__progress")
        return seen["statuses"], seen["frames"]

    def screenshot(self, path: str | os.PathLike) -> None:
        """The whole page as a PNG with a 256-colour palette (a quarter of the bytes of RGB)."""
        from PIL import Image

        self.wait_idle()
        self.page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as shot:
            image = shot.convert("RGB")
        image.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


# Records each distinct text of the optimisation status and each preview image the page shows.
_RECORD_PROGRESS = """() => {
  const seen = {statuses: [], frames: []};
  window.__progress = seen;
  const record = () => {
    const status = document.querySelector('#opt-status [data-testid=markdown]');
    const text = status ? status.innerText.trim() : '';
    if (text && !seen.statuses.includes(text)) seen.statuses.push(text);
    for (const img of document.querySelectorAll('#opt-preview img')) {
      if (img.src && !seen.frames.includes(img.src)) seen.frames.push(img.src);
    }
  };
  const options = {subtree: true, childList: true, characterData: true, attributes: true};
  new MutationObserver(record).observe(document.body, options);
}"""


def run_flow(
    app_page: AppPage,
    out: Path | None = None,
    steps: int = 3,
    prompt: str | None = None,
    mapper: str = "purple_hair",
) -> dict[str, Any]:
    """Upload the example photo, one edit per tab (screenshot after each when ``out`` is given), the
    mapper edit with ``mapper``.

    Returns:
        What the page showed: the inversion note, each tab's metrics text, the optimisation's
        status lines and frames, and the download links.
    """
    seen: dict[str, Any] = {"note": app_page.upload_photo(ASTRONAUT)}
    seen["global"] = app_page.global_edit()
    if out is not None:
        app_page.screenshot(out / "global.png")
    seen["mapper"] = app_page.mapper_edit(mapper)
    seen["strength"] = app_page.page.locator("#strength input[type=number]").input_value()
    if out is not None:
        app_page.screenshot(out / "mapper.png")
    seen["statuses"], seen["frames"] = app_page.optimise(prompt, steps=steps)
    if out is not None:
        app_page.screenshot(out / "optimise.png")
    seen["downloads"] = app_page.downloads()
    return seen


# ---------------------------------------------------------------------------------- the app
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout_s: float = 600) -> None:
    """Polls ``url`` until the app's page answers (or the process exits, or time runs out)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode} before it started")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the app at {url} did not answer within {timeout_s:.0f} s")


@contextmanager
def app_process(
    app_args: list[str], port: int | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python app.py APP_ARGS --port PORT`` until the block ends; yields (url, process).

    Args:
        log: a file for the app's output (appended); None leaves it on this process's.
    """
    port = port or free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(ROOT / "app.py"), *app_args, "--host", "127.0.0.1", "--port", str(port)]
    out = open(log, "ab") if log is not None else None  # closed below
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        yield f"http://127.0.0.1:{port}/", process
    finally:
        if out is not None:
            out.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tiny_app_args(folder: Path) -> list[str]:
    """Writes the tiny seeded weights into ``folder``; the app arguments that use them."""
    from scripts.seeded.tiny import write_tiny_s_stats, write_tiny_weights

    weights = write_tiny_weights(folder / "weights")
    s_stats = write_tiny_s_stats(weights, folder / "s_stats")
    return ["--weights", str(weights), "--models", "ffhq", "--offline", "--s-stats", str(s_stats)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs")
    ap.add_argument("--models", default=None, choices=("auto", "ffhq", "demo"), help="passed to app.py")
    ap.add_argument("--weights", type=Path, default=None, help="passed to app.py")
    ap.add_argument("--s-stats", type=Path, default=None, help="passed to app.py")
    ap.add_argument("--tiny", action="store_true", help="run on tiny seeded weights (noise pictures)")
    ap.add_argument("--steps", type=int, default=3, help="optimisation steps")
    ap.add_argument("--prompt", default=None, help="optimisation prompt (default: the tab's own)")
    ap.add_argument("--mapper", default="purple_hair", help="mapper of the Mapper tab's edit")
    ap.add_argument("--chromium", default=None, help="Chromium executable (default: found on PATH)")
    ap.add_argument("--width", type=int, default=1280, help="browser window width in px")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            app_args = tiny_app_args(Path(tmp))
        else:
            app_args = [f"--models={args.models}"] if args.models else []
            app_args += ["--weights", str(args.weights)] if args.weights else []
            app_args += ["--s-stats", str(args.s_stats)] if args.s_stats else []
        with app_process(app_args) as (url, process), chromium(args.chromium) as browser:
            wait_until_up(url, process)
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            app_page = AppPage(page, url)
            app_page.open()
            seen = run_flow(app_page, args.out, steps=args.steps, prompt=args.prompt, mapper=args.mapper)
    for name in TABS:
        print(f"wrote {args.out / (name + '.png')}")
    print(f"mapper {args.mapper} applied at strength {seen['strength']}")
    print(f"optimisation: {len(seen['frames'])} frames, last status: {seen['statuses'][-1]}")


if __name__ == "__main__":
    main()
