// The reference Agent Desktop: the seed's transfer screens, played live against the bridge's API.
// Plain modern JavaScript, no build step, no third-party code. Every API call sends the account
// token as a bearer token; live updates come from /v1/events (read with fetch, because
// EventSource cannot send that header), falling back to long-polling the selected session.
import { phoneEntry, screenFor, conflictText, failureText, STATUS_LABELS, CALL_LABELS, PROOF_LABELS, FAILURE_STATUS } from "./screens.js";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const KEYS = { token: "transfer-bridge.token", agent: "transfer-bridge.agent", selected: "transfer-bridge.selected" };
const POLL_WAIT_S = 25;
const LIST_REFRESH_MS = 5000;
const STREAM_OPEN_MS = 10000;
// The API's root, relative to the page, so the bridge may sit behind a path prefix.
const ROOT = new URL("..", document.baseURI).pathname;

const state = {
  token: null,
  agentId: null,
  agent: null,
  sessions: new Map(), // id -> the newest session JSON seen
  selectedId: null,
  feed: null,
  busy: false,
  rendered: { list: null, screen: null, notices: null, session: null },
  evidence: { sessionId: null, seen: new Set() },
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, signal) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(ROOT + path.replace(/^\//, ""), init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = data && data.error ? data.error : { code: `http_${resp.status}`, message: resp.statusText };
    throw new ApiError(resp.status, err.code, err.message);
  }
  return data;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// Runs `fn` at most once at a time; a call made while it runs makes it run once more after.
function coalesced(fn) {
  let running = null;
  let again = false;
  return function run() {
    if (running) { again = true; return running; }
    running = (async () => {
      do {
        again = false;
        try { await fn(); } catch (err) { report(err); }
      } while (again);
      running = null;
    })();
    return running;
  };
}

// --- messages -------------------------------------------------------------------------------

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function report(err) {
  if (err?.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) {
    signOut("The bridge did not accept the token. Sign in again.");
    return;
  }
  const text = err instanceof ApiError ? `${err.message} (${err.code})` : `The bridge could not be reached: ${err?.message ?? err}`;
  showError(text);
}

function setConnection(mode) {
  const labels = {
    off: "Not connected",
    sse: "Live: Server-Sent Events",
    poll: "Live: long-poll",
    reconnecting: "Reconnecting…",
  };
  const el = $("connection");
  el.dataset.mode = mode;
  el.textContent = labels[mode];
}

// --- the model ------------------------------------------------------------------------------

function accept(sessions) {
  let changed = false;
  let selectedChanged = false;
  for (const s of sessions) {
    if (s.agent_id !== state.agentId) continue;
    const known = state.sessions.get(s.id);
    if (known && known.version >= s.version) continue;
    state.sessions.set(s.id, s);
    changed = true;
    selectedChanged ||= s.id === state.selectedId;
  }
  if (changed) {
    render(); // also fetches the evidence when the selection moves
    refreshAgent();
    if (selectedChanged) refreshEvidence();
  }
}

function openSessions() {
  return [...state.sessions.values()]
    .filter((s) => s.status !== "ended")
    .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
}

function selected() {
  return state.selectedId ? state.sessions.get(state.selectedId) ?? null : null;
}

function select(id) {
  if (state.selectedId === id) return;
  state.selectedId = id;
  if (id) sessionStorage.setItem(KEYS.selected, id);
  state.feed?.selectionChanged();
  render();
  refreshEvidence();
}

// Keep the chosen session; an ended one stays on screen until another open one exists.
function ensureSelection() {
  const current = selected();
  const open = openSessions();
  if (current && (current.status !== "ended" || open.length === 0)) return;
  const next = open[0]?.id ?? (current ? current.id : null);
  if (next !== state.selectedId) {
    state.selectedId = next;
    if (next) sessionStorage.setItem(KEYS.selected, next);
    state.feed?.selectionChanged();
    refreshEvidence();
  }
}

const refreshAgent = coalesced(async () => {
  if (!state.agentId) return;
  state.agent = await api("GET", `/v1/agents/${enc(state.agentId)}`);
  renderAgent();
});

async function loadSessions() {
  const base = `/v1/sessions?agent_id=${enc(state.agentId)}&status=`;
  const [active, transferred] = await Promise.all([
    api("GET", `${base}active`),
    api("GET", `${base}call_transferred`),
  ]);
  accept([...active.sessions, ...transferred.sessions]);
  const current = selected();
  if (current && current.status !== "ended" && !active.sessions.concat(transferred.sessions).some((s) => s.id === current.id)) {
    // Ended elsewhere while we were not looking: fetch it to show how it ended.
    accept([await api("GET", `/v1/sessions/${enc(current.id)}`)]);
  }
  render();
}

const refreshEvidence = coalesced(async () => {
  const s = selected();
  const ev = state.evidence;
  if (!s) return;
  if (ev.sessionId !== s.id) {
    ev.sessionId = s.id;
    ev.seen = new Set();
    $("evidence-list").replaceChildren();
  }
  const { entries } = await api("GET", `/v1/sessions/${enc(s.id)}/audit`);
  if (ev.sessionId !== state.selectedId) return; // the agent moved on meanwhile
  const list = $("evidence-list");
  for (const entry of entries) {
    if (ev.seen.has(entry.seq)) continue;
    ev.seen.add(entry.seq);
    const text = phoneEntry(entry);
    if (!text) continue;
    const li = document.createElement("li");
    li.dataset.event = entry.event;
    const time = document.createElement("time");
    time.dateTime = entry.detail?.observed_at ?? entry.at;
    time.textContent = clock(time.dateTime);
    li.append(time, " ", text);
    list.append(li);
  }
  $("no-evidence").hidden = list.childElementCount > 0;
});

const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

function clock(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : CLOCK.format(date);
}

// --- live updates ---------------------------------------------------------------------------

class Feed {
  constructor() {
    this.stopped = false;
    this.abort = new AbortController();
    this.cursor = null;
    this.poll = null; // the long-poll in flight, to cut short when the selection changes
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
  }

  selectionChanged() {
    this.poll?.abort();
  }

  async run() {
    let failures = 0;
    while (!this.stopped) {
      let opened = false;
      try {
        await this.stream(() => { opened = true; setConnection("sse"); });
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && err.status === 401) { report(err); return; }
      }
      if (this.stopped) return;
      failures = opened ? 1 : failures + 1;
      // The stream keeps failing while the API answers: something on the way (a proxy)
      // does not let event streams through, so follow the session by long-polling instead.
      if (!opened && failures >= 2 && (await this.apiAnswers())) {
        await this.longPoll();
        return;
      }
      setConnection("reconnecting");
      await sleep(Math.min(500 * failures, 5000), this.abort.signal);
    }
  }

  async apiAnswers() {
    try {
      await api("GET", `/v1/agents/${enc(state.agentId)}`, undefined, this.abort.signal);
      return true;
    } catch {
      return false;
    }
  }

  // One Server-Sent Events connection, read until it ends; resumes from the last cursor.
  async stream(onOpen) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
    if (this.cursor) headers["Last-Event-ID"] = this.cursor;
    // The bridge answers a stream at once; headers that never come mean something holds them.
    const late = new AbortController();
    const timer = setTimeout(() => late.abort(), STREAM_OPEN_MS);
    let resp;
    try {
      resp = await fetch(`${ROOT}v1/events?agent_id=${enc(state.agentId)}`, {
        headers, signal: AbortSignal.any([this.abort.signal, late.signal]), cache: "no-store",
      });
    } finally {
      clearTimeout(timer);
    }
    if (!resp.ok) {
      const body = await resp.json().catch(() => null);
      throw new ApiError(resp.status, body?.error?.code ?? `http_${resp.status}`, body?.error?.message ?? "");
    }
    if (!(resp.headers.get("Content-Type") ?? "").startsWith("text/event-stream") || !resp.body) {
      await resp.body?.cancel();
      throw new Error("not an event stream");
    }
    onOpen();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let event = "message";
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A CR at the end of a chunk may be the first half of a CRLF: keep it for the next one.
      const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(cut);
      for (const line of lines) {
        if (line === "") {
          if (data.length && event === "session") accept([JSON.parse(data.join("\n"))]);
          if (id !== null) this.cursor = id;
          data = [];
          event = "message";
          continue;
        }
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (name === "data") data.push(val);
        else if (name === "event") event = val;
        else if (name === "id") id = val;
      }
    }
  }

  // Without an event stream: long-poll the selected session, refresh the list now and then.
  async longPoll() {
    setConnection("poll");
    const listLoop = (async () => {
      while (!this.stopped) {
        await sleep(LIST_REFRESH_MS, this.abort.signal);
        if (!this.stopped) await loadSessions().catch(report);
      }
    })();
    while (!this.stopped) {
      const s = selected();
      if (!s || s.status === "ended") {
        await sleep(1000, this.abort.signal);
        continue;
      }
      this.poll = new AbortController();
      const cut = () => this.poll?.abort();
      this.abort.signal.addEventListener("abort", cut, { once: true });
      try {
        const path = `/v1/sessions/${enc(s.id)}?wait=${POLL_WAIT_S}&version=${s.version}`;
        accept([await api("GET", path, undefined, this.poll.signal)]);
      } catch (err) {
        if (this.stopped) break;
        if (err?.name !== "AbortError") {
          report(err);
          await sleep(2000, this.abort.signal);
        }
      } finally {
        this.abort.signal.removeEventListener("abort", cut);
        this.poll = null;
      }
    }
    await listLoop;
  }
}

