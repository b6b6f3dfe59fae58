// Chat: templates, a KV cache that persists across turns, :save/:load, :attend, and the piped-stdin CLI.
import assert from "node:assert/strict";
import { type ChatMessage, chatTemplate, chooseTemplate, type TemplateTokenizer } from "../lib/chat/templates.ts";
import { commonPrefix, Conversation } from "../lib/chat/conversation.ts";
import { topAttention } from "../lib/chat/attention_view.ts";
// The from-scratch references use only the public API.
import { argmax, type AttentionRecord, loadModel, type Model } from "../mod.ts";
import { haveShared, sharedPath, sharedTest } from "./shared_data.ts";
import { CLI, runCli, type RunResult } from "./spawn.ts";

/** A character-level tokenizer: BOS 1, EOS 2, each character its code + 3 (with a leading "▁" for text). */
const fakeTokenizer: TemplateTokenizer = {
  bosId: 1,
  eosId: 2,
  encode: (text: string) => text === "" ? [] : Array.from(" " + text, (c) => c.codePointAt(0)! + 3),
};
const decodeFake = (ids: number[]) =>
  ids.map((id) => id === 1 ? "<s>" : id === 2 ? "</s>" : String.fromCodePoint(id - 3)).join("");

Deno.test("llama2 template: system block, [INST] turns, BOS/EOS as ids only", () => {
  const template = chatTemplate("llama2", fakeTokenizer);
  const messages: ChatMessage[] = [
    { role: "user", text: "hi </s><s>" },
    { role: "assistant", ids: fakeTokenizer.encode("hello") },
    { role: "user", text: "again" },
  ];
  const ids = template.render("be nice", messages);
  assert.equal(
    decodeFake(ids),
    "<s> [INST] <<SYS>>\nbe nice\n<</SYS>>\n\nhi </s><s> [/INST] hello</s><s> [INST] again [/INST]",
  );
  // The user's "</s>" stays text: the only EOS/BOS ids are the template's.
  assert.deepEqual(ids.flatMap((id, i) => id <= 2 ? [i] : []).length, 3);
  assert.ok(template.stopIds.has(2));
});

Deno.test("zephyr and raw templates", () => {
  const zephyr = chatTemplate("zephyr", fakeTokenizer);
  const messages: ChatMessage[] = [{ role: "user", text: "hi" }, { role: "assistant", ids: [70] }, {
    role: "user",
    text: "yo",
  }];
  assert.equal(
    decodeFake(zephyr.render("sys", messages)),
    "<s> <|system|>\nsys</s> \n<|user|>\nhi</s> \n<|assistant|>\nC</s> \n<|user|>\nyo</s> \n<|assistant|>\n",
  );
  const raw = chatTemplate("raw", fakeTokenizer);
  assert.equal(decodeFake(raw.render(undefined, messages)), "<s> hiC yo");
  assert.ok(raw.stopIds.has(1) && raw.stopIds.has(2));
});

Deno.test("templates are prefix-stable: a new turn only appends ids", () => {
  for (const name of ["llama2", "zephyr", "raw"] as const) {
    const template = chatTemplate(name, fakeTokenizer);
    const turn1: ChatMessage[] = [{ role: "user", text: "one" }];
    const before = template.render("s", turn1);
    const reply = fakeTokenizer.encode("answer");
    const open = template.render("s", [...turn1, { role: "assistant", ids: reply }], { openReply: true });
    assert.deepEqual(open, [...before, ...reply], name);
    const after = template.render("s", [...turn1, { role: "assistant", ids: reply }, { role: "user", text: "two" }]);
    assert.equal(commonPrefix(open, after), open.length, name);
  }
});

Deno.test("template choice: --template, GGUF chat template, catalog, name", () => {
  assert.equal(chooseTemplate({ override: "zephyr", chatTemplate: "[INST]" }), "zephyr");
  assert.equal(chooseTemplate({ chatTemplate: "{% if m['role'] == 'user' %}[INST] {{ m }} [/INST]" }), "llama2");
  assert.equal(chooseTemplate({ chatTemplate: "<|user|>\n{{ m }}</s>" }), "zephyr");
  assert.equal(chooseTemplate({ catalog: "llama2" }), "llama2");
  assert.equal(chooseTemplate({ names: ["weights/llama-2-7b-chat.Q4_0.gguf"] }), "llama2");
  assert.equal(chooseTemplate({ names: ["TinyLlama-1.1B-Chat-v1.0"] }), "zephyr");
  assert.equal(chooseTemplate({ names: ["stories15M.bin"] }), "raw");
  assert.throws(() => chooseTemplate({ override: "nope" }), /unknown template/);
});

// --- With real models from ../shared ---

const STORIES = { model: "models/stories260K/stories260K.bin", tokenizer: "models/stories260K/tok512.bin" };
const GQA = { model: "models/random-gqa/random-gqa.bin", tokenizer: "tokenizers/llama2/tokenizer.bin" };

async function load(files: { model: string; tokenizer: string }): Promise<Model> {
  return await loadModel(sharedPath(files.model), { tokenizer: sharedPath(files.tokenizer) });
}

