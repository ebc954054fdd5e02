// grokd sampler lab: one ES module, no build step. It talks to the server's own HTTP API
// (/v1/models, /v1/samplers, /v1/chat/completions, /metrics) with fetch; an API key typed in
// lives in sessionStorage only (never in the page, never in localStorage).

const KEY_STORAGE = "grokd-lab-api-key";
const OPENAI_FIELDS = new Set([
  "model", "messages", "temperature", "top_p", "max_tokens", "stop", "seed", "logprobs", "top_logprobs",
  "frequency_penalty", "presence_penalty", "logit_bias", "response_format", "tools", "tool_choice", "stream",
  "stream_options", "n", "user",
]);
// xai-sdk's chat.create keyword arguments (the rest are grokd's own fields)
const XAI_FIELDS = new Set([
  "model", "max_tokens", "seed", "stop", "temperature", "top_p", "logprobs", "top_logprobs",
  "frequency_penalty", "presence_penalty", "response_format", "tools", "tool_choice",
]);

const $ = (id) => document.getElementById(id);
const lab = {
  samplers: null,        // GET /v1/samplers
  history: [],           // chat turns sent so far
  lastRequest: null,     // the body of the last chat request, for the code view
  codeLang: "curl",
  running: new Set(),    // AbortControllers of runs in flight
  metricsPrev: null,
};
window.grokdLab = lab;   // for a console (and the browser tests): read-only use

// ---------------------------------------------------------------------------- API access
function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let code = null;
  try {
    const body = await resp.json();
    if (body && body.error) { message = body.error.message || message; code = body.error.code || null; }
  } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, message, code);
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: headers(false) });
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.status ? `${err.status}: ${err.message}` : String(err.message || err);
  box.hidden = false;
  if (err.status === 401 || err.status === 403) openKeyDialog(err.message);
}

// ---------------------------------------------------------------------------- API key dialog
function openKeyDialog(why) {
  const dlg = $("key-dialog");
  if (why) $("key-why").textContent = `${why} The key stays in this tab's session storage only.`;
  dlg.hidden = false;
  $("key-button").setAttribute("aria-expanded", "true");
  $("api-key").focus();
}

function closeKeyDialog() {
  $("key-dialog").hidden = true;
  $("key-button").setAttribute("aria-expanded", "false");
}

function setupKeyDialog() {
  $("key-button").addEventListener("click", () => ($("key-dialog").hidden ? openKeyDialog() : closeKeyDialog()));
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    closeKeyDialog();
    showError(null);
    loadServer();
  });
  $("key-clear").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORAGE); $("api-key").value = ""; });
  $("key-dialog").addEventListener("keydown", (ev) => { if (ev.key === "Escape") { closeKeyDialog(); $("key-button").focus(); } });
}

// ---------------------------------------------------------------------------- models and samplers
async function loadServer() {
  try {
    const models = await getJSON("/v1/models");
    const select = $("model");
    const previous = select.value;
    select.replaceChildren(...models.data.map((m) => new Option(m.id, m.id)));
    if (previous && models.data.some((m) => m.id === previous)) select.value = previous;
    const first = models.data.find((m) => m.id === select.value);
    $("model-info").textContent = first && first.context_length ? `${first.context_length} ctx` : "";
    lab.samplers = await getJSON("/v1/samplers");
    buildSamplerControls(lab.samplers);
    buildOrder(lab.samplers);
    document.body.dataset.ready = "true";
    showError(null);
  } catch (err) {
    if (err.status === 503) {  // the model is still loading (or the server drains): try again shortly
      showError(new Error(`${err.message} Retrying…`));
      setTimeout(loadServer, 2000);
      return;
    }
    showError(err);
  }
}

