/**
 * `tensorless chat`: a conversation that keeps its KV cache across turns.
 *
 * @module
 */

import { DEFAULT_MODEL, resolveModel } from "../catalog.ts";
import { Conversation } from "../chat/conversation.ts";
import { runRepl } from "../chat/repl.ts";
import { chatTemplate, chooseTemplate, isTemplateName, TEMPLATE_NAMES } from "../chat/templates.ts";
import { loadModel } from "../model.ts";
import {
  type Command,
  KERNEL_FLAGS,
  KERNEL_FLAGS_HELP,
  kernelOptions,
  numberFlag,
  parseFlags,
  UsageError,
} from "./command.ts";

const help = `Usage: tensorless chat [options]

Chats with a model. The KV cache persists across turns: each turn feeds only
its new tokens. Replies stream as they are generated.

On a terminal: line editing and history; Ctrl-C stops a reply, Ctrl-C at an
empty prompt or Ctrl-D leaves. With input from a pipe or file, each line is
one user turn, only the replies go to stdout, and chat ends with the input.

Options:
  -m, --model M          catalog name (downloaded on first use) or a model path
                         (default: ${DEFAULT_MODEL})
  -t, --tokenizer PATH   tokenizer file, when the model has none
      --system TEXT      system prompt
      --template NAME    ${TEMPLATE_NAMES.join(", ")} (default: from the model's chat template or name)
      --temperature T    0 = greedy (default 0.8)
      --top-p P          nucleus sampling threshold, 0..1 (default 0.9)
  -s, --seed S           random seed, a positive integer (default: the current time)
  -n, --max-tokens N     most tokens per reply (default 256)
  -v, --verbose          after each reply, on stderr: position / context, tokens
                         prefilled and generated, time to first token, tokens/s
      --attention-out F  write a heatmap page (HTML) of each reply's attention to F
      --dir DIR          models folder for catalog names
${KERNEL_FLAGS_HELP}
  -h, --help             show this help

Commands inside the chat: :help :reset :system :temp :top-p :seed :stats :attend
:save FILE :load FILE :quit
`;

/** The `chat` command. */
export const command: Command = {
  name: "chat",
  summary: "chat with a model; the KV cache persists across turns",
  help,
  async run(args) {
    const { values } = parseFlags(args, {
      model: { type: "string", short: "m" },
      tokenizer: { type: "string", short: "t" },
      system: { type: "string" },
      template: { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string", short: "s" },
      "max-tokens": { type: "string", short: "n" },
      verbose: { type: "boolean", short: "v" },
      "attention-out": { type: "string" },
      dir: { type: "string" },
      ...KERNEL_FLAGS,
    });
    if (values.help) {
      console.log(help);
      return 0;
    }
    const temperature = numberFlag("temperature", values.temperature, 0.8, { min: 0 });
    const topP = numberFlag("top-p", values["top-p"], 0.9, { min: 0, max: 1 });
    const seed = numberFlag("seed", values.seed, Math.floor(Date.now() / 1000), {
      min: 1,
      max: Number.MAX_SAFE_INTEGER,
      integer: true,
    });
    const maxTokens = numberFlag("max-tokens", values["max-tokens"], 256, { min: 1, integer: true });
    if (values.template !== undefined && !isTemplateName(values.template)) {
      throw new UsageError(`--template must be one of ${TEMPLATE_NAMES.join(", ")}, got "${values.template}"`);
    }

    const kernels = kernelOptions(values);
    const resolved = await resolveModel(values.model ?? DEFAULT_MODEL, { dir: values.dir });
    const model = await loadModel(resolved.model, { tokenizer: values.tokenizer ?? resolved.tokenizer, ...kernels });
    try {
      const modelName = resolved.name ?? resolved.model.split("/").filter(Boolean).at(-1) ?? resolved.model;
      const templateName = chooseTemplate({
        override: values.template,
        chatTemplate: model.file.chatTemplate,
        catalog: resolved.template,
        names: [resolved.name, model.file.name, resolved.model],
      });
      const conversation = new Conversation(model, chatTemplate(templateName, model.tokenizer), {
        system: values.system,
        temperature,
        topP,
        seed,
        maxTokens,
        onNotice: (message) => console.error(message),
      });
      conversation.recordReplyAttention = values["attention-out"] !== undefined;
      return await runRepl(conversation, {
        modelName,
        verbose: values.verbose,
        attentionOut: values["attention-out"],
      });
    } finally {
      model.close();
    }
  },
};
