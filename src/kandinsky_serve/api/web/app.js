// The playground: a form that becomes one native-API request, live progress, a gallery of results.

import { ApiError, cancelJob, createJob, fileToBase64, followJob, getConfig, savedKey, saveKey } from "./api.js";
import { MaskPainter } from "./mask.js";

const $ = (id) => document.getElementById(id);
const form = $("form");
const painter = new MaskPainter($("mask-base"), $("mask-canvas"), $("mask-stage"));
let running = null; // the id of the job being followed

// ---- setup --------------------------------------------------------------------------------------

async function init() {
  $("api-key").value = savedKey();
  $("api-key").addEventListener("input", (e) => saveKey(e.target.value.trim()));
  for (const radio of form.elements.task) radio.addEventListener("change", showTask);
  wireInputs();
  addFuseRow("prompt");
  addFuseRow("prompt");
  showTask();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    generate();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  $("cancel").addEventListener("click", cancel);
  try {
    applyConfig(await getConfig());
  } catch (exc) {
    showError(exc);
  }
}

// What this server's model can do: its tasks, its schedulers, the request limits.
function applyConfig(config) {
  $("model").textContent = `${config.model} · Kandinsky ${config.family}`;
  for (const radio of form.elements.task) {
    radio.closest("label").hidden = !config.tasks.includes(radio.value);
  }
  const select = $("scheduler");
  select.replaceChildren(
    ...config.schedulers.map((name) => new Option(name, name, false, name === config.default_scheduler)),
  );
  const { limits } = config;
  for (const id of ["width", "height"]) Object.assign($(id), { min: limits.min_side, max: limits.max_side });
  for (const id of ["steps", "prior-steps"]) $(id).max = limits.max_steps;
  $("num-images").max = limits.max_images;
  $("seed").max = limits.max_seed;
  $("fuse-add").dataset.max = limits.max_fuse_items;
}

function wireInputs() {
  $("strength").addEventListener("input", (e) => ($("strength-out").value = e.target.value));
  $("brush").addEventListener("input", (e) => {
    $("brush-out").value = `${e.target.value} px`;
    painter.brush = Number(e.target.value);
  });
  $("mask-clear").addEventListener("click", () => painter.clear());
  $("init-image").addEventListener("change", (e) => preview(e.target, $("init-preview")));
  $("hint-image").addEventListener("change", (e) => preview(e.target, $("hint-preview")));
  $("inpaint-image").addEventListener("change", (e) => loadInpaintImage(e.target.files[0]));
  $("fuse-add").addEventListener("click", () => addFuseRow("prompt"));
}

function currentTask() {
  return form.elements.task.value;
}

// Shows only the parts of the form the chosen task uses.
function showTask() {
  const task = currentTask();
  for (const el of form.querySelectorAll("[data-for]")) {
    el.hidden = !el.dataset.for.split(" ").includes(task);
  }
}

function preview(input, img) {
  const file = input.files[0];
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = !file;
  if (file) img.src = URL.createObjectURL(file);
}

function loadInpaintImage(file) {
  if (!file) return;
  const img = new Image();
  img.onload = () => {
    painter.load(img);
    URL.revokeObjectURL(img.src);
  };
  img.onerror = () => showError(new ApiError("file", `${file.name} is not an image this browser can open.`));
  img.src = URL.createObjectURL(file);
}

function addFuseRow(kind) {
  const list = $("fuse-list");
  const max = Number($("fuse-add").dataset.max || 8);
  if (list.children.length >= max) return;
  const row = $("fuse-row").content.firstElementChild.cloneNode(true);
  const kindSelect = row.querySelector(".fuse-kind");
  kindSelect.value = kind;
  const sync = () => {
    row.querySelector(".fuse-prompt").hidden = kindSelect.value !== "prompt";
    row.querySelector(".fuse-file").hidden = kindSelect.value !== "image";
  };
  kindSelect.addEventListener("change", sync);
  row.querySelector(".fuse-remove").addEventListener("click", () => row.remove());
  sync();
  list.append(row);
}

// ---- the request --------------------------------------------------------------------------------

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function buildRequest() {
  const task = currentTask();
  const request = {
    task,
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value || null,
    width: number("width"),
    height: number("height"),
    num_images: number("num-images"),
    steps: number("steps"),
    prior_steps: number("prior-steps"),
    guidance_scale: number("guidance"),
    prior_guidance_scale: number("prior-guidance"),
    scheduler: $("scheduler").value || null,
    seed: number("seed"),
    output_format: $("format").value,
  };
  // blank numbers fall back to the server's defaults rather than failing as null
  for (const [name, value] of Object.entries(request)) if (value === null) delete request[name];
  if (task === "img2img") {
    request.strength = Number($("strength").value);
    await attach(request, "image", $("init-image"));
  } else if (task === "inpaint") {
    if (painter.loaded) {
      if (!painter.painted) throw new ApiError("mask", "Paint over the part of the image to repaint first.");
      Object.assign(request, painter.export());
    }
  } else if (task === "controlnet") {
    await attach(request, "hint", $("hint-image"));
  } else if (task === "fuse") {
    request.prompt = "";
    request.fuse = await fuseItems();
  }
  return request;
}

