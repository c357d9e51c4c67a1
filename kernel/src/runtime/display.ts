// Rich display contract. Any object with a `[mimeBundle]()` method (the registry symbol
// `Symbol.for('fluxlab.mimeBundle')`, so libraries need not import this module) is shown with the MIME bundle
// it returns, e.g. `{ 'image/png': pngBytes, 'text/plain': 'Image 512x512' }`; this applies to a cell's last
// expression (execute_result) and to `display(value)` (display_data). Values are strings, except that
// Uint8Array values are sent base64-encoded (what Jupyter expects for binary types such as image/png) and JSON
// types (application/json, */*+json) may be plain objects. A method that returns an empty bundle means "show
// nothing" (display handles use this, so `display.html(…)` as a cell's last line does not print its handle).
//
// The kernel installs a DisplayHost; without one (a plain Node program), display() prints the text/plain form.
import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';

export const mimeBundle: unique symbol = Symbol.for('fluxlab.mimeBundle') as typeof mimeBundle;

/** MIME type → data. */
export type MimeBundle = Record<string, unknown>;

export interface RichDisplay {
  [mimeBundle](): MimeBundle;
}

/** Per-MIME-type metadata (e.g. `{ 'image/png': { width: 256 } }`), as in Jupyter's display_data. */
export type MimeMetadata = Record<string, unknown>;

export interface DisplayHost {
  /** Publishes display_data (or update_display_data when `update`) with the given display id. */
  publish(data: MimeBundle, metadata: MimeMetadata, displayId: string, update: boolean): void;
  clearOutput(wait: boolean): void;
}

let host: DisplayHost | undefined;

/** Kernel side: routes display() and clearOutput() to the kernel, or back to stdout with `undefined`. */
export function installDisplayHost(newHost: DisplayHost | undefined): void {
  host = newHost;
}

export function hasMimeBundle(value: unknown): value is RichDisplay {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as Partial<RichDisplay>)[mimeBundle] === 'function'
  );
}

function isJsonMimeType(mimeType: string): boolean {
  return mimeType === 'application/json' || mimeType.endsWith('+json');
}

/** Makes a bundle JSON-safe for the wire: bytes to base64, non-JSON types to strings. */
export function normalizeBundle(bundle: MimeBundle): MimeBundle {
  const out: MimeBundle = {};
  for (const [mimeType, data] of Object.entries(bundle)) {
    if (data === undefined) continue;
    if (data instanceof Uint8Array) out[mimeType] = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
    else if (typeof data === 'string' || isJsonMimeType(mimeType)) out[mimeType] = data;
    else out[mimeType] = String(data);
  }
  return out;
}

/** The text/plain form of a value, as Node's REPL prints it (strings quoted). */
export function plainText(value: unknown): string {
  return inspect(value, { colors: false });
}

/**
 * The bundle a value displays with: its own rich bundle (plus text/plain when it has none), or just
 * text/plain. An empty rich bundle stays empty (nothing is shown).
 */
export function mimeBundleOf(value: unknown): MimeBundle {
  if (hasMimeBundle(value)) {
    const rich = value[mimeBundle]();
    if (typeof rich !== 'object' || rich === null) {
      throw new TypeError('[Symbol.for("fluxlab.mimeBundle")]() must return an object of MIME type → data');
    }
    const bundle = normalizeBundle(rich);
    if (Object.keys(bundle).length > 0 && !('text/plain' in bundle)) bundle['text/plain'] = plainText(value);
    return bundle;
  }
  return { 'text/plain': plainText(value) };
}

export interface DisplayOptions {
  /** Reuse a display id (every output with this id is replaced by `update`); a fresh one by default. */
  displayId?: string;
  metadata?: MimeMetadata;
}

/** What display() returns: updates the output in place (update_display_data). Displays as nothing itself. */
export class DisplayHandle<T = unknown> {
  constructor(
    readonly displayId: string,
    private readonly render: (content: T) => { data: MimeBundle; metadata: MimeMetadata },
  ) {}

  update(content: T): void {
    const { data, metadata } = this.render(content);
    emit(data, metadata, this.displayId, true);
  }

  [mimeBundle](): MimeBundle {
    return {};
  }
}

function emit(data: MimeBundle, metadata: MimeMetadata, displayId: string, update: boolean): void {
  if (host !== undefined) {
    host.publish(data, metadata, displayId, update);
  } else if (Object.keys(data).length > 0) {
    const text = typeof data['text/plain'] === 'string' ? data['text/plain'] : `<${Object.keys(data).join(', ')}>`;
    process.stdout.write(`${text}\n`);
  }
}

function show<T>(content: T, render: (content: T) => MimeBundle, options: DisplayOptions = {}): DisplayHandle<T> {
  const handle = new DisplayHandle<T>(options.displayId ?? randomUUID(), (next) => ({
    data: render(next),
    metadata: options.metadata ?? {},
  }));
  emit(render(content), options.metadata ?? {}, handle.displayId, false);
  return handle;
}

export interface ImageOptions extends DisplayOptions {
  /** Displayed width / height in CSS pixels (Jupyter image metadata). */
  width?: number;
  height?: number;
}

function imageMetadata(mimeType: string, options: ImageOptions): DisplayOptions {
  const size: Record<string, number> = {};
  if (options.width !== undefined) size.width = options.width;
  if (options.height !== undefined) size.height = options.height;
  if (Object.keys(size).length === 0) return options;
  return { ...options, metadata: { ...options.metadata, [mimeType]: size } };
}

function pngData(png: Uint8Array | string): string {
  return typeof png === 'string' ? png : Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64');
}

export interface Display {
  /** Shows a value with its rich MIME bundle (or util.inspect text). */
  (value: unknown, options?: DisplayOptions): DisplayHandle<unknown>;
  html(html: string, options?: DisplayOptions): DisplayHandle<string>;
  markdown(markdown: string, options?: DisplayOptions): DisplayHandle<string>;
  svg(svg: string, options?: DisplayOptions): DisplayHandle<string>;
  /** PNG bytes, or their base64 text. */
  png(png: Uint8Array | string, options?: ImageOptions): DisplayHandle<Uint8Array | string>;
  json(value: unknown, options?: DisplayOptions): DisplayHandle<unknown>;
}

export const display: Display = Object.assign(
  (value: unknown, options?: DisplayOptions) => show(value, mimeBundleOf, options),
  {
    html: (html: string, options?: DisplayOptions) =>
      show(html, (s) => ({ 'text/html': s, 'text/plain': '<HTML>' }), options),
    markdown: (markdown: string, options?: DisplayOptions) =>
      show(markdown, (s) => ({ 'text/markdown': s, 'text/plain': s }), options),
    svg: (svg: string, options?: DisplayOptions) =>
      show(svg, (s) => ({ 'image/svg+xml': s, 'text/plain': '<SVG image>' }), options),
    png: (png: Uint8Array | string, options: ImageOptions = {}) =>
      show(png, (p) => ({ 'image/png': pngData(p), 'text/plain': '<PNG image>' }), imageMetadata('image/png', options)),
    json: (value: unknown, options?: DisplayOptions) =>
      show(
        value,
        (v) => ({ 'application/json': JSON.parse(JSON.stringify(v ?? null)) as unknown, 'text/plain': plainText(v) }),
        options,
      ),
  },
);

/** Clears the output of the current cell; with `wait`, only when the next output arrives (no flicker). */
export function clearOutput(wait = false): void {
  host?.clearOutput(wait);
}
