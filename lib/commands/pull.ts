/**
 * `tensorless pull NAME`: download a catalog model, verified, into the models folder.
 *
 * @module
 */

import { defaultModelDir, loadCatalog, pullModel } from "../catalog.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";

const help = `Usage: tensorless pull NAME [--dir DIR]

Downloads the files of a catalog model (see "tensorless models") with a
progress display on stderr. An interrupted download resumes where it stopped
(NAME.partial); each file's size and sha256 are checked before it is moved
into place, so a broken download never sits under the final name.

Options:
  --dir DIR     models folder (default: weights/ in a checkout, else
                $XDG_CACHE_HOME/tensorless or ~/.cache/tensorless)
  -h, --help    show this help

Environment:
  TENSORLESS_CATALOG   path of a catalog JSON to use instead of weights/catalog.json
`;

/** The `pull` command. */
export const command: Command = {
  name: "pull",
  summary: "download a model from the catalog (resumable, sha256-verified)",
  help,
  async run(args) {
    const { values, positionals } = parseFlags(args, { dir: { type: "string" } }, true);
    if (values.help) {
      console.log(help);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError("give exactly one model name");
    const catalog = await loadCatalog();
    const entry = catalog.find((e) => e.name === positionals[0]);
    if (!entry) {
      throw new UsageError(`unknown model "${positionals[0]}" (known: ${catalog.map((e) => e.name).join(", ")})`);
    }
    const dir = values.dir ?? defaultModelDir();
    const result = await pullModel(entry, { dir });
    console.error(`${entry.name} is ready in ${dir}`);
    console.log(result.model);
    return 0;
  },
};
