/* Approvals inbox keyboard and bulk selection, version 1.0.0.
   j / k move, x selects, Enter opens, a / r approve / reject the focused item (or, with a
   selection, every selected item after a confirmation). */
(function () {
  "use strict";
  function items() { return Array.prototype.slice.call(document.querySelectorAll("#inbox-items .inbox-item")); }
  function focused() { return document.querySelector("#inbox-items .inbox-item.focused"); }
  function selected() { return Array.prototype.slice.call(document.querySelectorAll('#inbox-items input[name="ids"]:checked')); }

  function focus(el) {
    items().forEach(function (i) { i.classList.remove("focused"); i.setAttribute("aria-selected", "false"); });
    if (!el) return;
    el.classList.add("focused");
    el.setAttribute("aria-selected", "true");
    el.focus({ preventScroll: true });
    el.scrollIntoView({ block: "nearest" });
  }
  function move(step) {
    var list = items();
    if (!list.length) return;
    var index = list.indexOf(focused());
    focus(list[Math.max(0, Math.min(list.length - 1, index < 0 ? 0 : index + step))]);
  }

  function updateBulk() {
    var n = selected().length;
    var label = document.querySelector("[data-selected-count]");
    if (label) label.textContent = n + " selected";
    document.querySelectorAll("[data-bulk]").forEach(function (b) { b.disabled = n === 0; });
  }

  function csrf() {
    var headers = document.body.getAttribute("hx-headers");
    try { return JSON.parse(headers)["X-CSRFToken"]; } catch (e) { return ""; }
  }

  function decideOne(item, decision) {
    if (item.dataset.canDecide !== "1") {
      window.Steward.toast("You cannot decide this approval.", "error");
      return;
    }
    if (decision === "reject") {
      // An in-page dialog (pages-1.0.0.js) with a reason field, instead of window.prompt.
      window.Steward.ask({
        title: "Reject “" + item.querySelector(".title").textContent + "”?",
        confirmLabel: "Reject",
        reason: true,
      }).then(function (answer) { if (answer) send(item, decision, answer.reason); });
      return;
    }
    send(item, decision, "");
  }

  function send(item, decision, reason) {
    var body = new URLSearchParams({ decision: decision, reason: reason });
    fetch(item.dataset.decideUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrf(), "HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded" },
      body: body,
      credentials: "same-origin",
    }).then(function (resp) {
      if (resp.ok) {
        item.classList.add("resolved");
        var box = item.querySelector('input[name="ids"]');
        if (box) box.remove();
        item.dataset.canDecide = "0";
        window.Steward.toast((decision === "approve" ? "Approved" : "Rejected") + " “" + item.querySelector(".title").textContent + "”.", "success");
        move(1);
      } else if (resp.status === 409) {
        window.Steward.toast("Someone else decided this approval first.", "error");
      } else if (resp.status === 422) {
        window.Steward.toast("This approval needs more than a click (an option or a response): open it with Enter.", "error");
      } else {
        window.Steward.toast("Could not decide (HTTP " + resp.status + ").", "error");
      }
    });
  }

  function decide(decision) {
    var chosen = selected();
    var form = document.querySelector("[data-bulk-form]");
    if (chosen.length && form) {
      askBulk(form, decision, chosen.length);
      return;
    }
    var item = focused();
    if (item) decideOne(item, decision);
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.target.closest("input, textarea, select, [contenteditable]") || evt.metaKey || evt.ctrlKey || evt.altKey) return;
    var key = evt.key;
    if (key === "j" || key === "ArrowDown") { move(1); evt.preventDefault(); }
    else if (key === "k" || key === "ArrowUp") { move(-1); evt.preventDefault(); }
    else if (key === "x") {
      var item = focused();
      var box = item && item.querySelector('input[name="ids"]');
      if (box) { box.checked = !box.checked; updateBulk(); }
    }
    else if (key === "Enter") { var f = focused(); if (f) window.location = f.dataset.href; }
    // preventDefault: the key must not also type into the reason field the dialog focuses.
    else if (key === "a") { evt.preventDefault(); decide("approve"); }
    else if (key === "r") { evt.preventDefault(); decide("reject"); }
  });

  document.addEventListener("change", function (evt) {
    if (evt.target.matches("[data-select-all]")) {
      document.querySelectorAll('#inbox-items input[name="ids"]').forEach(function (b) { b.checked = evt.target.checked; });
    }
    if (evt.target.matches('input[name="ids"], [data-select-all]')) updateBulk();
  });
  document.addEventListener("click", function (evt) {
    var item = evt.target.closest(".inbox-item");
    if (item && !evt.target.closest("a, input, button")) focus(item);
  });
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (!form.matches("[data-bulk-form]") || form.dataset.confirmed === "1") return;
    evt.preventDefault();
    askBulk(form, evt.submitter && evt.submitter.value === "reject" ? "reject" : "approve", selected().length);
  });

  function askBulk(form, decision, n) {
    var verb = decision === "approve" ? "Approve" : "Reject";
    window.Steward.ask({
      title: verb + " " + n + " selected approval" + (n === 1 ? "" : "s") + "?",
      confirmLabel: verb,
      danger: decision !== "approve",
      reason: true,
    }).then(function (answer) {
      if (!answer) return;
      var input = form.querySelector('input[type=hidden][name="decision"]');
      if (!input) {
        input = document.createElement("input");
        input.type = "hidden"; input.name = "decision";
        form.appendChild(input);
      }
      input.value = decision;
      var reason = form.querySelector('[name="reason"]');
      if (reason && answer.reason) reason.value = answer.reason;
      form.dataset.confirmed = "1";
      form.submit();
    });
  }
  document.addEventListener("DOMContentLoaded", function () { focus(items()[0]); updateBulk(); });
})();
