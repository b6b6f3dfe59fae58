/**
 * Fast kernels: the WebAssembly SIMD module of `wasm_module.ts` on one shared
 * WebAssembly.Memory, with an optional pool of workers: each product's rows
 * are cut into tasks that the calling thread and the workers take in turn.
 *
 * Weights must live in that memory for wasm to read them. A loader that calls
 * {@link WasmKernels.allocateBytes} and reads the file into the returned bytes
 * costs nothing extra; matrices found elsewhere are copied in once, on first
 * use. Buffers from {@link WasmKernels.allocate} (activations, the key/value
 * cache) live in the memory too, so products and attention read and write them
 * in place; other inputs and outputs are copied in and out on each call
 * (O(n·(rows + cols)) against the product's O(n·rows·cols)). The key/value
 * cache ({@link WasmKernels.allocateCache}) has a second memory of its own
 * (WebAssembly multi-memory), so a model whose weights fill most of the 4 GiB
 * of the first (Llama 2 7B) still attends in SIMD over thousands of positions.
 *
 * A model larger than the main memory holds (`weightBytes`) is read tensor by
 * tensor ({@link WasmKernels.allocateTensor}): the main memory first, then
 * further memories of 4 GiB each, made for it. Each further memory has an
 * instance of the same module on it, in every thread; a product whose weights
 * are there runs on those instances, with its inputs (floats and quantized,
 * as prepared in the main memory) copied in and its outputs copied back out,
 * which costs O(n·(rows + cols)) like any other copy.
 *
 * @module
 */

import { TensorlessError } from "../errors.ts";
import { halfToFloat } from "../quant.ts";
import type { Matrix } from "../tensor.ts";
import { rowBytes } from "../tensor.ts";
import type { AttentionJob, CacheJob, Kernels, MatmulJob, RotateJob } from "./kernels.ts";
import {
  ATTENTION,
  closeBatch,
  CONTROL_LENGTH,
  JOB,
  JOB_BASE,
  JOB_INTS,
  kindOf,
  MAX_JOBS,
  MAX_WORKERS,
  openBatch,
  type Participant,
  participantOf,
  QUANTIZE,
  ROTATE,
  ROTATE_TASK,
  runShare,
  SLOT,
  SWIGLU,
  SWIGLU_TASK,
  waitWhileEquals,
  WORK,
} from "./job_runner.ts";
import { align64, MAX_BYTES, MemoryBlocks, PAGE } from "./memory_blocks.ts";
import {
  buildKernelModule,
  fillHalfTable,
  FLOAT_INPUT_KERNELS,
  INT8_INPUT_KERNELS,
  multiMemorySupported,
  relaxedSimdSupported,
  RESERVED_BYTES,
  RESERVED_PAGES,
  SUPER_BLOCK_INPUT_KERNELS,
  WASM_KERNELS,
} from "./wasm_module.ts";
import type { WorkerSetup } from "./worker.ts";

/**
 * Room {@link WasmKernels.allocate} leaves free for the products' and attention's scratch space (a 128-token prompt
 * of Llama 2 7B needs about 6 MiB, 13 MiB if its activations had to be copied in): past this, new buffers go to
 * ordinary shared memory, where the plain loops still work on them. Small, so that a 4.08 GB file (7B Q4_K_M) still
 * leaves its activations room in the memory.
 */
const ALLOCATE_HEADROOM = 64 * 2 ** 20;

/**
 * Room a model read tensor by tensor leaves in the main memory for activations, scratch and copies (a 128-token prompt
 * of a 13B model takes about 60 MiB), and the part of each further memory its weights are counted to fill: the rest is
 * slack for tensors that do not fit at a memory's end, and the further memory's own scratch.
 */
const TENSOR_HEADROOM = 256 * 2 ** 20, FURTHER_FILL = 0.875;

/** Blocks of 32 inputs below which a product's inputs are quantized by the calling thread alone (as generating). */
const QUANTIZE_SHARED_BLOCKS = 1024;

/** Options of {@link WasmKernels.create}. */
export interface WasmKernelsOptions {
  /** Threads sharing each product, the calling thread included (default 1: no workers; at most 1024). */
  threads?: number;
  /** Use relaxed SIMD when the engine has it (default true). */
  relaxed?: boolean;
  /** Name reported by `kernels.name` (default "wasm" for one thread, "fast" otherwise). */
  name?: string;
  /**
   * Bytes of the model these kernels will run (default 0): past what the main memory holds, further memories of
   * weights are made for them (see {@link WasmKernels.allocateTensor}).
   */
  weightBytes?: number;
  /**
   * At most this many bytes of a model go to the main memory (default: all but 256 MiB of it, when read tensor by
   * tensor; all but 64 MiB when read whole); the rest to further memories. Tests set it low, to run small models from
   * those.
   */
  mainTensorBytes?: number;
  /**
   * At most this many bytes of tensors go to each further memory (default 87.5% of its 4 GiB: the rest is room for
   * its scratch). Tests set it low, to spread a small model over several.
   */
  furtherTensorBytes?: number;
}

