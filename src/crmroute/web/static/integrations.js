// The integration form: changing the CRM of an integration that rules use asks first (the server asks too).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("integration-form");
  if (!form || !form.dataset.storedKind || !form.dataset.usedBy) return;
  const kind = form.elements.namedItem("kind");
  const confirmed = form.elements.namedItem("confirm_kind");
  form.addEventListener("submit", (event) => {
    if (!kind || kind.value === form.dataset.storedKind || confirmed.value === kind.value) return;
    const from = kind.querySelector(`option[value="${form.dataset.storedKind}"]`);
    const to = kind.selectedOptions[0];
    const message = `Change this integration from ${from ? from.textContent : form.dataset.storedKind} to ` +
      `${to ? to.textContent : kind.value}? It is used by: ${form.dataset.usedBy}. Those rules will ask the new ` +
      "CRM, and the old CRM's settings and secrets are dropped.";
    if (window.confirm(message)) confirmed.value = kind.value;
    else event.preventDefault();
  });
});
