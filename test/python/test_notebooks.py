"""Headless notebook execution: nbclient with the fluxlab kernelspec, and `fluxlab run` (no Python involved)."""
import subprocess

from conftest import FLUXLAB_BIN, ROOT, node_executable, require_module

nbformat = require_module("nbformat")
nbclient = require_module("nbclient")
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook  # noqa: E402

TOUR = ROOT / "notebooks" / "01-kernel-tour.ipynb"
GENERATE = ROOT / "notebooks" / "02-generate.ipynb"
SPEED = ROOT / "notebooks" / "03-speed-and-memory.ipynb"


def small_notebook():
    return new_notebook(
        cells=[
            new_markdown_cell("# test"),
            new_code_cell("const xs = [1, 2, 3];\nxs.map((x) => x * 2)"),
            new_code_cell("console.log('sum', xs.reduce((a, b) => a + b));\nconsole.error('warn')"),
            new_code_cell("display.png('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')"),
            new_code_cell("const h = display.html('<i>0</i>');\nh.update('<i>1</i>');"),
            new_code_cell("clearOutput(true);\nconsole.log('after clear')"),
        ],
        metadata={"kernelspec": {"name": "fluxlab", "display_name": "TypeScript (fluxlab)", "language": "typescript"}},
    )


def check_small_notebook(nb):
    nbformat.validate(nb)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == [1, 2, 3, 4, 5]
    assert cells[0].outputs[0]["data"]["text/plain"] == "[ 2, 4, 6 ]"
    assert [(o["name"], o["text"]) for o in cells[1].outputs] == [("stdout", "sum 6\n"), ("stderr", "warn\n")]
    assert cells[2].outputs[0]["output_type"] == "display_data" and "image/png" in cells[2].outputs[0]["data"]
    assert cells[3].outputs[0]["data"]["text/html"] == "<i>1</i>"
    assert [o.get("text") for o in cells[4].outputs] == ["after clear\n"]


def test_nbclient_executes_a_notebook(tmp_path):
    nb = small_notebook()
    nbclient.NotebookClient(nb, timeout=60, kernel_name="fluxlab", resources={"metadata": {"path": str(tmp_path)}}).execute()
    check_small_notebook(nb)


def test_nbclient_executes_the_tour_notebook(tmp_path):
    nb = nbformat.read(TOUR, as_version=4)
    nbclient.NotebookClient(nb, timeout=60, kernel_name="fluxlab", resources={"metadata": {"path": str(TOUR.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    assert errors == []
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_nbclient_executes_the_generate_notebook_on_the_embedded_model(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUXLAB_MODEL", raising=False)
    nb = nbformat.read(GENERATE, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="fluxlab", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o["output_type"] == "error"] == []
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("RANDOM" in o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert (tmp_path / "out" / "astronaut.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nbclient_executes_the_speed_and_memory_notebook(tmp_path):
    nb = nbformat.read(SPEED, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="fluxlab", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o["output_type"] == "error"] == []
    streams = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    # console.table of the dense (bf16 on a GPU, float32 on the CPU) and NF4 rows: NF4 holds the transformer in less
    table = [line for line in streams.splitlines() if line.startswith("│")]
    header = [cell.strip() for cell in table[0].split("│")[1:-1]]
    nf4, dense = sorted(({h: c.strip() for h, c in zip(header, line.split("│")[1:-1])} for line in table[1:]),
                        key=lambda r: r["weights"] != "'nf4'")
    assert nf4["weights"] == "'nf4'" and float(nf4["transformer MiB"]) < float(dense["transformer MiB"]), (nf4, dense)
    assert "sameImage: true" in "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    # The step profile on a GPU, or the reason it is skipped without one.
    assert "ms of GPU time in ops" in streams or "cuda.profile needs a CUDA device" in streams


def fluxlab_run(*args):
    return subprocess.run([node_executable(), str(FLUXLAB_BIN), "run", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_fluxlab_run_executes_a_notebook(tmp_path):
    source = tmp_path / "small.ipynb"
    nbformat.write(small_notebook(), source)
    out = tmp_path / "out" / "small.ipynb"
    out.parent.mkdir()
    run = fluxlab_run(source, "--out", out)
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout
    check_small_notebook(nbformat.read(out, as_version=4))
    # The input stays as it was; without --out the outputs go into the notebook itself.
    assert all(not c.get("outputs") for c in nbformat.read(source, as_version=4).cells if c.cell_type == "code")
    assert fluxlab_run(source).returncode == 0
    check_small_notebook(nbformat.read(source, as_version=4))


def test_fluxlab_run_fails_on_a_cell_error(tmp_path):
    source = tmp_path / "failing.ipynb"
    nb = new_notebook(cells=[new_code_cell("1"), new_code_cell("throw new RangeError('nope')"), new_code_cell("'not reached'")])
    nbformat.write(nb, source)
    run = fluxlab_run(source)
    assert run.returncode == 1
    assert "RangeError" in run.stderr
    cells = nbformat.read(source, as_version=4).cells
    assert cells[1].outputs[-1]["output_type"] == "error" and cells[1].outputs[-1]["ename"] == "RangeError"
    assert cells[2].outputs == [] and cells[2].execution_count is None


def test_fluxlab_run_interrupts_a_cell_past_its_timeout(tmp_path):
    source = tmp_path / "slow.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("while (true) {}")]), source)
    run = fluxlab_run(source, "--timeout", "1")
    assert run.returncode == 1
    outputs = nbformat.read(source, as_version=4).cells[0].outputs
    assert [o["ename"] for o in outputs if o["output_type"] == "error"] == ["KeyboardInterrupt", "CellTimeoutError"]
