// SentencePiece tokenizer.model: the protobuf reader (on small models written
// here and on hostile bytes), and the Llama 2 model against the SentencePiece
// library's own outputs and llama.cpp's test vectors.
import assert from "node:assert/strict";
import { FileFormatError } from "../lib/errors.ts";
import { parseSentencePieceModel } from "../lib/sentencepiece_model.ts";
import { loadTokenizer, Tokenizer } from "../lib/tokenizer.ts";
import { PieceType } from "../lib/vocabulary.ts";
import { haveShared, sharedPath, sharedTest } from "./shared_data.ts";

// --- a tiny protobuf writer ---------------------------------------------------

function varint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

const tag = (field: number, wireType: number) => varint(field * 8 + wireType);
const int = (field: number, value: number) => [...tag(field, 0), ...varint(value)];
const bytesField = (field: number, body: number[]) => [...tag(field, 2), ...varint(body.length), ...body];
const text = (field: number, value: string) => bytesField(field, [...new TextEncoder().encode(value)]);
function float(field: number, value: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, value, true);
  return [...tag(field, 5), ...b];
}

interface TinyPiece {
  piece: string;
  score?: number;
  type?: number;
}

/** A ModelProto with the given pieces; unknown fields of every wire type are sprinkled in to be skipped. */
function tinyModel(
  pieces: TinyPiece[],
  options: { modelType?: number; byteFallback?: boolean; removeExtra?: boolean; normalizer?: string } = {},
): Uint8Array {
  const out: number[] = [];
  for (const p of pieces) {
    const body = [...text(1, p.piece), ...float(2, p.score ?? 0)];
    if (p.type !== undefined) body.push(...int(3, p.type));
    out.push(...bytesField(1, body));
  }
  const trainer = [
    ...text(2, "prefix"), // model_prefix, unused
    ...int(3, options.modelType ?? 2),
    ...int(4, pieces.length),
    ...int(35, options.byteFallback ?? true ? 1 : 0),
    ...int(40, 0),
    ...int(41, 1),
    ...int(42, 2),
    ...int(43, -1), // pad_id -1: a ten-byte varint
    ...tag(99, 1), // an unknown fixed64 field
    ...[1, 2, 3, 4, 5, 6, 7, 8],
  ];
  out.push(...bytesField(2, trainer));
  const normalizer = [
    ...text(1, options.normalizer ?? "identity"),
    ...(options.normalizer ? bytesField(2, [1, 2, 3]) : []),
    ...int(3, 1),
    ...int(4, options.removeExtra ? 1 : 0),
    ...int(5, 1),
    ...float(77, 1.5), // an unknown fixed32 field
  ];
  out.push(...bytesField(3, normalizer));
  out.push(...bytesField(4, [...bytesField(1, [...text(1, "in"), ...text(2, "out")])])); // self_test_data
  return new Uint8Array(out);
}

