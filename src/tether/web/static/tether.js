// tether web: pages kept live over server-sent events, and actions sent without a reload.
// Our own code, no library. Without it every page still reads (reload to refresh) and every
// form still posts.
(() => {
  "use strict";
  const body = document.body;
  const base = body.dataset.base || "";
  const dot = document.getElementById("live-dot");
  const BATCH = 25;
  let refreshing = false;
  let again = false;
  // A region replaced between a press and its release swallows the click (a link that
  // was pressed is gone): a push that comes meanwhile waits for the release.
  let pressed = false;
  let waiting = false;
  document.addEventListener("pointerdown", () => { pressed = true; }, true);
  document.addEventListener("pointerup", () => {
    pressed = false;
    if (waiting) { waiting = false; setTimeout(refresh, 0); }  // after the click it ends
  }, true);

  function flash(message, ok) {
    const box = document.getElementById("flash");
    if (!box) return;
    const p = document.createElement("p");
    p.className = "flash " + (ok ? "ok" : "bad");
    p.textContent = message;
    box.replaceChildren(p);
  }

  function checkedIds() {
    return new Set([...document.querySelectorAll("input[name=run_id]:checked")].map((c) => c.value));
  }

  function countSelected() {
    const out = document.querySelector("[data-selected]");
    const all = document.querySelector("[data-select-all]");
    if (!out) return;
    out.textContent = all && all.checked ? "all matching selected" : `${checkedIds().size} selected`;
  }

  // Replace each live region with the server's fresh rendering of this same page.
  async function refresh() {
    if (pressed) { waiting = true; return; }
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!response.ok && response.status !== 404) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      if (pressed) { waiting = true; return; }  // pressed while it was fetched
      const checked = checkedIds();
      const open = new Set([...document.querySelectorAll("details[open]")].map((d) => d.textContent.slice(0, 80)));
      for (const region of fresh.querySelectorAll("[data-live]")) {
        const old = document.getElementById(region.id);
        if (!old) continue;
        const typing = document.activeElement;
        if (old.contains(typing) && typing.matches("input:not([type=checkbox]), textarea, select")) continue;
        if ([...old.querySelectorAll("textarea")].some((t) => t.value)) continue;  // keep what was typed
        old.replaceWith(region);
      }
      for (const box of document.querySelectorAll("input[name=run_id]")) box.checked = checked.has(box.value);
      for (const d of document.querySelectorAll("details")) if (open.has(d.textContent.slice(0, 80))) d.open = true;
      countSelected();
    } catch (err) {
      // The server is away: the next push (or a reload) tries again.
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  // One /live stream per browser, not per tab: a browser keeps at most 6 HTTP/1.1
  // connections to a host, and each stream holds one for as long as its tab is open. The
  // tab holding a Web Lock listens and passes each push on to the others.
  function listen() {
    const name = `tether-live:${location.host}${base}`;
    const channel = window.BroadcastChannel ? new BroadcastChannel(name) : null;
    if (channel) channel.onmessage = () => refresh();
    const stream = () => new Promise(() => {  // never settles: the lock is held while the tab lives
      const source = new EventSource(base + "/live");
      source.onopen = () => { dot.classList.add("on"); dot.title = "live: this page updates itself"; };
      source.onerror = () => { dot.classList.remove("on"); dot.title = "live updates interrupted: retrying"; };
      source.onmessage = () => {  // the first message too: nothing since the render is missed
        refresh();
        if (channel) channel.postMessage("changed");
      };
    });
    if (channel && navigator.locks) {
      dot.classList.add("on");
      dot.title = "live: another tab of this UI listens for this one";
      navigator.locks.request(name, stream);
      refresh();
    } else {
      stream();
    }
  }

  async function post(url, data) {
    const response = await fetch(url, { method: "POST", body: data, headers: { Accept: "application/json" } });
    try {
      return await response.json();
    } catch (err) {
      return { ok: false, message: `the server answered ${response.status}`, results: [] };
    }
  }

  // form.action would be the form's <button name=action>: read the attribute.
  async function bulk(form, submitter) {
    const all = form.querySelector("[data-select-all]");
    let ids;
    let capped = "";
    if (all && all.checked) {
      const response = await fetch(`${base}/actions/matching?${form.dataset.query || ""}`, { headers: { Accept: "application/json" } });
      if (!response.ok) { flash(`could not list the matching runs: the server answered ${response.status}`, false); return; }
      ids = await response.json();
      const matching = Number(all.dataset.matching || ids.length);
      if (ids.length < matching) capped = ` (the newest ${ids.length} of ${matching} matching)`;
    } else {
      ids = [...checkedIds()];
    }
    const label = submitter ? submitter.textContent.trim() : "Act";
    if (!ids.length) { flash("no run selected", false); return; }
    if (!window.confirm(`${label}: ${ids.length} run${ids.length === 1 ? "" : "s"}${capped}?`)) return;
    const csrf = form.querySelector("input[name=csrf]").value;  // as rendered with this form
    const bar = form.querySelector("[data-progress]");
    const text = form.querySelector("[data-progress-text]");
    bar.hidden = false; bar.max = ids.length; bar.value = 0;
    let done = 0; const failures = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = new FormData();
      chunk.append("csrf", csrf);
      chunk.append("action", submitter.value);
      for (const id of ids.slice(i, i + BATCH)) chunk.append("run_id", id);
      const answer = await post(form.getAttribute("action"), chunk);
      const results = answer.results || [];
      done += results.filter((r) => r.ok).length;
      failures.push(...results.filter((r) => !r.ok).map((r) => r.text));
      if (!results.length && !answer.ok) failures.push(answer.message);
      bar.value = Math.min(ids.length, i + BATCH);
      text.textContent = `${bar.value} / ${ids.length}`;
    }
    bar.hidden = true; text.textContent = "";
    const ok = failures.length === 0;
    flash(`${label}: ${done} of ${ids.length} run${ids.length === 1 ? "" : "s"} done` + (ok ? "" : `; ${failures.join("; ")}`), ok);
    for (const box of document.querySelectorAll("input[name=run_id], [data-select-all], [data-select-page]")) box.checked = false;
    countSelected();
    refresh();
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if ((form.getAttribute("method") || "").toLowerCase() !== "post") return;
    if (form.hasAttribute("data-navigate")) return;  // it answers with a page: go there
    event.preventDefault();
    const submitter = event.submitter;
    if (form.matches("[data-bulk]")) { await bulk(form, submitter); return; }
    const data = new FormData(form, submitter);
    const field = form.dataset.jsonField;
    if (field) {
      const error = form.querySelector("[data-field-error]");
      try {
        JSON.parse(String(data.get(field) || "null").trim() || "null");
        if (error) error.textContent = "";
      } catch (err) {
        if (error) error.textContent = `not JSON: ${err.message}`;
        return;
      }
    }
    const question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) return;
    const answer = await post(form.getAttribute("action"), data);
    const failed = (answer.results || []).filter((r) => !r.ok).map((r) => r.text);
    flash(answer.message + (failed.length ? ` (${failed.join("; ")})` : ""), answer.ok);
    if (answer.ok) for (const t of form.querySelectorAll("textarea")) t.value = "";
    refresh();
  });

  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target.matches("[data-select-page]")) {
      for (const box of document.querySelectorAll("input[name=run_id]")) box.checked = target.checked;
    }
    countSelected();
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy]");
    if (button && navigator.clipboard) {
      navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "✓";
    }
  });

  if (window.EventSource) listen();
})();