// --- actions --------------------------------------------------------------------------------

async function step(action) {
  const s = selected();
  if (!s || state.busy) return;
  state.busy = true; // clicks are ignored until the bridge answers; the DOM is left alone
  try {
    showError("");
    if (action === "end") {
      const result = $("result").value.trim();
      accept([await api("POST", `/v1/sessions/${enc(s.id)}/end`, { result })]);
      $("result").value = "";
    } else {
      const name = action.replace(/^transfer\./, "");
      accept([await api("POST", `/v1/sessions/${enc(s.id)}/transfer`, { action: name })]);
    }
  } catch (err) {
    report(err);
    // The screen may be stale (the phone got there first): show what is true now.
    try { accept([await api("GET", `/v1/sessions/${enc(s.id)}`)]); } catch (again) { report(again); }
  } finally {
    state.busy = false;
  }
}

// --- rendering ------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function render() {
  ensureSelection();
  renderList();
  renderSession();
}

function renderAgent() {
  const a = state.agent;
  if (!a) return;
  $("agent-name").textContent = `${a.name} (${a.id})`;
  const avail = $("availability");
  avail.dataset.available = String(a.can_take_requests);
  avail.textContent = a.can_take_requests ? "Can take new requests" : "Cannot take new requests";
  const reason = $("blocked-reason");
  if (a.can_take_requests) {
    reason.hidden = true;
    reason.textContent = "";
  } else {
    const why = a.blocked_reason ? a.blocked_reason[0].toUpperCase() + a.blocked_reason.slice(1) : "Blocked";
    const which = a.blocking_sessions.length ? ` (session ${a.blocking_sessions.join(", ")})` : "";
    reason.textContent = `${why}${which}.`;
    reason.hidden = false;
  }
}

