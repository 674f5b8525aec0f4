/* The flarebus console's live updates and writes. Pages are rendered on the server; this
 * re-fetches a page's <main> when /events says what it shows changed, and sends writes with
 * the token (kept for this tab only) in the X-Flarebus-Token header. */
(function () {
  "use strict";
  var TOKEN_KEY = "flarebus-token";
  var main, live, pending = false, again = false;

  function toast(text, bad) {
    var t = document.getElementById("toast");
    t.textContent = text;
    t.className = bad ? "bad" : "good";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, 6000);
  }

  function refresh() {
    if (pending) { again = true; return; }
    var active = document.activeElement;
    if (active && main.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) {
      again = true; return; // do not pull a field from under someone typing
    }
    pending = true;
    fetch(location.href, {headers: {"X-Fragment": "main"}, credentials: "same-origin"})
      .then(function (r) { return r.text(); })
      .then(function (html) {
        main.innerHTML = html;
        main.dataset.refreshed = String(Date.now());
        if (window.flarebusFlame) window.flarebusFlame(main);
      })
      .catch(function () { live.textContent = "refresh failed"; })
      .finally(function () {
        pending = false;
        if (again) { again = false; setTimeout(refresh, 250); }
      });
  }

  function write(url, body) {
    var headers = {"X-Flarebus-Token": sessionStorage.getItem(TOKEN_KEY) || ""};
    if (body) headers["Content-Type"] = "application/x-www-form-urlencoded";
    return fetch(url, {method: "POST", headers: headers, body: body, credentials: "same-origin"})
      .then(function (r) {
        return r.json().then(function (data) {
          if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
          return data;
        });
      })
      .then(function (data) { toast("done: " + JSON.stringify(data), false); refresh(); })
      .catch(function (e) { toast(e.message, true); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    main = document.getElementById("main");
    live = document.getElementById("live");
    var token = document.getElementById("token");
    if (token) {
      token.value = sessionStorage.getItem(TOKEN_KEY) || "";
      token.addEventListener("input", function () { sessionStorage.setItem(TOKEN_KEY, token.value); });
      document.getElementById("token-form").addEventListener("submit", function (e) { e.preventDefault(); });
    }
    document.addEventListener("click", function (e) {
      var button = e.target.closest("button.write[data-post]");
      if (button) write(button.dataset.post);
    });
    document.addEventListener("submit", function (e) {
      var form = e.target.closest("form.write-form[data-post]");
      if (!form) return;
      e.preventDefault();
      // the form is sent: its fields no longer hold back the refresh that shows the result
      if (form.contains(document.activeElement)) document.activeElement.blur();
      write(form.dataset.post, new URLSearchParams(new FormData(form)).toString());
    });
    document.addEventListener("focusout", function () { if (again) setTimeout(refresh, 100); });
    var topics = (main.dataset.topics || "").split(" ").filter(Boolean);
    if (!topics.length || !window.EventSource) { live.textContent = ""; return; }
    // from the version this page was rendered at: a change in between is not missed
    var source = new EventSource("/events?since=" + encodeURIComponent(main.dataset.version || ""));
    source.onopen = function () { live.textContent = "● live"; live.className = "live on"; };
    source.onerror = function () { live.textContent = "reconnecting…"; live.className = "live off"; };
    // a page left for another must free its connection (a browser opens only six per
    // server; pages kept for the back button would otherwise hold them all)
    window.addEventListener("pagehide", function () { source.close(); });
    window.addEventListener("pageshow", function (e) { if (e.persisted) location.reload(); });
    source.addEventListener("change", function (e) {
      var changed = JSON.parse(e.data);
      if (changed.some(function (t) { return topics.indexOf(t) >= 0; })) refresh();
    });
  });
})();
