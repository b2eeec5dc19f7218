// The dashboard's only script (no build step): refresh the overview in place, and ask
// before purging. The fragment is HTML the server rendered and escaped.
"use strict";
(function () {
  const box = document.querySelector("[data-refresh]");
  if (box) {
    const url = box.getAttribute("data-refresh");
    const every = Math.max(1, Number(box.getAttribute("data-every")) || 3) * 1000;
    const tick = async function () {
      try {
        const response = await fetch(url, { credentials: "same-origin" });
        if (response.redirected) {
          // Signed out (the server restarted, with a new secret): show the sign-in page.
          window.location.reload();
          return;
        }
        if (response.ok) {
          box.innerHTML = await response.text();
          box.removeAttribute("data-stale");
        } else {
          box.setAttribute("data-stale", String(response.status));
        }
      } catch (error) {
        box.setAttribute("data-stale", "offline");
      }
      window.setTimeout(tick, every);
    };
    window.setTimeout(tick, every);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  }
})();
