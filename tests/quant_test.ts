// Dequantization is bit-exact against llama.cpp's reference (gguf-py) and the
// block dot products agree with dequantize-then-dot.
import assert from "node:assert/strict";
import { parseGguf } from "../lib/gguf.ts";
import { readFileBytes } from "../lib/file_bytes.ts";
import { bf16ToFloat, dequantizeRow, dotRow, halfToFloat } from "../lib/quant.ts";
import { type Matrix, TENSOR_TYPES, type TensorType } from "../lib/tensor.ts";
import { seededRandom } from "./fixtures.ts";
import { haveShared, sharedPath } from "./shared_data.ts";

/** One `dequantized_rows` entry of ../shared/gguf/cases.json. */
interface DequantizedRows {
  tensor: string;
  type: string;
  shape: [number, number];
  rows: number[];
  file: string;
}

interface GgufCase {
  model: string;
  dequantized_rows: DequantizedRows[];
}

const ggufCases: GgufCase[] = haveShared ? JSON.parse(Deno.readTextFileSync(sharedPath("gguf/cases.json"))) : [];

function sharedTest(name: string, fn: () => void | Promise<void>): void {
  if (haveShared) Deno.test(name, fn);
  else Deno.test({ name: `${name} (skipped: ../shared absent)`, ignore: true, fn });
}

for (const c of ggufCases) {
  sharedTest(`dequantized rows of ${c.model} match llama.cpp bit for bit`, async () => {
    const gguf = parseGguf(await readFileBytes(sharedPath(c.model)), c.model);
    for (const entry of c.dequantized_rows) {
      const t = gguf.tensors.find((t) => t.name === entry.tensor);
      assert.ok(t, entry.tensor);
      assert.equal(t.typeName, entry.type);
      assert.deepEqual(t.shape, entry.shape);
      const w: Matrix = { type: t.type!, rows: t.shape[1], cols: t.shape[0], data: t.data };
      const expected = new Uint32Array((await Deno.readFile(sharedPath(`gguf/${entry.file}`))).buffer);
      const out = new Float32Array(w.cols);
      const x = new Float32Array(w.cols).map((_, i) => Math.sin(i * 0.37) * 0.5);
      entry.rows.forEach((row, k) => {
        dequantizeRow(w, row, out);
        const got = new Uint32Array(out.buffer);
        for (let i = 0; i < w.cols; i++) {
          if (got[i] !== expected[k * w.cols + i]) {
            assert.fail(`${entry.tensor} row ${row} value ${i}: ${out[i]} != llama.cpp's`);
          }
        }
        assertDotAgrees(w, row, out, x);
      });
    }
  });
}

/** dotRow against the float64 dot of the dequantized row, within float32 rounding. */
function assertDotAgrees(w: Matrix, row: number, dequantized: Float32Array, x: Float32Array): void {
  let expected = 0, magnitude = 0;
  for (let i = 0; i < w.cols; i++) {
    expected += dequantized[i] * x[i];
    magnitude += Math.abs(dequantized[i] * x[i]);
  }
  const got = dotRow(w, row, x, 0);
  assert.ok(
    Math.abs(got - expected) <= 1e-6 * magnitude + 1e-30,
    `${w.type} row ${row}: dotRow ${got}, dequantize+dot ${expected}`,
  );
}

/** Offsets of the float16 scale fields in each quantized block: they get sane values, the rest random bytes. */
const HALF_FIELDS: Record<Exclude<TensorType, "F32" | "F16" | "BF16">, number[]> = {
  Q4_0: [0],
  Q4_1: [0, 2],
  Q5_0: [0],
  Q5_1: [0, 2],
  Q8_0: [0],
  Q2_K: [80, 82],
  Q3_K: [108],
  Q4_K: [0, 2],
  Q5_K: [0, 2],
  Q6_K: [208],
};

/**
 * SHA-256 of the float32 bytes of 64 seeded random blocks dequantized by a numpy
 * transcription of gguf-py's `dequantize_blocks` (llama.cpp's reference
 * dequantizer), for the types the shared files do not contain as well as those they do.
 */
