"""The fluxlab kernel through jupyter_client: state, imports, interrupts, comms, stdin, signatures, usage."""
import json
import os
import pathlib
import signal
import tempfile
import textwrap
import time
import uuid

import pytest

from conftest import TIMEOUT, collect, execute, require_module, result_text, shell_reply, stdout_text

require_module("jupyter_client")
zmq = require_module("zmq")
from jupyter_client.manager import start_new_kernel  # noqa: E402
from jupyter_client.session import Session  # noqa: E402


def error_of(reply):
    assert reply["status"] == "error", reply
    return reply["ename"], reply["evalue"], reply["traceback"]


def test_state_persists_across_cells(kernel):
    _, kc = kernel
    reply, _ = execute(kc, "let counter = 1;\nfunction bump(by = 1) { counter += by; return counter }\nclass Box { constructor(readonly v: number) {} }")
    assert reply["status"] == "ok"
    reply, outputs = execute(kc, "bump(); bump(2)")
    assert result_text(outputs) == "4"
    _, outputs = execute(kc, "counter")
    assert result_text(outputs) == "4"
    _, outputs = execute(kc, "new Box(counter).v * 10")
    assert result_text(outputs) == "40"
    # Redeclaring is allowed (cells are re-run all day) and the new binding wins everywhere.
    execute(kc, "const counter = 100")
    _, outputs = execute(kc, "bump()")
    assert result_text(outputs) == "101"


def test_top_level_await_and_result_forms(kernel):
    _, kc = kernel
    _, outputs = execute(kc, "const answer = await new Promise((r) => setTimeout(() => r(42), 20));\nanswer")
    assert result_text(outputs) == "42"
    _, outputs = execute(kc, "Promise.resolve(1)")
    assert result_text(outputs) == "Promise { 1 }"
    _, outputs = execute(kc, "{ a: 1, b: 'x' }")
    assert result_text(outputs) == "{ a: 1, b: 'x' }"
    _, outputs = execute(kc, "undefined")
    assert result_text(outputs) is None


def test_node_builtin_imports(kernel):
    _, kc = kernel
    code = textwrap.dedent(
        """\
        import { createHash } from 'node:crypto';
        import path from 'path';
        import * as os from 'os';
        createHash('sha256').update('fluxlab').digest('hex').slice(0, 8) + ' ' + path.posix.join('a', 'b') + ' ' + typeof os.cpus"""
    )
    reply, outputs = execute(kc, code)
    assert reply["status"] == "ok", reply
    import hashlib

    assert result_text(outputs) == "'%s a/b function'" % hashlib.sha256(b"fluxlab").hexdigest()[:8]
    # Imports persist like any declaration.
    _, outputs = execute(kc, "path.basename('/x/y.ts')")
    assert result_text(outputs) == "'y.ts'"


def test_error_traceback_points_into_the_cell(kernel):
    _, kc = kernel
    reply, outputs = execute(kc, "const ok = 1;\nfunction fail(): never {\n  throw new TypeError('bad value')\n}\nfail()")
    ename, evalue, traceback = error_of(reply)
    assert (ename, evalue) == ("TypeError", "bad value")
    count = reply["execution_count"]
    assert any(f"In[{count}]:3:" in line for line in traceback), traceback
    assert any(f"In[{count}]:5:" in line for line in traceback), traceback
    assert [o["msg_type"] for o in outputs] == ["execute_input", "error"]
    reply, _ = execute(kc, "const broken = (1 +;")
    ename, _, traceback = error_of(reply)
    assert ename == "SyntaxError"
    assert f"In[{reply['execution_count']}]:1:" in "\n".join(traceback)


def test_silent_and_store_history(kernel):
    _, kc = kernel
    reply, _ = execute(kc, "1")
    count = reply["execution_count"]
    reply, outputs = execute(kc, "console.log('quiet'); 2", silent=True)
    assert reply["execution_count"] == count
    assert [o["msg_type"] for o in outputs] == ["stream"]
    reply, _ = execute(kc, "3", store_history=False)
    assert reply["execution_count"] == count
    reply, _ = execute(kc, "4")
    assert reply["execution_count"] == count + 1


def test_user_expressions(kernel):
    _, kc = kernel
    reply, _ = execute(kc, "const ue = 21", user_expressions={"double": "ue * 2", "bad": "nope.x"})
    assert reply["user_expressions"]["double"]["data"]["text/plain"] == "42"
    assert reply["user_expressions"]["bad"]["status"] == "error"


