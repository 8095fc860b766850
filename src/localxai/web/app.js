// The localxai playground: a chat on this server's own public API, streamed, with the user's key:
// /v1/chat/completions, or /v1/responses once a server-side tool (code execution, web search, a remote MCP
// server) is on, since the server runs those in its own loop. Conversations, settings and the key live in
// this browser's localStorage only.

import { codeBlock, escapeHtml, renderMarkdown } from "./markdown.js";
import { snippet } from "./snippets.js";

const STORE = {
  key: "localxai.key",
  settings: "localxai.settings",
  conversations: "localxai.conversations",
  current: "localxai.current",
};
const $ = (id) => document.getElementById(id);

const state = {
  keyRequired: false,
  grpcPort: 0, // from /playground/config.json: where xai-sdk snippets connect
  key: localStorage.getItem(STORE.key) || "",
  models: [], // {id, input_modalities, reasoning_efforts}
  serverTools: {}, // kind -> why this server cannot run it (null: it can), from /playground/models.json
  conversations: load(STORE.conversations, []),
  currentId: localStorage.getItem(STORE.current),
  attachments: [], // data URLs waiting to be sent
  controller: null,
  codeLang: "curl",
};

function load(name, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(name));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function persist() {
  try {
    localStorage.setItem(STORE.conversations, JSON.stringify(state.conversations));
    if (state.currentId) localStorage.setItem(STORE.current, state.currentId);
  } catch (err) {
    banner(`Could not save the conversation in this browser (${err.name}): images take much room; ` +
      "delete an old conversation.");
  }
}

// ---------- settings ----------

const FIELDS = {
  model: "model", system: "system", temperature: "temperature", top_p: "top-p", max_tokens: "max-tokens",
  reasoning_effort: "reasoning-effort", detail: "detail", format: "format", schema: "schema", tools: "tools",
  tool_choice: "tool-choice", mcp_url: "mcp-url", mcp_label: "mcp-label", mcp_allowed: "mcp-allowed",
};
const CHECKS = { code_execution: "tool-code", web_search: "tool-web" }; // server-side tools, by xAI's names

function readSettings() {
  const out = {};
  for (const [name, id] of Object.entries(FIELDS)) out[name] = $(id).value;
  for (const [name, id] of Object.entries(CHECKS)) out[name] = $(id).checked;
  return out;
}

function restoreSettings() {
  const saved = load(STORE.settings, {});
  for (const [name, id] of Object.entries(FIELDS)) {
    if (name !== "model" && name !== "reasoning_effort" && typeof saved[name] === "string") $(id).value = saved[name];
  }
  for (const [name, id] of Object.entries(CHECKS)) $(id).checked = saved[name] === true;
  return saved;
}

function saveSettings() {
  localStorage.setItem(STORE.settings, JSON.stringify(readSettings()));
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value);
}

function takesImages() {
  const model = currentModel();
  return Boolean(model && (model.input_modalities || []).includes("image"));
}

function updateCapabilities() {
  const model = currentModel();
  const efforts = model ? model.reasoning_efforts || [] : [];
  const select = $("reasoning-effort");
  const previous = select.value || load(STORE.settings, {}).reasoning_effort || "";
  select.replaceChildren(new Option("default", ""), ...efforts.map((e) => new Option(e, e)));
  select.value = efforts.includes(previous) ? previous : "";
  $("reasoning-row").hidden = efforts.length === 0;
  const images = takesImages();
  $("attach").hidden = !images;
  $("detail-row").hidden = !images;
  const caps = [];
  if (images) caps.push("images");
  if (model && model.reasoning) caps.push("reasoning");
  $("model-caps").textContent = caps.length ? `takes ${caps.join(", ")}` : "";
  if (!images && state.attachments.length) {
    state.attachments = [];
    renderAttachments();
  }
  $("schema-row").hidden = $("format").value !== "json_schema";
}

// ---------- the API ----------

function headers() {
  // Open access still wants a bearer token (as xAI does); any value is accepted then.
  return { "Content-Type": "application/json", Authorization: `Bearer ${state.key || "local"}` };
}

class ApiError extends Error {
  constructor(message, status, requestId) {
    super(message);
    this.status = status;
    this.requestId = requestId;
  }
}

function errorMessage(body, fallback) {
  // xAI: {"code": "...", "error": "text"}; OpenAI-style {"error": {"message": ...}} also understood.
  if (body && typeof body.error === "string") return body.error;
  if (body && body.error && typeof body.error.message === "string") return body.error.message;
  if (body && typeof body.message === "string") return body.message;
  return fallback;
}

