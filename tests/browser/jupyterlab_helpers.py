"""Page-level helpers for driving JupyterLab 4.6 from Playwright (sync API).

Actions go through the real UI (menus, keyboard); completion is awaited on the promise the
command returns, seen through `window.jupyterapp` (the `jupyter_server` fixture sets
`LabApp.expose_app_in_browser`), so helpers return when work is done, not after a sleep.

Selectors that hold for JupyterLab 4.6 are the constants below; reuse them in tests.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import nbformat

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "artifacts" / "screenshots"

# The notebook panel that is currently shown (others stay in the DOM, hidden).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
# Every cell of the shown notebook, in order. In 4.6 cells sit inside the windowed list
# (.jp-WindowedPanel-outer > -inner > -viewport), not directly under .jp-Notebook.
CELLS = f"{NOTEBOOK} .jp-WindowedPanel-viewport > .jp-Cell"
INPUT_PROMPT = ".jp-InputArea-prompt"  # "[ ]:", "[*]:" while queued/running, "[3]:" after
OUTPUT = ".jp-OutputArea-output"  # one per output; carries data-mime-type
STDOUT_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'
RENDERED_MARKDOWN = ".jp-MarkdownCell .jp-RenderedMarkdown"
# Toolbar kernel indicator of the shown notebook; data-status is idle/busy/starting/...
EXECUTION_INDICATOR = (
    ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status]"
)
# Main-area tab of the shown document; it gains .jp-mod-dirty while there are unsaved changes.
CURRENT_TAB = ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current"
DIALOG = ".jp-Dialog"

DEFAULT_TIMEOUT_MS = 60_000

# Resolves the promise of the next execution of `commandId` (whatever UI triggers it).
_ARM_COMMAND_JS = """
(commandId) => {
  const app = window.jupyterapp;
  if (!app) { throw new Error('window.jupyterapp missing: start lab with expose_app_in_browser'); }
  window.__gemmaLabCommandDone = window.__gemmaLabCommandDone || {};
  const record = {settled: false, error: null, result: null};
  window.__gemmaLabCommandDone[commandId] = record;
  const onExecuted = (_, args) => {
    if (args.id !== commandId) { return; }
    app.commands.commandExecuted.disconnect(onExecuted);
    Promise.resolve(args.result).then(
      (value) => { record.result = (value === undefined ? null : String(value)); },
      (error) => { record.error = String(error && error.message || error); },
    ).finally(() => { record.settled = true; });
  };
  app.commands.commandExecuted.connect(onExecuted);
}
"""
_COMMAND_SETTLED_JS = "(id) => window.__gemmaLabCommandDone[id].settled"
_COMMAND_RECORD_JS = "(id) => window.__gemmaLabCommandDone[id]"


class LabServer(Protocol):
    """What the helpers need of the `jupyter_server` fixture's value."""

    def url(self, path: str = "") -> str: ...

    def api(self, method: str, path: str, body: object | None = None) -> object | None: ...


_CURRENT_KERNEL_JS = """
() => {
  const widget = window.jupyterapp.shell.currentWidget;
  const kernel = widget && widget.sessionContext && widget.sessionContext.session
    && widget.sessionContext.session.kernel;
  return kernel ? {id: kernel.id, status: kernel.status} : null;
}
"""


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """Writes a v4 notebook of `(kind, source)` cells (kind "code" or "markdown")."""
    makers = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    notebook = nbformat.v4.new_notebook(
        cells=[makers[kind](source) for kind, source in cells],
        # A kernelspec in the metadata means no "Select Kernel" dialog on open.
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def open_saved_outputs(page: Page, server: LabServer, name: str, bundles: list[dict]) -> None:
    """Writes notebook `name` with one saved display_data output per MIME bundle (no kernel
    needed to show them) and opens it."""
    cells = [nbformat.v4.new_code_cell(f"# output {i}", outputs=[
        nbformat.v4.new_output("display_data", data=data)]) for i, data in enumerate(bundles)]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, server.root_dir / name)
    open_notebook(page, server, name)


