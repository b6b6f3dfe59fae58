// The tokenizer against llama2.c: tokenizer.bin parsing, encoding (recorded
// prompts, SentencePiece's own outputs, and a literal port of llama2.c's
// encode() on random text), decoding and streaming, and hostile files.
import assert from "node:assert/strict";
import { FileFormatError } from "../lib/errors.ts";
import { loadTokenizer, Tokenizer } from "../lib/tokenizer.ts";
import { parseTokenizerBin } from "../lib/tokenizer_bin.ts";
import { Utf8Stream } from "../lib/utf8_stream.ts";
import { PieceType } from "../lib/vocabulary.ts";
import { haveShared, parityCases, sharedPath, sharedTest } from "./shared_data.ts";

interface EncodeCase {
  text: string;
  ids: number[];
  pieces: string[];
  decoded: string;
}

/** A llama2.c tokenizer.bin from raw pieces (spaces as spaces, as llama2.c writes them). */
function tokenizerBin(pieces: string[], scores?: number[], maxTokenLength?: number): Uint8Array {
  const encoded = pieces.map((piece) => new TextEncoder().encode(piece));
  const max = maxTokenLength ?? Math.max(1, ...encoded.map((bytes) => bytes.length));
  const size = 4 + encoded.reduce((sum, bytes) => sum + 8 + bytes.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setInt32(0, max, true);
  let offset = 4;
  encoded.forEach((bytes, id) => {
    view.setFloat32(offset, scores?.[id] ?? -id, true);
    view.setInt32(offset + 4, bytes.length, true);
    out.set(bytes, offset + 8);
    offset += 8 + bytes.length;
  });
  return out;
}

/** A small vocabulary in llama2.c's layout: <unk>, BOS, EOS, 256 byte pieces, then `normal`. */
function smallVocabulary(normal: string[]): string[] {
  const pieces = ["<unk>", "\n<s>\n", "\n</s>\n"];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  return pieces.concat(normal);
}

function smallTokenizer(normal: string[], scores?: number[]): Tokenizer {
  const pieces = smallVocabulary(normal);
  const allScores = scores && pieces.map((_, id) => (id < 259 ? 0 : scores[id - 259]));
  return new Tokenizer(parseTokenizerBin(tokenizerBin(pieces, allScores), "small.bin"));
}

/**
 * llama2.c's encode(), ported literally (run.c at 350e04f): look up each
 * UTF-8 codepoint, bytes + 3 for unknown ones, then rescan for the best
 * merge until none is left. Pieces are the raw file strings.
 */
function llama2cEncode(pieces: string[], scores: number[], text: string): number[] {
  const lookup = new Map<string, number>();
  pieces.forEach((piece, id) => {
    if (!lookup.has(piece)) lookup.set(piece, id);
  });
  const tokens: number[] = [];
  if (text.length > 0) tokens.push(lookup.get(" ")!);
  for (const char of text) {
    const id = lookup.get(char);
    if (id !== undefined) tokens.push(id);
    else for (const byte of new TextEncoder().encode(char)) tokens.push(byte + 3);
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIndex = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = lookup.get(pieces[tokens[i]] + pieces[tokens[i + 1]]);
      if (id !== undefined && scores[id] > bestScore) {
        bestScore = scores[id];
        bestId = id;
        bestIndex = i;
      }
    }
    if (bestIndex === -1) return tokens;
    tokens.splice(bestIndex, 2, bestId);
  }
}

/** The raw pieces and scores of a tokenizer.bin, read without the project's parser. */
function rawTokenizerBin(bytes: Uint8Array): { pieces: string[]; scores: number[] } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pieces: string[] = [];
  const scores: number[] = [];
  for (let offset = 4; offset < bytes.length;) {
    scores.push(view.getFloat32(offset, true));
    const length = view.getInt32(offset + 4, true);
    pieces.push(new TextDecoder().decode(bytes.subarray(offset + 8, offset + 8 + length)));
    offset += 8 + length;
  }
  return { pieces, scores };
}