/** WebAssembly SIMD kernels, optionally multi-threaded. */
export class WasmKernels implements Kernels {
  readonly name: string;
  /** Threads sharing each product, the calling thread included. */
  readonly threads: number;
  /** Whether the module uses relaxed-SIMD instructions. */
  readonly relaxed: boolean;
  /** Weights, activations and scratch. */
  readonly #main: MemoryBlocks;
  /**
   * Memories for the weights of a model larger than the main memory holds (wasm32: 4 GiB each), read by instances of
   * the same module; a product of weights there gets its inputs and outputs there too (copied in and out).
   */
  readonly #further: MemoryBlocks[];
  /** Each further memory's scratch for those inputs and outputs. */
  readonly #furtherScratch: { start: number; bytes: number }[];
  /** Bytes of tensors the main memory takes at most (see {@link WasmKernelsOptions.mainTensorBytes}; else Infinity). */
  readonly #mainTensorBytes: number;
  #mainTensorsTaken = 0;
  /** Bytes of tensors each further memory takes at most, and has taken. */
  readonly #furtherTensorBytes: number;
  readonly #furtherTaken: number[];
  /** The key/value cache: a second memory when the engine has multi-memory, else {@link WasmKernels.#main}. */
  readonly #cache: MemoryBlocks;
  readonly #participant: Participant;
  readonly #add: (x: number, y: number, length: number) => void;
  readonly #rmsNorm: (out: number, x: number, weight: number, size: number, count: number, eps: number) => void;
  readonly #control: Int32Array;
  readonly #workers: Worker[];
  /** Where matrices and norm weights that were not loaded into the memory were copied. */
  readonly #copies = new WeakMap<ArrayBufferView, number>();
  /** Releases the blocks of arrays from {@link WasmKernels.allocate} that were dropped without `release`. */
  readonly #finalizer = new FinalizationRegistry<{ blocks: MemoryBlocks; start: number }>(({ blocks, start }) =>
    blocks.release(start)
  );
  /** Scratch for products (inputs quantized, outputs copied) and for attention scores, regrown as needed. */
  readonly #scratch = { start: 0, bytes: 0 };
  readonly #scores = { start: 0, bytes: 0 };
  #closed = false;

  private constructor(
    name: string,
    relaxed: boolean,
    memory: WebAssembly.Memory,
    cache: WebAssembly.Memory | undefined,
    instance: WebAssembly.Instance,
    further: { memory: WebAssembly.Memory; instance: WebAssembly.Instance }[],
    [mainTensorBytes, furtherTensorBytes]: [number, number],
    control: Int32Array,
    workers: Worker[],
  ) {
    this.name = name;
    this.relaxed = relaxed;
    this.#main = new MemoryBlocks(memory, RESERVED_BYTES);
    this.#further = further.map(({ memory }) => new MemoryBlocks(memory, RESERVED_BYTES));
    this.#furtherScratch = further.map(() => ({ start: 0, bytes: 0 }));
    this.#mainTensorBytes = mainTensorBytes;
    this.#furtherTensorBytes = furtherTensorBytes;
    this.#furtherTaken = further.map(() => 0);
    this.#cache = cache ? new MemoryBlocks(cache, 64) : this.#main;
    this.#participant = participantOf(0, instance, further.map((each) => each.instance));
    this.#add = instance.exports.add as (x: number, y: number, length: number) => void;
    this.#rmsNorm = instance.exports.rmsnorm as (
      out: number,
      x: number,
      weight: number,
      size: number,
      count: number,
      eps: number,
    ) => void;
    this.#control = control;
    this.#workers = workers;
    this.threads = workers.length + 1;
  }

  /** Builds the module, the memory and `threads - 1` workers (resolves once they are ready). */
  static async create(options: WasmKernelsOptions = {}): Promise<WasmKernels> {
    const threads = Math.min(MAX_WORKERS + 1, Math.max(1, Math.floor(options.threads ?? 1)));
    // The workers start first: loading their code takes about as long as building the module, which they need only
    // once it is built.
    const workers: Worker[] = [];
    const started: Promise<void>[] = [];
    for (let i = 1; i < threads; i++) {
      const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
      workers.push(worker);
      started.push(
        new Promise((resolve, reject) => {
          worker.onmessage = () => resolve();
          worker.onerror = (event) => {
            event.preventDefault();
            reject(new TensorlessError(`kernel worker failed to start: ${event.message}`));
          };
        }),
      );
    }
    const ready = Promise.all(started);
    ready.catch(() => {}); // awaited below; a worker may fail before that
    try {
      const relaxed = (options.relaxed ?? true) && relaxedSimdSupported();
      const maximum = MAX_BYTES / PAGE;
      const memory = new WebAssembly.Memory({ initial: RESERVED_PAGES, maximum, shared: true });
      // The cache's own memory when the engine has multi-memory and the address space has room for a second
      // reservation (a process limited by `ulimit -v` may not); else the cache shares the main memory. Its address 0
      // stays unused, like the reserved bytes of the main one.
      let cache: WebAssembly.Memory | undefined;
      try {
        if (multiMemorySupported()) cache = new WebAssembly.Memory({ initial: 1, maximum, shared: true });
      } catch {
        cache = undefined;
      }
      const module = kernelModule(relaxed, cache !== undefined);
      const instanceOn = (memory: WebAssembly.Memory) => {
        fillHalfTable(memory, halfToFloat);
        return new WebAssembly.Instance(module, { env: cache ? { memory, cache } : { memory } });
      };
      const instance = instanceOn(memory);
      // Further memories for the weights past the main one's room, each counted to be filled only in part.
      // A model that fits whole (allocateBytes) needs none; a larger one is read tensor by tensor.
      const weightBytes = options.weightBytes ?? 0, mainTensorBytes = options.mainTensorBytes ?? Infinity;
      const whole = weightBytes <= Math.min(mainTensorBytes, MAX_BYTES - RESERVED_BYTES - ALLOCATE_HEADROOM);
      const beyond = whole ? 0 : weightBytes - Math.min(mainTensorBytes, MAX_BYTES - RESERVED_BYTES - TENSOR_HEADROOM);
      const furtherTensorBytes = options.furtherTensorBytes ?? FURTHER_FILL * MAX_BYTES;
      const further = Array.from({ length: Math.max(0, Math.ceil(beyond / furtherTensorBytes)) }, () => {
        let memory: WebAssembly.Memory;
        try {
          memory = new WebAssembly.Memory({ initial: RESERVED_PAGES, maximum, shared: true });
        } catch (error) {
          throw new TensorlessError(`cannot set aside memory for the model's weights: ${(error as Error).message}`);
        }
        return { memory, instance: instanceOn(memory) };
      });
      const control = new Int32Array(new SharedArrayBuffer(CONTROL_LENGTH * 4));
      control[SLOT.RELAXED] = relaxed ? 1 : 0;
      workers.forEach((worker, i) => {
        const setup = { module, memory, cache, further: further.map((each) => each.memory), control, index: i + 1 };
        worker.postMessage(setup satisfies WorkerSetup);
      });
      await ready;
      const name = options.name ?? (threads > 1 ? "fast" : "wasm");
      const limits: [number, number] = [mainTensorBytes, furtherTensorBytes];
      return new WasmKernels(name, relaxed, memory, cache, instance, further, limits, control, workers);
    } catch (error) {
      for (const worker of workers) worker.terminate();
      throw error;
    }
  }

  /**
   * `size` bytes inside the kernels' memory, 64-byte aligned, for a loader to
   * read a model file into: matrices viewing these bytes need no copy. They
   * stay for the life of the kernels.
   */
  allocateBytes(size: number): Uint8Array {
    const start = this.#reserve(size);
    return new Uint8Array(this.#main.buffer(), start, size);
  }

  /** The most bytes {@link WasmKernels.allocateBytes} can still give: the main memory's room, less its headroom. */
  get maxAllocateBytes(): number {
    return Math.max(0, Math.min(this.#mainTensorBytes, MAX_BYTES - align64(this.#main.top) - ALLOCATE_HEADROOM));
  }

  /**
   * `size` bytes for one tensor of a model file too large for {@link WasmKernels.allocateBytes}: in the main memory
   * while it has room to spare, then in the first further memory with room (as many as `weightBytes` asked for).
   */
  allocateTensor(size: number): Uint8Array {
    if (this.#mainTensorsTaken + size <= this.#mainTensorBytes) {
      const start = this.#main.reserve(size, TENSOR_HEADROOM, false);
      if (start !== undefined) {
        this.#mainTensorsTaken += size;
        return new Uint8Array(this.#main.buffer(), start, size);
      }
    }
    for (const [f, blocks] of this.#further.entries()) {
      if (this.#furtherTaken[f] + size > this.#furtherTensorBytes) continue;
      const start = blocks.reserve(size, 0, false);
      if (start === undefined) continue;
      this.#furtherTaken[f] += size;
      return new Uint8Array(blocks.buffer(), start, size);
    }
    // Kernels made without the model's size have no further memories: say how to get them.
    const held = this.#further.length === 0
      ? "one memory of 4 GiB (create them with the model's size: createKernels(kind, threads, weightBytes))"
      : `${this.#further.length + 1} memories of 4 GiB (use --kernels plain)`;
    throw new TensorlessError(`the model's weights do not fit in the fast kernels' ${held}`);
  }

  /**
   * A zeroed buffer inside the kernels' memory (products and attention use it
   * in place), or in ordinary shared memory once the kernels' memory is nearly
   * full. Its space is reused after {@link WasmKernels.release}, or after the
   * returned array is garbage collected.
   */
  allocate(length: number): Float32Array {
    return this.#allocateIn(this.#main, length, ALLOCATE_HEADROOM, Float32Array);
  }

  /**
   * A zeroed buffer for a key/value cache, in the memory that {@link WasmKernels.attend} reads: a second
   * memory of up to 4 GiB beside the one holding the weights (or, past that, ordinary shared memory). Released
   * like {@link WasmKernels.allocate}'s buffers.
   */
  allocateCache(length: number): Float32Array {
    return this.#allocateIn(this.#cache, length, this.#cacheHeadroom, Float32Array);
  }

  /** The same for a cache of bfloat16 values (a float32's top 16 bits), half the bytes. */
  allocateBf16Cache(length: number): Uint16Array {
    return this.#allocateIn(this.#cache, length, this.#cacheHeadroom, Uint16Array);
  }

  get #cacheHeadroom(): number {
    return this.#cache === this.#main ? ALLOCATE_HEADROOM : 0;
  }

  /** A zeroed array of `length` in `blocks`' memory, or in ordinary shared memory when it is full. */
  #allocateIn<T extends Float32Array | Uint16Array>(
    blocks: MemoryBlocks,
    length: number,
    headroom: number,
    View: { new (buffer: ArrayBufferLike, start: number, length: number): T; BYTES_PER_ELEMENT: number },
  ): T {
    const unused = blocks.unused, bytes = length * View.BYTES_PER_ELEMENT;
    const start = this.#closed ? undefined : blocks.reserve(Math.max(64, bytes), headroom, true);
    if (start === undefined) return new View(new SharedArrayBuffer(bytes), 0, length);
    const array = new View(blocks.buffer(), start, length);
    // Space the memory just grew by is zero already: not writing it leaves its pages to be touched first by whoever
    // fills them (often the pool, in parallel) instead of here.
    if (start < unused) array.fill(0);
    this.#finalizer.register(array, { blocks, start }, array);
    return array;
  }

  /**
   * Gives back the space of an array returned by {@link WasmKernels.allocate},
   * {@link WasmKernels.allocateCache} or {@link WasmKernels.allocateBf16Cache}; the array must not be used after.
   */
  release(array: Float32Array | Uint16Array): void {
    const blocks = [this.#main, this.#cache].find((each) => each.owns(array) && each.releasable(array.byteOffset));
    if (!blocks) return;
    this.#finalizer.unregister(array);
    blocks.release(array.byteOffset);
  }

  /**
   * Attention with the module's `attend` (one task per head and query token) or, where the head size is a multiple
   * of 8, `attendFour` (per head and four consecutive query tokens, or per four query heads sharing a key/value
   * head), shared by the pool like a product. Takes the job only when the queries and the output live in the
   * kernels' memory and the cache in their cache memory ({@link WasmKernels.allocateCache}).
   */
  attend(job: AttentionJob): boolean {
    const { q, n, start, keys, values, capacity, heads, kvHeads, headSize, out } = job;
    if (!this.#takesCacheJob(job, 4, [q, out], "attention")) return false;
    const dim = heads * headSize;
    if (q.length < n * dim || out.length < n * dim) throw new RangeError("attention queries or output too short");
    const cacheApart = this.#cache !== this.#main;
    if (overlaps(out, q) || (!cacheApart && (overlaps(out, keys) || overlaps(out, values)))) return false;
    // Four floats a position: attendFour keeps four queries' scores side by side.
    const stride = align64((start + n + 3) * 16);
    const scores = this.#regionOf(this.#scores, stride * this.threads);
    const control = this.#control;
    control[SLOT.WORK] = WORK.ATTENTION;
    control[ATTENTION.Q] = q.byteOffset;
    control[ATTENTION.KEYS] = keys.byteOffset;
    control[ATTENTION.VALUES] = values.byteOffset;
    control[ATTENTION.OUT] = out.byteOffset;
    control[ATTENTION.SCORES] = scores;
    control[ATTENTION.SCORES_STRIDE] = stride;
    control[ATTENTION.N] = n;
    control[ATTENTION.START] = start;
    control[ATTENTION.HEADS] = heads;
    control[ATTENTION.KV_HEADS] = kvHeads;
    control[ATTENTION.HEAD_SIZE] = headSize;
    control[ATTENTION.CAPACITY] = capacity;
    control[ATTENTION.BF16] = keys instanceof Uint16Array ? 1 : 0;
    this.#runBatch();
    return true;
  }

  /**
   * RoPE and caching with the module's `rotateAndCache` (in float32, like llama2.c; the keys are rotated straight
   * into the cache, so `k` keeps its unrotated values): a prompt's tokens shared by the pool, a few at a time. Takes
   * the job when the head size is a multiple of 8, the queries, keys, values and tables live in the kernels' memory
   * and the cache in their cache memory.
   */
  rotateAndCache(job: RotateJob): boolean {
    const { q, k, v, n, start, keys, values, capacity, heads, kvHeads, headSize, cos, sin } = job;
    if (!this.#takesCacheJob(job, 8, [q, k, v, cos, sin], "RoPE")) return false;
    const dim = heads * headSize, kvDim = kvHeads * headSize;
    if (q.length < n * dim || k.length < n * kvDim || v.length < n * kvDim) {
      throw new RangeError("RoPE: queries, keys or values too short");
    }
    if (cos.length < (start + n) * headSize / 2 || sin.length < (start + n) * headSize / 2) {
      throw new RangeError("RoPE: angle tables shorter than the positions rotated");
    }
    if (
      this.#cache === this.#main && [keys, values].some((cache) => [q, k, v].some((array) => overlaps(cache, array)))
    ) {
      return false;
    }
    const control = this.#control;
    control[SLOT.WORK] = WORK.ROTATE;
    control[ROTATE.Q] = q.byteOffset;
    control[ROTATE.K] = k.byteOffset;
    control[ROTATE.V] = v.byteOffset;
    control[ROTATE.N] = n;
    control[ROTATE.HEADS] = heads;
    control[ROTATE.KV_HEADS] = kvHeads;
    control[ROTATE.HEAD_SIZE] = headSize;
    control[ROTATE.COS] = cos.byteOffset + start * headSize * 2;
    control[ROTATE.SIN] = sin.byteOffset + start * headSize * 2;
    control[ROTATE.KEYS] = keys.byteOffset + start * headSize * keys.BYTES_PER_ELEMENT;
    control[ROTATE.VALUES] = values.byteOffset + start * headSize * values.BYTES_PER_ELEMENT;
    control[ROTATE.CAPACITY] = capacity;
    control[ROTATE.BF16] = keys instanceof Uint16Array ? 1 : 0;
    // A token or a few (generating): here alone, as a hand-off would cost more than the work.
    this.#runBatch(n >= 2 * ROTATE_TASK);
    return true;
  }

  /**
   * Whether a job on the key/value cache can run here: a head size that is a multiple of `headMultiple`, query heads
   * a multiple of the key/value heads, `inMain` in the kernels' memory and the cache in their cache memory (keys and
   * values both float32 or both bfloat16). Throws when the cache is shorter than the positions the job reaches.
   */
  #takesCacheJob(job: CacheJob, headMultiple: number, inMain: ArrayBufferView[], step: string): boolean {
    const { n, start, keys, values, capacity, heads, kvHeads, headSize } = job;
    if (this.#closed || n === 0 || headSize % headMultiple !== 0 || kvHeads <= 0 || heads % kvHeads !== 0) return false;
    if (!inMain.every((array) => this.#main.owns(array))) return false;
    if (![keys, values].every((array) => this.#cache.owns(array))) return false;
    if ((keys instanceof Uint16Array) !== (values instanceof Uint16Array)) return false;
    const cacheLength = capacity * kvHeads * headSize;
    if (start + n > capacity || keys.length < cacheLength || values.length < cacheLength) {
      throw new RangeError(`${step}: cache shorter than the positions the new tokens reach`);
    }
    return true;
  }

  /** SwiGLU's elementwise step in SIMD (Math.exp is most of its cost in JavaScript), when both arrays are in memory. */
  swiglu(gate: Float32Array, up: Float32Array, length: number): boolean {
    if (!this.#takesPair("swiglu", gate, up, length)) return false;
    if (this.#workers.length === 0 || length < 2 * SWIGLU_TASK) {
      this.#participant.swiglu(gate.byteOffset, up.byteOffset, length);
      return true;
    }
    // A prompt's worth: shared by the pool, like a product.
    const control = this.#control;
    control[SLOT.WORK] = WORK.SWIGLU;
    control[SWIGLU.GATE] = gate.byteOffset;
    control[SWIGLU.UP] = up.byteOffset;
    control[SWIGLU.LENGTH] = length;
    this.#runBatch();
    return true;
  }

  /** The residual connection in SIMD, when both arrays are in memory. */
  add(x: Float32Array, y: Float32Array, length: number): boolean {
    if (!this.#takesPair("add", x, y, length)) return false;
    this.#add(x.byteOffset, y.byteOffset, length);
    return true;
  }

  /** Whether an elementwise step on `a` and `b` can run here (both in memory); throws if either is too short. */
  #takesPair(step: string, a: Float32Array, b: Float32Array, length: number): boolean {
    if (this.#closed || !this.#main.owns(a) || !this.#main.owns(b)) return false;
    if (a.length < length || b.length < length) throw new RangeError(`${step}: arrays shorter than the length`);
    return true;
  }

  /**
   * RMSNorm of `count` vectors in SIMD (float32 sums), when `out` and `x` are in memory and the vector size is a
   * multiple of 4; the weight is copied into the memory on first use (if there is no room left, the plain loop
   * runs instead).
   */
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, count: number, eps: number): boolean {
    const size = weight.length;
    if (this.#closed || size % 4 !== 0 || !this.#main.owns(out) || !this.#main.owns(x)) return false;
    if (out.length < count * size || x.length < count * size) throw new RangeError("rmsNorm: arrays too short");
    const at = this.#copyOf(weight, weight.byteLength, false);
    if (at === undefined) return false;
    this.#rmsNorm(out.byteOffset, x.byteOffset, at, size, count, eps);
    return true;
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
    const placed = jobs.map(({ w }) => this.#weightsOf(w));
    const weights = placed.map(([, address]) => address);
    const kinds = jobs.map(({ w }) => kindOf(w.type));

    // Inputs and outputs in the memory are used in place (an output overlapping the input goes through scratch).
    const xInPlace = this.#main.owns(x);
    const xStart = x.byteOffset, xEnd = xStart + n * cols * 4;
    const outInPlace = jobs.map(({ out }) =>
      this.#main.owns(out) && (!xInPlace || out.byteOffset >= xEnd || out.byteOffset + out.byteLength <= xStart)
    );

    // Scratch layout: floats, int16, int8, scales, corrections, then each copied output.
    const blocks = Math.ceil(cols / 32);
    const xfBytes = xInPlace ? 0 : align64(n * cols * 4), xq16Bytes = align64(n * cols * 2);
    const xq8Bytes = align64(n * cols), xdBytes = align64(n * blocks * 4), xcBytes = align64(n * blocks * 16);
    const groups = n >> 2, groupedBytes = align64(groups * blocks * 16);
    // The quantized kernels take eight inputs at a time from their values interleaved by groups of four (the
    // module's `xt`): Q8_0 the int16 ones, the others (with relaxed SIMD) the int8 ones.
    const relaxed = this.#control[SLOT.RELAXED] === 1;
    const interleave8 = relaxed && n >= 8 && kinds.some((k) => INT8_INPUT_KERNELS.includes(WASM_KERNELS[k]));
    const interleave16 = n >= 8 && kinds.some((k) => WASM_KERNELS[k] === "q8_0");
    const interleavedBytes = align64(4 * groups * cols);
    const xt8Bytes = interleave8 ? interleavedBytes : 0, xt16Bytes = interleave16 ? 2 * interleavedBytes : 0;
    const inputBytes = xfBytes + xq16Bytes + xq8Bytes + xdBytes + xcBytes + 6 * groupedBytes + xt8Bytes + xt16Bytes;
    let total = inputBytes;
    const outOffsets = jobs.map(({ w }, j) => {
      if (outInPlace[j]) return -1;
      const at = total;
      total += align64(n * w.rows * 4);
      return at;
    });
    const base = this.#regionOf(this.#scratch, total);
    const xq16 = base + xfBytes, xq8 = xq16 + xq16Bytes, xd = xq8 + xq8Bytes, xc = xd + xdBytes;
    const xd4 = xc + xcBytes, xc4 = xd4 + groupedBytes, xs4 = xc4 + groupedBytes, xh4 = xs4 + groupedBytes;
    const xp4 = xh4 + 2 * groupedBytes, xt8 = xp4 + groupedBytes, xt16 = xt8 + xt8Bytes;
    const xf = xInPlace ? xStart : base;
    if (!xInPlace) new Float32Array(this.#main.buffer(), xf, n * cols).set(x.subarray(0, n * cols));
    // Quantized kernels read the input as 8-bit blocks, made once here for every job and thread: with one scale per
    // block of 32, or per 256 when a K-quant reads them (as llama.cpp's Q8_K; every kernel reads those too).
    const quantized = kinds.some((k) => !FLOAT_INPUT_KERNELS.includes(WASM_KERNELS[k]));
    const span = kinds.some((k) => SUPER_BLOCK_INPUT_KERNELS.includes(WASM_KERNELS[k])) ? 8 : 1;
    // Quantized, and regrouped by four inputs for the kernels' four- and eight-input paths (SLOT.XD4 .. SLOT.XT16):
    // group by group, on the pool for a prompt.
    if (quantized) {
      const control = this.#control;
      control[SLOT.WORK] = WORK.QUANTIZE;
      [control[QUANTIZE.X], control[QUANTIZE.N], control[QUANTIZE.BLOCKS]] = [xf, n, blocks];
      [control[QUANTIZE.Q16], control[QUANTIZE.Q8], control[QUANTIZE.XD], control[QUANTIZE.XC]] = [xq16, xq8, xd, xc];
      [control[QUANTIZE.XD4], control[QUANTIZE.XC4], control[QUANTIZE.XS4]] = [xd4, xc4, xs4];
      [control[QUANTIZE.XP4], control[QUANTIZE.SPAN]] = [xp4, span];
      [control[QUANTIZE.XH4], control[QUANTIZE.XT8], control[QUANTIZE.XT16]] = [
        xh4,
        interleave8 ? xt8 : 0,
        interleave16 ? xt16 : 0,
      ];
      this.#runBatch(n * blocks >= QUANTIZE_SHARED_BLOCKS);
    }

    const control = this.#control;
    control[SLOT.WORK] = WORK.MATMUL;
    control[SLOT.N] = n;
    const inputs = [xq16, xq8, xd, xc, xd4, xc4, xs4, xh4, xp4, xt8, xt16];
    /** Runs jobs `which` (of one memory) on inputs at `xf` and `inputs` moved by `shift`, outputs at `outAt(j)`. */
    const run = (memory: number, which: number[], xf: number, shift: number, outAt: (j: number) => number) => {
      control[SLOT.MEMORY] = memory;
      control[SLOT.JOB_COUNT] = which.length;
      control[SLOT.XF] = xf;
      inputs.forEach((address, i) => control[INPUT_SLOTS[i]] = address + shift);
      which.forEach((j, slot) => {
        const at = JOB_BASE + slot * JOB_INTS;
        control[at + JOB.KIND] = kinds[j];
        control[at + JOB.W] = weights[j];
        control[at + JOB.ROWS] = jobs[j].w.rows;
        control[at + JOB.COLS] = cols;
        control[at + JOB.OUT] = outAt(j);
      });
      this.#runBatch();
    };
    const all = jobs.map((_, j) => j);
    const onMain = this.#further.length === 0 ? all : all.filter((j) => placed[j][0] === 0);
    if (onMain.length > 0) run(0, onMain, xf, 0, (j) => outInPlace[j] ? jobs[j].out.byteOffset : base + outOffsets[j]);
    // Weights in a further memory: the prepared inputs are copied there (the floats, then the rest as laid out above),
    // the jobs run on its instances, and their outputs are copied back once all have run (an output may be the input).
    const results: (() => void)[] = [];
    this.#further.forEach((blocks, f) => {
      const there = all.filter((j) => placed[j][0] === f + 1);
      if (there.length === 0) return;
      const floatBytes = align64(n * cols * 4), restBytes = inputBytes - xfBytes;
      const outStarts: number[] = [];
      let size = floatBytes + restBytes;
      for (const j of there) {
        outStarts[j] = size;
        size += align64(n * jobs[j].w.rows * 4);
      }
      const at = this.#regionOf(this.#furtherScratch[f], size, blocks);
      const buffer = blocks.buffer(), mainBuffer = this.#main.buffer();
      new Float32Array(buffer, at, n * cols).set(new Float32Array(mainBuffer, xf, n * cols));
      new Uint8Array(buffer, at + floatBytes, restBytes).set(new Uint8Array(mainBuffer, base + xfBytes, restBytes));
      run(f + 1, there, at, at + floatBytes - (base + xfBytes), (j) => at + outStarts[j]);
      for (const j of there) {
        results.push(() => jobs[j].out.set(new Float32Array(buffer, at + outStarts[j], n * jobs[j].w.rows)));
      }
    });
    for (const result of results) result();
    const buffer = this.#main.buffer();
    for (const j of onMain) {
      if (!outInPlace[j]) jobs[j].out.set(new Float32Array(buffer, base + outOffsets[j], n * jobs[j].w.rows));
    }
  }

  /**
   * Hands the batch described by the control array to the workers, runs a share of it here, waits for the rest
   * (unless `shared` is false: then this thread runs all of it).
   */
  #runBatch(shared = true): void {
    const control = this.#control;
    control[SLOT.PARTICIPANTS] = this.threads;
    control[SLOT.NEXT_TASK] = 0;
    if (!shared) return runShare(control, this.#participant);
    if (this.#workers.length > 0) {
      const generation = control[SLOT.GENERATION] + 1;
      Atomics.store(control, SLOT.DONE, 0);
      Atomics.store(control, SLOT.JOIN, openBatch(generation));
      Atomics.store(control, SLOT.GENERATION, generation);
      Atomics.notify(control, SLOT.GENERATION);
    }
    runShare(control, this.#participant);
    if (this.#workers.length > 0) {
      const joined = closeBatch(control);
      for (let done; (done = Atomics.load(control, SLOT.DONE)) !== joined;) waitWhileEquals(control, SLOT.DONE, done);
      if (Atomics.exchange(control, SLOT.FAILED, 0) === 1) throw new TensorlessError("a kernel worker failed");
    }
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

  /** Reserves `size` bytes at a 64-byte boundary in `blocks`' memory (the main one by default), or throws when full. */
  #reserve(size: number, releasable = false, blocks = this.#main): number {
    const start = blocks.reserve(size, 0, releasable);
    if (start === undefined) {
      const needed = (align64(blocks.top) + size) / 2 ** 30;
      throw new TensorlessError(
        `the fast kernels hold at most 4 GiB; ${needed.toFixed(2)} GiB needed (use --kernels plain)`,
      );
    }
    return start;
  }

  /**
   * The address of `region`, a scratch space of at least `bytes` in `blocks`' memory (the main one by default), reused
   * across calls (regrown, never shrunk).
   */
  #regionOf(region: { start: number; bytes: number }, bytes: number, blocks = this.#main): number {
    if (bytes > region.bytes) {
      if (region.bytes > 0) blocks.release(region.start);
      region.bytes = Math.max(bytes, 2 * region.bytes);
      region.start = this.#reserve(region.bytes, true, blocks);
    }
    return region.start;
  }

  /**
   * Which memory `w`'s data is in (0: the main one, 1..: the further ones) and its address there; data elsewhere is
   * copied into the main memory on first use.
   */
  #weightsOf(w: Matrix): [number, number] {
    const further = this.#further.findIndex((blocks) => blocks.owns(w.data));
    if (further >= 0) return [further + 1, w.data.byteOffset];
    return [0, this.#copyOf(w.data, w.rows * rowBytes(w.type, w.cols), true)];
  }

  /**
   * The address of `data`'s first `bytes` bytes in the memory, copying them in on first use if they live elsewhere.
   * When the memory has no room for the copy: throws if `required`, else undefined.
   */
  #copyOf(data: Uint8Array | Float32Array, bytes: number, required: true): number;
  #copyOf(data: Uint8Array | Float32Array, bytes: number, required: false): number | undefined;
  #copyOf(data: Uint8Array | Float32Array, bytes: number, required: boolean): number | undefined {
    if (this.#main.owns(data)) return data.byteOffset;
    let at = this.#copies.get(data);
    if (at === undefined) {
      at = required ? this.#reserve(bytes) : this.#main.reserve(bytes, 0, false);
      if (at === undefined) return undefined;
      new Uint8Array(this.#main.buffer(), at, bytes).set(new Uint8Array(data.buffer, data.byteOffset, bytes));
      this.#copies.set(data, at);
    }
    return at;
  }
}

/** The control slots of a product's prepared inputs besides the floats, in the order `matmul` lists them. */
const INPUT_SLOTS = [
  SLOT.XQ16,
  SLOT.XQ8,
  SLOT.XD,
  SLOT.XC,
  SLOT.XD4,
  SLOT.XC4,
  SLOT.XS4,
  SLOT.XH4,
  SLOT.XP4,
  SLOT.XT8,
  SLOT.XT16,
];

/** The kernel module compiled for each variant this process has asked for: building it takes 120-210 ms. */
const compiledModules = new Map<string, WebAssembly.Module>();

/** The kernel module with or without relaxed SIMD and the cache's own memory, compiled once per process. */
function kernelModule(relaxed: boolean, cacheMemory: boolean): WebAssembly.Module {
  const key = `${relaxed}/${cacheMemory}`;
  let module = compiledModules.get(key);
  if (module === undefined) {
    module = new WebAssembly.Module(buildKernelModule({ relaxed, cacheMemory }));
    compiledModules.set(key, module);
  }
  return module;
}

/** Whether two arrays share bytes. */
function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}
