// Untrusted files: every kind of shared model and tokenizer file, truncated at many
// offsets and corrupted with seeded random byte flips and huge numbers, either loads
// or fails with a TensorlessError: never another error, never a hang, never a huge
// allocation. The loads run in a worker (this same file), watched by a timer, so a
// hang fails the test and names the mutation instead of stalling the suite.
import assert from "node:assert/strict";
import { loadModel, loadTokenizer, TensorlessError } from "../mod.ts";
import { seededRandom } from "./fixtures.ts";
import { haveShared, sharedPath } from "./shared_data.ts";

/** One file to corrupt, the files it needs beside it, and how the public API loads it. */
interface Target {
  name: string;
  /** Files copied from ../shared into the work folder: [shared path, name in the folder]. */
  files: [string, string][];
  /** The file (a name in the folder) that gets corrupted. */
  mutate: string;
  /** Bytes at the start of that file holding its structure (headers, metadata): most corruption goes there. */
  head: number;
  /** Another structural region, found in the original bytes (e.g. GGUF tensor infos after a long vocabulary). */
  hot?: (bytes: Uint8Array) => [number, number];
  /** How many mutants of each kind. */
  truncations: number;
  flips: number;
  loads: (dir: string) => Promise<{ close?: () => void }>;
}

const STORIES = "models/stories260K/";
const TOK512: [string, string] = [STORIES + "tok512.bin", "tok512.bin"];
const BF16 = "models/stories260K-hf-bf16/";
const BF16_FILES: [string, string][] = [
  "config.json",
  "model.safetensors.index.json",
  "model-00001-of-00002.safetensors",
  "model-00002-of-00002.safetensors",
].map((name) => [BF16 + name, `hf/${name}`]);

const TARGETS: Target[] = [
  {
    name: "llama2.c v0 checkpoint",
    files: [[STORIES + "stories260K.bin", "v0.bin"], TOK512],
    mutate: "v0.bin",
    head: 28,
    truncations: 24,
    flips: 30,
    loads: (dir) => loadModel(`${dir}/v0.bin`, { tokenizer: `${dir}/tok512.bin` }),
  },
  {
    name: "llama2.c v1 checkpoint",
    files: [[STORIES + "stories260K-v1.bin", "v1.bin"], TOK512],
    mutate: "v1.bin",
    head: 40,
    truncations: 24,
    flips: 30,
    loads: (dir) => loadModel(`${dir}/v1.bin`, { tokenizer: `${dir}/tok512.bin` }),
  },
  {
    name: "llama2.c tokenizer.bin",
    files: [TOK512],
    mutate: "tok512.bin",
    head: 6227,
    truncations: 30,
    flips: 60,
    loads: (dir) => loadTokenizer(`${dir}/tok512.bin`).then(() => ({})),
  },
  {
    name: "SentencePiece tokenizer.model",
    files: [["tokenizers/llama2/tokenizer.model", "tokenizer.model"]],
    mutate: "tokenizer.model",
    head: 2048,
    truncations: 16,
    flips: 26,
    loads: (dir) => loadTokenizer(`${dir}/tokenizer.model`).then(() => ({})),
  },
  {
    name: "GGUF (F32, vocabulary inside)",
    files: [[STORIES + "stories260K.gguf", "stories.gguf"]],
    mutate: "stories.gguf",
    head: 24_000,
    truncations: 30,
    flips: 60,
    loads: (dir) => loadModel(`${dir}/stories.gguf`),
  },
  {
    name: "GGUF (Q4_K_M)",
    files: [["models/random-q/random-q-Q4_K_M.gguf", "q4km.gguf"]],
    mutate: "q4km.gguf",
    head: 4096,
    // The tensor infos follow 700 KB of vocabulary: corrupt them too.
    hot: (bytes) => {
      const at = indexOf(bytes, new TextEncoder().encode("token_embd.weight"));
      return [Math.max(0, at - 8), at + 2048];
    },
    truncations: 8,
    flips: 18,
    loads: (dir) => loadModel(`${dir}/q4km.gguf`),
  },
  {
    name: "safetensors shard",
    files: [...BF16_FILES, TOK512],
    mutate: "hf/model-00001-of-00002.safetensors",
    head: 2512,
    truncations: 24,
    flips: 50,
    loads: (dir) => loadModel(`${dir}/hf`, { tokenizer: `${dir}/tok512.bin` }),
  },
  {
    name: "safetensors index",
    files: [...BF16_FILES, TOK512],
    mutate: "hf/model.safetensors.index.json",
    head: 3745,
    truncations: 12,
    flips: 30,
    loads: (dir) => loadModel(`${dir}/hf`, { tokenizer: `${dir}/tok512.bin` }),
  },
  {
    name: "HF config.json",
    files: [...BF16_FILES, TOK512],
    mutate: "hf/config.json",
    head: 419,
    truncations: 12,
    flips: 30,
    loads: (dir) => loadModel(`${dir}/hf`, { tokenizer: `${dir}/tok512.bin` }),
  },
];