/** A seeded xorshift generator, so random cases are the same on every run. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const FRAGMENTS = [
  "a",
  "e",
  "t",
  "h",
  "s",
  "o",
  "n",
  " ",
  " ",
  "  ",
  "\n",
  "\t",
  "\r",
  "Once",
  " upon",
  " time",
  "ing",
  "the",
  "é",
  "ï",
  "東",
  "京",
  "🦙",
  "👍🏽",
  "𝔘",
  "<s>",
  "</s>",
  "<unk>",
  "<0x41>",
  "▁",
  "\u00a0",
  "\u200b",
  "Lily",
  ",",
  ".",
  "'",
  "1",
  "23",
  "?",
  "!",
  "Привет",
  "A",
]; // deno-fmt-ignore

function randomText(next: () => number): string {
  const count = Math.floor(next() * 14);
  let text = "";
  for (let i = 0; i < count; i++) text += FRAGMENTS[Math.floor(next() * FRAGMENTS.length)];
  return text;
}

// --- tokenizer.bin parsing ---------------------------------------------------

Deno.test("tokenizer.bin: pieces use ▁, BOS/EOS lose their newlines, types are derived", () => {
  const vocabulary = parseTokenizerBin(tokenizerBin(smallVocabulary([" t", "he", " the"])), "t.bin");
  assert.equal(vocabulary.pieces.length, 262);
  assert.deepEqual(vocabulary.pieces.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"]);
  assert.deepEqual(vocabulary.pieces.slice(259), ["▁t", "he", "▁the"]);
  assert.deepEqual([...vocabulary.types.slice(0, 4)], [
    PieceType.UNKNOWN,
    PieceType.CONTROL,
    PieceType.CONTROL,
    PieceType.BYTE,
  ]);
  assert.equal(vocabulary.types[258], PieceType.BYTE);
  assert.equal(vocabulary.types[259], PieceType.NORMAL);
  assert.equal(vocabulary.scores[260], -260);
  assert.equal(vocabulary.bosId, 1);
  assert.equal(vocabulary.eosId, 2);
  assert.equal(vocabulary.unkId, 0);
});

Deno.test("tokenizer.bin: hostile files give a FileFormatError naming the file", () => {
  const good = tokenizerBin(smallVocabulary(["ab"]));
  const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty", new Uint8Array(0), /ends early/],
    ["three bytes", new Uint8Array(3), /ends early/],
    [
      "zero max_token_length",
      (() => {
        const b = good.slice();
        view(b).setInt32(0, 0, true);
        return b;
      })(),
      /max_token_length is 0/,
    ],
    [
      "huge max_token_length",
      (() => {
        const b = good.slice();
        view(b).setInt32(0, 0x7fffffff, true);
        return b;
      })(),
      /max_token_length/,
    ],
    [
      "negative length",
      (() => {
        const b = good.slice();
        view(b).setInt32(8, -5, true);
        return b;
      })(),
      /length -5/,
    ],
    [
      "length past max_token_length",
      (() => {
        const b = good.slice();
        view(b).setInt32(8, 7, true);
        return b;
      })(),
      /length 7/,
    ],
    [
      "length past end of file",
      (() => {
        const b = good.slice();
        view(b).setInt32(b.length - 6, 6, true);
        return b;
      })(),
      /ends early: piece 259 needs 6 bytes/,
    ],
    ["truncated score", good.subarray(0, good.length - 3 - 8 + 2), /ends early/],
    ["two pieces", tokenizerBin(["<unk>", "<s>"]), /at least/],
  ];
  for (const [name, bytes, message] of cases) {
    assert.throws(() => parseTokenizerBin(bytes, "bad.bin"), (error: unknown) => {
      assert.ok(error instanceof FileFormatError, name);
      assert.match(error.message, /^bad\.bin: /, name);
      assert.match(error.message, message, name);
      assert.ok(!error.message.includes("\n"), name);
      return true;
    });
  }
  // every truncation of a valid file either parses (at a piece boundary) or fails cleanly
  for (let end = 0; end < good.length; end++) {
    try {
      parseTokenizerBin(good.subarray(0, end), "cut.bin");
    } catch (error) {
      assert.ok(error instanceof FileFormatError, `truncated at ${end}: ${error}`);
    }
  }
});

Deno.test("loadTokenizer: size mismatch, missing file and GGUF give one-line errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/tokenizer.bin`;
    await Deno.writeFile(path, tokenizerBin(smallVocabulary(["ab"])));
    assert.equal((await loadTokenizer(path, 260)).vocabSize, 260);
    await assert.rejects(
      () => loadTokenizer(path, 512),
      new FileFormatError(path, "tokenizer has 260 pieces, the model expects 512"),
    );
    await assert.rejects(() => loadTokenizer(`${dir}/missing.bin`), FileFormatError);
    await Deno.writeFile(`${dir}/model.gguf`, new TextEncoder().encode("GGUF\x03\0\0\0"));
    await assert.rejects(() => loadTokenizer(`${dir}/model.gguf`), /GGUF/);
    // max_token_length 10 starts with 0x0A like a protobuf; it is still read as tokenizer.bin
    await Deno.writeFile(path, tokenizerBin(smallVocabulary(["abcdefghij"]), undefined, 10));
    assert.equal((await loadTokenizer(path)).vocabSize, 260);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- encoding ------------------------------------------------------------------

Deno.test("encode: highest score merges first, leftmost on ties; bos/eos options", () => {
  // "▁ab" via "ab" (better score) rather than "▁a"
  const t = smallTokenizer(["▁a", "ab", "▁ab", "a", "b", "▁"], [-5, -1, -2, -10, -10, -10]);
  assert.deepEqual(t.encode("ab"), [261]);
  assert.deepEqual(t.encode("ab", { bos: true, eos: true }), [1, 261, 2]);
  assert.deepEqual(t.encode(""), []);
  assert.deepEqual(t.encode("", { bos: true }), [1]);
  // ties go to the leftmost pair: "aaa" → "aa" + "a"
  const tie = smallTokenizer(["aa", "a", "▁"], [-1, -5, -5]);
  assert.deepEqual(tie.encode("aaa"), [261, 259, 260]);
  // unknown characters fall back to bytes (id = byte + 3 in llama2.c's layout)
  assert.deepEqual(tie.encode("é"), [261, 0xc3 + 3, 0xa9 + 3]);
  // control and byte pieces are never produced from text
  assert.deepEqual(tie.encode("<s>").includes(1), false);
});

Deno.test("encode: the same result as llama2.c's encode() on seeded random text (small vocabulary)", () => {
  const normal = ["a", "e", "t", "h", "▁", "▁t", "he", "▁the", "th", "in", "ing", "on", "ce", "On", "▁On", "▁u", "up"];
  const pieces = smallVocabulary(normal).map((p) => p.replaceAll("▁", " "));
  const scores = pieces.map((_, id) => (id < 259 ? 0 : -(id % 7)));
  const t = new Tokenizer(parseTokenizerBin(tokenizerBin(pieces, scores), "small.bin"));
  const next = random(7);
  for (let i = 0; i < 300; i++) {
    const text = randomText(next);
    assert.deepEqual(t.encode(text), llama2cEncode(pieces, scores, text), JSON.stringify(text));
  }
});

for (const file of ["models/stories260K/tok512.bin", "tokenizers/llama2/tokenizer.bin"]) {
  sharedTest(`encode: the same result as llama2.c's encode() on seeded random text (${file})`, async () => {
    const path = sharedPath(file);
    const { pieces, scores } = rawTokenizerBin(await Deno.readFile(path));
    const t = await loadTokenizer(path);
    const next = random(file.length);
    for (let i = 0; i < 150; i++) {
      const text = randomText(next);
      assert.deepEqual(t.encode(text), llama2cEncode(pieces, scores, text), JSON.stringify(text));
    }
  });
}

for (const c of parityCases("cases.json")) {
  sharedTest(`encode: llama2.c's prompt tokens for parity case ${c.name}`, async () => {
    const t = await loadTokenizer(sharedPath(c.tokenizer));
    const ids = t.encode(c.prompt, { bos: true });
    assert.deepEqual(ids, c.expected_ids.slice(0, ids.length));
  });
}

sharedTest("encode/decode: tokenizer.bin gives SentencePiece's ids and text for every encode case", async () => {
  const t = await loadTokenizer(sharedPath("tokenizers/llama2/tokenizer.bin"), 32000);
  const { cases } = JSON.parse(await Deno.readTextFile(sharedPath("tokenizers/llama2/encode-cases.json")));
  for (const c of cases as EncodeCase[]) {
    assert.deepEqual(t.encode(c.text), c.ids, JSON.stringify(c.text));
    assert.equal(t.decode(c.ids), c.decoded, JSON.stringify(c.text));
  }
});

sharedTest("encode: a 4k-token prompt encodes and decodes back to the text", async () => {
  const t = await loadTokenizer(sharedPath("tokenizers/llama2/tokenizer.bin"));
  const sentence = "Once upon a time, in a land far away, Lily and Tom found 3 apples, 東京 and 🦙 by the river. ";
  const text = sentence.repeat(160);
  const ids = t.encode(text);
  assert.ok(ids.length > 4000, `${ids.length} tokens`);
  assert.equal(t.decode(ids), text);
});

// --- decoding --------------------------------------------------------------------

Deno.test("decode: BOS/EOS print nothing, the space after BOS is dropped, bytes join into characters", () => {
  const t = smallTokenizer(["▁a", "b", "▁", "▁b"]);
  assert.equal(t.decode([1, 259, 260, 2]), "ab");
  assert.equal(t.decode([259, 262]), "a b"); // SentencePiece: the first piece's ▁ is the dummy prefix
  assert.equal(t.decode([1, 261, 261]), " "); // only one leading ▁ is dropped
  assert.equal(t.decode([1, 0xe6 + 3, 0x9d + 3, 0xb1 + 3]), "東");
  assert.equal(t.decode([1, 0x0a + 3, 259]), "\n a"); // a byte piece is text: no ▁ dropped after it
  assert.equal(t.decode([0]), " \u2047 ");
  assert.throws(() => t.decode([9999]), RangeError);
});

Deno.test("decode: the streaming decoder holds split characters and replaces only invalid bytes", () => {
  const t = smallTokenizer(["▁a", "b"]);
  const byte = (b: number) => b + 3;
  const decoder = t.decoder();
  const llama = [0xf0, 0x9f, 0xa6, 0x99];
  assert.deepEqual(llama.map((b) => decoder.push(byte(b))), ["", "", "", "🦙"]);
  assert.equal(decoder.push(260), "b");
  // an interrupted sequence: each of its bytes is one U+FFFD, then the piece
  assert.equal(decoder.push(byte(0xe6)), "");
  assert.equal(decoder.push(byte(0x9d)), "");
  assert.equal(decoder.push(259), "\uFFFD\uFFFD a");
  assert.equal(decoder.push(byte(0xff)), "\uFFFD");
  assert.equal(decoder.push(byte(0xc3)), "");
  assert.equal(decoder.flush(), "\uFFFD");
  // streaming and whole-sequence decoding agree
  const ids = [1, 259, byte(0xc3), byte(0xa9), 260, byte(0xe6), 2];
  const stream = t.decoder();
  assert.equal(ids.map((id) => stream.push(id)).join("") + stream.flush(), t.decode(ids));
});

Deno.test("Utf8Stream: well-formed sequences only (no overlongs, surrogates or values past U+10FFFF)", () => {
  const decode = (bytes: number[]) => {
    const s = new Utf8Stream();
    return s.push(bytes) + s.flush();
  };
  assert.equal(decode([0x41, 0xc3, 0xa9, 0xe2, 0x96, 0x81, 0xf0, 0x9f, 0xa6, 0x99]), "Aé▁🦙");
  assert.equal(decode([0xc0, 0xaf]), "\uFFFD\uFFFD"); // overlong
  assert.equal(decode([0xed, 0xa0, 0x80]), "\uFFFD\uFFFD\uFFFD"); // surrogate
  assert.equal(decode([0xf4, 0x90, 0x80, 0x80]), "\uFFFD".repeat(4)); // past U+10FFFF
  assert.equal(decode([0xe0, 0x80, 0x80]), "\uFFFD".repeat(3)); // overlong 3-byte
  const s = new Utf8Stream();
  assert.equal(s.push([0xe6, 0x9d]), "");
  assert.ok(s.pending);
  assert.equal(s.push([0xb1]), "東");
});

Deno.test("piece: text as printed for charts", () => {
  const t = smallTokenizer(["▁a", "b"]);
  assert.equal(t.piece(259), " a");
  assert.equal(t.piece(1), "<s>");
  assert.equal(t.piece(0x41 + 3), "A");
  assert.equal(t.piece(0x0a + 3), "<0x0A>");
});

if (!haveShared) sharedTest("tokenizer tests on ../shared data", () => {});
