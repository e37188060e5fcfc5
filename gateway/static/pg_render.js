// What the playground shows of a generation: the text of each choice as it streams in (with a
// log-probability tooltip per token when asked), and the usage and speed figures.

import { append, byId, el, replace } from "./dom.js";

/** The text of each choice; `makeBox(index)` makes the element a choice streams into. */
export class Outputs {
  constructor(makeBox, choices) {
    this.makeBox = makeBox;
    this.boxes = new Map();
    this.texts = new Map();
    this.finish = new Map();
    for (let i = 0; i < choices; i++) this.box(i);
  }

  box(index) {
    if (!this.boxes.has(index)) {
      this.boxes.set(index, this.makeBox(index));
      this.texts.set(index, "");
    }
    return this.boxes.get(index);
  }

  /** Appends `text` to choice `index`; `tokens` are [token, logprob, alternatives] when known
   * (alternatives: [token, logprob] pairs, most likely first). */
  add(index, text, tokens = null) {
    if (!text) return;
    const box = this.box(index);
    this.texts.set(index, this.texts.get(index) + text);
    const spans = tokens && alignTokens(tokens, text);
    if (spans) {
      for (const [token, logprob, alternatives] of spans) {
        append(box, el("span", { class: "tok", title: logprobTitle(logprob, alternatives) },
                       token));
      }
    } else if (box.lastChild && box.lastChild.nodeType === Node.TEXT_NODE) {
      box.lastChild.appendData(text);
    } else {
      append(box, text);
    }
  }

  text(index) {
    return this.texts.get(index) || "";
  }

  /** No choice received any text (a refused request). */
  empty() {
    return ![...this.texts.values()].some(Boolean);
  }

  end(index, reason) {
    if (reason) this.finish.set(index, reason);
  }

  /** "length", or "stop, length" when the choices ended differently. */
  finishReasons() {
    return [...new Set(this.finish.values())].join(", ");
  }
}

/** The [token, logprob] pairs that spell `text`, or null when they do not. A chat reply's
 * leading whitespace (Python's idea of it, which JavaScript's trim() does not share) is
 * trimmed while its tokens keep it: that many characters are cut from the first tokens (a
 * token left empty is dropped). */
export function alignTokens(tokens, text) {
  if (!tokens.length) return null;
  const joined = tokens.map((t) => t[0]).join("");
  if (!joined.endsWith(text)) return null;
  let cut = joined.length - text.length;
  const out = [];
  for (const [token, logprob, alternatives] of tokens) {
    const drop = Math.min(cut, token.length);
    cut -= drop;
    if (token.length > drop) out.push([token.slice(drop), logprob, alternatives]);
  }
  return out;
}

function logprobTitle(logprob, alternatives = []) {
  if (typeof logprob !== "number") return null;
  const title = `log-probability ${logprob.toFixed(3)} (p = ${Math.exp(logprob).toFixed(3)})`;
  if (!alternatives?.length) return title;
  const best = alternatives.map(([t, lp]) => `${JSON.stringify(t)} ${Math.exp(lp).toFixed(3)}`);
  return `${title}\nmost likely: ${best.join(", ")}`;
}

/** A completion box in `container`, labelled when there are several choices. */
export function completionBox(container, index, labelled) {
  const text = el("div", { class: "output-text", "data-choice": index });
  append(container, el("div", { class: "output" },
                       labelled ? el("div", { class: "output-label" }, `Choice ${index + 1}`)
                         : null,
                       text));
  return text;
}

/** The usage and speed panel. */
export class Stats {
  start() {
    this.t0 = performance.now();
    this.first = null;
    this.pieces = 0;
    for (const id of ["stat-prompt", "stat-completion", "stat-total", "stat-speed",
      "stat-ttft", "stat-finish"]) byId(id).textContent = "–";
    byId("stat-finish").textContent = "running…";
  }

  /** A piece of text arrived (live figures until the usage is known). */
  piece() {
    const now = performance.now();
    if (this.first === null) {
      this.first = now;
      byId("stat-ttft").textContent = `${Math.round(now - this.t0)} ms`;
    }
    this.pieces += 1;
    byId("stat-completion").textContent = `${this.pieces} so far`;
  }

  /** The request ended: `usage` is OpenAI's usage object (null when stopped early). */
  done(usage, finish) {
    const seconds = (performance.now() - this.t0) / 1000;
    if (usage) {
      byId("stat-prompt").textContent = `${usage.prompt_tokens} tokens`;
      byId("stat-completion").textContent = `${usage.completion_tokens} tokens`;
      byId("stat-total").textContent = `${usage.total_tokens} tokens`;
      byId("stat-speed").textContent = seconds > 0
        ? `${(usage.completion_tokens / seconds).toFixed(1)} tokens/s` : "–";
    } else if (this.pieces) {
      byId("stat-completion").textContent = `${this.pieces} pieces received`;
      byId("stat-speed").textContent = `${(this.pieces / seconds).toFixed(1)} pieces/s`;
    }
    if (this.first === null && usage) {
      byId("stat-ttft").textContent = `${Math.round(seconds * 1000)} ms`;
    }
    byId("stat-finish").textContent = `${finish || "–"} · ${seconds.toFixed(2)} s`;
  }
}

/** A chat message bubble; returns its text element (which streams into). */
export function chatBubble(transcript, role, text = "", note = "") {
  const body = el("div", { class: "msg-text" }, text);
  const who = role === "user" ? "You" : role === "assistant" ? "Assistant" : role;
  append(transcript, el("div", { class: `msg ${role}${note ? " alt" : ""}` },
                        el("div", { class: "msg-role" }, note ? `${who} (${note})` : who),
                        body));
  transcript.scrollTop = transcript.scrollHeight;
  return body;
}

/** Draws the whole conversation again (after Regenerate removed the last reply). */
export function drawTranscript(transcript, messages) {
  replace(transcript);
  for (const message of messages) chatBubble(transcript, message.role, message.content);
}
