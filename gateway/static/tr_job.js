// One training job, live: its state, a progress bar with ETA and tokens/s, the loss chart, the
// log tail, and cancel / resume / load / delete. Follows GET /v1/train/jobs/{id}:watch (server-
// sent events: a snapshot, then state changes, steps, evaluations, checkpoints and log lines).

import { call, events, isAbort } from "./api.js";
import { byId, duration, el, enumLabel, replace, showError, toast } from "./dom.js";
import { LossChart } from "./chart.js";
import { modelName } from "./tr_form.js";

const ENDED = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                       "JOB_STATE_INTERRUPTED"]);
const ACTIVE = new Set(["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]);
const LOG_LINES = 300;

// Protobuf's JSON mapping writes 64-bit integers as strings and leaves zero values out.
const int = (value) => Number(value ?? 0);

export class JobView {
  constructor(onChange) {
    this.onChange = onChange;  // the job changed state: the list refreshes
    this.chart = new LossChart(byId("tr-chart"), byId("tr-chart-caption"));
    this.job = null;
    this.controller = null;
    byId("tr-cancel").addEventListener("click", () => this.act("cancel"));
    byId("tr-resume").addEventListener("click", () => this.act("resume"));
    byId("tr-delete").addEventListener("click", () => this.remove());
    byId("tr-load").addEventListener("click", () => this.load());
  }

  /** Shows job `jobId` and follows it until it ends (or another job is opened). */
  open(jobId) {
    this.close();
    byId("tr-job").hidden = false;
    showError(byId("tr-job-error"), "");
    replace(byId("tr-load-status"));
    this.follow(jobId);
  }

  close() {
    this.controller?.abort();
    this.controller = null;
  }

  async follow(jobId) {
    const controller = new AbortController();
    this.controller = controller;
    for (let attempt = 0; !controller.signal.aborted; attempt++) {
      try {
        for await (const message of events("GET", `v1/train/jobs/${encodeURIComponent(jobId)}:watch`,
                                           undefined, { signal: controller.signal })) {
          this.handle(message);
        }
        // The stream ends once the job has ended: the job's final record has its checkpoint.
        this.setJob((await call("GET", `v1/train/jobs/${encodeURIComponent(jobId)}`)).job);
        return;
      } catch (error) {
        if (isAbort(error)) return;
        showError(byId("tr-job-error"), `${error.message} (reconnecting…)`);
        if (error.status === 404 || error.status === 401 || error.status === 403) return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
    }
  }

  handle(message) {
    if (message.snapshot) {
      const { job, steps = [], evals = [], recent_logs: logs = [] } = message.snapshot;
      this.chart.reset();
      for (const step of steps) this.chart.addTrain(int(step.step), step.loss);
      for (const result of evals) this.chart.addVal(int(result.step), result.val_loss);
      this.lines = logs.map((line) => line.text);
      this.drawLog();
      showError(byId("tr-job-error"), "");
      this.setJob(job);
    } else if (message.state_change) {
      const change = message.state_change;
      this.setJob({ ...this.job, state: change.state, reason: change.reason,
                    step: change.step ?? this.job.step });
      this.onChange();
    } else if (message.step) {
      const step = message.step;
      this.chart.addTrain(int(step.step), step.loss);
      this.setJob({ ...this.job, step: step.step, last_step: step });
    } else if (message.eval) {
      const result = message.eval;
      this.chart.addVal(int(result.step), result.val_loss);
      this.setJob({ ...this.job, last_eval: result, best_val_loss: result.best_val_loss });
    } else if (message.checkpoint) {
      const saved = message.checkpoint;
      this.addLog(`saved the ${saved.kind} checkpoint at step ${int(saved.step)}: ${saved.path}`);
      if (saved.kind === "best" || !this.job.checkpoint) {
        this.setJob({ ...this.job, checkpoint: saved.path });
      }
    } else if (message.log) {
      this.addLog(message.log.text ?? "");
    }
  }

  setJob(job) {
    this.job = job;
    const state = job.state || "JOB_STATE_UNSPECIFIED";
    const label = enumLabel(state, "JOB_STATE_");
    byId("tr-job-title").textContent = `${job.name || job.job_id}`;
    byId("tr-job-title").title = job.job_id;
    const badge = byId("tr-job-state");
    badge.textContent = label;
    badge.className = `badge state-${label.toLowerCase()}`;
    byId("tr-job-reason").textContent = job.reason || "";
    const step = int(job.step);
    const max = int(job.max_iters) || 1;
    const progress = byId("tr-progress");
    progress.max = max;
    progress.value = Math.min(step, max);
    byId("tr-step").textContent = `${step} / ${int(job.max_iters)}`;
    const last = job.last_step;
    const running = state === "JOB_STATE_RUNNING";
    byId("tr-eta").textContent = running && last ? duration(last.eta_seconds ?? 0)
      : state === "JOB_STATE_SUCCEEDED" ? "done" : "–";
    byId("tr-tps").textContent = last ? Math.round(last.tokens_per_second ?? 0).toLocaleString()
      : "–";
    byId("tr-loss").textContent = last ? (last.loss ?? 0).toFixed(3) : "–";
    byId("tr-val").textContent = job.last_eval ? (job.last_eval.val_loss ?? 0).toFixed(3) : "–";
    byId("tr-best").textContent = job.best_val_loss !== undefined
      ? Number(job.best_val_loss).toFixed(3) : "–";
    this.buttons(state);
  }

  buttons(state) {
    const job = this.job;
    const ended = ENDED.has(state);
    byId("tr-cancel").disabled = !ACTIVE.has(state);
    byId("tr-resume").disabled = !ended;
    byId("tr-delete").disabled = !ended;
    byId("tr-load").disabled = !(ended && job.checkpoint);
    if (!byId("tr-model-name").value || byId("tr-model-name").dataset.job !== job.job_id) {
      byId("tr-model-name").value = job.loaded_model || modelName(job.name || "", job.job_id);
      byId("tr-model-name").dataset.job = job.job_id;
    }
    if (job.loaded_model) this.loaded(job.loaded_model);
  }

  addLog(text) {
    this.lines = this.lines || [];
    this.lines.push(text);
    if (this.lines.length > LOG_LINES) this.lines.splice(0, this.lines.length - LOG_LINES);
    this.drawLog();
  }

  drawLog() {
    const log = byId("tr-log");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = (this.lines || []).join("\n");
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  async act(action) {
    const id = encodeURIComponent(this.job.job_id);
    const body = {};
    const iters = byId("tr-resume-iters").value.trim();
    if (action === "resume" && iters) body.max_iters = Number(iters);
    try {
      const reply = await call("POST", `v1/train/jobs/${id}:${action}`, body);
      toast(action === "cancel" ? "Cancelling: the job saves its checkpoint first."
        : "Resumed.");
      if (action === "resume") this.open(reply.job.job_id);
      else this.setJob(reply.job);
    } catch (error) {
      showError(byId("tr-job-error"), error.message);
    }
    this.onChange();
  }

  async remove() {
    const job = this.job;
    if (!confirm(`Delete ${job.name || job.job_id} and its checkpoints?`)) return;
    try {
      await call("DELETE", `v1/train/jobs/${encodeURIComponent(job.job_id)}`);
    } catch (error) {
      showError(byId("tr-job-error"), error.message);
      return;
    }
    this.close();
    byId("tr-job").hidden = true;
    location.hash = "#training";
    this.onChange();
  }

  /** Serves the job's checkpoint (LoadModel by job id) under the name in the form. */
  async load() {
    const name = byId("tr-model-name").value.trim();
    const status = byId("tr-load-status");
    replace(status, `Loading ${name}…`);
    byId("tr-load").disabled = true;
    try {
      await call("POST", "v1/admin/models", { name, job_id: this.job.job_id });
    } catch (error) {
      replace(status);
      showError(byId("tr-job-error"), error.message);
      return;
    } finally {
      byId("tr-load").disabled = false;
    }
    this.loaded(name);
  }

  loaded(name) {
    replace(byId("tr-load-status"), `Served as ${name}. `,
            el("a", { href: `#playground/${encodeURIComponent(name)}`, id: "tr-try" },
               "Generate with it"));
  }
}
