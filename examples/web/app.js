// dermedge in the browser: decode a photo, hand its RGB pixels to the pipeline model (resize, crop,
// normalisation, encoder, head and abstain are inside the graph), show top-3, abstain and latency.
// Classic script on purpose: it must run from file:// (a folder or USB stick) with no server.
"use strict";

const $ = (id) => document.getElementById(id);
const app = { session: null, meta: {}, labels: [], threads: 1 };

function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ModelProto.metadata_props is field 14: repeated StringStringEntryProto {key = 1, value = 2}.
// A small protobuf walk; the graph (field 7, the bulk of the file) is skipped by its length.
function readMetadata(bytes) {
  const dec = new TextDecoder();
  const varint = (buf, st) => {
    let v = 0, scale = 1, b;
    do { b = buf[st.i++]; v += (b & 127) * scale; scale *= 128; } while (b & 128);
    return v;
  };
  const fields = (buf, start, end, fn) => {
    const st = { i: start };
    while (st.i < end) {
      const tag = varint(buf, st), field = Math.floor(tag / 8), wire = tag & 7;
      if (wire === 0) varint(buf, st);
      else if (wire === 1) st.i += 8;
      else if (wire === 5) st.i += 4;
      else if (wire === 2) { const n = varint(buf, st); fn(field, st.i, st.i + n); st.i += n; }
      else throw new Error("not an ONNX model (protobuf wire type " + wire + ")");
    }
  };
  const meta = {};
  fields(bytes, 0, bytes.length, (field, s, e) => {
    if (field !== 14) return;
    let key = "", value = "";
    fields(bytes, s, e, (f, a, b) => {
      if (f === 1) key = dec.decode(bytes.subarray(a, b));
      if (f === 2) value = dec.decode(bytes.subarray(a, b));
    });
    meta[key] = value;
  });
  return meta;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function showMeta(meta, bytes) {
  const rows = [
    ["name", `${meta.name || "?"} ${meta.version || ""}`],
    ["labels", app.labels.join(", ") || "(embedding only)"],
    ["precision", meta.precision || "?"],
    ["encoder", meta.encoder || "?"],
    ["abstain above", meta.abstain_threshold ? Number(meta.abstain_threshold).toFixed(2) : "-"],
    ["licence", meta.license || "?"],
    ["bundle sha256", meta.bundle_sha256 || "?"],
    ["model size", (bytes / 1e6).toFixed(1) + " MB"],
  ];
  $("meta").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v;
    return [dt, dd];
  }));
  $("model-line").textContent = `${meta.name || "model"} ${meta.version || ""} · runs on this device`;
}

async function loadModel(bytes) {
  const assets = window.ORT_ASSETS;
  if (!window.ort || !assets) throw new Error("onnxruntime-web is not vendored: run `npm install && node build.mjs MODEL.onnx` (see README.md)");
  // The glue module is imported from a blob: URL and the binary handed over directly, because a
  // file:// page may not fetch() or import() files beside it.
  ort.env.wasm.wasmPaths = { mjs: URL.createObjectURL(new Blob([b64ToBytes(assets.mjs)], { type: "text/javascript" })) };
  ort.env.wasm.wasmBinary = b64ToBytes(assets.wasm);
  app.threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = app.threads;
  app.meta = readMetadata(bytes);
  if (!app.meta["dermedge.pipeline_format"]) throw new Error("this ONNX file is not a dermedge pipeline model (no dermedge.pipeline_format in its metadata)");
  app.labels = JSON.parse(app.meta.labels || "[]");
  const t0 = performance.now();
  app.session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  app.loadMs = performance.now() - t0;
  showMeta(app.meta, bytes.length);
  setStatus(`ready (model loaded in ${app.loadMs.toFixed(0)} ms, onnxruntime-web ${assets.version}, ${app.threads} thread${app.threads > 1 ? "s" : ""})`);
}

async function decodeRGB(blob) {
  // Pixels as decoded, EXIF orientation applied, no colour-space conversion, transparency over white:
  // the same input dermedge's Python runtime feeds its model.
  const bmp = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bmp.width; canvas.height = bmp.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, bmp.width, bmp.height);
  ctx.drawImage(bmp, 0, 0);
  const rgba = ctx.getImageData(0, 0, bmp.width, bmp.height).data;
  const rgb = new Uint8Array(bmp.width * bmp.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) { rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; }
  return { rgb, width: bmp.width, height: bmp.height };
}

