// pisgate's BankID page, updated in place: every second, read the page's JSON state and
// show the new QR code and message; go to `next` when the server gives it; reload the page
// when the order's state or phase (identify, sign) changes (the server renders the new
// state's buttons) or when the state cannot be read. Without JavaScript the page refreshes
// itself (<noscript> meta refresh), so nothing here is needed to finish. Allowed by its hash
// in the page's policy: its text must not depend on the page (it reads its URLs from data
// attributes).
"use strict";
(function () {
  var main = document.getElementById("bankid");
  if (!main || !window.fetch || !window.DOMParser) return;
  var stateUrl = main.getAttribute("data-state-url");
  var pageUrl = main.getAttribute("data-page-url");
  var shown = main.getAttribute("data-state");
  var purpose = main.getAttribute("data-purpose");
  if (!stateUrl || !pageUrl || shown !== "pending") return;
  var failures = 0;

  function reload() {
    window.location.replace(pageUrl);
  }

  function showQr(svg) {
    var box = document.getElementById("bankid-qr");
    if (!box) return;
    if (!svg) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    var doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    var root = doc.documentElement;
    if (!root || root.nodeName !== "svg") return;
    box.replaceChildren(document.importNode(root, true));
    box.hidden = false;
  }

  function showLink(url) {
    var link = document.getElementById("bankid-open");
    if (!link) return;
    if (url) {
      link.setAttribute("href", url);
      link.hidden = false;
    } else {
      link.hidden = true;
    }
  }

  function apply(s) {
    if (s.next) {
      window.location.assign(s.next);
      return false;
    }
    if (s.state !== shown || (s.purpose && s.purpose !== purpose)) {
      reload();
      return false;
    }
    var message = document.getElementById("bankid-message");
    if (message && message.textContent !== s.message) message.textContent = s.message;
    showQr(s.qr_svg);
    showLink(s.autostart_url);
    return true;
  }

  function tick() {
    fetch(stateUrl, {
      headers: { accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (r) {
        if (!r.ok) throw new Error("status " + r.status);
        return r.json();
      })
      .then(function (s) {
        failures = 0;
        if (apply(s)) window.setTimeout(tick, 1000);
      })
      .catch(function () {
        failures += 1;
        if (failures >= 3) reload();
        else window.setTimeout(tick, 1000);
      });
  }

  window.setTimeout(tick, 1000);
})();
