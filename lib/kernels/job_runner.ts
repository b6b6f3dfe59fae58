/**
 * The part of a matrix product every thread runs: the main thread and each
 * worker read the same job table from a shared Int32Array and take tasks
 * (runs of rows of one matrix) from it until all are done.
 *
 * @module
 */

import { rowBytes, type TensorType } from "../tensor.ts";
import { FLOAT_INPUT_KERNELS, INT8_INPUT_KERNELS, WASM_KERNELS } from "./wasm_module.ts";

/** Slots of the control array. */
export const SLOT = {
  /** Bumped by the main thread for each batch of jobs; workers wait on it. */
  GENERATION: 0,
  /** Workers that joined the current batch and finished their share of it; the main thread waits on it. */
  DONE: 1,
  /** Set to 1 to make workers exit. */
  QUIT: 2,
  JOB_COUNT: 3,
  /** Number of input vectors. */
  N: 4,
  /** Threads sharing the rows (main thread included). */
  PARTICIPANTS: 5,
  /** Inputs as floats. */
  XF: 6,
  /** Inputs quantized, as int16. */
  XQ16: 7,
  /** Inputs quantized, as int8. */
  XQ8: 8,
  /** Per-block input scales (float). */
  XD: 9,
  /** Per-block i32x4 `[-8·Σq, Σq₀, Σq₁, 0]`: for Q4_0's and Q5_0's offsets, and the minimums' input sums. */
  XC: 10,
  /** 1 when the module uses relaxed SIMD (its kernels of INT8_INPUT_KERNELS then read int8 inputs). */
  RELAXED: 11,
  /** Set to 1 by a worker whose share failed; the main thread then throws. */
  FAILED: 12,
  /** The next task to take (reset to 0 for each batch). */
  NEXT_TASK: 13,
  /** What the batch is: one of {@link WORK}, which says where its fields are. */
  WORK: 14,
  /** Input scales by groups of four inputs: per group and block, the four inputs' scales as one vector. */
  XD4: 15,
  /** The offsets' corrections laid out the same way: per group and block, the four inputs' `-8·Σq`. */
  XC4: 16,
  /** The same for the K-quants' minimums: per group and block, the four inputs' `d·Σq` (float). */
  XS4: 17,
  /** The same for Q6_K's offset of 32: per group and half block (16 values), the four inputs' `32·Σq`. */
  XH4: 18,
  /** The int8 inputs by groups of four, interleaved four values at a time (for INT8_INPUT_KERNELS; see the module). */
  XT8: 19,
  /** The int16 inputs by groups of four, interleaved two values at a time (for Q8_0). */
  XT16: 20,
  /** Per group and block, the four inputs' half sums `Σq₀, Σq₁` as int16 pairs (for the K-quants' eight-input path). */
  XP4: 21,
  /** Which weight memory the batch's products read (0: the main one), and so which instance's kernels run. */
  MEMORY: 22,
  /** Who may still join the current batch: see {@link joinBatch}. */
  JOIN: 23,
} as const;

/** Where the job table starts (after the slots), and the ints per job. */
export const JOB_BASE = 24, JOB_INTS = 8;

/**
 * Kinds of batch: products (the job table), attention ({@link ATTENTION}), SwiGLU's elementwise step
 * ({@link SWIGLU}), quantizing a product's inputs ({@link QUANTIZE}) and RoPE with caching ({@link ROTATE}).
 */
export const WORK = { MATMUL: 0, ATTENTION: 1, SWIGLU: 2, QUANTIZE: 3, ROTATE: 4 } as const;

/** Fields of a SwiGLU batch (in the job table's space): byte addresses of the gate and up arrays, and the length. */
export const SWIGLU = { GATE: JOB_BASE, UP: JOB_BASE + 1, LENGTH: JOB_BASE + 2 } as const;
/** Values per SwiGLU task. */
export const SWIGLU_TASK = 16384;

/**
 * Fields of a quantize batch: `N` inputs of `BLOCKS` blocks of 32 floats from `X`, quantized into `Q16` .. `XC` with
 * one scale per `SPAN` blocks (the module's `quantize`) and regrouped by four into `XD4` .. `XP4` (its `regroup`;
 * `XT8` and `XT16` 0 when no kernel of the product reads them).
 */