function inputFor(sampler, param) {
  const id = sampler.builtin ? `p-${param.name}` : `x-${sampler.name}-${param.name}`;
  const wrap = document.createElement("label");
  wrap.className = `param param-${param.type}`;
  const caption = document.createElement("span");
  caption.textContent = param.name;
  wrap.append(caption);
  let input;
  if (param.type === "number" || param.type === "integer") {
    input = document.createElement("input");
    input.type = "number";
    input.step = param.type === "integer" ? "1" : "any";
    if (param.minimum !== null) input.min = String(param.minimum);
    if (param.maximum !== null) input.max = String(param.maximum);
    input.value = param.default === null ? "" : String(param.default);
    const range = [];
    if (param.minimum !== null) range.push(`${param.exclusive_minimum ? ">" : "≥"} ${param.minimum}`);
    if (param.maximum !== null) range.push(`≤ ${param.maximum}`);
    if (range.length) { const r = document.createElement("small"); r.className = "muted"; r.textContent = range.join(", "); wrap.append(r); }
  } else if (param.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(param.default);
  } else {
    input = document.createElement("textarea");
    input.rows = 1;
    input.spellcheck = false;
    input.placeholder = param.type === "token_bias" ? '{"1234": -100}' : param.type === "string_list" ? "one a line" : "";
  }
  input.id = id;
  input.dataset.param = param.name;
  input.dataset.type = param.type;
  input.dataset.sampler = sampler.name;
  input.dataset.builtin = String(sampler.builtin);
  input.dataset.default = JSON.stringify(param.default);
  if (param.description) input.title = param.description;
  wrap.append(input);
  return wrap;
}

function buildSamplerControls(info) {
  const box = $("sampler-controls");
  box.replaceChildren();
  for (const s of info.data) {
    if (!s.params.length) continue;
    const group = document.createElement("div");
    group.className = "sampler";
    group.dataset.sampler = s.name;
    const title = document.createElement("div");
    title.className = "sampler-name";
    title.textContent = s.builtin ? s.name : `${s.name} (plugin)`;
    if (s.description) title.title = s.description;
    group.append(title, ...s.params.map((p) => inputFor(s, p)));
    box.append(group);
  }
  const plugins = info.data.filter((s) => !s.builtin).length;
  $("samplers-source").textContent =
    `${info.data.length} processors from the server (GET /v1/samplers)${plugins ? `, ${plugins} plugin${plugins > 1 ? "s" : ""}` : ""}.`;
}

function buildOrder(info) {
  const list = $("order");
  list.replaceChildren();
  const names = [...info.default_order, ...info.data.filter((s) => !s.in_default_order).map((s) => s.name)];
  for (const name of names) {
    const li = document.createElement("li");
    li.dataset.name = name;
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = info.default_order.includes(name);
    box.setAttribute("aria-label", `use ${name}`);
    label.append(box, ` ${name}`);
    const up = document.createElement("button");
    up.type = "button"; up.textContent = "↑"; up.setAttribute("aria-label", `move ${name} up`);
    up.addEventListener("click", () => { if (li.previousElementSibling) list.insertBefore(li, li.previousElementSibling); up.focus(); });
    const down = document.createElement("button");
    down.type = "button"; down.textContent = "↓"; down.setAttribute("aria-label", `move ${name} down`);
    down.addEventListener("click", () => { if (li.nextElementSibling) list.insertBefore(li.nextElementSibling, li); down.focus(); });
    li.append(label, up, down);
    list.append(li);
  }
}

