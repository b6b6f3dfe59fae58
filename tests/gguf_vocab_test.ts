// The vocabulary embedded in a GGUF file tokenizes llama.cpp's own test vectors
// (test-tokenizer-0 for the Llama SentencePiece vocabulary) exactly.
import assert from "node:assert/strict";
import { readFileBytes } from "../lib/file_bytes.ts";
import { ggufVocabulary, parseGguf } from "../lib/gguf.ts";
import { Tokenizer } from "../lib/tokenizer.ts";
import { PieceType } from "../lib/vocabulary.ts";
import { haveShared, sharedPath } from "./shared_data.ts";

const BASE = "tokenizers/llama-spm-gguf/ggml-vocab-llama-spm.gguf";
const NAME = "GGUF vocabulary encodes llama.cpp's llama-spm test vectors exactly";

/** The inputs of the `.inp` file (separated by `__ggml_vocab_test__` lines) paired with the ids of `.out`. */
function vectors(): { text: string; ids: number[] }[] {
  const separator = "\n__ggml_vocab_test__\n";
  const input = Deno.readTextFileSync(sharedPath(BASE + ".inp"));
  const texts = input.split(separator);
  // The file ends with a separator, which leaves an empty last element.
  if (texts.at(-1) === "") texts.pop();
  const lines = Deno.readTextFileSync(sharedPath(BASE + ".out")).split("\n");
  if (lines.at(-1) === "") lines.pop();
  assert.equal(texts.length, lines.length, "as many inputs as expected outputs");
  return texts.map((text, i) => ({
    text,
    ids: lines[i].trim() === "" ? [] : lines[i].trim().split(/\s+/).map(Number),
  }));
}

if (haveShared) {
  Deno.test(NAME, async (t) => {
    const gguf = parseGguf(await readFileBytes(sharedPath(BASE)), BASE);
    assert.equal(gguf.tensors.length, 0, "a vocabulary-only file");
    const vocabulary = ggufVocabulary(gguf);
    assert.ok(vocabulary, "tokenizer.ggml.model is llama");
    assert.equal(vocabulary.pieces.length, 32000);
    assert.deepEqual([vocabulary.bosId, vocabulary.eosId, vocabulary.unkId], [1, 2, 0]);
    assert.equal(vocabulary.types[0], PieceType.UNKNOWN);
    assert.equal(vocabulary.pieces[29871], "▁");
    const tokenizer = new Tokenizer(vocabulary);
    for (const [i, { text, ids }] of vectors().entries()) {
      const label = JSON.stringify(text.length > 40 ? text.slice(0, 40) + "…" : text);
      await t.step(`vector ${i}: ${label}`, () => {
        assert.deepEqual(tokenizer.encode(text, { bos: false }), ids);
      });
    }
  });
} else {
  Deno.test({ name: `${NAME} (skipped: ../shared absent)`, ignore: true, fn: () => {} });
}
