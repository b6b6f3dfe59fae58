/**
 * Named models (`weights/catalog.json`): where to download them, how big they
 * are, their SHA-256, format and chat template. {@link resolveModel} turns a
 * `--model` value (a catalog name or a path) into local files, downloading
 * them on first use.
 *
 * The catalog can be replaced by setting the environment variable
 * `TENSORLESS_CATALOG` to the path of another catalog JSON file (tests do
 * this to download from a local server).
 *
 * @module
 */

import { FileFormatError, TensorlessError } from "./errors.ts";
import { downloadFile, formatBytes, ProgressReporter } from "./download.ts";

/** One file of a catalog model. */
export interface CatalogFile {
  /** File name inside the models folder. */
  name: string;
  /** Where to download it from. */
  url: string;
  /** Size in bytes; `null` when unknown. */
  size: number | null;
  /** SHA-256 as hex; `null` when unknown. */
  sha256: string | null;
}

/** A named model of the catalog. */
export interface CatalogEntry {
  /** The name `--model` and `pull` take. */
  name: string;
  /** One line for `tensorless models`. */
  description: string;
  /** `llama2c`, `gguf` or `safetensors`. */
  format: string;
  /** Chat template name (`llama2`, `zephyr`, `raw`), when known. */
  template?: string;
  /** Which of `files` is the model. */
  model: string;
  /** Which of `files` is the tokenizer, when the model does not carry one. */
  tokenizer?: string;
  /** Everything to download. */
  files: CatalogFile[];
}

/** What a `--model` value resolved to: local paths, and the template to chat with. */
export interface ResolvedModel {
  /** Path of the model file or folder. */
  model: string;
  /** Path of its tokenizer, when the catalog names one. */
  tokenizer?: string;
  /** Chat template name from the catalog. */
  template?: string;
  /** The catalog name, when it came from the catalog. */
  name?: string;
}

/** The model `chat` and `generate` use when no `--model` is given. */
export const DEFAULT_MODEL = "stories15M";

/** The catalog's location: `TENSORLESS_CATALOG`, else `weights/catalog.json` of this copy of tensorless. */
export function catalogLocation(): URL {
  const override = envGet("TENSORLESS_CATALOG");
  if (override) return new URL(override, `file://${Deno.cwd()}/`);
  return new URL("../weights/catalog.json", import.meta.url);
}

