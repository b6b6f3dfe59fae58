/**
 * Making attention visible: a terminal chart of which earlier tokens each
 * layer's heads weighted most for one token (`:attend`), and a self-contained
 * HTML heatmap of a whole reply (`--attention-out`). The weights are the ones
 * {@link attendTo} computed in the forward pass, recorded through
 * `Session.onAttention`.
 *
 * @module
 */

import type { LlamaConfig } from "../model_file.ts";
import type { ReplyAttention, TokenAttention } from "./conversation.ts";

/** One bar of the chart: a cached position and its weight. */
export interface AttentionBar {
  /** The cached position attended to. */
  position: number;
  /** The token id at that position. */
  id: number;
  /** Its attention weight (mean over heads, or one head's). */
  weight: number;
}

/** Per layer, the `top` positions with the highest weight averaged over heads, and each head's favourite. */
export function topAttention(
  attention: TokenAttention,
  ids: readonly number[],
  config: LlamaConfig,
  top = 5,
): { layer: number; bars: AttentionBar[]; heads: AttentionBar[] }[] {
  const result = [];
  for (let layer = 0; layer < config.nLayers; layer++) {
    const records = attention.records.filter((r) => r.layer === layer).sort((a, b) => a.head - b.head);
    const mean = new Float64Array(attention.position + 1);
    for (const record of records) {
      for (let i = 0; i < record.weights.length; i++) mean[i] += record.weights[i] / records.length;
    }
    const order = Array.from(mean.keys()).sort((a, b) => mean[b] - mean[a] || a - b).slice(0, top);
    const heads = records.map((record) => {
      let best = 0;
      for (let i = 1; i < record.weights.length; i++) if (record.weights[i] > record.weights[best]) best = i;
      return { position: best, id: ids[best], weight: record.weights[best] };
    });
    result.push({ layer, bars: order.map((p) => ({ position: p, id: ids[p], weight: mean[p] })), heads });
  }
  return result;
}

/** A token as it reads in text, quoted (▁ shown as a space, control characters escaped). */
export function showPiece(piece: string): string {
  return JSON.stringify(piece.replaceAll("\u2581", " "));
}

/**
 * The `:attend` chart: for the token at `attention.position`, per layer, the
 * earlier tokens its heads attended to most (mean over heads), with bars, and
 * each head's favourite.
 */
export function attentionChart(
  attention: TokenAttention,
  ids: readonly number[],
  config: LlamaConfig,
  piece: (id: number) => string,
  options: { top?: number; width?: number; color?: boolean } = {},
): string {
  const { top = 5, width = 30, color = false } = options;
  const layers = topAttention(attention, ids, config, top);
  const labelWidth = Math.min(
    24,
    Math.max(...layers.flatMap((l) => l.bars.map((b) => showPiece(piece(b.id)).length))),
  );
  const lines = [
    `attention of ${showPiece(piece(attention.id))} at position ${attention.position}: ` +
    `per layer, the tokens its ${config.nHeads} heads weighted most (mean over heads)`,
  ];
  for (const { layer, bars, heads } of layers) {
    lines.push(color ? `\x1b[1mlayer ${layer}\x1b[0m` : `layer ${layer}`);
    for (const bar of bars) {
      const label = showPiece(piece(bar.id)).slice(0, 24).padEnd(labelWidth);
      const filled = "█".repeat(Math.round(bar.weight * width));
      const drawn = color ? `\x1b[36m${filled}\x1b[0m` : filled;
      lines.push(`  ${String(bar.position).padStart(5)} ${label} ${bar.weight.toFixed(3)} ${drawn}`);
    }
    const favourites = heads.map((h, i) => `h${i}:${h.position}`).join(" ");
    lines.push(`  heads' top positions: ${favourites}`);
  }
  return lines.join("\n");
}

/**
 * A self-contained HTML page with a heatmap of a reply's attention: one row
 * per reply token, one column per position, colour = weight (mean over heads),
 * with a layer selector. No external resources.
 */
export function attentionHtml(
  attention: ReplyAttention,
  piece: (id: number) => string,
  config: LlamaConfig,
  title = "tensorless attention",
): string {
  const round = (x: number) => Math.round(x * 10000) / 10000;
  const data = {
    title,
    nLayers: config.nLayers,
    nHeads: config.nHeads,
    tokens: attention.ids.map((id) => piece(id).replaceAll("\u2581", " ")),
    rows: attention.rows.map((row) => ({
      position: row.position,
      layers: row.layers.map((l) => Array.from(l, round)),
    })),
  };
  // "<" is escaped so token text can never close the script element.
  const json = JSON.stringify(data).replaceAll("<", "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
  #wrap { overflow: auto; max-height: 80vh; border: 1px solid #ccc; }
  canvas { display: block; image-rendering: pixelated; }
  #info { font-family: ui-monospace, monospace; min-height: 1.5em; margin: .5em 0; white-space: pre; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p>Each row is a token of the reply; each column a position it could attend to (the prompt and the reply so far).
Darker = more weight, averaged over the ${config.nHeads} heads of the chosen layer. These are the weights the
forward pass computed (<code>attendTo</code>). Hover for details.</p>
<label>layer <select id="layer"></select></label>
<div id="info"></div>
<div id="wrap"><canvas id="map"></canvas></div>
<script>
const data = ${json};
const cell = 8, labelWidth = 140;
const select = document.getElementById("layer");
select.add(new Option("mean of all layers", "all"));
for (let l = 0; l < data.nLayers; l++) select.add(new Option("layer " + l, String(l)));
const canvas = document.getElementById("map"), info = document.getElementById("info");
const columns = data.tokens.length;
function weights(row, layer) {
  if (layer !== "all") return row.layers[Number(layer)];
  const out = new Array(row.position + 1).fill(0);
  for (const l of row.layers) for (let i = 0; i < l.length; i++) out[i] += l[i] / row.layers.length;
  return out;
}
function draw() {
  const layer = select.value;
  canvas.width = labelWidth + columns * cell;
  canvas.height = data.rows.length * cell + 1;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, canvas.width, canvas.height);
  g.font = (cell + 1) + "px monospace"; g.textBaseline = "top";
  data.rows.forEach((row, r) => {
    const w = weights(row, layer);
    const max = Math.max(...w) || 1;
    g.fillStyle = "#222";
    g.fillText(JSON.stringify(data.tokens[row.position]).slice(0, 18), 2, r * cell);
    w.forEach((x, c) => {
      const v = Math.round(255 * (1 - x / max));
      g.fillStyle = "rgb(" + v + "," + v + ",255)";
      g.fillRect(labelWidth + c * cell, r * cell, cell - 1, cell - 1);
    });
  });
}
canvas.addEventListener("mousemove", (e) => {
  const r = Math.floor(e.offsetY / cell), c = Math.floor((e.offsetX - labelWidth) / cell);
  const row = data.rows[r];
  if (!row || c < 0 || c > row.position) { info.textContent = ""; return; }
  const w = weights(row, select.value)[c];
  info.textContent = "token " + row.position + " " + JSON.stringify(data.tokens[row.position]) +
    " -> position " + c + " " + JSON.stringify(data.tokens[c]) + ": " + w.toFixed(4);
});
select.addEventListener("change", draw);
draw();
</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
}
