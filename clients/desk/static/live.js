// CaseBridge desk: the live header. The desk pushes its status over Server-Sent Events
// (GET /events): online or offline, what waits in the outbox, whether the broker's push is
// connected, and a counter that grows whenever a case arrives or changes. Locked: off to the
// unlock page. On the inbox, new activity reloads the list unless the person is typing a search.
"use strict";

(function () {
  const script = document.currentScript;
  const el = document.getElementById("sync-status");
  if (!el || typeof EventSource === "undefined") return;  // Locked pages follow nothing.
  let seen = script && script.dataset.changes ? Number(script.dataset.changes) : null;
  let reloadWanted = false;

  function show(s) {
    let text = s.online === false ? el.dataset.offline : el.dataset.online;
    if (s.pending) text += " · " + s.pending + " " + el.dataset.waiting;
    el.textContent = text;
    el.classList.toggle("offline", s.online === false);
    el.dataset.pending = String(s.pending);
    el.dataset.push = s.push ? "connected" : "disconnected";
  }

  function search() {
    return document.querySelector('form.search input[name="q"]');
  }

  function typing() {
    const q = search();
    return !!q && (document.activeElement === q || q.value !== q.defaultValue);
  }

  function reloadInbox() {
    if (!reloadWanted) return;
    if (typing()) return;  // Tried again when the search box loses focus.
    reloadWanted = false;
    window.location.reload();
  }

  const source = new EventSource("/events");
  source.onmessage = function (e) {
    let s;
    try { s = JSON.parse(e.data); } catch (err) { return; }
    if (s.locked) { source.close(); window.location.assign("/unlock"); return; }
    show(s);
    if (seen === null) seen = s.changes;
    if (s.changes > seen) {
      seen = s.changes;
      if (window.location.pathname === "/inbox") {
        reloadWanted = true;
        setTimeout(reloadInbox, 300);  // A burst of cases reloads once.
      }
    }
  };
  const q = search();
  if (q) q.addEventListener("blur", function () { setTimeout(reloadInbox, 300); });
})();
