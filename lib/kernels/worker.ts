/**
 * A worker of the kernel pool: instantiates the kernel module on the shared
 * memory, then loops: wait for a new batch of jobs, join it (or skip it, when the main thread has already closed it),
 * take tasks (runs of rows) until none is left, report done. It blocks in Atomics.wait between batches and never
 * returns to its event loop until told to quit.
 *
 * @module
 */

import { joinBatch, participantOf, runShare, SLOT, waitWhileEquals } from "./job_runner.ts";

/** What the pool sends a new worker. */
export interface WorkerSetup {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** The key/value cache's memory, when the module imports one. */
  cache?: WebAssembly.Memory;
  /** Further memories of weights, beyond the main one's 4 GiB. */
  further: WebAssembly.Memory[];
  control: Int32Array;
  /** This worker's participant index, from 1 (the calling thread is 0). */
  index: number;
}

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<WorkerSetup>) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
};

scope.onmessage = (event) => {
  scope.onmessage = null;
  const { module, memory, cache, further, control, index } = event.data;
  const instanceOn = (memory: WebAssembly.Memory) =>
    new WebAssembly.Instance(module, { env: cache ? { memory, cache } : { memory } });
  const participant = participantOf(index, instanceOn(memory), further.map(instanceOn));
  let seen = Atomics.load(control, SLOT.GENERATION);
  scope.postMessage("ready");
  while (true) {
    waitWhileEquals(control, SLOT.GENERATION, seen);
    seen = Atomics.load(control, SLOT.GENERATION);
    if (Atomics.load(control, SLOT.QUIT) === 1) break;
    // Too late for this batch (the main thread ran all of it): wait for the next.
    if (!joinBatch(control, seen)) continue;
    try {
      runShare(control, participant);
    } catch (error) {
      // Keep serving: the main thread reports the failure and the pool stays usable.
      console.error(error);
      Atomics.store(control, SLOT.FAILED, 1);
    } finally {
      Atomics.add(control, SLOT.DONE, 1);
      Atomics.notify(control, SLOT.DONE);
    }
  }
  scope.close();
};
