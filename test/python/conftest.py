"""Shared setup of the Python protocol tests (jupyter_client, jupyter_kernel_test, nbclient).

The kernelspec is installed into a temporary prefix with `fluxlab install --prefix` and JUPYTER_PATH points
there, so the tests use this checkout's kernel and never touch the user's Jupyter setup. A missing Python
module skips the tests that need it with the reason printed, except under CI=true, where it is an error.
"""
import importlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLUXLAB_BIN = ROOT / "kernel" / "bin" / "fluxlab.js"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TIMEOUT = 30

_prefix = tempfile.mkdtemp(prefix="fluxlab-jupyter-")
JUPYTER_PATH = os.path.join(_prefix, "share", "jupyter")


def node_executable():
    node = os.environ.get("FLUXLAB_NODE") or shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")
    return node


def require_module(name):
    """Imports a module the tests need; skips the calling test module without it (fails under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        if CI:
            raise RuntimeError(f"Python module {name} is missing under CI=true; .ci/run installs it") from error
        pytest.skip(f"Python module {name} is not installed ({error})", allow_module_level=True)


def pytest_configure(config):
    if not (ROOT / "kernel" / "dist" / "cli" / "main.js").exists():
        raise pytest.UsageError("kernel/dist is missing: run `npm run build` first")
    subprocess.run(
        [node_executable(), str(FLUXLAB_BIN), "install", "--prefix", _prefix],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.environ["JUPYTER_PATH"] = JUPYTER_PATH


def pytest_unconfigure(config):
    shutil.rmtree(_prefix, ignore_errors=True)


def collect(kc, msg_id, timeout=TIMEOUT):
    """iopub messages of one request, status excluded, up to its idle status."""
    outputs = []
    deadline = time.monotonic() + timeout
    while True:
        message = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "status":
            if message["content"]["execution_state"] == "idle":
                return outputs
            continue
        outputs.append(message)


def shell_reply(kc, msg_id, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def execute(kc, code, timeout=TIMEOUT, **options):
    """Runs code; returns (reply content, iopub outputs)."""
    msg_id = kc.execute(code, **options)
    reply = shell_reply(kc, msg_id, timeout)
    return reply["content"], collect(kc, msg_id, timeout)


def result_text(outputs):
    results = [o for o in outputs if o["msg_type"] == "execute_result"]
    return results[-1]["content"]["data"]["text/plain"] if results else None


def stdout_text(outputs):
    return "".join(o["content"]["text"] for o in outputs if o["msg_type"] == "stream" and o["content"]["name"] == "stdout")


@pytest.fixture(scope="module")
def kernel():
    """A fluxlab kernel (manager, client) for the tests of one module."""
    manager = require_module("jupyter_client.manager")
    km, kc = manager.start_new_kernel(kernel_name="fluxlab", startup_timeout=60)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)
