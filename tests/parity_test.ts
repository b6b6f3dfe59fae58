// Every recorded llama2.c generation is reproduced token for token through the
// public API: encode with BOS, feed the prompt, sample, feed each sampled token.
import assert from "node:assert/strict";
import { loadModel, Sampler } from "../mod.ts";
import { haveShared, parityCases, sharedPath, sharedTest } from "./shared_data.ts";

/** llama2.c's generation loop over the public API; returns BOS, the prompt and every sampled id. */
export async function runParityCase(c: ReturnType<typeof parityCases>[number]): Promise<number[]> {
  const model = await loadModel(sharedPath(c.model), { tokenizer: sharedPath(c.tokenizer) });
  const sampler = new Sampler({ temperature: c.temperature, topP: c.topp ?? 0.9, seed: c.seed ?? 1 });
  const session = model.newSession();
  const ids = model.tokenizer.encode(c.prompt, { bos: true });
  let logits = session.feed(ids);
  for (;;) {
    const next = sampler.sample(logits);
    ids.push(next);
    if (next === 1 || session.position >= c.steps) return ids;
    logits = session.feed([next]);
  }
}

for (const c of parityCases("cases.json")) {
  sharedTest(`parity with llama2.c: ${c.name}`, async () => {
    assert.deepEqual(await runParityCase(c), c.expected_ids);
  });
}
// Without ../shared there are no cases: say so once.
if (!haveShared) sharedTest("parity with llama2.c", () => {});