/** More than this many bytes retained by one load of these small files counts as a huge allocation. */
const MAX_GROWTH = 512 * 1024 * 1024;
/** A load that takes longer than this is a hang. */
const HANG_MS = 15_000;

/** A corrupted copy of `original` and a description that reproduces it. */
interface Mutant {
  bytes: Uint8Array;
  what: string;
}

/** Truncations (dense at the very start, spread over the head, a few in the body) and seeded corruptions. */
function* mutants(original: Uint8Array, target: Target, seed: number): Generator<Mutant> {
  const random = seededRandom(seed);
  const size = original.length;
  const head = Math.min(target.head, size);
  const below = (n: number) => Math.floor(random() * n);
  const [hotStart, hotEnd] = target.hot?.(original) ?? [0, head];
  // A structural offset: in the head or, half the time, the hot region.
  const structural = () => random() < 0.5 ? below(head) : hotStart + below(Math.min(hotEnd, size) - hotStart);
  const lengths = new Set<number>([0, size - 1]);
  for (let i = 0; i < Math.min(16, size); i++) lengths.add(i);
  while (lengths.size < Math.min(target.truncations, size)) {
    lengths.add(random() < 0.7 ? below(head) : below(size));
  }
  for (const length of [...lengths].sort((a, b) => a - b)) {
    yield { bytes: original.subarray(0, length), what: `truncated to ${length} bytes` };
  }
  // Huge values a hostile header would use for counts, lengths and offsets.
  const hostile = [
    [0xff, 0xff, 0xff, 0xff],
    [0xff, 0xff, 0xff, 0x7f],
    [0x00, 0x00, 0x00, 0x80],
    [0, 0, 0, 0, 0, 0, 0, 0x10],
    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    [0, 0, 0, 0],
  ];
  for (let m = 0; m < target.flips; m++) {
    const bytes = original.slice();
    const changes: string[] = [];
    if (m % 3 === 2) {
      const value = hostile[below(hostile.length)];
      const at = Math.max(0, Math.min(structural(), size - value.length));
      bytes.set(value, at);
      changes.push(`[${value}] written at ${at}`);
    } else {
      const count = 1 + below(4);
      for (let i = 0; i < count; i++) {
        const at = random() < 0.8 ? structural() : below(size);
        bytes[at] ^= 1 + below(255);
        changes.push(`byte ${at} = ${bytes[at]}`);
      }
    }
    yield { bytes, what: changes.join(", ") };
  }
}

/** Where `needle` first occurs in `bytes` (0 when absent). */
function indexOf(bytes: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return i;
  }
  return 0;
}

/** What the worker reports for each mutant. */
type Report =
  | { kind: "start"; what: string }
  | { kind: "result"; what: string; outcome: "loaded" | "rejected" | "wrong-error" | "huge"; detail: string }
  | { kind: "end"; counts: Record<string, number> };

