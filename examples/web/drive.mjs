// Drive the page in headless Chromium over the DevTools protocol: open URL, wait until the page has
// written its result (#result-json), save a screenshot, print the result JSON on stdout.
//   node --experimental-websocket drive.mjs "file:///.../index.html?demo&repeat=5" --screenshot shot.png
// Exit 0 with the result, 1 when the page reported an error or timed out, 2 on usage errors.
// Used by tests/examples/test_web.py; needs Node >= 20.10 and Chromium (CHROMIUM=path to override).
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const args = process.argv.slice(2);
const url = args.find((a) => !a.startsWith("--") && !args[args.indexOf(a) - 1]?.startsWith("--"));
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
if (!url) { console.error("usage: drive.mjs URL [--screenshot PNG] [--timeout SECONDS]"); process.exit(2); }
if (typeof WebSocket === "undefined") { console.error("no WebSocket in this Node: run with --experimental-websocket (Node >= 20.10)"); process.exit(2); }
const timeoutMs = 1000 * Number(opt("--timeout", "120"));
const shot = opt("--screenshot");
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "dermedge-chromium-"));
const browser = spawn(process.env.CHROMIUM || "chromium", [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
  "--remote-debugging-port=0", `--user-data-dir=${profile}`, "--window-size=1200,820", "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });

// Wait for Chromium to exit before removing its profile (it may still be writing into it), and never let a
// leftover temporary folder change the result.
const cleanup = async () => {
  if (browser.exitCode === null && browser.signalCode === null) {
    const exited = new Promise((resolve) => browser.once("exit", resolve));
    browser.kill("SIGKILL");
    await exited;
  }
  try {
    fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  } catch (err) {
    console.error(`note: could not remove ${profile} (${err.code})`);
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function devtoolsPort() {
  const file = path.join(profile, "DevToolsActivePort");
  for (let t = 0; t < 300; t++) {
    if (fs.existsSync(file)) { const [port] = fs.readFileSync(file, "utf8").split("\n"); if (port) return port; }
    await sleep(100);
  }
  throw new Error("Chromium did not open its DevTools port in 30 s");
}

async function main() {
  const port = await devtoolsPort();
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const page = targets.find((t) => t.type === "page");
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
  let id = 0;
  const pending = new Map();
  const consoleLines = [];
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
    if (msg.method === "Runtime.consoleAPICalled") consoleLines.push(msg.params.args.map((a) => a.value ?? a.description).join(" "));
    if (msg.method === "Runtime.exceptionThrown") consoleLines.push("exception: " + msg.params.exceptionDetails.text + " " + (msg.params.exceptionDetails.exception?.description || ""));
  };
  const send = (method, params = {}) => new Promise((res) => { const i = ++id; pending.set(i, res); ws.send(JSON.stringify({ id: i, method, params })); });
  await send("Runtime.enable");
  await send("Page.enable");
  await send("Page.navigate", { url });
  const t0 = Date.now();
  let text = "";
  while (Date.now() - t0 < timeoutMs) {
    const r = await send("Runtime.evaluate", { expression: "document.getElementById('result-json')?.textContent || ''", returnByValue: true });
    text = r.result?.result?.value || "";
    if (text) break;
    await sleep(250);
  }
  if (shot) {
    const r = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: false });
    fs.writeFileSync(shot, Buffer.from(r.result.data, "base64"));
  }
  ws.close();
  if (!text) {
    console.error(`no result after ${timeoutMs / 1000} s; console:\n${consoleLines.join("\n")}`);
    return 1;
  }
  console.log(text);
  if (consoleLines.length) console.error(consoleLines.join("\n"));
  return JSON.parse(text).error ? 1 : 0;
}

main().then(
  async (code) => { await cleanup(); process.exit(code); },
  async (err) => { console.error(String(err)); await cleanup(); process.exit(1); },
);
