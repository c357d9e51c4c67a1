import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { globToRegExp, History } from './history.js';

function filled(): History {
  const history = new History();
  ['6 * 7', "'a/b'", 'x = 1', '6 * 7', 'six()'].forEach((code, i) => history.add(i + 1, code));
  history.setOutput(1, '42');
  return history;
}

describe('History', () => {
  it('tail: the last n entries, with outputs on request', () => {
    const history = filled();
    assert.deepEqual(history.request({ hist_access_type: 'tail', n: 2 }), [
      [1, 4, '6 * 7'],
      [1, 5, 'six()'],
    ]);
    assert.deepEqual(history.request({ hist_access_type: 'tail', n: 5, output: true })[0], [1, 1, ['6 * 7', '42']]);
  });

  it('range: [start, stop) of the current session (0 means current)', () => {
    const history = filled();
    assert.deepEqual(history.request({ hist_access_type: 'range', session: 1, start: 2, stop: 4 }).map((h) => h[1]), [2, 3]);
    assert.equal(history.request({ hist_access_type: 'range', session: 0, start: 1 }).length, 5);
    assert.deepEqual(history.request({ hist_access_type: 'range', session: -1, start: 1 }), []);
  });

  it('search: SQLite GLOB patterns, unique, last n', () => {
    const history = filled();
    assert.deepEqual(history.request({ hist_access_type: 'search', pattern: '6*7' }).map((h) => h[1]), [1, 4]);
    assert.deepEqual(history.request({ hist_access_type: 'search', pattern: '6*7', unique: true }).map((h) => h[1]), [4]);
    assert.deepEqual(history.request({ hist_access_type: 'search', pattern: 's?x*', n: 1 }).map((h) => h[2]), ['six()']);
    assert.deepEqual(history.request({ hist_access_type: 'search', pattern: '[xy] = *' }).map((h) => h[2]), ['x = 1']);
    assert.throws(() => history.request({ hist_access_type: 'nope' }));
  });

  it('translates globs without regex surprises', () => {
    assert.ok(globToRegExp('a.b').test('a.b'));
    assert.ok(!globToRegExp('a.b').test('axb'));
    assert.ok(globToRegExp('[^a]*').test('bcd'));
    assert.ok(!globToRegExp('[^a]*').test('abc'));
    assert.ok(globToRegExp('(x)+').test('(x)+'));
  });
});