const REFERENCE_SHA256: Record<keyof typeof HALF_FIELDS, string> = {
  Q4_0: "ed6e3546709be3874ddf6af08668809edd1873302e0fe6464de7e23d070f660a",
  Q4_1: "9fb535f176ce15c26166bc3bd441cff6530c9e5ffebf435dca54930c539c0be2",
  Q5_0: "b4ed9f87fb8fc1fbe336ddfa6c84b940c1e9e012175222839a1af18dfdbe01bb",
  Q5_1: "d44ff7dd5c99127b83c32ba24c13df11e196959e464c208b51ce5eb2d7b53c04",
  Q8_0: "62b90c3fa505d3cecd52820bd6ac36253517b746dde912e461d7994a8aec7bb2",
  Q2_K: "1ed2bcad076e9e0f0c60ec3fb1d98a9c563f311839a02e4491ab9827cad95a6c",
  Q3_K: "72a5850f5db07ea8ef104000711c37e9d2491f17d259c4bee63e26157c80784b",
  Q4_K: "1153c945a779b04640642058bfbaf5c4bf9ad1d7b9398e3fcebc7aff190bd0fb",
  Q5_K: "6546ed6475e3592f7a8fe16dc9ca382da70ae7d4da9e0c50080f655f0e6373d3",
  Q6_K: "f96c75aff8efa3ed5e02cf23fb26bc0b7c1a59b78a90630c69fcc7cb7c4ca6aa",
};

/** The generator the reference hashes were made with (a 32-bit LCG: simple to reproduce in numpy). */
function lcgBytes(): () => number {
  let s = 12345;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) & 0xff;
  };
}

/** 64 blocks of `type`: random bytes with float16 scales of moderate size and either sign. */
function randomBlocks(type: keyof typeof HALF_FIELDS, next: () => number, blocks = 64): Uint8Array {
  const { blockBytes } = TENSOR_TYPES[type];
  const data = new Uint8Array(blocks * blockBytes);
  for (let i = 0; i < data.length; i++) data[i] = next();
  for (let b = 0; b < blocks; b++) {
    for (const field of HALF_FIELDS[type]) {
      const h = (next() & 0x80 ? 0x8000 : 0) | ((5 + (next() % 16)) << 10) | ((next() << 2) & 0x3ff);
      data[b * blockBytes + field] = h & 0xff;
      data[b * blockBytes + field + 1] = h >> 8;
    }
  }
  return data;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("every quantized type dequantizes random blocks exactly as llama.cpp's reference does", async () => {
  for (const type of Object.keys(HALF_FIELDS) as (keyof typeof HALF_FIELDS)[]) {
    const data = randomBlocks(type, lcgBytes());
    const cols = 64 * TENSOR_TYPES[type].blockSize;
    const out = new Float32Array(cols);
    dequantizeRow({ type, rows: 1, cols, data }, 0, out);
    assert.equal(await sha256Hex(new Uint8Array(out.buffer)), REFERENCE_SHA256[type], type);
  }
});

Deno.test("dotRow agrees with dequantizeRow + dot for every type, row and offset", () => {
  const random = seededRandom(3);
  for (const type of Object.keys(TENSOR_TYPES) as TensorType[]) {
    const { blockSize, blockBytes } = TENSOR_TYPES[type];
    const cols = blockSize === 1 ? 96 : 2 * blockSize;
    const rows = 3;
    let data: Uint8Array;
    if (type in HALF_FIELDS) {
      const next = () => Math.floor(random() * 256);
      data = randomBlocks(type as keyof typeof HALF_FIELDS, next, rows * (cols / blockSize));
    } else {
      const values = new Float32Array(rows * cols).map(() => random() * 2 - 1);
      data = encodeFloats(type, values);
    }
    assert.equal(data.length, rows * (cols / blockSize) * blockBytes);
    const w: Matrix = { type, rows, cols, data };
    const xOffset = 5;
    const x = new Float32Array(cols + xOffset).map(() => random() * 2 - 1);
    const row = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      dequantizeRow(w, r, row);
      assertDotAgrees(w, r, row, x.subarray(xOffset));
      assert.equal(dotRow(w, r, x, xOffset), dotRow(w, r, x.slice(xOffset), 0));
    }
  }
});