def execute_command(page: Page, command_id: str, args: dict | None = None) -> object:
    """Runs a JupyterLab command by id and waits for its promise (no UI involved)."""
    return page.evaluate(
        "([id, args]) => Promise.resolve(window.jupyterapp.commands.execute(id, args))"
        ".then((r) => (r === undefined ? null : String(r)))",
        [command_id, args or {}],
    )


def run_command_via_ui(
    page: Page, command_id: str, trigger: Callable[[], None], timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> None:
    """Calls `trigger` (a click or key press that runs `command_id`) and waits until the
    command's promise settles; raises if the command failed or never ran."""
    page.evaluate(_ARM_COMMAND_JS, command_id)
    trigger()
    try:
        page.wait_for_function(_COMMAND_SETTLED_JS, arg=command_id, timeout=timeout_ms)
    except Exception as error:  # re-raised naming the command, for the failure report
        raise AssertionError(
            f"JupyterLab command {command_id} did not run or finish within {timeout_ms} ms"
        ) from error
    record = page.evaluate(_COMMAND_RECORD_JS, command_id)
    if record["error"]:
        raise AssertionError(f"JupyterLab command {command_id} failed: {record['error']}")


def click_menu(page: Page, menu: str, item: str) -> None:
    """Opens main-menu `menu` ("Run", "Kernel", ...) and clicks the entry labelled `item`.

    Menu entries carry `data-command`, but the main menu often holds a semantic command
    (`runmenu:run-all`) that forwards to the notebook's own (`notebook:run-all-cells`), so
    entries are matched on their visible label.
    """
    page.locator(
        "#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")
    ).click()
    page.locator(".lm-Menu .lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel").filter(
        has_text=re.compile(rf"^{re.escape(item)}$")
    ).first.click()


def notebook(page: Page) -> Locator:
    return page.locator(NOTEBOOK)


def cell(page: Page, index: int) -> Locator:
    return page.locator(CELLS).nth(index)


def cell_outputs(page: Page, index: int) -> Locator:
    """All output areas of cell `index`; use `.filter(has_text=...)` or `to_contain_text`."""
    return cell(page, index).locator(OUTPUT)


