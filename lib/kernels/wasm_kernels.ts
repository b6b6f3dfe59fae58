/**
 * Fast kernels: the WebAssembly SIMD module of `wasm_module.ts` on one shared
 * WebAssembly.Memory, with an optional pool of workers: each product's rows
 * are cut into tasks that the calling thread and the workers take in turn.
 *
 * Weights must live in that memory for wasm to read them. A loader that calls
 * {@link WasmKernels.allocateBytes} and reads the file into the returned bytes
 * costs nothing extra; matrices found elsewhere are copied in once, on first
 * use. Inputs and outputs are copied in and out on each call: that is
 * O(n·(rows + cols)) against the product's O(n·rows·cols).
 *
 * @module
 */

import { TensorlessError } from "../errors.ts";
import { halfToFloat } from "../quant.ts";
import type { Matrix } from "../tensor.ts";
import { rowBytes } from "../tensor.ts";
import type { Kernels, MatmulJob } from "./kernels.ts";
import {
  CONTROL_LENGTH,
  JOB,
  JOB_BASE,
  JOB_INTS,
  type KernelFunction,
  KIND_JS,
  kindOf,
  MAX_JOBS,
  runShare,
  SLOT,
  TYPE_NAMES,
  waitWhileEquals,
} from "./job_runner.ts";
import { buildKernelModule, fillHalfTable, relaxedSimdSupported, RESERVED_BYTES, WASM_KERNELS } from "./wasm_module.ts";
import type { WorkerSetup } from "./worker.ts";

const PAGE = 65536;
/** wasm32 addresses reach 4 GiB. */
const MAX_PAGES = 65536;

/** The module's `quantize(x, blocks, q16, q8, xd, xc)`. */
type QuantizeFunction = (x: number, blocks: number, q16: number, q8: number, xd: number, xc: number) => void;

/** Options of {@link WasmKernels.create}. */
export interface WasmKernelsOptions {
  /** Threads sharing each product, the calling thread included (default 1: no workers). */
  threads?: number;
  /** Use relaxed SIMD when the engine has it (default true). */
  relaxed?: boolean;
  /** Name reported by `kernels.name` (default "wasm" for one thread, "fast" otherwise). */
  name?: string;
}

/** WebAssembly SIMD kernels, optionally multi-threaded. */
export class WasmKernels implements Kernels {
  readonly name: string;
  /** Threads sharing each product, the calling thread included. */
  readonly threads: number;
  /** Whether the module uses relaxed-SIMD instructions. */
  readonly relaxed: boolean;
  readonly #memory: WebAssembly.Memory;
  readonly #kernels: KernelFunction[];
  readonly #quantize: QuantizeFunction;
  readonly #control: Int32Array;
  readonly #workers: Worker[];
  /** Every ArrayBuffer object this memory has shown, to recognise views on it. */
  readonly #ownBuffers = new WeakSet<ArrayBufferLike>();
  /** Where matrices that were not loaded into the memory were copied. */
  readonly #copies = new WeakMap<Uint8Array, number>();
  /** Next free byte (a bump allocator: weights live as long as the kernels). */
  #top = RESERVED_BYTES;
  #scratch = 0;
  #scratchBytes = 0;
  #closed = false;

  private constructor(
    name: string,
    relaxed: boolean,
    memory: WebAssembly.Memory,
    instance: WebAssembly.Instance,
    control: Int32Array,
    workers: Worker[],
  ) {
    this.name = name;
    this.relaxed = relaxed;
    this.#memory = memory;
    this.#kernels = WASM_KERNELS.map((kernel) => instance.exports[kernel] as KernelFunction);
    this.#quantize = instance.exports.quantize as QuantizeFunction;
    this.#control = control;
    this.#workers = workers;
    this.threads = workers.length + 1;
  }

