"""A person opening `jupyter lab` can open every notebook and run it with the project's kernel (issue 5).

One real JupyterLab server runs headless on localhost for the module. Each notebook in notebooks/ loads
through the REST API as a valid notebook and gets a session whose `python3` kernel runs the notebook's
parameters cell and imports facelib from this environment; where Chromium exists (CI installs it), each
notebook also renders in JupyterLab, and an executed copy of the smoke series shows its figures as images on the
page (screenshots in runs/jupyterlab/, which git ignores).
"""

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from lab_server import LabServer, running_lab
from PIL import Image

import facelib

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SCREENSHOTS = REPO / "runs" / "jupyterlab"
CHROMIUM = shutil.which("chromium")

# Printed by the lab kernel as one JSON line: which facelib, which Python environment, which folder.
PROBE = (
    "import json, os, sys, facelib\n"
    "print(json.dumps({'version': facelib.__version__, 'prefix': sys.prefix, 'cwd': os.getcwd()}))"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> LabServer:
    with running_lab(REPO, tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


def relative(notebook: Path) -> str:
    return notebook.relative_to(REPO).as_posix()


def test_notebooks_folder_has_notebooks():
    assert NOTEBOOKS, f"no notebooks in {REPO / 'notebooks'}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_on_project_kernel(lab, notebook):
    model = lab.api("GET", f"/api/contents/{relative(notebook)}").json()
    assert model["type"] == "notebook"
    content = nbformat.from_dict(model["content"])
    nbformat.validate(content)
    assert content.metadata.get("kernelspec", {}).get("name") == "python3"
    parameters = [cell.source for cell in content.cells if "parameters" in cell.metadata.get("tags", [])]

    with lab.session(relative(notebook)) as session:
        result = lab.execute(session["kernel"]["id"], "\n".join([*parameters, PROBE]))

    assert result.status == "ok", result.error
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe == {"version": facelib.__version__, "prefix": sys.prefix, "cwd": str(notebook.parent)}
    assert not lab.sessions_for(relative(notebook)), "session still open after DELETE"


def test_lab_kernel_imports_the_method_dependencies(lab):
    with lab.session("dependency-check", kind="console") as session:
        result = lab.execute(
            session["kernel"]["id"],
            "import facelib, torch, efficientnet_pytorch, umap\nprint(facelib.__version__)",
            timeout=120,  # torch + umap (numba) take seconds to import on a busy machine
        )
    assert result.status == "ok", result.error
    assert result.stdout.strip() == facelib.__version__


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_renders_in_jupyterlab(lab, notebook, tmp_path):
    screenshot = SCREENSHOTS / f"{notebook.stem}.png"
    # ?reset: a fresh workspace, so the page does not also reopen the notebooks of earlier renders.
    url = f"{lab.url}/lab/tree/{relative(notebook)}?reset&token={lab.token}"
    # The notebook's session and kernel run before the page opens (as when a person reopens a notebook),
    # so what the page must attach to is known and ready.
    with lab.session(relative(notebook)) as session:
        assert lab.execute(session["kernel"]["id"], "").status == "ok"
        log_start = lab.log_size()
        dom = html.unescape(render(url, screenshot, profile=tmp_path / "chromium"))
        sessions_seen = [s["id"] for s in lab.sessions_for(relative(notebook))]
        server_log = lab.log_since(log_start)

    assert first_heading(notebook) in dom, "notebook not rendered (login page or load error?)"
    assert "Python 3 (ipykernel)" in dom, "the notebook shows no python3 kernel"
    # The server logs this when a kernel websocket opens. (The status the page shows is not checked: it
    # may still read "Unknown" when Chromium's virtual time budget ends, a moment after connecting.)
    connected = f"Connecting to kernel {session['kernel']['id']}" in server_log
    assert connected, "the page never opened the notebook kernel's websocket"
    dialog = re.search(r'class="[^"]*\bjp-Dialog\b', dom)
    assert not dialog, "JupyterLab shows a dialog (a load or kernel error)"
    assert sessions_seen == [session["id"]], "JupyterLab did not use the notebook's running session"
    server_errors = [line for line in server_log.splitlines() if line.startswith("[E ")]
    assert not server_errors, "\n".join(server_errors)
    colours = Image.open(screenshot).convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, f"{screenshot} looks blank"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_executed_notebook_shows_its_figures_in_jupyterlab(lab, smoke_run, tmp_path):
    executed = SCREENSHOTS / "executed" / "01_data_exploration.ipynb"  # under runs/: served by the lab, ignored by git
    executed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(smoke_run[0] / executed.name, executed)
    url = f"{lab.url}/lab/tree/{relative(executed)}?reset&token={lab.token}"
    dom = render(url, SCREENSHOTS / "executed_01.png", profile=tmp_path / "chromium", size="1400,4000")

    assert first_heading(executed) in dom, "notebook not rendered (login page or load error?)"
    images = re.findall(r'<img[^>]*src="data:image/png;base64,', dom)
    assert images, "no figure (an <img> of a PNG output) on the page"


def first_heading(notebook: Path) -> str:
    """The notebook's title: the first line of its first markdown cell, without the '#' marks."""
    first_markdown = next(cell for cell in nbformat.read(notebook, 4).cells if cell.cell_type == "markdown")
    return first_markdown.source.splitlines()[0].lstrip("#").strip()


def render(url: str, screenshot: Path, profile: Path, timeout: float = 60.0, size: str = "1400,1000") -> str:
    """Open `url` in headless Chromium, save a screenshot, return the DOM after JupyterLab rendered."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
        # Virtual ms: JupyterLab's timers run fast-forward while network waits are real. Much smaller
        # budgets (2 s) make Chromium hang here; the real time a render takes barely depends on it.
        "--virtual-time-budget=15000",
        f"--screenshot={screenshot}", f"--window-size={size}", "--dump-dom", url,
    ]  # fmt: skip
    # Own process group so that a hung Chromium goes together with its renderer and helper processes.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        dom, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == 0, f"chromium exited with {process.returncode}"
    assert screenshot.is_file(), f"chromium wrote no screenshot to {screenshot}"
    return dom
