// Captures what a cell (or anything it calls) writes to process.stdout / process.stderr, console.* included,
// and hands it to the kernel as stream output. Writes from native code to file descriptors 1 and 2 are not
// captured; they reach the kernel's own terminal/log.

export type StreamName = 'stdout' | 'stderr';
type Write = typeof process.stdout.write;

function textOf(chunk: unknown, encoding: unknown): string {
  if (typeof chunk === 'string') return chunk;
  if (chunk instanceof Uint8Array) {
    return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString(typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  }
  return String(chunk);
}

/** Redirects both streams to `sink`; returns a function that restores them. */
export function captureStdio(sink: (name: StreamName, text: string) => void): () => void {
  const originals: [NodeJS.WriteStream, Write][] = [
    [process.stdout, process.stdout.write],
    [process.stderr, process.stderr.write],
  ];
  for (const [stream, name] of [
    [process.stdout, 'stdout'],
    [process.stderr, 'stderr'],
  ] as const) {
    stream.write = ((chunk: unknown, encoding?: unknown, callback?: unknown): boolean => {
      const done = typeof encoding === 'function' ? encoding : callback;
      sink(name, textOf(chunk, encoding));
      if (typeof done === 'function') queueMicrotask(() => (done as (error?: Error) => void)());
      return true;
    }) as Write;
  }
  return () => {
    for (const [stream, write] of originals) stream.write = write;
  };
}