def test_display_handle_update(kernel):
    _, kc = kernel
    _, outputs = execute(kc, "const h = display.markdown('step 0');\nh.update('step 1');")
    kinds = [o["msg_type"] for o in outputs]
    assert kinds == ["execute_input", "display_data", "update_display_data"]
    display_id = outputs[1]["content"]["transient"]["display_id"]
    assert outputs[2]["content"]["transient"]["display_id"] == display_id
    assert outputs[2]["content"]["data"]["text/markdown"] == "step 1"


def test_stop_on_error_aborts_queued_requests(kernel):
    _, kc = kernel
    first = kc.execute("await new Promise((r) => setTimeout(r, 200)); throw new Error('first fails')")
    second = kc.execute("'never runs'")
    assert shell_reply(kc, first)["content"]["status"] == "error"
    assert shell_reply(kc, second)["content"]["status"] == "aborted"
    collect(kc, first)
    collect(kc, second)
    reply, outputs = execute(kc, "'runs again'")
    assert result_text(outputs) == "'runs again'"


def interrupt_after(km, kc, code, delay=0.5, how="message"):
    msg_id = kc.execute(code)
    time.sleep(delay)
    started = time.monotonic()
    if how == "message":
        km.interrupt_kernel()
    else:
        km.signal_kernel(signal.SIGINT)
    reply = shell_reply(kc, msg_id, timeout=10)
    elapsed = time.monotonic() - started
    collect(kc, msg_id)
    return reply["content"], elapsed


@pytest.mark.parametrize(
    "code,how",
    [
        ("while (true) {}", "message"),
        ("await new Promise(() => {})", "message"),
        ("await null;\nfor (;;) {}", "message"),
        ("while (true) {}", "signal"),
        ("await new Promise(() => {})", "signal"),
        # Not covered: SIGINT during a busy loop that runs after an await (README, "Interrupts").
    ],
    ids=["busy-loop", "awaited-promise", "loop-after-await", "busy-loop-sigint", "awaited-promise-sigint"],
)
def test_interrupt(kernel, code, how):
    km, kc = kernel
    execute(kc, "let survivor = 'still here'")
    reply, elapsed = interrupt_after(km, kc, code, how=how)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert elapsed < 2.0, f"interrupt took {elapsed:.2f} s"
    _, outputs = execute(kc, "survivor")
    assert result_text(outputs) == "'still here'"


def test_interrupt_stops_synchronous_library_code():
    """A busy loop inside an npm package (not compiled by the kernel) is stopped by SIGINT from the I/O thread."""
    with tempfile.TemporaryDirectory() as folder:
        package = pathlib.Path(folder, "node_modules", "spinner")
        package.mkdir(parents=True)
        (package / "package.json").write_text(json.dumps({"name": "spinner", "version": "1.0.0", "main": "index.js"}))
        (package / "index.js").write_text("exports.spin = () => { for (;;) {} };\n")
        km, kc = start_new_kernel(kernel_name="fluxlab", cwd=folder, startup_timeout=60)
        try:
            reply, _ = execute(kc, "import { spin } from 'spinner'")
            assert reply["status"] == "ok", reply
            reply, elapsed = interrupt_after(km, kc, "spin()")
            assert reply["ename"] == "KeyboardInterrupt", reply
            assert elapsed < 2.0, f"interrupt took {elapsed:.2f} s"
            _, outputs = execute(kc, "typeof spin")
            assert result_text(outputs) == "'function'"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


def test_interrupt_runs_library_handlers(kernel):
    km, kc = kernel
    execute(kc, "import { onInterrupt, interruptSignal } from 'fluxlab';\nlet handled = 'no';")
    reply, _ = interrupt_after(km, kc, "onInterrupt((reason) => { handled = reason.name });\nawait new Promise(() => {})")
    assert reply["ename"] == "KeyboardInterrupt"
    _, outputs = execute(kc, "handled + ' ' + interruptSignal().aborted")
    # The handler ran for the interrupted cell; this cell has a fresh, unaborted signal.
    assert result_text(outputs) == "'KeyboardInterrupt false'"


