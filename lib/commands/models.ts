/**
 * `tensorless models`: the catalog, and which models are already downloaded.
 *
 * @module
 */

import { defaultModelDir, loadCatalog, presentFiles } from "../catalog.ts";
import { formatBytes } from "../download.ts";
import { type Command, parseFlags, useColor } from "./command.ts";

const help = `Usage: tensorless models [--dir DIR]

Lists the models "tensorless pull NAME" and "--model NAME" know, their size,
chat template, and whether they are already in the models folder.

Options:
  --dir DIR     models folder (default: weights/ in a checkout, else
                $XDG_CACHE_HOME/tensorless or ~/.cache/tensorless)
  -h, --help    show this help
`;

/** The `models` command. */
export const command: Command = {
  name: "models",
  summary: "list the model catalog and what is downloaded",
  help,
  async run(args) {
    const { values } = parseFlags(args, { dir: { type: "string" } });
    if (values.help) {
      console.log(help);
      return 0;
    }
    const dir = values.dir ?? defaultModelDir();
    const catalog = await loadCatalog();
    const color = useColor(Deno.stdout);
    const rows = [["name", "size", "template", "status", "description"]];
    for (const entry of catalog) {
      const present = await presentFiles(entry, dir);
      const have = [...present.values()].filter(Boolean).length;
      const known = entry.files.every((f) => f.size !== null);
      const size = entry.files.reduce((sum, f) => sum + (f.size ?? 0), 0);
      const status = have === entry.files.length ? "present" : have > 0 ? "partial" : "-";
      rows.push([entry.name, (known ? "" : ">") + formatBytes(size), entry.template ?? "?", status, entry.description]);
    }
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const [index, row] of rows.entries()) {
      let line = row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i])).join("  ");
      if (color && index === 0) line = `\x1b[1m${line}\x1b[0m`;
      else if (color && row[3] === "present") line = `\x1b[32m${line}\x1b[0m`;
      console.log(line);
    }
    console.error(`models folder: ${dir}`);
    return 0;
  },
};