export const QUANTIZE = {
  X: JOB_BASE,
  N: JOB_BASE + 1,
  BLOCKS: JOB_BASE + 2,
  Q16: JOB_BASE + 3,
  Q8: JOB_BASE + 4,
  XD: JOB_BASE + 5,
  XC: JOB_BASE + 6,
  XD4: JOB_BASE + 7,
  XC4: JOB_BASE + 8,
  XS4: JOB_BASE + 9,
  XH4: JOB_BASE + 10,
  XT8: JOB_BASE + 11,
  XT16: JOB_BASE + 12,
  XP4: JOB_BASE + 13,
  SPAN: JOB_BASE + 14,
} as const;

/**
 * Fields of an attention batch (they share the space of the job table, which
 * such a batch does not use). Pointers are byte addresses in the memory.
 */
export const ATTENTION = {
  /** Queries: `n` vectors of `heads * headSize` floats. */
  Q: JOB_BASE,
  /** The key cache, head by head: `CAPACITY` positions of `headSize` floats each. */
  KEYS: JOB_BASE + 1,
  /** The value cache, laid out like the keys. */
  VALUES: JOB_BASE + 2,
  /** Results, laid out like the queries. */
  OUT: JOB_BASE + 3,
  /** Scratch for scores: `SCORES_STRIDE` bytes per thread. */
  SCORES: JOB_BASE + 4,
  SCORES_STRIDE: JOB_BASE + 5,
  /** Query vectors. */
  N: JOB_BASE + 6,
  /** Position of the first query: query t attends to positions `0 ..= START + t`. */
  START: JOB_BASE + 7,
  HEADS: JOB_BASE + 8,
  KV_HEADS: JOB_BASE + 9,
  HEAD_SIZE: JOB_BASE + 10,
  CAPACITY: JOB_BASE + 11,
  /** 1 when the cache holds bfloat16 values (the module's `attendBf16` and `attendFourBf16` read it). */
  BF16: JOB_BASE + 12,
} as const;

/**
 * Fields of a RoPE and caching batch: the arguments of the module's `rotateAndCache` for all `N` tokens (byte
 * addresses; the tables' and the caches' at the first token's position), and the cache's positions per head.
 */
export const ROTATE = {
  Q: JOB_BASE,
  K: JOB_BASE + 1,
  V: JOB_BASE + 2,
  N: JOB_BASE + 3,
  HEADS: JOB_BASE + 4,
  KV_HEADS: JOB_BASE + 5,
  HEAD_SIZE: JOB_BASE + 6,
  COS: JOB_BASE + 7,
  SIN: JOB_BASE + 8,
  KEYS: JOB_BASE + 9,
  VALUES: JOB_BASE + 10,
  CAPACITY: JOB_BASE + 11,
  /** 1 when the cache holds bfloat16 values (the module's `rotateAndCacheBf16` writes it). */
  BF16: JOB_BASE + 12,
} as const;
/** Tokens per RoPE task. */
export const ROTATE_TASK = 4;

/** The module's `rotateAndCache` (see `wasm_module.ts`). */
export type RotateFunction = (
  q: number,
  k: number,
  v: number,
  count: number,
  heads: number,
  kvHeads: number,
  headSize: number,
  cos: number,
  sin: number,
  keys: number,
  values: number,
  runBytes: number,
) => void;

/**
 * The module's `attendFour` (see `wasm_module.ts`): `attend`'s arguments, then the bytes from query to query and
 * whether the four are consecutive tokens (1) or heads of one token (0).
 */
export type AttendFourFunction = (...args: [...Parameters<AttendFunction>, qStride: number, causal: number]) => void;

/** The module's `attend` (see `wasm_module.ts`). */
export type AttendFunction = (
  q: number,
  keys: number,
  values: number,
  out: number,
  scores: number,
  positions: number,
  headSize: number,
  kvStride: number,
) => void;

/** The most jobs one matmul call may carry. */
export const MAX_JOBS = 8;
/** Length of the control array. */
export const CONTROL_LENGTH = JOB_BASE + MAX_JOBS * JOB_INTS;

/** Fields of one job. */
export const JOB = { KIND: 0, W: 1, ROWS: 2, COLS: 3, OUT: 4 } as const;

/** The job kind of an encoding: the index of its wasm kernel (every encoding has one). */
export function kindOf(type: TensorType): number {
  const index = WASM_KERNELS.indexOf(type.toLowerCase() as (typeof WASM_KERNELS)[number]);
  if (index < 0) throw new Error(`no kernel for ${type} matrices`);
  return index;
}

