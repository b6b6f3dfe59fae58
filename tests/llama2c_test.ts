// llama2.c checkpoints written by the project's fixture writer: both formats,
// GQA, separate classifier, batched prefill, and clean errors on damaged files.
import assert from "node:assert/strict";
import { FileFormatError, generate, type Kernels, loadModel } from "../mod.ts";
import { createKernels } from "../lib/kernels/select.ts";
import { bf16Table, floatToBf16 } from "../lib/quant.ts";
import { randomLlama2c, seededRandom, TINY_CONFIG, writeTinyModel } from "./fixtures.ts";

async function logitsAfter(model: string, tokenizer: string, ids: number[]): Promise<Float32Array> {
  const m = await loadModel(model, { tokenizer });
  return m.newSession().feed(ids).slice();
}

Deno.test("version 0 and version 1 files of the same weights give the same logits", async () => {
  for (const sharedClassifier of [true, false]) {
    const v0 = await writeTinyModel({ version: 0, sharedClassifier });
    const v1 = await writeTinyModel({ version: 1, sharedClassifier });
    const ids = [1, 270, 280, 290, 5];
    const a = await logitsAfter(v0.model, v0.tokenizer, ids);
    const b = await logitsAfter(v1.model, v1.tokenizer, ids);
    assert.deepEqual(a, b);
    const model = await loadModel(v1.model, { tokenizer: v1.tokenizer });
    assert.deepEqual(model.config, TINY_CONFIG);
    assert.equal(model.file.format, "llama2c-v1");
    assert.equal(model.file.weights.classifier === model.file.weights.tokenEmbedding, sharedClassifier);
    await Deno.remove(v0.dir, { recursive: true });
    await Deno.remove(v1.dir, { recursive: true });
  }
});

Deno.test("a separate classifier is used when present", async () => {
  const shared = await writeTinyModel({ sharedClassifier: true });
  const separate = await writeTinyModel({ sharedClassifier: false });
  // Same seed: the same embeddings and layers; only the classifier differs.
  const a = await logitsAfter(shared.model, shared.tokenizer, [1, 2, 3]);
  const b = await logitsAfter(separate.model, separate.tokenizer, [1, 2, 3]);
  await Deno.remove(shared.dir, { recursive: true });
  await Deno.remove(separate.dir, { recursive: true });
  assert.notDeepEqual(a, b);
});

Deno.test("feeding a prompt as one batch equals feeding it token by token", async () => {
  const { dir, model, tokenizer } = await writeTinyModel({ sharedClassifier: false });
  const m = await loadModel(model, { tokenizer });
  const ids = Array.from({ length: 20 }, (_, i) => (i * 37) % TINY_CONFIG.vocabSize);
  const batched = m.newSession().feed(ids).slice();
  const session = m.newSession();
  let logits: Float32Array = new Float32Array();
  for (const id of ids) logits = session.feed([id]);
  assert.equal(session.position, ids.length);
  assert.deepEqual(logits, batched);
  await Deno.remove(dir, { recursive: true });
});

