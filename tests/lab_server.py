"""A real JupyterLab server for tests: headless on a free localhost port, isolated from the user's
Jupyter settings, and always stopped (kernels included).

Named lab_server, not jupyter_server: tests/ is on sys.path under pytest and must not shadow that package.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websocket

HTTP_TIMEOUT = 30.0

# User settings of this server only: no autosave, so opening a notebook never rewrites the file, and
# no news fetch (no network, and no pop-up over the screenshot).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@dataclass
class Execution:
    """What a kernel answered to one execute request."""

    status: str  # "ok" | "error" | "aborted"
    stdout: str = ""
    error: str = ""  # ename: evalue and traceback when status is "error"


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    log: Path  # the server's stdout and stderr
    http: requests.Session = field(default_factory=requests.Session)

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        """What the server logged after the first `offset` bytes of its log."""
        return self.log.read_bytes()[offset:].decode(errors="replace")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.http.request(
            method,
            self.url + path,
            headers={"Authorization": f"token {self.token}"},
            timeout=HTTP_TIMEOUT,
            **kwargs,
        )
        response.raise_for_status()
        return response

    def sessions_for(self, path: str) -> list[dict]:
        return [s for s in self.api("GET", "/api/sessions").json() if s["path"] == path]

    @contextmanager
    def session(self, path: str, kind: str = "notebook", kernel: str = "python3") -> Iterator[dict]:
        """A session with a new kernel for `path`, as JupyterLab creates on opening a file; deleted after."""
        body = {"path": path, "name": Path(path).name, "type": kind, "kernel": {"name": kernel}}
        session = self.api("POST", "/api/sessions", json=body).json()
        try:
            yield session
        finally:
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def execute(self, kernel_id: str, code: str, timeout: float = 60.0) -> Execution:
        """Run `code` on a kernel through the server's websocket channel, as the JupyterLab frontend does."""
        ws_url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        request = _execute_request(code)
        deadline = time.monotonic() + timeout
        connection = websocket.create_connection(
            f"{ws_url}?session_id={request['header']['session']}",
            header=[f"Authorization: token {self.token}"],
            timeout=timeout,
        )
        try:
            connection.send(json.dumps(request))
            return _collect_execution(connection, request["header"]["msg_id"], deadline)
        finally:
            connection.close()


def _execute_request(code: str) -> dict:
    # Legacy (JSON) kernel websocket protocol: one message per frame, with its channel named in it.
    return {
        "channel": "shell",
        "header": {
            "msg_id": uuid.uuid4().hex,
            "session": uuid.uuid4().hex,
            "username": "facelib-tests",
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "buffers": [],
    }


def _collect_execution(connection: websocket.WebSocket, msg_id: str, deadline: float) -> Execution:
    """Read replies to `msg_id` until both the execute_reply and the kernel's return to idle arrived."""
    stdout, error, status, idle = [], "", None, False
    while status is None or not idle:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"kernel gave no complete answer in time; stdout so far: {''.join(stdout)!r}")
        connection.settimeout(remaining)
        message = json.loads(connection.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream" and content["name"] == "stdout":
            stdout.append(content["text"])
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
        elif kind == "execute_reply":
            status = content["status"]
    return Execution(status, "".join(stdout), error)


@contextmanager
def running_lab(root: Path, workdir: Path, startup_timeout: float = 60.0) -> Iterator[LabServer]:
    """Run `python -m jupyterlab` serving `root` until the block ends; Jupyter's own config, data and
    runtime folders (and the IPython profile) live in `workdir`, so the user's setup neither changes the
    result nor gets changed."""
    env = _isolated_env(workdir)
    token = secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--allow-root",  # harmless as a normal user; containers often run tests as root
        "--ip=127.0.0.1",
        "--port=0",  # the OS picks a free port; read back from the server's info file
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        f"--FileCheckpoints.root_dir={workdir / 'checkpoints'}",  # no .ipynb_checkpoints in the repo
    ]  # fmt: skip
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        # Own process group: if a graceful stop fails, the whole group goes with one signal.
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        runtime_dir = Path(env["JUPYTER_RUNTIME_DIR"])
        yield _wait_until_answering(process, runtime_dir, token, log_path, startup_timeout)
    finally:
        _stop(process)


def _isolated_env(workdir: Path) -> dict:
    folders = {name: workdir / name for name in ("config", "data", "runtime", "ipython")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for relative, values in LAB_SETTINGS.items():
        settings_file = folders["config"] / "lab" / "user-settings" / relative
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(values))
    return {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(folders["config"]),
        "JUPYTER_DATA_DIR": str(folders["data"]),
        "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(folders["config"] / "lab" / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(folders["config"] / "lab" / "workspaces"),
        "IPYTHONDIR": str(folders["ipython"]),
        "OMP_NUM_THREADS": "1",  # kernels share 2 cores with other work
    }


def _wait_until_answering(
    process: subprocess.Popen, runtime_dir: Path, token: str, log_path: Path, timeout: float
) -> LabServer:
    info_file = runtime_dir / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            port = json.loads(info_file.read_text())["port"]
            server = LabServer(f"http://127.0.0.1:{port}", token, log_path)
            server.api("GET", "/api/status")
            return server
        except (OSError, ValueError, requests.RequestException):
            pass  # info file not (fully) written yet, or HTTP not answering yet
        time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM makes the server shut its kernels down and exit; kill the group if it does not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