  /** Builds the module, the memory and `threads - 1` workers (resolves once they are ready). */
  static async create(options: WasmKernelsOptions = {}): Promise<WasmKernels> {
    const threads = Math.max(1, Math.floor(options.threads ?? 1));
    const relaxed = (options.relaxed ?? true) && relaxedSimdSupported();
    const module = new WebAssembly.Module(buildKernelModule({ relaxed }));
    const memory = new WebAssembly.Memory({
      initial: Math.ceil(RESERVED_BYTES / PAGE),
      maximum: MAX_PAGES,
      shared: true,
    });
    fillHalfTable(memory, halfToFloat);
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const control = new Int32Array(new SharedArrayBuffer(CONTROL_LENGTH * 4));
    control[SLOT.RELAXED] = relaxed ? 1 : 0;
    const workers: Worker[] = [];
    try {
      const ready: Promise<void>[] = [];
      for (let i = 1; i < threads; i++) {
        const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
        workers.push(worker);
        ready.push(
          new Promise((resolve, reject) => {
            worker.onmessage = () => resolve();
            worker.onerror = (event) => {
              event.preventDefault();
              reject(new TensorlessError(`kernel worker failed to start: ${event.message}`));
            };
          }),
        );
        worker.postMessage({ module, memory, control } satisfies WorkerSetup);
      }
      await Promise.all(ready);
    } catch (error) {
      for (const worker of workers) worker.terminate();
      throw error;
    }
    const name = options.name ?? (threads > 1 ? "fast" : "wasm");
    return new WasmKernels(name, relaxed, memory, instance, control, workers);
  }

  /**
   * `size` bytes inside the kernels' memory, 64-byte aligned, for a loader to
   * read a model file into: matrices viewing these bytes need no copy.
   */
  allocateBytes(size: number): Uint8Array {
    const start = this.#reserve(size);
    return new Uint8Array(this.#buffer(), start, size);
  }

  /** A zeroed activation buffer (shared memory, so it could be handed to workers too). */
  allocate(length: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(length * 4));
  }