async function attach(request, name, input) {
  if (input.files[0]) request[name] = await fileToBase64(input.files[0]);
}

async function fuseItems() {
  const items = [];
  for (const row of $("fuse-list").children) {
    const weight = Number(row.querySelector(".fuse-weight").value || 1);
    if (row.querySelector(".fuse-kind").value === "prompt") {
      const prompt = row.querySelector(".fuse-prompt").value.trim();
      if (prompt) items.push({ prompt, weight });
    } else {
      const file = row.querySelector(".fuse-file").files[0];
      if (file) items.push({ image: await fileToBase64(file), weight });
    }
  }
  return items;
}

// ---- running a job ------------------------------------------------------------------------------

async function generate() {
  if (running) return;
  hideError();
  setBusy(true);
  try {
    const request = await buildRequest();
    startProgress(request);
    // on a phone the progress sits below the form, out of sight
    $("progress-box").scrollIntoView({ block: "nearest", behavior: "smooth" });
    const job = await createJob(request);
    running = job.id;
    $("job-id").textContent = `job ${job.id}`;
    finish(await followJob(job.id, showProgress));
  } catch (exc) {
    showError(exc);
    $("progress-box").hidden = true;
  } finally {
    running = null;
    setBusy(false);
  }
}

async function cancel() {
  if (!running) return;
  $("cancel").disabled = true;
  $("progress-label").textContent = "Canceling…";
  try {
    await cancelJob(running); // the event stream then ends with the canceled job
  } catch (exc) {
    showError(exc);
  }
}

function finish(job) {
  if (job.state === "succeeded") {
    setProgress(1, "Done");
    addResults(job);
    $("progress-box").hidden = true;
  } else if (job.state === "canceled") {
    $("progress-label").textContent = "Canceled.";
  } else {
    const err = job.error || { code: "generation_failed", message: "The generation failed." };
    throw new ApiError(err.code, err.message);
  }
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
}

// ---- progress -----------------------------------------------------------------------------------

// The bar covers prior then decoder steps; totals start as the request's and follow the events.
const totals = { prior: 1, decoder: 1 };

function startProgress(request) {
  totals.prior = request.prior_steps || 25;
  const steps = request.steps || 50;
  totals.decoder = request.task === "img2img" ? Math.max(1, Math.floor(steps * request.strength)) : steps;
  $("job-id").textContent = "";
  $("preview").hidden = true;
  $("progress-box").hidden = false;
  setProgress(0, "Sending…");
}

function showProgress(event) {
  if (event.preview) {
    // the server may attach a small image of the work so far
    $("preview").src = event.preview;
    $("preview").hidden = false;
  }
  if (event.state === "queued" || !event.stage) {
    setProgress(0, "Queued…");
    return;
  }
  totals[event.stage] = event.total || totals[event.stage];
  const done = event.stage === "prior" ? event.step : totals.prior + event.step;
  const label = event.stage === "prior" ? "Prior" : "Decoder";
  setProgress(done / (totals.prior + totals.decoder), `${label} step ${event.step} of ${event.total}`);
}

function setProgress(fraction, label) {
  $("progress").value = Math.min(1, Math.max(0, fraction));
  $("progress-label").textContent = label;
}

// ---- results and errors -------------------------------------------------------------------------

function addResults(job) {
  $("empty").hidden = true;
  const batch = document.createElement("section");
  batch.className = "batch";
  const head = document.createElement("header");
  const seconds = job.metrics && job.metrics.total_time ? ` · ${job.metrics.total_time.toFixed(1)} s` : "";
  head.textContent = `${job.request.task} · ${job.request.width}×${job.request.height}${seconds}`;
  const id = document.createElement("span");
  id.className = "mono";
  id.dataset.testid = "result-job-id";
  id.textContent = job.id;
  head.append(" · job ", id);
  batch.append(head);
  const grid = document.createElement("div");
  grid.className = "cards";
  for (const output of job.outputs) grid.append(card(output));
  batch.append(grid);
  $("gallery").prepend(batch);
}

function card(output) {
  const node = $("result-card").content.firstElementChild.cloneNode(true);
  const ext = output.content_type.split("/")[1] || "png";
  node.querySelector("img").src = output.url;
  node.querySelector(".card-open").href = output.url;
  node.querySelector(".card-seed").textContent = `seed ${output.seed}`;
  const download = node.querySelector(".card-download");
  download.href = output.url;
  download.download = `kandinsky-${output.seed}.${ext}`;
  node.querySelector(".card-reuse").addEventListener("click", () => ($("seed").value = output.seed));
  node.querySelector(".card-copy").addEventListener("click", (e) => copyLink(output.url, e.target));
  return node;
}

async function copyLink(url, button) {
  try {
    await navigator.clipboard.writeText(url);
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy link"), 1500);
  } catch {
    // the clipboard needs https or localhost; elsewhere let the user copy it by hand
    window.prompt("Shareable link (expires):", url);
  }
}

function showError(exc) {
  const box = $("error");
  box.textContent = exc instanceof ApiError ? exc.message : `Something went wrong: ${exc.message || exc}`;
  if (exc.code === "unauthorized") {
    box.textContent += " Enter your key in the API key field at the top.";
    $("api-key").focus();
  }
  box.hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

init();
