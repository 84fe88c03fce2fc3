// The tierwise dashboard: fetches /dashboard/api/* and draws it with Chart.js.
// Everything from the ledger goes into the page through textContent, never as HTML.
"use strict";

(function () {
  const COLORS = [
    "#2f6fde", "#e8833a", "#1a9e77", "#c2417a", "#7a5cd6", "#d4a72c",
    "#3aa6c9", "#8c564b", "#6b8e23", "#9aa3b2",
  ];
  const charts = {};
  const state = { days: 7, q: "", page: 1, pages: 1 };
  let searchTimer = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function usd(value) {
    if (value === null || value === undefined) return "unknown";
    const n = Number(value);
    const abs = Math.abs(n);
    const digits = abs === 0 ? 2 : abs < 0.01 ? 6 : abs < 1 ? 4 : 2;
    return (n < 0 ? "-$" : "$") + abs.toFixed(digits);
  }

  function pct(rate) {
    return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + "%";
  }

  function color(i) { return COLORS[i % COLORS.length]; }

  function status(text, isError) {
    const node = $("status");
    node.textContent = text;
    node.className = isError ? "status error" : "status";
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/dashboard/login");
      throw new Error("signed out");
    }
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
    return body;
  }

  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options);
    charts[id] = new Chart($(id), config);
  }

  function bucketLabel(iso, bucket) {
    const d = new Date(iso);
    const day = d.toISOString().slice(5, 10);
    return bucket === "hour" ? day + " " + d.toISOString().slice(11, 13) + "h" : day;
  }

  const tickFormat = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumSignificantDigits: 3 });
  const money = { ticks: { callback: (v) => tickFormat.format(v) } };
  const moneyTooltip = { callbacks: { label: (ctx) => ctx.dataset.label + ": " + usd(ctx.raw) } };

  function drawOverTime(s) {
    const t = s.over_time;
    const labels = t.starts.map((iso) => bucketLabel(iso, t.bucket));
    const datasets = Object.keys(t.cost_by_model).map((model, i) => ({
      label: model, data: t.cost_by_model[model].map(Number), backgroundColor: color(i), stack: "cost",
    }));
    draw("chart-over-time", {
      type: "bar",
      data: { labels, datasets },
      options: { scales: { x: { stacked: true }, y: Object.assign({ stacked: true }, money) }, plugins: { tooltip: moneyTooltip } },
    });
    const lines = [{ label: "actual", data: t.cumulative_cost_usd.map(Number), borderColor: COLORS[0], backgroundColor: COLORS[0], cubicInterpolationMode: "monotone" }];
    if (t.cumulative_counterfactual_usd) {
      lines.push({
        label: "all on " + (s.savings.strongest_model || "strongest"),
        data: t.cumulative_counterfactual_usd.map(Number), borderColor: COLORS[1], backgroundColor: COLORS[1],
        borderDash: [6, 4], cubicInterpolationMode: "monotone",
      });
    }
    draw("chart-savings", { type: "line", data: { labels, datasets: lines }, options: { scales: { y: money }, plugins: { tooltip: moneyTooltip } } });
  }

  function drawBars(id, lines, horizontal) {
    draw(id, {
      type: "bar",
      data: {
        labels: lines.map((l) => l.name),
        datasets: [{ label: "spend", data: lines.map((l) => Number(l.cost_usd)), backgroundColor: lines.map((_, i) => color(i)) }],
      },
      options: {
        indexAxis: horizontal ? "y" : "x",
        scales: horizontal ? { x: money } : { y: money },
        plugins: { legend: { display: false }, tooltip: moneyTooltip },
      },
    });
  }

  function drawDistribution(s) {
    draw("chart-distribution", {
      type: "doughnut",
      data: {
        labels: s.by_model.map((l) => l.name),
        datasets: [{ label: "calls", data: s.by_model.map((l) => l.calls), backgroundColor: s.by_model.map((_, i) => color(i)) }],
      },
      options: { plugins: { legend: { position: "right" } } },
    });
    const chosen = Object.entries(s.decisions_by_model);
    const decided = chosen.reduce((total, [, n]) => total + n, 0);
    $("routed-note").textContent = decided
      ? "Chosen per task: " + chosen.map(([model, n]) => model + " " + pct(n / decided)).join(" · ")
      : "";
  }

  function fillTiles(s) {
    $("tile-spend").textContent = usd(s.cost_usd);
    $("tile-spend-note").textContent = s.unknown_cost_calls
      ? s.unknown_cost_calls + " call(s) of unknown cost not included" : "all calls priced";
    const saved = s.savings;
    const savingsNode = $("tile-savings");
    savingsNode.textContent = saved.savings_usd === null ? "unknown" : usd(saved.savings_usd);
    savingsNode.className = saved.savings_usd !== null && Number(saved.savings_usd) > 0 ? "good" : "";
    $("tile-savings-note").textContent = saved.savings_pct === null
      ? "strongest: " + (saved.strongest_model || "none")
      : Number(saved.savings_pct).toFixed(1) + "% of " + usd(saved.counterfactual_cost_usd) + " on " + saved.strongest_model;
    $("tile-volume").textContent = s.rates.tasks + " · " + s.calls;
    $("tile-volume-note").textContent = "top-level tasks · model calls";
    $("tile-escalation").textContent = pct(s.rates.escalation_rate);
    $("tile-escalation-note").textContent = s.rates.escalated_tasks + " escalated task(s)";
    $("tile-failover").textContent = pct(s.rates.failover_rate);
    $("tile-failover-note").textContent = s.rates.failed_over_tasks + " task(s) moved to another upstream";
    $("tile-advisor").textContent = pct(s.rates.advisor_consult_rate);
    $("tile-advisor-note").textContent =
      s.rates.advisor_tasks + " task(s) consulted an advisor · " + s.rates.consults + " consult(s)";
  }

  async function loadSummary() {
    document.body.dataset.summary = "loading";
    const s = await getJson("/dashboard/api/summary?days=" + encodeURIComponent(state.days));
    fillTiles(s);
    drawOverTime(s);
    drawBars("chart-by-model", s.by_model, true);
    drawBars("chart-by-role", s.by_role, false);
    drawDistribution(s);
    status("Window " + s.since.slice(0, 16).replace("T", " ") + " → " + s.until.slice(0, 16).replace("T", " ") + " UTC");
    document.body.dataset.summary = "ready";
  }

  function reasonCell(row) {
    const cell = el("td", null, "reason");
    cell.appendChild(el("div", row.reason));
    if (row.candidates.length) {
      const details = el("details");
      details.appendChild(el("summary", row.router + " · " + row.candidates.length + " candidate(s)"));
      const list = el("ul");
      for (const c of row.candidates) {
        const q = c.predicted_quality === null || c.predicted_quality === undefined ? "?" : Number(c.predicted_quality).toFixed(2);
        const cost = c.predicted_cost === null || c.predicted_cost === undefined ? "?" : usd(c.predicted_cost);
        list.appendChild(el("li", c.model + " — quality " + q + ", cost " + cost));
      }
      details.appendChild(list);
      cell.appendChild(details);
    } else {
      cell.appendChild(el("small", row.router));
    }
    return cell;
  }

  function escalationsCell(escalations) {
    const cell = el("td", escalations.length ? null : "–", "escalations");
    for (const step of escalations) {
      const item = el("div");
      item.appendChild(el("span", "→ " + step.to_model, "model"));
      item.appendChild(el("small", step.trigger));
      cell.appendChild(item);
    }
    return cell;
  }

  function decisionRow(row) {
    const tr = el("tr");
    tr.appendChild(el("td", row.created_at.slice(0, 19).replace("T", " "), "time"));
    const policy = el("td");
    policy.appendChild(el("div", row.policy || "–"));
    policy.appendChild(el("small", "task " + row.task_id.slice(0, 8)));
    tr.appendChild(policy);
    tr.appendChild(el("td", row.chosen_model, "model"));
    tr.appendChild(reasonCell(row));
    tr.appendChild(escalationsCell(row.escalations));
    const outcome = el("td");
    outcome.appendChild(el("span", row.outcome || "–", "tag " + (row.outcome || "")));
    tr.appendChild(outcome);
    tr.appendChild(el("td", row.task_calls ? usd(row.task_cost_usd) : "no calls", "num"));
    return tr;
  }

  async function loadDecisions() {
    document.body.dataset.decisions = "loading";
    const query = "?q=" + encodeURIComponent(state.q) + "&page=" + state.page;
    const page = await getJson("/dashboard/api/decisions" + query);
    const body = $("decisions").tBodies[0];
    body.replaceChildren(...page.rows.map(decisionRow));
    if (!page.rows.length) {
      const empty = el("td", page.q ? "No decision matches that search." : "No routing decisions yet.", "empty");
      empty.colSpan = 7;
      body.appendChild(el("tr")).appendChild(empty);
    }
    state.page = page.page;
    state.pages = page.pages;
    $("page-info").textContent = "page " + page.page + " of " + page.pages + " · " + page.total + " decision(s)";
    $("prev").disabled = page.page <= 1;
    $("next").disabled = page.page >= page.pages;
    document.body.dataset.decisions = "ready";
  }

  function guarded(load) {
    return load().catch((error) => { if (error.message !== "signed out") status(error.message, true); });
  }

  function start() {
    $("days").addEventListener("change", (e) => { state.days = Number(e.target.value); guarded(loadSummary); });
    $("search").addEventListener("input", (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { state.q = e.target.value; state.page = 1; guarded(loadDecisions); }, 250);
    });
    $("prev").addEventListener("click", () => { state.page -= 1; guarded(loadDecisions); });
    $("next").addEventListener("click", () => { state.page += 1; guarded(loadDecisions); });
    guarded(loadSummary);
    guarded(loadDecisions);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
