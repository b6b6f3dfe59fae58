/**
 * Blocks of one WebAssembly.Memory handed out and taken back: a bump pointer
 * at the top, and a free list (by address, merged with free neighbours) of
 * released blocks. The fast kernels keep one for their main memory (weights,
 * activations, scratch) and one for the key/value cache.
 *
 * @module
 */

/** Bytes in a WebAssembly memory page. */
export const PAGE = 65536;
/** wasm32 addresses reach 4 GiB. */
export const MAX_BYTES = 65536 * PAGE;

/** Rounds a byte count or address up to a 64-byte boundary (a cache line, and SIMD-friendly). */
export const align64 = (bytes: number): number => Math.ceil(bytes / 64) * 64;

/** The blocks of one memory, from `base` (bytes below it belong to the owner) up. */
export class MemoryBlocks {
  readonly memory: WebAssembly.Memory;
  /** Every ArrayBuffer object this memory has shown, to recognise views on it. */
  readonly #ownBuffers = new WeakSet<ArrayBufferLike>();
  /** End of the used part: blocks are taken from the free list first, then from here. */
  #top: number;
  /** The highest end of any block handed out: the bytes above were never used, so they are still zero. */
  #used: number;
  /** Released blocks, by address, merged with free neighbours. */
  #free: { start: number; size: number }[] = [];
  /** Size of every block that can be released (weights are not), by address. */
  readonly #blocks = new Map<number, number>();

  constructor(memory: WebAssembly.Memory, base: number) {
    this.memory = memory;
    this.#top = base;
    this.#used = base;
  }

  /** Bytes in use or reserved below the top (what a new block at the top would start after). */
  get top(): number {
    return this.#top;
  }

  /**
   * Where the never-used part starts: a block reserved at or above it is still all zeros, as the memory grew (a
   * block released and reserved again is not).
   */
  get unused(): number {
    return this.#used;
  }

  /** The memory's current buffer, remembered as ours. */
  buffer(): ArrayBufferLike {
    const buffer = this.memory.buffer;
    this.#ownBuffers.add(buffer);
    return buffer;
  }

  /** Whether `array` views this memory. */
  owns(array: ArrayBufferView): boolean {
    return this.#ownBuffers.has(array.buffer);
  }

  /** Whether `start` is the address of a block that {@link MemoryBlocks.release} can give back. */
  releasable(start: number): boolean {
    return this.#blocks.has(start);
  }

  /**
   * `size` bytes at a 64-byte boundary: the first released block big enough, else new space at the top (growing the
   * memory), as long as `headroom` bytes stay below 4 GiB. Undefined when there is no room.
   */
  reserve(size: number, headroom: number, releasable: boolean): number | undefined {
    size = align64(size);
    let start: number | undefined;
    const fit = this.#free.findIndex((block) => block.size >= size);
    if (fit >= 0) {
      const block = this.#free[fit];
      start = block.start;
      block.start += size;
      block.size -= size;
      if (block.size === 0) this.#free.splice(fit, 1);
    } else {
      start = align64(this.#top);
      const end = start + size;
      if (end > MAX_BYTES - headroom) return undefined;
      const have = this.memory.buffer.byteLength;
      if (end > have) this.memory.grow(Math.ceil((end - have) / PAGE));
      this.#top = end;
      this.#used = Math.max(this.#used, end);
    }
    if (releasable) this.#blocks.set(start, size);
    return start;
  }

  /** Puts a block back on the free list, merged with free neighbours (and into the top when it ends there). */
  release(start: number): void {
    const size = this.#blocks.get(start);
    if (size === undefined) return;
    this.#blocks.delete(start);
    const free = this.#free;
    let at = free.findIndex((block) => block.start > start);
    if (at < 0) at = free.length;
    free.splice(at, 0, { start, size });
    if (at + 1 < free.length && free[at].start + free[at].size === free[at + 1].start) {
      free[at].size += free[at + 1].size;
      free.splice(at + 1, 1);
    }
    if (at > 0 && free[at - 1].start + free[at - 1].size === free[at].start) {
      free[at - 1].size += free[at].size;
      free.splice(at, 1);
      at--;
    }
    if (free[at].start + free[at].size === this.#top) {
      this.#top = free[at].start;
      free.splice(at, 1);
    }
  }
}
