import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SafetensorsError, SafetensorsFile, float16ToFloat32, writeSafetensors } from './safetensors';

const dir = mkdtempSync(join(tmpdir(), 'fluxlab-safetensors-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function rawFile(name: string, header: unknown, data: Buffer, lengthOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([length, json, data]));
  return path;
}

describe('safetensors', () => {
  const path = join(dir, 'ok.safetensors');
  writeSafetensors(
    path,
    [
      ['a', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }],
      ['ids', { dtype: 'I32', shape: [3], data: new Int32Array([7, -8, 9]) }],
      ['bytes', { dtype: 'U8', shape: [1, 2, 1], data: new Uint8Array([250, 3]) }],
      ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
    ],
    { format: 'pt' },
  );

  it('round-trips tensors, shapes and metadata', () => {
    const file = SafetensorsFile.open(path);
    assert.deepEqual(file.names().sort(), ['a', 'bytes', 'empty', 'ids']);
    assert.deepEqual(file.metadata, { format: 'pt' });
    assert.deepEqual(file.get('a').shape, [2, 3]);
    assert.equal((file.headerByteLength + 8) % 8, 0, 'header padded to 8 bytes');
    assert.deepEqual([...(file.readArray('a') as Float32Array)], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...(file.readArray('ids') as Int32Array)], [7, -8, 9]);
    assert.deepEqual([...(file.readArray('bytes') as Uint8Array)], [250, 3]);
    assert.equal(file.readArray('empty').length, 0);
    assert.equal(file.get('a').offset, 8 + file.headerByteLength);
  });

  it('widens bfloat16 and float16', () => {
    const p = join(dir, 'half.safetensors');
    // 1.5 and -2 in bfloat16; 1.5, -2 and the smallest subnormal in float16.
    writeSafetensors(p, [
      ['b', { dtype: 'BF16', shape: [2], data: new Uint16Array([0x3fc0, 0xc000]) }],
      ['h', { dtype: 'F16', shape: [3], data: new Uint16Array([0x3e00, 0xc000, 0x0001]) }],
    ]);
    const file = SafetensorsFile.open(p);
    assert.deepEqual([...(file.readArray('b') as Float32Array)], [1.5, -2]);
    assert.deepEqual([...(file.readArray('h') as Float32Array)], [1.5, -2, Math.fround(2 ** -24)]);
    assert.deepEqual([...float16ToFloat32(new Uint16Array([0x7c00]))], [Infinity]);
  });

  it('names the file and the tensor when the file is truncated', () => {
    const bytes = readFileSync(path);
    const truncated = join(dir, 'truncated.safetensors');
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
    assert.throws(
      () => SafetensorsFile.open(truncated),
      (err: unknown) =>
        err instanceof SafetensorsError &&
        err.file === truncated &&
        err.tensor === 'ids' &&
        /truncated/.test(err.message) &&
        err.message.includes('truncated.safetensors'),
    );
  });

  it('rejects files too short for a header, absurd header lengths and bad JSON', () => {
    const tiny = join(dir, 'tiny.safetensors');
    writeFileSync(tiny, Buffer.from([1, 2, 3]));
    assert.throws(() => SafetensorsFile.open(tiny), /tiny\.safetensors: 3-byte file has no header/);
    const huge = rawFile('huge.safetensors', {}, Buffer.alloc(0), 1n << 40n);
    assert.throws(() => SafetensorsFile.open(huge), /header length \d+ exceeds/);
    const past = rawFile('past.safetensors', {}, Buffer.alloc(0), 1000n);
    assert.throws(() => SafetensorsFile.open(past), /runs past the end/);
    const badJson = join(dir, 'badjson.safetensors');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(5n);
    writeFileSync(badJson, Buffer.concat([length, Buffer.from('{"a":')]));
    assert.throws(() => SafetensorsFile.open(badJson), /badjson\.safetensors: corrupt header \(invalid JSON/);
    assert.throws(() => SafetensorsFile.open(join(dir, 'missing.safetensors')), /missing\.safetensors: cannot open \(ENOENT\)/);
  });

  it('checks dtype, shape and byte length against each other', () => {
    const mismatch = rawFile('mismatch.safetensors', { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, Buffer.alloc(12));
    assert.throws(() => SafetensorsFile.open(mismatch), /tensor 'w': F32\[2, 2\] needs 16 bytes but data_offsets \[0, 12\] span 12/);
    const dtype = rawFile('dtype.safetensors', { w: { dtype: 'F99', shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4));
    assert.throws(() => SafetensorsFile.open(dtype), /tensor 'w': unknown dtype "F99"/);
    const shape = rawFile('shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, Buffer.alloc(4));
    assert.throws(() => SafetensorsFile.open(shape), /tensor 'w': invalid shape \[-1\]/);
  });

  it('rejects overlapping tensors, holes and trailing bytes', () => {
    const overlap = rawFile(
      'overlap.safetensors',
      { a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'U8', shape: [4], data_offsets: [2, 6] } },
      Buffer.alloc(6),
    );
    assert.throws(() => SafetensorsFile.open(overlap), /tensor 'b': data \[2, 6\) overlaps/);
    const hole = rawFile('hole.safetensors', { a: { dtype: 'U8', shape: [2], data_offsets: [2, 4] } }, Buffer.alloc(4));
    assert.throws(() => SafetensorsFile.open(hole), /tensor 'a': data starts at 2/);
    const trailing = rawFile('trailing.safetensors', { a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] } }, Buffer.alloc(5));
    assert.throws(() => SafetensorsFile.open(trailing), /cover 2 bytes but the data section holds 5/);
  });

  it('refuses to write inconsistent tensors', () => {
    assert.throws(
      () => writeSafetensors(join(dir, 'bad.safetensors'), [['x', { dtype: 'F32', shape: [3], data: new Float32Array(2) }]]),
      /tensor 'x': F32\[3\] needs 12 bytes, got 8/,
    );
  });
});