// ---------------------------------------------------------------------------- building a request
function parseJSONField(id, what) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what}: not valid JSON (${e.message})`); }
}

function controlValue(input) {
  const type = input.dataset.type;
  if (type === "boolean") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return undefined;
  if (type === "number") return Number(raw);
  if (type === "integer") return parseInt(raw, 10);
  if (type === "string_list") return raw.split("\n").map((s) => s.trim()).filter(Boolean);
  if (type === "token_bias") {
    try { return JSON.parse(raw); } catch (e) { throw new Error(`${input.dataset.param}: not valid JSON (${e.message})`); }
  }
  return raw;
}

// The panel's settings as a chat request body: only what differs from the server's defaults.
function baseBody(messages) {
  const body = { model: $("model").value, messages, stream: true, stream_options: { include_usage: true } };
  const maxTokens = $("max_tokens").value.trim();
  if (maxTokens) body.max_tokens = parseInt(maxTokens, 10);
  const seed = $("seed").value.trim();
  if (seed) body.seed = parseInt(seed, 10);
  const stop = $("stop").value.split("\n").filter((s) => s !== "");
  if (stop.length) body.stop = stop;
  const k = parseInt($("top_logprobs").value || "0", 10);
  body.logprobs = true;
  body.top_logprobs = k;
  if (lab.samplers && lab.samplers.processed_logprobs) body.processed_logprobs = true;
  for (const input of document.querySelectorAll("#sampler-controls [data-param]")) {
    const value = controlValue(input);
    if (value === undefined || JSON.stringify(value) === input.dataset.default) continue;
    if (Array.isArray(value) && !value.length) continue;
    if (typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length) continue;
    if (input.dataset.builtin === "true") body[input.dataset.param] = value;
    else (body[input.dataset.sampler] ??= {})[input.dataset.param] = value;
  }
  if ($("custom-order").checked) {
    body.samplers = [...document.querySelectorAll("#order li")]
      .filter((li) => li.querySelector("input").checked).map((li) => li.dataset.name);
  }
  const format = $("response_format").value;
  if (format === "json_object") body.response_format = { type: "json_object" };
  if (format === "json_schema") {
    const schema = parseJSONField("schema", "JSON schema");
    if (!schema) throw new Error("JSON schema: paste a schema for the json_schema format");
    body.response_format = { type: "json_schema", json_schema: { name: "schema", schema, strict: true } };
  }
  const tools = parseJSONField("tools", "Tools");
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw new Error("Tools: expected a JSON array of tool definitions");
    if (tools.length) body.tools = tools;
    if (tools.length && $("tool_choice").value !== "auto") body.tool_choice = $("tool_choice").value;
  }
  return body;
}

function systemMessages() {
  const system = $("system").value.trim();
  return system ? [{ role: "system", content: system }] : [];
}

// ---------------------------------------------------------------------------- streaming
// Runs one streamed chat request; calls view.onToken / onText as deltas arrive; resolves to the
// run's summary (text, tokens, usage, timings).
async function streamChat(body, view, controller) {
  const started = performance.now();
  let firstAt = null;
  const run = { text: "", tokens: [], toolCalls: [], usage: null, finish: null, chunks: 0 };
  const resp = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(true), body: JSON.stringify(body), signal: controller.signal,
  });
  if (!resp.ok) throw await errorOf(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const handle = (data) => {
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(0, chunk.error.message, chunk.error.code);
    if (chunk.usage) run.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      run.chunks += 1;
      if ((delta.content || (choice.logprobs && choice.logprobs.content)) && firstAt === null) firstAt = performance.now();
      if (choice.logprobs && choice.logprobs.content) {
        for (const lp of choice.logprobs.content) { run.tokens.push(lp); view.onToken(lp, run.tokens.length - 1); }
      }
      if (delta.content) { run.text += delta.content; view.onText(run.text); }
      for (const call of delta.tool_calls || []) {
        const slot = (run.toolCalls[call.index ?? run.toolCalls.length] ??= { name: "", arguments: "" });
        if (call.function && call.function.name) slot.name = call.function.name;
        if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
        view.onToolCalls(run.toolCalls);
      }
      if (choice.finish_reason) run.finish = choice.finish_reason;
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) if (line.startsWith("data:")) handle(line.slice(5).trim());
    }
  }
  const ended = performance.now();
  run.ttft_s = firstAt === null ? null : (firstAt - started) / 1000;
  const generated = run.usage ? run.usage.completion_tokens : run.tokens.length;
  const decodeS = firstAt === null ? null : (ended - firstAt) / 1000;
  run.tokens_per_s = decodeS && generated > 1 ? (generated - 1) / decodeS : null;
  return run;
}

// ---------------------------------------------------------------------------- token view
function probColour(p) {
  const hue = Math.round(120 * Math.max(0, Math.min(1, p)));
  return `hsl(${hue} 75% 82%)`;
}

function tokenProb(lp) {
  const by = $("colour-by").value;
  const logprob = by === "processed" && lp.processed_logprob != null ? lp.processed_logprob : lp.logprob;
  return Math.exp(logprob);
}

function tokenSpan(lp, index) {
  const span = document.createElement("span");
  span.className = "tok";
  span.tabIndex = 0;
  span.textContent = lp.token;
  span.dataset.index = String(index);
  span.dataset.logprob = String(lp.logprob);
  const p = tokenProb(lp);
  span.style.background = probColour(p);
  span.setAttribute("aria-label", `${JSON.stringify(lp.token)}, probability ${(p * 100).toFixed(1)} percent`);
  span.setAttribute("aria-describedby", "tok-popover");
  span.grokdLogprob = lp;
  return span;
}

function recolour() {
  for (const span of document.querySelectorAll(".tok")) span.style.background = probColour(tokenProb(span.grokdLogprob));
}

// Tokens compare by their bytes (two ids can show the same replacement text for partial UTF-8).
function sameToken(a, b) {
  return a.bytes && b.bytes ? a.bytes.join(",") === b.bytes.join(",") : a.token === b.token;
}

function altTable(caption, entries, chosen) {
  const table = document.createElement("table");
  table.className = "alts";
  table.dataset.kind = caption.startsWith("Model") ? "raw" : "processed";
  const cap = document.createElement("caption");
  cap.textContent = caption;
  table.append(cap);
  let total = 0;
  for (const e of entries) {
    const p = Math.exp(e.logprob);
    total += p;
    const tr = document.createElement("tr");
    tr.dataset.p = String(p);
    if (sameToken(e, chosen)) tr.className = "chosen";
    const t = document.createElement("td");
    t.textContent = JSON.stringify(e.token);
    const v = document.createElement("td");
    v.textContent = `${(p * 100).toFixed(2)}%`;
    const bar = document.createElement("td");
    const fill = document.createElement("span");
    fill.className = "bar";
    fill.style.width = `${Math.round(p * 100)}%`;
    bar.append(fill);
    tr.append(t, v, bar);
    table.append(tr);
  }
  const foot = document.createElement("tr");
  foot.className = "total";
  foot.innerHTML = "<td>shown</td>";
  const sum = document.createElement("td");
  sum.textContent = `${(total * 100).toFixed(2)}%`;
  foot.append(sum, document.createElement("td"));
  table.append(foot);
  return table;
}

function showPopover(span) {
  const lp = span.grokdLogprob;
  const pop = $("tok-popover");
  pop.replaceChildren();
  const head = document.createElement("p");
  const raw = Math.exp(lp.logprob);
  head.textContent = `${JSON.stringify(lp.token)}: model ${(raw * 100).toFixed(2)}%` +
    (lp.processed_logprob != null ? `, after the samplers ${(Math.exp(lp.processed_logprob) * 100).toFixed(2)}%` : "");
  pop.append(head, altTable("Model (before the samplers)", lp.top_logprobs || [], lp));
  if (lp.processed_top_logprobs) pop.append(altTable("After the sampler chain", lp.processed_top_logprobs, lp));
  else { const note = document.createElement("p"); note.className = "muted"; note.textContent = "The server sent no after-sampler distribution."; pop.append(note); }
  pop.hidden = false;
  const r = span.getBoundingClientRect();
  const width = Math.min(360, window.innerWidth - 16);
  pop.style.width = `${width}px`;
  pop.style.left = `${Math.max(8, Math.min(r.left + window.scrollX, window.scrollX + window.innerWidth - width - 8))}px`;
  pop.style.top = `${r.bottom + window.scrollY + 6}px`;
  pop.dataset.index = span.dataset.index;
}

function hidePopover() { $("tok-popover").hidden = true; }

function setupTokenEvents() {
  document.addEventListener("mouseover", (ev) => { const t = ev.target.closest && ev.target.closest(".tok"); if (t) showPopover(t); });
  document.addEventListener("focusin", (ev) => { const t = ev.target.closest && ev.target.closest(".tok"); if (t) showPopover(t); else hidePopover(); });
  document.addEventListener("click", (ev) => { const t = ev.target.closest && ev.target.closest(".tok"); if (t) showPopover(t); else if (!ev.target.closest("#tok-popover")) hidePopover(); });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") hidePopover(); });
  $("colour-by").addEventListener("change", recolour);
}

// An output area: token spans when logprobs arrive, else plain text; tool calls as JSON.
function outputView(el) {
  const tokens = document.createElement("div");
  tokens.className = "tokens";
  const calls = document.createElement("pre");
  calls.className = "tool-calls";
  calls.hidden = true;
  el.append(tokens, calls);
  let plain = true;
  return {
    el,
    onToken(lp, index) { if (plain) { tokens.replaceChildren(); plain = false; } tokens.append(tokenSpan(lp, index)); },
    onText(text) { el.dataset.text = text; if (plain) tokens.textContent = text; },
    onToolCalls(list) { calls.hidden = false; calls.textContent = JSON.stringify(list.map((c) => ({ name: c.name, arguments: c.arguments })), null, 2); },
  };
}

function statsText(run) {
  const u = run.usage || {};
  return [
    ["prompt tokens", u.prompt_tokens ?? "–"],
    ["completion tokens", u.completion_tokens ?? run.tokens.length],
    ["cached", (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) ?? "–"],
    ["time to first token", run.ttft_s == null ? "–" : `${(run.ttft_s * 1000).toFixed(0)} ms`],
    ["tokens/s", run.tokens_per_s == null ? "–" : run.tokens_per_s.toFixed(1)],
    ["finish", run.finish || "–"],
  ];
}

function fillStats(dl, run) {
  dl.replaceChildren();
  for (const [k, v] of statsText(run)) {
    const group = document.createElement("div");
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v); dd.dataset.stat = k;
    group.append(dt, dd);
    dl.append(group);
  }
}

// ---------------------------------------------------------------------------- chat
function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = `msg ${role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role;
  const body = document.createElement("div");
  body.className = "body";
  if (text !== undefined) { body.textContent = text; body.dataset.text = text; }
  li.append(who, body);
  $("messages").append(li);
  return body;
}