function bytePieces(): TinyPiece[] {
  const out: TinyPiece[] = [];
  for (let b = 0; b < 256; b++) {
    out.push({ piece: `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, type: PieceType.BYTE });
  }
  return out;
}

const SPECIALS: TinyPiece[] = [
  { piece: "<unk>", type: PieceType.UNKNOWN },
  { piece: "<s>", type: PieceType.CONTROL },
  { piece: "</s>", type: PieceType.CONTROL },
];

// --- small models -----------------------------------------------------------------

Deno.test("tokenizer.model: pieces, scores, types and specs are read; unknown fields skipped", () => {
  const pieces = [...SPECIALS, ...bytePieces(), { piece: "▁a", score: -1 }, { piece: "b", score: -2 }];
  const v = parseSentencePieceModel(tinyModel(pieces), "tiny.model");
  assert.equal(v.pieces.length, 261);
  assert.deepEqual(v.pieces.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"]);
  assert.equal(v.pieces[259], "▁a");
  assert.equal(v.scores[260], -2);
  assert.deepEqual([...v.types.slice(0, 4)], [2, 3, 3, 6]);
  assert.equal(v.types[259], PieceType.NORMAL);
  assert.deepEqual([v.unkId, v.bosId, v.eosId], [0, 1, 2]);
  assert.equal(v.byteFallback, true);
  assert.equal(v.addDummyPrefix, true);
  assert.equal(v.removeExtraWhitespaces, false);
  assert.equal(v.escapeWhitespaces, true);
  assert.equal(v.source, "tiny.model");
});

Deno.test("tokenizer.model: remove_extra_whitespaces, byte fallback off, user-defined and unused pieces", () => {
  const normal: TinyPiece[] = [
    { piece: "▁", score: -5 },
    { piece: "a", score: -5 },
    { piece: "b", score: -5 },
    { piece: "▁a", score: -1 },
    { piece: "<|x|>", type: PieceType.USER_DEFINED },
    { piece: "ab", score: 0, type: PieceType.UNUSED },
    { piece: "é", score: -5 },
  ];
  const [space, a, b, spaceA, user] = [259, 260, 261, 262, 263];
  const t = new Tokenizer(parseSentencePieceModel(tinyModel([...SPECIALS, ...bytePieces(), ...normal]), "t"));
  assert.deepEqual(t.encode("a"), [spaceA]);
  // a user-defined piece is matched whole and never merges
  assert.deepEqual(t.encode("a<|x|>a"), [spaceA, user, a]);
  // "ab" is UNUSED: the merge happens, then it is split back into its parts
  assert.deepEqual(t.encode("ab"), [space, a, b]);
  // unknown characters become bytes
  assert.deepEqual(t.encode("ç"), [space, 0xc3 + 3, 0xa7 + 3]);
  // typed ▁ is a space for SentencePiece
  assert.deepEqual(t.encode("▁a"), t.encode(" a"));

  const tidy = new Tokenizer(
    parseSentencePieceModel(
      tinyModel([...SPECIALS, ...normal], { removeExtra: true, byteFallback: false }),
      "t",
    ),
  );
  // spaces trimmed and collapsed; with no byte fallback an unknown character is <unk>
  assert.deepEqual(tidy.encode("   a   a  "), tidy.encode("a a"));
  assert.deepEqual(tidy.encode("  "), []);
  assert.deepEqual(tidy.encode("ç"), [3, 0]);
});

Deno.test("tokenizer.model: Unigram and unknown normalizers are refused with one line", () => {
  const pieces = [...SPECIALS, { piece: "▁a" }];
  assert.throws(
    () => parseSentencePieceModel(tinyModel(pieces, { modelType: 1 }), "uni.model"),
    /^FileFormatError: uni\.model: Unigram SentencePiece models are not supported/,
  );
  assert.throws(
    () => parseSentencePieceModel(tinyModel(pieces, { normalizer: "nmt_nfkc" }), "n.model"),
    /n\.model: the "nmt_nfkc" normalization rule is not supported/,
  );
});

Deno.test("tokenizer.model: malformed protobuf gives a FileFormatError, never another error", () => {
  const good = tinyModel([...SPECIALS, { piece: "▁a", score: -1 }]);
  const cases: [string, number[], RegExp][] = [
    ["empty", [], /no pieces/],
    ["truncated varint", [0x0a, 0x80], /varint/],
    ["length past the end", [0x0a, 0x7f, 0x0a, 0x01], /longer than what is left/],
    ["group wire type", [0x0b, 0x00], /wire type 3/],
    ["varint of 11 bytes", [0x08, ...new Array(10).fill(0xff), 0x01], /longer than 10 bytes/],
    ["field number 0", [0x02, 0x00], /invalid field tag/],
    ["known field with the wrong wire type", [0x08, 0x01], /wire type 0/],
    ["piece with a bad type", bytesField(1, [...text(1, "x"), ...int(3, 9)]), /unknown type 9/],
    ["no trainer_spec", bytesField(1, text(1, "x")), /no trainer_spec/],
    ["huge length", [0x0a, ...varint(2n ** 62n)], /longer than what is left/],
  ];
  for (const [name, bytes, message] of cases) {
    assert.throws(() => parseSentencePieceModel(new Uint8Array(bytes), "bad.model"), (error: unknown) => {
      assert.ok(error instanceof FileFormatError, `${name}: ${error}`);
      assert.match(error.message, /^bad\.model: /, name);
      assert.match(error.message, message, name);
      return true;
    });
  }
  for (let end = 0; end < good.length; end++) {
    try {
      parseSentencePieceModel(good.subarray(0, end), "cut.model");
    } catch (error) {
      assert.ok(error instanceof FileFormatError, `truncated at ${end}: ${error}`);
    }
  }
});

Deno.test("loadTokenizer: recognises tokenizer.model by content and checks its size", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/renamed.bin`; // the extension does not matter
    await Deno.writeFile(path, tinyModel([...SPECIALS, ...bytePieces(), { piece: "▁a" }]));
    const t = await loadTokenizer(path, 260);
    assert.equal(t.vocabSize, 260);
    assert.deepEqual(t.encode("a", { bos: true }), [1, 259]);
    await assert.rejects(() => loadTokenizer(path, 32000), /tokenizer has 260 pieces, the model expects 32000/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- the Llama 2 model --------------------------------------------------------------

interface EncodeCase {
  text: string;
  ids: number[];
  pieces: string[];
  decoded: string;
}

sharedTest("tokenizer.model: every SentencePiece encode case, ids and decoded text", async () => {
  const data = JSON.parse(await Deno.readTextFile(sharedPath("tokenizers/llama2/encode-cases.json")));
  const t = await loadTokenizer(sharedPath("tokenizers/llama2/tokenizer.model"), data.vocab_size);
  assert.deepEqual([t.bosId, t.eosId, t.vocabulary.unkId], [data.bos_id, data.eos_id, data.unk_id]);
  for (const c of data.cases as EncodeCase[]) {
    const ids = t.encode(c.text);
    assert.deepEqual(ids, c.ids, JSON.stringify(c.text));
    assert.deepEqual(ids.map((id) => t.vocabulary.pieces[id]), c.pieces, JSON.stringify(c.text));
    assert.equal(t.decode(c.ids), c.decoded, JSON.stringify(c.text));
  }
});

sharedTest("tokenizer.model: llama.cpp's Llama SPM test vectors", async () => {
  const t = await loadTokenizer(sharedPath("tokenizers/llama2/tokenizer.model"));
  const base = sharedPath("tokenizers/llama-spm-gguf/ggml-vocab-llama-spm.gguf");
  const inputs = (await Deno.readTextFile(`${base}.inp`)).split("\n__ggml_vocab_test__\n");
  const outputs = (await Deno.readTextFile(`${base}.out`)).split("\n");
  assert.ok(inputs.length > 40);
  for (let i = 0; i < inputs.length; i++) {
    const expected = outputs[i].trim() === "" ? [] : outputs[i].trim().split(/\s+/).map(Number);
    assert.deepEqual(t.encode(inputs[i]), expected, JSON.stringify(inputs[i]));
  }
});

sharedTest("tokenizer.model and tokenizer.bin of Llama 2 encode and decode alike", async () => {
  const model = await loadTokenizer(sharedPath("tokenizers/llama2/tokenizer.model"));
  const bin = await loadTokenizer(sharedPath("tokenizers/llama2/tokenizer.bin"));
  // ▁ typed in the text is left out: llama2.c does not read it as a space, SentencePiece does
  const fragments = ["a", "the", " ", "  ", "\n", "\t", "é", "東京", "🦙", "<s>", "Hello", ",", "1", "\u00a0", "ing"];
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 200; i++) {
    let s = "";
    const count = Math.floor(next() * 12);
    for (let k = 0; k < count; k++) s += fragments[Math.floor(next() * fragments.length)];
    const ids = model.encode(s);
    assert.deepEqual(bin.encode(s), ids, JSON.stringify(s));
    assert.equal(model.decode(ids), s, JSON.stringify(s));
    assert.equal(bin.decode(ids), s, JSON.stringify(s));
  }
});

sharedTest("tokenizer.model: truncations and seeded byte flips give a clean error or a tokenizer", async () => {
  const bytes = await Deno.readFile(sharedPath("tokenizers/llama2/tokenizer.model"));
  let seed = 99;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const tryParse = (data: Uint8Array, what: string) => {
    try {
      new Tokenizer(parseSentencePieceModel(data, "mutated.model")).encode("Hello world");
    } catch (error) {
      assert.ok(error instanceof FileFormatError, `${what}: ${error}`);
      assert.ok(!error.message.includes("\n"), what);
    }
  };
  for (let i = 0; i < 20; i++) {
    const end = Math.floor(next() * bytes.length);
    tryParse(bytes.subarray(0, end), `truncated at ${end}`);
  }
  for (let i = 0; i < 20; i++) {
    const mutated = bytes.slice();
    for (let k = 0; k < 4; k++) mutated[Math.floor(next() * mutated.length)] = Math.floor(next() * 256);
    tryParse(mutated, `flips #${i}`);
  }
});

if (!haveShared) sharedTest("SentencePiece tests on ../shared data", () => {});