/** Worker side: loads every mutant of every target, reporting as it goes. */
async function runWorker(dir: string): Promise<void> {
  const post = (report: Report) => (self as unknown as Worker).postMessage(report);
  const counts: Record<string, number> = {};
  for (const [t, target] of TARGETS.entries()) {
    for (const [from, to] of target.files) {
      await Deno.mkdir(`${dir}/${to}`.replace(/\/[^/]*$/, ""), { recursive: true });
      await Deno.copyFile(sharedPath(from), `${dir}/${to}`);
    }
    const path = `${dir}/${target.mutate}`;
    const original = await Deno.readFile(path);
    for (const mutant of mutants(original, target, 1000 + t)) {
      const what = `${target.name} (${target.mutate}) ${mutant.what}`;
      post({ kind: "start", what });
      await Deno.writeFile(path, mutant.bytes);
      const before = Deno.memoryUsage().external;
      let outcome: "loaded" | "rejected" | "wrong-error" | "huge" = "loaded";
      let detail = "";
      try {
        const loaded = await target.loads(dir);
        const grown = Deno.memoryUsage().external - before;
        if (grown > MAX_GROWTH) [outcome, detail] = ["huge", `${grown} bytes retained`];
        loaded.close?.();
      } catch (error) {
        const grown = Deno.memoryUsage().external - before;
        if (!(error instanceof TensorlessError)) {
          outcome = "wrong-error";
          detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        } else if (/[\n\r]/.test(error.message)) {
          [outcome, detail] = ["wrong-error", `multi-line message: ${error.message}`];
        } else if (grown > MAX_GROWTH) {
          [outcome, detail] = ["huge", `${grown} bytes allocated before: ${error.message}`];
        } else {
          [outcome, detail] = ["rejected", error.message];
        }
      }
      counts[outcome] = (counts[outcome] ?? 0) + 1;
      post({ kind: "result", what, outcome, detail });
    }
    await Deno.writeFile(path, original);
  }
  post({ kind: "end", counts });
}

const inWorker = typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined";

if (inWorker) {
  (self as unknown as Worker).onmessage = (event: MessageEvent<string>) => {
    runWorker(event.data).catch((error) => {
      (self as unknown as Worker).postMessage(
        {
          kind: "result",
          what: "worker",
          outcome: "wrong-error",
          detail: String(error),
        } satisfies Report,
      );
      (self as unknown as Worker).postMessage({ kind: "end", counts: {} } satisfies Report);
    });
  };
} else if (!haveShared) {
  Deno.test({ name: "untrusted files (skipped: ../shared is absent)", ignore: true, fn: () => {} });
} else {
  Deno.test("untrusted files: truncated or corrupted, every load succeeds or throws a one-line TensorlessError", async () => {
    const dir = await Deno.makeTempDir({ prefix: "tensorless-fuzz-" });
    const worker = new Worker(import.meta.url, { type: "module" });
    const failures: string[] = [];
    let current = "starting the worker";
    let counts: Record<string, number> = {};
    try {
      await new Promise<void>((resolve) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const watch = () => {
          clearTimeout(timer);
          timer = setTimeout(() => {
            failures.push(`hang (no answer in ${HANG_MS / 1000} s): ${current}`);
            resolve();
          }, HANG_MS);
        };
        watch();
        worker.onmessage = (event: MessageEvent<Report>) => {
          const report = event.data;
          watch();
          if (report.kind === "start") current = report.what;
          else if (report.kind === "result") {
            if (report.outcome === "wrong-error" || report.outcome === "huge") {
              failures.push(`${report.outcome}: ${report.what}: ${report.detail}`);
            }
          } else {
            counts = report.counts;
            clearTimeout(timer);
            resolve();
          }
        };
        worker.onerror = (event) => {
          event.preventDefault();
          failures.push(`worker crashed during ${current}: ${event.message}`);
          clearTimeout(timer);
          resolve();
        };
        worker.postMessage(dir);
      });
    } finally {
      worker.terminate();
      await Deno.remove(dir, { recursive: true });
    }
    assert.deepEqual(failures, [], `${failures.length} bad outcomes:\n${failures.join("\n")}`);
    // Sanity: the mutations did both things (some still load, most are rejected).
    assert.ok((counts.rejected ?? 0) > 100, JSON.stringify(counts));
    assert.ok((counts.loaded ?? 0) > 0, JSON.stringify(counts));
  });
}
