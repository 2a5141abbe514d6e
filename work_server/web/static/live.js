// Live updates without a reload: every element with data-live-url is re-fetched (an HTML
// fragment rendered by the server) every data-live-every ms and swapped in when it changed.
// Stops on 401 (logged out) and says so. No framework, nothing else.
"use strict";
(function () {
  function poll(el) {
    var url = el.getAttribute("data-live-url");
    var every = Number(el.getAttribute("data-live-every")) || 3000;
    var last = null;
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "X-Requested-With": "live" } })
        .then(function (r) {
          if (r.status === 401) {
            var p = document.createElement("p");
            p.className = "alert";
            p.setAttribute("role", "alert");
            p.textContent = "Your session ended; log in again to keep watching.";
            el.prepend(p);
            return null;
          }
          return r.ok ? r.text() : "";
        })
        .then(function (html) {
          if (html === null) return;
          if (html && html !== last) {
            last = html;
            el.innerHTML = html;
            el.setAttribute("data-live-updated", String(Date.now()));
          }
          setTimeout(tick, every);
        })
        .catch(function () { setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }
  document.querySelectorAll("[data-live-url]").forEach(poll);
})();