async function failure(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: the text itself
  }
  const message = errorMessage(body, text || response.statusText);
  return new ApiError(message, response.status, response.headers.get("x-request-id"));
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.json();
}

function isKeyProblem(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403 ||
    (err.status === 400 && /API key/i.test(err.message)));
}

async function* sseData(body) {
  // Server-sent events: blocks end with a blank line; only `data:` lines matter here (`:` lines are pings).
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const boundary = /\r?\n\r?\n/;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let match;
    while ((match = boundary.exec(buffer))) {
      const block = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
  }
}

// ---------- requests ----------

function parseJsonField(id, what) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${err.message}`);
  }
}

function toolsFromField() {
  const tools = parseJsonField("tools", "Tools");
  if (tools === undefined) return undefined;
  const list = Array.isArray(tools) ? tools : [tools];
  // A bare {name, parameters} is wrapped as xAI's {"type": "function", "function": {...}}.
  return list.map((t) => (t && t.type ? t : { type: "function", function: t }));
}

function responseFormat() {
  if ($("format").value !== "json_schema") return undefined;
  const schema = parseJsonField("schema", "The JSON schema");
  if (!schema) throw new Error("JSON schema output needs a schema.");
  if (schema.schema && typeof schema.schema === "object") {
    return { type: "json_schema", json_schema: { name: schema.name || "output", ...schema } };
  }
  return { type: "json_schema", json_schema: { name: "output", schema, strict: true } };
}

function wireMessage(message) {
  if (message.role === "user") {
    if (!message.images || !message.images.length) return { role: "user", content: message.text };
    const parts = message.text ? [{ type: "text", text: message.text }] : [];
    for (const url of message.images) {
      parts.push({ type: "image_url", image_url: { url, detail: message.detail || "auto" } });
    }
    return { role: "user", content: parts };
  }
  if (message.role === "tool") return { role: "tool", tool_call_id: message.tool_call_id, content: message.content };
  const out = { role: "assistant", content: message.content || "" };
  if (message.tool_calls && message.tool_calls.length) out.tool_calls = message.tool_calls;
  return out;
}

function number(id, integer) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  const value = integer ? parseInt(text, 10) : parseFloat(text);
  return Number.isFinite(value) ? value : undefined;
}

function sampling() {
  return {
    temperature: number("temperature", false),
    top_p: number("top-p", false),
    max_tokens: number("max-tokens", true),
    reasoning_effort: $("reasoning-row").hidden ? undefined : $("reasoning-effort").value || undefined,
  };
}

function sentMessages(messages) {
  // An answer that failed before any output is not part of the conversation.
  return messages.filter((m) => !(m.role === "assistant" && m.error && !m.content && !(m.tool_calls || []).length));
}

function chatBody(messages, server) {
  const body = { model: $("model").value, messages: [] };
  const system = $("system").value.trim();
  if (system) body.messages.push({ role: "system", content: system });
  for (const m of sentMessages(messages)) body.messages.push(wireMessage(m));
  const extra = { ...sampling(), response_format: responseFormat(), tools: toolsFromField() };
  if ((extra.tools || server.length) && $("tool-choice").value) extra.tool_choice = $("tool-choice").value;
  for (const [name, value] of Object.entries(extra)) if (value !== undefined) body[name] = value;
  body.stream = true;
  body.stream_options = { include_usage: true };
  return body;
}

function serverTools() {
  // In the shapes xAI's Responses API takes (no container, no require_approval), which localxai takes too.
  const tools = [];
  if ($("tool-code").checked && !$("tool-code").disabled) tools.push({ type: "code_interpreter" });
  if ($("tool-web").checked && !$("tool-web").disabled) tools.push({ type: "web_search" });
  const url = $("mcp-url").value.trim();
  if (url && !$("mcp-url").disabled) {
    if (!/^https?:\/\/\S+$/i.test(url)) throw new Error("The MCP server URL must be an http:// or https:// URL.");
    const mcp = { type: "mcp", server_url: url, server_label: $("mcp-label").value.trim() || "tools" };
    const allowed = $("mcp-allowed").value.split(",").map((name) => name.trim()).filter(Boolean);
    if (allowed.length) mcp.allowed_tools = allowed;
    tools.push(mcp);
  }
  return tools;
}

function inputItems(message) {
  // One playground message as Responses input items (the conversation is sent whole: store is false).
  if (message.role === "user") {
    if (!message.images || !message.images.length) return [{ role: "user", content: message.text }];
    const parts = message.text ? [{ type: "input_text", text: message.text }] : [];
    for (const url of message.images) parts.push({ type: "input_image", image_url: url, detail: message.detail || "auto" });
    return [{ role: "user", content: parts }];
  }
  if (message.role === "tool") return [{ type: "function_call_output", call_id: message.tool_call_id, output: message.content }];
  const items = message.content ? [{ role: "assistant", content: message.content }] : [];
  for (const call of message.tool_calls || []) {
    items.push({ type: "function_call", call_id: call.id, name: call.function.name, arguments: call.function.arguments });
  }
  return items;
}

const INCLUDES = { code_interpreter: "code_interpreter_call.outputs", web_search: "web_search_call.action.sources" };

function responsesBody(messages, server) {
  const body = { model: $("model").value, input: [] };
  const system = $("system").value.trim();
  if (system) body.input.push({ role: "system", content: system });
  for (const m of sentMessages(messages)) body.input.push(...inputItems(m));
  const functions = (toolsFromField() || []).map((t) => (t.type === "function" && t.function ? { type: "function", ...t.function } : t));
  body.tools = [...functions, ...server];
  if ($("tool-choice").value) body.tool_choice = $("tool-choice").value;
  const { max_tokens: maxTokens, reasoning_effort: effort, ...rest } = sampling();
  for (const [name, value] of Object.entries({ ...rest, max_output_tokens: maxTokens })) {
    if (value !== undefined) body[name] = value;
  }
  if (effort) body.reasoning = { effort };
  const format = responseFormat();
  if (format) body.text = { format: { type: "json_schema", ...format.json_schema } };
  const include = server.map((t) => INCLUDES[t.type]).filter(Boolean);
  if (include.length) body.include = include;
  body.store = false;
  body.stream = true;
  return body;
}

function buildRequest(messages) {
  // {api, body} for the wire, with the Chat Completions form beside it (the xai-sdk snippet is built from it).
  const server = serverTools();
  const chat = chatBody(messages, server);
  if (!server.length) return { api: "chat", body: chat, chat, server };
  return { api: "responses", body: responsesBody(messages, server), chat, server };
}

// ---------- conversations ----------

function conversation() {
  let conv = state.conversations.find((c) => c.id === state.currentId);
  if (!conv) {
    conv = { id: crypto.randomUUID(), title: "New chat", messages: [], created: Date.now() };
    state.conversations.unshift(conv);
    state.currentId = conv.id;
  }
  return conv;
}

function renderConversations() {
  const nav = $("conversations");
  nav.replaceChildren();
  for (const conv of state.conversations) {
    const row = document.createElement("div");
    row.className = "conv" + (conv.id === state.currentId ? " active" : "");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conv-title";
    open.textContent = conv.title;
    open.addEventListener("click", () => {
      if (state.controller) return;
      state.currentId = conv.id;
      persist();
      renderAll();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "conv-delete";
    remove.title = "Delete this conversation";
    remove.textContent = "×";
    remove.disabled = Boolean(state.controller);
    remove.addEventListener("click", () => {
      // Not while an answer streams: the list and messages would be rebuilt, detaching the streaming node.
      if (state.controller) return;
      state.conversations = state.conversations.filter((c) => c.id !== conv.id);
      if (state.currentId === conv.id) state.currentId = state.conversations[0]?.id || null;
      persist();
      renderAll();
    });
    row.append(open, remove);
    nav.append(row);
  }
}

// ---------- rendering ----------

function statLine(message) {
  const s = message.stats || {};
  const u = message.usage;
  const parts = [];
  const item = (name, value, label) => parts.push(
    `<span class="stat" data-stat="${name}" data-value="${escapeHtml(String(value))}"><b>${escapeHtml(label)}</b> ` +
    `${escapeHtml(String(value))}</span>`);
  if (u) {
    item("prompt", u.prompt_tokens, "prompt");
    item("cached", u.prompt_tokens_details?.cached_tokens ?? 0, "cached");
    item("completion", u.completion_tokens, "completion");
    item("reasoning", u.completion_tokens_details?.reasoning_tokens ?? 0, "reasoning");
    const images = u.prompt_tokens_details?.image_tokens ?? 0;
    if (images) item("image", images, "image");
    if (u.server_tools !== undefined) item("server-tools", u.server_tools, "server-side tools");
  }
  if (s.ttft_ms != null) item("ttft", `${Math.round(s.ttft_ms)} ms`, "TTFT");
  if (s.tokens_per_s != null) item("tps", `${s.tokens_per_s.toFixed(1)} tok/s`, "speed");
  if (message.finish_reason) item("finish", message.finish_reason, "finish");
  if (message.stopped) item("finish", "stopped by you", "finish");
  if (message.request_id) item("request-id", message.request_id, "request id");
  if (message.model) item("model", message.model, "model");
  return parts.join("");
}

function messageNode(message, index, last) {
  const node = document.createElement("article");
  node.className = `msg ${message.role}`;
  node.dataset.index = String(index);
  if (message.role === "user") {
    const text = document.createElement("div");
    text.className = "content plain";
    text.textContent = message.text;
    node.append(text);
    if (message.images && message.images.length) {
      const row = document.createElement("div");
      row.className = "images";
      for (const url of message.images) {
        const img = document.createElement("img");
        img.src = url;
        img.alt = "attached image";
        row.append(img);
      }
      node.append(row);
    }
    return node;
  }
  if (message.role === "tool") {
    node.innerHTML = `<div class="tool-result"><b>tool result</b> <code>${escapeHtml(message.tool_call_id)}</code>` +
      `<pre>${escapeHtml(message.content)}</pre></div>`;
    return node;
  }
  fillAssistant(node, message);
  if (last && !message.pending && message.tool_calls && message.tool_calls.length) node.append(toolResultForm(message));
  return node;
}

function toolResultForm(message) {
  // The client side of function calling: the user plays the tool and sends its results back.
  const form = document.createElement("div");
  form.className = "tool-results";
  for (const call of message.tool_calls) {
    const label = document.createElement("label");
    label.textContent = `Result of ${call.function.name}`;
    const input = document.createElement("textarea");
    input.rows = 2;
    input.dataset.callId = call.id;
    input.placeholder = '{"temperature": 21}';
    label.append(input);
    form.append(label);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "send-tool-results";
  button.textContent = message.tool_calls.length > 1 ? "Send results" : "Send result";
  form.append(button);
  return form;
}

async function sendToolResults(form) {
  const conv = state.conversations.find((c) => c.id === state.currentId);
  if (!conv || state.controller) return;
  for (const input of form.querySelectorAll("textarea")) {
    conv.messages.push({ role: "tool", tool_call_id: input.dataset.callId, content: input.value });
  }
  await generate(conv);
}

function jsonBlock(text) {
  // JSON-schema output: shown as JSON, indented once it parses (while streaming, as it comes).
  let shown = text;
  try {
    shown = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // incomplete yet
  }
  return codeBlock("json", shown.split("\n"));
}

const CALL_NAMES = { web_search_call: "web search", code_interpreter_call: "code execution", mcp_call: "MCP" };

function webLink(url, text) {
  // Only http(s) links from a tool's output become links; anything else is shown as text.
  if (!/^https?:\/\//i.test(url || "")) return escapeHtml(text || url || "");
  return `<a href="${escapeHtml(url)}" target="_blank" rel="noopener noreferrer">${escapeHtml(text || url)}</a>`;
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text || ""; // still streaming, or not JSON: as sent
  }
}

function codeOf(call) {
  if (call.code) return call.code;
  try {
    return JSON.parse(call.arguments || "{}").code || "";
  } catch {
    return ""; // arguments still streaming
  }
}

function serverCallHtml(call) {
  // A call the server ran in its loop, with what the request `include`d of its result.
  const title = call.type === "mcp_call" ? `MCP ${call.server_label || ""}.${call.name || ""}` : CALL_NAMES[call.type];
  const body = [];
  if (call.type === "code_interpreter_call") {
    body.push(`<pre class="call-code">${escapeHtml(codeOf(call))}</pre>`);
    for (const out of call.outputs || []) {
      if (out.type === "logs") body.push(`<pre class="call-output">${escapeHtml(out.logs)}</pre>`);
    }
  } else if (call.type === "web_search_call") {
    const action = call.action || {};
    if (action.type === "open_page") body.push(`<div class="call-action">open ${webLink(action.url)}</div>`);
    else body.push(`<div class="call-action">search <q>${escapeHtml(action.query || pretty(call.arguments))}</q></div>`);
    if ((action.sources || []).length) {
      body.push(`<ul class="call-sources">${action.sources.map((src) => `<li>${webLink(src.url)}</li>`).join("")}</ul>`);
    }
  } else {
    body.push(`<pre class="call-args">${escapeHtml(pretty(call.arguments))}</pre>`);
    if (call.output != null) body.push(`<pre class="call-output">${escapeHtml(call.output)}</pre>`);
  }
  if (call.error) body.push(`<div class="error">${escapeHtml(call.error)}</div>`);
  return `<details class="server-call" data-type="${escapeHtml(call.type)}" data-status="${escapeHtml(call.status)}" open>` +
    `<summary><b>${escapeHtml(title)}</b> <span class="call-status">${escapeHtml(call.status)}</span></summary>` +
    `${body.join("")}</details>`;
}

function citationsHtml(citations) {
  const urls = [...new Set(citations.map((c) => c.url))];
  return `<div class="citations"><b>Sources</b><ol>${urls.map((u) => `<li>${webLink(u)}</li>`).join("")}</ol></div>`;
}

function fillAssistant(node, message) {
  const html = [];
  if (message.reasoning) {
    html.push(`<details class="reasoning"${message.content ? "" : " open"}><summary>Reasoning</summary>` +
      `<div class="reasoning-text">${escapeHtml(message.reasoning)}</div></details>`);
  }
  if ((message.server_calls || []).length) {
    html.push(`<div class="server-calls">${message.server_calls.map(serverCallHtml).join("")}</div>`);
  }
  html.push(`<div class="content">${message.json ? jsonBlock(message.content || "") : renderMarkdown(message.content || "")}</div>`);
  if ((message.citations || []).length) html.push(citationsHtml(message.citations));
  if (message.tool_calls && message.tool_calls.length) {
    html.push('<div class="tool-calls">');
    for (const call of message.tool_calls) {
      const args = pretty(call.function.arguments);
      html.push(`<div class="tool-call" data-id="${escapeHtml(call.id || "")}"><b>tool call</b> ` +
        `<code>${escapeHtml(call.function.name || "")}</code><pre>${escapeHtml(args)}</pre></div>`);
    }
    html.push("</div>");
  }
  if (message.error) html.push(`<div class="error" role="alert">${escapeHtml(message.error)}</div>`);
  if (message.pending) html.push('<div class="typing" aria-label="generating"><span></span><span></span><span></span></div>');
  html.push(`<footer class="stats">${statLine(message)}</footer>`);
  node.innerHTML = html.join("");
  node.classList.toggle("streaming", Boolean(message.pending));
}

function renderMessages() {
  const conv = state.conversations.find((c) => c.id === state.currentId);
  const box = $("messages");
  box.replaceChildren();
  if (!conv || !conv.messages.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.innerHTML = "<h1>localxai playground</h1><p>Chat with the models this server serves, through its own " +
      "xAI-compatible API. <b>Show code</b> turns any request into curl, OpenAI Python or xai-sdk Python, " +
      "for this server or for api.x.ai.</p>";
    box.append(empty);
  } else {
    conv.messages.forEach((m, i) => box.append(messageNode(m, i, i === conv.messages.length - 1)));
  }
  box.scrollTop = box.scrollHeight;
  updateButtons();
}

function renderAll() {
  renderConversations();
  renderMessages();
}

function updateButtons() {
  const busy = Boolean(state.controller);
  const conv = state.conversations.find((c) => c.id === state.currentId);
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("regenerate").disabled = busy || !conv || !conv.messages.some((m) => m.role === "user");
  for (const button of document.querySelectorAll("#conversations .conv-delete")) button.disabled = busy;
}

let frame = 0;
function scheduleRender(node, message) {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fillAssistant(node, message);
    if (atBottom) box.scrollTop = box.scrollHeight;
  });
}

function banner(text) {
  const el = $("banner");
  el.textContent = text || "";
  el.hidden = !text;
}

// ---------- chat ----------

function mergeToolCalls(message, calls) {
  for (const call of calls) {
    const index = call.index ?? message.tool_calls.length;
    const slot = message.tool_calls[index] || (message.tool_calls[index] = {
      id: "", type: "function", function: { name: "", arguments: "" },
    });
    if (call.id) slot.id = call.id;
    if (call.function?.name) slot.function.name += call.function.name;
    if (call.function?.arguments) slot.function.arguments += call.function.arguments;
  }
}

function settingsProblem(messages) {
  // A settings field that does not parse (tools, schema): said beside the settings, nothing is sent.
  try {
    buildRequest(messages);
  } catch (err) {
    $("settings-error").textContent = err.message;
    $("settings-error").hidden = false;
    return true;
  }
  $("settings-error").hidden = true;
  return false;
}

async function* readChat(response, message, progress) {
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(errorMessage(chunk, "The stream failed."), response.status);
    if (chunk.usage) message.usage = chunk.usage;
    if (chunk.model) message.model = chunk.model;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      if (delta.content || delta.reasoning_content || delta.tool_calls) progress();
      if (delta.content) message.content += delta.content;
      if (delta.reasoning_content) message.reasoning += delta.reasoning_content;
      if (delta.tool_calls) mergeToolCalls(message, delta.tool_calls);
      if (choice.finish_reason) message.finish_reason = choice.finish_reason;
    }
    yield;
  }
}

function finishResponse(message, response) {
  // The final response object: usage in the stat line's (Chat Completions) names, and how it ended.
  const u = response.usage;
  if (u) {
    message.usage = {
      prompt_tokens: u.input_tokens,
      completion_tokens: u.output_tokens,
      prompt_tokens_details: { cached_tokens: u.input_tokens_details?.cached_tokens ?? 0 },
      completion_tokens_details: { reasoning_tokens: u.output_tokens_details?.reasoning_tokens ?? 0 },
      server_tools: u.num_server_side_tools_used ?? 0,
    };
  }
  if (response.status === "completed") message.finish_reason = message.tool_calls.length ? "tool_calls" : "stop";
  else message.finish_reason = response.incomplete_details?.reason || response.status;
  if (response.status === "failed") {
    throw new ApiError(response.error?.message || "The response failed.", 0);
  }
}

function serverCall(message, item) {
  // The call item with this id, added as it first appears, replaced by its later versions.
  const at = message.server_calls.findIndex((c) => c.id === item.id);
  if (at < 0) message.server_calls.push(item);
  else message.server_calls[at] = { ...message.server_calls[at], ...item };
}

async function* readResponses(response, message, progress) {
  for await (const data of sseData(response.body)) {
    const event = JSON.parse(data);
    switch (event.type) {
      case "error":
        throw new ApiError(event.message || errorMessage(event, "The stream failed."), response.status);
      case "response.created":
        message.model = event.response.model || message.model;
        break;
      case "response.output_text.delta":
        progress();
        message.content += event.delta;
        break;
      case "response.reasoning_summary_text.delta":
      case "response.reasoning_text.delta":
        progress();
        message.reasoning += event.delta;
        break;
      case "response.output_text.annotation.added":
        message.citations.push(event.annotation);
        break;
      case "response.code_interpreter_call_code.delta": {
        const call = message.server_calls.find((c) => c.id === event.item_id);
        if (call) call.code = (call.code || "") + event.delta;
        break;
      }
      case "response.output_item.added":
      case "response.output_item.done": {
        const item = event.item;
        if (CALL_NAMES[item.type]) {
          progress();
          serverCall(message, item);
        } else if (item.type === "function_call" && event.type === "response.output_item.done") {
          progress();
          message.tool_calls.push({ id: item.call_id, type: "function", function: { name: item.name, arguments: item.arguments } });
        }
        break;
      }
      case "response.completed":
      case "response.incomplete":
      case "response.failed":
        finishResponse(message, event.response);
        break;
      default:
        break;
    }
    yield;
  }
}

async function generate(conv) {
  if (settingsProblem(conv.messages)) return;
  const { api, body } = buildRequest(conv.messages);
  conv.lastRequest = body;
  const message = {
    role: "assistant", content: "", reasoning: "", tool_calls: [], server_calls: [], citations: [], pending: true,
    model: body.model,
  };
  if (body.response_format || body.text) message.json = true;
  conv.messages.push(message);
  renderAll();
  const node = $("messages").lastElementChild;
  const controller = new AbortController();
  state.controller = controller;
  updateButtons();
  const started = performance.now();
  let first = null;
  let pieces = 0;
  const progress = () => {
    first ??= performance.now();
    pieces += 1;
  };
  try {
    const response = await fetch(api === "chat" ? "/v1/chat/completions" : "/v1/responses", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    message.request_id = response.headers.get("x-request-id");
    if (!response.ok) throw await failure(response);
    const read = api === "chat" ? readChat : readResponses;
    for await (const _ of read(response, message, progress)) scheduleRender(node, message);
  } catch (err) {
    if (err.name === "AbortError") {
      message.stopped = true;
    } else {
      message.error = err.message || String(err);
      if (err instanceof ApiError && err.status) message.error = `${err.message} (HTTP ${err.status})`;
      if (isKeyProblem(err) && state.keyRequired) askKey(err.message);
    }
  } finally {
    const ended = performance.now();
    const tokens = message.usage ? message.usage.completion_tokens : pieces;
    // A tool loop's time is also its tools' and its turns' prompts: no tokens per second for it.
    const decoding = first !== null && ended - first > 0 && tokens > 1 && !message.server_calls.length;
    message.stats = {
      ttft_ms: first === null ? null : first - started,
      tokens_per_s: decoding ? (tokens - 1) / ((ended - first) / 1000) : null,
    };
    delete message.pending;
    if (state.controller === controller) state.controller = null;
    if (frame) {
      cancelAnimationFrame(frame);
      frame = 0;
    }
    persist();
    renderAll();
    refreshModelLabels();
  }
}

async function refreshModelLabels() {
  // A model loads on its first message and others may be unloaded meanwhile: say so in the picker.
  let listed;
  try {
    listed = await api("/v1/language-models");
  } catch {
    return; // the labels stay as they were
  }
  for (const option of $("model").options) {
    const model = listed.models.find((m) => m.id === option.value);
    if (model) option.text = modelLabel(model);
  }
}

async function send() {
  if (state.controller) return;
  const text = $("input").value.trim();
  if (!text && !state.attachments.length) return;
  if (!$("model").value) {
    banner("No model to talk to: the model list did not load.");
    return;
  }
  const conv = conversation();
  const message = { role: "user", text };
  if (state.attachments.length) {
    message.images = state.attachments.slice();
    message.detail = $("detail").value;
  }
  if (settingsProblem([...conv.messages, message])) return;
  if (conv.title === "New chat") conv.title = (text || "Image").slice(0, 48);
  conv.messages.push(message);
  $("input").value = "";
  state.attachments = [];
  renderAttachments();
  await generate(conv);
}

async function regenerate() {
  const conv = state.conversations.find((c) => c.id === state.currentId);
  if (!conv || state.controller) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  if (!conv.messages.length) return;
  await generate(conv);
}

// ---------- images ----------

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attachments.forEach((url, i) => {
    const item = document.createElement("div");
    item.className = "attachment";
    const img = document.createElement("img");
    img.src = url;
    img.alt = `attachment ${i + 1}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "Remove";
    remove.addEventListener("click", () => {
      state.attachments.splice(i, 1);
      renderAttachments();
    });
    item.append(img, remove);
    box.append(item);
  });
  box.hidden = state.attachments.length === 0;
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attach(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/"));
  if (!images.length) return;
  if (!takesImages()) {
    banner(`${$("model").value || "This model"} does not take images.`);
    return;
  }
  for (const file of images) state.attachments.push(await readAsDataUrl(file));
  renderAttachments();
}

