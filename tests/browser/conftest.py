"""Fixtures that drive a real JupyterLab server in headless Debian Chromium.

`jupyter_server` starts `jupyter lab` from this venv on a free port with isolated config,
runtime, settings and workspace dirs; `browser_page` is a Playwright page in a fresh context.
Both FAIL (never skip) when the browser pieces are missing: run `.ci/install_browser.sh`.
On a failed test the report carries the server log tail and a screenshot path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
# Helpers import as a plain module whatever pytest's import mode is.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import jupyterlab_helpers  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_TIMEOUT_S = 120.0
INSTALL_HINT = "run `.ci/install_browser.sh` (installs Debian chromium and the playwright wheel)"

# User settings that keep the UI deterministic: no network news/update toasts, and every cell
# attached to the DOM (JupyterLab 4's default windowing leaves off-screen cells unrendered).
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

_server_log_key = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real JupyterLab in headless Chromium")
    config.addinivalue_line(
        "markers",
        "jupyter_files(*paths): files or folders copied into the jupyter_server root dir",
    )


@dataclass(frozen=True)
class JupyterServer:
    """A running `jupyter lab` started by the `jupyter_server` fixture.

    Attributes:
        base_url: `http://127.0.0.1:<port>/`, with the trailing slash.
        token: the auth token; `url()` and `api()` add it for you.
        root_dir: the server's root (a per-test temp dir); files written here are served.
        log_path: the server's combined stdout/stderr.
    """

    base_url: str
    token: str
    root_dir: Path
    log_path: Path

    def url(self, path: str = "") -> str:
        """Browser URL of `lab/tree/<path>` with the token (`path` relative to root_dir)."""
        quoted = urllib.parse.quote(str(path).lstrip("/"))
        return f"{self.base_url}lab/tree/{quoted}?token={self.token}"

    def api(self, method: str, path: str, body: object | None = None) -> object | None:
        """Calls the REST API (`path` like `api/kernels`); returns decoded JSON or None."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _require_browser_tools() -> None:
    """Fails (not skips) so CI can never pass with browser tests silently left out."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: {INSTALL_HINT}", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(f"the playwright package is not importable: {INSTALL_HINT}", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jupyter_executable() -> list[str]:
    # The venv's own jupyter, so the kernel and server extensions are this venv's.
    jupyter = Path(sys.executable).with_name("jupyter")
    if jupyter.exists():
        return [str(jupyter), "lab"]
    return [sys.executable, "-m", "jupyterlab"]


def _copy_into(source: Path, root_dir: Path) -> None:
    target = root_dir / source.name
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _isolated_env(state_dir: Path) -> dict[str, str]:
    dirs = {
        "JUPYTER_CONFIG_DIR": state_dir / "config",
        "JUPYTER_RUNTIME_DIR": state_dir / "runtime",
        # User data (kernelspecs, notebook signing key); the venv's share/jupyter still counts.
        "JUPYTER_DATA_DIR": state_dir / "data",
        "JUPYTERLAB_SETTINGS_DIR": state_dir / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": state_dir / "lab-workspaces",
        "IPYTHONDIR": state_dir / "ipython",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    for relative, settings in LAB_USER_SETTINGS.items():
        settings_file = dirs["JUPYTERLAB_SETTINGS_DIR"] / relative
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(settings))
    (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_lab_config.json").write_text(
        json.dumps({"LabApp": {"news_url": None, "expose_app_in_browser": True}})
    )
    env = dict(os.environ)
    env.update({name: str(path) for name, path in dirs.items()})
    env.pop("JUPYTER_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_until_ready(server: JupyterServer, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last_error = "no attempt yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"jupyter lab exited with code {process.returncode} before answering "
                f"/api/status; log {server.log_path}:\n{server.log_tail()}",
                pytrace=False,
            )
        try:
            server.api("GET", "api/status")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last_error = repr(error)
        time.sleep(0.25)
    pytest.fail(
        f"jupyter lab did not answer {server.base_url}api/status within "
        f"{SERVER_START_TIMEOUT_S:.0f} s (last error: {last_error}); "
        f"log {server.log_path}:\n{server.log_tail()}",
        pytrace=False,
    )


def _stop(server: JupyterServer, process: subprocess.Popen) -> None:
    if process.poll() is None:
        # Kernels run in their own sessions, so ask the server to stop them before it goes.
        try:
            for kernel in server.api("GET", "api/kernels") or []:
                server.api("DELETE", f"api/kernels/{kernel['id']}")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture
def jupyter_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JupyterServer]:
    """A real `jupyter lab` on 127.0.0.1 serving a per-test temp root dir.

    The root dir starts as a copy of whatever the test names with
    `@pytest.mark.jupyter_files(path, ...)` (paths relative to the repo root or absolute);
    tests may also write notebooks into `jupyter_server.root_dir` at any time.
    """
    _require_browser_tools()
    root_dir = tmp_path / "root"
    root_dir.mkdir()
    for marker in request.node.iter_markers("jupyter_files"):
        for source in marker.args:
            source_path = Path(source)
            if not source_path.is_absolute():
                source_path = REPO_ROOT / source_path
            if not source_path.exists():
                pytest.fail(f"jupyter_files: {source_path} does not exist", pytrace=False)
            _copy_into(source_path, root_dir)

    port = _free_port()
    server = JupyterServer(
        base_url=f"http://127.0.0.1:{port}/",
        token=secrets.token_hex(24),
        root_dir=root_dir,
        log_path=tmp_path / "jupyter-server.log",
    )
    request.node.stash[_server_log_key] = server.log_path
    command = [
        *_jupyter_executable(),
        "--allow-root",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={server.token}",
        f"--ServerApp.root_dir={root_dir}",
    ]
    with server.log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=root_dir,
            env=_isolated_env(tmp_path / "jupyter-state"),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one on teardown
        )
    try:
        _wait_until_ready(server, process)
        yield server
    finally:
        _stop(server, process)


@pytest.fixture(scope="session")
def _chromium() -> Iterator[object]:
    _require_browser_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(_chromium) -> Iterator[object]:
    """A Playwright page (sync API) in a fresh 1400x1000 context of headless Chromium."""
    context = _chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # Test modules import playwright at top level; name the fix next to the ImportError.
    if report.failed and "playwright" in str(report.longrepr):
        report.sections.append(("browser tests", f"playwright is missing: {INSTALL_HINT}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and report.when in ("setup", "call"):
        page = getattr(item, "funcargs", {}).get("browser_page")
        if page is not None and report.when == "call":
            # Taken here, while the page fixture is still open.
            name = re.sub(r"[^\w.-]+", "_", item.name)
            try:
                path = jupyterlab_helpers.screenshot(page, name)
                report.sections.append(("browser screenshot", f"SCREENSHOT: {path}"))
            except Exception as error:  # a dead page must not mask the real failure
                report.sections.append(("browser screenshot", f"screenshot failed: {error!r}"))
        log_path = item.stash.get(_server_log_key, None)
        if log_path is not None and log_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            report.sections.append(("jupyter server log", f"{log_path}\n{tail}"))
    return report