for (const kernels of ["plain", "fast"] as const) {
  for (const cache of ["f32", "bf16"] as const) {
    const title =
      `${kernels} kernels, ${cache} cache: a cache grown past 64 and 128 positions, exported and imported, ` +
      "continues exactly";
    Deno.test(title, async () => {
      // A longer context than the tiny default, so the cache doubles twice on the way.
      const config = { ...TINY_CONFIG, seqLen: 200 };
      const { dir, model, tokenizer } = await writeTinyModel({ config });
      const m = await loadModel(model, { tokenizer, kernels, threads: 2, cache });
      try {
        assert.equal(m.cacheEncoding, cache);
        const ids = Array.from({ length: 150 }, (_, i) => (i * 53 + 7) % config.vocabSize);
        // Fed as a batch of 3, then one by one through both growths, then a batch of 10; and all as one prompt. The
        // plain loops sum in the same order either way; the SIMD products of one input and of a batch do not (1e-5).
        const grown = m.newSession();
        grown.feed(ids.slice(0, 3));
        for (const id of ids.slice(3, 140)) grown.feed([id]);
        const expected = grown.feed(ids.slice(140)).slice();
        assertClose(m.newSession().feed(ids), expected, kernels === "plain" ? 0 : 1e-5);

        // Exported position by position at 140, imported into a new session: the same copy, the same next logits.
        const partial = m.newSession();
        partial.feed(ids.slice(0, 140));
        const saved = partial.exportCache();
        assert.equal(saved.keys[0].length, 140 * (config.dim / config.nHeads) * config.nKvHeads);
        const restored = m.newSession();
        restored.importCache(saved);
        assert.deepEqual(restored.exportCache(), saved);
        assert.deepEqual(restored.feed(ids.slice(140)), partial.feed(ids.slice(140)));
      } finally {
        m.close();
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}

Deno.test("a bfloat16 cache holds the float32 cache's keys and values rounded to nearest even", async () => {
  const { dir, model, tokenizer } = await writeTinyModel();
  try {
    const ids = [1, 270, 280, 290, 5, 7];
    const [floats, rounded] = await Promise.all((["f32", "bf16"] as const).map(async (cache) => {
      const session = (await loadModel(model, { tokenizer, cache })).newSession();
      session.feed(ids);
      return session.exportCache();
    }));
    // Layer 0's keys and values come before any attention reads the cache, so they are the same floats, rounded.
    const round = (values: Float32Array) => values.map((value) => bf16Table()[floatToBf16(value)]);
    assert.deepEqual(rounded.keys[0], round(floats.keys[0]));
    assert.deepEqual(rounded.values[0], round(floats.values[0]));
    assert.notDeepEqual(rounded.keys[0], floats.keys[0]);
    // Anything else is refused, not quietly read as float32.
    await assert.rejects(() => loadModel(model, { tokenizer, cache: "f16" as "f32" }), /unknown cache encoding "f16"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** |actual - expected| <= tolerance · max|expected| everywhere. */
function assertClose(actual: Float32Array, expected: Float32Array, tolerance: number): void {
  const scale = Math.max(...expected.map(Math.abs));
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tolerance * scale, `[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

Deno.test("a session refuses tokens past the context length and ids outside the vocabulary", async () => {
  const { dir, model, tokenizer } = await writeTinyModel();
  const session = (await loadModel(model, { tokenizer })).newSession();
  assert.throws(() => session.feed([TINY_CONFIG.vocabSize]), RangeError);
  session.feed(new Array(TINY_CONFIG.seqLen).fill(5));
  assert.throws(() => session.feed([5]), /context full/);
  session.rewind(10);
  assert.equal(session.position, 10);
  session.feed([5]);
  await Deno.remove(dir, { recursive: true });
});

/** The fast kernels, counting the arrays handed out by their `allocate*` methods and not yet released. */
async function countingKernels(): Promise<{ kernels: Kernels; live: Set<unknown> }> {
  const fast = await createKernels("fast", 2);
  const live = new Set<unknown>();
  const kernels = new Proxy(fast, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "allocate" || property === "allocateCache" || property === "allocateBf16Cache") {
        return (length: number) => {
          const array = value.call(target, length);
          live.add(array);
          return array;
        };
      }
      if (property === "release") {
        return (array: Float32Array | Uint16Array) => {
          live.delete(array);
          value.call(target, array);
        };
      }
      return value.bind(target);
    },
  });
  return { kernels, live };
}

Deno.test("a closed session gives all its memory back to the kernels, and refuses to be used", async () => {
  const { dir, model: path, tokenizer } = await writeTinyModel();
  const { kernels, live } = await countingKernels();
  const model = await loadModel(path, { tokenizer, kernels });
  try {
    const owned = live.size;
    const session = model.newSession();
    session.feed(Array.from({ length: 40 }, (_, i) => 3 + i));
    assert.ok(live.size > owned);
    session.close();
    assert.equal(live.size, owned);
    assert.throws(() => session.feed([5]), /session is closed/);
    assert.throws(() => session.exportCache(), /session is closed/);
    session.close(); // again: nothing
    {
      using scoped = model.newSession();
      scoped.feed([1, 2, 3]);
    }
    assert.equal(live.size, owned);
    // generate closes its session, also when the caller stops early.
    for await (const _ of generate(model, { prompt: "hello", steps: 30, temperature: 0 })) break;
    for await (const _ of generate(model, { prompt: "hello", steps: 30, temperature: 0 })) continue;
    assert.equal(live.size, owned);
    // A session outliving its model closes quietly.
    const late = model.newSession();
    late.feed([1]);
    model.close();
    late.close();
  } finally {
    model.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("truncated or corrupted checkpoints give a FileFormatError naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const random = seededRandom(99);
  for (const version of [0, 1] as const) {
    const good = randomLlama2c(TINY_CONFIG, { version });
    const cuts = [0, 3, 27, 28, 100, 255, 256, 257, good.length >> 1, good.length - 4, good.length - 1];
    for (const cut of cuts) {
      const path = `${dir}/cut-${version}-${cut}.bin`;
      await Deno.writeFile(path, good.subarray(0, cut));
      await assert.rejects(() => loadModel(path, { tokenizer: "unused" }), (e: Error) => {
        assert.ok(e instanceof FileFormatError, `${cut}: ${e}`);
        assert.ok(e.message.startsWith(path), e.message);
        return true;
      });
    }
    // Flip bytes in the header: either a clean error or (rarely) a still-valid file.
    for (let i = 0; i < 40; i++) {
      const bad = good.slice();
      const at = Math.floor(random() * (version === 0 ? 28 : 40));
      bad[at] ^= 1 << Math.floor(random() * 8);
      const path = `${dir}/flip-${version}-${i}.bin`;
      await Deno.writeFile(path, bad);
      try {
        await loadModel(path, { tokenizer: "unused" });
      } catch (e) {
        assert.ok(e instanceof FileFormatError || (e as Error).message.includes("unused"), `${e}`);
      }
    }
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("version 2 (int8) and unknown versions are refused with a clear message", async () => {
  const dir = await Deno.makeTempDir();
  const file = randomLlama2c(TINY_CONFIG, { version: 1 });
  for (const [version, pattern] of [[2, /version 2 \(int8/], [9, /unknown llama2.c checkpoint version 9/]] as const) {
    new DataView(file.buffer).setInt32(4, version, true);
    await Deno.writeFile(`${dir}/v.bin`, file);
    await assert.rejects(() => loadModel(`${dir}/v.bin`, { tokenizer: "x" }), pattern);
  }
  await Deno.remove(dir, { recursive: true });
});
