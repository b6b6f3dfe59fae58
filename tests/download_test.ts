// The downloader against a local HTTP server: full download, resume after a cut, checksum and HTTP errors.
import assert from "node:assert/strict";
import { DownloadError, downloadFile, ProgressReporter } from "../lib/download.ts";
import { loadCatalog, resolveModel } from "../lib/catalog.ts";
import { haveShared, sharedPath, sharedTest } from "./shared_data.ts";
import { runCli, type RunResult } from "./spawn.ts";

const MODEL = "models/stories260K/stories260K.bin";
const MODEL_SHA256 = "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696";

/** A server for the model's bytes (with Range support), `extra` files by path, and HTTP errors. */
function serve(modelBytes: Uint8Array<ArrayBuffer>, extra: Record<string, Uint8Array<ArrayBuffer>> = {}) {
  const log: { path: string; range: string | null }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    const range = request.headers.get("range");
    log.push({ path, range });
    if (path === "/404") return new Response("no", { status: 404, statusText: "Not Found" });
    if (path === "/500") return new Response("oops", { status: 500, statusText: "Internal Server Error" });
    const bytes = extra[path] ?? modelBytes;
    let start = 0;
    // Under /norange/ the server ignores Range headers, as some servers do.
    const match = path.startsWith("/norange/") ? null : range?.match(/^bytes=(\d+)-$/);
    if (match) start = Number(match[1]);
    if (start >= bytes.length && match) {
      return new Response(null, { status: 416, headers: { "content-range": `bytes */${bytes.length}` } });
    }
    const body = bytes.subarray(start);
    const headers: Record<string, string> = { "content-length": String(body.length), "accept-ranges": "bytes" };
    if (match) headers["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    return new Response(body, { status: match ? 206 : 200, headers });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  return { server, base, log };
}

/**
 * A raw TCP server that really cuts the connection: the first request gets the
 * headers of the whole file and half of its bytes, then the socket closes.
 * Range requests are answered in full.
 */
function serveWithCut(bytes: Uint8Array<ArrayBuffer>) {
  const log: { path: string; range: string | null }[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const encoder = new TextEncoder();
  let first = true;
  const handle = async (conn: Deno.Conn) => {
    try {
      const buffer = new Uint8Array(4096);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buffer);
        if (n === null) return;
        head += new TextDecoder().decode(buffer.subarray(0, n));
      }
      const path = head.split(" ")[1];
      const range = head.match(/^range: *bytes=(\d+)-/im);
      log.push({ path, range: range ? `bytes=${range[1]}-` : null });
      const start = range ? Number(range[1]) : 0;
      const body = bytes.subarray(start);
      const status = range ? "206 Partial Content" : "200 OK";
      const extra = range ? `content-range: bytes ${start}-${bytes.length - 1}/${bytes.length}\r\n` : "";
      await writeAll(
        conn,
        encoder.encode(`HTTP/1.1 ${status}\r\ncontent-length: ${body.length}\r\n${extra}connection: close\r\n\r\n`),
      );
      if (!range && first) {
        first = false;
        await writeAll(conn, body.subarray(0, Math.floor(body.length / 2)));
      } else {
        await writeAll(conn, body);
      }
    } finally {
      conn.close();
    }
  };
  (async () => {
    for await (const conn of listener) handle(conn).catch(() => {});
  })().catch(() => {});
  const { port } = listener.addr as Deno.NetAddr;
  return { base: `http://127.0.0.1:${port}`, log, close: () => listener.close() };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

sharedTest("download: full file, size and sha256 verified, no partial left", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { server, base } = serve(bytes);
  const dir = await Deno.makeTempDir();
  try {
    const progress: number[] = [];
    const result = await downloadFile(`${base}/ok/model.bin`, `${dir}/model.bin`, {
      size: bytes.length,
      sha256: MODEL_SHA256,
      onProgress: (p) => progress.push(p.bytes),
    });
    assert.deepEqual(result.verified, { size: true, sha256: true });
    assert.equal(await sha256Hex(await Deno.readFile(`${dir}/model.bin`)), MODEL_SHA256);
    assert.equal(await exists(`${dir}/model.bin.partial`), false);
    assert.equal(progress.at(-1), bytes.length);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("download: resumes with a Range request after the server cuts the connection", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { close, base, log } = serveWithCut(bytes);
  const dir = await Deno.makeTempDir();
  const url = `${base}/cut/model.bin`;
  try {
    // Without retries the cut is reported and the partial file kept...
    await assert.rejects(
      downloadFile(url, `${dir}/model.bin`, { size: bytes.length, sha256: MODEL_SHA256, retries: 0 }),
      (error: Error) => error instanceof DownloadError && /interrupted/.test(error.message),
    );
    assert.equal(await exists(`${dir}/model.bin`), false);
    const kept = (await Deno.stat(`${dir}/model.bin.partial`)).size;
    assert.ok(kept > 0 && kept < bytes.length, `partial has ${kept} bytes`);
    // ...and the next run asks only for the rest.
    const result = await downloadFile(url, `${dir}/model.bin`, { size: bytes.length, sha256: MODEL_SHA256 });
    assert.equal(result.resumedFrom, kept);
    assert.equal(log.at(-1)?.range, `bytes=${kept}-`);
    assert.equal(await sha256Hex(await Deno.readFile(`${dir}/model.bin`)), MODEL_SHA256);
    assert.equal(await exists(`${dir}/model.bin.partial`), false);
  } finally {
    close();
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("download: retries by itself after a cut, resuming from the partial file", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { close, base, log } = serveWithCut(bytes);
  const dir = await Deno.makeTempDir();
  try {
    const result = await downloadFile(`${base}/cut/model.bin`, `${dir}/model.bin`, {
      size: bytes.length,
      sha256: MODEL_SHA256,
    });
    assert.ok(result.resumedFrom > 0);
    assert.equal(log.length, 2);
    assert.match(log[1].range ?? "", /^bytes=\d+-$/);
    assert.equal(await sha256Hex(await Deno.readFile(`${dir}/model.bin`)), MODEL_SHA256);
  } finally {
    close();
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("download: a stale partial file is replaced when the server ignores Range", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { server, base, log } = serve(bytes);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/model.bin.partial`, new Uint8Array(1000).fill(7));
    const result = await downloadFile(`${base}/norange/model.bin`, `${dir}/model.bin`, {
      size: bytes.length,
      sha256: MODEL_SHA256,
    });
    assert.equal(log[0].range, "bytes=1000-");
    assert.equal(result.resumedFrom, 0);
    assert.equal(await sha256Hex(await Deno.readFile(`${dir}/model.bin`)), MODEL_SHA256);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("download: a wrong checksum is rejected and nothing sits under the final name", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { server, base } = serve(bytes);
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      downloadFile(`${base}/ok/model.bin`, `${dir}/model.bin`, { size: bytes.length, sha256: "0".repeat(64) }),
      (error: Error) => error instanceof DownloadError && /sha256 mismatch/.test(error.message),
    );
    assert.equal(await exists(`${dir}/model.bin`), false);
    assert.equal(await exists(`${dir}/model.bin.partial`), false);
    // A wrong size is caught before any byte is written.
    await assert.rejects(
      downloadFile(`${base}/ok/model.bin`, `${dir}/model.bin`, { size: bytes.length + 1 }),
      /expected/,
    );
    assert.equal(await exists(`${dir}/model.bin`), false);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("download: HTTP 404 and 500, no network and unwritable folders give one-line errors", async () => {
  const { server, base } = serve(new Uint8Array(10));
  const dir = await Deno.makeTempDir();
  try {
    for (const status of [404, 500]) {
      await assert.rejects(downloadFile(`${base}/${status}`, `${dir}/x.bin`), (error: Error) => {
        assert.ok(error instanceof DownloadError);
        assert.match(error.message, new RegExp(`HTTP ${status}`));
        assert.doesNotMatch(error.message, /\n/);
        return true;
      });
      assert.equal(await exists(`${dir}/x.bin`), false);
    }
    // Nothing listens on this port once the server is gone.
    await server.shutdown();
    await assert.rejects(downloadFile(`${base}/ok/x.bin`, `${dir}/x.bin`), (error: Error) => {
      assert.ok(error instanceof DownloadError);
      assert.match(error.message, /^cannot reach 127\.0\.0\.1:\d+/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
    // A folder that cannot be created (its parent is a file).
    await Deno.writeTextFile(`${dir}/file`, "");
    await assert.rejects(downloadFile(`${base}/ok/x.bin`, `${dir}/file/sub/x.bin`), /^DownloadError: cannot write to/);
  } finally {
    await server.shutdown().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("resolveModel pulls a catalog model on first use, then finds it; paths stay paths", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { server, base, log } = serve(bytes);
  const dir = await Deno.makeTempDir();
  try {
    const catalogPath = `${dir}/catalog.json`;
    await Deno.writeTextFile(
      catalogPath,
      JSON.stringify({
        models: {
          tiny: {
            description: "test",
            format: "llama2c",
            template: "raw",
            model: "tiny.bin",
            files: [{ name: "tiny.bin", url: `${base}/ok/tiny.bin`, size: bytes.length, sha256: MODEL_SHA256 }],
          },
        },
      }),
    );
    const catalog = await loadCatalog(new URL(`file://${catalogPath}`));
    const first = await resolveModel("tiny", { dir: `${dir}/models`, catalog, progress: false });
    assert.deepEqual(first, { name: "tiny", model: `${dir}/models/tiny.bin`, tokenizer: undefined, template: "raw" });
    const requests = log.length;
    await resolveModel("tiny", { dir: `${dir}/models`, catalog, progress: false });
    assert.equal(log.length, requests, "no second download");
    assert.deepEqual(await resolveModel(sharedPath(MODEL), { catalog }), { model: sharedPath(MODEL) });
    await assert.rejects(resolveModel("no-such-model", { catalog }), /neither a file nor a catalog model/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the shipped catalog is well formed and names the default model", async () => {
  const catalog = await loadCatalog(new URL("../weights/catalog.json", import.meta.url));
  const names = catalog.map((e) => e.name);
  for (const name of ["stories15M", "stories42M", "stories110M", "tinyllama-1.1b-chat", "llama-2-7b-chat"]) {
    assert.ok(names.includes(name), name);
  }
  for (const entry of catalog) {
    for (const file of entry.files) assert.match(file.url, /^https:\/\//);
  }
});

/** Runs the CLI with a test catalog. */
function cli(args: string[], catalog: string): Promise<RunResult> {
  return runCli(args, { env: { TENSORLESS_CATALOG: catalog } });
}

sharedTest("pull and models commands: progress on stderr, verified file, listed as present, clear errors", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const { server, base } = serve(bytes);
  const dir = await Deno.makeTempDir();
  try {
    const catalog = `${dir}/catalog.json`;
    const file = (name: string, path: string, sha256 = MODEL_SHA256) => ({
      name,
      url: `${base}${path}`,
      size: bytes.length,
      sha256,
    });
    await Deno.writeTextFile(
      catalog,
      JSON.stringify({
        models: {
          tiny: { description: "test model", template: "raw", model: "tiny.bin", files: [file("tiny.bin", "/ok/t")] },
          missing: { description: "404", model: "m.bin", files: [file("m.bin", "/404")] },
          broken: { description: "500", model: "b.bin", files: [file("b.bin", "/500")] },
          corrupt: { description: "bad hash", model: "c.bin", files: [file("c.bin", "/ok/c", "1".repeat(64))] },
        },
      }),
    );
    const models = `${dir}/models`;
    const before = await cli(["models", "--dir", models], catalog);
    assert.equal(before.code, 0, before.stderr);
    assert.match(before.stdout, /^tiny\s+1\.06 MB\s+raw\s+-\s+test model$/m);

    const pulled = await cli(["pull", "tiny", "--dir", models], catalog);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(pulled.stdout, `${models}/tiny.bin\n`);
    assert.match(pulled.stderr, /tiny\.bin: 1\.06 MB, sha256 verified/);
    assert.equal(await sha256Hex(await Deno.readFile(`${models}/tiny.bin`)), MODEL_SHA256);

    const after = await cli(["models", "--dir", models], catalog);
    assert.match(after.stdout, /^tiny\s+1\.06 MB\s+raw\s+present/m);

    for (
      const [name, pattern] of [["missing", /HTTP 404/], ["broken", /HTTP 500/], [
        "corrupt",
        /sha256 mismatch/,
      ]] as const
    ) {
      const failed = await cli(["pull", name, "--dir", models], catalog);
      assert.equal(failed.code, 1, failed.stderr);
      assert.equal(failed.stderr.trimEnd().split("\n").length, 1, failed.stderr);
      assert.match(failed.stderr, pattern);
    }
    assert.deepEqual((await Array.fromAsync(Deno.readDir(models))).map((e) => e.name), ["tiny.bin"]);
    const unknown = await cli(["pull", "nope", "--dir", models], catalog);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown model "nope"/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("progress: a redrawn bar on a terminal, plain periodic lines otherwise", () => {
  const stream = (terminal: boolean) => {
    const chunks: string[] = [];
    return {
      chunks,
      isTerminal: () => terminal,
      writeSync: (bytes: Uint8Array) => (chunks.push(new TextDecoder().decode(bytes)), bytes.length),
    };
  };
  const progress = { bytes: 500_000, total: 1_000_000, resumedFrom: 0, elapsedMs: 1000, phase: "download" as const };

  const tty = stream(true);
  const bar = new ProgressReporter("model.bin", { stream: tty });
  bar.update(progress);
  bar.finish("1.00 MB, sha256 verified");
  assert.match(tty.chunks[0], /^\rmodel\.bin \[.*\] {2}50% 500 kB \/ 1\.00 MB {2}500 kB\/s {2}ETA 1s/);
  assert.equal(tty.chunks[1], "\r\x1b[Kmodel.bin: 1.00 MB, sha256 verified\n");

  const pipe = stream(false);
  const lines = new ProgressReporter("model.bin", { stream: pipe, intervalMs: 0 });
  lines.update(progress);
  lines.finish("done");
  assert.deepEqual(pipe.chunks, [
    "model.bin: 500 kB / 1.00 MB (50%), 500 kB/s, ETA 1s\n",
    "model.bin: done\n",
  ]);
  assert.ok(pipe.chunks.every((c) => !c.includes("\x1b")), "no escape codes when not a terminal");
});

sharedTest("chat with no --model pulls stories15M from the catalog on first use", async () => {
  const bytes = await Deno.readFile(sharedPath(MODEL));
  const tokenizer = await Deno.readFile(sharedPath("models/stories260K/tok512.bin"));
  const { server, base, log } = serve(bytes, { "/tokenizer.bin": tokenizer });
  const dir = await Deno.makeTempDir();
  try {
    // A stand-in catalog: "stories15M" is served by the local server (with stories260K's bytes).
    const catalog = `${dir}/catalog.json`;
    await Deno.writeTextFile(
      catalog,
      JSON.stringify({
        models: {
          stories15M: {
            description: "stand-in",
            template: "raw",
            model: "stories15M.bin",
            tokenizer: "tokenizer.bin",
            files: [
              { name: "stories15M.bin", url: `${base}/stories15M.bin`, size: bytes.length, sha256: MODEL_SHA256 },
              { name: "tokenizer.bin", url: `${base}/tokenizer.bin`, size: tokenizer.length, sha256: null },
            ],
          },
        },
      }),
    );
    const output = await runCli(["chat", "--dir", dir, "--max-tokens", "8"], {
      env: { TENSORLESS_CATALOG: catalog },
      stdin: "Once upon a time\n",
    });
    const stderr = output.stderr;
    assert.equal(output.code, 0, stderr);
    assert.ok(output.stdout.trim().length > 0);
    assert.match(stderr, /stories15M\.bin: 1\.06 MB, sha256 verified/);
    assert.match(stderr, /tokenizer\.bin: .*sha256 unknown, not verified/);
    assert.deepEqual(log.map((l) => l.path).sort(), ["/stories15M.bin", "/tokenizer.bin"]);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

if (!haveShared) sharedTest("download tests that serve a shared model", () => {});