/** Kernel functions as exported by the module. */
export type KernelFunction = (
  w: number,
  r0: number,
  r1: number,
  cols: number,
  x: number,
  xd: number,
  xc: number,
  n: number,
  out: number,
  rows: number,
  xd4: number,
  xc4: number,
  xs4: number,
  xh4: number,
  xt: number,
  xp4: number,
) => void;

/** Bytes of weights a generation task covers at least, where each thread still gets a task (see rowsPerTask). */
const GENERATION_TASK_BYTES = 256 * 1024;

/**
 * Rows per task: each job is cut into about 8 tasks per thread, so a thread
 * that starts late or runs slower simply takes fewer (whole rows, at least 4).
 * Generating (fewer than four inputs), a task also covers at least
 * GENERATION_TASK_BYTES of weights, as long as each thread still gets one: its
 * four row streams then run long enough for the prefetcher, and a small
 * matrix (15M's are 330 KB) is not cut into hand-offs of 20 KB (measured:
 * +9-14% generating with 15M F32 on two threads, the same with 110M Q4_0).
 */
export function rowsPerTask(rows: number, participants: number, n: number, rowBytes: number): number {
  const balanced = Math.max(4, Math.ceil(rows / (8 * participants)));
  if (n >= 4) return balanced;
  return Math.max(balanced, Math.min(Math.ceil(GENERATION_TASK_BYTES / rowBytes), Math.ceil(rows / participants)));
}

/** The encoding each wasm kernel reads, by kind. */
const KERNEL_TYPES = WASM_KERNELS.map((kernel) => kernel.toUpperCase() as TensorType);

/** rowsPerTask for the job at `base` of the control array. */
function taskRows(control: Int32Array, base: number, participants: number, n: number): number {
  const kind = control[base + JOB.KIND], cols = control[base + JOB.COLS];
  return rowsPerTask(control[base + JOB.ROWS], participants, n, rowBytes(KERNEL_TYPES[kind], cols));
}

/** The module's `quantize` (see `wasm_module.ts`). */
export type QuantizeFunction = (
  x: number,
  blocks: number,
  q16: number,
  q8: number,
  xd: number,
  xc: number,
  span: number,
) => void;

/** The module's `regroup` (see `wasm_module.ts`). */
export type RegroupFunction = (
  xd: number,
  xc: number,
  q8: number,
  q16: number,
  blocks: number,
  xd4: number,
  xc4: number,
  xs4: number,
  xh4: number,
  xt8: number,
  xt16: number,
  xp4: number,
) => void;

/** What one thread has to run its share: the module's exports on the shared memory, and its index. */
export interface Participant {
  /** 0 for the calling thread, 1.. for the workers. */
  index: number;
  kernels: KernelFunction[];
  /** The same kernels of the instances on the further weight memories (their products read weights there). */
  kernelsOn: KernelFunction[][];
  attend: AttendFunction;
  attendFour: AttendFourFunction;
  /** The same for a bfloat16 cache. */
  attendBf16: AttendFunction;
  attendFourBf16: AttendFourFunction;
  swiglu: (gate: number, up: number, length: number) => void;
  quantize: QuantizeFunction;
  regroup: RegroupFunction;
  rotateAndCache: RotateFunction;
  rotateAndCacheBf16: RotateFunction;
}

/**
 * A participant's view of an instance of the kernel module on the main memory, and of `further` instances on the
 * further weight memories (the same module, whose products then read weights, inputs and outputs there).
 */
export function participantOf(
  index: number,
  instance: WebAssembly.Instance,
  further: WebAssembly.Instance[] = [],
): Participant {
  const exports = instance.exports;
  const kernelsOf = (instance: WebAssembly.Instance) =>
    WASM_KERNELS.map((kernel) => instance.exports[kernel] as KernelFunction);
  return {
    index,
    kernels: kernelsOf(instance),
    kernelsOn: further.map(kernelsOf),
    attend: exports.attend as AttendFunction,
    attendFour: exports.attendFour as AttendFourFunction,
    attendBf16: exports.attendBf16 as AttendFunction,
    attendFourBf16: exports.attendFourBf16 as AttendFourFunction,
    swiglu: exports.swiglu as Participant["swiglu"],
    quantize: exports.quantize as QuantizeFunction,
    regroup: exports.regroup as RegroupFunction,
    rotateAndCache: exports.rotateAndCache as RotateFunction,
    rotateAndCacheBf16: exports.rotateAndCacheBf16 as RotateFunction,
  };
}

