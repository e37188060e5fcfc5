// The playground: completions and chat through /v1/completions and /v1/chat/completions,
// streamed as server-sent events (fetch + ReadableStream) so tokens show as they arrive.

import { call, events, isAbort } from "./api.js";
import { byId, el, replace, showError } from "./dom.js";
import { chatBubble, completionBox, drawTranscript, Outputs, Stats } from "./pg_render.js";

// Tokens shown with each token's log-probability (on hover) when logprobs is ticked.
const ALTERNATIVES = 3;

const NUMBER_KNOBS = {
  max_tokens: "pg-max-tokens", temperature: "pg-temperature", top_p: "pg-top-p",
  top_k: "pg-top-k", presence_penalty: "pg-presence", frequency_penalty: "pg-frequency",
  repetition_penalty: "pg-repetition", n: "pg-n", seed: "pg-seed",
};
// Error params the server names that are shown by another control.
const PARAM_CONTROLS = { ...NUMBER_KNOBS, stop: "pg-stop", prompt: "pg-prompt",
  messages: "pg-user", model: "pg-model", max_completion_tokens: "pg-max-tokens" };

const state = {
  mode: "completion",
  controller: null,  // AbortController of the request in flight
  last: null,        // the last request's mode and body, for Regenerate
  chat: [],          // the conversation: [{role, content}], the system message apart
};
const stats = new Stats();

export function initPlayground() {
  for (const knob of document.querySelectorAll("#pg-form .knob")) linkSlider(knob);
  for (const radio of document.querySelectorAll("#pg-form input[name=mode]")) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  byId("pg-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generate(false);
  });
  for (const id of ["pg-prompt", "pg-user"]) {
    byId(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        generate(false);
      }
    });
  }
  byId("pg-stop-button").addEventListener("click", () => state.controller?.abort());
  byId("pg-regenerate").addEventListener("click", () => generate(true));
  byId("pg-clear").addEventListener("click", clear);
  return { show: (hash) => loadModels(decodeURIComponent(hash.split("/")[1] || "")) };
}

/** The range slider next to each number input follows it, and the other way round. */
function linkSlider(knob) {
  const [number, range] = knob.querySelectorAll("input");
  number.addEventListener("input", () => {
    if (number.value !== "") range.value = number.value;
  });
  range.addEventListener("input", () => {
    number.value = range.value;
  });
}

function setMode(mode) {
  state.mode = mode;
  byId("pg-completion").hidden = mode !== "completion";
  byId("pg-chat").hidden = mode !== "chat";
  byId("pg-echo-row").hidden = mode !== "completion";
  byId("pg-generate").textContent = mode === "chat" ? "Send" : "Generate";
  byId("pg-regenerate").disabled = true;
  state.last = null;
}

/** Fills the model menu from GET /v1/models, keeping the choice (or selecting `wanted`). */
async function loadModels(wanted) {
  const select = byId("pg-model");
  const keep = wanted || select.value;
  if (keep && ![...select.options].some((option) => option.value === keep)) {
    select.append(el("option", { value: keep }, keep));  // selectable before the list comes
  }
  select.value = keep;
  let ids = [];
  try {
    ids = (await call("GET", "v1/models")).data.map((m) => m.id);
  } catch {
    // listing needs the admin key on a server with keys; the default model still works
  }
  if (keep && !ids.includes(keep)) ids.push(keep);
  replace(select, el("option", { value: "" }, "server default"),
          ids.map((id) => el("option", { value: id }, id)));
  select.value = keep;
}

function stopList() {
  return byId("pg-stop").value.split("\n").filter((line) => line !== "")
    .map((line) => line.replaceAll("\\n", "\n").replaceAll("\\t", "\t"));
}

/** The label of a control, for messages: "Temperature" (its hint left out). */
function labelOf(input) {
  return (input.labels?.[0]?.firstChild?.textContent || input.name).trim();
}

/** A number box holding text that is not a number reads as empty, which would silently send
 * the server's default instead: name that control. Ranges are the server's to check (the form
 * is `novalidate`): the button and Ctrl+Enter behave alike, and its message names the limit. */
function unreadableKnob() {
  return Object.values(NUMBER_KNOBS).map(byId).find((input) => input.validity.badInput);
}

/** The sampling fields both endpoints share, as the controls set them. */
function sampling() {
  const body = {};
  for (const [field, id] of Object.entries(NUMBER_KNOBS)) {
    const text = byId(id).value.trim();
    if (text !== "") body[field] = Number(text);
  }
  const stop = stopList();
  if (stop.length) body.stop = stop;
  body.stop_at_eos = byId("pg-stop-at-eos").checked;
  body.stream = byId("pg-stream").checked;
  if (body.stream) body.stream_options = { include_usage: true };
  return body;
}

function completionBody() {
  const body = { model: byId("pg-model").value, prompt: byId("pg-prompt").value, ...sampling() };
  if (byId("pg-logprobs").checked) body.logprobs = ALTERNATIVES;
  if (byId("pg-echo").checked) body.echo = true;
  if (body.echo && body.logprobs !== undefined) {  // scores the prompt: answered in one piece
    body.stream = false;
    delete body.stream_options;
  }
  return body;
}

