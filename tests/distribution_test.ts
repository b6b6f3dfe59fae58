// Distribution: `deno install` of cli.ts, and importing mod.ts by URL from a (loopback) web server.
import assert from "node:assert/strict";
import { haveShared, parityCases, sharedPath, sharedTest } from "./shared_data.ts";
import { run } from "./spawn.ts";

const CHECKOUT = new URL("../", import.meta.url);
const greedy = parityCases("cases.json").find((c) => c.model.endsWith("stories260K.bin") && c.temperature === 0);

sharedTest("deno install puts a working `tensorless` command in --root", async () => {
  const root = await Deno.makeTempDir({ prefix: "tensorless-install-" });
  try {
    const install = await run(Deno.execPath(), [
      "install",
      "-g",
      "-A",
      "-n",
      "tensorless",
      "--root",
      root,
      new URL("cli.ts", CHECKOUT).pathname,
    ]);
    assert.equal(install.code, 0, install.stderr);
    const bin = `${root}/bin/tensorless`;
    const help = await run(bin, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /Usage: tensorless <command>/);
    assert.match(help.stdout, /\bchat\b/);

    const c = greedy!;
    const generated = await run(bin, [
      "generate",
      "--model",
      sharedPath(c.model),
      "--tokenizer",
      sharedPath(c.tokenizer),
      "--prompt",
      c.prompt,
      "--steps",
      String(c.steps),
      "--temperature",
      "0",
    ]);
    assert.equal(generated.code, 0, generated.stderr);
    assert.equal(generated.stdout, c.expected + "\n");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** Serves the checkout's files read-only over HTTP on 127.0.0.1. */
function serveCheckout() {
  const requested: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = decodeURIComponent(new URL(request.url).pathname);
    requested.push(path);
    if (path.includes("..") || !/\.(ts|json)$/.test(path)) return new Response("not found", { status: 404 });
    try {
      const body = await Deno.readFile(new URL("." + path, CHECKOUT));
      const type = path.endsWith(".ts") ? "application/typescript" : "application/json";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { server, base: `http://127.0.0.1:${server.addr.port}`, requested };
}

sharedTest("mod.ts imported by URL generates text (fresh DENO_DIR, --allow-import)", async () => {
  const { server, base, requested } = serveCheckout();
  const work = await Deno.makeTempDir({ prefix: "tensorless-remote-" });
  try {
    const c = greedy!;
    const script = `${work}/main.ts`;
    await Deno.writeTextFile(
      script,
      `import { generate, loadModel } from "${base}/mod.ts";
const model = await loadModel(${JSON.stringify(sharedPath(c.model))}, { tokenizer: ${
        JSON.stringify(sharedPath(c.tokenizer))
      } });
let text = "";
for await (const piece of generate(model, { prompt: ${JSON.stringify(c.prompt)}, steps: ${c.steps}, temperature: 0 })) {
  text += piece;
}
model.close();
console.log(text);
`,
    );
    const host = new URL(base).host;
    const result = await run(Deno.execPath(), [
      "run",
      "--no-config",
      "--no-lock",
      `--allow-import=${host}`,
      `--allow-read=${sharedPath("")},${Deno.realPathSync(sharedPath(""))}`,
      script,
    ], { env: { DENO_DIR: `${work}/deno_dir` } });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, c.expected + "\n");
    assert.ok(requested.includes("/mod.ts"));
  } finally {
    await server.shutdown();
    await Deno.remove(work, { recursive: true });
  }
});

if (!haveShared) sharedTest("distribution tests (they generate from a shared model)", () => {});
