// Deep links survive logging in: MLflow's UI keeps its place after "#" (/#/models/NAME),
// which browsers never send to the server; the login page carries it on to where the login
// goes next (the local form's "next" and the SSO link's).
(() => {
  "use strict";
  const hash = window.location.hash;
  if (!hash || hash.length > 2000) return;
  const next = document.querySelector('form input[name="next"]');
  if (next && !next.value.includes("#")) next.value += hash;
  const sso = document.getElementById("sso");
  if (sso) {
    const url = new URL(sso.href, window.location.href);
    const target = url.searchParams.get("next") || "/";
    if (!target.includes("#")) url.searchParams.set("next", target + hash);
    sso.href = url.pathname + url.search;
  }
})();
