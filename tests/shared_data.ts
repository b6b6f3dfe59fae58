import { loadModel, type LoadModelOptions, Sampler } from "../mod.ts";

/**
 * Where the read-only reference data (`../shared`, beside the checkout) is,
 * and whether it is there. Tests that need it are skipped, with the reason in
 * their name, when it is absent.
 */

/** `../shared/` as a file URL. */
export const SHARED = new URL("../../shared/", import.meta.url);

/** Whether `../shared` exists. */
export const haveShared: boolean = (() => {
  try {
    return Deno.statSync(SHARED).isDirectory;
  } catch {
    return false;
  }
})();

/** The path of `relative` inside `../shared`. */
export function sharedPath(relative: string): string {
  return new URL(relative, SHARED).pathname;
}

/** `Deno.test` for a test that reads `../shared`: skipped with a one-line reason when it is absent. */
export function sharedTest(name: string, fn: () => void | Promise<void>): void {
  if (haveShared) Deno.test(name, fn);
  else Deno.test({ name: `${name} (skipped: ../shared is absent)`, ignore: true, fn });
}

/** A recorded llama2.c generation (see ../shared/README.md, "parity"). */
export interface ParityCase {
  name: string;
  model: string;
  tokenizer: string;
  prompt: string;
  steps: number;
  temperature: number;
  topp?: number;
  seed?: number;
  expected_ids: number[];
  expected: string;
}

/** The cases of `parity/<file>`, or none when ../shared is absent. */
export function parityCases(file: string): ParityCase[] {
  if (!haveShared) return [];
  return JSON.parse(Deno.readTextFileSync(sharedPath(`parity/${file}`)));
}

/** llama2.c's generation loop over the public API; returns BOS, the prompt and every sampled id. */
export async function runParityCase(c: ParityCase, options: LoadModelOptions = {}): Promise<number[]> {
  const model = await loadModel(sharedPath(c.model), { ...options, tokenizer: sharedPath(c.tokenizer) });
  const sampler = new Sampler({ temperature: c.temperature, topP: c.topp ?? 0.9, seed: c.seed ?? 1 });
  const session = model.newSession();
  const ids = model.tokenizer.encode(c.prompt, { bos: true });
  let logits = session.feed(ids);
  for (;;) {
    const next = sampler.sample(logits);
    ids.push(next);
    if (next === 1 || session.position >= c.steps) break;
    logits = session.feed([next]);
  }
  model.close();
  return ids;
}
