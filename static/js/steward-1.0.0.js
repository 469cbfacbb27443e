/* Steward dashboard behaviour, version 1.0.0: live-connection state, refetch after a
   reconnect, de-duplication of live inserts, relative times and countdowns, small helpers.
   htmx does the fetching and swapping; this file only glues the page together. */
(function () {
  "use strict";
  var Steward = (window.Steward = window.Steward || {});
  Steward.lastSeen = new Date().toISOString();
  var everOpened = false;

  // 422 (field errors) and 409 (someone decided first) carry a fragment to show: swap them.
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "422", swap: true },
      { code: "409", swap: true },
      { code: "[45]..", swap: false, error: true },
    ];
  }

  function setLive(state, title) {
    var dot = document.getElementById("live-state");
    if (!dot) return;
    dot.dataset.state = state;
    dot.textContent = state === "open" ? "Live" : state === "closed" ? "Reconnecting…" : "Connecting…";
    if (title) dot.title = title;
  }

  // --- what the page shows, told to its live socket ------------------------------------------
  // The execution page's position (the last streamed event and timeline entry it shows) and a
  // list's or inbox's rows go into the socket's URL each time it (re)connects: the socket
  // replays what came after the position, and sends in-place updates only for rows shown.
  function maxId(selector, attr, prefix, floor) {
    var best = floor || 0;
    document.querySelectorAll(selector).forEach(function (el) {
      var n = parseInt(attr ? el.getAttribute(attr) : el.id.slice(prefix.length), 10);
      if (n > best) best = n;
    });
    return best;
  }
  function shownIds(limit) {
    var ids = [];
    document.querySelectorAll("#exec-rows > tr[id^='exec-'], #inbox-items > li[id^='approval-item-']").forEach(function (el) {
      if (!limit || ids.length < limit) ids.push(el.id.slice(-36));
    });
    return ids;
  }
  // A URL carries at most this many row ids (a request line has a size limit, ~8 KB for a
  // websocket handshake); the socket gets the whole list as a message once it is open, and
  // the rows at the top, shown first, are the ones most likely to change.
  var URL_IDS = 150;
  function positioned(url) {
    var extra = {};
    var stream = document.getElementById("exec-stream");
    var timeline = document.getElementById("exec-timeline");
    if (stream && timeline) {
      extra.after_event = maxId("#exec-stream [id^='ev-']", null, "ev-", parseInt(stream.dataset.eventPos || "0", 10));
      extra.after_seq = maxId("#exec-timeline > li[data-seq]", "data-seq", null, parseInt(timeline.dataset.seqPos || "0", 10));
    }
    if (document.getElementById("exec-rows") || document.getElementById("inbox-items")) {
      extra.shown = shownIds(URL_IDS).join(",");
    }
    Object.keys(extra).forEach(function (key) {
      url += (url.indexOf("?") < 0 ? "?" : "&") + key + "=" + encodeURIComponent(extra[key]);
    });
    return url;
  }
  if (window.htmx) {
    htmx.createWebSocket = function (url) {
      var sock = new WebSocket(positioned(url), []);
      sock.binaryType = htmx.config.wsBinaryType;
      return sock;
    };
  }
  // A catch-up fetch after a reconnect asks for what changed since the page last heard from
  // its socket (data-live-since; `hx-vals="js:…"` would need eval, which the CSP forbids).
  document.addEventListener("htmx:configRequest", function (evt) {
    if (evt.detail.elt && evt.detail.elt.hasAttribute("data-live-since")) {
      evt.detail.parameters.since = Steward.lastSeen;
      // Only rows the page shows come back in place: others would have no target.
      if (document.getElementById("exec-rows")) evt.detail.parameters.shown = shownIds(2 * URL_IDS).join(",");
    }
  });
  var socket = null;
  // Rows fetched over HTTP (the catch-up after a reconnect) are rows the socket must now update.
  document.addEventListener("htmx:afterRequest", function () {
    if (socket && (document.getElementById("exec-rows") || document.getElementById("inbox-items"))) {
      socket.send(JSON.stringify({ shown: shownIds() }));
    }
  });

  document.addEventListener("htmx:wsOpen", function (evt) {
    socket = evt.detail && evt.detail.socketWrapper;
    if (socket && document.querySelectorAll("#exec-rows > tr[id^='exec-'], #inbox-items > li[id^='approval-item-']").length > URL_IDS) {
      socket.send(JSON.stringify({ shown: shownIds() }));
    }
    setLive("open", "Live updates are on");
    if (everOpened) {
      // Back after a drop: fetch what changed while the socket was away.
      htmx.trigger(document.body, "steward:reconnected");
    }
    everOpened = true;
  });
  document.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 0;
    if (everOpened && document.getElementById("live-state").dataset.state === "open") {
      // Refetch from a little before the drop so nothing committed meanwhile is missed.
      Steward.lastSeen = new Date(Date.now() - 5000).toISOString();
    }
    if (code === 4401 || code === 4403) {
      setLive("closed", "Live updates stopped: sign in again");
      document.getElementById("live-state").textContent = "Offline";
    } else {
      setLive("closed", "Connection lost; reconnecting");
    }
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    placeInboxItems(document.getElementById("inbox-items"));
    Steward.lastSeen = new Date(Date.now() - 5000).toISOString();
    refreshTimes(document);
  });

  // A live insert of something the page already shows replaces it in place instead.
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var d = evt.detail;
    if (!d || !d.fragment || !d.target) return;
    var children = Array.prototype.slice.call(d.fragment.children || []);
    var left = 0;
    children.forEach(function (child) {
      var existing = child.id ? document.getElementById(child.id) : null;
      if (existing && existing !== d.target) {
        existing.replaceWith(child);
        htmx.process(child);
        flash(child);
      } else {
        left += 1;
      }
    });
    if (children.length && left === 0) d.shouldSwap = false;
    var empty = document.getElementById(d.target.id === "inbox-items" ? "inbox-empty" : "exec-empty");
    if (empty && (d.target.id === "exec-rows" || d.target.id === "inbox-items") && left) empty.hidden = true;
    if (d.target.id === "exec-rows" && left) countRows(left);
  });
  // New runs inserted live are runs the list's filters match: an exact total counts them
  // (an estimate, "10,000+", stays as it is).
  function countRows(added) {
    var total = document.getElementById("exec-total");
    if (!total || total.dataset.exact !== "1") return;
    var n = parseInt(total.dataset.total, 10) + added;
    total.dataset.total = String(n);
    total.textContent = n.toLocaleString("en-US") + " execution" + (n === 1 ? "" : "s");
  }
  // The pending tabs list soonest due first (no deadline last), then oldest, then id: a live
  // insert arrives at the end and is moved to where a reload would show it.
  function dueKey(li) {
    var due = li.dataset.sortDue;
    return [due ? parseFloat(due) : Infinity, parseFloat(li.dataset.sortCreated || "0"), li.id];
  }
  function before(a, b) {
    for (var i = 0; i < a.length; i++) {
      if (a[i] < b[i]) return true;
      if (a[i] > b[i]) return false;
    }
    return false;
  }
  function placeInboxItems(list) {
    if (!list || list.dataset.order !== "due") return;
    var items = Array.prototype.slice.call(list.querySelectorAll(":scope > li.inbox-item"));
    items.forEach(function (li, i) {
      var key = dueKey(li);
      for (var j = 0; j < i; j++) {
        if (before(key, dueKey(items[j]))) {
          list.insertBefore(li, items[j]);
          items.splice(i, 1);
          items.splice(j, 0, li);
          return;
        }
      }
    });
  }
  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    var elt = evt.target;
    if (elt && (elt.tagName === "TR" || elt.classList.contains("inbox-item"))) flash(elt);
    if (elt && elt.closest && elt.closest("#exec-stream")) scrollStream();
  });

  function flash(elt) {
    if (!elt || !elt.classList) return;
    elt.classList.remove("flash");
    void elt.offsetWidth;
    elt.classList.add("flash");
  }

  function scrollStream() {
    var stream = document.getElementById("exec-stream");
    if (!stream) return;
    if (stream.scrollHeight - stream.scrollTop - stream.clientHeight < 80) stream.scrollTop = stream.scrollHeight;
  }

  // Errors htmx does not swap (403, 500…) still deserve a visible message.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var text = xhr.status === 403 ? "You are not allowed to do that." : "The server answered " + xhr.status + ". Try again.";
    toast(text, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    toast("Could not reach the server. Check the connection and try again.", "error");
  });

  // Notices go to a fixed corner region, newest at the bottom, at most three: the page under
  // them never moves (a banner above the heading pushed the list down at every decision).
  function toast(text, kind) {
    var region = document.getElementById("toasts");
    if (!region) {
      region = document.createElement("div");
      region.id = "toasts";
      region.className = "toasts";
      region.setAttribute("aria-live", "polite");
      document.body.appendChild(region);
    }
    var div = document.createElement("div");
    div.className = "alert toast " + (kind || "");
    div.setAttribute("role", kind === "error" ? "alert" : "status");
    div.textContent = text;
    region.appendChild(div);
    while (region.children.length > 3) region.removeChild(region.firstChild);
    setTimeout(function () { div.remove(); }, 6000);
  }
  Steward.toast = toast;

  // --- times ----------------------------------------------------------------------------------
  function human(ms) {
    var s = Math.abs(ms) / 1000;
    if (s < 1) return Math.round(Math.abs(ms)) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    var m = Math.floor(s / 60), sec = Math.floor(s % 60);
    if (m < 60) return m + " m " + String(sec).padStart(2, "0") + " s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h " + String(m % 60).padStart(2, "0") + " m";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }
  function relative(date) {
    var s = Math.round((Date.now() - date.getTime()) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return s + " seconds ago";
    var m = Math.round(s / 60);
    if (m < 60) return m + (m === 1 ? " minute ago" : " minutes ago");
    var h = Math.round(m / 60);
    if (h < 24) return h + (h === 1 ? " hour ago" : " hours ago");
    var d = Math.round(h / 24);
    return d + (d === 1 ? " day ago" : " days ago");
  }
  function refreshTimes(root) {
    var now = Date.now();
    root.querySelectorAll("time[data-rel]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.textContent = relative(d);
        if (!t.title) t.title = d.toLocaleString();
      }
    });
    root.querySelectorAll("[data-elapsed]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = human(now - d.getTime());
    });
    root.querySelectorAll("[data-due]").forEach(function (el) {
      var due = new Date(el.dataset.due);
      if (isNaN(due)) return;
      var left = due.getTime() - now;
      el.classList.toggle("overdue", left <= 0);
      el.classList.toggle("soon", left > 0 && left < 5 * 60 * 1000);
      el.textContent = left <= 0 ? "overdue by " + human(-left) : "due in " + human(left);
    });
  }
  Steward.refreshTimes = refreshTimes;

  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes(document);
    setInterval(function () { refreshTimes(document); }, 1000);

    // Time filter: the custom range fields only when "Custom range" is chosen.
    var range = document.querySelector("[data-range-select]");
    if (range) {
      range.addEventListener("change", function () {
        document.querySelectorAll("[data-custom-range]").forEach(function (el) {
          el.hidden = range.value !== "custom";
        });
      });
    }
    // Drop empty filter fields from the URL so shared links stay short.
    var filters = document.getElementById("filters");
    if (filters) {
      filters.addEventListener("submit", function () {
        filters.querySelectorAll("input, select").forEach(function (el) {
          if (!el.value && el.name) el.disabled = true;
        });
      });
    }
  });

  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest("[data-copy]");
    if (!btn) return;
    var src = document.querySelector(btn.dataset.copy);
    if (src && navigator.clipboard) {
      navigator.clipboard.writeText(src.textContent.trim()).then(function () {
        btn.textContent = "Copied";
      });
    }
  });

  // JSON editors: a hint while typing (the server still validates and names the fields).
  document.addEventListener("input", function (evt) {
    var area = evt.target;
    if (!area.matches || !area.matches("[data-json-editor]")) return;
    var hint = area.parentElement.querySelector("[data-json-error]");
    try {
      JSON.parse(area.value);
      if (hint) hint.hidden = true;
      area.setCustomValidity("");
    } catch (e) {
      if (hint) { hint.hidden = false; hint.textContent = "Not valid JSON yet: " + e.message; }
    }
  });

  document.addEventListener("htmx:afterSettle", function (evt) { refreshTimes(evt.target); });
})();
