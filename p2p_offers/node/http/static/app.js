// The node's page: reads the REST API, follows GET /events, draws the depth chart itself.
// No library, no external resource: the node may run where there is no internet.
// Prices and amounts are shown as the API gives them (decimal strings); they are turned into
// numbers only to place points on the chart, never to compute money.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  me: null,
  book: { bids: [], asks: [] },
  offers: [],
  trades: [],
  peers: [],
  fills: new Map(), // fill_id -> {role, receipt}: from fill events and from the trades
  drafts: new Map(), // offer id -> a bid amount being typed: kept across re-renders
  pending: [], // bids still pending on my manual offers, oldest first
};
const dirty = new Set();
let busy = false; // a round of fetches is running

// -- the API ----------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem("p2p-offers-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  return { ok: resp.ok, status: resp.status, data };
}

function errorText(r) {
  const e = r.data && r.data.error;
  if (!e) return `HTTP ${r.status}`;
  let text = `${e.code}: ${e.message}`;
  const fields = e.details && e.details.fields;
  if (Array.isArray(fields)) text += " (" + fields.map((f) => `${f.field}: ${f.message}`).join("; ") + ")";
  return text;
}

function say(el, text, ok) {
  el.textContent = text;
  el.className = "result " + (ok ? "ok" : "error");
}

// -- refreshing ---------------------------------------------------------------------------------

const loaders = {
  async book() {
    const r = await api("GET", "/book?levels=50");
    if (r.ok) { state.book = r.data; renderLadder(); drawDepth(); }
  },
  async offers() {
    const r = await api("GET", "/offers?status=open&limit=500");
    if (r.ok) { state.offers = r.data.offers; renderOffers(); renderMine(); schedule("pending"); }
  },
  async pending() {
    // the bids on each of my open manual offers (a chain's bids are listed by any of its records)
    const manual = state.offers.filter((o) => o.owner === state.me && o.accept === "manual");
    const lists = await Promise.all(manual.map((o) => api("GET", `/offers/${encodeURIComponent(o.id)}/bids`)));
    const seen = new Map();
    lists.forEach((r, i) => {
      if (!r.ok) return;
      for (const b of r.data.bids) if (b.status === "pending") seen.set(b.bid_id, { offer: manual[i].id, bid: b });
    });
    state.pending = [...seen.values()];
    renderPending();
  },
  async trades() {
    const r = await api("GET", "/trades?limit=100");
    if (r.ok) {
      state.trades = r.data.trades;
      for (const t of state.trades) {
        if (t.maker === state.me) state.fills.set(t.fill_id, { role: "maker", receipt: t });
        else if (t.taker === state.me) state.fills.set(t.fill_id, { role: "taker", receipt: t });
      }
      renderTrades(); renderFills();
    }
  },
  async peers() {
    const r = await api("GET", "/peers");
    if (r.ok) { state.peers = r.data.peers; renderPeers(); }
  },
};

// Events come in bursts (a fill is four of them): the first starts the fetches at once, the
// rest of the burst, arriving while they run, costs one more round, not one each.
function schedule(...parts) {
  for (const p of parts) dirty.add(p);
  if (!busy) flush();
}

async function flush() {
  busy = true;
  try {
    while (dirty.size) {
      const parts = [...dirty];
      dirty.clear();
      await Promise.all(parts.map((p) => loaders[p]().catch(() => setTimeout(() => schedule(p), 1000))));
    }
  } finally {
    busy = false;
  }
}

function follow() {
  const events = new EventSource("/events");
  const status = $("#status");
  events.onopen = () => { status.textContent = "live"; status.className = "status live"; };
  events.onerror = () => {
    status.textContent = "reconnecting";
    status.className = "status off";
    // The browser retries a broken stream by itself, but gives up on an HTTP error (a 503
    // when every stream slot is taken): then try again later, and meanwhile read once.
    if (events.readyState === EventSource.CLOSED) {
      schedule("book", "offers", "trades", "peers");
      setTimeout(follow, 5000);
    }
  };
  events.addEventListener("hello", () => schedule("book", "offers", "trades", "peers"));
  events.addEventListener("reset", () => schedule("book", "offers", "trades", "peers"));
  events.addEventListener("book", () => schedule("book", "offers"));
  events.addEventListener("fill", (e) => {
    const d = JSON.parse(e.data);
    state.fills.set(d.fill.fill_id, { role: d.role, receipt: d.fill });
    renderFills();
    schedule("offers");
  });
  events.addEventListener("trade", () => schedule("trades"));
  events.addEventListener("bid", () => schedule("pending")); // received, accepted, rejected
}

// -- rendering ----------------------------------------------------------------------------------

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function short(key) {
  if (key === state.me) return "me";
  return typeof key === "string" ? key.slice(0, 12) + "…" : "";
}

