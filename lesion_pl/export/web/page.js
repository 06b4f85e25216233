// The page's behaviour in both modes: "service" sends images to POST /predict of `cli.py serve`; "offline"
// runs model.onnx here with onnxruntime-web (files from `cli.py export --web`). Both render the same rows.
import { OUTSIDE, Policy, imageWarning, onnxMetadata, promiseText, resizeCenterCrop, rgbaToRgb, ttaViews } from "./lesion.js";

const mode = document.querySelector('meta[name="lesion-pl-mode"]').content;
const $ = (id) => document.getElementById(id);
let policy = null, runLocally = null;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function authHeaders() {
  const token = sessionStorage.getItem("lesion-pl-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function detail(response) {
  try { return (await response.json()).detail || response.statusText; } catch { return response.statusText; }
}

function showModel(describe) {
  $("model").textContent = `${describe}; classes ${policy.classes.join(", ")}; ${policy.size} px`
    + (policy.tta ? ", each image scored as the mean of its 8 flips/rotations" : "");
  if (policy.clinical) {
    for (const [id, values] of [["sex", policy.clinical.sexes], ["site", policy.clinical.sites]]) {
      for (const v of values) $(id).append(new Option(v, v));
    }
    $("clinical").hidden = false;
  }
}

async function startService() {
  $("where").textContent = "Images are sent to this server, scored there, and not stored.";
  const response = await fetch("model", { headers: authHeaders() });
  if (response.status === 401) {
    $("tokenbox").hidden = false;
    status("This server needs a token.", true);
    return;
  }
  if (!response.ok) throw new Error(await detail(response));
  const info = await response.json();
  policy = new Policy(info.metadata_props);
  showModel(`${info.model.file} (sha256 ${info.model.sha256.slice(0, 12)}, lesion-pl ${info.model.exported_with})`);
  status("Ready.");
}

async function startOffline() {
  $("where").textContent = "The model runs in this browser: images never leave this device.";
  const bytes = new Uint8Array(await (await fetch("model.onnx")).arrayBuffer());
  policy = new Policy(onnxMetadata(bytes));
  const ort = await import("./ort/ort.wasm.bundle.min.mjs");
  // the glue is inside the bundle: only the WebAssembly file is fetched, from beside it
  ort.env.wasm.wasmPaths = { wasm: new URL("./ort/ort-wasm-simd-threaded.wasm", location.href).href };
  if (!self.crossOriginIsolated) ort.env.wasm.numThreads = 1;  // threads need COOP/COEP headers
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  runLocally = async (rgb) => {
    const s = policy.size, views = policy.tta ? ttaViews(rgb, s) : [rgb];
    const data = new Uint8Array(views.length * rgb.length);
    views.forEach((v, i) => data.set(v, i * rgb.length));
    const out = await session.run({ images: new ort.Tensor("uint8", data, [views.length, s, s, 3]) });
    const probs = out.probabilities.data, C = policy.classes.length;
    return { probs: views.map((_, i) => Array.from(probs.subarray(i * C, (i + 1) * C))),
             ood: out.ood_score ? Array.from(out.ood_score.data) : null };
  };
  showModel(`model.onnx (lesion-pl ${policy.version}), run by onnxruntime-web`);
  status("Ready.");
}

function metadataRecord() {
  if (!policy.clinical) return null;
  const record = { age: $("age").value, sex: $("sex").value, site: $("site").value };
  return Object.values(record).some((v) => v !== "") ? record : null;
}

async function decode(file) {
  // the file's own pixels: no colour management, EXIF orientation applied (as Pillow's exif_transpose)
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none",
                                                 imageOrientation: "from-image" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { colorSpace: "srgb" });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return { rgb: rgbaToRgb(rgba), width: bitmap.width, height: bitmap.height };
}

async function predictOffline(files, record) {
  const rows = [];
  for (const file of files) {
    let image;
    try { image = await decode(file); } catch { throw new Error(`${file.name}: not an image this browser can read`); }
    const rgb = resizeCenterCrop(image.rgb, image.width, image.height, policy.size);
    const out = await runLocally(rgb);
    const row = policy.apply(out.probs, record, file.name, out.ood);
    row.warning = imageWarning(image.width, image.height, policy.size, rgb);
    rows.push(row);
  }
  return rows;
}