function chatBody() {
  const system = byId("pg-system").value.trim();
  const messages = system ? [{ role: "system", content: system }] : [];
  const body = { model: byId("pg-model").value, messages: [...messages, ...state.chat],
                 ...sampling() };
  if (byId("pg-logprobs").checked) Object.assign(body, { logprobs: true, top_logprobs: ALTERNATIVES });
  return body;
}

/** Generate (or Send); `again` repeats the last request (Regenerate). */
async function generate(again) {
  if (state.controller) return;
  const bad = unreadableKnob();
  if (bad) {
    clearInvalid();
    showError(byId("pg-error"), `${labelOf(bad)}: enter a number (${bad.name}).`);
    bad.classList.add("invalid");
    bad.focus();
    return;
  }
  if (state.mode === "chat") {
    if (!prepareChat(again)) return;
    await run("v1/chat/completions", chatBody());
  } else {
    const body = again && state.last ? state.last.body : completionBody();
    await run("v1/completions", body);
  }
}

/** Adds the user's message to the conversation (or, for Regenerate, drops the last reply). */
function prepareChat(again) {
  const input = byId("pg-user");
  const text = input.value.trim();
  if (again) {
    while (state.chat.length && state.chat.at(-1).role === "assistant") state.chat.pop();
  } else if (text) {
    state.chat.push({ role: "user", content: text });
    input.value = "";
  }
  if (!state.chat.length || state.chat.at(-1).role !== "user") {
    showError(byId("pg-error"), "Write a message first.");
    return false;
  }
  drawTranscript(byId("pg-transcript"), state.chat);
  return true;
}

function outputsFor(body) {
  const choices = body.n || 1;
  if (state.mode === "chat") {
    const transcript = byId("pg-transcript");
    return new Outputs((i) => chatBubble(transcript, "assistant", "",
                                         i > 0 ? `choice ${i + 1}` : ""), choices);
  }
  const container = byId("pg-outputs");
  replace(container);
  return new Outputs((i) => completionBox(container, i, choices > 1), choices);
}

async function run(path, body) {
  const mode = state.mode;
  clearInvalid();
  showError(byId("pg-error"), "");
  state.last = { mode: state.mode, body };
  state.controller = new AbortController();
  setRunning(true);
  const outputs = outputsFor(body);
  stats.start();
  let usage = null;
  let stopped = false;
  let failed = false;
  try {
    if (body.stream) {
      for await (const chunk of events("POST", path, body,
                                       { signal: state.controller.signal })) {
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) show(outputs, choice);
      }
    } else {
      const reply = await call("POST", path, body, { signal: state.controller.signal });
      usage = reply.usage;
      for (const choice of reply.choices) show(outputs, choice);
    }
  } catch (error) {
    if (isAbort(error)) {
      stopped = true;
    } else {
      failed = true;
      fail(error);
    }
  } finally {
    state.controller = null;
    setRunning(false);
  }
  stats.done(usage, stopped ? "stopped" : failed ? "error" : outputs.finishReasons());
  if (mode === "completion" && failed && outputs.empty()) {
    replace(byId("pg-outputs"));  // no empty "Choice 1…n" boxes under the error
  }
  if (mode === "chat") {
    if (outputs.text(0)) state.chat.push({ role: "assistant", content: outputs.text(0) });
    else drawTranscript(byId("pg-transcript"), state.chat);  // no empty reply bubble
  }
}

/** One choice of a chunk (or of a whole response) into its box. */
function show(outputs, choice) {
  const index = choice.index ?? 0;
  let text = "";
  let tokens = null;
  if (choice.delta !== undefined || choice.message !== undefined) {  // chat
    text = (choice.delta || choice.message).content || "";
    if (choice.logprobs?.content) {
      tokens = choice.logprobs.content.map((t) => [t.token, t.logprob,
        t.top_logprobs.map((a) => [a.token, a.logprob])]);
    }
  } else {
    text = choice.text || "";
    const lp = choice.logprobs;
    if (lp?.tokens) {
      tokens = lp.tokens.map((t, i) => [t, lp.token_logprobs[i],
        Object.entries(lp.top_logprobs[i] || {}).sort((a, b) => b[1] - a[1])]);
    }
  }
  if (text) {
    stats.piece();
    outputs.add(index, text, tokens);
  }
  outputs.end(index, choice.finish_reason);
}

function fail(error) {
  const param = error.param ? ` (${error.param})` : "";
  showError(byId("pg-error"), `${error.message}${param}`);
  const id = PARAM_CONTROLS[error.param];
  if (id) byId(id).classList.add("invalid");
}

function clearInvalid() {
  for (const node of document.querySelectorAll("#pg-form .invalid")) {
    node.classList.remove("invalid");
  }
}

function setRunning(running) {
  byId("pg-generate").disabled = running;
  byId("pg-stop-button").disabled = !running;
  byId("pg-regenerate").disabled = running || !state.last;
}

function clear() {
  state.controller?.abort();
  state.chat = [];
  state.last = null;
  replace(byId("pg-outputs"));
  replace(byId("pg-transcript"));
  showError(byId("pg-error"), "");
  byId("pg-regenerate").disabled = true;
}
