"""Chapter 1 runs in a real JupyterLab server, the one ``make lab`` opens.

``jupyter lab`` is started as a reader starts it (``python -m jupyter lab``: the same
lookup of the ``jupyter-lab`` command that failed before the extras installed JupyterLab),
with no browser, on 127.0.0.1, a free port, a token, and its own config, data and runtime
folders. The test then talks to it as JupyterLab's page does:

1. the REST API: ``/lab`` serves the page, ``/api/contents`` reads
   ``notebooks/01_autograd.ipynb``, ``/api/sessions`` starts a ``python3`` kernel for it;
2. the kernel's websocket (``/api/kernels/<id>/channels``), in the Jupyter messaging
   protocol: each code cell goes out as an ``execute_request`` on the shell channel, and
   its outputs come back on iopub until the kernel's status is ``idle`` again and the
   ``execute_reply`` has arrived.

It checks that no cell raised, that every cell ran once and in order, that the kernel got
``TINYMBV2_FAST=1`` from the server's environment and works in the chapter's folder, that
the chapter's comparisons with PyTorch printed differences at float64 rounding level, and
that its plot came back as a PNG. The server is shut down whatever happens.
"""
import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
CHAPTER = "01_autograd.ipynb"
START_TIMEOUT = 180  # seconds for the server to answer; it starts in seconds when idle
CELL_TIMEOUT = 900   # seconds per cell, as in test_notebooks.py: CI machines can be busy
# "max |ours - torch| = 2.2e-16": the chapter's float64 comparisons with PyTorch
TORCH_DIFFERENCE = re.compile(r"max \|[^|\n]*- torch\| = ([-+0-9.eE]+)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``jupyter lab`` subprocess and the way to ask it things."""

    def __init__(self, process, token, log, runtime_dir):
        self.process, self.token, self.log, self.runtime_dir = process, token, log, runtime_dir
        self.port = self.url = None  # known once the server has written its jpserver-<pid>.json

    def log_tail(self, chars=4000):
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def request(self, method, path, body=None, timeout=60):
        """The response body of ``method path`` (JSON decoded when it is JSON)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            text = response.read().decode("utf-8")
            kind = response.headers.get("Content-Type", "")
        return json.loads(text) if "json" in kind and text else text

    def _read_port(self):
        """The port from the server's own record (it moves on when the one asked for is taken)."""
        for info in self.runtime_dir.glob("jpserver-*.json"):
            try:
                self.port = json.loads(info.read_text(encoding="utf-8"))["port"]
            except (json.JSONDecodeError, KeyError):  # still being written
                return
            self.url = f"http://127.0.0.1:{self.port}"

    def wait_until_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited with {self.process.returncode}:\n"
                            + self.log_tail())
            if self.port is None:
                self._read_port()
                time.sleep(0.5)
                continue
            try:
                self.request("GET", "/api/status", timeout=5)
                return
            except urllib.error.HTTPError as e:  # it answers, but not as it should
                pytest.fail(f"jupyter lab answered /api/status with {e}:\n" + self.log_tail())
            except (urllib.error.URLError, ConnectionError, TimeoutError):  # not listening yet
                time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT} s:\n" + self.log_tail())

    def shut_down(self):
        """Ask the server to stop (it stops its kernels), else terminate it, else kill it."""
        if self.process.poll() is not None:
            return
        try:
            if self.url is None:  # it never said where it listens
                raise ConnectionError
            self.request("POST", "/api/shutdown", timeout=10)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    token = secrets.token_hex(16)
    env = dict(os.environ,
               TINYMBV2_FAST="1",  # the kernel inherits the server's environment
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               IPYTHONDIR=str(tmp_path / "ipython"))
    env.pop("MPLBACKEND", None)  # the kernel picks its inline backend, as for a reader
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
             f"--port={_free_port()}", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={NOTEBOOK_DIR}",
             "--allow-root"],  # CI containers run as root; the flag changes nothing otherwise
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Server(process, token, log, tmp_path / "runtime")
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.shut_down()


def _message(msg_type, content, session):
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session,
                       "username": "test", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content,
            "channel": "shell", "buffers": []}