/**
 * Computes tasks of the current batch until none is left: every thread (main
 * and workers) calls this after a hand-off and takes the next task by an
 * atomic increment of {@link SLOT.NEXT_TASK}.
 */
export function runShare(control: Int32Array, participant: Participant): void {
  switch (control[SLOT.WORK]) {
    case WORK.ATTENTION:
      return runAttention(control, participant);
    case WORK.SWIGLU:
      return runSwiglu(control, participant);
    case WORK.QUANTIZE:
      return runQuantize(control, participant);
    case WORK.ROTATE:
      return runRotate(control, participant);
    default: {
      const memory = control[SLOT.MEMORY];
      return runMatmul(control, memory === 0 ? participant.kernels : participant.kernelsOn[memory - 1]);
    }
  }
}

/** The next task of the batch, or -1 once `tasks` are taken. */
function nextTask(control: Int32Array, tasks: number): number {
  const task = Atomics.add(control, SLOT.NEXT_TASK, 1);
  return task < tasks ? task : -1;
}

/** SwiGLU tasks: runs of {@link SWIGLU_TASK} values. */
function runSwiglu(control: Int32Array, { swiglu }: Participant): void {
  const gate = control[SWIGLU.GATE] >>> 0, up = control[SWIGLU.UP] >>> 0, length = control[SWIGLU.LENGTH];
  for (let task; (task = nextTask(control, Math.ceil(length / SWIGLU_TASK))) >= 0;) {
    const from = task * SWIGLU_TASK;
    swiglu(gate + 4 * from, up + 4 * from, Math.min(SWIGLU_TASK, length - from));
  }
}

/**
 * Quantize tasks: a group of four inputs each (the last one the one to three left over, if any), quantized and then,
 * a whole group, regrouped while its blocks are still in cache.
 */
function runQuantize(control: Int32Array, { quantize, regroup }: Participant): void {
  const n = control[QUANTIZE.N], blocks = control[QUANTIZE.BLOCKS], span = control[QUANTIZE.SPAN];
  const [x, q16, q8, xd, xc, xd4, xc4, xs4, xh4, xt8, xt16, xp4] = [
    QUANTIZE.X,
    QUANTIZE.Q16,
    QUANTIZE.Q8,
    QUANTIZE.XD,
    QUANTIZE.XC,
    QUANTIZE.XD4,
    QUANTIZE.XC4,
    QUANTIZE.XS4,
    QUANTIZE.XH4,
    QUANTIZE.XT8,
    QUANTIZE.XT16,
    QUANTIZE.XP4,
  ].map((field) => control[field] >>> 0);
  for (let g; (g = nextTask(control, Math.ceil(n / 4))) >= 0;) {
    const b = 4 * g * blocks, inputs = Math.min(4, n - 4 * g);
    quantize(x + 128 * b, inputs * blocks, q16 + 64 * b, q8 + 32 * b, xd + 4 * b, xc + 16 * b, span);
    if (inputs < 4) continue;
    // Group g's entries: 16 bytes per block (32 for the half sums), its interleaved values four inputs' worth.
    const at = 16 * g * blocks;
    regroup(
      xd + 4 * b,
      xc + 16 * b,
      q8 + 32 * b,
      q16 + 64 * b,
      blocks,
      xd4 + at,
      xc4 + at,
      xs4 + at,
      xh4 + 2 * at,
      xt8 && xt8 + 8 * at,
      xt16 && xt16 + 16 * at,
      xp4 + at,
    );
  }
}