/** F32, F16 or BF16 bytes of `values` (F16/BF16 by truncation: any bit pattern will do here). */
function encodeFloats(type: TensorType, values: Float32Array): Uint8Array {
  if (type === "F32") return new Uint8Array(values.slice().buffer);
  const bits = new Uint32Array(values.slice().buffer);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    if (type === "BF16") out[i] = bits[i] >>> 16;
    else out[i] = floatToHalfBits(values[i]);
  }
  return new Uint8Array(out.buffer);
}

/** Nearest half (rounding down in magnitude) for |v| < 2 — enough for test data. */
function floatToHalfBits(v: number): number {
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a < 2 ** -14) return sign | Math.floor(a / 2 ** -24);
  const exponent = Math.floor(Math.log2(a));
  const mantissa = Math.floor((a / 2 ** exponent - 1) * 1024);
  return sign | ((exponent + 15) << 10) | mantissa;
}

Deno.test("half and bfloat16 conversions cover zeros, subnormals, infinities and NaN", () => {
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  assert.ok(Object.is(halfToFloat(0x8000), -0));
  assert.equal(bf16ToFloat(0x3f80), 1);
  assert.equal(bf16ToFloat(0xc040), -3);
  // F16 rows go through a lookup table: check it against the arithmetic decoder for every pattern.
  const all = new Uint16Array(65536).map((_, i) => i);
  const out = new Float32Array(65536);
  dequantizeRow({ type: "F16", rows: 1, cols: 65536, data: new Uint8Array(all.buffer) }, 0, out);
  for (let h = 0; h < 65536; h++) assert.ok(Object.is(out[h], Math.fround(halfToFloat(h))), `half 0x${h.toString(16)}`);
});

Deno.test("hand-made blocks decode to the values their layout implies", () => {
  // Q4_0: d = 0.5, nibbles j in the low halves and 15 - j in the high halves.
  const q40 = new Uint8Array(18);
  q40.set([0x00, 0x38]); // 0.5 as float16
  for (let j = 0; j < 16; j++) q40[2 + j] = j | ((15 - j) << 4);
  const out = new Float32Array(32);
  dequantizeRow({ type: "Q4_0", rows: 1, cols: 32, data: q40 }, 0, out);
  for (let j = 0; j < 16; j++) {
    assert.equal(out[j], (j - 8) * 0.5);
    assert.equal(out[j + 16], (15 - j - 8) * 0.5);
  }
  // Q8_0: d = 2, quants -128..: value i is (i - 16) * 2.
  const q80 = new Uint8Array(34);
  q80.set([0x00, 0x40]); // 2.0
  for (let i = 0; i < 32; i++) q80[2 + i] = (i - 16) & 0xff;
  dequantizeRow({ type: "Q8_0", rows: 1, cols: 32, data: q80 }, 0, out);
  for (let i = 0; i < 32; i++) assert.equal(out[i], (i - 16) * 2);
  // Q5_1: d = 1, m = -16, fifth bits set for odd elements: value = q + 16·odd - 16.
  const q51 = new Uint8Array(24);
  q51.set([0x00, 0x3c, 0x00, 0xcc]); // d = 1, m = -16
  new DataView(q51.buffer).setUint32(4, 0xaaaaaaaa, true);
  for (let j = 0; j < 16; j++) q51[8 + j] = 3 | (5 << 4);
  dequantizeRow({ type: "Q5_1", rows: 1, cols: 32, data: q51 }, 0, out);
  for (let j = 0; j < 16; j++) {
    assert.equal(out[j], 3 + (j % 2 ? 16 : 0) - 16);
    assert.equal(out[j + 16], 5 + (j % 2 ? 16 : 0) - 16);
  }
});
