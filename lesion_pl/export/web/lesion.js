// The torch-free runtime (lesion_pl/export/runtime.py) in the browser: the same preprocessing, views and scoring,
// read from the model file's own metadata. No network, no dependencies; onnxruntime-web runs the graph.
//
// Exact ports, so the page shows what Python shows (tests/test_web.py checks both to 1e-4 on real images):
//   resizeCenterCrop  lesion_pl/preprocess.py resize_center_crop: Pillow's antialiased bilinear resize
//                     (Resample.c: precompute_coeffs, 22-bit fixed-point passes, horizontal then vertical)
//   ttaViews          lesion_pl/preprocess.py dihedral_views: the 4 turns of np.rot90, then each mirrored
//   Policy            lesion_pl/scoring.py ScoringPolicy.apply and lesion_pl/clinical.py (metadata fusion)
//   rows              runtime.Predictions.rows (the JSON `predict --out x.json` and the service return)

const PRECISION_BITS = 32 - 8 - 2;

function bilinearCoefficients(inSize, outSize) {
  // Pillow's precompute_coeffs for the bilinear filter (support 1), then normalize_coeffs_8bpc
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      let t = (x + xmin - center + 0.5) * ss;
      if (t < 0) t = -t;
      const w = t < 1.0 ? 1.0 - t : 0.0;
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0.0) kk[xx * ksize + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const fixed = new Int32Array(kk.length);
  for (let i = 0; i < kk.length; i++) {
    fixed[i] = kk[i] < 0 ? Math.trunc(-0.5 + kk[i] * (1 << PRECISION_BITS))
                         : Math.trunc(0.5 + kk[i] * (1 << PRECISION_BITS));
  }
  return { bounds, k: fixed, ksize };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

// Pillow's Image.resize(..., BILINEAR) of an RGB image held as [h, w, 3] uint8
export function resizeBilinear(rgb, width, height, outW, outH) {
  const hor = bilinearCoefficients(width, outW);
  const ver = bilinearCoefficients(height, outH);
  const needH = outW !== width, needV = outH !== height;
  const half = 1 << (PRECISION_BITS - 1);
  let src = rgb, srcW = width, srcH = height, rowOffset = 0;
  if (needH) {
    // only the rows the vertical pass reads, as Pillow does
    const first = needV ? ver.bounds[0] : 0;
    const last = needV ? ver.bounds[outH * 2 - 2] + ver.bounds[outH * 2 - 1] : height;
    const tmp = new Uint8Array((last - first) * outW * 3);
    for (let y = first; y < last; y++) {
      for (let xx = 0; xx < outW; xx++) {
        const xmin = hor.bounds[xx * 2], xmax = hor.bounds[xx * 2 + 1], base = xx * hor.ksize;
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < xmax; x++) {
          const p = (y * width + x + xmin) * 3, c = hor.k[base + x];
          s0 += rgb[p] * c; s1 += rgb[p + 1] * c; s2 += rgb[p + 2] * c;
        }
        const o = ((y - first) * outW + xx) * 3;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp; srcW = outW; srcH = last - first; rowOffset = first;
  }
  if (!needV) return src;
  const out = new Uint8Array(outH * srcW * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = ver.bounds[yy * 2] - rowOffset, ymax = ver.bounds[yy * 2 + 1], base = yy * ver.ksize;
    for (let xx = 0; xx < srcW; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const p = ((y + ymin) * srcW + xx) * 3, c = ver.k[base + y];
        s0 += src[p] * c; s1 += src[p + 1] * c; s2 += src[p + 2] * c;
      }
      const o = (yy * srcW + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return out;
}

// resize_center_crop: shorter side to `size`, then the centre size x size square, [size, size, 3] uint8
export function resizeCenterCrop(rgb, width, height, size) {
  const scale = size / Math.min(width, height);
  const newW = Math.max(size, pyRound(width * scale)), newH = Math.max(size, pyRound(height * scale));
  const resized = (newW === width && newH === height) ? rgb : resizeBilinear(rgb, width, height, newW, newH);
  const left = Math.floor((newW - size) / 2), top = Math.floor((newH - size) / 2);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((y + top) * newW + left) * 3;
    out.set(resized.subarray(from, from + size * 3), y * size * 3);
  }
  return out;
}

// preprocess.image_warning: why an image should not be trusted (far smaller than the model's input, or one colour
// on what the model sees: `pixels`, its resizeCenterCrop at `size`), or "" where there is nothing to say
export function imageWarning(width, height, size, pixels) {
  if (Math.min(width, height) < Math.max(32, Math.floor(size / 2))) {
    return `only ${width}x${height} px, far below the model's ${size} px input`;
  }
  const n = pixels.length / 3;
  let spread = 0;
  for (let c = 0; c < 3; c++) {
    let sum = 0, sq = 0;
    for (let i = c; i < pixels.length; i += 3) { sum += pixels[i]; sq += pixels[i] * pixels[i]; }
    const mean = sum / n;
    spread = Math.max(spread, Math.sqrt(Math.max(0, sq / n - mean * mean)));
  }
  return spread < 1.0 ? "no content: the image is a single colour" : "";
}

function pyRound(x) {  // Python's round(): halves to even
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// RGBA (a canvas's getImageData) -> RGB, transparent pixels over white as to_rgb composites them
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const v = rgba[i * 4 + c];
      out[i * 3 + c] = a === 255 ? v : Math.round((v * a + 255 * (255 - a)) / 255);
    }
  }
  return out;
}

// The 8 views of one [s, s, 3] image: np.rot90(k) for k = 0..3 (counter-clockwise), then each mirrored
export function ttaViews(img, s) {
  const rotations = [img];
  for (let k = 1; k < 4; k++) {
    const prev = rotations[k - 1], r = new Uint8Array(img.length);
    for (let i = 0; i < s; i++) {
      for (let j = 0; j < s; j++) {  // rot90: out[i][j] = in[j][s-1-i]
        const o = (i * s + j) * 3, p = (j * s + (s - 1 - i)) * 3;
        r[o] = prev[p]; r[o + 1] = prev[p + 1]; r[o + 2] = prev[p + 2];
      }
    }
    rotations.push(r);
  }
  const mirrored = rotations.map((v) => {
    const m = new Uint8Array(v.length);
    for (let i = 0; i < s; i++) {
      for (let j = 0; j < s; j++) {
        const o = (i * s + j) * 3, p = (i * s + (s - 1 - j)) * 3;
        m[o] = v[p]; m[o + 1] = v[p + 1]; m[o + 2] = v[p + 2];
      }
    }
    return m;
  });
  return rotations.concat(mirrored);
}

// An ONNX file's metadata_props (ModelProto field 14: StringStringEntryProto {1: key, 2: value}), read
// straight from its bytes: onnxruntime-web does not expose them
export function onnxMetadata(bytes) {
  const text = new TextDecoder();
  let pos = 0;
  function varint() {
    let result = 0, shift = 1, b;
    do { b = bytes[pos++]; result += (b & 0x7f) * shift; shift *= 128; } while (b & 0x80);
    return result;
  }
  function fields(end, visit) {
    while (pos < end) {
      const tag = varint(), field = Math.floor(tag / 8), wire = tag % 8;
      if (wire === 0) varint();
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) { const len = varint(), start = pos; pos += len; visit(field, start, pos); }
      else throw new Error(`not an ONNX file (wire type ${wire} at byte ${pos})`);
    }
  }
  const meta = {};
  fields(bytes.length, (field, start, end) => {
    if (field !== 14) return;
    const entry = {}, after = pos;
    pos = start;
    fields(end, (f, s, e) => { entry[f] = text.decode(bytes.subarray(s, e)); });
    pos = after;
    meta[entry[1]] = entry[2] ?? "";
  });
  return meta;
}