/** RoPE tasks: runs of {@link ROTATE_TASK} tokens. */
function runRotate(control: Int32Array, participant: Participant): void {
  const n = control[ROTATE.N], heads = control[ROTATE.HEADS], kvHeads = control[ROTATE.KV_HEADS];
  const bf16 = control[ROTATE.BF16] === 1;
  const rotateAndCache = bf16 ? participant.rotateAndCacheBf16 : participant.rotateAndCache;
  const headSize = control[ROTATE.HEAD_SIZE], headBytes = 4 * headSize, tableBytes = 2 * headSize;
  const cachedBytes = (bf16 ? 2 : 4) * headSize;
  const [q, k, v, cos, sin, keys, values] = [
    ROTATE.Q,
    ROTATE.K,
    ROTATE.V,
    ROTATE.COS,
    ROTATE.SIN,
    ROTATE.KEYS,
    ROTATE.VALUES,
  ]
    .map((field) => control[field] >>> 0);
  const runBytes = control[ROTATE.CAPACITY] * cachedBytes;
  for (let task; (task = nextTask(control, Math.ceil(n / ROTATE_TASK))) >= 0;) {
    const t = task * ROTATE_TASK, count = Math.min(ROTATE_TASK, n - t);
    const queryAt = t * heads * headBytes, keyAt = t * kvHeads * headBytes;
    rotateAndCache(
      q + queryAt,
      k + keyAt,
      v + keyAt,
      count,
      heads,
      kvHeads,
      headSize,
      cos + t * tableBytes,
      sin + t * tableBytes,
      keys + t * cachedBytes,
      values + t * cachedBytes,
      runBytes,
    );
  }
}

/**
 * Attention tasks, where the head size is a multiple of 8 (else one head of one query each): for a prompt, one head
 * of four consecutive query tokens while four are left, then of one; otherwise, where four query heads share a
 * key/value head, four heads of one token.
 */
function runAttention(control: Int32Array, participant: Participant): void {
  const bf16 = control[ATTENTION.BF16] === 1, { index } = participant;
  const [attend, attendFour] = bf16
    ? [participant.attendBf16, participant.attendFourBf16]
    : [participant.attend, participant.attendFour];
  const n = control[ATTENTION.N], heads = control[ATTENTION.HEADS], headSize = control[ATTENTION.HEAD_SIZE];
  const kvHeads = control[ATTENTION.KV_HEADS], start = control[ATTENTION.START];
  const q = control[ATTENTION.Q] >>> 0, out = control[ATTENTION.OUT] >>> 0;
  const keys = control[ATTENTION.KEYS] >>> 0, values = control[ATTENTION.VALUES] >>> 0;
  const scores = (control[ATTENTION.SCORES] >>> 0) + index * control[ATTENTION.SCORES_STRIDE];
  const dim = heads * headSize, headsPerKv = heads / kvHeads;
  // Bytes per cached vector, one head's run of the cache.
  const headBytes = headSize * (bf16 ? 2 : 4), runBytes = control[ATTENTION.CAPACITY] * headBytes;
  if (headSize % 8 === 0 && n < 4 && headsPerKv % 4 === 0) {
    for (let task; (task = nextTask(control, (n * heads) / 4)) >= 0;) {
      const t = Math.floor((4 * task) / heads), h = (4 * task) % heads;
      const run = Math.floor(h / headsPerKv) * runBytes;
      const at = (t * dim + h * headSize) * 4;
      // The four queries are heads of one token: one query (floats) apart.
      attendFour(
        q + at,
        keys + run,
        values + run,
        out + at,
        scores,
        start + t + 1,
        headSize,
        headBytes,
        4 * headSize,
        0,
      );
    }
    return;
  }
  const fours = headSize % 8 === 0 ? n >> 2 : 0, ones = n - 4 * fours;
  for (let task; (task = nextTask(control, (fours + ones) * heads)) >= 0;) {
    const h = task % heads, group = Math.floor(task / heads);
    const t = group < fours ? 4 * group : 3 * fours + group;
    const run = Math.floor(h / headsPerKv) * runBytes;
    const at = (t * dim + h * headSize) * 4;
    if (group < fours) {
      attendFour(q + at, keys + run, values + run, out + at, scores, start + t + 1, headSize, headBytes, dim * 4, 1);
    } else {
      attend(q + at, keys + run, values + run, out + at, scores, start + t + 1, headSize, headBytes);
    }
  }
}