  matmul(x: Float32Array, n: number, jobs: MatmulJob[]): void {
    if (this.#closed) throw new TensorlessError("the kernels were closed");
    if (jobs.length === 0 || n === 0) return;
    if (jobs.length > MAX_JOBS) {
      for (let i = 0; i < jobs.length; i += MAX_JOBS) this.matmul(x, n, jobs.slice(i, i + MAX_JOBS));
      return;
    }
    const cols = jobs[0].w.cols;
    for (const { w, out } of jobs) {
      if (w.cols !== cols) throw new RangeError("jobs of one matmul call must share the input width");
      if (out.length < n * w.rows) throw new RangeError(`output too short: ${out.length} < ${n * w.rows}`);
    }
    if (x.length < n * cols) throw new RangeError(`input too short: ${x.length} < ${n * cols}`);
    const weights = jobs.map(({ w }) => this.#weightsOf(w));
    const kinds = jobs.map(({ w }) => kindOf(w.type));

    // Scratch layout: floats, int16, int8, scales, corrections, then each job's output.
    const blocks = Math.ceil(cols / 32);
    const align = (bytes: number) => Math.ceil(bytes / 64) * 64;
    const xfBytes = align(n * cols * 4), xq16Bytes = align(n * cols * 2), xq8Bytes = align(n * cols);
    const xdBytes = align(n * blocks * 4), xcBytes = align(n * blocks * 16);
    let total = xfBytes + xq16Bytes + xq8Bytes + xdBytes + xcBytes;
    const outOffsets = jobs.map(({ w }) => {
      const at = total;
      total += align(n * w.rows * 4);
      return at;
    });
    const base = this.#scratchOf(total);
    const xf = base, xq16 = xf + xfBytes, xq8 = xq16 + xq16Bytes, xd = xq8 + xq8Bytes, xc = xd + xdBytes;
    const buffer = this.#buffer();
    new Float32Array(buffer, xf, n * cols).set(x.subarray(0, n * cols));
    // Quantized kernels read the input as 8-bit blocks, made once here for every job and thread.
    if (kinds.some((k) => k === kindOf("Q8_0") || k === kindOf("Q4_0"))) {
      this.#quantize(xf, (n * cols) / 32, xq16, xq8, xd, xc);
    }

    const control = this.#control;
    control[SLOT.JOB_COUNT] = jobs.length;
    control[SLOT.N] = n;
    control[SLOT.PARTICIPANTS] = this.threads;
    control[SLOT.XF] = xf;
    control[SLOT.XQ16] = xq16;
    control[SLOT.XQ8] = xq8;
    control[SLOT.XD] = xd;
    control[SLOT.XC] = xc;
    jobs.forEach(({ w }, j) => {
      const at = JOB_BASE + j * JOB_INTS;
      control[at + JOB.KIND] = kinds[j];
      control[at + JOB.W] = weights[j];
      control[at + JOB.ROWS] = w.rows;
      control[at + JOB.COLS] = w.cols;
      control[at + JOB.OUT] = base + outOffsets[j];
      control[at + JOB.TYPE] = kinds[j] === KIND_JS ? TYPE_NAMES.indexOf(w.type) : 0;
    });

    control[SLOT.NEXT_TASK] = 0;
    if (this.#workers.length > 0) {
      Atomics.store(control, SLOT.PENDING, this.#workers.length);
      Atomics.add(control, SLOT.GENERATION, 1);
      Atomics.notify(control, SLOT.GENERATION);
    }
    runShare(control, this.#kernels, this.#memory);
    if (this.#workers.length > 0) {
      for (let pending; (pending = Atomics.load(control, SLOT.PENDING)) !== 0;) {
        waitWhileEquals(control, SLOT.PENDING, pending);
      }
      if (Atomics.exchange(control, SLOT.FAILED, 0) === 1) throw new TensorlessError("a kernel worker failed");
    }
    jobs.forEach(({ w, out }, j) => out.set(new Float32Array(buffer, base + outOffsets[j], n * w.rows)));
  }

  /** Stops the workers; the kernels are unusable afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Wake the workers with the quit flag set so none is left blocked in Atomics.wait, then end them.
    Atomics.store(this.#control, SLOT.QUIT, 1);
    Atomics.add(this.#control, SLOT.GENERATION, 1);
    Atomics.notify(this.#control, SLOT.GENERATION);
    for (const worker of this.#workers) worker.terminate();
  }

  /** The memory's current buffer, remembered as ours. */
  #buffer(): ArrayBufferLike {
    const buffer = this.#memory.buffer;
    this.#ownBuffers.add(buffer);
    return buffer;
  }

  /** Reserves `size` bytes at a 64-byte boundary, growing the memory as needed. */
  #reserve(size: number): number {
    const start = Math.ceil(this.#top / 64) * 64;
    const end = start + size;
    if (end > MAX_PAGES * PAGE) {
      throw new TensorlessError(
        `the fast kernels hold at most 4 GiB; ${(end / 2 ** 30).toFixed(2)} GiB needed (use --kernels plain)`,
      );
    }
    const have = this.#memory.buffer.byteLength;
    if (end > have) this.#memory.grow(Math.ceil((end - have) / PAGE));
    this.#top = end;
    return start;
  }

  /** Scratch space of at least `bytes`, reused across calls (regrown, never shrunk). */
  #scratchOf(bytes: number): number {
    if (bytes > this.#scratchBytes) {
      this.#scratchBytes = Math.max(bytes, 2 * this.#scratchBytes);
      this.#scratch = this.#reserve(this.#scratchBytes);
    }
    return this.#scratch;
  }

  /** The address of `w`'s data in the memory, copying it in on first use if it lives elsewhere. */
  #weightsOf(w: Matrix): number {
    if (this.#ownBuffers.has(w.data.buffer)) return w.data.byteOffset;
    let at = this.#copies.get(w.data);
    if (at === undefined) {
      const bytes = w.rows * rowBytes(w.type, w.cols);
      at = this.#reserve(bytes);
      new Uint8Array(this.#buffer(), at, bytes).set(w.data.subarray(0, bytes));
      this.#copies.set(w.data, at);
    }
    return at;
  }
}
