// CaseBridge desk: validation as the person types, rows of lists, drag and drop of attachments.
// No inline script anywhere; the status line is live.js's.
"use strict";

function debounce(fn, ms) {
  let timer = null;
  return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function fieldFor(form, path) {
  // The closest field for a path such as "person.name.full_native" or "known_family[1].relation".
  for (const candidate of [path, path.replace(/\[\d+\]$/, "")]) {
    let p = candidate;
    while (p) {
      const el = form.querySelector('.field[data-path="' + CSS.escape(p) + '"]');
      if (el) return el;
      const cut = p.lastIndexOf(".");
      if (cut < 0) break;
      p = p.slice(0, cut);
    }
  }
  // A record or list with a missing part: the first field below it.
  return form.querySelector('.field[data-path^="' + CSS.escape(path) + '."], .field[data-path^="' + CSS.escape(path) + '["]');
}

function addRow(fieldset) {
  // A copy of the last row of a repeated record, renumbered and emptied.
  const rows = fieldset.querySelectorAll(":scope > .repeat-row");
  const last = rows[rows.length - 1];
  const list = fieldset.dataset.repeat;
  const from = list + "[" + last.dataset.row + "]";
  const to = list + "[" + rows.length + "]";
  const row = last.cloneNode(true);
  row.dataset.row = String(rows.length);
  for (const el of row.querySelectorAll("[name],[id],[for],[data-path]")) {
    for (const attr of ["name", "id", "for", "data-path"]) {
      const v = el.getAttribute(attr);
      if (v && v.includes(from)) el.setAttribute(attr, v.split(from).join(to));
    }
  }
  for (const el of row.querySelectorAll("input,textarea,select")) {
    if (el.type === "checkbox") el.checked = false;
    else if (el.tagName === "SELECT") el.selectedIndex = 0;
    else el.value = "";
  }
  for (const el of row.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
  for (const el of row.querySelectorAll(".field-error")) { el.hidden = true; el.textContent = ""; }
  row.querySelector(".row-number").textContent = String(rows.length + 1);
  last.after(row);
  if (rows.length + 1 >= Number(fieldset.dataset.max)) fieldset.querySelector(".add-row").hidden = true;
}

function showChosen(files) {
  // The chosen files' names and sizes, in place of the browser's own (untranslated) words.
  const list = document.getElementById("chosen");
  list.replaceChildren();
  for (const f of files.files) {
    const item = document.createElement("li");
    item.textContent = f.name + " (" + f.size.toLocaleString() + " B)";
    list.append(item);
  }
  if (!files.files.length) {
    const item = document.createElement("li");
    item.textContent = list.dataset.none;
    list.append(item);
  }
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
    problems.textContent = form.dataset.checkLabel + ": " + label + " (" + answer.field + ") — " + answer.message + " ";
    const detail = document.createElement("small");
    detail.lang = "en"; detail.className = "detail"; detail.textContent = answer.expected;
    problems.append(detail);
    if (el) {
      el.classList.add("invalid");
      const p = el.querySelector(".field-error");
      p.hidden = false; p.textContent = answer.message;
    }
  }, 350);
  form.addEventListener("input", check);
  form.addEventListener("change", check);
  for (const button of form.querySelectorAll(".add-row")) {
    button.addEventListener("click", function () { addRow(button.closest("fieldset.repeat")); });
  }
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
      showChosen(files);
    });
    files.addEventListener("change", function () { showChosen(files); });
  }
}

document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("compose");
  if (form) setupCompose(form);
});
