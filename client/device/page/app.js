// The fedrec device page: plain JS, nothing external. It talks only to the server that served it
// (client/device/serve.py). Text from the catalogue is shown with textContent, never as HTML.
"use strict";

const SESSION_KEY = "fedrec-session"; // one session per browser session (sessionStorage)
const ITEM_EVENTS = ["view", "click", "add_to_cart", "purchase"];
const $ = (id) => document.getElementById(id);
const titles = new Map(); // item id -> title, of every item shown, to name the session's history

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = response.status === 204 ? {} : await response.json();
  if (!response.ok) {
    const error = new Error(data.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// ------------------------------------------------------------------ the session
let sessionId = null;

async function newSession() {
  const data = await api("POST", "/api/session", { k: 10, explain: true });
  sessionId = data.session_id;
  sessionStorage.setItem(SESSION_KEY, sessionId);
  showRecommendations(data.recommendations, []); // a new shopper: the trending list, if the index has one
  return sessionId;
}

async function restoreSession() {
  sessionId = sessionStorage.getItem(SESSION_KEY);
  if (!sessionId) return newSession();
  try {
    const data = await api("GET", `/api/session/${encodeURIComponent(sessionId)}`);
    showRecommendations(data.recommendations, data.history);
  } catch (error) {
    if (error.status !== 404) throw error;
    await newSession(); // the server restarted (sessions live in its memory only)
  }
  return sessionId;
}

async function inSession(path, body) {
  try {
    return await api("POST", `/api/session/${encodeURIComponent(sessionId)}${path}`, body);
  } catch (error) {
    if (error.status !== 404 || !String(error.message).startsWith("unknown session")) throw error;
    await newSession();
    return api("POST", `/api/session/${encodeURIComponent(sessionId)}${path}`, body);
  }
}

// ------------------------------------------------------------------ what the shopper does
function filters() {
  const out = {};
  const category = $("category").value.trim();
  const maxPrice = $("max-price").value.trim();
  if (category) out.categories = [category];
  if (maxPrice) out.max_price = Number(maxPrice);
  return Object.keys(out).length ? out : undefined;
}

async function search(query) {
  setStatus("busy", `searching for “${query}”…`);
  const data = await inSession("/search", { query, k: 10, filters: filters(), explain: true });
  showItems($("results"), data.results);
  showHistory(data.history);
  const url = new URL(window.location.href);
  url.search = new URLSearchParams({ q: query }).toString();
  window.history.replaceState(null, "", url);
  setStatus("ready", `${data.results.length} results for “${query}”`);
}

async function sendEvent(event, itemId) {
  setStatus("busy", `${event} ${itemId}…`);
  const data = await inSession("/events", { event, item_id: itemId });
  showRecommendations(data.recommendations, data.history);
  setStatus("ready", `${event} recorded: recommendations updated`);
}

async function details(item) {
  await sendEvent("view", item.item_id);
  $("details").hidden = false;
  $("details-title").textContent = item.title || item.item_id;
  const [similar, complements] = await Promise.allSettled([
    api("POST", "/api/similar", { item_id: item.item_id, k: 5 }),
    api("POST", "/api/complements", { item_id: item.item_id, k: 5 }),
  ]);
  showItems($("similar"), similar.status === "fulfilled" ? similar.value.results : []);
  showItems($("complements"), complements.status === "fulfilled" ? complements.value.results : []);
}

function guarded(work) {
  return async (...args) => {
    try {
      await work(...args);
    } catch (error) {
      setStatus("error", error.message);
    }
  };
}

// ------------------------------------------------------------------ showing results
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function reasonText(reason) {
  if (reason.kind === "trending") return reason.text; // a new shopper's result: it says why itself
  const what = reason.kind === "item" ? reason.text || reason.key : `“${reason.text}”`;
  return `${what} +${reason.weight.toFixed(3)}`;
}

function itemCard(item) {
  const li = element("li", "item");
  li.dataset.itemId = item.item_id;
  titles.set(item.item_id, item.title || item.item_id);
  const title = element("button", "title", item.title || item.item_id);
  title.type = "button";
  title.addEventListener("click", guarded(() => sendEvent("click", item.item_id)));
  li.append(title);
  const facts = [item.brand, item.category, item.price == null ? "" : `$${item.price.toFixed(2)}`];
  li.append(element("span", "facts", facts.filter(Boolean).join(" · ")));
  li.append(element("span", "score", item.score.toFixed(3)));
  const actions = element("span", "actions");
  const buttons = [
    ["Details", () => details(item)],
    ["Add to cart", () => sendEvent("add_to_cart", item.item_id)],
    ["Buy", () => sendEvent("purchase", item.item_id)],
  ];
  for (const [label, work] of buttons) {
    const button = element("button", "", label);
    button.type = "button";
    button.addEventListener("click", guarded(work));
    actions.append(button);
  }
  li.append(actions);
  if (item.reasons && item.reasons.length) {
    const reasons = element("ul", "reasons");
    reasons.append(element("li", "because", "because:"));
    for (const reason of item.reasons) {
      const entry = element("li", `reason ${reason.kind}`, reasonText(reason));
      entry.dataset.kind = reason.kind;
      entry.dataset.key = reason.key;
      reasons.append(entry);
    }
    li.append(reasons);
  }
  return li;
}

function showItems(list, items) {
  list.replaceChildren(...items.map(itemCard));
  if (!items.length) list.append(element("li", "empty", "nothing yet"));
}

function showRecommendations(items, history) {
  showItems($("recommendations"), items);
  showHistory(history);
}

function showHistory(history) {
  const entries = (history || []).map((entry) => {
    const [kind, ...rest] = entry.split(":");
    const key = rest.join(":");
    const text = kind === "item" ? titles.get(key) || key : `“${key}”`;
    const li = element("li", `history-${kind}`, text);
    li.dataset.key = key;
    return li;
  });
  $("history").replaceChildren(...entries);
}

// ------------------------------------------------------------------ start
async function start() {
  const info = await api("GET", "/api/info");
  $("artifact").textContent = `published index ${info.version}: ${info.n_items} items`;
  await restoreSession();
  setStatus("ready", "ready");
  // ?q=...&click=ID&view=ID...: a search, then events in the order given (a link that replays a visit)
  const params = new URLSearchParams(window.location.search);
  if (params.get("q")) {
    $("query").value = params.get("q");
    await search(params.get("q"));
  }
  for (const [name, value] of params) {
    if (ITEM_EVENTS.includes(name)) await sendEvent(name, value);
  }
  setStatus("ready", $("status").textContent);
}

$("search").addEventListener(
  "submit",
  guarded(async (event) => {
    event.preventDefault();
    const query = $("query").value.trim();
    if (query) await search(query);
  }),
);
$("reset").addEventListener(
  "click",
  guarded(async () => {
    await api("DELETE", `/api/session/${encodeURIComponent(sessionId)}`).catch(() => {});
    await newSession();
    $("results").replaceChildren();
    $("details").hidden = true;
    setStatus("ready", "new session");
  }),
);
guarded(start)();
