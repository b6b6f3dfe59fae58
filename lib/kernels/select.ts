/**
 * Choosing kernels by name: `"plain"` (the reference loops), `"wasm"`
 * (WebAssembly SIMD, one thread) or `"fast"` (WebAssembly SIMD on a worker
 * pool, the default).
 *
 * @module
 */

import type { Kernels } from "./kernels.ts";
import { PlainKernels } from "./plain.ts";
import { WasmKernels } from "./wasm_kernels.ts";

/** Names accepted by {@link createKernels}. */
export type KernelKind = "plain" | "wasm" | "fast";

/** Every {@link KernelKind}, for flag validation. */
export const KERNEL_KINDS: readonly KernelKind[] = ["plain", "wasm", "fast"];

/**
 * Creates kernels of the given kind. `threads` (default
 * `navigator.hardwareConcurrency`) only matters for `"fast"`: the calling
 * thread plus `threads - 1` workers share each product. `weightBytes`, the
 * size of the model they will run, lets the WebAssembly kernels make room for
 * one larger than 4 GiB. Call `close()` when done so the workers end.
 */
export async function createKernels(kind: KernelKind = "fast", threads?: number, weightBytes = 0): Promise<Kernels> {
  switch (kind) {
    case "plain":
      return new PlainKernels();
    case "wasm":
      return await WasmKernels.create({ threads: 1, weightBytes });
    case "fast":
      return await WasmKernels.create({
        threads: threads ?? navigator.hardwareConcurrency ?? 1,
        name: "fast",
        weightBytes,
      });
  }
}
