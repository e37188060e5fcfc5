// The models page: every model the server holds (size, state and why), load, unload and make
// one the default, through the gateway's /v1/admin/models (ModelAdminService).

import { call } from "./api.js";
import { byId, compact, el, enumLabel, replace, showError, toast } from "./dom.js";

const BUSY = new Set(["MODEL_STATE_LOADING", "MODEL_STATE_UNLOADING"]);
let timer = 0;

export function initModels() {
  byId("models-refresh").addEventListener("click", refresh);
  byId("load-form").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  return { show: refresh };
}

async function refresh() {
  clearTimeout(timer);
  let reply;
  try {
    reply = await call("GET", "v1/admin/models");
  } catch (error) {
    showError(byId("models-error"), error.message);
    return;
  }
  showError(byId("models-error"), "");
  replace(byId("models-table").tBodies[0], reply.models.map(row));
  if (!reply.models.length) {
    byId("models-table").tBodies[0].append(
      el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No models loaded.")));
  }
  // Follow models that are loading or unloading while the page is shown.
  if (reply.models.some((m) => BUSY.has(m.state)) && !byId("page-models").hidden) {
    timer = setTimeout(refresh, 1500);
  }
}

// One wrapper per cell: on phones a cell is a two-column grid of its label and its content.
function cell(label, ...content) {
  return el("td", { "data-label": label }, el("div", {}, ...content));
}

function row(model) {
  const state = enumLabel(model.state, "MODEL_STATE_");
  const ready = state === "READY";
  const shape = `${model.n_layer} layers · ${model.n_head} heads · ${model.n_embd} wide · ` +
    `${model.block_size} context`;
  // A model that failed before its files were read has no kind yet: its path alone.
  const kind = enumLabel(model.source_kind, "SOURCE_KIND_").toLowerCase();
  const source = ["unspecified", "unknown"].includes(kind) ? model.source_path
    : `${kind}: ${model.source_path}`;
  return el("tr", { "data-model": model.name },
    cell("Name", el("strong", {}, model.name),
         model.is_default ? [" ", el("span", { class: "badge default" }, "default")] : null),
    cell("State", el("span", { class: `badge state-${state.toLowerCase()}` }, state),
         model.reason ? el("div", { class: "hint reason" }, model.reason) : null),
    // uint64 fields are strings in protobuf's JSON mapping
    cell("Size", Number(model.parameter_count)
      ? `${compact(Number(model.parameter_count))} parameters` : "–"),
    cell("Shape", model.n_layer ? shape : "–"),
    cell("Tokenizer", model.tokenizer || "–"),
    cell("Device", model.device ? `${model.device} · ${model.dtype}` : "–"),
    cell("Source", el("span", { class: "path" }, source)),
    cell("Requests", `${model.active_requests} running · ${model.queued_requests} waiting`),
    cell("Actions", el("div", { class: "row-actions" },
      el("a", { class: "button", href: `#playground/${encodeURIComponent(model.name)}`,
                "aria-disabled": ready ? null : "true" }, "Try it"),
      el("button", { type: "button", disabled: !ready || model.is_default,
                     onclick: () => setDefault(model.name) }, "Set default"),
      el("button", { type: "button", class: "danger", disabled: BUSY.has(model.state),
                     onclick: () => unload(model.name) }, "Unload"))));
}

async function setDefault(name) {
  try {
    await call("POST", `v1/admin/models/${encodeURIComponent(name)}:setDefault`, {});
    toast(`${name} is now the default model.`);
  } catch (error) {
    showError(byId("models-error"), error.message);
  }
  refresh();
}

async function unload(name) {
  if (!confirm(`Unload ${name}? Requests it is serving finish first.`)) return;
  const pending = call("DELETE", `v1/admin/models/${encodeURIComponent(name)}`);
  setTimeout(refresh, 300);  // shows UNLOADING while in-flight requests finish
  try {
    const reply = await pending;
    toast(`${name} unloaded (${reply.completed_requests} requests finished).`);
  } catch (error) {
    showError(byId("models-error"), error.message);
  }
  refresh();
}

async function load() {
  const body = { name: byId("load-name").value.trim(), path: byId("load-path").value.trim(),
                 set_default: byId("load-default").checked };
  for (const [field, id] of [["device", "load-device"], ["dtype", "load-dtype"]]) {
    if (byId(id).value) body[field] = byId(id).value;
  }
  if (byId("load-batch").value) body.max_batch_size = Number(byId("load-batch").value);
  const status = byId("load-status");
  status.textContent = `Loading ${body.name}…`;
  status.classList.remove("error");
  byId("load-submit").disabled = true;
  const pending = call("POST", "v1/admin/models", body);
  setTimeout(refresh, 300);  // shows LOADING while the server loads it
  try {
    const reply = await pending;
    status.textContent = `${reply.model.name} is ${enumLabel(reply.model.state, "MODEL_STATE_")}.`;
  } catch (error) {
    status.textContent = error.message;
    status.classList.add("error");
  } finally {
    byId("load-submit").disabled = false;
  }
  refresh();
}