def test_npm_packages_resolve_from_the_notebook_folder():
    with tempfile.TemporaryDirectory() as folder:
        for name, files in {
            "cjs-pkg": {"package.json": {"name": "cjs-pkg", "main": "index.js"}, "index.js": "exports.greet = (n) => `hi ${n}`;\nexports.default = 'cjs default';\n"},
            "esm-pkg": {
                "package.json": {"name": "esm-pkg", "type": "module", "exports": "./index.js"},
                "index.js": "export const triple = (x) => 3 * x;\nexport default 'esm default';\n",
            },
        }.items():
            package = pathlib.Path(folder, "node_modules", name)
            package.mkdir(parents=True)
            for file, content in files.items():
                (package / file).write_text(json.dumps(content) if isinstance(content, dict) else content)
        pathlib.Path(folder, "local.js").write_text("module.exports = { local: true };\n")
        km, kc = start_new_kernel(kernel_name="fluxlab", cwd=folder, startup_timeout=60)
        try:
            code = textwrap.dedent(
                """\
                import { greet } from 'cjs-pkg';
                import esmDefault, { triple } from 'esm-pkg';
                import { local } from './local.js';
                import { mimeBundle, display as fluxDisplay } from 'fluxlab';
                [greet('x'), triple(2), esmDefault, local, typeof mimeBundle, fluxDisplay === display]"""
            )
            reply, outputs = execute(kc, code)
            assert reply["status"] == "ok", reply
            assert result_text(outputs) == "[ 'hi x', 6, 'esm default', true, 'symbol', true ]"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


