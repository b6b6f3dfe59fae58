/**
 * A worker of `readFileBytes` and `readRanges` (`file_bytes.ts`): reads ranges of a file into shared memory, then
 * reports `{ error }`: null when done, else a one-line reason (without the path, which the caller adds).
 *
 * @module
 */

import { type FileRange, readRangesOf, SHRANK } from "./file_bytes.ts";

/** What a worker is sent: fill each range's `into` (a view on shared memory) from its `position` in `path`. */
export interface ReadRanges {
  path: string;
  ranges: FileRange[];
}

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<ReadRanges>) => void) | null;
  postMessage(message: { error: string | null }): void;
};

scope.onmessage = async ({ data: { path, ranges } }) => {
  try {
    using file = await Deno.open(path, { read: true });
    scope.postMessage({ error: await readRangesOf(file, ranges) ? null : SHRANK });
  } catch (error) {
    scope.postMessage({ error: `cannot read: ${error instanceof Error ? error.message : error}` });
  }
};