function setRunning(on) {
  $("send").disabled = on;
  $("compare-run").disabled = on;
  $("stop-run").disabled = !on;
}

async function sendChat() {
  showError(null);
  const prompt = $("prompt").value;
  if (!prompt.trim()) { showError(new Error("Write a prompt first.")); return; }
  let body;
  const messages = [...systemMessages(), ...lab.history, { role: "user", content: prompt }];
  try { body = baseBody(messages); } catch (err) { showError(err); return; }
  setCode(body);
  addMessage("user", prompt);
  const out = addMessage("assistant");
  out.dataset.state = "streaming";
  out.setAttribute("aria-busy", "true");  // screen readers read the reply once, when it is complete
  const view = outputView(out);
  const controller = new AbortController();
  lab.running.add(controller);
  setRunning(true);
  try {
    const run = await streamChat(body, view, controller);
    out.dataset.state = "done";
    out.dataset.chunks = String(run.chunks);
    out.dataset.text = run.text;
    lab.history.push({ role: "user", content: prompt });
    lab.history.push({ role: "assistant", content: run.text });
    fillStats($("stats"), run);
  } catch (err) {
    out.dataset.state = "error";
    if (err.name !== "AbortError") showError(err); else out.dataset.state = "stopped";
  } finally {
    out.setAttribute("aria-busy", "false");
    lab.running.delete(controller);
    setRunning(lab.running.size > 0);
  }
}