/** Reads and checks the catalog. */
export async function loadCatalog(location: URL = catalogLocation()): Promise<CatalogEntry[]> {
  const where = location.protocol === "file:" ? location.pathname : location.href;
  let text: string;
  try {
    if (location.protocol === "file:") {
      text = await Deno.readTextFile(location);
    } else {
      const response = await fetch(location);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      text = await response.text();
    }
  } catch (error) {
    throw new FileFormatError(where, `cannot read the catalog: ${error instanceof Error ? error.message : error}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new FileFormatError(where, "the catalog is not valid JSON");
  }
  const models = (json as { models?: unknown })?.models;
  if (typeof models !== "object" || models === null) throw new FileFormatError(where, 'the catalog has no "models"');
  return Object.entries(models as Record<string, Record<string, unknown>>).map(([name, raw]) => {
    const bad = (what: string) => new FileFormatError(where, `model "${name}": ${what}`);
    if (typeof raw?.model !== "string" || !Array.isArray(raw.files)) throw bad('needs "model" and "files"');
    const files = (raw.files as Record<string, unknown>[]).map((f) => {
      if (typeof f?.name !== "string" || typeof f.url !== "string" || f.name.includes("/")) {
        throw bad('each file needs a plain "name" and a "url"');
      }
      if (f.size !== null && f.size !== undefined && !(Number.isInteger(f.size) && (f.size as number) >= 0)) {
        throw bad(`file ${f.name}: bad size`);
      }
      if (f.sha256 !== null && f.sha256 !== undefined && !/^[0-9a-f]{64}$/i.test(String(f.sha256))) {
        throw bad(`file ${f.name}: bad sha256`);
      }
      return {
        name: f.name,
        url: f.url,
        size: (f.size as number | undefined) ?? null,
        sha256: (f.sha256 as string | undefined)?.toLowerCase() ?? null,
      };
    });
    const entry: CatalogEntry = {
      name,
      description: String(raw.description ?? ""),
      format: String(raw.format ?? ""),
      template: typeof raw.template === "string" ? raw.template : undefined,
      model: raw.model,
      tokenizer: typeof raw.tokenizer === "string" ? raw.tokenizer : undefined,
      files,
    };
    for (const needed of [entry.model, entry.tokenizer]) {
      if (needed !== undefined && !files.some((f) => f.name === needed)) {
        throw bad(`"${needed}" is not one of its files`);
      }
    }
    return entry;
  });
}

/**
 * Where downloaded models go: `weights/` of the checkout when running from one
 * (this module is a local file and that folder exists), else
 * `$XDG_CACHE_HOME/tensorless`, else `~/.cache/tensorless`.
 */
export function defaultModelDir(): string {
  const here = new URL("../weights/", import.meta.url);
  if (here.protocol === "file:") {
    try {
      if (Deno.statSync(here).isDirectory) return here.pathname.replace(/\/$/, "");
    } catch {
      // Not a checkout: fall through to the cache folder.
    }
  }
  const cache = envGet("XDG_CACHE_HOME") || `${envGet("HOME") ?? envGet("USERPROFILE") ?? "."}/.cache`;
  return `${cache}/tensorless`;
}

/** Which files of `entry` are already in `dir` (complete: present with the expected size). */
export async function presentFiles(entry: CatalogEntry, dir: string): Promise<Map<string, boolean>> {
  const present = new Map<string, boolean>();
  for (const file of entry.files) {
    let ok = false;
    try {
      const info = await Deno.stat(`${dir}/${file.name}`);
      ok = info.isFile && (file.size === null || info.size === file.size);
    } catch {
      ok = false;
    }
    present.set(file.name, ok);
  }
  return present;
}

/** Options of {@link pullModel} and {@link resolveModel}. */
export interface PullOptions {
  /** Models folder; default {@link defaultModelDir}. */
  dir?: string;
  /** Show progress on stderr (default true). */
  progress?: boolean;
  /** Catalog to use instead of loading it. */
  catalog?: CatalogEntry[];
  /** {@link resolveModel}: download a catalog model's missing files (default true), or refuse to. */
  download?: boolean;
}

/** Downloads the files of `entry` that are missing from the models folder; returns its local paths. */
export async function pullModel(entry: CatalogEntry, options: PullOptions = {}): Promise<ResolvedModel> {
  const dir = options.dir ?? defaultModelDir();
  const present = await presentFiles(entry, dir);
  for (const file of entry.files) {
    if (present.get(file.name)) continue;
    const reporter = options.progress === false ? undefined : new ProgressReporter(file.name);
    try {
      const result = await downloadFile(file.url, `${dir}/${file.name}`, {
        size: file.size,
        sha256: file.sha256,
        onProgress: reporter && ((p) => reporter.update(p)),
      });
      const checks = result.verified.sha256 ? "sha256 verified" : "sha256 unknown, not verified";
      reporter?.finish(`${formatBytes(result.bytes)}, ${checks}`);
    } catch (error) {
      reporter?.clear();
      throw error;
    }
  }
  return {
    name: entry.name,
    model: `${dir}/${entry.model}`,
    tokenizer: entry.tokenizer && `${dir}/${entry.tokenizer}`,
    template: entry.template,
  };
}

/**
 * Turns a `--model` value into local files: an existing file or folder is
 * itself; a catalog name is downloaded on first use (into `dir`), unless
 * `download` is false.
 *
 * @example
 * ```ts ignore
 * import { resolveModel } from "./catalog.ts";
 *
 * const { model, tokenizer, template } = await resolveModel("stories15M");
 * ```
 */
export async function resolveModel(nameOrPath: string, options: PullOptions = {}): Promise<ResolvedModel> {
  try {
    await Deno.stat(nameOrPath);
    return { model: nameOrPath };
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw new FileFormatError(nameOrPath, "cannot be read");
  }
  const catalog = options.catalog ?? await loadCatalog();
  const entry = catalog.find((e) => e.name === nameOrPath);
  if (!entry) {
    const looksLikePath = /[/\\]|\.(bin|gguf|safetensors)$/.test(nameOrPath);
    throw new TensorlessError(
      looksLikePath
        ? `${nameOrPath}: no such file or directory`
        : `"${nameOrPath}" is neither a file nor a catalog model (known: ${catalog.map((e) => e.name).join(", ")})`,
    );
  }
  if (options.download === false) {
    const dir = options.dir ?? defaultModelDir();
    const present = await presentFiles(entry, dir);
    if ([...present.values()].includes(false)) {
      throw new TensorlessError(`${entry.name} is not downloaded to ${dir} (tensorless pull ${entry.name})`);
    }
  }
  return await pullModel(entry, options);
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // No --allow-env: behave as if unset.
  }
}
