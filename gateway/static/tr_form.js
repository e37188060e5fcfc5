// The training page's form: model sizes and hyperparameters with presets, the training text
// (an uploaded file, a dataset on the server or a URL), and the JobSpec it starts a job with
// (POST /v1/train/jobs, or /v1/train/jobs:upload with the file).

import { call } from "./api.js";
import { byId, compact, el, replace, showError } from "./dom.js";

// Training settings per size; the fields follow TrainingParams in train.proto.
const TINY_TRAIN = { max_iters: 200, batch_size: 16, learning_rate: 3e-3, warmup_iters: 20,
                     eval_interval: 50, eval_iters: 10, log_interval: 5, dropout: 0 };
const SMALL_TRAIN = { max_iters: 2000, batch_size: 16, learning_rate: 1e-3, warmup_iters: 100,
                      eval_interval: 250, eval_iters: 20, log_interval: 10, dropout: 0 };
const CHAR_TRAIN = { max_iters: 5000, batch_size: 64, learning_rate: 1e-3, warmup_iters: 100,
                     eval_interval: 250, eval_iters: 20, log_interval: 10, dropout: 0.2 };
const GPT2_TRAIN = { max_iters: 5000, batch_size: 12, learning_rate: 6e-4, warmup_iters: 100,
                     eval_interval: 250, eval_iters: 20, log_interval: 10, dropout: 0 };
// Fine-tuning starts from trained weights: a small learning rate and fewer steps.
export const FINETUNE_TRAIN = { max_iters: 500, batch_size: 8, learning_rate: 3e-5,
                                warmup_iters: 50, eval_interval: 100, eval_iters: 20,
                                log_interval: 10, dropout: 0.1 };

const SIZES = {
  tiny: { label: "Tiny: seconds on a CPU", shape: [2, 2, 64, 64, "byte"], train: TINY_TRAIN },
  small: { label: "Small: minutes on a CPU", shape: [4, 4, 128, 128, "byte"],
           train: SMALL_TRAIN },
  char: { label: "Character model (nanoGPT's Shakespeare): a GPU helps",
          shape: [6, 6, 384, 256, "byte"], train: CHAR_TRAIN },
  gpt2: { label: "GPT-2 124M: GPU", shape: [12, 12, 768, 1024, "gpt2"], train: GPT2_TRAIN },
  "gpt2-medium": { label: "GPT-2 medium 350M: GPU", shape: [24, 16, 1024, 1024, "gpt2"],
                   train: GPT2_TRAIN },
  custom: { label: "Custom", shape: null, train: null },
};
const SHAPE_IDS = ["tr-n-layer", "tr-n-head", "tr-n-embd", "tr-block-size", "tr-tokenizer"];
const TRAIN_IDS = { max_iters: "tr-max-iters", batch_size: "tr-batch-size",
                    learning_rate: "tr-lr", warmup_iters: "tr-warmup",
                    eval_interval: "tr-eval-interval", eval_iters: "tr-eval-iters",
                    log_interval: "tr-log-interval", dropout: "tr-dropout",
                    gradient_accumulation_steps: "tr-accum", min_lr: "tr-min-lr",
                    weight_decay: "tr-weight-decay", grad_clip: "tr-grad-clip",
                    beta1: "tr-beta1", beta2: "tr-beta2", seed: "tr-seed",
                    num_threads: "tr-threads" };

/** A served model's name from a job's label (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`). */
export function modelName(label, fallback) {
  const slug = label.trim().replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64).replace(/-+$/, "");
  return slug || fallback;
}

function radio(name) {
  return document.querySelector(`#tr-form input[name=${name}]:checked`).value;
}

function number(id) {
  const text = byId(id).value.trim();
  return text === "" ? null : Number(text);
}

function setTraining(values) {
  for (const [field, value] of Object.entries(values)) byId(TRAIN_IDS[field]).value = value;
}

function applySize(size) {
  const preset = SIZES[size];
  if (preset.shape) {
    SHAPE_IDS.forEach((id, i) => { byId(id).value = preset.shape[i]; });
    setTraining(preset.train);
  }
  describeSize();
}