function clock(ms) {
  return typeof ms === "number" ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z" : "";
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderLadder() {
  const { bids, asks } = state.book;
  const rows = [];
  for (const lv of [...asks].reverse()) rows.push(levelRow("ask", lv));
  const spread = document.createElement("tr");
  spread.className = "spread";
  const td = cell(spreadText(asks, bids));
  td.colSpan = 4;
  spread.append(td);
  rows.push(spread);
  for (const lv of bids) rows.push(levelRow("bid", lv));
  fill($("#ladder tbody"), rows);
}

function spreadText(asks, bids) {
  if (!asks.length && !bids.length) return "the book is empty";
  if (!asks.length || !bids.length) return "one side is empty";
  // cents as integers: exact for any two-decimal price string
  const cents = (s) => { const [i, f = ""] = s.split("."); return BigInt(i) * 100n + BigInt((f + "00").slice(0, 2)); };
  const gap = cents(asks[0].price_usd) - cents(bids[0].price_usd);
  const abs = gap < 0n ? -gap : gap;
  const text = `${abs / 100n}.${String(abs % 100n).padStart(2, "0")}`;
  return gap < 0n ? `crossed by ${text} USD` : `spread ${text} USD`;
}

function levelRow(side, lv) {
  const tr = document.createElement("tr");
  tr.className = `${side} level`;
  tr.dataset.price = lv.price_usd;
  tr.append(cell(side), cell(lv.price_usd, "num"), cell(lv.amount_btc, "num"), cell(lv.count, "num"));
  tr.title = `${side === "ask" ? "buy" : "sell"} at ${lv.price_usd}`;
  tr.addEventListener("click", () => {
    const form = $("#place");
    form.price_usd.value = lv.price_usd;
    form.side.value = side === "ask" ? "buy" : "sell";
    form.amount_btc.focus();
  });
  return tr;
}

function renderOffers() {
  const rows = state.offers.map((o) => {
    const tr = document.createElement("tr");
    tr.className = o.side === "sell" ? "ask" : "bid";
    tr.dataset.offerId = o.id;
    tr.append(cell(o.side), cell(o.price_usd, "num"), cell(o.amount_btc, "num"), cell(short(o.owner)));
    const action = document.createElement("td");
    if (o.owner === state.me) {
      action.textContent = "mine";
      action.className = "muted";
    } else {
      const amount = document.createElement("input");
      amount.className = "bid-amount";
      amount.inputMode = "decimal";
      amount.placeholder = o.amount_btc;
      amount.dataset.offerId = o.id;
      amount.value = state.drafts.get(o.id) || "";
      amount.setAttribute("aria-label", "amount_btc to bid");
      amount.addEventListener("input", () => state.drafts.set(o.id, amount.value));
      const button = document.createElement("button");
      button.type = "button";
      button.className = "bid-button";
      button.textContent = "Bid";
      button.addEventListener("click", () => bid(o, amount, button));
      action.append(amount, " ", button);
    }
    tr.append(action);
    return tr;
  });
  // the table is rebuilt on every book change: whoever was typing a bid keeps typing
  const typing = document.activeElement && document.activeElement.classList.contains("bid-amount")
    ? document.activeElement.dataset.offerId : null;
  fill($("#offers tbody"), rows.length ? rows : [emptyRow(5, "no open offers")]);
  if (typing) {
    const again = document.querySelector(`#offers input.bid-amount[data-offer-id="${CSS.escape(typing)}"]`);
    if (again) { again.focus(); again.setSelectionRange(again.value.length, again.value.length); }
  }
  const open = new Set(state.offers.map((o) => o.id));
  for (const id of state.drafts.keys()) if (!open.has(id)) state.drafts.delete(id);
}

function renderMine() {
  const mine = state.offers.filter((o) => o.owner === state.me);
  const rows = mine.map((o) => {
    const tr = document.createElement("tr");
    tr.className = o.side === "sell" ? "ask" : "bid";
    tr.dataset.offerId = o.id;
    tr.append(cell(o.side), cell(o.price_usd, "num"), cell(o.amount_btc, "num"), cell(clock(o.expires)));
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary cancel-button";
    button.textContent = "Cancel";
    button.addEventListener("click", () => cancel(o, button));
    td.append(button);
    tr.append(td);
    return tr;
  });
  fill($("#mine tbody"), rows.length ? rows : [emptyRow(5, "none")]);
}

function renderPending() {
  const rows = state.pending.map(({ offer, bid }) => {
    const tr = document.createElement("tr");
    tr.dataset.bidId = bid.bid_id;
    tr.append(cell(bid.price_usd, "num"), cell(bid.amount_btc, "num"), cell(short(bid.taker)), cell(clock(bid.expires)));
    const td = document.createElement("td");
    for (const [label, action, cls] of [["Accept", "accept", "accept-button"], ["Reject", "reject", "secondary reject-button"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = cls;
      button.textContent = label;
      button.addEventListener("click", () => decide(offer, bid, action, button));
      td.append(button);
    }
    tr.append(td);
    return tr;
  });
  fill($("#pending tbody"), rows.length ? rows : [emptyRow(5, "none")]);
}

function renderFills() {
  const fills = [...state.fills.values()].sort((a, b) => b.receipt.ts - a.receipt.ts).slice(0, 100);
  const rows = fills.map(({ role, receipt: r }) => {
    const tr = document.createElement("tr");
    tr.dataset.fillId = r.fill_id;
    const other = role === "maker" ? r.taker : r.maker;
    tr.append(cell(clock(r.ts)), cell(role), cell(r.price_usd, "num"), cell(r.amount_btc, "num"), cell(short(other)));
    return tr;
  });
  fill($("#fills tbody"), rows.length ? rows : [emptyRow(5, "none yet")]);
}

function renderTrades() {
  const rows = state.trades.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.fillId = t.fill_id;
    tr.append(cell(clock(t.ts)), cell(t.price_usd, "num"), cell(t.amount_btc, "num"), cell(short(t.maker)), cell(short(t.taker)));
    return tr;
  });
  fill($("#trades tbody"), rows.length ? rows : [emptyRow(5, "none yet")]);
}

function renderPeers() {
  const items = state.peers.map((p) => {
    const li = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = short(p.client_id);
    li.append(code, ` at ${p.address}`);
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no other node found yet";
    items.push(li);
  }
  $("#peers").replaceChildren(...items);
}

function emptyRow(span, text) {
  const tr = document.createElement("tr");
  const td = cell(text, "muted");
  td.colSpan = span;
  tr.append(td);
  return tr;
}

// -- the depth chart ----------------------------------------------------------------------------

function drawDepth() {
  const canvas = $("#depth");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(name).trim();
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = colour("--muted");
  const cum = (levels) => {
    let total = 0;
    return levels.map((lv) => [Number(lv.price_usd), (total += Number(lv.amount_btc))]);
  };
  const bids = cum(state.book.bids), asks = cum(state.book.asks); // both best first
  if (!bids.length && !asks.length) {
    g.textAlign = "center";
    g.fillText("no offers: the depth chart appears with the first one", w / 2, h / 2);
    return;
  }
  const prices = [...bids, ...asks].map((p) => p[0]);
  let lo = Math.min(...prices), hi = Math.max(...prices);
  const pad = (hi - lo) * 0.05 || Math.max(1, hi * 0.01);
  lo -= pad; hi += pad;
  const top = Math.max(bids.length ? bids[bids.length - 1][1] : 0, asks.length ? asks[asks.length - 1][1] : 0);
  const L = 8, R = 8, T = 16, B = 22;
  const x = (p) => L + ((p - lo) / (hi - lo)) * (w - L - R);
  const y = (v) => h - B - (v / top) * (h - T - B);
  const area = (points, edge, stroke) => {
    if (!points.length) return;
    g.beginPath();
    g.moveTo(x(points[0][0]), y(0));
    let prev = 0;
    for (const [p, v] of points) { g.lineTo(x(p), y(prev)); g.lineTo(x(p), y(v)); prev = v; }
    g.lineTo(x(edge), y(prev));
    g.lineTo(x(edge), y(0));
    g.closePath();
    g.globalAlpha = 0.18; g.fillStyle = stroke; g.fill();
    g.globalAlpha = 1; g.strokeStyle = stroke; g.lineWidth = 1.5; g.stroke();
  };
  area(bids, lo, colour("--bid"));
  area(asks, hi, colour("--ask"));
  g.strokeStyle = colour("--line"); g.lineWidth = 1;
  g.beginPath(); g.moveTo(L, y(0) + 0.5); g.lineTo(w - R, y(0) + 0.5); g.stroke();
  g.fillStyle = colour("--muted");
  const label = (p) => p.toFixed(2);
  g.textAlign = "left"; g.fillText(label(lo + pad), L, h - 6);
  g.textAlign = "right"; g.fillText(label(hi - pad), w - R, h - 6);
  if (bids.length && asks.length) {
    g.textAlign = "center";
    g.fillText(`${state.book.bids[0].price_usd} | ${state.book.asks[0].price_usd}`, w / 2, h - 6);
  }
  g.textAlign = "left";
  g.fillText(`${top.toFixed(8).replace(/0+$/, "").replace(/\.$/, "")} BTC`, L, T - 4);
}

// -- actions ------------------------------------------------------------------------------------

async function place(event) {
  event.preventDefault();
  const form = $("#place");
  const result = $("#place-result");
  const kind = form.kind.value;
  const body = { side: form.side.value, price_usd: form.price_usd.value.trim(), amount_btc: form.amount_btc.value.trim() };
  if (kind === "offer" && form.ttl_s.value.trim()) body.ttl_s = Number(form.ttl_s.value.trim());
  if (kind === "order") body.tif = form.tif.value;
  const button = $("#place-submit");
  button.disabled = true;
  try {
    const r = await api("POST", kind === "offer" ? "/offers" : "/orders", body);
    if (!r.ok) return say(result, errorText(r), false);
    if (kind === "offer") {
      say(result, `offer ${r.data.id} placed: ${r.data.side} ${r.data.amount_btc} BTC at ${r.data.price_usd}`, true);
    } else {
      const filled = r.data.fills.map((f) => `${f.amount_btc} at ${f.price_usd}`).join(", ") || "nothing";
      const rest = r.data.offer ? `; the rest rests as offer ${r.data.offer.id}` : "";
      say(result, `order ${r.data.status}: filled ${filled}${rest}`, true);
    }
    schedule("book", "offers", "trades");
  } catch (e) {
    say(result, `the node cannot be reached: ${e}`, false);
  } finally {
    button.disabled = false;
  }
}

async function bid(offer, input, button) {
  const result = $("#bid-result");
  const amount = input.value.trim() || offer.amount_btc;
  button.disabled = true;
  try {
    const r = await api("POST", `/offers/${encodeURIComponent(offer.id)}/bids`, { amount_btc: amount });
    if (!r.ok) return say(result, errorText(r), false);
    state.drafts.delete(offer.id);
    if (r.status === 202) { // a manual offer: its owner decides (GET /bids/<bid_id> follows it)
      return say(result, `pending: ${r.data.amount_btc} BTC at ${r.data.price_usd} USD, until the owner accepts or rejects it (bid ${r.data.bid_id})`, true);
    }
    state.fills.set(r.data.fill_id, { role: "taker", receipt: r.data });
    renderFills();
    say(result, `filled ${r.data.amount_btc} BTC at ${r.data.price_usd} USD (fill ${r.data.fill_id})`, true);
    schedule("book", "offers", "trades");
  } catch (e) {
    say(result, `the node cannot be reached: ${e}`, false);
  } finally {
    button.disabled = false;
  }
}

async function cancel(offer, button) {
  button.disabled = true;
  const result = $("#bid-result");
  try {
    const r = await api("DELETE", `/offers/${encodeURIComponent(offer.id)}`);
    if (!r.ok) say(result, errorText(r), false);
    schedule("book", "offers");
  } catch (e) {
    say(result, `the node cannot be reached: ${e}`, false);
  } finally {
    button.disabled = false;
  }
}

async function decide(offerId, bid, action, button) {
  button.disabled = true;
  const result = $("#bid-result");
  try {
    const path = `/offers/${encodeURIComponent(offerId)}/bids/${encodeURIComponent(bid.bid_id)}/${action}`;
    const r = await api("POST", path, {});
    if (!r.ok) say(result, errorText(r), false);
    else say(result, action === "accept" ? `accepted: ${r.data.amount_btc} BTC at ${r.data.price_usd}` : "rejected", true);
    schedule("pending", "book", "offers");
  } catch (e) {
    say(result, `the node cannot be reached: ${e}`, false);
  } finally {
    button.disabled = false;
  }
}

// -- start --------------------------------------------------------------------------------------

async function start() {
  const token = $("#token");
  token.value = localStorage.getItem("p2p-offers-token") || "";
  token.addEventListener("change", () => localStorage.setItem("p2p-offers-token", token.value.trim()));
  const form = $("#place");
  form.addEventListener("submit", place);
  for (const radio of form.querySelectorAll("input[name=kind]")) {
    radio.addEventListener("change", () => {
      const order = form.kind.value === "order";
      form.querySelector(".for-order").hidden = !order;
      form.querySelector(".for-offer").hidden = order;
    });
  }
  window.addEventListener("resize", drawDepth);
  renderLadder(); renderOffers(); renderMine(); renderPending(); renderFills(); renderTrades(); renderPeers(); drawDepth();
  for (;;) {
    try {
      const r = await api("GET", "/health");
      if (r.ok) { state.me = r.data.client_id; break; }
    } catch (e) { /* the node is not up yet */ }
    await new Promise((done) => setTimeout(done, 1000));
  }
  $("#me").textContent = state.me.slice(0, 12) + "…";
  $("#me").title = state.me;
  follow();
}

document.addEventListener("DOMContentLoaded", start);
