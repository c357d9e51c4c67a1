"""Debian's jupyter_kernel_test suite against the installed fluxlab kernelspec, every attribute filled."""
from conftest import require_module

jkt = require_module("jupyter_kernel_test")

PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


class FluxlabKernelTests(jkt.KernelTests):
    kernel_name = "fluxlab"
    language_name = "typescript"
    file_extension = ".ts"

    code_hello_world = "console.log('hello, world')"
    code_stderr = "console.error('something went wrong')"

    completion_samples = [
        {"text": "Math.fl", "matches": {"floor"}},
        {"text": "const zebraCount = 1;\nzebraC", "matches": {"zebraCount"}},
        {"text": "'text'.toUpperC", "matches": {"toUpperCase"}},
    ]

    complete_code_samples = ["1 + 1", "const x = 5", "function f() { return 1 }", "for (const i of [1, 2]) {}", ""]
    incomplete_code_samples = ["function f() {", "if (true) {\n  x", "const a = [1,", "1 +", "`template ${", "/* comment"]
    invalid_code_samples = ["x = )", "}", "let = = 1", "'unterminated"]

    code_generate_error = "throw new Error('boom')"

    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": "'a/b'", "result": "'a/b'"},
        {"code": "[1, 'x', { a: null }]", "result": "[ 1, 'x', { a: null } ]"},
        {"code": "({ [Symbol.for('fluxlab.mimeBundle')]() { return { 'text/html': '<b>rich</b>' } } })", "mime": "text/html", "result": "<b>rich</b>"},
    ]

    code_display_data = [
        {"code": "display.html('<b>bold</b>')", "mime": "text/html"},
        {"code": "display.markdown('# title')", "mime": "text/markdown"},
        {"code": "display.svg('<svg xmlns=\"http://www.w3.org/2000/svg\"/>')", "mime": "image/svg+xml"},
        {"code": f"display.png('{PNG_1x1}')", "mime": "image/png"},
        {"code": "display.json({ a: [1, 2] })", "mime": "application/json"},
        {"code": "display({ [Symbol.for('fluxlab.mimeBundle')]() { return { 'text/latex': '$x$' } } })", "mime": "text/latex"},
    ]

    code_history_pattern = "6*7"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "Math.floor"

    code_clear_output = "clearOutput()"

    code_page_something = "Math.floor?"
