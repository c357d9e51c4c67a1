// Just enough of Source Map v3 to map positions in a compiled cell back to the cell: base64 VLQ decoding of
// `mappings` and a lookup of the segment covering a generated position.

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_VALUE = new Map([...BASE64].map((char, index) => [char, index]));

/** [generated column, original line, original column], all 0-based, sorted by generated column. */
export type Segment = [number, number, number];

export function decodeMappings(mappings: string): Segment[][] {
  const lines: Segment[][] = [];
  let sourceLine = 0;
  let sourceColumn = 0;
  for (const lineText of mappings.split(';')) {
    const segments: Segment[] = [];
    let generatedColumn = 0;
    for (const segmentText of lineText.split(',')) {
      if (segmentText === '') continue;
      const fields = decodeVlq(segmentText);
      generatedColumn += fields[0];
      // 1-field segments map to nothing; 4 or 5 fields: source index, line, column[, name].
      if (fields.length >= 4) {
        sourceLine += fields[2];
        sourceColumn += fields[3];
        segments.push([generatedColumn, sourceLine, sourceColumn]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

function decodeVlq(text: string): number[] {
  const values: number[] = [];
  let value = 0;
  let shift = 0;
  for (const char of text) {
    const digit = BASE64_VALUE.get(char);
    if (digit === undefined) throw new Error(`invalid base64 VLQ character '${char}'`);
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
    } else {
      values.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return values;
}

export class SourceMapLookup {
  private readonly lines: Segment[][];

  constructor(mappings: string) {
    this.lines = decodeMappings(mappings);
  }

  /** The original (line, column) of a generated position (0-based), or undefined if the line has no mapping. */
  original(line: number, column: number): { line: number; column: number } | undefined {
    const segments = this.lines[line];
    if (segments === undefined || segments.length === 0) return undefined;
    let best = segments[0];
    for (const segment of segments) {
      if (segment[0] > column) break;
      best = segment;
    }
    return { line: best[1], column: best[2] };
  }
}

/** Offsets ↔ 0-based (line, column) in a text, columns in UTF-16 units. */
export class LineIndex {
  private readonly starts: number[] = [0];

  constructor(readonly text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.starts.push(i + 1);
  }

  position(offset: number): { line: number; column: number } {
    let low = 0;
    let high = this.starts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.starts[mid] <= offset) low = mid;
      else high = mid - 1;
    }
    return { line: low, column: offset - this.starts[low] };
  }

  offset(line: number, column: number): number {
    const start = this.starts[Math.min(Math.max(line, 0), this.starts.length - 1)];
    return Math.min(start + Math.max(column, 0), this.text.length);
  }

  lineText(line: number): string {
    const start = this.starts[line] ?? this.text.length;
    const end = line + 1 < this.starts.length ? this.starts[line + 1] - 1 : this.text.length;
    return this.text.slice(start, end);
  }
}
