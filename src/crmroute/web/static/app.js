// crmroute admin UI: small progressive enhancements; the server validates everything again.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Phone-sized screens: the main menu folds behind a button.
  const toggle = document.querySelector(".nav-toggle");
  const nav = document.getElementById("main-nav");
  if (toggle && nav) {
    toggle.addEventListener("click", () => {
      const open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", String(open));
    });
  }

  // Forms with data-confirm ask before submitting (e.g. deleting a rule).
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  document.querySelectorAll("form").forEach((form) => {
    showWhen(form);
    form.querySelectorAll("[data-repeater]").forEach(repeater);
    destinationOptions(form);
  });

  // Copy buttons (a new API token): the text of the element named by data-copy, to the clipboard.
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", () => copyText(button.dataset.copy));
  });

  // A form re-shown with errors: bring the list of problems into view.
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
});

// The value a control named `name` has now ("" for an unchecked checkbox).
function currentValue(form, name) {
  const field = form.elements.namedItem(name);
  if (!field) return "";
  if (typeof RadioNodeList !== "undefined" && field instanceof RadioNodeList) return field.value;
  if (field.type === "checkbox") return field.checked ? field.value : "";
  return field.value;
}

// Parts shown only while another field has one of some values:
// data-show-when="location=ivr" or "type=extension|queue|ivr". Hidden parts
// are only hidden (never required), and the server ignores what does not apply.
function showWhen(form) {
  const parts = form.querySelectorAll("[data-show-when]");
  if (!parts.length) return;
  const update = () => {
    parts.forEach((part) => {
      const [name, values] = part.dataset.showWhen.split("=");
      part.classList.toggle("hidden", !values.split("|").includes(currentValue(form, name)));
    });
  };
  form.addEventListener("change", update);
  update();
}

// Lists of rows (rule rows, custom headers, settings) that can be added,
// removed and moved. Inputs are named PREFIX-N-FIELD; N is renumbered in
// screen order after every change and before submitting, so the server reads
// the rows in the order they are shown.
function repeater(box) {
  const prefix = box.dataset.repeater;
  const list = box.querySelector("[data-items]");
  const template = box.querySelector("template");
  const empty = box.querySelector("[data-empty]");
  if (!list || !template) return;
  const pattern = new RegExp("^" + prefix + "-(\\d+|__i__)-");

  const renumber = () => {
    const items = list.querySelectorAll(":scope > [data-item]");
    items.forEach((item, i) => {
      const replace = (value) => value.replace(pattern, `${prefix}-${i}-`);
      item.querySelectorAll("[id], [name], [for], [aria-describedby]").forEach((el) => {
        for (const attr of ["id", "name", "for"]) {
          const value = el.getAttribute(attr);
          if (value) el.setAttribute(attr, replace(value));
        }
        const described = el.getAttribute("aria-describedby");
        if (described) el.setAttribute("aria-describedby", described.split(" ").map(replace).join(" "));
      });
      item.querySelectorAll("[data-number]").forEach((el) => { el.textContent = String(i + 1); });
      const up = item.querySelector('[data-action="up"]');
      const down = item.querySelector('[data-action="down"]');
      if (up) up.disabled = i === 0;
      if (down) down.disabled = i === items.length - 1;
    });
    if (empty) empty.hidden = items.length > 0;
    const table = box.querySelector(".table-wrap");
    if (table) table.hidden = items.length === 0;
  };

  box.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.closest("[data-repeater]") !== box) return;
    const item = button.closest("[data-item]");
    const action = button.dataset.action;
    if (action === "add") {
      const fresh = template.content.firstElementChild.cloneNode(true);
      list.appendChild(fresh);
      renumber();
      fresh.dispatchEvent(new Event("change", { bubbles: true }));
      const first = fresh.querySelector("input, select");
      if (first) first.focus();
      return;
    }
    if (!item) return;
    if (action === "remove") {
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      renumber();
      const focus = next ? next.querySelector('[data-action="remove"]') : box.querySelector('[data-action="add"]');
      if (focus) focus.focus();
      return;
    }
    if (action === "up" && item.previousElementSibling) list.insertBefore(item, item.previousElementSibling);
    if (action === "down" && item.nextElementSibling) list.insertBefore(item.nextElementSibling, item);
    renumber();
    if (!button.disabled) button.focus();
    else {
      const other = item.querySelector(action === "up" ? '[data-action="down"]' : '[data-action="up"]');
      if (other) other.focus();
    }
  });
  const form = box.closest("form");
  if (form) form.addEventListener("submit", renumber);
  renumber();
}

// A rule row's Destination Option suggests only destinations of the row's
// Destination type (queue numbers, IVR numbers or recordings); any value can be typed.
function destinationOptions(form) {
  const filter = (row) => {
    const type = row.querySelector("[data-dest-type]");
    const option = row.querySelector("[data-dest-option]");
    if (!type || !option) return;
    option.setAttribute("list", `dest-options-${type.value}`);
    // owner / last_agent: the agent is found per call, there is nothing to choose
    const agent = type.value === "owner" || type.value === "last_agent";
    option.disabled = agent;
    if (agent) option.value = "";
  };
  form.querySelectorAll("[data-item]").forEach(filter);
  form.addEventListener("change", (event) => {
    const row = event.target.closest && event.target.closest("[data-item]");
    if (row) filter(row);
  });
}

// Copy the text of element `id`; say whether it worked next to the button (data-copy-status).
async function copyText(id) {
  const source = document.getElementById(id);
  const status = document.querySelector(`[data-copy-status="${id}"]`);
  if (!source) return;
  const text = source.textContent.trim();
  let copied = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      copied = true;
    }
  } catch (error) {
    copied = false;
  }
  if (!copied) {  // plain http: select the text so Ctrl+C copies it
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    copied = document.execCommand && document.execCommand("copy");
  }
  if (status) status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (or ⌘C) to copy.";
}
