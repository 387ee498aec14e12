// Drives the playground's JavaScript (src/t3unlearn/serve/static/playground.js) in Node against a live
// server, with a minimal stand-in for the page's elements: what a browser test does, where no browser is.
// usage: node playground_harness.js PLAYGROUND_JS BASE_URL KEY HEAD QUESTION  -> one JSON line on stdout
"use strict";
const vm = require("vm");
const fs = require("fs");
const [jsPath, base, key, head, question] = process.argv.slice(2);

const initial = { T: "1.75", s: "0.7", tempering: "adaptive", "max-tokens": "8", sampling: "0", seed: "0", question: "" };
const els = {};
function el(id) {
  if (els[id]) return els[id];
  const listeners = {};
  const e = {
    id, value: initial[id] ?? "", textContent: "", hidden: id === "key-row", disabled: false, dataset: {}, children: [],
    classList: { add() {}, remove() {}, toggle() {} },
    addEventListener(type, fn) { (listeners[type] = listeners[type] || []).push(fn); },
    dispatch(type) { for (const f of listeners[type] || []) f({ preventDefault() {}, key: "" }); },
    appendChild(child) { this.children.push(child); if (this.children.length === 1) this.value = child.value; },
    focus() {}, requestSubmit() { this.dispatch("submit"); },
    set innerHTML(_) { this.children = []; this.value = ""; },
  };
  return (els[id] = e);
}
const store = new Map();
const sent = [];
const context = {
  document: { getElementById: el, createElement: () => ({}) },
  sessionStorage: { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) },
  fetch: (url, opts = {}) => {
    if (opts.body) sent.push({ url, body: JSON.parse(opts.body), auth: (opts.headers || {}).Authorization || null });
    return fetch(base + url, opts);
  },
  performance, TextDecoder, AbortController, console, Promise, JSON, Number, Math, Object, parseInt, parseFloat,
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(jsPath, "utf8"), context);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what) {
  for (let i = 0; i < 1200; i++) { if (cond()) return; await sleep(50); }
  throw new Error("timed out waiting for " + what);
}

(async () => {
  const out = {};
  await until(() => el("server-note").textContent, "the first list of models");
  out.firstNote = el("server-note").textContent;
  out.keyAsked = !el("key-row").hidden;
  if (key) {
    el("api-key").value = key;
    el("api-key").dispatch("change");
    await until(() => el("server-note").textContent.includes("loaded"), "the heads, with the key");
  }
  out.note = el("server-note").textContent;
  out.baseId = el("base-id").textContent;
  el("head").value = head;
  el("head").dispatch("change");
  out.knobsDisabled = el("T").disabled;
  el("question").value = question;
  el("ask-form").dispatch("submit");
  const settled = (w) => ["done", "error", "idle"].includes(el(w + "-status").dataset.state);
  await until(() => settled("head") && settled("base") && !el("ask").disabled, "both answers");
  for (const w of ["base", "head"]) {
    out[w + "Answer"] = el(w + "-answer").textContent;
    out[w + "Status"] = el(w + "-status").textContent;
  }
  out.sent = sent;
  process.stdout.write(JSON.stringify(out) + "\n");
})().catch((err) => { process.stdout.write(JSON.stringify({ failed: String(err) }) + "\n"); process.exit(1); });
