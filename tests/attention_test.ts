import assert from "node:assert/strict";
import { attendTo } from "../mod.ts";

Deno.test("the essay's example: the sweetness of the nouns", () => {
  const words = ["APPLES", "ORANGES", "AND", "FIGS", "ARE"];
  const isNoun: Record<string, number> = { APPLES: 1, ORANGES: 1, AND: 0, FIGS: 1, ARE: 0 };
  const sweetness: Record<string, number> = { APPLES: 0.6, ORANGES: 0.4, AND: 0, FIGS: 0.9, ARE: 0 };
  const totals = { total: 0, maxLogScore: 0 };
  const [answer] = attendTo(words, (w) => Math.log(isNoun[w]), (w) => [sweetness[w]], { totals });
  // Before normalizing: 0.6 + 0.4 + 0.9 = 1.9, over a total score of 3.
  assert.ok(Math.abs(answer * totals.total * Math.exp(totals.maxLogScore) - 1.9) < 1e-6);
  assert.equal(totals.total, 3);
  assert.ok(Math.abs(answer - 1.9 / 3) < 1e-6, `got ${answer}`);
});

Deno.test("attendTo is softmax-weighted averaging, even for scores that overflow exp", () => {
  const logScores = [1000, 999, 998, -5];
  const values = [[1, 0], [0, 1], [1, 1], [5, 5]];
  const weights = new Float32Array(4);
  const out = attendTo([0, 1, 2, 3], (i) => logScores[i], (i) => values[i], { weights });
  const e = logScores.map((s) => Math.exp(s - 1000));
  const sum = e.reduce((a, b) => a + b);
  const expected = [0, 1].map((j) => e.reduce((acc, w, i) => acc + w * values[i][j], 0) / sum);
  assert.ok(Math.abs(out[0] - expected[0]) < 1e-6 && Math.abs(out[1] - expected[1]) < 1e-6, `${out}`);
  assert.ok(Math.abs(weights.reduce((a, b) => a + b) - 1) < 1e-6);
  assert.ok(Math.abs(weights[0] - e[0] / sum) < 1e-6);
});

Deno.test("attendTo with only zero scores returns zeros, and writes into `out`", () => {
  const out = new Float32Array([9, 9]);
  attendTo([0, 1], () => -Infinity, () => [1, 2], { out });
  assert.deepEqual([...out], [0, 0]);
});