async function predictService(files, record) {
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  for (const [k, v] of Object.entries(record || {})) if (v !== "") form.append(k, v);
  const response = await fetch("predict", { method: "POST", body: form, headers: authHeaders() });
  if (!response.ok) throw new Error(`${response.status}: ${await detail(response)}`);
  return (await response.json()).predictions;
}

function bar(label, value, cls = "", marker = null) {
  const div = document.createElement("div");
  div.className = `bar ${cls}`;
  const pct = Math.max(0, Math.min(1, value)) * 100;
  div.innerHTML = `<span class="name"></span><span class="track"><span class="fill" style="width:${pct}%"></span>`
    + (marker === null ? "" : `<span class="marker" style="left:${marker * 100}%"></span>`)
    + `</span><span class="num">${value.toFixed(3)}</span>`;
  div.querySelector(".name").textContent = label;
  return div;
}

function render(row, file) {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.row = JSON.stringify(row);
  const img = document.createElement("img");
  img.src = URL.createObjectURL(file);
  img.alt = row.file;
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("div");
  const top = policy.displayNames[policy.classes.indexOf(row.top_class)] || row.top_class;
  title.innerHTML = "<b></b> <span class=small></span>";
  title.querySelector("b").textContent = row.outside ? OUTSIDE[0].toUpperCase() + OUTSIDE.slice(1)
    : `${top} (${row.top_class})`;
  title.querySelector("span").textContent = `${row.file}${row.metadata === "yes" ? ", with clinical metadata" : ""}`;
  body.append(title);
  if (row.warning) {  // tiny or blank: said before any figure
    const caution = document.createElement("div");
    caution.className = "warning";
    caution.textContent = `Do not trust this prediction: ${row.warning}.`;
    body.append(caution);
  }
  if (row.outside) {  // no class, no referral: the probabilities stay, marked
    const refusal = document.createElement("div");
    refusal.className = "outside";
    refusal.textContent = `No diagnosis and no referral: this image is ${OUTSIDE} (its out-of-distribution score `
      + `${row.ood_score.toFixed(1)} is above ${policy.ood.threshold.toFixed(1)}, the threshold that `
      + `${Math.round(policy.ood.share * 100)}% of validation's dermoscopic images pass). The probabilities below `
      + "mean nothing for it.";
    body.append(refusal);
  }
  policy.classes.forEach((c, i) => {
    body.append(bar(`${policy.displayNames[i]} (${c})`, row[`p_${c}`], c === row.top_class ? "top" : ""));
  });
  const threshold = policy.threshold("malignant", row.metadata === "yes");
  body.append(bar("malignancy", row.malignancy, "malignancy", row.outside ? null : threshold));
  if (threshold !== null && !row.outside) {
    const p = document.createElement("div");
    p.className = row.referral === "refer" ? "refer" : "norefer";
    const op = (row.metadata === "yes" && policy.clinical ? policy.points : policy.pointsImageOnly).malignant;
    const promise = op.target_sensitivity === undefined ? "" : `: ${promiseText(op)}`;
    p.textContent = `${row.referral === "refer" ? "Refer" : "No referral at this threshold"}: malignancy `
      + `${row.malignancy.toFixed(3)} against the threshold ${threshold.toFixed(3)}${promise}.`;
    body.append(p);
  }
  card.append(img, body);
  return card;
}

async function handle(files) {
  files = [...files];
  if (!files.length || !policy) return;
  status(`Scoring ${files.length} image(s) ...`);
  try {
    const record = metadataRecord();
    const rows = mode === "service" ? await predictService(files, record) : await predictOffline(files, record);
    rows.forEach((row, i) => $("results").prepend(render(row, files[i])));
    status(`Scored ${rows.length} image(s).`);
  } catch (e) {
    status(String(e.message || e), true);
  }
}

$("files").addEventListener("change", (e) => handle(e.target.files));
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").classList.remove("over");
  handle(e.dataTransfer.files);
});
$("tokenok").addEventListener("click", () => {
  sessionStorage.setItem("lesion-pl-token", $("token").value);
  $("tokenbox").hidden = true;
  start();
});

async function start() {
  try {
    await (mode === "service" ? startService() : startOffline());
    document.body.dataset.ready = "true";
  } catch (e) {
    status(`Could not load the model: ${e.message || e}`, true);
  }
}
start();