const PREFIX = "lesion_pl.";

function jsonOr(meta, key, fallback) {
  return key in meta ? JSON.parse(meta[key]) : fallback;
}

// ScoringPolicy.from_onnx_metadata, and what it makes of the graph's probabilities
export class Policy {
  constructor(props) {
    const meta = {};
    for (const [k, v] of Object.entries(props)) if (k.startsWith(PREFIX)) meta[k.slice(PREFIX.length)] = v;
    if (!("classes" in meta)) throw new Error("this ONNX file has no lesion-pl metadata; export it with `cli.py export`");
    this.meta = meta;
    this.classes = JSON.parse(meta.classes);
    this.displayNames = jsonOr(meta, "display_names", this.classes);
    this.malignant = jsonOr(meta, "malignant", []);
    this.melanoma = jsonOr(meta, "melanoma", this.classes.includes("mel") ? "mel" : null);
    this.size = parseInt(meta.input_height, 10);
    this.resizePolicy = meta.resize_policy;
    this.decisionBias = jsonOr(meta, "decision_bias", null);
    this.decisionRule = meta.decision_rule || "accuracy";
    this.clinical = jsonOr(meta, "clinical", null);
    this.points = jsonOr(meta, "operating_points", {});
    const alone = jsonOr(meta, "operating_points_image_only", {});
    this.pointsImageOnly = Object.keys(alone).length ? alone : this.points;
    this.tta = Boolean(jsonOr(meta, "tta", false));
    this.ood = jsonOr(meta, "ood", null);  // lesion_pl/ood.py OodRule: the output ood_score's threshold
    this.version = meta.version;
  }

  scoreNames() {
    const names = [];
    if (this.malignant.length) names.push("malignant");
    if (this.melanoma) names.push("melanoma");
    return names;
  }

  scoreIndices(name) {
    const members = name === "malignant" ? this.malignant : [this.melanoma];
    return this.classes.map((c, i) => (members.includes(c) ? i : -1)).filter((i) => i >= 0);
  }

