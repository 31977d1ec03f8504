// Portico playground: chat with a served model through the public API, streaming, with no framework and no
// build step. Every call goes to this same origin with the pasted key as a Bearer token, exactly as any client.
"use strict";

const KEY_STORAGE = "portico.playground.apiKey";
const $ = (id) => document.getElementById(id);

let messages = [];  // the conversation sent with each request: user and assistant turns
let inFlight = null;  // AbortController of the answer being streamed

// An error the API returned: its envelope's message and code, and the request id to quote.
class ApiError extends Error {
  constructor(error, status) {
    super(error.message || `The server answered HTTP ${status}.`);
    this.code = error.code || `http_${status}`;
    this.requestId = error.request_id || null;
  }
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Not the JSON envelope (a proxy's page, say): the status alone describes it.
  }
  return new ApiError(body.error || {}, response.status);
}

function apiHeaders() {
  const headers = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  return headers;
}

function showStatus(text) {
  $("status").textContent = text;
}

function describe(error) {
  const request = error.requestId ? ` · request ${error.requestId}` : "";
  return `${error.message} (${error.code}${request})`;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: apiHeaders() });
  if (!response.ok) throw await errorOf(response);
  const { data } = await response.json();
  const select = $("model");
  const previous = select.value;
  const chat = data.filter((model) => model.capabilities.includes("chat"));
  select.replaceChildren(...chat.map((model) => new Option(model.id, model.id)));
  if (chat.some((model) => model.id === previous)) select.value = previous;
  showStatus(chat.length ? "" : "This server serves no chat model.");
}

function refreshModels() {
  loadModels().catch((error) => showStatus(`Could not list models: ${describe(error)}`));
}

// The `data:` payloads of an SSE body as they arrive. Portico ends every event with a blank line ("\n\n");
// comment lines (heartbeats) carry no data and are dropped.
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines.filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart());
      if (data.length) yield data.join("\n");
    }
  }
}

function addMessage(role, text) {
  const message = document.createElement("div");
  message.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  message.append(body);
  $("transcript").append(message);
  message.scrollIntoView({ block: "end" });
  return message;
}

function addLine(message, className, text) {
  const line = document.createElement("div");
  line.className = className;
  line.textContent = text;
  message.append(line);
  message.scrollIntoView({ block: "end" });
}

function usageLine(usage, requestId, ttftMs) {
  const cost = usage.cost === undefined ? "n/a" : `$${usage.cost.toFixed(6)}`;
  const ttft = ttftMs === null ? "no tokens" : `${Math.round(ttftMs)} ms`;
  return (
    `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens · cost ${cost}` +
    ` · request ${requestId} · TTFT ${ttft}`
  );
}

function chatRequest() {
  return {
    model: $("model").value,
    messages,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    stream: true,
    stream_options: { include_usage: true },
  };
}

// Streams one answer into `message`; returns its text. Throws ApiError for an error status or error event.
async function streamAnswer(message, signal) {
  const text = message.querySelector(".text");
  const started = performance.now();
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: apiHeaders(),
    body: JSON.stringify(chatRequest()),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  const requestId = response.headers.get("x-request-id");
  let ttftMs = null;
  let usage = null;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(chunk.error, response.status);
    const delta = chunk.choices[0]?.delta?.content;
    if (delta) {
      ttftMs ??= performance.now() - started;
      text.textContent += delta;
      message.scrollIntoView({ block: "end" });
    }
    usage = chunk.usage || usage;
  }
  if (usage) addLine(message, "usage", usageLine(usage, requestId, ttftMs));
  return text.textContent;
}

async function send(prompt) {
  const before = messages;
  messages = [...messages, { role: "user", content: prompt }];
  addMessage("user", prompt);
  const message = addMessage("assistant", "");
  const controller = new AbortController();
  inFlight = controller;
  $("send").disabled = true;
  try {
    const answer = await streamAnswer(message, controller.signal);
    messages = [...messages, { role: "assistant", content: answer }];
  } catch (error) {
    if (error.name === "AbortError") return;
    // The failed turn leaves the conversation as it was, so the next message is not sent after an unanswered one.
    messages = before;
    message.classList.add("error");
    addLine(message, "failure", error instanceof ApiError ? describe(error) : `The request failed: ${error.message}`);
  } finally {
    if (inFlight === controller) finishTurn();
  }
}

function finishTurn() {
  inFlight = null;
  $("send").disabled = false;
}

function newChat() {
  inFlight?.abort();
  finishTurn();
  messages = [];
  $("transcript").replaceChildren();
  $("prompt").focus();
}

function submitPrompt(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || inFlight) return;
  $("prompt").value = "";
  send(prompt);
}

function start() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    refreshModels();
  });
  $("new-chat").addEventListener("click", newChat);
  $("composer").addEventListener("submit", submitPrompt);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitPrompt(event);
  });
  refreshModels();
}

start();