def open_notebook(
    page: Page, server: LabServer, name: str, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> Locator:
    """Opens `name` (relative to the server root) in JupyterLab and waits for its kernel.

    Returns the notebook locator. A "Select Kernel" dialog (notebook without kernelspec
    metadata) is answered with its default, the Python 3 kernel.
    """
    page.goto(server.url(name), wait_until="domcontentloaded", timeout=timeout_ms)
    return wait_for_notebook(page, name, timeout_ms)


def wait_for_notebook(page: Page, name: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Locator:
    """Waits until notebook `name` is the shown tab, its cells are attached and its kernel
    is idle (use after `page.reload()`); returns the notebook locator."""
    tab_label = page.locator(f"{CURRENT_TAB} .lm-TabBar-tabLabel").filter(
        has_text=re.compile(rf"^{re.escape(Path(name).name)}$")
    )
    tab_label.wait_for(timeout=timeout_ms)
    page.locator(CELLS).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(
        f"""() => {{
            const k = ({_CURRENT_KERNEL_JS})();
            const headers = [...document.querySelectorAll('.jp-Dialog .jp-Dialog-header')];
            return (k !== null && k.status === 'idle')
                || headers.some((h) => h.textContent.trim() === 'Select Kernel');
        }}""",
        timeout=timeout_ms,
    )
    dialog = page.locator(DIALOG).filter(
        has=page.locator(".jp-Dialog-header", has_text=re.compile(r"^\s*Select Kernel\s*$"))
    )
    if dialog.count():
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        dialog.wait_for(state="detached", timeout=timeout_ms)
    wait_for_kernel_idle(page, timeout_ms=timeout_ms)
    return notebook(page)


def wait_for_kernel_idle(page: Page, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
    """Waits until the shown notebook has a connected kernel whose status is idle."""
    try:
        page.wait_for_function(
            f"() => {{ const k = ({_CURRENT_KERNEL_JS})(); "
            "return k !== null && k.status === 'idle'; }",
            timeout=timeout_ms,
        )
        page.locator(f'{EXECUTION_INDICATOR}[data-status="idle"]').wait_for(timeout=timeout_ms)
    except Exception as error:  # re-raised with what the page shows, for the failure report
        kernel = page.evaluate(_CURRENT_KERNEL_JS)
        indicator = page.locator(EXECUTION_INDICATOR)
        shown = indicator.first.get_attribute("data-status") if indicator.count() else None
        raise AssertionError(
            f"kernel not idle after {timeout_ms} ms: kernel={kernel}, "
            f"execution indicator data-status={shown!r}"
        ) from error


def run_all_cells(page: Page, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
    """Run > Run All Cells, then waits until every cell has finished executing."""
    run_command_via_ui(
        page,
        "notebook:run-all-cells",
        lambda: click_menu(page, "Run", "Run All Cells"),
        timeout_ms,
    )
    wait_for_kernel_idle(page, timeout_ms)


def run_cell(page: Page, index: int, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
    """Selects cell `index` in command mode and runs it in place (Ctrl+Enter); waits for it."""
    target = cell(page, index)
    target.scroll_into_view_if_needed()
    # Clicking the prompt selects the cell without entering edit mode.
    target.locator(INPUT_PROMPT).first.click()
    page.keyboard.press("Escape")
    run_command_via_ui(
        page, "notebook:run-cell", lambda: page.keyboard.press("Control+Enter"), timeout_ms
    )
    wait_for_kernel_idle(page, timeout_ms)


def save_notebook(page: Page, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
    """Ctrl+S on the shown notebook; waits until the save finished and the tab is clean."""
    # Clicking the current tab's label focuses the notebook without touching its cells.
    page.locator(f"{CURRENT_TAB} .lm-TabBar-tabLabel").click()
    run_command_via_ui(
        page, "docmanager:save", lambda: page.keyboard.press("Control+s"), timeout_ms
    )
    page.locator(f"{CURRENT_TAB}.jp-mod-dirty").wait_for(state="detached", timeout=timeout_ms)


def current_kernel_id(page: Page) -> str | None:
    kernel = page.evaluate(_CURRENT_KERNEL_JS)
    return kernel["id"] if kernel else None


def shutdown_kernel(page: Page, server: LabServer) -> str:
    """Shuts the shown notebook's kernel down via `DELETE /api/kernels/<id>`; returns the id."""
    kernel_id = current_kernel_id(page)
    if kernel_id is None:
        raise AssertionError("the shown notebook has no kernel to shut down")
    server.api("DELETE", f"api/kernels/{urllib.parse.quote(kernel_id)}")
    remaining = [kernel["id"] for kernel in server.api("GET", "api/kernels") or []]
    if kernel_id in remaining:
        raise AssertionError(
            f"kernel {kernel_id} still listed after DELETE: {json.dumps(remaining)}"
        )
    return kernel_id


def screenshot(page: Page, name: str) -> Path:
    """Saves a full-page screenshot to artifacts/screenshots/<name>.png and prints its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    safe_name = re.sub(r"[^\w.-]+", "_", name)
    path = SCREENSHOT_DIR / f"{safe_name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"SCREENSHOT: {path}")
    return path


def element_screenshot(locator: Locator, name: str) -> Path:
    """Saves a screenshot of one element (e.g. a rendered output) to
    artifacts/screenshots/<name>.png and prints its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    safe_name = re.sub(r"[^\w.-]+", "_", name)
    path = SCREENSHOT_DIR / f"{safe_name}.png"
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
    print(f"SCREENSHOT: {path}")
    return path