class Kernel:
    """A kernel's websocket: requests out on the shell channel, their replies and outputs back."""

    def __init__(self, connection, session):
        self.connection, self.session = connection, session

    async def _receive(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the kernel did not finish in time")
        text = await asyncio.wait_for(self.connection.read_message(), remaining)
        if text is None:
            raise ConnectionError("the server closed the kernel's websocket")
        return json.loads(text)

    async def kernel_info(self, timeout):
        request = _message("kernel_info_request", {}, self.session)
        await self.connection.write_message(json.dumps(request))
        deadline = time.monotonic() + timeout
        while True:
            msg = await self._receive(deadline)
            if (msg["msg_type"] == "kernel_info_reply"
                    and msg["parent_header"].get("msg_id") == request["header"]["msg_id"]):
                return msg["content"]

    async def execute(self, code, timeout):
        """(execute_reply content, the iopub output messages) of running ``code``."""
        request = _message("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}, self.session)
        await self.connection.write_message(json.dumps(request))
        deadline = time.monotonic() + timeout
        reply, idle, outputs = None, False, []
        while reply is None or not idle:  # the reply and the idle status come in either order
            msg = await self._receive(deadline)
            if msg["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                continue
            if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
                outputs.append(msg)
        return reply, outputs


async def _run_cells(server, kernel_id, sources):
    """Each source's (execute_reply, outputs), run one after another in the kernel."""
    session = uuid.uuid4().hex
    url = (f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
           f"?session_id={session}")
    connection = await websocket_connect(HTTPRequest(
        url, headers={"Authorization": f"token {server.token}"}, request_timeout=60))
    try:
        kernel = Kernel(connection, session)
        info = await kernel.kernel_info(timeout=START_TIMEOUT)
        assert info["language_info"]["name"] == "python"
        return [await kernel.execute(code, CELL_TIMEOUT) for code in sources]
    finally:
        connection.close()


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _text(outputs):
    return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")


def test_jupyter_lab_serves_its_page_offline(server):
    page = server.request("GET", "/lab")
    assert "<title>JupyterLab</title>" in page
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page)
    assert scripts, "the lab page loads no script"
    elsewhere = [s for s in scripts if re.match(r"(https?:)?//", s)]
    assert not elsewhere, f"the lab page loads scripts from another host: {elsewhere}"


def test_chapter_one_runs_through_the_server(server):
    model = server.request("GET", f"/api/contents/{CHAPTER}?content=1")
    assert model["type"] == "notebook"
    sources = [_source(c) for c in model["content"]["cells"] if c["cell_type"] == "code"]
    assert sources, f"{CHAPTER} has no code cells"

    session = server.request("POST", "/api/sessions", {
        "path": CHAPTER, "name": CHAPTER, "type": "notebook", "kernel": {"name": "python3"}})
    probe = "import os\nprint(repr(TINYMBV2_FAST), os.getcwd(), sep='\\n')"
    try:
        results = asyncio.run(_run_cells(server, session["kernel"]["id"], sources + [probe]))
    except (TimeoutError, asyncio.TimeoutError, ConnectionError) as e:
        pytest.fail(f"{type(e).__name__}: {e}\n" + server.log_tail())

    errors = [(i, m["content"]["ename"], m["content"]["evalue"])  # the probe's index is last
              for i, (_, outputs) in enumerate(results) for m in outputs
              if m["msg_type"] == "error"]
    assert not errors, f"code cells that raised (index, error, message): {errors}"
    replies = [reply for reply, _ in results]
    assert [r["status"] for r in replies] == ["ok"] * len(replies)
    assert [r["execution_count"] for r in replies] == list(range(1, len(replies) + 1))

    fast, cwd = _text(results[-1][1]).split("\n")[:2]
    assert fast == "True", "the kernel did not get TINYMBV2_FAST=1 from the server"
    assert Path(cwd).resolve() == NOTEBOOK_DIR.resolve()

    printed = "".join(_text(outputs) for _, outputs in results[:-1])
    differences = [float(x) for x in TORCH_DIFFERENCE.findall(printed)]
    assert differences, "the chapter printed no comparison with PyTorch:\n" + printed[-3000:]
    assert max(differences) < 1e-10, f"differences with PyTorch: {differences}"  # float64
    pngs = [m for _, outputs in results for m in outputs
            if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"]]
    assert pngs, "the chapter's plot did not come back as a PNG"