function runMatmul(control: Int32Array, kernels: KernelFunction[]): void {
  const jobs = control[SLOT.JOB_COUNT];
  const n = control[SLOT.N];
  const participants = control[SLOT.PARTICIPANTS];
  let job = 0, firstTask = 0;
  let base = JOB_BASE, chunk = taskRows(control, base, participants, n);
  let tasks = Math.ceil(control[base + JOB.ROWS] / chunk);
  for (let task = Atomics.add(control, SLOT.NEXT_TASK, 1);; task = Atomics.add(control, SLOT.NEXT_TASK, 1)) {
    // Find the job this task belongs to (tasks are numbered job after job; they only increase).
    while (task >= firstTask + tasks) {
      firstTask += tasks;
      if (++job === jobs) return;
      base = JOB_BASE + job * JOB_INTS;
      chunk = taskRows(control, base, participants, n);
      tasks = Math.ceil(control[base + JOB.ROWS] / chunk);
    }
    const kind = control[base + JOB.KIND];
    const rows = control[base + JOB.ROWS];
    const cols = control[base + JOB.COLS];
    const r0 = (task - firstTask) * chunk;
    const r1 = Math.min(rows, r0 + chunk);
    const w = control[base + JOB.W] >>> 0;
    const out = control[base + JOB.OUT] >>> 0;
    const name = WASM_KERNELS[kind];
    const int8 = control[SLOT.RELAXED] === 1 && INT8_INPUT_KERNELS.includes(name);
    const x = FLOAT_INPUT_KERNELS.includes(name) ? control[SLOT.XF] : control[int8 ? SLOT.XQ8 : SLOT.XQ16];
    const [xd, xc, xd4, xc4] = [control[SLOT.XD], control[SLOT.XC], control[SLOT.XD4], control[SLOT.XC4]];
    const [xs4, xh4, xt] = [control[SLOT.XS4], control[SLOT.XH4], control[int8 ? SLOT.XT8 : SLOT.XT16]];
    kernels[kind](w, r0, r1, cols, x, xd, xc, n, out, rows, xd4, xc4, xs4, xh4, xt, control[SLOT.XP4]);
  }
}

/**
 * A batch is open to workers until the main thread has run out of tasks: then it closes the batch and waits only for
 * the workers that joined it. One that had not woken by then (the system had given its core to another thread: on
 * two busy cores, V8's compiler and collector threads and any other process take turns with ours) skips the batch
 * instead of holding up the main thread until it runs again (measured on 15M: 25-50 such waits a second, 1.5-2 ms
 * each). The {@link SLOT.JOIN} word holds the batch's generation (its low 22 bits: a worker would have to sleep
 * through four million batches to mistake one for another) and how many workers joined it (10 bits, so at most
 * {@link MAX_WORKERS}), or {@link CLOSED}. Workers read a batch's fields only after joining it, so the main thread may
 * write the next batch's as soon as the joined ones are done.
 */
const CLOSED = -1;

/** The most workers a pool may have (the joined ones are counted in 10 bits of the {@link SLOT.JOIN} word). */
export const MAX_WORKERS = 1023;

/** The {@link SLOT.JOIN} word of an open batch of generation `generation` that no worker has joined yet. */
export function openBatch(generation: number): number {
  return (generation & 0x3fffff) << 10;
}

/**
 * Joins the batch of generation `generation` unless it is closed or a later one is under way: whether this worker
 * is to run its share (and then count itself in {@link SLOT.DONE}).
 */
export function joinBatch(control: Int32Array, generation: number): boolean {
  for (;;) {
    const join = Atomics.load(control, SLOT.JOIN);
    if (join === CLOSED || join >>> 10 !== (generation & 0x3fffff)) return false;
    if (Atomics.compareExchange(control, SLOT.JOIN, join, join + 1) === join) return true;
  }
}

/** Closes the current batch to workers that have not joined it; returns how many did. */
export function closeBatch(control: Int32Array): number {
  return Atomics.exchange(control, SLOT.JOIN, CLOSED) & 0x3ff;
}

/**
 * Busy-wait iterations (about 0.1 ms: an Atomics.load takes ~20 ns here) before sleeping in Atomics.wait. Between two
 * products of one token the main thread works for microseconds to tens of them, less than waking a sleeping thread
 * can take. Longer spins cost more than they save once another process wants a core: the spinning thread holds one
 * that its partner, taken off its own, is waiting for (15M on two threads next to one busy process: 171 tokens/s with
 * a millisecond's spin, 230 with this; alone, the same).
 */
export const SPIN = 5_000;

/** Blocks until `control[slot]` differs from `value`, spinning briefly first. */
export function waitWhileEquals(control: Int32Array, slot: number, value: number): void {
  for (let spins = 0; Atomics.load(control, slot) === value; spins++) {
    if (spins > SPIN) Atomics.wait(control, slot, value);
  }
}
