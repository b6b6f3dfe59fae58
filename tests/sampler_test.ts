import assert from "node:assert/strict";
import { argmax, Sampler } from "../mod.ts";

Deno.test("temperature 0 is argmax, first index on ties", () => {
  assert.equal(new Sampler({ temperature: 0 }).sample(new Float32Array([1, 3, 3, 2])), 1);
  assert.equal(argmax([-5, -1, -3]), 1);
});

Deno.test("the same seed gives the same draws; the logits are left unchanged", () => {
  const logits = new Float32Array(Array.from({ length: 50 }, (_, i) => Math.sin(i) * 3));
  const before = logits.slice();
  const draw = (seed: number, topP: number) => {
    const sampler = new Sampler({ temperature: 1, topP, seed });
    return Array.from({ length: 30 }, () => sampler.sample(logits));
  };
  assert.deepEqual(draw(42, 0.9), draw(42, 0.9));
  assert.notDeepEqual(draw(42, 0.9), draw(43, 0.9));
  assert.deepEqual(logits, before);
  // Multinomial (topP 1) can draw tokens top-p 0.5 never does.
  const nucleus = new Set(draw(1, 0.5));
  const sorted = [...logits.keys()].sort((a, b) => logits[b] - logits[a]);
  for (const id of nucleus) assert.ok(sorted.indexOf(id) < 10, `token ${id} is outside the nucleus`);
});

Deno.test("low temperature concentrates on the best token", () => {
  const logits = new Float32Array([0, 1, 5, 2]);
  const sampler = new Sampler({ temperature: 0.05, topP: 0, seed: 9 });
  for (let i = 0; i < 20; i++) assert.equal(sampler.sample(logits), 2);
});
