/**
 * A worker of `readFileBytes` (`file_bytes.ts`): reads one range of a file
 * into shared memory, then reports `{ error }`: null when done, else a
 * one-line reason (without the path, which the caller adds).
 *
 * @module
 */

import { readFully, SHRANK } from "./file_bytes.ts";

/** What `readFileBytes` sends: fill `into` (a view on shared memory) from byte `position` of `path`. */
export interface ReadRange {
  path: string;
  position: number;
  into: Uint8Array;
}

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<ReadRange>) => void) | null;
  postMessage(message: { error: string | null }): void;
};

scope.onmessage = async ({ data: { path, position, into } }) => {
  try {
    using file = await Deno.open(path, { read: true });
    await file.seek(position, Deno.SeekMode.Start);
    scope.postMessage({ error: await readFully(file, into) ? null : SHRANK });
  } catch (error) {
    scope.postMessage({ error: `cannot read: ${error instanceof Error ? error.message : error}` });
  }
};