function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }

function render(res) {
  const rows = res.top3.map(({ label, p }) => {
    const row = document.createElement("div"); row.className = "row";
    row.innerHTML = `<span class="label"></span><div class="bar"><div style="width:${(100 * p).toFixed(1)}%"></div></div><span class="p">${(100 * p).toFixed(1)}%</span>`;
    row.querySelector(".label").textContent = label;
    return row;
  });
  const flag = document.createElement("div");
  if (res.abstain) {
    flag.className = "abstain";
    flag.textContent = `Abstains: this photo does not look like the photos the model was trained on (score ${res.ood_score.toFixed(2)} > ${Number(app.meta.abstain_threshold).toFixed(2)}). Treat the label as unreliable.`;
  } else {
    flag.className = "ok";
    flag.textContent = res.ood_score === null ? "No abstain detector in this model." : `Looks like the training photos (score ${res.ood_score.toFixed(2)}).`;
  }
  $("result").replaceChildren(...rows, flag);
  const timing = [
    ["status", $("status").textContent],
    ["photo", `${res.width} × ${res.height} px`],
    ["decode", `${res.decode_ms.toFixed(1)} ms`],
    ["model", `${res.infer_ms.toFixed(1)} ms (median of ${res.runs} run${res.runs > 1 ? "s" : ""})`],
    ["first run", `${res.first_ms.toFixed(1)} ms`],
  ];
  $("timing").replaceChildren(...timing.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v; if (k === "status") dd.id = "status";
    return [dt, dd];
  }));
  $("result-json").textContent = JSON.stringify(res);
}

async function classify(blob, name, repeat) {
  if (!app.session) throw new Error("the model is not loaded");
  const url = URL.createObjectURL(blob);
  $("preview").src = url; $("preview").hidden = false; $("drop-hint").hidden = true;
  const t0 = performance.now();
  const { rgb, width, height } = await decodeRGB(blob);
  const decodeMs = performance.now() - t0;
  const feeds = { pixels: new ort.Tensor("uint8", rgb, [1, height, width, 3]) };
  const times = [];
  let out;
  for (let i = 0; i < Math.max(1, repeat); i++) {
    const t = performance.now();
    out = await app.session.run(feeds);
    times.push(performance.now() - t);
  }
  const probs = Array.from(out.probabilities.data);
  const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]);
  const res = {
    name,
    width, height,
    top3: order.slice(0, 3).map((i) => ({ label: app.labels[i], p: probs[i] })),
    probabilities: probs,
    abstain: out.abstain ? Boolean(out.abstain.data[0]) : false,
    ood_score: out.ood_score ? Number(out.ood_score.data[0]) : null,
    decode_ms: decodeMs,
    first_ms: times[0],
    infer_ms: median(times.length > 1 ? times.slice(1) : times),
    runs: times.length > 1 ? times.length - 1 : 1,
    threads: app.threads,
  };
  render(res);
  return res;
}

function fail(err) {
  console.error(err);
  setStatus(String(err.message || err), true);
  $("result-json").textContent = JSON.stringify({ error: String(err.message || err) });
}

function wire() {
  const drop = $("drop"), file = $("file");
  file.addEventListener("change", () => file.files[0] && classify(file.files[0], file.files[0].name, 1).catch(fail));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) classify(f, f.name, 1).catch(fail);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") file.click(); });
  $("model-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (f) loadModel(new Uint8Array(await f.arrayBuffer())).then(() => { $("model-picker").hidden = true; }).catch(fail);
  });
}

async function main() {
  wire();
  if (!window.DERMEDGE_MODEL) {
    $("model-picker").hidden = false;
    setStatus("choose a model file");
    return;
  }
  await loadModel(b64ToBytes(window.DERMEDGE_MODEL.base64));
  // ?demo[&repeat=N]: classify the photo in demo.js (written by the browser test) right away.
  const params = new URLSearchParams(location.search);
  if (params.has("demo") && window.DERMEDGE_DEMO) {
    const blob = new Blob([b64ToBytes(window.DERMEDGE_DEMO.base64)], { type: window.DERMEDGE_DEMO.type });
    await classify(blob, window.DERMEDGE_DEMO.name, Number(params.get("repeat") || 1));
  }
}

main().catch(fail);
