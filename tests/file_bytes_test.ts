// Reading whole files: more than one read call's worth, at the asked alignment, into the memory given.
import assert from "node:assert/strict";
import { type FileRange, PARALLEL_READ_BYTES, readFileBytes, readRanges } from "../lib/file_bytes.ts";

Deno.test("readFileBytes reads a file of several read calls whole, aligned, into plain or given memory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tensorless-test-" });
  try {
    // Past 64 MiB (one read call), with a tail that is not a multiple of anything.
    const size = (64 << 20) + 4099;
    const expected = new Uint8Array(size);
    for (let i = 0; i < size; i++) expected[i] = Math.imul(i, 0x9e3779b1) >>> 24;
    const path = `${dir}/big.bin`;
    await Deno.writeFile(path, expected);
    const given: Uint8Array[] = [];
    const allocate = (byteLength: number) => {
      const bytes = new Uint8Array(new SharedArrayBuffer(byteLength + 8), 8, byteLength);
      given.push(bytes);
      return bytes;
    };
    for (const into of [undefined, allocate]) {
      const bytes = await readFileBytes(path, { alignOffset: 3, allocate: into });
      assert.equal(bytes.length, size);
      // Byte 3 of the file on an 8-byte boundary.
      assert.equal((bytes.byteOffset + 3) % 8, 0);
      let differing = 0;
      for (let i = 0; i < size; i++) if (bytes[i] !== expected[i]) differing++;
      assert.equal(differing, 0, "the bytes read are the file's");
    }
    assert.equal(given.length, 1);
    assert.equal(given[0].buffer instanceof SharedArrayBuffer, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readFileBytes and readRanges split a large file among readers, each range where it belongs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tensorless-test-" });
  try {
    // Large enough to be split, with a size that is no multiple of a page, so the ranges and the last one's tail differ.
    const size = PARALLEL_READ_BYTES + 3 * 4096 + 4099;
    const expected = new Uint8Array(size);
    for (let i = 0; i < size; i++) expected[i] = Math.imul(i + (i >>> 12), 0x9e3779b1) >>> 24;
    const path = `${dir}/large.bin`;
    await Deno.writeFile(path, expected);
    const shared = (byteLength: number) => new Uint8Array(new SharedArrayBuffer(byteLength + 8), 8, byteLength);
    const unshared = (byteLength: number) => new Uint8Array(new ArrayBuffer(byteLength));
    for (const [allocate, readers] of [[shared, 2], [shared, 3], [unshared, 2]] as const) {
      const bytes = await readFileBytes(path, { alignOffset: 5, allocate, readers });
      assert.equal(bytes.length, size);
      assert.equal((bytes.byteOffset + 5) % 8, 0);
      let first = -1;
      for (let i = 0; i < size && first < 0; i++) if (bytes[i] !== expected[i]) first = i;
      assert.equal(first, -1, `${readers} readers: the bytes read are the file's`);
    }

    // As tensors: ranges of odd sizes with gaps between them, out of order, each into memory of its own.
    const ranges: FileRange[] = [];
    for (let position = 17, i = 0; position < size; i++) {
      const length = Math.min(size - position, (i % 7 + 1) * 3_000_001);
      ranges.push({ position, into: shared(length) });
      position += length + (i % 3) * 4097;
    }
    ranges.reverse();
    // Nothing to read (a file's tensors may all be empty) is no work and no error.
    await readRanges(path, [{ position: 5, into: shared(0) }], 2);
    for (const readers of [1, 2, 3]) {
      for (const range of ranges) range.into.fill(0);
      await readRanges(path, ranges, readers);
      const wrong = ranges.find(({ position, into }) => {
        for (let i = 0; i < into.length; i++) if (into[i] !== expected[position + i]) return true;
        return false;
      });
      assert.equal(wrong, undefined, `${readers} readers: a range of ${wrong?.into.length} at ${wrong?.position}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