// ---------------------------------------------------------------------------- compare
let columnCount = 0;

function addColumn(overrides) {
  columnCount += 1;
  const name = String.fromCharCode(64 + columnCount);
  const col = document.createElement("section");
  col.className = "column";
  col.dataset.name = name;
  col.setAttribute("aria-label", `Column ${name}`);
  const head = document.createElement("div");
  head.className = "column-head";
  const label = document.createElement("label");
  label.textContent = `${name}: overrides (JSON) `;
  const area = document.createElement("textarea");
  area.className = "overrides";
  area.rows = 2;
  area.spellcheck = false;
  area.value = overrides;
  label.append(area);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `remove column ${name}`);
  remove.addEventListener("click", () => { if (document.querySelectorAll(".column").length > 2) col.remove(); });
  head.append(label, remove);
  const out = document.createElement("div");
  out.className = "output";
  const stats = document.createElement("dl");
  stats.className = "stats";
  col.append(head, out, stats);
  $("columns").append(col);
  return col;
}

function markDivergence(results) {
  for (const el of document.querySelectorAll(".tok.diverge")) el.classList.remove("diverge");
  const seqs = results.map((r) => r.run.tokens.map((t) => t.token));
  const shortest = Math.min(...seqs.map((s) => s.length));
  let at = -1;
  for (let i = 0; i < Math.max(...seqs.map((s) => s.length)); i++) {
    if (i >= shortest || seqs.some((s) => s[i] !== seqs[0][i])) { at = i; break; }
  }
  const note = $("divergence");
  note.dataset.index = String(at);
  if (at < 0) { note.textContent = "All columns produced the same tokens."; return; }
  note.textContent = `The columns diverge at token ${at + 1}.`;
  for (const r of results) {
    const span = r.col.querySelector(`.tok[data-index="${at}"]`);
    if (span) { span.classList.add("diverge"); span.setAttribute("aria-label", `${span.getAttribute("aria-label")}, first divergent token`); }
  }
}

