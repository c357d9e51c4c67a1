import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { clearOutput, display, DisplayHandle, installDisplayHost, mimeBundle, mimeBundleOf, type MimeBundle, type MimeMetadata } from './display.js';

interface Published {
  data: MimeBundle;
  metadata: MimeMetadata;
  displayId: string;
  update: boolean;
}

describe('rich display', () => {
  const published: (Published | { clear: boolean })[] = [];
  installDisplayHost({
    publish: (data, metadata, displayId, update) => published.push({ data, metadata, displayId, update }),
    clearOutput: (wait) => published.push({ clear: wait }),
  });
  after(() => installDisplayHost(undefined));

  it('uses an object’s MIME bundle, adding text/plain and base64 for bytes', () => {
    const image = { [mimeBundle]: () => ({ 'image/png': new Uint8Array([137, 80, 78, 71]) }) };
    assert.deepEqual(mimeBundleOf(image), { 'image/png': 'iVBORw==', 'text/plain': "{ [Symbol(fluxlab.mimeBundle)]: [Function: [fluxlab.mimeBundle]] }" });
    assert.deepEqual(mimeBundleOf({ [Symbol.for('fluxlab.mimeBundle')]: () => ({ 'text/plain': 'mine', 'application/json': { a: 1 } }) }), {
      'text/plain': 'mine',
      'application/json': { a: 1 },
    });
    assert.deepEqual(mimeBundleOf('a/b'), { 'text/plain': "'a/b'" });
    assert.deepEqual(mimeBundleOf(new DisplayHandle('x', () => ({ data: {}, metadata: {} }))), {});
    assert.throws(() => mimeBundleOf({ [mimeBundle]: () => 'nope' }), TypeError);
  });

  it('publishes display data with a display id that handles update', () => {
    published.length = 0;
    const handle = display.html('<b>1</b>');
    handle.update('<b>2</b>');
    display.png(new Uint8Array([1, 2]), { width: 64 });
    display({ n: 1 }, { displayId: 'fixed' });
    display.json({ a: undefined, b: [1] });
    clearOutput(true);
    const [first, second, png, value, json, clear] = published as Published[];
    assert.deepEqual(first.data, { 'text/html': '<b>1</b>', 'text/plain': '<HTML>' });
    assert.equal(first.update, false);
    assert.deepEqual([second.data['text/html'], second.update, second.displayId], ['<b>2</b>', true, first.displayId]);
    assert.deepEqual([png.data['image/png'], png.metadata], ['AQI=', { 'image/png': { width: 64 } }]);
    assert.deepEqual([value.data, value.displayId], [{ 'text/plain': '{ n: 1 }' }, 'fixed']);
    assert.deepEqual(json.data['application/json'], { b: [1] });
    assert.deepEqual(clear, { clear: true });
  });
});
