"""Headless Chromium for tests: a plain screenshot, and a page we can wait on.

`screenshot` is Chromium's own ``--screenshot`` (what a user would run). It
fires at the load event, before treescope's arrays draw (they draw on
animation frames once visible), so for those `Page` talks the DevTools
protocol over ``--remote-debugging-pipe`` (no extra package) and polls until
the page says it is done.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def find() -> str | None:
  """The chromium executable (Debian package `chromium`), or None."""
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if path := shutil.which(name):
      return path
  return None


def screenshot(url: str, png: Path, width: int = 1400, height: int = 2400, timeout: float = 120) -> Path:
  """Chromium's own --screenshot of ``url`` into ``png``."""
  with tempfile.TemporaryDirectory() as profile:
    subprocess.run(
        [find(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
         f"--window-size={width},{height}", url],
        check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
  return png


def pixels(png: bytes | Path) -> np.ndarray:
  """RGB uint8 [h, w, 3] of a PNG."""
  import io

  from PIL import Image

  data = png.read_bytes() if isinstance(png, Path) else png
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def count_color(image: np.ndarray, rgb: tuple[int, int, int], tol: int = 24) -> int:
  return int((np.abs(image.astype(int) - np.array(rgb)).sum(-1) <= tol).sum())


class Page:
  """One page in a fresh headless Chromium, driven over the DevTools pipe."""

  def __init__(self, url: str, width: int = 1400, height: int = 1400):
    self._profile = tempfile.TemporaryDirectory()
    to_chrome_r, self._to_chrome = os.pipe()
    self._from_chrome, from_chrome_w = os.pipe()

    # Chromium reads commands on fd 3 and answers on fd 4. bash moves the pipes
    # there: dash redirects only fds 0-9, and a preexec_fn would fork this
    # multithreaded (JAX) process.
    self._proc = subprocess.Popen(
        ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', find(), *FLAGS,
         f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
         "--remote-debugging-pipe", "about:blank"],
        pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    self._buffer, self._next_id, self.exceptions = b"", 0, []
    target = self.call("Target.createTarget", url="about:blank")["targetId"]
    self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    self.call("Runtime.enable")
    self.call("Page.enable")
    self.call("Page.navigate", url=url)

  def call(self, method: str, **params):
    self._next_id += 1
    message = {"id": self._next_id, "method": method, "params": params}
    if getattr(self, "_session", None):
      message["sessionId"] = self._session
    os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
    while True:
      while b"\0" not in self._buffer:
        chunk = os.read(self._from_chrome, 1 << 16)
        if not chunk:
          raise RuntimeError("chromium closed the DevTools pipe")
        self._buffer += chunk
      raw, self._buffer = self._buffer.split(b"\0", 1)
      reply = json.loads(raw)
      if reply.get("method") == "Runtime.exceptionThrown":
        self.exceptions.append(reply["params"]["exceptionDetails"])
      if reply.get("id") == self._next_id:
        if "error" in reply:
          raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

  def evaluate(self, expression: str):
    return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

  def wait_for(self, expression: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.evaluate(expression):
        return True
      time.sleep(0.1)
    return False

  def screenshot(self) -> bytes:
    return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

  def close(self) -> None:
    self._proc.terminate()
    try:
      self._proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self._proc.kill()
    os.close(self._to_chrome)
    os.close(self._from_chrome)
    self._profile.cleanup()

  def __enter__(self) -> "Page":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# True once every treescope container on the page has drawn its arrays.
TREESCOPE_DRAWN = """(() => {
  const roots = [...document.querySelectorAll('treescope-container')];
  return document.readyState === 'complete' && roots.length > 0 && roots.every(r =>
      r.shadowRoot && !r.shadowRoot.textContent.includes('(Loading...)')
      && r.shadowRoot.querySelectorAll('.loading_message').length === 0
      && r.shadowRoot.querySelectorAll('canvas').length > 0);
})()"""