async function runCompare() {
  showError(null);
  const prompt = $("prompt").value;
  if (!prompt.trim()) { showError(new Error("Write a prompt first.")); return; }
  const cols = [...document.querySelectorAll(".column")];
  const bodies = [];
  try {
    for (const col of cols) {
      const text = col.querySelector(".overrides").value.trim();
      let overrides = {};
      if (text) {
        try { overrides = JSON.parse(text); } catch (e) { throw new Error(`Column ${col.dataset.name}: overrides are not valid JSON (${e.message})`); }
      }
      const body = { ...baseBody([...systemMessages(), { role: "user", content: prompt }]), ...overrides };
      if (body.seed === undefined) body.seed = 1; // same seed everywhere, even with the panel's left empty
      bodies.push(body);
    }
  } catch (err) { showError(err); return; }
  setCode(bodies[0]);
  $("divergence").textContent = "Running…";
  delete $("divergence").dataset.index;
  setRunning(true);
  const results = await Promise.all(cols.map(async (col, i) => {
    const out = col.querySelector(".output");
    out.replaceChildren();
    out.dataset.state = "streaming";
    const controller = new AbortController();
    lab.running.add(controller);
    try {
      const run = await streamChat(bodies[i], outputView(out), controller);
      out.dataset.state = "done";
      fillStats(col.querySelector(".stats"), run);
      return { col, run };
    } catch (err) {
      out.dataset.state = "error";
      if (err.name !== "AbortError") showError(err);
      return null;
    } finally {
      lab.running.delete(controller);
    }
  }));
  setRunning(lab.running.size > 0);
  if (results.every(Boolean)) markDivergence(results);
  else $("divergence").textContent = "A column failed; nothing to compare.";
}

// ---------------------------------------------------------------------------- code view
function pyLiteral(v, indent = 0) {
  const pad = " ".repeat(indent + 4), end = " ".repeat(indent);
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) {
    if (!v.length) return "[]";
    return `[\n${v.map((x) => pad + pyLiteral(x, indent + 4)).join(",\n")},\n${end}]`;
  }
  const keys = Object.keys(v);
  if (!keys.length) return "{}";
  return `{\n${keys.map((k) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v[k], indent + 4)}`).join(",\n")},\n${end}}`;
}

function curlCode(body) {
  const json = JSON.stringify(body, null, 2).replaceAll("'", "'\\''");
  return `curl -N ${location.origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $GROKD_API_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${json}'`;
}

function openaiCode(body) {
  const kwargs = Object.entries(body).filter(([k]) => OPENAI_FIELDS.has(k));
  const extra = Object.fromEntries(Object.entries(body).filter(([k]) => !OPENAI_FIELDS.has(k)));
  const lines = kwargs.map(([k, v]) => `    ${k}=${pyLiteral(v, 4)},`);
  if (Object.keys(extra).length) lines.push(`    extra_body=${pyLiteral(extra, 4)},  # grokd's own sampler fields`);
  return [
    "import os", "", "from openai import OpenAI", "",
    `client = OpenAI(base_url="${location.origin}/v1", api_key=os.environ.get("GROKD_API_KEY", "none"))`,
    "stream = client.chat.completions.create(", ...lines, ")",
    "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    '        print(chunk.choices[0].delta.content, end="", flush=True)',
  ].join("\n");
}

function xaiCode(body) {
  const msgs = body.messages.map((m) => `chat.append(${m.role === "assistant" ? "assistant" : m.role}(${JSON.stringify(m.content)}))`);
  const kwargs = Object.entries(body).filter(([k]) => XAI_FIELDS.has(k) && k !== "response_format" && k !== "tools");
  const left = Object.keys(body).filter((k) => !XAI_FIELDS.has(k) && !["messages", "stream", "stream_options"].includes(k));
  const lines = kwargs.map(([k, v]) => `    ${k}=${pyLiteral(v, 4)},`);
  const roles = [...new Set(body.messages.map((m) => m.role))].sort().join(", ");
  const out = [
    "# xai-sdk speaks gRPC: it reaches xAI's API (or a gRPC gateway via api_host=...), not grokd's HTTP port.",
    "import os", "", "from xai_sdk import Client", `from xai_sdk.chat import ${roles}`, "",
    'client = Client(api_key=os.environ["XAI_API_KEY"])',
    "chat = client.chat.create(", ...lines, ")",
    ...msgs,
    "for response, chunk in chat.stream():",
    '    print(chunk.content, end="", flush=True)',
  ];
  if (body.response_format) out.splice(out.indexOf(")") , 0, `    # response_format: ${JSON.stringify(body.response_format)} (use chat.parse with a pydantic model)`);
  if (left.length) out.push(`# not in xai-sdk's chat.create (grokd extras): ${left.join(", ")}`);
  return out.join("\n");
}

