"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for UI tests.

Just enough CDP: open a page, wait until its text contains what a person looks for (clicking what
a person would click on the way), read the rendered text, save a screenshot. ``websocket-client``
is in the lock; no Playwright download.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.backends.mlflow_server import free_port

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1500,1000",
]

DEEP_TEXT = """(function t(n) {
  let s = '';
  if (n.shadowRoot) s += t(n.shadowRoot);
  for (const c of n.childNodes) {
    if (c.nodeType === 3) s += c.textContent + ' ';
    else if ((c.nodeType === 1 && !['SCRIPT', 'STYLE'].includes(c.tagName)) || c.nodeType === 11)
      s += t(c);
  }
  return s;
})(document.body || document.documentElement)"""

DEEP_COUNT = """(function c(n, sel) {
  let k = n.querySelectorAll(sel).length;
  for (const e of n.querySelectorAll('*')) if (e.shadowRoot) k += c(e.shadowRoot, sel);
  return k;
})(document, %s)"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return (result.get("result") or {}).get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The rendered text, shadow roots included (TensorBoard's Polymer dashboards use them)."""
        return str(self.js(DEEP_TEXT) or "")

    def wait_for(self, *needles: str, timeout: float = 90.0, click: str | None = None) -> str:
        """The page's text once it holds every needle; ``click``: a CSS selector clicked meanwhile."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            if click:
                self.js(f"document.querySelectorAll({json.dumps(click)}).forEach(b => b.click())")
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(1.0)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"page never showed {missing}; it shows:\n{text[:3000]}")

    def count(self, selector: str) -> int:
        """Elements matching ``selector``, shadow roots included."""
        return int(self.js(DEEP_COUNT % json.dumps(selector)) or 0)

    def wait_for_count(self, selector: str, at_least: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        found = 0
        while time.monotonic() < deadline:
            found = self.count(selector)
            if found >= at_least:
                return found
            time.sleep(1.0)
        raise AssertionError(f"{selector!r}: {found} on the page, expected at least {at_least}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def browser() -> Iterator[Page]:
    """One headless Chromium with one page; stopped afterwards."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    port = free_port()
    # Chromium's children may still write to the profile while it is removed: never fail on that
    with tempfile.TemporaryDirectory(
        prefix="sweepyard-chromium-", ignore_cleanup_errors=True
    ) as profile:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            page = Page(_page_ws(port, proc))
            try:
                yield page
            finally:
                page.ws.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _page_ws(port: int, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("chromium's DevTools endpoint did not answer within 60 s")
