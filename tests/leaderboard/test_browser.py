"""The page in headless Chromium, driven through the Chrome DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file descriptors 3 and 4, so no
websocket library is needed): it loads without console errors or dialogs, a click on a column header
reorders the rows, the metric column stays put when a table scrolls sideways, the figures are there,
and a screenshot is written to the test's tmp folder.

Chromium is Debian's ``chromium`` package; when it is missing and apt is available (as root) the test
installs it (``apt-get update`` once, then ``apt-get install -y chromium``), otherwise it is skipped with
the reason.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time

import pytest

from leaderboard import build
from leaderboard_data import HOSTILE, showcase_store, training_folder

pytestmark = pytest.mark.timeout(1800)  # the first run may install Chromium


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and apt-get is not available to install it")
    if os.geteuid() != 0:
        pytest.skip("Chromium is not installed and installing it with apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
        except subprocess.TimeoutExpired:
            pytest.skip(f"`{' '.join(command)}` did not finish in 25 minutes")
        if done.returncode != 0:
            pytest.skip(f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no `chromium` command is on PATH")
    return found


class DevTools:
    """A headless Chromium and one page of it, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, profile, width: int = 1400, height: int = 1000):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def descriptors():  # the browser reads commands on fd 3 and writes replies on fd 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=descriptors, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, *, session: bool = False, timeout: float = 60, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(timeout)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element."""
        box = self.evaluate(f"(function () {{ var e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center', inline: 'nearest'}); "
                            "var r = e.getBoundingClientRect(); "
                            "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_chrome], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture(scope="module")
def page(chromium, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    showcase_store(root / "results", weights_dir=training_folder(root / "weights"))
    html = build(root / "results")[1]
    browser = DevTools(chromium, root / "profile")
    try:
        browser.call("Page.navigate", session=True, url=html.as_uri())
        browser.wait_for("Page.loadEventFired")
        yield browser, root
    finally:
        browser.close()


def rows_of(browser: DevTools, table: str) -> list[str]:
    return browser.evaluate(f"Array.from(document.querySelectorAll('#{table} tbody tr'))"
                            ".map(function (r) { return r.cells[0].dataset.sort; })")


def column_values(browser: DevTools, table: str, column: int) -> list[float | None]:
    values = browser.evaluate(f"Array.from(document.querySelectorAll('#{table} tbody tr'))"
                              f".map(function (r) {{ return r.cells[{column}].dataset.sort || null; }})")
    return [None if v is None else float(v) for v in values]


def test_page_loads_without_console_errors_or_dialogs(page):
    browser, _ = page
    problems = [e for e in browser.events
                if e.get("method") in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening")
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
                or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
    assert problems == []
    assert browser.evaluate("document.title") == "LipSim robustness suite — leaderboard"
    assert HOSTILE in rows_of(browser, "headline-1")  # the script tag in a label is text in the DOM


def test_clicking_a_header_reorders_the_rows(page):
    browser, _ = page
    ranked = rows_of(browser, "headline-1")
    natural = column_values(browser, "headline-1", 2)
    browser.click("#headline-1 thead th:nth-child(3)")  # natural: best first
    after = rows_of(browser, "headline-1")
    expected = [m for _, m in sorted(zip(natural, ranked), key=lambda p: -p[0])]
    assert after == expected and after != ranked
    assert browser.evaluate("document.querySelector('#headline-1 thead th:nth-child(3)')"
                            ".getAttribute('aria-sort')") == "descending"
    values = column_values(browser, "headline-1", 2)
    browser.click("#headline-1 thead th:nth-child(3)")  # again: worst first (a stable sort: ties keep their order)
    assert rows_of(browser, "headline-1") == [m for _, m in sorted(zip(values, after), key=lambda p: p[0])]
    browser.click("#headline-1 thead th:nth-child(2)")  # rank: 1 first
    assert rows_of(browser, "headline-1") == ranked


def test_metric_column_stays_visible_when_a_table_scrolls(page):
    browser, _ = page
    moved = browser.evaluate(
        "(function () { var box = document.querySelector('#details-1-1').parentElement; "
        "var first = box.querySelector('tbody td'), other = box.querySelector('tbody td:nth-child(4)'); "
        "var a = first.getBoundingClientRect().left, b = other.getBoundingClientRect().left; "
        "box.scrollLeft = 400; "
        "return [box.scrollLeft, first.getBoundingClientRect().left - a, other.getBoundingClientRect().left - b]; })()")
    scrolled, metric_shift, other_shift = moved
    assert scrolled > 100 and abs(metric_shift) < 1 and other_shift < -100


def test_figures_are_drawn_and_a_screenshot_is_written(page):
    browser, root = page
    sizes = browser.evaluate("Array.from(document.querySelectorAll('figure svg'))"
                             ".map(function (s) { var r = s.getBoundingClientRect(); return [r.width, r.height]; })")
    assert len(sizes) == 3 and all(w > 300 and h > 150 for w, h in sizes)
    browser.evaluate("window.scrollTo(0, 0)")
    height = browser.call("Page.getLayoutMetrics", session=True)["cssContentSize"]["height"]
    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=1400, height=int(min(height, 8000)),
                 deviceScaleFactor=1, mobile=False)
    shot = browser.call("Page.captureScreenshot", session=True, format="png")
    path = root / "leaderboard.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 50_000
    print(f"screenshot: {path}")
