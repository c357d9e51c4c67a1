// is_complete_request from TypeScript's parser: code whose only syntax errors sit at its very end could be
// completed by typing more (an open brace, a dangling operator, an open template or comment): "incomplete",
// with an indent of two spaces per open bracket; an error before the end: "invalid"; no error: "complete".
import ts = require('typescript');
import { helpRequest, parseCell, parseDiagnostics } from './cell-compiler.js';

export type IsCompleteReply = { status: 'complete' } | { status: 'incomplete'; indent: string } | { status: 'invalid' };

const UNTERMINATED_STRING = 1002; // a '…' or "…" string cannot continue on the next line
/** Unterminated constructs that report their error at their start, yet continue across lines. */
const CONTINUES_ACROSS_LINES = new Set([
  1160, // Unterminated template literal.
  1010, // '*/' expected.
]);

function openBrackets(code: string): number {
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, true, ts.LanguageVariant.Standard, code);
  let depth = 0;
  for (let token = scanner.scan(); token !== ts.SyntaxKind.EndOfFileToken; token = scanner.scan()) {
    if (token === ts.SyntaxKind.OpenBraceToken || token === ts.SyntaxKind.OpenParenToken || token === ts.SyntaxKind.OpenBracketToken) depth++;
    else if (token === ts.SyntaxKind.CloseBraceToken || token === ts.SyntaxKind.CloseParenToken || token === ts.SyntaxKind.CloseBracketToken) {
      depth = Math.max(0, depth - 1);
    }
  }
  return depth;
}

export function isComplete(code: string): IsCompleteReply {
  if (code.trim() === '' || helpRequest(code) !== undefined) return { status: 'complete' };
  const diagnostics = parseDiagnostics(parseCell(code));
  if (diagnostics.length === 0) return { status: 'complete' };
  const end = code.trimEnd().length;
  const completable = diagnostics.every(
    (d) => d.code !== UNTERMINATED_STRING && ((d.start ?? 0) >= end || CONTINUES_ACROSS_LINES.has(d.code)),
  );
  if (!completable) return { status: 'invalid' };
  return { status: 'incomplete', indent: '  '.repeat(openBrackets(code)) };
}
