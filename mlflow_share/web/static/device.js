// /share/device: confirm a device login (RFC 8628) and its token lifetime, or deny it.
// Everything shown is set as text; the decision goes out with the session's CSRF token.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LIFETIMES = [[1 / 24, "1 hour"], [1, "1 day"], [7, "7 days"], [30, "30 days"], [90, "90 days"],
                     [365, "1 year"]];
  let current = null;  // the pending request being looked at

  function say(text, kind) {
    const status = $("status");
    status.replaceChildren(Share.el("p", { class: kind === "error" ? "error" : "muted",
                                           role: kind === "error" ? "alert" : undefined }, text));
  }

  function lifetimes(maxDays) {
    const select = $("lifetime");
    const options = LIFETIMES.filter(([days]) => days < maxDays).map(([days, label]) =>
      Share.el("option", { value: String(days) }, label));
    options.push(Share.el("option", { value: String(maxDays), selected: true },
                          `${maxDays} days (as asked)`));
    select.replaceChildren(...options);
  }

  async function lookup(code) {
    say("Looking the code up…");
    $("request").hidden = true;
    try {
      const found = await Share.call("GET", `device/requests?user_code=${encodeURIComponent(code)}`);
      current = found.request;
      $("request-code").textContent = current.user_code;
      $("request-client").textContent = [current.client_name, `(client ${current.client_id})`]
        .filter(Boolean).join(" ");
      $("request-address").textContent = current.client_address || "unknown";
      $("request-time").textContent = Share.time(current.created_at);
      $("request-expires").textContent = Share.time(current.expires_at);
      lifetimes(found.max_days);
      $("request").hidden = false;
      say(found.from_this_address
        ? "Check that the code matches the one your device shows."
        : "This login was asked from another address than this browser's. Approve it only " +
          "if you started it yourself, on a device of yours, just now.", found.from_this_address ? "" : "error");
    } catch (error) {
      current = null;
      say(error.message, "error");
    }
  }

  async function decide(approve) {
    if (current === null) return;
    const body = { user_code: current.user_code };
    if (approve) body.expires_in_days = Number($("lifetime").value);
    $("approve").disabled = $("deny").disabled = true;
    try {
      await Share.call("POST", approve ? "device/approve" : "device/reject", body);
      $("request").hidden = true;
      $("lookup").hidden = true;
      say(approve ? "Approved: the device is logged in. You can close this page and go back to it."
                  : "Denied: the device gets no token.");
      $("status").firstChild.id = approve ? "approved" : "denied";
    } catch (error) {
      say(error.message, "error");
    } finally {
      $("approve").disabled = $("deny").disabled = false;
    }
  }

  async function start() {
    const who = await Share.me();
    $("me").textContent = who.user;
    const code = new URLSearchParams(window.location.search).get("user_code");
    if (code) $("user-code").value = code.slice(0, 16);
    $("lookup").addEventListener("submit", (event) => {
      event.preventDefault();
      lookup($("user-code").value.trim());
    });
    $("decide").addEventListener("submit", (event) => {
      event.preventDefault();
      decide(true);
    });
    $("deny").addEventListener("click", () => decide(false));
    if (code) lookup(code.slice(0, 16));  // shown, never approved without a click
  }

  start().catch((error) => say(error.message || String(error), "error"));
})();
