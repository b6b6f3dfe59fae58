/**
 * `:save` / `:load`: a conversation and its KV cache in one file, so a long
 * session resumes without reading the transcript again. The file records a
 * fingerprint of the model's weights; loading it with another model is
 * refused.
 *
 * Layout: the 8 bytes `TLCHAT\0\x01`, a little-endian uint32 header length,
 * the header (UTF-8 JSON), zero padding to a multiple of 4, then for each
 * layer its cached keys and then for each layer its cached values, as
 * little-endian float32.
 *
 * @module
 */

import { FileFormatError, TensorlessError } from "../errors.ts";
import { dequantizeRow } from "../quant.ts";
import { Sha256 } from "../sha256.ts";
import type { ModelFile } from "../model_file.ts";
import type { Conversation } from "./conversation.ts";
import { type ChatMessage, chatTemplate, isTemplateName } from "./templates.ts";

const MAGIC = new Uint8Array([0x54, 0x4c, 0x43, 0x48, 0x41, 0x54, 0x00, 0x01]); // "TLCHAT\0\1"

interface Header {
  format: "tensorless-chat";
  version: 1;
  model: { fingerprint: string; name: string; config: ModelFile["config"] };
  template: string;
  system?: string;
  messages: ChatMessage[];
  cached: number[];
  settings: { temperature: number; topP: number; maxTokens: number };
}

/**
 * A fingerprint of a model: its hyperparameters and a sample of its weights
 * (first and last embedding rows, the norms), hashed. Same weights, same
 * fingerprint, whatever the file format.
 */
export function modelFingerprint(file: ModelFile): string {
  const { config, weights } = file;
  const hash = new Sha256();
  hash.update(new TextEncoder().encode(JSON.stringify(config)));
  const row = new Float32Array(config.dim);
  for (const r of [0, 1, config.vocabSize - 1]) {
    dequantizeRow(weights.tokenEmbedding, r, row);
    hash.update(new Uint8Array(row.buffer));
  }
  const norms = [weights.finalNorm, weights.layers[0]?.attentionNorm, weights.layers.at(-1)?.ffnNorm];
  for (const norm of norms) if (norm) hash.update(new Uint8Array(norm.slice().buffer));
  return hash.hex();
}

/** Writes `conversation` (messages, settings, KV cache) to `path`, atomically. */
export async function saveConversation(path: string, conversation: Conversation, modelName: string): Promise<void> {
  const cache = conversation.session.exportCache();
  const header: Header = {
    format: "tensorless-chat",
    version: 1,
    model: {
      fingerprint: modelFingerprint(conversation.model.file),
      name: modelName,
      config: conversation.model.config,
    },
    template: conversation.template.name,
    system: conversation.system,
    messages: conversation.messages,
    cached: conversation.cachedIds,
    settings: {
      temperature: conversation.sampler.temperature,
      topP: conversation.sampler.topP,
      maxTokens: conversation.maxTokens,
    },
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const dataStart = Math.ceil((12 + json.length) / 4) * 4;
  const head = new Uint8Array(dataStart);
  head.set(MAGIC, 0);
  new DataView(head.buffer).setUint32(8, json.length, true);
  head.set(json, 12);
  // Written piece by piece beside the target, then renamed: a failed save never leaves half a file under the name.
  const temporary = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    {
      using file = await Deno.open(temporary, { write: true, createNew: true });
      for (const array of [head, ...cache.keys, ...cache.values]) {
        const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
        for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      }
    }
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw new FileFormatError(path, `cannot write: ${error instanceof Error ? error.message.split("\n")[0] : error}`);
  }
}

/**
 * Reads a file made by {@link saveConversation} into `conversation`, which
 * takes over its template and settings. Refuses files made for a different
 * model.
 */
export async function loadConversation(path: string, conversation: Conversation): Promise<{ modelName: string }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "no such file" : "cannot be read";
    throw new FileFormatError(path, reason);
  }
  if (bytes.length < 12 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new FileFormatError(path, "is not a tensorless conversation file");
  }
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length)));
  } catch {
    throw new FileFormatError(path, "has a damaged header");
  }
  if (header.format !== "tensorless-chat" || header.version !== 1) {
    throw new FileFormatError(path, "is a conversation file of an unknown version");
  }
  const model = conversation.model;
  if (header.model.fingerprint !== modelFingerprint(model.file)) {
    throw new TensorlessError(
      `${path} was saved with another model (${header.model.name}, dim ${header.model.config.dim}, ` +
        `${header.model.config.nLayers} layers); it cannot be loaded with this one`,
    );
  }
  if (!isTemplateName(header.template)) throw new FileFormatError(path, `names an unknown template`);
  const { nLayers, dim, nHeads, nKvHeads } = model.config;
  const kvDim = (dim / nHeads) * nKvHeads;
  const perArray = header.cached.length * kvDim;
  const dataStart = Math.ceil((12 + length) / 4) * 4;
  if (bytes.length !== dataStart + perArray * 4 * 2 * nLayers) {
    throw new FileFormatError(path, "is truncated or damaged (its cache has the wrong size)");
  }
  // Copy into an aligned buffer: the file's bytes may not start on a 4-byte boundary.
  const floats = new Float32Array(bytes.slice(dataStart).buffer);
  const slice = (i: number) => floats.slice(i * perArray, (i + 1) * perArray);
  const keys = Array.from({ length: nLayers }, (_, l) => slice(l));
  const values = Array.from({ length: nLayers }, (_, l) => slice(nLayers + l));
  conversation.restore(header, { position: header.cached.length, keys, values });
  // The cache was built with the saved template: keep using it.
  if (conversation.template.name !== header.template) {
    conversation.template = chatTemplate(header.template, model.tokenizer);
  }
  conversation.sampler.temperature = header.settings.temperature;
  conversation.sampler.topP = header.settings.topP;
  conversation.maxTokens = header.settings.maxTokens;
  return { modelName: header.model.name };
}
