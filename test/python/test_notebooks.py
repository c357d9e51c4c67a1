"""Headless notebook execution: nbclient with the fluxlab kernelspec, and `fluxlab run` (no Python involved)."""
import subprocess

from conftest import FLUXLAB_BIN, ROOT, node_executable, require_module

nbformat = require_module("nbformat")
nbclient = require_module("nbclient")
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook  # noqa: E402

TOUR = ROOT / "notebooks" / "01-kernel-tour.ipynb"
GENERATE = ROOT / "notebooks" / "02-generate.ipynb"
SPEED = ROOT / "notebooks" / "03-speed-and-memory.ipynb"
OFFLOADING = ROOT / "notebooks" / "04-offloading.ipynb"


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


def console_tables(text):
    """The tables console.table printed in `text`, in order: each a list of rows {column: cell, quotes stripped}."""
    tables, header, rows = [], None, None
    for line in text.splitlines():
        if line.startswith("┌"):
            header, rows = None, []
        elif line.startswith("│") and rows is not None:
            cells = [cell.strip().strip("'") for cell in line.split("│")[1:-1]]
            if header is None:
                header = cells
            else:
                rows.append(dict(zip(header, cells)))
        elif line.startswith("└") and rows is not None:
            tables.append(rows)
            rows = None
    return tables


def check_offloading_notebook(nb):
    """The executed 04-offloading notebook: the CPU path (offloading refused, the baseline on the tiny pipeline) or,
    on a CUDA GPU, every offload mode measured."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o["output_type"] == "error"] == []
    stdout = "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout")
    stderr = "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr")
    setup = next(o["data"]["text/plain"] for o in outputs if o["output_type"] == "execute_result")
    on_gpu = "on cpu:" not in setup
    tables = console_tables(stdout)

    # §1, on any machine: how each mode groups every component, and the weights each mode keeps on the GPU.
    plan = next(t for t in tables if t and "leaf groups" in t[0])
    assert [r["component"] for r in plan] == ["text_encoder", "text_encoder_2", "transformer", "vae"]
    assert all(int(r["leaf groups"]) > int(r["block groups"]) > 1 for r in plan), plan
    held = {r["mode"]: float(r["weights on GPU MiB"]) for r in next(t for t in tables if t and "weights on GPU MiB" in t[0])}
    assert held["none"] > held["model"] > held["group"] > held["sequential"] > 0, held

    # §6: the measured rows; the warm-up images equal the baseline's.
    final = [t for t in tables if t and "same image" in t[0]][-1]
    rows = {(r["offload"], r["compile"]): r for r in final}
    assert all(r["same image"] == "true" for key, r in rows.items() if key[1] == "eager"), final
    none = rows[("none", "eager")]
    if not on_gpu:
        # Offloading is refused without CUDA (the lesson), the rest ran on the tiny pipeline.
        assert list(rows) == [("none", "eager")]
        assert stdout.count("throws ERR_FLUXLAB_OFFLOAD_DEVICE") == 4 and "requires a CUDA device" in stdout
        assert stdout.count("This part needs a CUDA GPU") == 3
        assert any("image/png" in o.get("data", {}) for o in outputs)
        assert float(none["peak MiB"]) > 0 and float(none["pinned MiB"]) == 0
    else:
        assert set(rows) == {("none", "eager"), ("model", "eager"), ("group", "eager"), ("sequential", "eager"), ("model", "compile")}
        for key, row in rows.items():
            if key == ("none", "eager"):
                continue
            assert float(row["peak MiB"]) < float(none["peak MiB"]), (key, row, none)
            assert float(row["pinned MiB"]) > 0, (key, row)
            copied, napkin = float(row["copied MiB"]), float(row["napkin MiB"])
            assert napkin <= copied <= 1.02 * napkin, (key, row)
        assert float(rows[("model", "compile")]["capture ms"]) > 0
        assert "transformer.compiled = false" in stdout and "group-offloaded" in stderr
        assert "This part needs a CUDA GPU" not in stdout
    # §7: the committed H100 rows.
    h100 = next(t for t in tables if t and "step vs none" in t[0])
    assert {r["offload"] for r in h100} == {"none", "model", "group"}
    assert "NVIDIA H100" in stdout


def test_nbclient_executes_the_offloading_notebook():
    nb = nbformat.read(OFFLOADING, as_version=4)
    # Run from notebooks/, as Jupyter would, so that §7 finds bench/results/ in this checkout.
    nbclient.NotebookClient(nb, timeout=300, kernel_name="fluxlab", resources={"metadata": {"path": str(OFFLOADING.parent)}}).execute()
    check_offloading_notebook(nb)


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
