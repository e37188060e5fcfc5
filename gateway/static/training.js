// The training page: the new-job form, the list of jobs (GET /v1/train/jobs) and the job that
// #training/<job_id> opens.

import { call } from "./api.js";
import { byId, el, enumLabel, replace, showError } from "./dom.js";
import { initForm, offerJobs } from "./tr_form.js";
import { JobView } from "./tr_job.js";

const ACTIVE = new Set(["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]);
let view = null;
let openId = "";
let timer = 0;

export function initTraining() {
  view = new JobView(() => refresh());
  initForm((job) => {
    location.hash = `#training/${encodeURIComponent(job.job_id)}`;
  });
  byId("tr-refresh").addEventListener("click", refresh);
  return { show };
}

function show(hash) {
  const id = decodeURIComponent(hash.split("/")[1] || "");
  if (id && id !== openId) {
    openId = id;
    view.open(id);
  }
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  let jobs;
  try {
    jobs = (await call("GET", "v1/train/jobs")).jobs || [];
  } catch (error) {
    showError(byId("tr-list-error"), error.message);
    return;
  }
  showError(byId("tr-list-error"), "");
  offerJobs(jobs);
  const body = byId("tr-jobs").tBodies[0];
  replace(body, jobs.slice().reverse().map(row));
  if (!jobs.length) {
    body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No jobs yet.")));
  }
  // The list follows running jobs while the page is shown (the open job streams anyway).
  if (jobs.some((job) => ACTIVE.has(job.state)) && !byId("page-training").hidden) {
    timer = setTimeout(refresh, 3000);
  }
}

function row(job) {
  const state = enumLabel(job.state, "JOB_STATE_");
  const step = Number(job.step ?? 0);
  const max = Number(job.max_iters ?? 0);
  const created = job.created_at ? new Date(job.created_at).toLocaleString() : "–";
  const open = () => {
    location.hash = `#training/${encodeURIComponent(job.job_id)}`;
  };
  return el("tr", { class: `clickable${job.job_id === openId ? " selected" : ""}`,
                    "data-job": job.job_id, tabindex: 0, onclick: open,
                    onkeydown: (event) => { if (event.key === "Enter") open(); } },
    cell("Name", el("strong", {}, job.name || "(unnamed)"),
         el("div", { class: "hint" }, job.job_id)),
    cell("State", el("span", { class: `badge state-${state.toLowerCase()}` }, state)),
    cell("Progress", `${step} / ${max}`,
         el("progress", { max: max || 1, value: Math.min(step, max) })),
    cell("Best val", job.best_val_loss !== undefined ? Number(job.best_val_loss).toFixed(3)
      : "–"),
    cell("Created", created));
}

// One wrapper per cell: on phones a cell is a two-column grid of its label and its content.
function cell(label, ...content) {
  return el("td", { "data-label": label }, el("div", {}, ...content));
}
