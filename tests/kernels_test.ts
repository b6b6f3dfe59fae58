// Every fast kernel path against the plain reference: WebAssembly with and
// without relaxed SIMD, one thread and a pool whose thread count does not
// divide the rows, one input and batches of seven and nine (one and two groups of four, then the rest), every
// weight encoding; and quantized batches large enough that a pool quantizes their inputs in parallel.
import assert from "node:assert/strict";
import type { AttentionJob, Kernels } from "../lib/kernels/kernels.ts";
import { attendTo } from "../lib/attention.ts";
import { PlainKernels } from "../lib/kernels/plain.ts";
import { createKernels } from "../lib/kernels/select.ts";
import { closeBatch, CONTROL_LENGTH, joinBatch, openBatch, rowsPerTask, SLOT } from "../lib/kernels/job_runner.ts";
import { WasmKernels } from "../lib/kernels/wasm_kernels.ts";
import {
  buildKernelModule,
  multiMemorySupported,
  relaxedSimdSupported,
  RESERVED_PAGES,
} from "../lib/kernels/wasm_module.ts";
import { bf16Table, dequantizeRow, floatToBf16, halfToFloat } from "../lib/quant.ts";
import {
  floatToHalf,
  quantizeQ4_0,
  quantizeQ4_1,
  quantizeQ4_K,
  quantizeQ5_0,
  quantizeQ5_1,
  quantizeQ6_K,
  quantizeQ8_0,
  Random,
  RANDOM_MODEL_TYPES,
  writeRandomModel,
} from "../lib/random_model.ts";
import { readFileBytes } from "../lib/file_bytes.ts";
import { ggufToModelFile, isGguf, parseGguf } from "../lib/gguf.ts";
import { parseLlama2c } from "../lib/llama2c.ts";
import { Session } from "../lib/transformer.ts";
import { Tokenizer } from "../lib/tokenizer.ts";
import { type Matrix, rowBytes, TENSOR_TYPES, type TensorType } from "../lib/tensor.ts";
import { defaultCacheEncoding, loadModel, Sampler } from "../mod.ts";
import { kernelMemory, readModelFile } from "../lib/model.ts";
import { parityCases, sharedPath, sharedTest } from "./shared_data.ts";
import { argmax } from "../lib/sampler.ts";

/** Offsets of the half-precision scales in each block, set to sane values in random test blocks. */
const SCALES: Partial<Record<TensorType, number[]>> = {
  Q4_1: [0, 2],
  Q5_0: [0],
  Q5_1: [0, 2],
  Q2_K: [80, 82],
  Q3_K: [108],
  Q4_K: [0, 2],
  Q5_K: [0, 2],
  Q6_K: [208],
};

/** A random `rows x cols` matrix of `type`: uniform ±1/sqrt(cols) values, quantized where applicable. */
function randomMatrix(type: TensorType, rows: number, cols: number, random: Random): Matrix {
  const values = Float32Array.from({ length: rows * cols }, () => random.next() / Math.sqrt(cols));
  const data = new Uint8Array(rows * rowBytes(type, cols));
  if (type === "F32") data.set(new Uint8Array(values.buffer));
  else if (type === "F16") values.forEach((v, i) => new DataView(data.buffer).setUint16(2 * i, floatToHalf(v), true));
  else if (type === "BF16") {
    values.forEach((v, i) => new DataView(data.buffer).setUint16(2 * i, floatBits(v) >>> 16, true));
  } else if (type === "Q8_0") quantizeQ8_0(values, data);
  else if (type === "Q4_0") quantizeQ4_0(values, data);
  else {
    // Random bits with small scales: the kernels do not care what produced the blocks.
    for (let i = 0; i < data.length; i++) data[i] = (random.next() + 1) * 128;
    const { blockBytes } = TENSOR_TYPES[type];
    const view = new DataView(data.buffer);
    for (let p = 0; p < data.length; p += blockBytes) {
      for (const at of SCALES[type] ?? []) view.setUint16(p + at, floatToHalf(random.next() / 64), true);
    }
  }
  return { type, rows, cols, data };
}

function floatBits(value: number): number {
  return new Uint32Array(new Float32Array([value]).buffer)[0];
}

/**
 * Values per input scale in a product of these encodings: when a K-quant reads the input, it is quantized per 256
 * (llama.cpp's Q8_K) for every job of the product, else per 32.
 */
function inputSpan(types: TensorType[]): number {
  return types.some((type) => type.endsWith("_K")) ? 256 : 32;
}

/** A bound on |fast - plain| for output (t, r), and why. */
function tolerance(w: Matrix, x: Float32Array, t: number, r: number, span: number): number {
  const row = new Float32Array(w.cols);
  dequantizeRow(w, r, row);
  let magnitude = 0, quantization = 0;
  for (let b = 0; b < w.cols; b += 32) {
    const first = b - (b % span);
    let amax = 0, weights = 0;
    for (let c = first; c < Math.min(first + span, w.cols); c++) amax = Math.max(amax, Math.abs(x[t * w.cols + c]));
    for (let c = b; c < Math.min(b + 32, w.cols); c++) {
      magnitude += Math.abs(row[c] * x[t * w.cols + c]);
      weights += Math.abs(row[c]);
    }
    // The input is quantized to 8 bits per span: each value moves by at most half a step, amax / 254.
    quantization += (weights * amax) / 254;
  }
  // Float paths differ only in summation order (and fused multiply-adds): 1e-4 of Σ|w·x| is far above that.
  if (["F32", "F16", "BF16"].includes(w.type)) return 1e-4 * magnitude + 1e-30;
  return quantization * 1.01 + 1e-4 * magnitude;
}

/**
 * Input t as the quantized kernels should see it: per span, d = max|x| / 127 and each value rounded to a multiple of
 * d (ties to even), as the module's `quantize` does.
 */
function quantizedInput(x: Float32Array, cols: number, t: number, span: number): Float64Array {
  const f = Math.fround, out = new Float64Array(cols);
  for (let first = 0; first < cols; first += span) {
    const values = x.subarray(t * cols + first, t * cols + first + span);
    const d = f(Math.max(...values.map(Math.abs)) / 127), id = d ? f(1 / d) : 0;
    values.forEach((v, i) => {
      const scaled = f(v * id), floor = Math.floor(scaled), rest = scaled - floor;
      out[first + i] = (rest > 0.5 || (rest === 0.5 && floor % 2 !== 0) ? floor + 1 : floor) * d;
    });
  }
  return out;
}

