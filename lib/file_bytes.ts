/**
 * Reading whole files into memory. Model weights are views on these bytes,
 * never copies.
 *
 * @module
 */

import type { Placement } from "./byte_reader.ts";
import { FileFormatError } from "./errors.ts";
import type { ReadRanges } from "./file_read_worker.ts";

/**
 * Bytes per read call. One read of a whole 3.6 GB file took twice as long (5.3 s against 2.5-2.8 s here) as reads of
 * 64 MiB into the same memory.
 */
const READ_CHUNK = 64 << 20;

/**
 * Files from this size up are read by several threads at once, when asked to and the memory is shared. Most of a read
 * into fresh memory is the kernel's first touch of each page (3.6 GB: 3.2 s to touch, then 0.7 s to read), and
 * threads take those faults side by side (two: 1.7 s for the whole file). A worker takes about 25-50 ms to start.
 */
export const PARALLEL_READ_BYTES = 256 << 20;

/** Where a file is read to, and by how many threads. */
export interface ReadOptions {
  /**
   * Supplies the memory instead of a new ArrayBuffer (e.g. `Kernels.allocateBytes`, so WebAssembly kernels read the
   * weights in place); it must return `byteLength` bytes on an 8-byte boundary.
   */
  allocate?: (byteLength: number) => Uint8Array;
  /** Threads that read a large file into shared memory at once (this one and workers); default 1. */
  readers?: number;
}

/** {@link readFileBytes}'s options. */
export interface FileReadOptions extends ReadOptions {
  /**
   * A byte offset inside the file that should land on an 8-byte boundary in memory (for formats whose tensor data
   * starts at an odd place, such as safetensors), so typed-array views on the tensors need no copy. Default 0.
   */
  alignOffset?: number;
  /** Read only the file's first `headBytes` (all of it when shorter). */
  headBytes?: number;
}

/**
 * Reads a file, or its start, into an ArrayBuffer (plain JavaScript reads an unshared buffer faster than a
 * SharedArrayBuffer) or the memory `allocate` gives.
 */
export async function readFileBytes(path: string, options: FileReadOptions = {}): Promise<Uint8Array> {
  const { alignOffset = 0, allocate, readers = 1, headBytes = Infinity } = options;
  return await withFile(path, async (file) => {
    const info = await file.stat();
    if (info.isDirectory) throw new FileFormatError(path, "is a directory, not a file");
    const size = Math.min(info.size, headBytes);
    const pad = (8 - (alignOffset % 8)) % 8;
    let bytes: Uint8Array;
    try {
      bytes = allocate
        ? allocate(size + pad).subarray(pad, pad + size)
        : new Uint8Array(new ArrayBuffer(size + pad), pad, size);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      throw new FileFormatError(path, `its ${size} bytes do not fit in memory (${error.message})`);
    }
    const parallel = readers > 1 && size >= PARALLEL_READ_BYTES && bytes.buffer instanceof SharedArrayBuffer;
    if (parallel) await readInParallel(path, file, bytes, Math.floor(readers));
    else if (!await readFully(file, bytes)) throw new FileFormatError(path, SHRANK);
    return bytes;
  });
}

/** Runs `read` on the file at `path`, open for reading; any failure is one line naming the file. */
async function withFile<T>(path: string, read: (file: Deno.FsFile) => Promise<T>): Promise<T> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    throw new FileFormatError(path, describeOpenError(error));
  }
  try {
    return await read(file);
  } catch (error) {
    if (error instanceof FileFormatError) throw error;
    throw new FileFormatError(path, `cannot read: ${error instanceof Error ? error.message : error}`);
  } finally {
    file.close();
  }
}

/** What a read says when the file ends before its size (as stat gave it). */
export const SHRANK = "file shrank while it was being read";

/** Fills `into` from `file`'s current position; false if the file ends first. */
export async function readFully(file: Deno.FsFile, into: Uint8Array): Promise<boolean> {
  for (let done = 0; done < into.length;) {
    const n = await file.read(into.subarray(done, Math.min(into.length, done + READ_CHUNK)));
    // null at the end of the file; 0 for a non-empty view would loop forever.
    if (n === null || n === 0) return false;
    done += n;
  }
  return true;
}