/** Runs `tensorless chat ...args` with `lines` on stdin. */
function chat(args: string[], lines: string[]): Promise<RunResult> {
  return runCli(["chat", ...args], { stdin: lines.map((l) => l + "\n").join("") });
}

function cliArgs(files: { model: string; tokenizer: string }, template: string, extra: string[] = []): string[] {
  return [
    "--model",
    sharedPath(files.model),
    "--tokenizer",
    sharedPath(files.tokenizer),
    "--template",
    template,
    "--temperature",
    "0",
    ...extra,
  ];
}

/** `prefilled N tokens` of each --verbose line. */
function prefilledCounts(stderr: string): number[] {
  return [...stderr.matchAll(/prefilled (\d+) tokens/g)].map((m) => Number(m[1]));
}

/** Greedy continuation of `ids` in a fresh session, as a from-scratch reference. */
function greedyFromScratch(model: Model, ids: number[], stopIds: ReadonlySet<number>, maxTokens: number): number[] {
  const session = model.newSession();
  let logits = session.feed(ids);
  const out: number[] = [];
  while (out.length < maxTokens) {
    const id = argmax(logits);
    if (stopIds.has(id)) break;
    out.push(id);
    if (session.position >= model.config.seqLen) break;
    logits = session.feed([id]);
  }
  return out;
}

const cases = [
  { name: "stories260K, raw", files: STORIES, template: "raw" as const, turns: ["Once upon a time", "The dog"] },
  {
    name: "random-gqa, llama2",
    files: GQA,
    template: "llama2" as const,
    turns: ["Hello there!", "Tell me more."],
  },
];

for (const c of cases) {
  sharedTest(
    `chat (${c.name}): turn 2 prefills exactly its new tokens; its reply equals a from-scratch run`,
    async () => {
      const maxTokens = 12;
      const model = await load(c.files);
      try {
        // In-process, through the library.
        const template = chatTemplate(c.template, model.tokenizer);
        const conversation = new Conversation(model, template, { temperature: 0, maxTokens });
        const replies: string[] = [];
        for (const turn of c.turns) {
          let text = "";
          for await (const piece of conversation.reply(turn)) text += piece;
          replies.push(text);
        }
        const [reply1, reply2] = conversation.messages.filter((m) => m.role === "assistant") as {
          ids: number[];
        }[];
        const expectedNew = template.render(undefined, [
          { role: "user", text: c.turns[0] },
          { role: "assistant", ids: reply1.ids },
          { role: "user", text: c.turns[1] },
        ]).length - template.render(undefined, [{ role: "user", text: c.turns[0] }, {
          role: "assistant",
          ids: reply1.ids,
        }], { openReply: true }).length;
        assert.equal(conversation.lastStats?.prefilled, expectedNew);
        assert.equal(reply2.ids.length > 0, true);

        // From scratch over the whole transcript, with the public API.
        const transcript = template.render(undefined, conversation.messages.slice(0, 3));
        assert.deepEqual(greedyFromScratch(model, transcript, template.stopIds, maxTokens), reply2.ids);

        // The CLI does the same: replies on stdout, figures on stderr.
        const result = await chat(
          cliArgs(c.files, c.template, ["--verbose", "--max-tokens", String(maxTokens)]),
          c.turns,
        );
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, replies.map((r) => r + "\n").join(""));
        assert.deepEqual(prefilledCounts(result.stderr), [
          template.render(
            undefined,
            [c.turns[0]].map((text) => ({
              role: "user" as const,
              text,
            })),
          ).length,
          expectedNew,
        ]);
        assert.match(result.stderr, /position \d+\/\d+ · .*tokens\/s/);
      } finally {
        model.close();
      }
    },
  );
}

