// The streaming SHA-256 agrees with WebCrypto on inputs of many lengths and in any split.
import assert from "node:assert/strict";
import { Sha256, sha256File } from "../lib/sha256.ts";
import { seededRandom } from "./fixtures.ts";

async function webCryptoHex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomBytes(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const random = seededRandom(seed);
  return Uint8Array.from({ length }, () => Math.floor(random() * 256));
}

Deno.test("sha256 of known vectors", () => {
  const encode = (s: string) => new TextEncoder().encode(s);
  assert.equal(new Sha256().hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(
    new Sha256().update(encode("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")).hex(),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

Deno.test("sha256 matches crypto.subtle.digest at block boundaries and beyond", async () => {
  const lengths = [1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 100_003];
  for (const [i, length] of lengths.entries()) {
    const bytes = randomBytes(length, i + 1);
    assert.equal(new Sha256().update(bytes).hex(), await webCryptoHex(bytes), `length ${length}`);
  }
});

Deno.test("sha256 gives the same digest however the input is split", async () => {
  const bytes = randomBytes(10_000, 99);
  const expected = await webCryptoHex(bytes);
  const random = seededRandom(5);
  for (let trial = 0; trial < 10; trial++) {
    const hash = new Sha256();
    let offset = 0;
    while (offset < bytes.length) {
      const size = Math.floor(random() * 200);
      hash.update(bytes.subarray(offset, offset + size));
      offset += size;
    }
    assert.equal(hash.hex(), expected);
  }
});

Deno.test("sha256File hashes a file in pieces", async () => {
  const bytes = randomBytes(3 * (1 << 20) + 17, 3);
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, bytes);
    assert.equal(await sha256File(path), await webCryptoHex(bytes));
  } finally {
    await Deno.remove(path);
  }
});
