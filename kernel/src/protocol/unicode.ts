// Jupyter counts cursor positions in Unicode code points (messaging spec 5.2+, "Cursor position"); JavaScript
// strings index UTF-16 code units. Characters outside the BMP (emoji, some CJK) take two units.

/** UTF-16 offset of the code point index `codePoints` (clamped to the text). */
export function codePointsToUtf16(text: string, codePoints: number): number {
  let offset = 0;
  for (let i = 0; i < codePoints && offset < text.length; i++) {
    const unit = text.charCodeAt(offset);
    offset += unit >= 0xd800 && unit <= 0xdbff && offset + 1 < text.length ? 2 : 1;
  }
  return offset;
}

/** Code point index of the UTF-16 offset `offset`. */
export function utf16ToCodePoints(text: string, offset: number): number {
  let codePoints = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (!(unit >= 0xdc00 && unit <= 0xdfff && i > 0 && text.charCodeAt(i - 1) >= 0xd800 && text.charCodeAt(i - 1) <= 0xdbff)) codePoints++;
  }
  return codePoints;
}