  // clinical.encode for one image's {age, sex, site} (or the training data's column names): [features, any]
  encode(record) {
    const m = this.clinical, cols = m.columns;
    const get = (field) => (record == null || !(field in cols) ? null
      : (record[field] ?? record[cols[field]] ?? null));
    const text = (v) => {
      if (v == null || (typeof v === "number" && Number.isNaN(v))) return null;
      const t = String(v).trim().toLowerCase();
      return ["", "unknown", "nan", "none", "n/a", "na", "?"].includes(t) ? null : t;
    };
    let age = get("age");
    age = age == null || String(age).trim() === "" ? null : Number(age);
    if (age != null && (Number.isNaN(age) || age < 0)) age = null;
    const sex = text(get("sex")), site = text(get("site"));
    const x = new Float64Array(10 + m.sexes.length + m.sites.length);
    const si = m.sexes.indexOf(sex), li = m.sites.indexOf(site);
    if (age != null) x[Math.min(Math.floor(age / 10), 9)] = 1;
    if (si >= 0) x[10 + si] = 1;
    if (li >= 0) x[10 + m.sexes.length + li] = 1;
    return [x, age != null || si >= 0 || li >= 0];
  }

  // clinical.fused for one image: probabilities times exp(weight * log-likelihood ratio), renormalised
  fuse(probs, record) {
    const [x, any] = this.encode(record);
    if (!any) return [probs, false];
    const m = this.clinical;
    const z = m.coef.map((row, c) => row.reduce((s, w, f) => s + w * x[f], m.intercept[c]));
    const zmax = Math.max(...z);
    const lse = Math.log(z.reduce((s, v) => s + Math.exp(v - zmax), 0));
    const ratio = z.map((v, c) => v - zmax - lse - m.log_prior[c]);
    const y = Array.from(probs, (p, c) => Math.log(Math.max(p, 1e-300)) + m.weight * ratio[c]);
    const ymax = Math.max(...y);
    const e = y.map((v) => Math.exp(v - ymax));
    const sum = e.reduce((s, v) => s + v, 0);
    return [e.map((v) => v / sum), true];
  }

  // one image: the graph's probabilities of each view ([views][C]), optional metadata and the graph's
  // out-of-distribution score of each view ([views], where the model has one) -> a result row
  apply(viewProbs, record, file, viewOod = null) {
    const C = this.classes.length;
    let probs = new Array(C).fill(0);
    for (const v of viewProbs) for (let c = 0; c < C; c++) probs[c] += v[c] / viewProbs.length;
    let withMetadata = null;
    if (this.clinical && record != null) [probs, withMetadata] = this.fuse(probs, record);
    let top = 0, best = -Infinity;
    probs.forEach((p, c) => {
      const v = this.decisionBias ? Math.log(Math.max(p, 1e-300)) + this.decisionBias[c] : p;
      if (v > best) { best = v; top = c; }
    });
    const scores = {};
    for (const name of this.scoreNames()) scores[name] = this.scoreIndices(name).reduce((s, i) => s + probs[i], 0);
    const threshold = this.threshold("malignant", withMetadata);
    const refer = threshold === null ? null : scores.malignant >= threshold;
    const row = {
      file, top_class: this.classes[top], probability: probs[top], malignancy: scores.malignant ?? 0,
      referral: refer === null ? "" : (refer ? "refer" : "no referral at this threshold"),
    };
    if (withMetadata !== null) row.metadata = withMetadata ? "yes" : "no";
    if (this.ood && viewOod) {  // runtime.Predictions.rows: outside, no class and no referral
      row.ood_score = viewOod.reduce((s, v) => s + v, 0) / viewOod.length;
      row.outside = row.ood_score > this.ood.threshold;
      if (row.outside) Object.assign(row, { top_class: "", probability: null, referral: OUTSIDE });
    }
    this.classes.forEach((c, i) => { row[`p_${c}`] = probs[i]; });
    row.warning = "";
    return row;
  }

  // ScoringPolicy.thresholds for one image: the fused threshold where metadata was fused, else the image-only
  threshold(name, withMetadata) {
    const op = this.pointsImageOnly[name];
    if (!op) return null;
    return withMetadata && this.clinical ? (this.points[name] || op).threshold : op.threshold;
  }
}

// lesion_pl/ood.py OUTSIDE
export const OUTSIDE = "outside what this model was trained on";

// lesion_pl/calibration.py promise_text: what a referral threshold promises, in one sentence
export function promiseText(p) {
  const pct = (x) => `${Math.round(x * 100)}%`;
  const seen = `validation sensitivity ${p.val_sensitivity.toFixed(3)}, specificity ${p.val_specificity.toFixed(3)}`;
  const target = p.target_sensitivity.toFixed(2);
  if (p.confidence == null) {
    return `chosen on validation for sensitivity >= ${target} at the point estimate (${seen}; no confidence bound: `
      + "on new lesions it falls below the target about half the time)";
  }
  const lesions = p.val_positive_lesions ? ` over ${p.val_positive_lesions} positive lesions` : "";
  const bound = `one-sided ${pct(p.confidence)} lower bound ${p.val_lower_bound.toFixed(3)}${lesions}`;
  if (p.val_lower_bound < p.target_sensitivity) {
    return `the lowest positive score on validation: too few positive lesions there to promise sensitivity >= `
      + `${target} with ${pct(p.confidence)} confidence (${seen}; ${bound})`;
  }
  return `chosen on validation for sensitivity >= ${target} with ${pct(p.confidence)} confidence (${seen}; ${bound})`;
}
