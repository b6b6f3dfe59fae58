// Every recorded llama2.c generation is reproduced token for token through the
// public API: encode with BOS, feed the prompt, sample, feed each sampled token.
import assert from "node:assert/strict";
import { haveShared, parityCases, runParityCase, sharedTest } from "./shared_data.ts";

for (const c of parityCases("cases.json")) {
  sharedTest(`parity with llama2.c: ${c.name}`, async () => {
    assert.deepEqual(await runParityCase(c), c.expected_ids);
  });
}
// Without ../shared there are no cases: say so once.
if (!haveShared) sharedTest("parity with llama2.c", () => {});