/** Fills each range from its position in `file`, in turn; false if the file ends first. */
export async function readRangesOf(file: Deno.FsFile, ranges: FileRange[]): Promise<boolean> {
  for (const { position, into } of ranges) {
    await file.seek(position, Deno.SeekMode.Start);
    if (!await readFully(file, into)) return false;
  }
  return true;
}

/**
 * `bytes` (shared memory, the whole file) read in `readers` ranges at once: the first by this thread through `file`,
 * each other by a worker of its own (`file_read_worker.ts`) that opens the file itself.
 */
async function readInParallel(path: string, file: Deno.FsFile, bytes: Uint8Array, readers: number): Promise<void> {
  // Ranges of whole pages, the last one taking the rest.
  const share = Math.ceil(bytes.length / readers / 4096) * 4096;
  const shares = Array.from({ length: readers }, (_, i) => [i * share, Math.min(bytes.length, (i + 1) * share)])
    .filter(([start, end]) => start < end)
    .map(([start, end]) => [{ position: start, into: bytes.subarray(start, end) }]);
  await readShares(path, file, shares);
}

/** Bytes of a file to read into memory: `into.length` of them from `position`. */
export interface FileRange {
  position: number;
  into: Uint8Array;
}

/**
 * Reading a file tensor by tensor: `place` (for a parser, see `ByteReader`) gives each tensor `allocate`'s memory and
 * notes where in the file its bytes are; `read` then fills them all, shared among `readers` threads.
 */
export function tensorReads(
  path: string,
  allocate: (byteLength: number) => Uint8Array,
  readers = 1,
): { place: Placement; read(): Promise<void> } {
  const ranges: FileRange[] = [];
  return {
    place: (position, length) => {
      const into = allocate(length);
      ranges.push({ position, into });
      return into;
    },
    read: () => readRanges(path, ranges, readers),
  };
}

/**
 * Fills every range from its place in the file: a model's tensors, read one by one into memory of their own (views
 * on shared memory, when `readers` above 1 share the reading: runs of consecutive ranges of about equal bytes).
 */
export async function readRanges(path: string, ranges: FileRange[], readers = 1): Promise<void> {
  const sorted = [...ranges].sort((a, b) => a.position - b.position);
  const total = sorted.reduce((sum, range) => sum + range.into.length, 0);
  if (total === 0) return;
  const shared = sorted.every((range) => range.into.buffer instanceof SharedArrayBuffer);
  const count = shared && total >= PARALLEL_READ_BYTES ? Math.max(1, Math.floor(readers)) : 1;
  const shares: FileRange[][] = Array.from({ length: count }, () => []);
  let done = 0;
  for (const range of sorted) {
    shares[Math.min(count - 1, Math.floor((done * count) / total))].push(range);
    done += range.into.length;
  }
  await withFile(path, (file) => readShares(path, file, shares.filter((share) => share.length > 0)));
}

/** Reads the first share through `file` on this thread and each other in a worker of its own, all at once. */
async function readShares(path: string, file: Deno.FsFile, shares: FileRange[][]): Promise<void> {
  const workers: Worker[] = [];
  try {
    const others = shares.slice(1).map((ranges) => {
      const worker = new Worker(new URL("./file_read_worker.ts", import.meta.url), { type: "module" });
      workers.push(worker);
      return new Promise<void>((resolve, reject) => {
        worker.onmessage = ({ data }: MessageEvent<{ error: string | null }>) =>
          data.error === null ? resolve() : reject(new FileFormatError(path, data.error));
        worker.onerror = (event) => {
          event.preventDefault();
          reject(new FileFormatError(path, `cannot read: ${event.message}`));
        };
        worker.postMessage({ path, ranges } satisfies ReadRanges);
      });
    });
    // Settle them all before leaving, so no worker still writes into the memory once this returns or throws.
    const own = readRangesOf(file, shares[0] ?? []).then((whole) => {
      if (!whole) throw new FileFormatError(path, SHRANK);
    });
    const results = await Promise.allSettled([own, ...others]);
    const failed = results.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
  } finally {
    for (const worker of workers) worker.terminate();
  }
}

/** One-line reason a file could not be opened. */
export function describeOpenError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory, not a file";
  return `cannot open: ${error instanceof Error ? error.message : String(error)}`;
}
