/**
 * Reading whole files into memory. Model weights are views on these bytes,
 * never copies.
 *
 * @module
 */

import { FileFormatError } from "./errors.ts";

/**
 * Bytes per read call. One read of a whole 3.6 GB file took twice as long (5.3 s against 2.5-2.8 s here) as reads of
 * 64 MiB into the same memory.
 */
const READ_CHUNK = 64 << 20;

/**
 * Reads a file into an ArrayBuffer (plain JavaScript reads an unshared buffer
 * faster than a SharedArrayBuffer). `alignOffset` is a byte offset inside
 * the file that should land on an 8-byte boundary in memory (for formats whose
 * tensor data starts at an odd place, such as safetensors), so typed-array
 * views on the tensors need no copy. `allocate`, when given, supplies the
 * memory instead (e.g. `Kernels.allocateBytes`, so WebAssembly kernels read
 * the weights in place); it must return `byteLength` bytes on an 8-byte boundary.
 */
export async function readFileBytes(
  path: string,
  alignOffset = 0,
  allocate?: (byteLength: number) => Uint8Array,
): Promise<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    throw new FileFormatError(path, describeOpenError(error));
  }
  try {
    const info = await file.stat();
    if (info.isDirectory) throw new FileFormatError(path, "is a directory, not a file");
    const size = info.size;
    const pad = (8 - (alignOffset % 8)) % 8;
    const bytes = allocate
      ? allocate(size + pad).subarray(pad, pad + size)
      : new Uint8Array(new ArrayBuffer(size + pad), pad, size);
    let done = 0;
    while (done < size) {
      const n = await file.read(bytes.subarray(done, Math.min(size, done + READ_CHUNK)));
      // null at the end of the file; 0 for a non-empty view would loop forever.
      if (n === null || n === 0) throw new FileFormatError(path, "file shrank while it was being read");
      done += n;
    }
    return bytes;
  } catch (error) {
    if (error instanceof FileFormatError) throw error;
    throw new FileFormatError(path, `cannot read: ${error instanceof Error ? error.message : error}`);
  } finally {
    file.close();
  }
}

/** Reads the first `count` bytes of a file (fewer if it is shorter). */
export async function readFileHead(path: string, count: number): Promise<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    throw new FileFormatError(path, describeOpenError(error));
  }
  try {
    const head = new Uint8Array(count);
    let done = 0;
    while (done < count) {
      const n = await file.read(head.subarray(done));
      if (n === null) break;
      done += n;
    }
    return head.subarray(0, done);
  } catch (error) {
    throw new FileFormatError(path, `cannot read: ${error instanceof Error ? error.message : error}`);
  } finally {
    file.close();
  }
}

/** One-line reason a file could not be opened. */
export function describeOpenError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory, not a file";
  return `cannot open: ${error instanceof Error ? error.message : String(error)}`;
}