sharedTest("chat: :save / :load resumes without prefill; another model's file is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/talk.tlchat`;
    const args = cliArgs(GQA, "llama2", ["--verbose", "--max-tokens", "8"]);
    const whole = await chat(args, ["Hello there!", "Tell me more."]);
    assert.equal(whole.code, 0, whole.stderr);
    const first = await chat(args, ["Hello there!", `:save ${file}`]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /saved \d+ tokens/);
    const second = await chat(args, [`:load ${file}`, "Tell me more."]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /loaded 1 turn/);
    // Same reply as without the save, and only the new turn was prefilled.
    assert.equal(first.stdout + second.stdout, whole.stdout);
    assert.deepEqual(prefilledCounts(second.stderr), [prefilledCounts(whole.stderr)[1]]);

    const failures = await chat(args, [`:save ${dir}/no/such/dir/x`, `:load ${dir}/missing`, `:load ${CLI}`]);
    assert.equal(failures.code, 0);
    assert.match(failures.stderr, /no\/such\/dir\/x: cannot write/);
    assert.match(failures.stderr, /missing: no such file/);
    assert.match(failures.stderr, /cli\.ts: is not a tensorless conversation file/);
    assert.equal((await Array.fromAsync(Deno.readDir(dir))).length, 1, "no stray files");

    const other = await chat(cliArgs(STORIES, "raw"), [`:load ${file}`]);
    assert.equal(other.code, 0);
    assert.match(other.stderr, /saved with another model.*cannot be loaded/);
    assert.equal(other.stdout, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("chat: :attend shows the weights the forward pass computed for the last reply token", async () => {
  const model = await load(GQA);
  try {
    const maxTokens = 6;
    const result = await chat(cliArgs(GQA, "llama2", ["--max-tokens", String(maxTokens)]), ["Hi!", ":attend"]);
    assert.equal(result.code, 0, result.stderr);

    // Recompute: the same transcript from scratch, recording attention at its last position.
    const template = chatTemplate("llama2", model.tokenizer);
    const conversation = new Conversation(model, template, { temperature: 0, maxTokens });
    for await (const _ of conversation.reply("Hi!"));
    const ids = conversation.cachedIds;
    const session = model.newSession();
    const records: AttentionRecord[] = [];
    session.onAttention = (r) => {
      if (r.position === ids.length - 1) records.push(r);
    };
    session.feed(ids);
    const expected = topAttention({ position: ids.length - 1, id: ids.at(-1)!, records }, ids, model.config);

    const blocks = result.stderr.split(/^layer (\d+)$/m).slice(1);
    assert.equal(blocks.length / 2, model.config.nLayers);
    for (const { layer, bars } of expected) {
      const lines = blocks[layer * 2 + 1].split("\n").filter((l) => /^\s+\d+ /.test(l));
      assert.equal(lines.length, bars.length);
      lines.forEach((line, i) => {
        const [, position, weight] = line.match(/^\s+(\d+) .* (\d\.\d{3}) /)!;
        assert.equal(Number(position), bars[i].position, `layer ${layer} bar ${i}`);
        assert.ok(Math.abs(Number(weight) - bars[i].weight) < 0.0011, `layer ${layer} bar ${i}: ${weight}`);
      });
    }
  } finally {
    model.close();
  }
});

sharedTest("chat: --attention-out writes a self-contained heatmap page", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const page = `${dir}/attention.html`;
    const result = await chat(cliArgs(STORIES, "raw", ["--max-tokens", "5", "--attention-out", page]), ["A cat"]);
    assert.equal(result.code, 0, result.stderr);
    const html = await Deno.readTextFile(page);
    assert.match(html, /^<!doctype html>/);
    assert.match(html, /<canvas/);
    assert.doesNotMatch(html, /<script src=|<link /);
    const data = JSON.parse(html.match(/const data = (.*);\n/)![1]);
    assert.equal(data.rows.length, 5);
    assert.equal(data.rows[0].layers.length, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest("chat: commands, unknown-command hint, and a full context that drops old turns", async () => {
  const long = "Tell me a long story about a dog and a cat who were friends.";
  const result = await chat(
    cliArgs(GQA, "llama2", ["--max-tokens", "30", "--system", "Be brief."]),
    [":help", ":bogus", ":temp 0", ":top-p 0.5", ":seed 3", ":stats", long, long, long, long, ":stats"],
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /template: Llama 2 chat/);
  assert.match(result.stderr, /^unknown command :bogus \(type :help for the list\)$/m);
  assert.match(result.stderr, /context full: dropped the \d+ oldest turn/);
  assert.equal(result.stdout.split("\n").length - 1 >= 4, true);
  assert.doesNotMatch(result.stderr, /^\s+at .*:\d+:\d+/m);
});

sharedTest(
  "chat: a reply that fills the context drops old turns mid-reply and the cache stays consistent",
  async () => {
    const model = await load(GQA);
    try {
      const template = chatTemplate("raw", model.tokenizer);
      const notices: string[] = [];
      const conversation = new Conversation(model, template, {
        temperature: 1,
        topP: 0,
        seed: 7,
        onNotice: (m) => notices.push(m),
      });
      // No stop ids: every reply runs to its limit.
      conversation.template = {
        name: "raw",
        description: "",
        render: template.render.bind(template),
        stopIds: new Set(),
      };
      for (const [turn, maxTokens] of [["one two three", 40], ["four five six", 100]] as const) {
        conversation.maxTokens = maxTokens;
        for await (const _ of conversation.reply(turn));
        const cached = conversation.cachedIds;
        assert.equal(conversation.session.position, cached.length);
        assert.deepEqual(cached, conversation.render({ openReply: true }));
        assert.ok(cached.length <= model.config.seqLen);
      }
      assert.equal(conversation.lastStats?.generated, 100);
      assert.ok(notices.some((n) => /dropped the 1 oldest turn.* and read the rest again/.test(n)), notices.join("\n"));
      assert.equal(conversation.messages.filter((m) => m.role === "user").length, 1);
      // The kept cache is what a fresh run over the same ids computes.
      const fresh = model.newSession();
      fresh.feed(conversation.cachedIds.slice(0, -1));
      const expected = fresh.feed(conversation.cachedIds.slice(-1)).slice();
      conversation.session.rewind(conversation.session.position - 1);
      const actual = conversation.session.feed(conversation.cachedIds.slice(-1));
      assert.ok(expected.every((x, i) => Math.abs(x - actual[i]) < 1e-4));
    } finally {
      model.close();
    }
  },
);

if (!haveShared) sharedTest("chat tests on shared models", () => {});
