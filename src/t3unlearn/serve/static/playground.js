// The playground: one question, two streamed answers (the base model and a T3 head), side by side.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { base: null, heads: {}, controllers: [] };
const KEY_STORE = "t3unlearn-api-key";

// The API key (t3unlearn serve --api-key), asked for after a 401 and kept for this tab only.
function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: "Bearer " + key } : {};
}

function askForKey(message) {
  $("key-row").hidden = false;
  const note = $("server-note");
  note.textContent = message;
  note.classList.add("error");
  $("api-key").focus();
}

async function loadModels(keepSelection) {
  const note = $("server-note");
  try {
    const res = await fetch("/v1/models", { headers: authHeaders() });
    const body = await res.json();
    if (res.status === 401) {
      askForKey(sessionStorage.getItem(KEY_STORE) ? "that API key is not valid here; enter the right one" :
        "this server needs an API key: enter it above");
      return;
    }
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    note.classList.remove("error");
    const previous = $("head").value;
    state.heads = {};
    const select = $("head");
    select.innerHTML = "";
    for (const m of body.data) {
      if (m.parent === null || m.parent === undefined) { state.base = m.id; continue; }
      state.heads[m.id] = m.t3 || {};
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.id;
      select.appendChild(opt);
    }
    state.base = body.data.some((m) => m.id === state.base && (m.parent === null || m.parent === undefined)) ? state.base : null;
    $("base-id").textContent = state.base || "not served here";
    $("base-label").textContent = state.base || "";
    const names = Object.keys(state.heads);
    if (!names.length) {
      const opt = document.createElement("option");
      opt.value = "";
      opt.textContent = "(no heads loaded)";
      select.appendChild(opt);
      note.textContent = "no heads loaded: add one with POST /v1/heads";
    } else {
      note.textContent = names.length + " head" + (names.length > 1 ? "s" : "") + " loaded";
    }
    if (keepSelection && previous in state.heads) {
      select.value = previous;
    } else {
      resetKnobs();
    }
    updateLabels();
  } catch (err) {
    note.textContent = "could not list models: " + err.message;
    note.classList.add("error");
  }
}

function resetKnobs() {
  const h = state.heads[$("head").value];
  if (!h) return;
  const locked = h.adjustable === false;  // t3unlearn serve --lock-guidance: the head's saved guidance only
  for (const id of ["T", "s", "tempering", "reset-knobs"]) $(id).disabled = locked;
  setKnob("T", h.temperature);
  setKnob("s", h.scale);
  if (h.tempering) $("tempering").value = h.tempering;
}

function setKnob(id, value) {
  if (value === undefined || value === null) return;
  const input = $(id);
  input.value = value;
  $(id + "-value").textContent = Number(input.value).toString();
}

function updateLabels() {
  const head = $("head").value;
  $("head-label").textContent = head ? head + "  T=" + $("T").value + " s=" + $("s").value : "";
}

function setStatus(which, text, stateName) {
  const el = $(which + "-status");
  el.textContent = text;
  el.dataset.state = stateName;
  el.classList.toggle("error", stateName === "error");
}

// Stream one chat completion into the pane `which` ("base" or "head").
async function streamAnswer(which, body, controller) {
  const out = $(which + "-answer");
  out.textContent = "";
  setStatus(which, "streaming…", "streaming");
  const started = performance.now();
  let pieces = 0, finish = null;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      if (res.status === 401) askForKey("this server needs an API key: enter it above");
      throw new Error(err.error ? err.error.message : res.status + " " + res.statusText);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) {
              out.textContent += choice.delta.content;
              pieces += 1;
            }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    }
    const secs = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(which, "done in " + secs + " s, " + pieces + " chunks, finish: " + (finish || "?"), "done");
  } catch (err) {
    if (err.name === "AbortError") { setStatus(which, "cancelled", "cancelled"); return; }
    setStatus(which, "error: " + err.message, "error");
  }
}

function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  for (const c of state.controllers) c.abort();
  state.controllers = [];
  const common = {
    messages: [{ role: "user", content: question }],
    max_tokens: Math.max(1, parseInt($("max-tokens").value, 10) || 64),
    temperature: Math.max(0, parseFloat($("sampling").value) || 0),
    stream: true,
  };
  const seed = parseInt($("seed").value, 10);
  if (!Number.isNaN(seed)) common.seed = seed;
  const jobs = [];
  if (state.base) {
    const baseCtl = new AbortController();
    state.controllers.push(baseCtl);
    jobs.push(streamAnswer("base", { ...common, model: state.base }, baseCtl));
  } else {
    $("base-answer").textContent = "";
    setStatus("base", "the base model is not served here (t3unlearn serve --no-base)", "idle");
  }
  const head = $("head").value;
  if (head) {
    const headCtl = new AbortController();
    state.controllers.push(headCtl);
    const body = { ...common, model: head };
    if (state.heads[head].adjustable !== false) {  // else the server refuses 't3' (--lock-guidance)
      body.t3 = { temperature: parseFloat($("T").value), scale: parseFloat($("s").value), tempering: $("tempering").value };
    }
    updateLabels();
    jobs.push(streamAnswer("head", body, headCtl));
  } else {
    $("head-answer").textContent = "";
    setStatus("head", "no head selected", "idle");
  }
  $("ask").disabled = true;
  Promise.allSettled(jobs).then(() => { $("ask").disabled = false; });
}

for (const id of ["T", "s"]) {
  $(id).addEventListener("input", () => { $(id + "-value").textContent = $(id).value; updateLabels(); });
}
$("head").addEventListener("change", () => { resetKnobs(); updateLabels(); });
$("reset-knobs").addEventListener("click", () => { resetKnobs(); updateLabels(); });
$("refresh").addEventListener("click", () => loadModels(true));
$("api-key").addEventListener("change", () => {
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
  loadModels(true);
});
$("ask-form").addEventListener("submit", ask);
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask-form").requestSubmit();
});
loadModels(false);