// ---------- key ----------

function askKey(problem) {
  $("key-error").textContent = problem || "";
  $("key-error").hidden = !problem;
  $("key-input").value = state.key;
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

// ---------- show code ----------

function codeRequest() {
  const conv = state.conversations.find((c) => c.id === state.currentId);
  const draft = $("input").value.trim();
  const messages = conv ? conv.messages.filter((m) => !m.pending) : [];
  if (draft || state.attachments.length) {
    const message = { role: "user", text: draft };
    if (state.attachments.length) {
      message.images = state.attachments.slice();
      message.detail = $("detail").value;
    }
    return buildRequest([...messages, message]);
  }
  while (messages.length && messages[messages.length - 1].role === "assistant") messages.pop();
  if (!messages.length) return buildRequest([{ role: "user", text: "Hello!" }]);
  return buildRequest(messages);
}

function defaultGrpcHost() {
  const host = location.hostname;
  const loopback = ["127.0.0.1", "localhost", "[::1]", "::1"].includes(host);
  return `${loopback ? "localhost" : host}:${state.grpcPort || 50051}`;
}

function renderCode() {
  let request;
  try {
    request = codeRequest();
  } catch (err) {
    $("code").textContent = err.message;
    return;
  }
  const target = document.querySelector('input[name="target"]:checked').value;
  const options = {
    target,
    baseUrl: `${location.origin}/v1`,
    grpcHost: $("grpc-host").value.trim() || defaultGrpcHost(),
    keyRequired: state.keyRequired,
  };
  const { code, note } = snippet(state.codeLang, request, options);
  $("code").textContent = code;
  $("code-note").textContent = note;
  $("grpc-row").hidden = !(state.codeLang === "xai" && target === "local");
  for (const tab of document.querySelectorAll("#code-dialog [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.lang === state.codeLang));
  }
}

// ---------- start ----------

async function loadModels() {
  let listed;
  try {
    listed = await api("/v1/language-models");
  } catch (err) {
    banner(`Could not list the models: ${err.message}`);
    if (isKeyProblem(err)) askKey(err.message);
    return;
  }
  banner("");
  let extra = { models: [] };
  try {
    extra = await api("/playground/models.json");
  } catch {
    // an older server: no reasoning efforts offered
  }
  state.models = listed.models.map((m) => ({ ...m, ...(extra.models.find((e) => e.id === m.id) || {}) }));
  state.serverTools = extra.server_tools || {};
  offerServerTools();
  const select = $("model");
  const previous = select.value || load(STORE.settings, {}).model;
  select.replaceChildren(...state.models.map((m) => new Option(modelLabel(m), m.id)));
  if (state.models.some((m) => m.id === previous)) select.value = previous;
  updateCapabilities();
}

function modelLabel(model) {
  // localxai's extra fields: an embedded model not in memory loads on its first message; an upstream
  // model with no healthy replica cannot answer now.
  if (model.healthy === false) return `${model.id} (unavailable)`;
  if (model.loaded === false) return `${model.id} (not loaded: loads on first use)`;
  return model.id;
}

const TOOL_INPUTS = { code_execution: ["tool-code", "code-why"], web_search: ["tool-web", "web-why"],
  mcp: ["mcp-url", "mcp-why"] };

function offerServerTools() {
  // A tool this server cannot run is greyed out, with the server's own reason beside it.
  for (const [kind, [input, why]] of Object.entries(TOOL_INPUTS)) {
    const reason = state.serverTools[kind] || "";
    $(input).disabled = Boolean(reason);
    $(why).textContent = reason ? `(${reason})` : "";
  }
  $("mcp-label").disabled = $("mcp-allowed").disabled = $("mcp-url").disabled;
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", () => {
    if (state.controller) return;
    const current = state.conversations.find((c) => c.id === state.currentId);
    if (!current || current.messages.length) state.currentId = null; // an empty one is reused
    conversation();
    persist();
    renderAll();
    $("input").focus();
  });
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", async () => {
    await attach($("file").files);
    $("file").value = "";
  });
  $("input").addEventListener("paste", (event) => {
    const files = event.clipboardData ? event.clipboardData.files : [];
    if (files.length) {
      event.preventDefault();
      attach(files);
    }
  });
  const main = $("main");
  main.addEventListener("dragover", (event) => {
    if (!takesImages()) return;
    event.preventDefault();
    $("drop-hint").hidden = false;
  });
  main.addEventListener("dragleave", () => {
    $("drop-hint").hidden = true;
  });
  main.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop-hint").hidden = true;
    if (event.dataTransfer) attach(event.dataTransfer.files);
  });
  for (const id of [...Object.values(FIELDS), ...Object.values(CHECKS)]) $(id).addEventListener("change", () => {
    saveSettings();
    updateCapabilities();
  });
  $("toggle-settings").addEventListener("click", () => {
    const hidden = document.body.classList.toggle("no-settings");
    $("toggle-settings").setAttribute("aria-expanded", String(!hidden));
  });
  $("messages").addEventListener("click", (event) => {
    const results = event.target.closest(".send-tool-results");
    if (results) {
      sendToolResults(results.parentElement);
      return;
    }
    const button = event.target.closest(".copy-block");
    if (!button) return;
    navigator.clipboard?.writeText(button.parentElement.querySelector("code").textContent);
    button.textContent = "Copied";
  });
  $("change-key").addEventListener("click", () => askKey(""));
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("key-form").addEventListener("submit", () => {
    state.key = $("key-input").value.trim();
    if (state.key) localStorage.setItem(STORE.key, state.key);
    else localStorage.removeItem(STORE.key);
    loadModels();
  });
  $("show-code").addEventListener("click", () => {
    $("grpc-host").value ||= defaultGrpcHost();
    renderCode();
    $("code-dialog").showModal();
  });
  for (const tab of document.querySelectorAll("#code-dialog [role=tab]")) {
    tab.addEventListener("click", () => {
      state.codeLang = tab.dataset.lang;
      renderCode();
    });
  }
  for (const radio of document.querySelectorAll('input[name="target"]')) radio.addEventListener("change", renderCode);
  $("grpc-host").addEventListener("input", renderCode);
  $("copy-code").addEventListener("click", () => {
    navigator.clipboard?.writeText($("code").textContent);
    $("copy-code").textContent = "Copied";
    setTimeout(() => ($("copy-code").textContent = "Copy"), 1500);
  });
  $("close-code").addEventListener("click", () => $("code-dialog").close());
}

async function start() {
  wire();
  restoreSettings();
  renderAll();
  try {
    const config = await (await fetch("/playground/config.json")).json();
    state.keyRequired = Boolean(config.key_required);
    state.grpcPort = Number(config.grpc_port) || 0;
  } catch {
    state.keyRequired = false;
  }
  if (state.keyRequired && !state.key) {
    askKey("");
  } else {
    await loadModels();
  }
  document.body.dataset.ready = "true";
}

start();
