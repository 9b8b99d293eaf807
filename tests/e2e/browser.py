"""Open a page in headless Chromium and report what a person would see: text, a screenshot, and what went
wrong (script errors, console errors, network requests).

Speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, one JSON message
per NUL-terminated chunk), so it needs nothing beyond the standard library and Debian's ``chromium``.

    python -m tests.e2e.browser PAGE SHOT.png [WIDTH [HEIGHT SCALE]]   # screenshot a page (or its top, scaled)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # root in a container: the sandbox needs namespaces we may not have
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--remote-debugging-pipe",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class PageVisit:
    url: str
    text: str = ""  # document.body.innerText
    title: str = ""
    screenshot: bytes = b""
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself excepted
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console/log errors
    dom: dict[str, Any] = field(default_factory=dict)  # results of the extra expressions


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], out_fd: int, in_fd: int) -> None:
        self.proc = proc
        self.out_fd = out_fd  # we write commands here (Chromium's fd 3)
        self.in_fd = in_fd  # we read answers here (Chromium's fd 4)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.in_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\0")
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.out_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            got = self._read_message(deadline)
            if got.get("id") == self.next_id:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                result: dict[str, Any] = got.get("result", {})
                return result
            self.events.append(got)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            got = self._read_message(deadline)
            self.events.append(got)
            if got.get("method") == method:
                return got


def visit(
    path: Path,
    *,
    width: int = 1280,
    height: int = 900,
    expressions: dict[str, str] | None = None,
    timeout: float = 60,
    small: tuple[int, float] | None = None,
) -> PageVisit:
    """Load ``path`` (a local file) and collect what it shows and what it did. The screenshot is the whole
    page, or with ``small=(HEIGHT, SCALE)`` its top HEIGHT pixels scaled by SCALE (README pictures)."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium; bin/setup does)")
    url = path.resolve().as_uri()
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # the child's ends well above 4, so moving them to 3 and 4 cannot overwrite one with the other
    for fd in (to_chrome_r, from_chrome_w):
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        if fd == to_chrome_r:
            to_chrome_r = high
        else:
            from_chrome_w = high
    profile = tempfile.mkdtemp(prefix="provisioner-chromium-")
    # Chromium reads fd 3 and writes fd 4: bash moves our pipe ends there (dash allows fds 0-9 only)
    script = f'exec 3<&{to_chrome_r} 4>&{from_chrome_w}; exec "$0" "$@"'
    proc = subprocess.Popen(
        [
            "bash",
            "-c",
            script,
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        pass_fds=(to_chrome_r, from_chrome_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(proc, to_chrome_w, from_chrome_r)
    out = PageVisit(url)
    try:
        targets = pipe.call("Target.getTargets", timeout=timeout)["targetInfos"]
        page = next(t for t in targets if t.get("type") == "page")
        session = pipe.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.events.clear()
        pipe.call("Page.navigate", {"url": url}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout=timeout)

        def evaluate(expr: str) -> Any:
            res = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
            return res.get("result", {}).get("value")

        out.text = str(
            evaluate("document.body ? document.body.innerText : document.documentElement.textContent || ''") or ""
        )
        out.title = str(evaluate("document.title") or "")
        for name, expr in (expressions or {}).items():
            out.dom[name] = evaluate(expr)
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if small is not None:
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": small[0], "scale": small[1]}
        shot = pipe.call("Page.captureScreenshot", params, session=session, timeout=timeout)
        out.screenshot = base64.b64decode(shot["data"])
        for ev in pipe.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                req_url = params.get("request", {}).get("url", "")
                if req_url != url and not req_url.startswith("data:"):  # inline data is no fetch
                    out.requests.append(req_url)
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.errors.append(
                    f"exception: {details.get('text')} {details.get('exception', {}).get('description', '')}"
                )
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.errors.append(f"console.error: {params.get('args')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        with contextlib.suppress(RuntimeError, TimeoutError):
            pipe.call("Browser.close", timeout=10)
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        shutil.rmtree(profile, ignore_errors=True)
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 5):
        print(__doc__, file=sys.stderr)
        return 2
    page, shot = Path(argv[0]), Path(argv[1])
    width = int(argv[2]) if len(argv) >= 3 else 1280
    small = (int(argv[3]), float(argv[4])) if len(argv) == 5 else None
    got = visit(page, width=width, height=800, small=small)
    shot.write_bytes(got.screenshot)
    print(f"{shot}: {len(got.screenshot)} bytes; {len(got.requests)} requests; {len(got.errors)} errors")
    for problem in [*got.requests, *got.errors]:
        print(f"  {problem}")
    return 1 if got.requests or got.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
