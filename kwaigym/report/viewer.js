"use strict";
// The trajectory viewer of a kwaigym report. Everything it shows comes from agents and models, so
// it only ever builds DOM nodes and sets textContent (never innerHTML): markup in the data stays text.
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const EPISODES = DATA.episodes;
  const MESSAGES = DATA.messages;  // shared by all calls; a message's parts are indices into PARTS
  const PARTS = DATA.parts;
  const LONG_CHARS = 1500;
  const LONG_LINES = 24;

  // el("div", {class: "x"}, child, "text", ...): strings become text nodes, null children are skipped.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function num(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  }

  function rewardText(ep) {
    return ep.valid ? num(ep.reward, 2) : "invalid";
  }

  // A <pre> of the text; a long one is clipped with a button that shows all of it.
  function textBlock(text) {
    const pre = el("pre", {}, text);
    const lines = text.split("\n").length;
    if (text.length <= LONG_CHARS && lines <= LONG_LINES) return pre;
    pre.classList.add("clipped");
    const label = () => (pre.classList.contains("clipped") ? `show all (${text.length} chars, ${lines} lines)` : "show less");
    const button = el("button", {class: "toggle", type: "button"}, label());
    button.addEventListener("click", () => {
      pre.classList.toggle("clipped");
      button.textContent = label();
    });
    return el("div", {class: "long"}, pre, button);
  }

  function partView(part) {
    const kind = part.type;
    let label = null;
    if (kind === "reasoning") label = "reasoning";
    else if (kind === "tool_call") label = `tool call ${part.name}` + (part.id ? ` (${part.id})` : "");
    else if (kind === "tool_result") label = `tool result` + (part.id ? ` (${part.id})` : "") + (part.error ? " — error" : "");
    else if (kind === "other") label = "other content";
    return el("div", {class: `part part-${kind}` + (part.error ? " error" : "")},
      label && el("div", {class: "part-label"}, label), textBlock(part.text || ""));
  }

  function messageView(message, extraClass) {
    return el("div", {class: `msg role-${message.role} ${extraClass || ""}`},
      el("div", {class: "role"}, message.role + (message.finish ? ` — finish: ${message.finish}` : "")),
      message.parts.length ? message.parts.map((p) => partView(typeof p === "number" ? PARTS[p] : p))
        : el("div", {class: "part muted"}, "(empty)"));
  }

  // The index of the earlier call of the same agent whose messages start this call's, or -1.
  function previousOf(calls, i) {
    const call = calls[i];
    for (let j = i - 1; j >= 0; j--) {
      const prev = calls[j];
      if (prev.kind !== call.kind || prev.agent !== call.agent) continue;
      const prefix = prev.msgs.length > 0 && prev.msgs.length <= call.msgs.length &&
        prev.msgs.every((m, k) => call.msgs[k] === m);
      return prefix ? j : -1;
    }
    return -1;
  }

  function callBody(calls, i) {
    const call = calls[i];
    const body = el("div", {class: "call-body"});
    for (const note of call.notes) body.append(el("div", {class: "note"}, note));
    if (call.error) body.append(el("div", {class: "note"}, "error: "), textBlock(call.error));
    if (call.tools.length) body.append(el("div", {class: "muted"}, `tools: ${call.tools.join(", ")}`));
    const prev = previousOf(calls, i);
    const earlier = prev >= 0 ? calls[prev].msgs.length : 0;
    if (earlier) {
      const hidden = el("div", {hidden: true}, call.msgs.slice(0, earlier).map((m) => messageView(MESSAGES[m])));
      const button = el("button", {class: "toggle", type: "button"}, "show");
      button.addEventListener("click", () => {
        hidden.hidden = !hidden.hidden;
        button.textContent = hidden.hidden ? "show" : "hide";
      });
      body.append(el("div", {class: "earlier"}, `${earlier} earlier message(s), as sent in call #${prev + 1} `, button), hidden);
    }
    for (const m of call.msgs.slice(earlier)) body.append(messageView(MESSAGES[m]));
    if (call.request_raw) body.append(el("div", {class: "part-label"}, "request (raw)"), textBlock(call.request_raw));
    if (call.answer) body.append(messageView(call.answer, "answer"));
    if (call.response_raw) body.append(el("div", {class: "part-label"}, "answer (raw)"), textBlock(call.response_raw));
    return body;
  }

  function callView(calls, i) {
    const call = calls[i];
    const usage = call.usage || {};
    const head = el("button", {class: "call-head", type: "button", "aria-expanded": "false"},
      `#${i + 1} `, el("span", {class: "kind"}, call.kind + (call.agent ? ` ${call.agent}` : "")),
      ` · HTTP ${call.status} · ${call.format || call.path}`,
      call.t === null ? "" : ` · at +${num(call.t, 1)} s`, ` · ${num(call.total, 3)} s`,
      ` · tokens ${usage.input_tokens ?? "?"} in / ${usage.output_tokens ?? "?"} out`,
      call.model ? ` · ${call.model}` : "", ` · ${call.msgs.length} msgs`);
    const box = el("div", {class: `call kind-${call.kind}`, "data-call": call.id}, head);
    let body = null;
    head.addEventListener("click", () => {
      if (!body) box.append(body = callBody(calls, i));  // built on first open: keeps the page light
      else body.hidden = !body.hidden;
      head.setAttribute("aria-expanded", String(!body.hidden));
    });
    return box;
  }

  function showEpisode(index) {
    const ep = EPISODES[index];
    for (const row of document.querySelectorAll("#episodes tbody tr")) {
      row.classList.toggle("selected", Number(row.dataset.index) === index);
    }
    const facts = [
      ["episode", ep.id], ["status", ep.status], ["reward", rewardText(ep)], ["turns", ep.turns],
      ["truncated", ep.truncated ? "yes" : "no"], ["time", `${num(ep.duration, 1)} s`],
      ["agent exit code", ep.exit ?? "—"], ["tokens", `${ep.tokens[0]} in / ${ep.tokens[1]} out`],
    ];
    const dl = el("dl", {class: "facts"}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
    if (ep.error) dl.append(el("dt", {}, "error"), el("dd", {}, textBlock(ep.error)));
    dl.append(el("dt", {}, "final message"), el("dd", {}, textBlock(ep.final || "(none)")));
    const v = ep.verifier;
    if (v) {
      dl.append(el("dt", {}, "verifier"), el("dd", {},
        `reward ${v.valid ? num(v.reward, 3) : "invalid"} · ${num(v.duration, 1)} s` + (v.error ? ` · error: ${v.error}` : ""),
        textBlock(v.details)));
    }
    const calls = el("div", {id: "calls"}, ep.calls.map((_, i) => callView(ep.calls, i)));
    const toggleAll = (open) => () => {
      for (const head of calls.querySelectorAll(".call-head")) {
        if ((head.getAttribute("aria-expanded") === "true") !== open) head.click();
      }
    };
    const detail = document.getElementById("detail");
    detail.replaceChildren(
      el("h3", {}, `${ep.task} · ${ep.scaffold} · sample ${ep.sample} `, el("span", {class: `status status-${ep.status}`}, ep.status)),
      dl,
      el("h3", {}, `Model calls (${ep.calls.length}) `,
        el("button", {class: "toggle", type: "button", onclick: toggleAll(true)}, "open all"), " ",
        el("button", {class: "toggle", type: "button", onclick: toggleAll(false)}, "close all")),
      ep.calls.length ? calls : el("p", {class: "muted"}, "No model calls."));
    history.replaceState(null, "", "#episode=" + encodeURIComponent(ep.id));
  }

  function fillSelect(id, values) {
    const select = document.getElementById(id);
    for (const value of [...new Set(values)].sort()) select.append(el("option", {value}, value));
    select.addEventListener("change", renderTable);
  }

  function renderTable() {
    const scaffold = document.getElementById("filter-scaffold").value;
    const status = document.getElementById("filter-status").value;
    const text = document.getElementById("filter-text").value.trim().toLowerCase();
    const rows = [];
    EPISODES.forEach((ep, index) => {
      if (scaffold && ep.scaffold !== scaffold) return;
      if (status && ep.status !== status) return;
      if (text && !ep.task.toLowerCase().includes(text) && !ep.id.toLowerCase().includes(text)) return;
      const row = el("tr", {class: "episode", "data-index": index},
        el("td", {}, ep.task), el("td", {}, ep.scaffold), el("td", {}, ep.sample),
        el("td", {class: `status status-${ep.status}`}, ep.status), el("td", {}, rewardText(ep)),
        el("td", {}, ep.turns ?? "—"), el("td", {}, ep.calls.length), el("td", {}, num(ep.duration, 1)));
      row.addEventListener("click", () => showEpisode(index));
      rows.push(row);
    });
    document.querySelector("#episodes tbody").replaceChildren(...rows);
    document.getElementById("episode-count").textContent = `${rows.length} of ${EPISODES.length} episodes`;
  }

  fillSelect("filter-scaffold", EPISODES.map((ep) => ep.scaffold));
  fillSelect("filter-status", EPISODES.map((ep) => ep.status));
  document.getElementById("filter-text").addEventListener("input", renderTable);
  renderTable();
  const wanted = decodeURIComponent((location.hash.match(/^#episode=(.*)$/) || [])[1] || "");
  const start = EPISODES.findIndex((ep) => ep.id === wanted);
  if (start >= 0) showEpisode(start);
})();
