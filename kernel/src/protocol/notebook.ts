// nbformat 4 notebooks: reading, and turning a cell's iopub messages into its saved outputs the way Jupyter
// frontends do (consecutive stream text merged, clear_output with and without wait, update_display_data
// replacing every output with that display id, in any cell).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { JsonObject, RoutedMessage } from './wire.js';

export interface NotebookCell {
  cell_type: string;
  source: string | string[];
  metadata: JsonObject;
  outputs?: Output[];
  execution_count?: number | null;
  [key: string]: unknown;
}

export interface Notebook {
  nbformat: number;
  nbformat_minor: number;
  metadata: JsonObject;
  cells: NotebookCell[];
}

export type Output =
  | { output_type: 'stream'; name: string; text: string }
  | { output_type: 'display_data'; data: JsonObject; metadata: JsonObject }
  | { output_type: 'execute_result'; data: JsonObject; metadata: JsonObject; execution_count: number | null }
  | { output_type: 'error'; ename: string; evalue: string; traceback: string[] };

export function readNotebook(path: string): Notebook {
  const notebook = JSON.parse(readFileSync(path, 'utf8')) as Partial<Notebook>;
  if (notebook.nbformat !== 4 || !Array.isArray(notebook.cells)) throw new Error(`${path}: not an nbformat 4 notebook`);
  return { nbformat: 4, nbformat_minor: notebook.nbformat_minor ?? 5, metadata: notebook.metadata ?? {}, cells: notebook.cells };
}

/** As Jupyter writes notebooks: one-space indent, trailing newline. */
export function writeNotebook(path: string, notebook: Notebook): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(notebook, null, 1)}\n`);
}

export function cellSource(cell: NotebookCell): string {
  return Array.isArray(cell.source) ? cell.source.join('') : cell.source;
}

function record(value: unknown): JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : {};
}

/** Collects the outputs of the cells of one notebook run. */
export class OutputCollector {
  private outputs: Output[] = [];
  private clearOnNextOutput = false;
  private readonly displays = new Map<string, Output[]>();

  /** Starts collecting into (a fresh) `cell.outputs`. */
  begin(cell: NotebookCell): void {
    this.outputs = [];
    cell.outputs = this.outputs;
    this.clearOnNextOutput = false;
  }

  add(message: RoutedMessage): void {
    const content = message.content;
    switch (message.header.msg_type) {
      case 'stream': {
        this.beforeOutput();
        const name = String(content.name);
        const text = String(content.text);
        const last = this.outputs.at(-1);
        if (last?.output_type === 'stream' && last.name === name) last.text += text;
        else this.outputs.push({ output_type: 'stream', name, text });
        return;
      }
      case 'display_data': {
        this.beforeOutput();
        const output: Output = { output_type: 'display_data', data: record(content.data), metadata: record(content.metadata) };
        this.outputs.push(output);
        this.remember(content, output);
        return;
      }
      case 'execute_result': {
        this.beforeOutput();
        const count = typeof content.execution_count === 'number' ? content.execution_count : null;
        const output: Output = { output_type: 'execute_result', data: record(content.data), metadata: record(content.metadata), execution_count: count };
        this.outputs.push(output);
        this.remember(content, output);
        return;
      }
      case 'error':
        this.beforeOutput();
        this.outputs.push({
          output_type: 'error',
          ename: String(content.ename),
          evalue: String(content.evalue),
          traceback: Array.isArray(content.traceback) ? content.traceback.map(String) : [],
        });
        return;
      case 'clear_output':
        if (content.wait === true) this.clearOnNextOutput = true;
        else this.outputs.splice(0);
        return;
      case 'update_display_data': {
        const id = record(content.transient).display_id;
        for (const output of typeof id === 'string' ? (this.displays.get(id) ?? []) : []) {
          if (output.output_type === 'display_data' || output.output_type === 'execute_result') {
            output.data = record(content.data);
            output.metadata = record(content.metadata);
          }
        }
        return;
      }
      default:
        return;
    }
  }

  /** Adds an output of the runner's own (e.g. a timeout). */
  push(output: Output): void {
    this.beforeOutput();
    this.outputs.push(output);
  }

  private beforeOutput(): void {
    if (this.clearOnNextOutput) {
      this.outputs.splice(0);
      this.clearOnNextOutput = false;
    }
  }

  private remember(content: JsonObject, output: Output): void {
    const id = record(content.transient).display_id;
    if (typeof id !== 'string') return;
    const list = this.displays.get(id) ?? [];
    list.push(output);
    this.displays.set(id, list);
  }
}
