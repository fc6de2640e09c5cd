// app.js — the tako dashboard: polls api/state twice a second and redraws.
// Plain DOM, no framework, nothing fetched from elsewhere.
"use strict";

const POLL_MS = 500;
const TIMEOUT_MS = 3000;
let failingSince = 0;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function bytes(n) {
  if (!n) return "–";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function ms(v) { return v ? v.toFixed(v < 10 ? 1 : 0) + " ms" : "–"; }

function replicaRow(r) {
  const pct = Math.round(r.share * 1000) / 10;
  const share = el("td", { class: "share", "data-field": "share" },
    el("span", { class: "bar" }), `${r.requests_1m} (${pct}%)`);
  share.firstChild.style.width = Math.max(0, Math.min(100, pct)) + "px";
  const tr = el("tr", { "data-replica": r.name, "data-health": r.health,
                        "data-requests-minute": r.requests_1m, "data-requests": r.requests },
    el("td", { "data-field": "name" }, r.name),
    el("td", { class: "server", "data-field": "server" }, r.server),
    el("td", { class: "health", "data-field": "health" },
       el("span", { class: "badge " + r.health }, r.health)),
    el("td", { "data-field": "rps" }, r.rps.toFixed(1)),
    el("td", { "data-field": "p50" }, ms(r.p50_ms)),
    el("td", { "data-field": "p99" }, ms(r.p99_ms)),
    el("td", { "data-field": "errors", class: r.errors_1m ? "err" : "" }, r.errors_1m),
    el("td", { "data-field": "cpu" }, r.cpu_percent.toFixed(1) + "%"),
    el("td", { "data-field": "memory" }, bytes(r.memory_bytes)),
    el("td", { "data-field": "restarts", class: r.restarts ? "err" : "" }, r.restarts),
    share);
  return tr;
}

function serviceCard(s) {
  const head = ["replica", "server", "health", "req/s", "p50", "p99", "errors (1m)", "CPU",
                "memory", "restarts", "requests (1m), share"];
  const classes = { server: "server", health: "health" };
  const thead = el("tr", {}, ...head.map((h) => el("th", { class: classes[h] || "" }, h)));
  const body = el("tbody", {}, ...s.replicas.map(replicaRow));
  let as = "";
  if (s.autoscale)
    as = ` · autoscale ${s.autoscale.min}–${s.autoscale.max}` +
         (s.autoscale.recommended >= 0 ? `, recommends ${s.autoscale.recommended}` : "");
  return el("div", { class: "svc", "data-service": s.name, "data-project": s.project,
                     "data-ready": s.ready, "data-desired": s.desired },
    el("h2", {}, s.name,
       el("span", { class: "badge " + s.status }, s.status),
       el("small", {}, `${s.project}/${s.env} · ${s.ready}/${s.desired} ready · ` +
                       `${s.strategy} · ${s.rps.toFixed(1)} req/s · revision ${s.revision}${as}`)),
    el("table", {}, el("thead", {}, thead), body));
}

function timelineItem(e) {
  const t = new Date(e.ts_ms);
  return el("li", { "data-kind": e.kind },
    el("time", { dateTime: t.toISOString() }, t.toLocaleTimeString()),
    el("span", { class: "kind " + e.kind }, e.kind),
    `${e.service ? e.service + ": " : ""}${e.message}`);
}

function render(st) {
  document.getElementById("host").textContent = `${st.host} · takod ${st.version}`;
  const box = document.getElementById("services");
  if (!st.services.length)
    box.replaceChildren(el("p", { class: "empty" }, "No services deployed yet. Run ",
                           el("code", {}, "tako deploy"), "."));
  else
    box.replaceChildren(...st.services.map(serviceCard));
  document.getElementById("timeline").replaceChildren(...st.timeline.map(timelineItem));
}

function setReachable(ok) {
  const status = document.getElementById("status");
  const banner = document.getElementById("unreachable");
  if (ok) {
    failingSince = 0;
    status.dataset.state = "live";
    status.textContent = "live";
    banner.hidden = true;
    document.body.classList.remove("stale");
    return;
  }
  if (!failingSince) failingSince = Date.now();
  status.dataset.state = "unreachable";
  status.textContent = "takod unreachable";
  banner.hidden = false;
  document.body.classList.add("stale");
  document.getElementById("since").textContent =
    `unreachable for ${Math.round((Date.now() - failingSince) / 1000)} s.`;
}

async function poll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const r = await fetch("api/state", { cache: "no-store", signal: ctl.signal,
                                         credentials: "same-origin" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    setReachable(true);
  } catch (e) {
    setReachable(false);
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

poll();