def test_comm_round_trip(kernel):
    _, kc = kernel
    setup = textwrap.dedent(
        """\
        import { registerCommTarget, openComm } from 'fluxlab';
        registerCommTarget('echo', (comm, open) => {
          comm.send({ opened: open.data });
          comm.onMsg((message) => comm.send({ echo: message.data }));
          comm.onClose(() => console.log('echo closed'));
        });"""
    )
    reply, _ = execute(kc, setup)
    assert reply["status"] == "ok", reply
    comm_id = uuid.uuid4().hex

    def comm_request(msg_type, content):
        message = kc.session.msg(msg_type, content)
        kc.shell_channel.send(message)
        return collect(kc, message["header"]["msg_id"])

    outputs = comm_request("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {"hello": 1}})
    assert [(o["msg_type"], o["content"]["data"]) for o in outputs] == [("comm_msg", {"opened": {"hello": 1}})]
    outputs = comm_request("comm_msg", {"comm_id": comm_id, "data": {"ping": [1, 2]}})
    assert [(o["msg_type"], o["content"]["comm_id"], o["content"]["data"]) for o in outputs] == [("comm_msg", comm_id, {"echo": {"ping": [1, 2]}})]

    kc.comm_info(target_name="echo")
    info = kc.get_shell_msg(timeout=TIMEOUT)
    assert info["msg_type"] == "comm_info_reply"
    assert info["content"]["comms"] == {comm_id: {"target_name": "echo"}}
    kc.comm_info(target_name="other")
    assert kc.get_shell_msg(timeout=TIMEOUT)["content"]["comms"] == {}

    outputs = comm_request("comm_close", {"comm_id": comm_id, "data": {}})
    assert stdout_text(outputs) == "echo closed\n"

    # Kernel-side open: comm_open on iopub, listed by comm_info.
    reply, outputs = execute(kc, "const telemetry = openComm('fluxlab.telemetry', { step: 0 });\ntelemetry.send({ step: 1 });\ntelemetry.commId")
    opened = [o for o in outputs if o["msg_type"] == "comm_open"]
    assert len(opened) == 1 and opened[0]["content"]["target_name"] == "fluxlab.telemetry"
    assert [o["content"]["data"] for o in outputs if o["msg_type"] == "comm_msg"] == [{"step": 1}]
    kc.comm_info()
    assert opened[0]["content"]["comm_id"] in kc.get_shell_msg(timeout=TIMEOUT)["content"]["comms"]

    # An unknown target is answered with comm_close, as ipykernel does.
    outputs = comm_request("comm_open", {"comm_id": "x1", "target_name": "nobody", "data": {}})
    assert [o["msg_type"] for o in outputs] == ["comm_close"]


def test_input_over_stdin(kernel):
    _, kc = kernel
    msg_id = kc.execute("const name = await input('name? ');\nconst secret = await password('secret? ');\n`${name}/${secret.length}`", allow_stdin=True)
    request = kc.get_stdin_msg(timeout=TIMEOUT)
    assert request["content"] == {"prompt": "name? ", "password": False}
    kc.input("Ada")
    request = kc.get_stdin_msg(timeout=TIMEOUT)
    assert request["content"]["password"] is True
    kc.input("hunter2")
    assert shell_reply(kc, msg_id)["content"]["status"] == "ok"
    assert result_text(collect(kc, msg_id)) == "'Ada/7'"
    reply, _ = execute(kc, "await input('x')", allow_stdin=False)
    assert reply["ename"] == "StdinNotImplementedError"


def test_usage_request(kernel):
    km, kc = kernel
    message = kc.session.msg("usage_request", {})
    kc.control_channel.send(message)
    reply = kc.get_control_msg(timeout=TIMEOUT)
    assert reply["msg_type"] == "usage_reply"
    content = reply["content"]
    assert content["pid"] == km.provisioner.process.pid
    assert content["kernel_memory"] > 10_000_000
    assert 0 <= content["kernel_cpu"]
    assert content["cpu_count"] >= 1
    assert content["host_virtual_memory"]["total"] > content["host_virtual_memory"]["available"] > 0
    assert "gpu_memory" not in content  # nothing here has touched a GPU


def raw_socket(km, channel):
    info = km.get_connection_info()
    context = zmq.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(f"tcp://{info['ip']}:{info[channel + '_port']}")
    return socket


def test_forged_and_garbage_messages_are_ignored(kernel, tmp_path):
    km, kc = kernel
    marker = tmp_path / "ran"
    code = f"require('node:fs').writeFileSync({json.dumps(str(marker))}, 'x')"
    forger = Session(key=b"not-the-key", signature_scheme="hmac-sha256")
    unsigned = Session(key=b"", signature_scheme="hmac-sha256")
    for channel in ("shell", "control"):
        socket = raw_socket(km, channel)
        forger.send(socket, "execute_request", {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        unsigned.send(socket, "execute_request", {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        socket.send_multipart([b"<IDS|MSG>", b"garbage", b"{", b"{}", b"{}", b"{}"])
        socket.send_multipart([b"no delimiter at all"])
        assert socket.poll(1000) == 0, "the kernel answered a forged message"
        socket.close()
    time.sleep(0.5)
    assert not marker.exists(), "a forged execute_request ran code"
    _, outputs = execute(kc, "'alive'")
    assert result_text(outputs) == "'alive'"


def test_shutdown_and_restart():
    km, kc = start_new_kernel(kernel_name="fluxlab", startup_timeout=60)
    try:
        execute(kc, "const before = 1")
        first = km.provisioner.process
        km.restart_kernel(now=False)
        assert first.wait(timeout=10) == 0, "the kernel did not exit cleanly on shutdown_request(restart=True)"
        kc.wait_for_ready(timeout=60)
        _, outputs = execute(kc, "typeof before")
        assert result_text(outputs) == "'undefined'"
        second = km.provisioner.process
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert second.wait(timeout=10) == 0


def test_output_streams_while_the_main_thread_is_busy(kernel):
    """Output reaches the frontend during a long synchronous computation, not only when it ends."""
    _, kc = kernel
    msg_id = kc.execute("console.log('started');\nconst until = Date.now() + 1500;\nwhile (Date.now() < until) {}\n'done'")
    started = time.monotonic()
    while True:
        message = kc.get_iopub_msg(timeout=TIMEOUT)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            break
    assert message["content"]["text"] == "started\n"
    assert time.monotonic() - started < 1.0, "the stream arrived only after the busy loop"
    assert shell_reply(kc, msg_id)["content"]["status"] == "ok"
    collect(kc, msg_id)


def test_interrupt_while_waiting_for_input(kernel):
    km, kc = kernel
    msg_id = kc.execute("await input('never answered')", allow_stdin=True)
    assert kc.get_stdin_msg(timeout=TIMEOUT)["content"]["prompt"] == "never answered"
    km.interrupt_kernel()
    reply = shell_reply(kc, msg_id, timeout=10)["content"]
    assert reply["ename"] == "KeyboardInterrupt"
    collect(kc, msg_id)
    _, outputs = execute(kc, "'usable'")
    assert result_text(outputs) == "'usable'"