function setCode(body) {
  lab.lastRequest = body;
  renderCode();
}

function renderCode() {
  const body = lab.lastRequest;
  if (!body) return;
  const code = lab.codeLang === "curl" ? curlCode(body) : lab.codeLang === "openai" ? openaiCode(body) : xaiCode(body);
  $("code").firstElementChild.textContent = code;
  $("code").dataset.lang = lab.codeLang;
}

// ---------------------------------------------------------------------------- tabs
function setupTabs(list, onSelect) {
  const tabs = [...list.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      const panel = t.getAttribute("aria-controls");
      if (panel) $(panel).hidden = !on;
    }
    if (focus) tab.focus();
    onSelect(tab);
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(tab);
      if (ev.key === "ArrowRight") select(tabs[(i + 1) % tabs.length], true);
      else if (ev.key === "ArrowLeft") select(tabs[(i - 1 + tabs.length) % tabs.length], true);
      else if (ev.key === "Home") select(tabs[0], true);
      else if (ev.key === "End") select(tabs[tabs.length - 1], true);
    });
  }
}

// ---------------------------------------------------------------------------- metrics
function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    sums[m[1]] = (sums[m[1]] || 0) + Number(m[3]);
  }
  return sums;
}

async function pollMetrics() {
  try {
    const resp = await fetch("/metrics");
    if (!resp.ok) return;
    const m = parseMetrics(await resp.text());
    const now = performance.now();
    $("m-running").textContent = String(m.grokd_num_requests_running ?? "–");
    $("m-waiting").textContent = String(m.grokd_num_requests_waiting ?? "–");
    const kv = m.grokd_kv_cache_usage_ratio;
    $("m-kv").textContent = kv === undefined ? "–" : `${(kv * 100).toFixed(1)}%`;
    const gen = m.grokd_engine_generation_tokens_total ?? m.grokd_engine_generation_tokens;
    if (lab.metricsPrev && gen !== undefined) {
      const dt = (now - lab.metricsPrev.at) / 1000;
      $("m-tps").textContent = dt > 0 ? ((gen - lab.metricsPrev.gen) / dt).toFixed(1) : "–";
    }
    if (gen !== undefined) lab.metricsPrev = { at: now, gen };
    $("metrics").dataset.updated = String(Date.now());
  } catch (_) { /* the panel just keeps its last numbers */ }
}

// ---------------------------------------------------------------------------- wiring
function setup() {
  setupKeyDialog();
  setupTokenEvents();
  setupTabs(document.querySelector(".tabs"), () => {});
  setupTabs($("code-tabs"), (tab) => { lab.codeLang = tab.dataset.lang; renderCode(); });
  $("send").addEventListener("click", () => {
    if (!$("view-compare").hidden) runCompare(); else sendChat();
  });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $("send").click(); }
  });
  $("stop-run").addEventListener("click", () => { for (const c of lab.running) c.abort(); });
  $("clear").addEventListener("click", () => { lab.history = []; $("messages").replaceChildren(); $("stats").replaceChildren(); });
  $("compare-run").addEventListener("click", runCompare);
  $("compare-add").addEventListener("click", () => addColumn("{}").querySelector("textarea").focus());
  $("copy-code").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("code").textContent); $("copy-code").textContent = "Copied"; }
    catch (_) { $("copy-code").textContent = "Select the code and copy"; }
    setTimeout(() => { $("copy-code").textContent = "Copy"; }, 1500);
  });
  $("params").addEventListener("reset", () => setTimeout(() => lab.samplers && (buildSamplerControls(lab.samplers), buildOrder(lab.samplers)), 0));
  if (window.matchMedia("(max-width: 760px)").matches) $("params-panel").open = false; // prompt first on a phone
  addColumn('{"temperature": 0}');
  addColumn('{"temperature": 1.5}');
  loadServer();
  pollMetrics();
  setInterval(pollMetrics, 2000);
}

setup();
