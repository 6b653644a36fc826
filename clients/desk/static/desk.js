// CaseBridge desk: validation as the person types, drag and drop of attachments, and the
// sync status. No inline script anywhere; this file is the only script the page loads.
"use strict";

function debounce(fn, ms) {
  let timer = null;
  return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function fieldFor(form, path) {
  // The closest field for a path such as "person.name.full_native" or "requested_actions[0]".
  let p = path.replace(/\[\d+\]/g, "");
  while (p) {
    const el = form.querySelector('.field[data-path="' + CSS.escape(p) + '"]');
    if (el) return el;
    const cut = p.lastIndexOf(".");
    if (cut < 0) break;
    p = p.slice(0, cut);
  }
  // A record with a missing part: the first field below it.
  return form.querySelector('.field[data-path^="' + CSS.escape(path.replace(/\[\d+\]/g, "")) + '."]');
}

function setupCompose(form) {
  const problems = document.getElementById("problems");
  const check = debounce(async function () {
    const data = new URLSearchParams();
    for (const [k, v] of new FormData(form)) { if (typeof v === "string" && k !== "csrf") data.append(k, v); }
    let answer;
    try {
      const r = await fetch(form.dataset.validate, {
        method: "POST", body: data, credentials: "same-origin",
        headers: { "X-CSRF-Token": form.dataset.csrf },
      });
      if (!r.ok) return;
      answer = await r.json();
    } catch (e) { return; }
    for (const el of form.querySelectorAll(".field.invalid")) {
      el.classList.remove("invalid");
      const p = el.querySelector(".field-error"); p.hidden = true; p.textContent = "";
    }
    if (answer.ok) { problems.hidden = true; problems.textContent = ""; return; }
    const el = fieldFor(form, answer.field);
    const label = el ? el.dataset.label : answer.field;
    problems.hidden = false;
    problems.textContent = form.dataset.checkLabel + ": " + label + " (" + answer.field + ") — " + answer.expected;
    if (el) {
      el.classList.add("invalid");
      const p = el.querySelector(".field-error");
      p.hidden = false; p.textContent = answer.expected;
    }
  }, 350);
  form.addEventListener("input", check);
  form.addEventListener("change", check);
  check();

  const drop = document.getElementById("drop");
  const files = document.getElementById("files");
  if (drop && files) {
    drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("dragging"); });
    drop.addEventListener("dragleave", function () { drop.classList.remove("dragging"); });
    drop.addEventListener("drop", function (e) {
      e.preventDefault(); drop.classList.remove("dragging");
      const t = new DataTransfer();
      for (const f of files.files) t.items.add(f);
      for (const f of e.dataTransfer.files) t.items.add(f);
      files.files = t.files;
    });
  }
}

async function refreshStatus(el) {
  try {
    const r = await fetch("/status.json", { credentials: "same-origin" });
    const s = await r.json();
    if (s.locked) { window.location.assign("/unlock"); return; }
    let text = s.online === false ? el.dataset.offline : el.dataset.online;
    if (s.pending) text += " · " + s.pending + " " + el.dataset.waiting;
    el.textContent = text;
    el.classList.toggle("offline", s.online === false);
    el.dataset.pending = String(s.pending);
  } catch (e) { /* The desk itself is gone; nothing to show. */ }
}

document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("compose");
  if (form) setupCompose(form);
  const status = document.getElementById("sync-status");
  if (status) { refreshStatus(status); setInterval(function () { refreshStatus(status); }, 3000); }
});
