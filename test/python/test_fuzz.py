"""Fuzz: thousands of malformed frames on every socket; the kernel must stay alive, answer, and run no code."""
import json
import os
import random
import socket as tcp
import time
import uuid

import pytest

from conftest import TIMEOUT, execute, require_module, result_text

require_module("jupyter_client")
zmq = require_module("zmq")
from jupyter_client.session import Session  # noqa: E402

MESSAGES_PER_SOCKET = 1000
SEED = 20261125


def header(msg_type, **extra):
    return {"msg_id": uuid.uuid4().hex, "session": "fuzz", "username": "fuzz", "date": "2026-11-25T00:00:00Z", "msg_type": msg_type, "version": "5.4", **extra}


class Forge:
    """Builds wire messages, correctly signed or not, with chosen (often broken) JSON frames."""

    def __init__(self, key, scheme):
        self.session = Session(key=key, signature_scheme=scheme)
        self.wrong = Session(key=b"wrong-" + key, signature_scheme=scheme)

    def frames(self, parts, signed=True):
        parts = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in parts]
        signature = (self.session if signed else self.wrong).sign(parts)
        return [b"<IDS|MSG>", signature, *parts]


def malformed(rng, forge):
    """One malformed message (a list of frames)."""
    kind = rng.randrange(14)
    noise = lambda n=64: rng.randbytes(rng.randrange(n))  # noqa: E731
    if kind == 0:
        return [noise(512) for _ in range(rng.randrange(1, 8))]
    if kind == 1:  # no delimiter
        return [b"header", b"{}", b"{}", b"{}", b"{}"]
    if kind == 2:  # too few frames after the delimiter
        return [b"<IDS|MSG>", *[b"{}"] * rng.randrange(0, 5)]
    if kind == 3:  # forged signature, otherwise well-formed and dangerous
        return forge.frames([header("execute_request"), {}, {}, {"code": "process.exit(3)"}], signed=False)
    if kind == 4:  # signature of the right length but wrong
        frames = forge.frames([header("kernel_info_request"), {}, {}, {}])
        frames[1] = bytes(reversed(frames[1]))
        return frames
    if kind == 5:  # signed, broken JSON
        parts = [header("kernel_info_request"), {}, {}, {}]
        parts[rng.randrange(4)] = b"{" + noise()
        return forge.frames(parts)
    if kind == 6:  # signed, JSON that is not an object
        parts = [header("kernel_info_request"), {}, {}, {}]
        parts[rng.randrange(4)] = rng.choice([[1, 2], 3, "text", None, True])
        return forge.frames(parts)
    if kind == 7:  # signed, bad header
        bad = rng.choice([{}, {"msg_type": 5, "msg_id": "x", "session": "s"}, {"msg_type": "", "msg_id": "x", "session": "s"}, {"msg_type": "execute_request"}])
        return forge.frames([bad, {}, {}, {"code": "process.exit(4)"}])
    if kind == 8:  # signed, unknown type
        return forge.frames([header("x_" + noise(8).hex()), {}, {}, {}])
    if kind == 9:  # signed, known type, wrong content (must be refused without running anything)
        msg_type, content = rng.choice(
            [
                ("execute_request", {"code": 123}),
                ("execute_request", {"code": None, "silent": "yes"}),
                ("complete_request", {"code": 5, "cursor_pos": "x"}),
                ("complete_request", {"code": "Math.", "cursor_pos": -3}),
                ("inspect_request", {"code": [], "cursor_pos": 1}),
                ("is_complete_request", {"code": None}),
                ("history_request", {"hist_access_type": "bogus"}),
                ("comm_msg", {"comm_id": "missing", "data": {}}),
                ("comm_close", {"comm_id": 7}),
                ("comm_open", {"comm_id": "c", "target_name": 3}),
                ("input_reply", {"value": 42}),
            ]
        )
        return forge.frames([header(msg_type), {}, {}, content])
    if kind == 10:  # invalid UTF-8 inside JSON frames
        return forge.frames([b'{"msg_type": "\xff\xfe"}', {}, {}, {}])
    if kind == 11:  # a large frame
        return [b"<IDS|MSG>", b"0" * 64, rng.randbytes(1 << 20), b"{}", b"{}", b"{}"]
    if kind == 12:  # many frames
        return [noise(16) for _ in range(200)]
    return [b""]


@pytest.fixture(scope="module")
def fuzzed_kernel():
    from jupyter_client.manager import start_new_kernel

    # Every dropped frame is logged (rate-limited); keep the test output readable.
    km, kc = start_new_kernel(kernel_name="fluxlab", startup_timeout=60, env={**os.environ, "FLUXLAB_LOG_LEVEL": "error"})
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_kernel_survives_malformed_frames_on_every_socket(fuzzed_kernel, tmp_path):
    km, kc = fuzzed_kernel
    info = km.get_connection_info()
    forge = Forge(info["key"], info["signature_scheme"])
    rng = random.Random(SEED)
    context = zmq.Context()
    address = lambda channel: f"tcp://{info['ip']}:{info[channel + '_port']}"  # noqa: E731
    sent = {}
    sockets = []
    try:
        for channel, kind in (("shell", zmq.DEALER), ("control", zmq.DEALER), ("stdin", zmq.DEALER), ("hb", zmq.DEALER), ("iopub", zmq.XSUB)):
            socket = context.socket(kind)
            socket.linger = 0
            socket.sndtimeo = 10_000
            socket.connect(address(channel))
            sockets.append(socket)
            time.sleep(0.05)
            for _ in range(MESSAGES_PER_SOCKET):
                frames = malformed(rng, forge)
                if channel == "hb" and rng.random() < 0.5:
                    frames = [b""] + frames  # a REP peer needs the empty envelope to answer
                socket.send_multipart(frames)
            sent[channel] = MESSAGES_PER_SOCKET
        # Bytes that are not ZMTP at all.
        for channel in ("shell", "control", "stdin", "hb", "iopub"):
            for _ in range(5):
                with tcp.create_connection((info["ip"], info[channel + "_port"]), timeout=5) as raw:
                    raw.sendall(rng.randbytes(rng.randrange(1, 4096)))
        assert sum(sent.values()) >= 5 * MESSAGES_PER_SOCKET
    finally:
        for socket in sockets:
            socket.close()
        context.term()

    # Alive, answering on every channel, and nothing forged ran (the forged code would have exited the process).
    time.sleep(1.0)
    assert km.is_alive()
    kc.kernel_info()
    while (reply := kc.get_shell_msg(timeout=TIMEOUT))["msg_type"] != "kernel_info_reply":
        pass
    assert reply["content"]["status"] == "ok"
    reply, outputs = execute(kc, "6 * 7")
    assert result_text(outputs) == "42"
    assert kc.hb_channel.is_beating()
    message = kc.session.msg("usage_request", {})
    kc.control_channel.send(message)
    while (reply := kc.get_control_msg(timeout=TIMEOUT))["parent_header"].get("msg_id") != message["header"]["msg_id"]:
        pass
    assert reply["content"]["pid"] > 0
    assert km.is_alive()
