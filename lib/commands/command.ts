/**
 * What each `tensorless` subcommand provides, and the flag parsing they share.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { TensorlessError } from "../errors.ts";
import { KERNEL_KINDS, type KernelKind } from "../kernels/select.ts";
import { CACHE_ENCODINGS, type CacheEncoding } from "../transformer.ts";

/** A subcommand of the `tensorless` CLI (`generate`, `chat`, `info`, ...). */
export interface Command {
  name: string;
  /** One line for the command list in `tensorless --help`. */
  summary: string;
  /** Full `--help` text. */
  help: string;
  /** Runs the command; resolves to the exit status. */
  run(args: string[]): Promise<number>;
}

/** Bad command-line usage: printed as one line with a `--help` hint, exit status 2. */
export class UsageError extends TensorlessError {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses `args` with node:util parseArgs (strict: unknown flags are usage
 * errors). `--help`/`-h` is always accepted.
 */
export function parseFlags<T extends Options>(
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message.split("\n")[0] : String(error));
  }
}

/** Parses a numeric flag value, with bounds; usage error otherwise. */
export function numberFlag(
  name: string,
  value: string | undefined,
  fallback: number,
  { min = -Infinity, max = Infinity, integer = false } = {},
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const range = `${integer ? "an integer" : "a number"}${min > -Infinity ? ` >= ${min}` : ""}${
      max < Infinity ? ` and <= ${max}` : ""
    }`;
    throw new UsageError(`--${name} must be ${range}, got "${value}"`);
  }
  return n;
}

/** Whether stderr/stdout colouring is allowed (NO_COLOR unset and a terminal). */
export function useColor(stream: { isTerminal(): boolean } = Deno.stderr): boolean {
  return !Deno.env.get("NO_COLOR") && stream.isTerminal();
}

/** The `--kernels`, `--threads` and `--cache` flags, shared by the commands that run a model. */
export const KERNEL_FLAGS = {
  kernels: { type: "string" },
  threads: { type: "string" },
  cache: { type: "string" },
} as const;

/** Help lines for {@link KERNEL_FLAGS}. */
export const KERNEL_FLAGS_HELP = `      --kernels K        plain (reference loops), wasm (SIMD, one thread) or
                         fast (SIMD on a worker pool; the default)
      --threads N        threads for fast kernels (default: all cores)
      --cache E          how the key/value cache holds its values: f32, or bf16 (half
                         the memory; the default for quantized weights)`;

/** Validated values of {@link KERNEL_FLAGS}. */
export function kernelOptions(values: { kernels?: string; threads?: string; cache?: string }): {
  kernels: KernelKind;
  threads?: number;
  cache?: CacheEncoding;
} {
  const kernels = values.kernels ?? "fast";
  if (!(KERNEL_KINDS as readonly string[]).includes(kernels)) {
    throw new UsageError(`--kernels must be one of ${KERNEL_KINDS.join(", ")}, got "${kernels}"`);
  }
  const threads = values.threads === undefined
    ? undefined
    : numberFlag("threads", values.threads, 1, { min: 1, max: 256, integer: true });
  const cache = values.cache as CacheEncoding | undefined;
  if (cache !== undefined && !CACHE_ENCODINGS.includes(cache)) {
    throw new UsageError(`--cache must be one of ${CACHE_ENCODINGS.join(", ")}, got "${cache}"`);
  }
  return { kernels: kernels as KernelKind, threads, cache };
}
