/* Steward page helpers, version 1.0.0 (no inline handlers: the pages run under a CSP).
   - Steward.ask(): an in-page <dialog> instead of window.confirm / window.prompt. It is modal
     (focus stays inside, Esc cancels), has a labelled reason field when asked for one, and
     Enter in that field confirms.
   - form[data-confirm]: asks before submitting; data-confirm-reason="field" also asks for a
     reason and sends it as that field.
   - select[data-autosubmit]: submits its form on change.
   - [data-swap-editor]: switches the approval edit between schema fields and the JSON editor.
   - [data-tree-toggle]: expands / collapses every node of a JSON tree. */
(function () {
  "use strict";
  var Steward = (window.Steward = window.Steward || {});

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) node.textContent = text;
    return node;
  }

  var counter = 0;
  Steward.ask = function (opts) {
    return new Promise(function (resolve) {
      counter += 1;
      var id = "ask-" + counter;
      var dialog = el("dialog", { class: "ask", "aria-labelledby": id + "-title", "data-ask": "" });
      var form = el("form", { method: "dialog" });
      form.appendChild(el("h2", { id: id + "-title" }, opts.title || "Are you sure?"));
      if (opts.message) form.appendChild(el("p", { class: "muted" }, opts.message));
      var reason = null;
      if (opts.reason) {
        var field = el("div", { class: "field" });
        field.appendChild(el("label", { for: id + "-reason" }, opts.reasonLabel || "Reason (optional, kept in the audit trail)"));
        reason = el("input", { id: id + "-reason", type: "text", name: "reason", autocomplete: "off", maxlength: "2000" });
        field.appendChild(reason);
        form.appendChild(field);
      }
      var row = el("div", { class: "btn-row" });
      var cancel = el("button", { type: "button", class: "btn", value: "cancel" }, opts.cancelLabel || "Keep it");
      var ok = el("button", { type: "submit", class: "btn " + (opts.danger === false ? "primary" : "danger"), value: "ok" }, opts.confirmLabel || "Confirm");
      row.appendChild(ok);
      row.appendChild(cancel);
      form.appendChild(row);
      dialog.appendChild(form);
      document.body.appendChild(dialog);

      var answered = false;
      function finish(value) {
        if (answered) return;
        answered = true;
        if (dialog.open) dialog.close();
        dialog.remove();
        resolve(value);
      }
      cancel.addEventListener("click", function () { finish(null); });
      form.addEventListener("submit", function (evt) {
        evt.preventDefault();
        finish({ reason: reason ? reason.value.trim() : "" });
      });
      dialog.addEventListener("cancel", function () { finish(null); });
      dialog.addEventListener("close", function () { finish(null); });
      dialog.showModal();
      (reason || ok).focus();
    });
  };

  // Forms that ask first. Capture phase, so htmx and the browser see only confirmed submits.
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form.matches || !form.matches("form[data-confirm]")) return;
    if (form.dataset.confirmed === "1") { delete form.dataset.confirmed; return; }
    evt.preventDefault();
    evt.stopImmediatePropagation();
    var submitter = evt.submitter || null;
    var field = form.dataset.confirmReason;
    Steward.ask({
      title: form.dataset.confirm,
      message: form.dataset.confirmDetail || "",
      confirmLabel: form.dataset.confirmAction || "Confirm",
      reason: !!field,
    }).then(function (answer) {
      if (!answer) return;
      if (field) {
        var input = form.querySelector('input[type=hidden][name="' + field + '"]');
        if (!input) { input = el("input", { type: "hidden", name: field }); form.appendChild(input); }
        input.value = answer.reason;
      }
      form.dataset.confirmed = "1";
      if (form.requestSubmit) form.requestSubmit(submitter && form.contains(submitter) ? submitter : undefined);
      else form.submit();
    });
  }, true);

  document.addEventListener("change", function (evt) {
    var target = evt.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) target.form.submit();
  });

  // The approval edit: the schema's fields, or the JSON editor as the advanced option.
  document.addEventListener("click", function (evt) {
    var swap = evt.target.closest && evt.target.closest("[data-swap-editor]");
    if (!swap) return;
    var target = document.querySelector(swap.dataset.swapEditor);
    var current = swap.closest("form");
    if (!target || !current) return;
    current.hidden = true;
    target.hidden = false;
    var first = target.querySelector("textarea, input:not([type=hidden]), select");
    if (first) first.focus();
  });

  document.addEventListener("click", function (evt) {
    var toggle = evt.target.closest && evt.target.closest("[data-tree-toggle]");
    if (!toggle) return;
    var root = document.querySelector(toggle.dataset.treeToggle);
    if (!root) return;
    var open = toggle.getAttribute("aria-expanded") !== "true";
    root.querySelectorAll("details").forEach(function (d) { d.open = open; });
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    toggle.textContent = open ? "Collapse all" : "Expand all";
  });
})();
