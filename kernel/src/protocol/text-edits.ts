// Applies non-overlapping replacements to a text and maps offsets in the result back to the original, so that
// positions the compiler reports in the rewritten cell can be shown in the cell the user typed.

export interface TextEdit {
  /** Replaces original[start, end) (start === end: an insertion) with `text`. */
  start: number;
  end: number;
  text: string;
  /** Where the new text maps to in the original (default: `start`). */
  origin?: number;
}

interface Piece {
  editedStart: number;
  originalStart: number;
  length: number;
  /** Copied text maps offset by offset; replacement text maps to the start of what it replaced. */
  copied: boolean;
}

export class EditedText {
  readonly text: string;
  private readonly pieces: Piece[] = [];

  constructor(
    readonly original: string,
    edits: readonly TextEdit[],
  ) {
    // By position; at one position insertions go before a replacement, and otherwise keep their order.
    const isInsertion = (edit: TextEdit): number => (edit.start === edit.end ? 0 : 1);
    const sorted = edits
      .map((edit, index) => ({ edit, index }))
      .sort((a, b) => a.edit.start - b.edit.start || isInsertion(a.edit) - isInsertion(b.edit) || a.index - b.index);
    const chunks: string[] = [];
    let originalAt = 0;
    let editedAt = 0;
    const copy = (until: number): void => {
      if (until <= originalAt) return;
      chunks.push(original.slice(originalAt, until));
      this.pieces.push({ editedStart: editedAt, originalStart: originalAt, length: until - originalAt, copied: true });
      editedAt += until - originalAt;
      originalAt = until;
    };
    for (const { edit } of sorted) {
      if (edit.start < originalAt || edit.end < edit.start || edit.end > original.length) {
        throw new RangeError(`overlapping or out-of-range edit [${edit.start}, ${edit.end})`);
      }
      copy(edit.start);
      chunks.push(edit.text);
      this.pieces.push({ editedStart: editedAt, originalStart: edit.origin ?? edit.start, length: edit.text.length, copied: false });
      editedAt += edit.text.length;
      originalAt = edit.end;
    }
    copy(original.length);
    this.text = chunks.join('');
  }

  toOriginal(offset: number): number {
    // Linear: a cell has a handful of edits, and mapping only happens for errors.
    for (const piece of this.pieces) {
      if (offset >= piece.editedStart && offset < piece.editedStart + piece.length) {
        return piece.copied ? piece.originalStart + (offset - piece.editedStart) : piece.originalStart;
      }
    }
    return this.original.length;
  }
}
