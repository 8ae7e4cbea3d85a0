"""The dashboard's page: HTML, CSS and a short script in one string (no external asset,
no build step). The script polls `dashboard/data` every two seconds and draws the
figures as inline SVG; each figure also has its numbers written out."""

from __future__ import annotations

#: How often the page asks for new figures, in milliseconds.
POLL_MS = 2000

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>smets1-fleet: live campaign</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.2em;color:#222;
  background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}
#status{color:#555;margin-bottom:1em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(26em,1fr));gap:1em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em}
.card h2{font-size:1em;margin:0 0 .5em;color:#333}
.big{font-size:1.8em;font-variant-numeric:tabular-nums}
.kv{display:grid;grid-template-columns:auto auto;gap:.15em 1em;font-variant-numeric:tabular-nums}
.kv span:nth-child(odd){color:#555}
svg{width:100%;height:auto;font-size:11px}
.bad{color:#b5443b}.ok{color:#1e7b34}
</style></head>
<body>
<h1>smets1-fleet: live campaign</h1>
<div id="status">waiting for the first figures…</div>
<div class="grid">
 <div class="card"><h2>Requests by state</h2><div class="big" id="requests-total">–</div>
  <div class="kv" id="requests"></div></div>
 <div class="card"><h2>Transfers in flight</h2><div class="big" id="in-flight">–</div>
  <div>released to the DCO, not yet answered</div></div>
 <div class="card"><h2>TRT</h2><div class="kv" id="trt"></div></div>
 <div class="card"><h2>Clock</h2><div class="kv" id="clock"></div></div>
 <div class="card"><h2>Large images released per day, against the capacity</h2>
  <svg id="days-chart" viewBox="0 0 520 220" role="img"></svg></div>
 <div class="card"><h2>Today, per User, against the limit without a schedule</h2>
  <svg id="users-chart" viewBox="0 0 520 220" role="img"></svg></div>
 <div class="card"><h2>Release to answer, against the TRT</h2>
  <svg id="answers-chart" viewBox="0 0 520 220" role="img"></svg></div>
 <div class="card"><h2>Failures by reason</h2><div class="kv" id="failures"></div></div>
</div>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const fmt = n => n === null || n === undefined ? "–" : Number(n).toLocaleString("en-GB");
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function kv(id, rows) {
  const box = document.getElementById(id);
  box.replaceChildren();
  for (const [k, v, cls] of rows) {
    const a = document.createElement("span"); a.textContent = k;
    const b = document.createElement("span"); b.textContent = v;
    if (cls) b.className = cls;
    box.append(a, b);
  }
}
function niceTop(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
// Bars with a value on each, a y axis with ticks and a title, and optional limit lines
// drawn while they are within three times the data's top (else named in the corner).
function bars(id, labels, values, opts) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const W = 520, H = 220, L = 56, R = 10, T = 18, B = 40;
  const peak = Math.max(1, ...values);
  const lines = (opts.lines || []).filter(l => l.value <= peak * 3);
  const off = (opts.lines || []).filter(l => l.value > peak * 3);
  const top = niceTop(Math.max(peak, ...lines.map(l => l.value)) * 1.1);
  const y = v => T + (H - T - B) * (1 - v / top);
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4;
    svg.append(el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e4e4e4"}));
    svg.append(el("text", {x: L - 4, y: y(v) + 4, "text-anchor": "end"}, fmt(v)));
  }
  svg.append(el("text", {x: 12, y: (H - B + T) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(H - B + T) / 2})`}, opts.ytitle));
  svg.append(el("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"}, opts.xtitle));
  const n = Math.max(1, values.length), bw = (W - L - R) / n;
  values.forEach((v, i) => {
    const x = L + i * bw;
    svg.append(el("rect", {x: x + bw * .12, y: y(v), width: bw * .76, height: y(0) - y(v),
      fill: opts.colourOf ? opts.colourOf(i) : (opts.colour || "#3b6ea5")}));
    svg.append(el("text", {x: x + bw / 2, y: y(v) - 3, "text-anchor": "middle",
      class: "value"}, fmt(v)));
    if (n <= 9 || i % Math.ceil(n / 9) === 0)
      svg.append(el("text", {x: x + bw / 2, y: H - B + 13, "text-anchor": "middle"}, labels[i]));
  });
  lines.forEach(l => {
    svg.append(el("line", {x1: L, x2: W - R, y1: y(l.value), y2: y(l.value), stroke: l.colour,
      "stroke-dasharray": "5 3"}));
    svg.append(el("text", {x: W - R, y: y(l.value) - 3, "text-anchor": "end", fill: l.colour},
      l.label));
  });
  off.forEach((l, i) => svg.append(el("text", {x: W - R, y: 12 + 12 * i, "text-anchor": "end",
    fill: l.colour}, l.label + " (above this scale)")));
}
function hours(s) { return s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h"; }
function draw(d) {
  document.getElementById("status").textContent =
    `simulated time ${d.simulated_time.replace("T", " ").slice(0, 16)} UTC · updated ` +
    new Date().toLocaleTimeString("en-GB");
  document.getElementById("requests-total").textContent = fmt(d.requests_total);
  kv("requests", Object.entries(d.requests).map(([k, v]) => [k, fmt(v)]));
  document.getElementById("in-flight").textContent = fmt(d.in_flight);
  const answered = d.trt_met + d.trt_missed;
  kv("trt", [["TRT", (d.trt_seconds / 86400) + " days"], ["met", fmt(d.trt_met), "ok"],
    ["missed", fmt(d.trt_missed), d.trt_missed ? "bad" : ""],
    ["met, share", answered ? (100 * d.trt_met / answered).toFixed(1) + " %" : "–"]]);
  const mode = d.speed_mode || "fixed";
  const speed = d.speed === null ? "–" : fmt(d.speed) + "× (" + mode + ")";
  kv("clock", [["speed", speed],
    ["lag", fmt(d.lag_seconds) + " simulated s"], ["today", d.today.date],
    ["released today", fmt(d.today.released) + " of " + fmt(d.capacity_per_day)]]);
  bars("days-chart", d.days.map(x => x.date.slice(5)), d.days.map(x => x.released),
    {ytitle: "large images", xtitle: "day (UTC)",
     lines: [{value: d.capacity_per_day, label: "capacity " + fmt(d.capacity_per_day),
              colour: "#b5443b"}]});
  bars("users-chart", d.users_today.map(u => u.user), d.users_today.map(u => u.released),
    {ytitle: "released today", xtitle: "User", colour: "#e08a2c",
     lines: [{value: d.user_daily_limit, label: fmt(d.user_daily_limit) + " a User a day",
              colour: "#7d5ba6"}]});
  const shown = d.answer_buckets.filter(b => b.le !== null);
  const last = d.answer_buckets[d.answer_buckets.length - 1];
  bars("answers-chart", shown.map(b => "≤" + hours(b.le)).concat(["more"]),
    shown.map(b => b.count).concat([last.count]),
    {ytitle: "requests answered",
     xtitle: "release to answer (red: past the TRT of " + hours(d.trt_seconds) + ")",
     colourOf: i => i < shown.length && shown[i].le <= d.trt_seconds ? "#4e9a52" : "#b5443b"});
  const f = Object.entries(d.failures);
  kv("failures", f.length ? f.map(([k, v]) => [k.replaceAll("_", " "), fmt(v), "bad"])
                          : [["none so far", ""]]);
}
async function poll() {
  try {
    const r = await fetch("dashboard/data", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    draw(await r.json());
  } catch (e) {
    document.getElementById("status").textContent = "no figures: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script>
</body></html>
""".replace("POLL_MS", str(POLL_MS))