/** "≈ 0.11M parameters" for the shape in the form (GPT-2's 12·L·d² plus embeddings). */
function describeSize() {
  const [layers, , width, context] = SHAPE_IDS.slice(0, 4).map(number);
  const vocab = byId("tr-tokenizer").value === "gpt2" ? 50257 : 257;
  const note = byId("tr-preset-note");
  if (!layers || !width || !context) {
    note.textContent = "";
    return;
  }
  const params = 12 * layers * width * width + (vocab + context) * width;
  note.textContent = `≈ ${compact(params)} parameters.`;
}

function showChoice(attr, value) {
  for (const node of document.querySelectorAll(`#tr-form [data-${attr}]`)) {
    node.hidden = node.dataset[attr] !== value;
  }
}

/** Sets the form up; `onStarted(job)` runs after a job starts. */
export function initForm(onStarted) {
  replace(byId("tr-preset"), Object.entries(SIZES).map(
    ([key, preset]) => el("option", { value: key }, preset.label)));
  byId("tr-preset").addEventListener("change", () => applySize(byId("tr-preset").value));
  for (const id of SHAPE_IDS) {
    byId(id).addEventListener("input", () => {
      byId("tr-preset").value = "custom";
      describeSize();
    });
  }
  for (const input of document.querySelectorAll("#tr-form input[name=data]")) {
    input.addEventListener("change", () => showChoice("data", radio("data")));
  }
  for (const input of document.querySelectorAll("#tr-form input[name=start]")) {
    input.addEventListener("change", () => {
      const start = radio("start");
      showChoice("start", start);
      if (start === "scratch") applySize(byId("tr-preset").value);
      else setTraining(FINETUNE_TRAIN);
    });
  }
  applySize("tiny");
  byId("tr-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await start(onStarted);
  });
}

const BUSY = new Set(["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]);

/** Fills the "an earlier job" menu with ended jobs that have a checkpoint. */
export function offerJobs(jobs) {
  const select = byId("tr-from-job");
  const keep = select.value;
  replace(select, jobs.filter((job) => job.checkpoint && !BUSY.has(job.state)).map(
    (job) => el("option", { value: job.job_id }, `${job.name} (${job.job_id})`)));
  if (keep) select.value = keep;
}

function spec() {
  const name = byId("tr-name").value.trim();
  const training = { decay_lr: byId("tr-decay-lr").checked, dtype: byId("tr-dtype").value };
  for (const [field, id] of Object.entries(TRAIN_IDS)) {
    const value = number(id);
    if (value !== null) training[field] = value;
  }
  const out = { name, training, device: byId("tr-device").value,
                ranks: number("tr-ranks") || 1,
                data: { train_val_split: number("tr-split") ?? 0.1 },
                load_when_done: byId("tr-load-when-done").checked };
  if (out.load_when_done) out.model_name = modelName(name, "");
  const data = radio("data");
  if (data === "path") out.data.path = byId("tr-data-path").value.trim();
  if (data === "url") out.data.url = byId("tr-url").value.trim();
  const startFrom = radio("start");
  if (startFrom === "scratch") {
    const [n_layer, n_head, n_embd, block_size] = SHAPE_IDS.slice(0, 4).map(number);
    out.scratch = { n_layer, n_head, n_embd, block_size, tokenizer: byId("tr-tokenizer").value };
  } else if (startFrom === "checkpoint") {
    out.checkpoint_path = byId("tr-checkpoint").value.trim();
  } else {
    out.from_job_id = byId("tr-from-job").value;
  }
  return out;
}

async function start(onStarted) {
  const error = byId("tr-form-error");
  showError(error, "");
  const jobSpec = spec();
  // Said here: the server's message for an empty field names no field a person sees.
  const data = radio("data");
  if (data !== "upload" && !jobSpec.data[data]) {
    showError(error, data === "url" ? "Enter the URL of a text file."
      : "Name a dataset on the server.");
    return;
  }
  let reply;
  byId("tr-start").disabled = true;
  try {
    if (radio("data") === "upload") {
      const file = byId("tr-file").files[0];
      if (!file) {
        showError(error, "Choose a text file to train on.");
        return;
      }
      const form = new FormData();
      form.append("spec", JSON.stringify(jobSpec));
      form.append("file", file);
      reply = await call("POST", "v1/train/jobs:upload", form);
    } else {
      reply = await call("POST", "v1/train/jobs", { spec: jobSpec });
    }
  } catch (failure) {
    showError(error, failure.message);
    return;
  } finally {
    byId("tr-start").disabled = false;
  }
  onStarted(reply.job);
}