const CASES: { type: TensorType; cols: number }[] = [
  { type: "F32", cols: 37 },
  { type: "F32", cols: 96 },
  { type: "F16", cols: 45 },
  { type: "F16", cols: 128 },
  { type: "BF16", cols: 45 },
  { type: "BF16", cols: 128 },
  { type: "Q8_0", cols: 96 },
  { type: "Q4_0", cols: 160 },
  ...(["Q4_1", "Q5_0", "Q5_1"] as const).flatMap((type) => [{ type, cols: 64 }, { type, cols: 96 }]),
  ...(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"] as const).map((type) => ({ type, cols: 256 })),
  // Two super-blocks a row: the kernels' pointers move on from the first.
  ...(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"] as const).map((type) => ({ type, cols: 512 })),
];

/** Prompt-sized batches: enough input blocks (40 x 1024 / 32) that a pool quantizes them in parallel. */
const BATCH_CASES: { type: TensorType; cols: number }[] = [{ type: "Q8_0", cols: 1024 }, { type: "Q4_0", cols: 1024 }];

/** Products of several encodings sharing one input (as Q4_K_M's q, k and v), quantized once for all of them. */
const MIXED_CASES: { types: TensorType[]; cols: number }[] = [
  { types: ["Q4_K", "Q8_0", "Q6_K"], cols: 512 },
  { types: ["Q4_0", "Q5_K", "Q5_1"], cols: 256 },
];

function checkAgainstPlain(kernels: Kernels): void {
  const plain = new PlainKernels();
  const random = new Random(7);
  const runs = [
    ...CASES.flatMap(({ type, cols }) => [1, 3, 7, 9].map((n) => ({ types: [type, type, type], cols, n }))),
    ...BATCH_CASES.map(({ type, cols }) => ({ types: [type, type, type], cols, n: 40 })),
    ...MIXED_CASES.flatMap(({ types, cols }) => [1, 9].map((n) => ({ types, cols, n }))),
  ];
  for (const { types, cols, n } of runs) {
    // Three jobs sharing one input, with row counts that do not divide among 2 or 3 threads.
    const matrices = [37, 50, 5].map((rows, i) => randomMatrix(types[i], rows, cols, random));
    const span = inputSpan(types);
    const x = Float32Array.from({ length: n * cols }, () => random.next());
    const expected = matrices.map((w) => new Float32Array(n * w.rows));
    const actual = matrices.map((w) => new Float32Array(n * w.rows));
    plain.matmul(x, n, matrices.map((w, i) => ({ w, out: expected[i] })));
    kernels.matmul(x, n, matrices.map((w, i) => ({ w, out: actual[i] })));
    matrices.forEach((w, i) => {
      const type = w.type;
      for (let t = 0; t < n; t++) {
        for (let r = 0; r < w.rows; r++) {
          const e = expected[i][t * w.rows + r], a = actual[i][t * w.rows + r];
          const bound = tolerance(w, x, t, r, span);
          assert.ok(
            Math.abs(a - e) <= bound,
            `${kernels.name} ${type} ${w.rows}x${cols} n=${n} [${t},${r}]: ${a} vs ${e}`,
          );
        }
      }
      if (["F32", "F16", "BF16"].includes(type)) return;
      // Against the inputs quantized as they should be, only the float rounding of scales and sums is left.
      const row = new Float32Array(cols);
      for (let t = 0; t < n; t++) {
        const xq = quantizedInput(x, cols, t, span);
        for (let r = 0; r < w.rows; r++) {
          dequantizeRow(w, r, row);
          let reference = 0, magnitude = 0;
          row.forEach((v, c) => {
            reference += v * xq[c];
            magnitude += Math.abs(v * xq[c]);
          });
          const a = actual[i][t * w.rows + r];
          assert.ok(
            Math.abs(a - reference) <= 1e-5 * magnitude,
            `${kernels.name} ${type} ${w.rows}x${cols} n=${n} [${t},${r}]: ${a} vs ${reference} (quantized inputs)`,
          );
        }
      }
    });
  }
}

Deno.test("the feature probes agree with the kernel module itself", () => {
  // They validate small modules instead of building the kernels' one: each must say what validating that one says.
  assert.equal(relaxedSimdSupported(), WebAssembly.validate(buildKernelModule({ relaxed: true })));
  assert.equal(multiMemorySupported(), WebAssembly.validate(buildKernelModule({ relaxed: false, cacheMemory: true })));
});

Deno.test("the kernel module is valid WebAssembly with and without relaxed SIMD", () => {
  assert.ok(WebAssembly.validate(buildKernelModule({ relaxed: false })));
  assert.ok(WebAssembly.validate(buildKernelModule({ relaxed: false, cacheMemory: true })));
  if (relaxedSimdSupported()) assert.ok(WebAssembly.validate(buildKernelModule({ relaxed: true })));
});

Deno.test("the kernel module declares the reserved pages as its memory's minimum", () => {
  // The declared minimum is what lets V8 drop half of each bounds check; a smaller memory must not link.
  const module = new WebAssembly.Module(buildKernelModule({ relaxed: false }));
  const memoryOf = (pages: number) => new WebAssembly.Memory({ initial: pages, maximum: 65536, shared: true });
  assert.throws(() => new WebAssembly.Instance(module, { env: { memory: memoryOf(RESERVED_PAGES - 1) } }));
  assert.ok(new WebAssembly.Instance(module, { env: { memory: memoryOf(RESERVED_PAGES) } }));
});

for (const span of [1, 8]) {
  const like = span === 1 ? "quantize_row_q8_0" : "quantize_row_q8_K (one scale per 256 values)";
  Deno.test(`the module's quantize matches llama.cpp's ${like}, with each block's half sums`, () => {
    // Blocks of zeros, negative zeros, tiny, ordinary and huge values, and ones whose largest magnitude is negative.
    const blocks = 64;
    const memory = new WebAssembly.Memory({ initial: RESERVED_PAGES + 1, maximum: 65536, shared: true });
    const { exports } = new WebAssembly.Instance(new WebAssembly.Module(buildKernelModule({ relaxed: false })), {
      env: { memory },
    });
    const x = RESERVED_PAGES * 65536, q16 = x + blocks * 128, q8 = q16 + blocks * 64, xd = q8 + blocks * 32;
    const xc = xd + blocks * 4;
    const random = new Random(11);
    const values = new Float32Array(memory.buffer, x, blocks * 32);
    for (let b = 0; b < blocks; b++) {
      // With spans of 8, the first span has one scale throughout, so its zero blocks stay zero.
      const scale = [0, 1e-30, 1e-3, 1, 1e30][(span === 8 && b < 8 ? 0 : b) % 5];
      for (let i = 0; i < 32; i++) values[32 * b + i] = b % 7 === 3 ? -0 : random.next() * scale;
      if (b % 3 === 1) values[32 * b + (b % 32)] = -2 * scale;
    }
    (exports.quantize as (...args: number[]) => void)(x, blocks, q16, q8, xd, xc, span);
    const [ints16, ints8] = [
      new Int16Array(memory.buffer, q16, blocks * 32),
      new Int8Array(memory.buffer, q8, blocks * 32),
    ];
    const [scales, sums] = [new Float32Array(memory.buffer, xd, blocks), new Int32Array(memory.buffer, xc, blocks * 4)];
    const f = Math.fround;
    for (let b = 0; b < blocks; b++) {
      const block = values.subarray(32 * b, 32 * b + 32);
      const first = b - (b % span), spanValues = values.subarray(32 * first, 32 * (first + span));
      const d = f(Math.max(...spanValues.map(Math.abs)) / 127), id = d ? f(1 / d) : 0;
      // Ties to even (llama.cpp rounds them away from zero: random values have none).
      const q = Array.from(block, (v) => {
        const scaled = f(v * id), floor = Math.floor(scaled), rest = scaled - floor;
        return (rest > 0.5 || (rest === 0.5 && floor % 2 !== 0) ? floor + 1 : floor) + 0;
      });
      assert.equal(scales[b], d, `block ${b}: d`);
      assert.deepEqual(Array.from(ints16.subarray(32 * b, 32 * b + 32)), q, `block ${b}: int16`);
      assert.deepEqual(Array.from(ints8.subarray(32 * b, 32 * b + 32)), q, `block ${b}: int8`);
      const half = (from: number) => q.slice(from, from + 16).reduce((s, v) => s + v, 0);
      assert.deepEqual(Array.from(sums.subarray(4 * b, 4 * b + 4)), [
        -8 * (half(0) + half(16)) + 0,
        half(0),
        half(16),
        0,
      ]);
    }
  });
}

/** The fast configurations every fast path is checked in: with and without relaxed SIMD, and a pool of three. */
const WASM_CONFIGURATIONS = [
  ["wasm, one thread, plain SIMD", { threads: 1, relaxed: false }],
  ["wasm, one thread, relaxed SIMD", { threads: 1, relaxed: true }],
  ["wasm, three threads", { threads: 3 }],
] as const;

for (const [label, options] of WASM_CONFIGURATIONS) {
  Deno.test(`${label}: every encoding matches the plain kernels`, async () => {
    const kernels = await WasmKernels.create(options);
    try {
      checkAgainstPlain(kernels);
    } finally {
      kernels.close();
    }
  });
}

Deno.test("F16 and BF16 rows read every finite half exactly, subnormals included", async () => {
  // All 65536 bit patterns (non-finite ones as zero: no usable model has them) in 1024 rows of 64, times each unit
  // vector: every output is one weight, times 1, plus zeros. As a prompt (the 64 unit vectors at once) and one input
  // at a time (the generation path).
  const rows = 1024, cols = 64;
  const identity = new Float32Array(cols * cols).map((_, i) => i % (cols + 1) === 0 ? 1 : 0);
  const bf16 = bf16Table();
  for (const type of ["F16", "BF16"] as const) {
    const finite = (h: number) => (type === "F16" ? (h & 0x7c00) !== 0x7c00 : (h & 0x7f80) !== 0x7f80);
    const bits = new Uint16Array(rows * cols).map((_, h) => finite(h) ? h : 0);
    const expected = Array.from(bits, (h) => type === "F16" ? Math.fround(halfToFloat(h)) : bf16[h]);
    const w: Matrix = { type, rows, cols, data: new Uint8Array(bits.buffer) };
    for (const [label, options] of WASM_CONFIGURATIONS) {
      const kernels = await WasmKernels.create(options);
      try {
        const prompt = new Float32Array(cols * rows);
        kernels.matmul(identity, cols, [{ w, out: prompt }]);
        const one = new Float32Array(rows);
        for (let c = 0; c < cols; c++) {
          kernels.matmul(identity.subarray(c * cols, (c + 1) * cols), 1, [{ w, out: one }]);
          for (let r = 0; r < rows; r++) {
            const h = r * cols + c, want = expected[h];
            assert.ok(prompt[c * rows + r] === want, `${label} ${type} 0x${h.toString(16)}: ${prompt[c * rows + r]}`);
            assert.ok(one[r] === want, `${label} ${type} 0x${h.toString(16)}, one input: ${one[r]} vs ${want}`);
          }
        }
      } finally {
        kernels.close();
      }
    }
  }
});

Deno.test("the largest weights against the largest inputs: no 16-bit sum overflows", async () => {
  // Every weight at its top value (nibbles 15, the fifth bits of Q5_0, Q5_1 and Q5_K set; Q6_K at level 0, i.e. -32;
  // Q8_0 at -128) and every input quantized to 127: the 8-bit dot products' 16-bit partial sums are at their largest,
  // one row alone, four rows folded together (generating), four inputs folded together and eight in lanes.
  const cols = 512, rows = 8, random = new Random(12);
  const x = new Float32Array(9 * cols).fill(1);
  const types = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"] as const;
  for (const options of [{ threads: 1, relaxed: true }, { threads: 1, relaxed: false }]) {
    const kernels = await WasmKernels.create(options);
    try {
      for (const type of types) {
        const data = new Uint8Array(rows * rowBytes(type, cols)).fill({ Q6_K: 0, Q8_0: 0x80 }[type as string] ?? 0xff);
        const { blockBytes } = TENSOR_TYPES[type];
        const view = new DataView(data.buffer);
        for (let p = 0; p < data.length; p += blockBytes) {
          // Q6_K: its sixteen int8 scales at their largest too.
          if (type === "Q6_K") data.fill(127, p + 192, p + 208);
          for (const at of SCALES[type] ?? [0]) {
            view.setUint16(p + at, floatToHalf((random.next() + 2) / 256), true);
          }
        }
        const w: Matrix = { type, rows, cols, data };
        for (const n of [1, 4, 9]) {
          const expected = new Float32Array(n * rows), actual = new Float32Array(n * rows);
          new PlainKernels().matmul(x, n, [{ w, out: expected }]);
          kernels.matmul(x, n, [{ w, out: actual }]);
          for (let i = 0; i < n * rows; i++) {
            const bound = tolerance(w, x, Math.floor(i / rows), i % rows, inputSpan([type]));
            assert.ok(
              Math.abs(actual[i] - expected[i]) <= bound,
              `${type} relaxed ${options.relaxed} n=${n} [${i}]: ${actual[i]} vs ${expected[i]}`,
            );
          }
        }
      }
    } finally {
      kernels.close();
    }
  }
});

Deno.test("weights read into allocateBytes memory are used in place", async () => {
  const kernels = await WasmKernels.create({ threads: 2 });
  try {
    const source = randomMatrix("Q4_0", 9, 64, new Random(3));
    const data = kernels.allocateBytes(source.data.length);
    data.set(source.data);
    const w = { ...source, data };
    const x = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const expected = new Float32Array(9), actual = new Float32Array(9);
    new PlainKernels().matmul(x, 1, [{ w, out: expected }]);
    kernels.matmul(x, 1, [{ w, out: actual }]);
    for (let r = 0; r < 9; r++) {
      assert.ok(Math.abs(actual[r] - expected[r]) <= tolerance(w, x, 0, r, inputSpan([w.type])));
    }
    // Changing the bytes in place changes the result: no hidden copy was taken.
    data.fill(0);
    kernels.matmul(x, 1, [{ w, out: actual }]);
    assert.deepEqual(Array.from(actual), Array(9).fill(0));
  } finally {
    kernels.close();
  }
});

Deno.test("generation tasks cover at least 256 KiB of weights unless a thread would go without; prompts keep 8 a thread", () => {
  // 15M's wq (288 rows of 1152 bytes): one task per thread generating, 16 for a prompt.
  assert.equal(rowsPerTask(288, 2, 1, 1152), 144);
  assert.equal(rowsPerTask(288, 2, 128, 1152), 18);
  // Matrices whose eighth of a thread's share is already past 256 KiB keep about 8 tasks a thread.
  assert.equal(rowsPerTask(5632, 2, 1, 1152), 352);
  assert.equal(rowsPerTask(32000, 2, 1, 1152), 2000);
  assert.equal(rowsPerTask(2048, 1, 1, 1152), 256);
  // Below that, 256 KiB a task: 456 rows of 576 bytes (Q4_0 rows of 1024 values).
  assert.equal(rowsPerTask(2048, 2, 1, 576), 456);
  // Never fewer than 4 rows.
  assert.equal(rowsPerTask(6, 2, 128, 64), 4);
});

Deno.test("a batch takes the workers that join it before the main thread closes it, and only of its generation", () => {
  const control = new Int32Array(new SharedArrayBuffer(CONTROL_LENGTH * 4));
  // Generations as the control array stores them: past 2^31 they wrap to negative int32 values.
  for (const generation of [1, 2 ** 22 - 1, 2 ** 22, 2 ** 31 - 1, 2 ** 31]) {
    const seen = (control[SLOT.GENERATION] = generation); // what a woken worker reads (an int32)
    control[SLOT.JOIN] = openBatch(generation);
    assert.equal(joinBatch(control, seen - 1), false, `a worker still on the batch before ${generation}`);
    assert.equal(joinBatch(control, seen + 1), false, `a worker ahead of ${generation}`);
    assert.ok(joinBatch(control, seen) && joinBatch(control, seen), `two workers join ${generation}`);
    assert.equal(closeBatch(control), 2);
    assert.equal(joinBatch(control, seen), false, "a worker that wakes after the close skips the batch");
  }
  // As many workers as a pool may have are counted without touching the generation.
  control[SLOT.JOIN] = openBatch(7);
  for (let i = 0; i < 1023; i++) assert.ok(joinBatch(control, 7));
  assert.equal(closeBatch(control), 1023);
});

Deno.test("createKernels selects each kind", async () => {
  for (const kind of ["plain", "wasm", "fast"] as const) {
    const kernels = await createKernels(kind, 2);
    assert.equal(kernels.name, kind);
    kernels.close();
  }
});

for (const c of parityCases("cases.json").filter((c) => c.temperature === 0)) {
  sharedTest(`fast kernels give the plain path's greedy ids: ${c.name}`, async () => {
    const kernels = await createKernels("fast", 2);
    const model = await loadModel(sharedPath(c.model), { tokenizer: sharedPath(c.tokenizer), kernels });
    try {
      const sampler = new Sampler({ temperature: 0 });
      const session = model.newSession();
      const ids = model.tokenizer.encode(c.prompt, { bos: true });
      let logits = session.feed(ids);
      while (session.position < c.steps) {
        const next = sampler.sample(logits);
        ids.push(next);
        if (next === 1) break;
        logits = session.feed([next]);
      }
      assert.deepEqual(ids, c.expected_ids.slice(0, ids.length));
    } finally {
      model.close();
    }
  });
}

Deno.test("random-model quantizers round-trip within half a quantization step", () => {
  const random = new Random(11);
  const values = Float32Array.from({ length: 256 }, () => random.next());
  // Half a step, from a block's largest magnitude (amax) or its range: Q8_0 amax/127; Q4_0 and Q5_0 a whole step of
  // amax/8 and amax/16 (-amax·sign maps to -8 or -16, the other end clamps 8 to 7, 16 to 15); Q4_1 and Q5_1 the
  // range in 15 and 31 steps.
  const cases = [
    ["Q8_0", quantizeQ8_0, (amax: number) => amax / 254],
    ["Q4_0", quantizeQ4_0, (amax: number) => amax / 8],
    ["Q5_0", quantizeQ5_0, (amax: number) => amax / 16],
    ["Q4_1", quantizeQ4_1, (_: number, range: number) => range / 30],
    ["Q5_1", quantizeQ5_1, (_: number, range: number) => range / 62],
  ] as const;
  for (const [type, quantize, step] of cases) {
    const w: Matrix = { type, rows: 1, cols: 256, data: new Uint8Array(rowBytes(type, 256)) };
    quantize(values, w.data);
    const back = new Float32Array(256);
    dequantizeRow(w, 0, back);
    for (let b = 0; b < 256; b += 32) {
      const block = values.subarray(b, b + 32);
      const amax = Math.max(...block.map(Math.abs)), range = Math.max(...block) - Math.min(...block);
      // Plus the scale's and the minimum's rounding to half precision (relative 2^-11, times at most 127 steps).
      const bound = step(amax, range) + (amax + range) * 2 ** -10;
      for (let i = b; i < b + 32; i++) assert.ok(Math.abs(back[i] - values[i]) <= bound, `${type} [${i}]`);
    }
  }
});

Deno.test("random-model K-quantizers round-trip within a quantization step", () => {
  const random = new Random(12);
  const values = Float32Array.from({ length: 512 }, () => random.next() * 0.05);
  // Q4_K: a sub-block of 32 spans its range in 15 steps; its 6-bit scale and minimum are rounded too (to a 63rd of
  // the largest, so up to half of that per step and per minimum). Q6_K: 32 steps per sub-block of 16.
  for (const [type, quantize, size] of [["Q4_K", quantizeQ4_K, 32], ["Q6_K", quantizeQ6_K, 16]] as const) {
    const w: Matrix = { type, rows: 1, cols: 512, data: new Uint8Array(rowBytes(type, 512)) };
    quantize(values, w.data);
    const back = new Float32Array(512);
    dequantizeRow(w, 0, back);
    for (let b = 0; b < 512; b += size) {
      const sub = values.subarray(b, b + size);
      const range = type === "Q4_K" ? Math.max(...sub) - Math.min(0, ...sub) : Math.max(...sub.map(Math.abs));
      const superBlock = values.subarray(b - (b % 256), b - (b % 256) + 256);
      const largest = Math.max(...superBlock.map(Math.abs));
      const bound = type === "Q4_K" ? range / 15 + (2 * largest) / 63 : range / 32 + (16 * largest) / (32 * 127);
      for (let i = b; i < b + size; i++) {
        assert.ok(Math.abs(back[i] - values[i]) <= bound, `${type} [${i}]: ${back[i]} vs ${values[i]}`);
      }
    }
    // And not everything zero: the blocks carry the values.
    assert.ok(back.some((v) => Math.abs(v) > 0.01), type);
  }
});

Deno.test("a random Q4_K_M model of sizes that are not multiples of 256 is refused, and no file is left", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = { dim: 64, hiddenDim: 96, nLayers: 1, nHeads: 4, nKvHeads: 4, vocabSize: 300, seqLen: 32 };
    await assert.rejects(writeRandomModel(`${dir}/tiny.gguf`, config, "Q4_K_M"), /multiples of 256; this shape has 64/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A small random model of each encoding the bench writes, in `dir`: the K-quants' need sizes that are multiples of 256,
 * and `kQuantLayers` layers (9 put Q6_K in some layers' attn_v and ffn_down).
 */
async function* randomModels(dir: string, kQuantLayers: number) {
  const small = { dim: 64, hiddenDim: 96, nLayers: 2, nHeads: 4, nKvHeads: 4, vocabSize: 300, seqLen: 32 };
  const wide = { dim: 256, hiddenDim: 512, nLayers: kQuantLayers, nHeads: 4, nKvHeads: 2, vocabSize: 300, seqLen: 32 };
  for (const type of RANDOM_MODEL_TYPES) {
    const config = type === "Q4_K_M" ? wide : small;
    const path = `${dir}/tiny-${type}.${type === "F32" ? "bin" : "gguf"}`;
    await writeRandomModel(path, config, type);
    yield { type, config, path };
  }
}

Deno.test("random models load, and fast kernels follow the plain path's greedy ids on them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for await (const { type, config, path } of randomModels(dir, 9)) {
      const runs: number[][] = [];
      for (const kind of ["plain", "fast"] as const) {
        const kernels = await createKernels(kind, 2);
        const bytes = await readFileBytes(path, { allocate: kernels.allocateBytes?.bind(kernels) });
        const file = isGguf(bytes) ? ggufToModelFile(parseGguf(bytes, path)) : parseLlama2c(bytes, path);
        assert.deepEqual(file.config, config);
        if (type === "Q4_K_M") {
          // As llama.cpp's Q4_K_M: Q6_K for the classifier and, by use_more_bits, layers 0, 3, 6, 7 and 8 of
          // attn_v/ffn_down.
          const { layers } = file.weights;
          assert.equal(file.weights.classifier.type, "Q6_K");
          assert.deepEqual(layers.map((l) => [l.wv.type, l.w2.type, l.wq.type]).map((t) => t.join()), [
            ...[0, 1, 2, 3, 4, 5, 6, 7, 8].map((l) =>
              [0, 3, 6, 7, 8].includes(l) ? "Q6_K,Q6_K,Q4_K" : "Q4_K,Q4_K,Q4_K"
            ),
          ]);
        }
        // With the cache a model of this file gets: half precision for the quantized ones.
        // A prompt of nine as one batch (the products' eight-input paths), then 12 tokens one at a time.
        const session = new Session({ ...file, kernels, cacheEncoding: defaultCacheEncoding(file) });
        const ids: number[] = [];
        let logits = session.feed([1, 17, 42, 99, 150, 7, 230, 64, 5]);
        for (let i = 0; i < 12; i++) {
          ids.push(argmax(logits));
          logits = session.feed([ids.at(-1)!]);
        }
        kernels.close();
        runs.push(ids);
      }
      // Quantized inputs may flip a near-tie on random weights; float weights (float inputs) must agree exactly.
      if (type === "F32" || type === "F16" || type === "BF16") assert.deepEqual(runs[1], runs[0]);
      else assert.ok(runs[1].filter((id, i) => id === runs[0][i]).length >= 9, `${type}: ${runs[0]} vs ${runs[1]}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a pool of more threads than cores, where workers often wake too late for a batch, computes every task", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for await (const { type, path } of randomModels(dir, 3)) {
      const logits: Float32Array[][] = [];
      for (const threads of [1, 6, 6]) {
        const kernels = await WasmKernels.create({ threads });
        try {
          const file = await readModelFile(path, kernelMemory(kernels));
          const session = new Session({ ...file, kernels, cacheEncoding: defaultCacheEncoding(file) });
          const run = [session.feed([1, 17, 42, 99, 150, 7, 230, 64, 5]).slice()];
          for (let i = 0; i < 20; i++) run.push(session.feed([argmax(run.at(-1)!)]).slice());
          logits.push(run);
        } finally {
          kernels.close();
        }
      }
      // Whichever thread takes a task computes it whole, so one pool size gives the same floats every time. Another
      // cuts the rows elsewhere (rows at a task's end may take a narrower path): float rounding apart, the same. With
      // 8-bit inputs, such a rounding can also move one input value across a step, which the following layers carry
      // on: 0.7-1.2% of max|logit| on the bench's 110M Q8_0 and Q4_K_M shapes, in the previous version too.
      assert.deepEqual(logits[2], logits[1], type);
      const tolerance = ["F32", "F16", "BF16"].includes(type) ? 1e-5 : 0.03;
      logits[0].forEach((one, step) => {
        const max = Math.max(...one.map(Math.abs));
        const distance = Math.max(...one.map((v, i) => Math.abs(v - logits[1][step][i])));
        assert.ok(distance <= tolerance * max, `${type}, step ${step}: ${distance} of ${max}`);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a model past the main memory: tensors in further memories give the very logits of the main one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for await (const { type, path } of randomModels(dir, 3)) {
      const { size } = await Deno.stat(path);
      // All tensors in the main memory (read whole), none there, about half there (products of both kinds), and a
      // quarter there with the rest over several further memories (weightBytes counted twice, for the packing).
      const logits: Float32Array[][] = [];
      const placements = [{}, { mainTensorBytes: 0 }, { mainTensorBytes: size / 2 }, {
        mainTensorBytes: size / 4,
        furtherTensorBytes: size / 4,
        weightBytes: 2 * size,
      }];
      for (const placement of placements) {
        const kernels = await WasmKernels.create({ threads: 2, weightBytes: size, ...placement });
        try {
          const file = await readModelFile(path, kernelMemory(kernels));
          const session = new Session({ ...file, kernels, cacheEncoding: defaultCacheEncoding(file) });
          const run = [session.feed([1, 17, 42, 99, 150, 7, 230, 64, 5]).slice()];
          for (const id of [3, 8, 13]) run.push(session.feed([id]).slice());
          logits.push(run);
        } finally {
          kernels.close();
        }
      }
      for (const run of logits.slice(1)) assert.deepEqual(run, logits[0], type);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kernels made without the model's size say so when its tensors do not fit their one memory", async () => {
  const dir = await Deno.makeTempDir();
  // mainTensorBytes 0 stands in for a model past 4 GiB: every tensor is read on its own and none fits.
  const kernels = await WasmKernels.create({ threads: 1, mainTensorBytes: 0 });
  try {
    const path = `${dir}/tiny.gguf`;
    await writeRandomModel(path, {
      dim: 64,
      hiddenDim: 96,
      nLayers: 1,
      nHeads: 4,
      nKvHeads: 4,
      vocabSize: 300,
      seqLen: 32,
    }, "Q8_0");
    await assert.rejects(
      readModelFile(path, kernelMemory(kernels)),
      /do not fit in the fast kernels' one memory of 4 GiB \(create them with the model's size: createKernels\(kind, threads, weightBytes\)\)/,
    );
  } finally {
    kernels.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// The quantized kernels quantize activations to 8 bits, as llama.cpp does: per block of 32, and per 256 for the
// K-quants (Q4_0's classifier and the K-quant files' tensors are Q4_K, Q5_K and Q6_K). With float32 caches that costs
// 1.7-4.1% of max|logit| against the plain path's float activations, measured on the shared files (1.7-2.6% when the
// K-quants' were per 32 too). These files get bfloat16 caches by default: on the plain path those move the logits by
// 0.26-0.46% of max|logit|, and fast and plain then differ by 1.7-3.7% (the 8-bit activations turn the caches'
// rounding into a different draw of their own). Fast stays 2.0-3.9% from llama.cpp's own logits (2.1-4.1% with the
// K-quants' inputs per 32), plain 1.8-3.7% (llama.cpp keeps float16 caches), and both pick the same top token.
for (const type of ["Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M"]) {
  sharedTest(
    `fast kernels: within 4% of max|logit| of the plain path, 6% of llama.cpp's; bfloat16 caches within 1%: ${type}`,
    async () => {
      const cases = JSON.parse(await Deno.readTextFile(sharedPath("gguf/cases.json")));
      const c = cases.find((c: { model: string }) => c.model.endsWith(`random-q-${type}.gguf`));
      for (const g of c.generations) {
        const reference = new Float32Array((await Deno.readFile(sharedPath(`gguf/${g.logits_file}`))).buffer);
        const maxReference = Math.max(...reference.map(Math.abs));
        const distance = (a: Float32Array, b: Float32Array) =>
          Math.max(...a.map((v, i) => Math.abs(v - b[i]))) / maxReference;
        const runs = [["plain", "bf16"], ["fast", "bf16"], ["plain", "f32"]] as const;
        const [plain, fast, plainFloat] = await Promise.all(runs.map(async ([kind, cacheEncoding]) => {
          const kernels = await createKernels(kind, 2);
          try {
            const path = sharedPath(c.model);
            const file = ggufToModelFile(
              parseGguf(await readFileBytes(path, { allocate: kernels.allocateBytes?.bind(kernels) }), path),
            );
            assert.equal(defaultCacheEncoding(file), "bf16");
            const prompt = new Tokenizer(file.vocabulary!).encode(g.prompt, { bos: true });
            return new Session({ ...file, kernels, cacheEncoding }).feed(prompt).slice();
          } finally {
            kernels.close();
          }
        }));
        const label = `${type} "${g.prompt}"`;
        assert.ok(distance(fast, plain) <= 0.04, `${label}: fast vs plain ${distance(fast, plain)}`);
        assert.ok(distance(plain, reference) <= 0.06, `${label}: plain vs llama.cpp ${distance(plain, reference)}`);
        assert.ok(distance(fast, reference) <= 0.06, `${label}: fast vs llama.cpp ${distance(fast, reference)}`);
        assert.ok(distance(plain, plainFloat) <= 0.01, `${label}: bfloat16 vs float32 ${distance(plain, plainFloat)}`);
        assert.equal(argmax(fast), argmax(plain), `${label}: top token`);
      }
    },
  );
}

/** The reference: attendTo for every query token and head, as the forward pass calls it. */
function referenceAttention(job: AttentionJob): Float32Array {
  const { q, n, start, keys, values, capacity, heads, kvHeads, headSize } = job;
  const dim = heads * headSize;
  const out = new Float32Array(n * dim);
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      // Key/value head g's vector for position i starts at (g * capacity + i) * headSize.
      const at = (i: number) => (Math.floor(h / (heads / kvHeads)) * capacity + i) * headSize;
      const query = q.subarray(t * dim + h * headSize, t * dim + (h + 1) * headSize);
      attendTo(
        Array.from({ length: start + t + 1 }, (_, i) => i),
        (i) => query.reduce((sum, v, j) => sum + v * keys[at(i) + j], 0) / Math.sqrt(headSize),
        (i) => values.subarray(at(i), at(i) + headSize),
        { out: out.subarray(t * dim + h * headSize, t * dim + (h + 1) * headSize) },
      );
    }
  }
  return out;
}

for (const [label, options] of WASM_CONFIGURATIONS) {
  Deno.test(`${label}: attention matches attendTo, over float32 and bfloat16 caches`, async () => {
    const kernels = await WasmKernels.create(options);
    const random = new Random(5);
    try {
      // Head sizes with and without 32- and 8-wide parts; grouped-query heads; one token and a batch; scores
      // spread wide enough (keys scaled by 4) that the largest dominates, where an inexact exp would show. Batches
      // with head sizes that are multiples of 8 go four queries at a time (the last three positions masked for
      // some of them), from position 0 and further on, with single queries after the fours; one to three tokens of
      // four or more query heads a key/value head go four heads at a time.
      for (
        const { heads, kvHeads, headSize, n, start } of [
          { heads: 4, kvHeads: 4, headSize: 64, n: 1, start: 37 },
          { heads: 6, kvHeads: 2, headSize: 12, n: 7, start: 5 },
          { heads: 2, kvHeads: 1, headSize: 4, n: 3, start: 0 },
          { heads: 3, kvHeads: 3, headSize: 100, n: 5, start: 130 },
          { heads: 2, kvHeads: 2, headSize: 64, n: 4, start: 0 },
          { heads: 4, kvHeads: 2, headSize: 16, n: 9, start: 3 },
          { heads: 2, kvHeads: 1, headSize: 40, n: 13, start: 70 },
          { heads: 8, kvHeads: 2, headSize: 24, n: 1, start: 50 },
          { heads: 4, kvHeads: 1, headSize: 8, n: 3, start: 0 },
        ]
      ) {
        // Room for more positions than are filled: each head's run starts where the layout says, not where the
        // previous one ends.
        const dim = heads * headSize, kvDim = kvHeads * headSize, capacity = start + n + 3;
        const fill = (array: Float32Array, scale: number) => {
          for (let i = 0; i < array.length; i++) array[i] = random.next() * scale;
          return array;
        };
        const job = {
          q: fill(kernels.allocate(n * dim), 1),
          n,
          start,
          keys: fill(kernels.allocateCache(capacity * kvDim), 4),
          values: fill(kernels.allocateCache(capacity * kvDim), 1),
          capacity,
          heads,
          kvHeads,
          headSize,
          out: kernels.allocate(n * dim),
        };
        // The same cache in bfloat16: the reference attends over the rounded values.
        const round = (cache: Float32Array) => {
          const rounded = kernels.allocateBf16Cache(cache.length);
          rounded.forEach((_, i) => rounded[i] = floatToBf16(cache[i]));
          return rounded;
        };
        const bf16Job = { ...job, keys: round(job.keys), values: round(job.values), out: kernels.allocate(n * dim) };
        const widen = (bits: Uint16Array) => Float32Array.from(bits, (h) => bf16Table()[h]);
        for (
          const [encoding, each, cache] of [["f32", job, job], ["bf16", bf16Job, {
            ...job,
            keys: widen(bf16Job.keys),
            values: widen(bf16Job.values),
          }]] as const
        ) {
          assert.ok(
            kernels.attend(each),
            `the job was refused: ${JSON.stringify({ encoding, heads, kvHeads, headSize })}`,
          );
          const expected = referenceAttention(cache);
          // float32 sums and a polynomial exp (a few ulp) against attendTo's double sums: 1e-5 of the value scale.
          for (let i = 0; i < expected.length; i++) {
            const where = `${encoding} ${headSize}/${n}/${start} [${i}]`;
            assert.ok(Math.abs(each.out[i] - expected[i]) <= 1e-5, `${where}: ${each.out[i]} vs ${expected[i]}`);
          }
        }
      }
    } finally {
      kernels.close();
    }
  });
}

for (const [label, options] of WASM_CONFIGURATIONS) {
  Deno.test(`${label}: RoPE and caching rotate as llama2.c does, into the cache's positions`, async () => {
    const kernels = await WasmKernels.create(options);
    const random = new Random(9);
    const f = Math.fround;
    try {
      // One token, a few (one task) and a prompt's worth (several tasks, shared by a pool); grouped heads; head
      // sizes of one and several eight-float steps; from position 0 and further on.
      for (
        const { heads, kvHeads, headSize, n, start } of [
          { heads: 4, kvHeads: 4, headSize: 64, n: 1, start: 37 },
          { heads: 6, kvHeads: 2, headSize: 8, n: 3, start: 0 },
          { heads: 4, kvHeads: 1, headSize: 24, n: 13, start: 5 },
          { heads: 2, kvHeads: 2, headSize: 16, n: 9, start: 0 },
        ]
      ) {
        const dim = heads * headSize, kvDim = kvHeads * headSize, half = headSize / 2, capacity = start + n + 2;
        const fill = (array: Float32Array) => {
          for (let i = 0; i < array.length; i++) array[i] = random.next();
          return array;
        };
        for (const bf16 of [false, true]) {
          const cacheOf = (value: number) =>
            bf16
              ? kernels.allocateBf16Cache(capacity * kvDim).fill(floatToBf16(value))
              : kernels.allocateCache(capacity * kvDim).fill(value);
          /** What the cache holds for a float: itself, or its nearest half. */
          const asCached = (value: number) => bf16 ? floatToBf16(value) : value;
          const job = {
            q: fill(kernels.allocate(n * dim)),
            k: fill(kernels.allocate(n * kvDim)),
            v: fill(kernels.allocate(n * kvDim)),
            n,
            start,
            // Cached positions already there, and room after: the ones written are exactly the new tokens'.
            keys: cacheOf(7),
            values: cacheOf(9),
            capacity,
            heads,
            kvHeads,
            headSize,
            cos: fill(kernels.allocate(capacity * half)),
            sin: fill(kernels.allocate(capacity * half)),
          };
          const { q, k, v } = { q: job.q.slice(), k: job.k.slice(), v: job.v.slice() };
          /** Pair j of head h of `x`'s token t, turned: float32 products and sums, no fused multiply-add. */
          const turned = (x: Float32Array, width: number, t: number, h: number, j: number): [number, number] => {
            const at = t * width + h * headSize + 2 * j, angle = (start + t) * half + j;
            const [c, s] = [job.cos[angle], job.sin[angle]];
            return [f(f(x[at] * c) - f(x[at + 1] * s)), f(f(x[at] * s) + f(x[at + 1] * c))];
          };
          assert.ok(kernels.rotateAndCache(job), `the job was refused: ${JSON.stringify({ heads, headSize, n })}`);
          const where = `${bf16 ? "bf16" : "f32"} ${heads}/${kvHeads}/${headSize}/${n}/${start}`;
          for (let t = 0; t < n; t++) {
            for (let h = 0; h < heads; h++) {
              for (let j = 0; j < half; j++) {
                const at = t * dim + h * headSize + 2 * j;
                assert.deepEqual([job.q[at], job.q[at + 1]], turned(q, dim, t, h, j), `${where} query ${t}/${h}/${j}`);
              }
            }
          }
          for (let p = 0; p < capacity; p++) {
            for (let g = 0; g < kvHeads; g++) {
              const t = p - start, cached = (g * capacity + p) * headSize;
              for (let j = 0; j < half; j++) {
                const key = [job.keys[cached + 2 * j], job.keys[cached + 2 * j + 1]];
                const value = [job.values[cached + 2 * j], job.values[cached + 2 * j + 1]];
                const from = t * kvDim + g * headSize + 2 * j;
                const isNew = t >= 0 && t < n;
                const newKey = isNew ? turned(k, kvDim, t, g, j) : [7, 7];
                const newValue = isNew ? [v[from], v[from + 1]] : [9, 9];
                assert.deepEqual(key, newKey.map(asCached), `${where} key ${p}/${g}/${j}`);
                assert.deepEqual(value, newValue.map(asCached), `${where} value ${p}/${g}/${j}`);
              }
            }
          }
        }
      }
    } finally {
      kernels.close();
    }
  });
}

Deno.test("bfloat16 caching rounds each value as floatToBf16 does, at every boundary", async () => {
  const kernels = await WasmKernels.create({ threads: 1 });
  try {
    // Ties (to even, with the kept half even and odd), just past them, the largest float32 and what rounds to
    // infinity, float32 subnormals, infinities, NaN (kept quiet), -0.
    const f = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0];
    const specials = [
      0,
      -0,
      1,
      -1,
      f(0x3f808000),
      f(0x3f818000),
      f(0x3f808001),
      f(0x3f807fff),
      f(0xbf818000),
      f(0x7f7fffff),
      f(0x7f7f7fff),
      f(0x7f7f8000),
      f(0xff7f8000),
      Infinity,
      -Infinity,
      NaN,
      f(0x00000001),
      f(0x80008000),
      f(0x00018000),
      f(0x007fffff),
      1e-45,
      -1e-40,
      0.1,
      -1 / 3,
      65504,
      123.456,
      -7,
      3.14159,
      2 ** -126,
      1e38,
      -1e-38,
      f(0x7fa00000),
    ];
    const n = specials.length / 8;
    const job = {
      q: kernels.allocate(8 * n),
      k: kernels.allocate(8 * n),
      v: kernels.allocate(8 * n),
      n,
      start: 0,
      keys: kernels.allocateBf16Cache(8 * n),
      values: kernels.allocateBf16Cache(8 * n),
      capacity: n,
      heads: 1,
      kvHeads: 1,
      headSize: 8,
      cos: kernels.allocate(4 * n),
      sin: kernels.allocate(4 * n),
    };
    job.v.set(specials);
    // A signalling NaN cannot pass through a JavaScript number, so the last value is written as bits: it comes out
    // quiet, its top half kept (0x7fa0 | 0x40).
    new Uint32Array(job.v.buffer, job.v.byteOffset, job.v.length)[specials.length - 1] = 0x7fa00000;
    assert.ok(kernels.rotateAndCache(job));
    const expected = [...specials.slice(0, -1).map(floatToBf16), 0x7fe0];
    assert.deepEqual(Array.from(job.values), expected, "values are copied without arithmetic");
  } finally {
    kernels.close();
  }
});

Deno.test("fast RoPE declines what it cannot do, leaving everything untouched", async () => {
  const kernels = await WasmKernels.create({ threads: 2 });
  try {
    const job = {
      q: kernels.allocate(8).fill(1),
      k: kernels.allocate(8).fill(1),
      v: kernels.allocate(8).fill(1),
      n: 1,
      start: 0,
      keys: kernels.allocateCache(8).fill(3),
      values: kernels.allocateCache(8).fill(3),
      capacity: 1,
      heads: 1,
      kvHeads: 1,
      headSize: 8,
      cos: kernels.allocate(4).fill(0.5),
      sin: kernels.allocate(4).fill(0.5),
    };
    // Arrays outside the kernels' memories, a head size that is not a multiple of 8: the caller's plain loops run.
    assert.equal(kernels.rotateAndCache({ ...job, values: new Float32Array(8) }), false);
    assert.equal(kernels.rotateAndCache({ ...job, cos: new Float32Array(4) }), false);
    assert.equal(kernels.rotateAndCache({ ...job, k: new Float32Array(new SharedArrayBuffer(32)) }), false);
    assert.equal(kernels.rotateAndCache({ ...job, headSize: 4, heads: 2, kvHeads: 2 }), false);
    assert.deepEqual([...job.q, ...job.k, ...job.v], Array(24).fill(1));
    assert.deepEqual([...job.keys, ...job.values], Array(16).fill(3));
    // Positions past the cache or the tables: an error, not a write out of place.
    assert.throws(() => kernels.rotateAndCache({ ...job, start: 1 }), RangeError);
    assert.throws(() => kernels.rotateAndCache({ ...job, cos: job.cos.subarray(0, 3) }), RangeError);
    assert.throws(() => kernels.rotateAndCache({ ...job, n: 2 }), RangeError);
    assert.equal(kernels.rotateAndCache(job), true);
    assert.deepEqual([...job.values], Array(8).fill(1));
  } finally {
    kernels.close();
  }
});

Deno.test("fast attention declines what it cannot do, leaving the output untouched", async () => {
  const kernels = await WasmKernels.create({ threads: 2 });
  try {
    const job = {
      q: kernels.allocate(8),
      n: 1,
      start: 0,
      keys: kernels.allocateCache(8),
      values: kernels.allocateCache(8),
      capacity: 1,
      heads: 1,
      kvHeads: 1,
      headSize: 8,
      out: kernels.allocate(8).fill(3),
    };
    // A cache outside the kernels' cache memory, queries outside their main memory, a head size that is not a
    // multiple of 4: the caller uses attendTo.
    assert.equal(kernels.attend({ ...job, keys: new Float32Array(8) }), false);
    assert.equal(kernels.attend({ ...job, values: new Float32Array(new SharedArrayBuffer(32)) }), false);
    assert.equal(kernels.attend({ ...job, q: new Float32Array(8) }), false);
    if (multiMemorySupported()) {
      // The cache has a memory of its own: keys in the main memory are at addresses attend does not read.
      assert.equal(kernels.attend({ ...job, keys: kernels.allocate(8) }), false);
      assert.equal(kernels.attend({ ...job, out: kernels.allocateCache(8) }), false);
    }
    assert.equal(kernels.attend({ ...job, headSize: 6, q: job.q.subarray(0, 6) }), false);
    assert.deepEqual(Array.from(job.out), Array(8).fill(3));
    assert.equal(kernels.attend({ ...job, heads: 2, headSize: 4, kvHeads: 2 }), true);
    assert.throws(() => kernels.attend({ ...job, start: 5 }), RangeError);
  } finally {
    kernels.close();
  }
});

Deno.test("with weights filling the kernels' 4 GiB, the key/value cache still has SIMD attention", async (t) => {
  if (!multiMemorySupported()) {
    t.step({ name: "skipped: this engine has no WebAssembly multi-memory", ignore: true, fn: () => {} });
    return;
  }
  const kernels = await WasmKernels.create({ threads: 2 });
  try {
    // 3.8 GiB of "weights" (untouched, so not resident), as Llama 2 7B's Q4_K_M file (4.08 GB): room left for
    // activations, not for a cache of 25000 positions x 1024 floats (2 x 100 MB).
    kernels.allocateBytes(3.8 * 2 ** 30);
    const [heads, headSize, positions] = [8, 128, 25000];
    const random = new Random(3);
    const fill = (array: Float32Array) => {
      for (let i = 0; i < array.length; i++) array[i] = random.next();
      return array;
    };
    const q = fill(kernels.allocate(heads * headSize)), out = kernels.allocate(heads * headSize);
    const keys = fill(kernels.allocateCache(positions * heads * headSize));
    const values = fill(kernels.allocateCache(positions * heads * headSize));
    const job = {
      q,
      n: 1,
      start: positions - 1,
      keys,
      values,
      capacity: positions,
      heads,
      kvHeads: heads,
      headSize,
      out,
    };
    assert.ok(kernels.attend(job), "attention over a cache in the cache memory was refused");
    const expected = referenceAttention(job);
    for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(out[i] - expected[i]) <= 1e-5, `[${i}]`);
    // What no longer fits the main memory goes to ordinary shared memory, which attend does not read.
    const outside = kernels.allocate(100 * 2 ** 20);
    assert.ok(!(outside.buffer instanceof WebAssembly.Memory) && outside.buffer.byteLength === outside.byteLength);
    assert.equal(kernels.attend({ ...job, q: outside }), false);
    // With the memory filled to the last bytes, a norm weight that needs copying in leaves RMSNorm to the plain loop
    // (it does not throw), while one already inside still runs in SIMD.
    const inside = kernels.allocate(headSize).fill(1);
    for (let size = 2 ** 28; size >= 64; size /= 2) {
      try {
        kernels.allocateBytes(size);
      } catch {
        // Too big for what is left: try half.
      }
    }
    assert.equal(kernels.rmsNorm(out, q, new Float32Array(headSize).fill(1), 1, 1e-5), false);
    assert.ok(kernels.rmsNorm(out, q, inside, 1, 1e-5));
  } finally {
    kernels.close();
  }
});

Deno.test("kernel memory given back is reused, and comes back zeroed", async () => {
  const kernels = await WasmKernels.create({ threads: 1 });
  try {
    // The main memory and the key/value cache's memory alike.
    for (const allocate of [(n: number) => kernels.allocate(n), (n: number) => kernels.allocateCache(n)]) {
      const first = allocate(1000).fill(7);
      const at = first.byteOffset;
      kernels.release(first);
      const second = allocate(1000);
      assert.equal(second.byteOffset, at);
      assert.ok(second.every((v) => v === 0));
      // A second, live block is not handed out twice.
      const third = allocate(1000);
      assert.notEqual(third.byteOffset, second.byteOffset);
    }
  } finally {
    kernels.close();
  }
});

Deno.test("fast SwiGLU matches silu(gate) · up, extreme gates included", async () => {
  const kernels = await WasmKernels.create({ threads: 1 });
  try {
    const random = new Random(9);
    const length = 103; // eight at a time, then four, then a tail of three
    const gate = kernels.allocate(length), up = kernels.allocate(length);
    for (let i = 0; i < length; i++) {
      gate[i] = random.next() * 12;
      up[i] = random.next();
    }
    gate.set([0, -100, 100, -1e-30, 88.5, -88.5, NaN, Infinity]);
    const expected = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
    assert.ok(kernels.swiglu(gate, up, length));
    // A NaN gate stays NaN, an infinite one infinite, as in the plain loop.
    assert.ok(Number.isNaN(gate[6]), `NaN gate: ${gate[6]}`);
    assert.equal(gate[7], expected[7]);
    for (let i = 0; i < length; i++) {
      if (i === 6 || i === 7) continue;
      // A few float32 rounding steps of the result (the polynomial exp is within a few ulp).
      assert.ok(Math.abs(gate[i] - expected[i]) <= 1e-6 * Math.abs(expected[i]) + 1e-30, `[${i}]: ${gate[i]}`);
    }
    assert.equal(kernels.swiglu(new Float32Array(4), up, 4), false);
  } finally {
    kernels.close();
  }
});

Deno.test("fast SwiGLU over a prompt's worth of values is shared by the pool, with the same results", async () => {
  const [one, pool] = [await WasmKernels.create({ threads: 1 }), await WasmKernels.create({ threads: 3 })];
  try {
    // Two whole tasks of 16384 values and a part of one.
    const length = 2 * 16384 + 1001, random = new Random(10);
    const [gate, up] = [
      Float32Array.from({ length }, () => random.next() * 8),
      Float32Array.from({ length }, () => random.next()),
    ];
    const results = [one, pool].map((kernels) => {
      const [g, u] = [kernels.allocate(length), kernels.allocate(length)];
      g.set(gate), u.set(up);
      assert.ok(kernels.swiglu(g, u, length));
      return g;
    });
    assert.deepEqual(results[1], results[0]);
    assert.notDeepEqual(results[0], gate);
  } finally {
    one.close(), pool.close();
  }
});

Deno.test("fast RMSNorm and residual addition match the plain loops", async () => {
  const kernels = await WasmKernels.create({ threads: 1 });
  try {
    const random = new Random(11);
    // 3 vectors of 44 floats: five steps of eight and one of four per vector, from a weight outside the memory.
    const size = 44, count = 3;
    const x = kernels.allocate(count * size), out = kernels.allocate(count * size);
    for (let i = 0; i < x.length; i++) x[i] = random.next() * 4;
    x.fill(0, size, 2 * size); // an all-zero vector: eps keeps it finite
    const weight = Float32Array.from({ length: size }, () => random.next());
    const eps = 1e-5;
    assert.ok(kernels.rmsNorm(out, x, weight, count, eps));
    for (let v = 0; v < count; v++) {
      let sumSquares = 0;
      for (let j = 0; j < size; j++) sumSquares += x[v * size + j] ** 2;
      const scale = 1 / Math.sqrt(sumSquares / size + eps);
      for (let j = 0; j < size; j++) {
        const expected = weight[j] * scale * x[v * size + j], actual = out[v * size + j];
        // Float32 sums of 44 squares against float64 ones: a few float32 rounding steps.
        assert.ok(Math.abs(actual - expected) <= 1e-6 * Math.abs(expected) + 1e-30, `[${v},${j}]: ${actual}`);
      }
    }
    // In place, as the plain loop allows.
    const copy = out.slice();
    assert.ok(kernels.rmsNorm(x, x, weight, count, eps));
    assert.deepEqual(Array.from(x), Array.from(copy));
    // Sizes that are not a multiple of 4, and arrays outside the memory, are left to the plain loop.
    assert.equal(kernels.rmsNorm(out, x, weight.subarray(0, 6), 1, eps), false);
    assert.equal(kernels.rmsNorm(new Float32Array(size), x, weight, 1, eps), false);

    // Residual: 4 at a time, then a tail of 3; exact (one float32 addition each, as the plain loop rounds).
    const length = 19, y = kernels.allocate(length), z = kernels.allocate(length);
    for (let i = 0; i < length; i++) [y[i], z[i]] = [random.next(), random.next()];
    const expected = y.map((value, i) => value + z[i]);
    assert.ok(kernels.add(y, z, length));
    assert.deepEqual(Array.from(y), Array.from(expected));
    assert.equal(kernels.add(new Float32Array(length), z, length), false);
  } finally {
    kernels.close();
  }
});