function renderList() {
  const open = openSessions();
  const key = JSON.stringify([state.selectedId, open.map((s) => [s.id, s.status, s.call.state])]);
  if (key === state.rendered.list) return;
  state.rendered.list = key;
  const list = $("session-list");
  const hadFocus = list.contains(document.activeElement) ? document.activeElement.dataset.session : null;
  list.replaceChildren(...open.map((s) => {
    const who = s.customer.name ? `${s.customer.name} ${s.customer.number}` : s.customer.number;
    const button = el("button", {
      type: "button",
      class: "session-item",
      "aria-pressed": String(s.id === state.selectedId),
      dataset: { session: s.id },
      onclick: () => select(s.id),
    }, el("span", { class: "session-id" }, s.id), " ", el("span", {}, who), " ",
    el("span", { class: "badge" }, STATUS_LABELS[s.status] ?? s.status));
    return el("li", {}, button);
  }));
  $("no-sessions").hidden = open.length > 0;
  if (hadFocus) list.querySelector(`[data-session="${CSS.escape(hadFocus)}"]`)?.focus();
}

function renderSession() {
  const s = selected();
  $("session").hidden = !s;
  if (!s) return;
  $("session-title").textContent = `Session ${s.id}`;
  const t = s.transfer;
  const facts = [
    ["Customer", s.customer.name ? `${s.customer.name}, ${s.customer.number}` : s.customer.number],
    ["Call", CALL_LABELS[s.call.state] ?? s.call.state],
    ["Status", STATUS_LABELS[s.status] ?? s.status],
  ];
  if (t.state === "transferred") {
    facts.push(["Confirmed by", { phone: "your phone", agent: "you", phone_and_agent: "you and your phone" }[t.confirmed_by] ?? "-"]);
  }
  if (t.state !== "failed" && (t.state !== "none" || t.phone.proof !== "none")) {
    facts.push(["Phone's proof", PROOF_LABELS[t.phone.proof] ?? t.phone.proof]);
  }
  if (t.phone.handoff_at) facts.push(["Handed over", new Date(t.phone.handoff_at).toLocaleTimeString()]);
  if (s.result) facts.push(["Result", s.result]);
  $("session-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { fact: k.toLowerCase() } }, v)]));

  const notices = [];
  if (t.conflict) notices.push(el("p", { class: "notice conflict", role: "alert" }, conflictText(t.conflict)));
  else if (t.state === "failed") notices.push(el("p", { class: "notice failed", role: "alert" }, failureText(s)));
  const noticeKey = JSON.stringify([s.id, t.conflict, t.state === "failed" ? t.phone.last_sipfrag : null]);
  if (noticeKey !== state.rendered.notices) {
    state.rendered.notices = noticeKey;
    $("notices").replaceChildren(...notices);
  }

  const canEnd = s.actions.includes("end");
  $("end-form").hidden = !canEnd;
  const p = t.phone;
  const summary = [];
  if (p.consult !== "none") summary.push(`consult call ${p.consult}`);
  if (p.refer === "succeeded" && p.proof === "pbx_reported") summary.push("the PBX reports success, not proven yet");
  else if (p.refer !== "none") summary.push(`transfer ${p.refer}`);
  const settledBy = t.state === "failed" ? FAILURE_STATUS : /^SIP\/2\.0 [2-6]/;
  if (p.last_sipfrag && settledBy.test(p.last_sipfrag)) summary.push(p.last_sipfrag);
  $("evidence-summary").textContent = summary.length ? `Now: ${summary.join(", ")}.` : "";
  renderScreen();
}

// The step screen is rebuilt only when it changes, so focus is not disturbed.
function renderScreen() {
  const s = selected();
  if (!s) return;
  const screen = screenFor(s);
  const key = JSON.stringify([s.id, screen, s.actions]);
  if (key === state.rendered.screen) return;
  const moved = state.rendered.session === s.id && state.rendered.screenId !== screen.id;
  state.rendered.screen = key;
  state.rendered.session = s.id;
  state.rendered.screenId = screen.id;
  const container = $("screen");
  const focused = container.contains(document.activeElement) ? document.activeElement : null;
  const body = [el("h3", { id: "step-title", tabindex: "-1" }, screen.title)];
  for (const text of screen.text) body.push(el("p", {}, text));
  if (screen.status) body.push(el("p", { class: "status" }, "Status: ", el("strong", { id: "overview-status" }, screen.status)));
  const buttons = screen.buttons.map((b) => el("button", {
    type: "button",
    class: b.kind ?? null,
    dataset: { action: b.action },
    disabled: !s.actions.includes(b.action),
    "aria-describedby": screen.reason && b.action === "transfer.open" ? "unavailable-reason" : null,
    onclick: () => step(b.action),
  }, b.label));
  if (buttons.length) body.push(el("div", { class: "buttons" }, ...buttons));
  if (screen.reason) body.push(el("p", { id: "unavailable-reason", class: "reason" }, screen.reason));
  container.replaceChildren(el("section", { class: `step step-${screen.id}`, "aria-labelledby": "step-title", dataset: { screen: screen.id } }, ...body));
  if (moved || focused?.id === "step-title") {
    // A new screen: take keyboard users to its heading, as a page change would.
    $("step-title").focus();
  } else if (focused?.dataset.action) {
    container.querySelector(`[data-action="${CSS.escape(focused.dataset.action)}"]`)?.focus();
  }
}

// --- signing in and out ---------------------------------------------------------------------

async function signIn(token, agentId) {
  state.token = token;
  state.agentId = agentId;
  try {
    state.agent = await api("GET", `/v1/agents/${enc(agentId)}`);
  } catch (err) {
    const text = err instanceof ApiError && err.status === 401
      ? "The bridge did not accept this token."
      : err instanceof ApiError && err.status === 404
        ? `There is no agent ${agentId} in this account.`
        : null;
    signOut(text);
    if (!text) report(err);
    return;
  }
  sessionStorage.setItem(KEYS.token, token);
  sessionStorage.setItem(KEYS.agent, agentId);
  state.selectedId = sessionStorage.getItem(KEYS.selected);
  showError("");
  $("sign-in").hidden = true;
  $("desk").hidden = false;
  renderAgent();
  try {
    await loadSessions();
  } catch (err) {
    report(err);
  }
  state.feed = new Feed();
  state.feed.run();
  $("main").focus();
}

function signOut(message) {
  state.feed?.stop();
  state.feed = null;
  for (const key of Object.values(KEYS)) sessionStorage.removeItem(key);
  Object.assign(state, { token: null, agentId: null, agent: null, selectedId: null, busy: false });
  state.sessions.clear();
  state.rendered = { list: null, screen: null, notices: null, session: null };
  state.evidence = { sessionId: null, seen: new Set() };
  $("evidence-list").replaceChildren();
  $("session-list").replaceChildren();
  $("screen").replaceChildren();
  $("desk").hidden = true;
  $("sign-in").hidden = false;
  setConnection("off");
  showError(message ?? "");
  $("token").focus();
}

function start() {
  $("sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("token").value.trim(), $("agent-id").value.trim());
  });
  $("end-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    step("end");
  });
  $("sign-out").addEventListener("click", () => signOut());
  const token = sessionStorage.getItem(KEYS.token);
  const agentId = sessionStorage.getItem(KEYS.agent);
  if (token && agentId) {
    $("agent-id").value = agentId;
    signIn(token, agentId);
  }
}

start();
