// seedvault: the one script. WebAuthn ceremonies (sign-in, invite registration, adding a
// passkey, signing a reveal, approving a four-eyes request), following a request until it is
// decided, the reveal countdown and the copy button, and the capture page's QR image (paste,
// drop, file) with its preview. Loaded from
// /static/seedvault.js under a CSP that forbids inline script.
"use strict";

const b64u = {
  decode(text) {
    const s = text.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(s + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
  },
  encode(buffer) {
    let bin = "";
    for (const b of new Uint8Array(buffer)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.message || `request failed (${response.status})`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function creationOptions(challenge) {
  const pk = structuredClone(challenge.publicKey);
  pk.challenge = b64u.decode(pk.challenge);
  pk.user.id = b64u.decode(pk.user.id);
  for (const c of pk.excludeCredentials ?? []) c.id = b64u.decode(c.id);
  return pk;
}

function requestOptions(challenge) {
  const pk = structuredClone(challenge.publicKey);
  pk.challenge = b64u.decode(pk.challenge);
  for (const c of pk.allowCredentials ?? []) c.id = b64u.decode(c.id);
  return pk;
}

function registrationJSON(credential) {
  return {
    id: credential.id,
    rawId: b64u.encode(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: b64u.encode(credential.response.attestationObject),
      clientDataJSON: b64u.encode(credential.response.clientDataJSON),
    },
    extensions: credential.getClientExtensionResults(),
  };
}

function assertionJSON(credential) {
  const r = credential.response;
  return {
    id: credential.id,
    rawId: b64u.encode(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: b64u.encode(r.authenticatorData),
      clientDataJSON: b64u.encode(r.clientDataJSON),
      signature: b64u.encode(r.signature),
      userHandle: r.userHandle ? b64u.encode(r.userHandle) : null,
    },
    extensions: credential.getClientExtensionResults(),
  };
}

function showError(form, message) {
  const box = form.querySelector("[data-error]") || document.querySelector("[data-error]");
  if (box) {
    box.textContent = message;
    box.hidden = false;
    box.focus();
  }
}

function explain(error) {
  if (error.name === "NotAllowedError") return "The passkey prompt was cancelled or timed out. Try again.";
  if (error.name === "InvalidStateError") return "This passkey is already registered.";
  return error.message || String(error);
}

function busy(form, on) {
  for (const b of form.querySelectorAll("button")) b.disabled = on;
}

// Sign-in. Two ways in: the browser's passkey autofill in the name field (conditional
// mediation, started on load, for discoverable passkeys), and the button — by name when one is
// typed (works for every key), else nameless (discoverable passkeys only).
async function finishSignIn(form, credential) {
  await api("/api/v1/auth/login/finish", assertionJSON(credential));
  window.location.assign(form.dataset.next || "/");
}

// The autofill request runs in the background, so its own failures (aborted by the button, no
// passkey here, not supported) are nothing the user did and stay silent; only a passkey the
// user picked from the suggestions and the server refused gets a message.
function startAutofill(form) {
  const controller = new AbortController();
  const started = (async () => {
    const challenge = await api("/api/v1/auth/login/start", {});
    if (controller.signal.aborted) return null;
    return navigator.credentials.get({ publicKey: requestOptions(challenge), mediation: "conditional", signal: controller.signal });
  })().catch(() => null);
  started.then(async (credential) => {
    if (!credential || controller.signal.aborted) return;
    try {
      await finishSignIn(form, credential);
    } catch (e) {
      showError(form, explain(e));
    }
  });
  return { controller, started };
}

function setupLogin(form) {
  const canAutofill = (async () => Boolean(await window.PublicKeyCredential?.isConditionalMediationAvailable?.()))().catch(() => false);
  let autofill = canAutofill.then((yes) => (yes ? startAutofill(form) : null));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    const username = form.elements.username.value.trim();
    try {
      // One request at a time (the browser's rule) and one sign-in ceremony per session (the
      // server's): stop the autofill and let its start settle before starting ours.
      const running = await autofill;
      running?.controller.abort();
      await running?.started;
      const challenge = await api("/api/v1/auth/login/start", username ? { username } : {});
      let credential;
      try {
        credential = await navigator.credentials.get({ publicKey: requestOptions(challenge) });
      } catch (e) {
        // Without a name the browser can offer only discoverable passkeys: a security key that
        // keeps none for this site offers nothing, which looks like a cancelled prompt.
        if (!username && e.name === "NotAllowedError") {
          throw new Error("No passkey was chosen. If yours was not offered, type your operator name above and try again.");
        }
        throw e;
      }
      await finishSignIn(form, credential);
    } catch (e) {
      showError(form, explain(e));
      autofill = canAutofill.then((yes) => (yes ? startAutofill(form) : null));
    } finally {
      busy(form, false);
    }
  });
}

function setupRegister(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    try {
      const challenge = await api("/api/v1/auth/register/start", { invite: form.dataset.invite });
      const credential = await navigator.credentials.create({ publicKey: creationOptions(challenge) });
      await api("/api/v1/auth/register/finish", registrationJSON(credential));
      window.location.assign("/");
    } catch (e) {
      showError(form, explain(e));
    } finally {
      busy(form, false);
    }
  });
}

function setupAddCredential(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    try {
      const challenge = await api("/api/v1/me/credentials/start", { label: form.elements.label.value });
      const credential = await navigator.credentials.create({ publicKey: creationOptions(challenge) });
      await api("/api/v1/me/credentials/finish", registrationJSON(credential));
      window.location.assign("/me");
    } catch (e) {
      showError(form, explain(e));
    } finally {
      busy(form, false);
    }
  });
}

function groupDigits(code) {
  return code.length === 8 ? `${code.slice(0, 4)} ${code.slice(4)}` : `${code.slice(0, 3)} ${code.slice(3)}`;
}

// The revealed code lives only in this page's DOM: never in a URL, the title or history.
function showCode(panel, result) {
  const code = panel.querySelector("[data-code]");
  const next = panel.querySelector("[data-next-code]");
  const bar = panel.querySelector("[data-countdown]");
  const left = panel.querySelector("[data-seconds-left]");
  code.textContent = groupDigits(result.code);
  code.dataset.raw = result.code;
  if (result.next_code) {
    next.textContent = groupDigits(result.next_code);
    next.closest("[data-next]").hidden = false;
  }
  panel.hidden = false;
  const ends = Date.now() + result.valid_for_seconds * 1000;
  const finalEnd = ends + (result.next_code ? result.period * 1000 : 0);
  // The visible countdown changes every second; screen readers hear only the moments that
  // matter (shown, 10 s left, switch to the next code, expired), politely.
  const announcer = panel.querySelector("[data-announce]");
  let announced = "";
  const announce = (text) => {
    if (announcer && text !== announced) {
      announced = text;
      announcer.textContent = text;
    }
  };
  announce(`Code shown, ${result.valid_for_seconds} seconds left.`);
  const tick = () => {
    const now = Date.now();
    const remaining = Math.max(0, Math.ceil((ends - now) / 1000));
    bar.value = remaining;
    bar.max = result.period;
    left.textContent = remaining > 0 ? `${remaining} s left` : result.next_code ? "now use the next code" : "expired";
    if (remaining > 0 && remaining <= 10) announce("10 seconds left.");
    if (remaining === 0 && result.next_code && now < finalEnd) announce("This code expired: now read the next code.");
    if (now >= finalEnd || (!result.next_code && remaining === 0)) {
      code.textContent = "expired";
      delete code.dataset.raw;
      next.textContent = "";
      panel.classList.add("expired");
      announce("The code expired.");
      clearInterval(timer);
    }
  };
  const timer = setInterval(tick, 250);
  tick();
  panel.querySelector("[data-copy]")?.focus();
}

// Signs a started reveal with the operator's passkey and shows the code.
async function signReveal(serial, challenge, form, panel) {
  const credential = await navigator.credentials.get({ publicKey: requestOptions(challenge) });
  const result = await api(`/api/v1/tokens/${encodeURIComponent(serial)}/reveal/finish`, assertionJSON(credential));
  form.hidden = true;
  showCode(panel, result);
}

// Four-eyes: follows the request (GET every 2 s) until a second operator decides it; once
// approved, the requester signs the reveal with their own passkey (`reveal/start` with the
// approval's id, which reuses the answers the approval recorded).
function followApproval(serial, approval, form, panel) {
  const box = document.querySelector("[data-approval-panel]");
  const state = box.querySelector("[data-approval-state]");
  const error = box.querySelector("[data-approval-error]");
  const sign = box.querySelector("[data-approval-reveal]");
  form.hidden = true;
  box.hidden = false;
  const show = (a) => {
    const by = a.decided_by ? ` by ${a.decided_by}` : "";
    const texts = {
      pending: `Request ${a.id}: waiting for a second operator to approve (until ${new Date(a.expires_at * 1000).toLocaleTimeString()}).`,
      approved: `Approved${by}. Sign with your passkey to see the code.`,
      denied: `Denied${by}: ${a.reason || "no reason given"}. No code can be revealed for this request.`,
      expired: "The request expired before it was used. Reload the page to ask again.",
      used: "This approval has been used.",
      void: "The approval no longer matches the reveal (token, checks, ticket, note or policy changed). Reload the page to ask again.",
    };
    state.textContent = texts[a.status] || a.status;
    box.dataset.status = a.status;
    sign.hidden = a.status !== "approved";
    if (a.status === "approved") sign.focus();
  };
  show(approval);
  const poll = setInterval(async () => {
    try {
      const response = await fetch(`/api/v1/approvals/${approval.id}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.message || `request failed (${response.status})`);
      show(data);
      if (data.status !== "pending") clearInterval(poll);
    } catch (e) {
      error.textContent = explain(e);
      error.hidden = false;
    }
  }, 2000);
  sign.addEventListener("click", async () => {
    sign.disabled = true;
    try {
      const challenge = await api(`/api/v1/tokens/${encodeURIComponent(serial)}/reveal/start`, { approval: approval.id });
      await signReveal(serial, challenge, form, panel);
      box.hidden = true;
    } catch (e) {
      error.textContent = explain(e);
      error.hidden = false;
      error.focus();
      sign.disabled = false;
    }
  });
}

function setupReveal(form) {
  const panel = document.querySelector("[data-code-panel]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    const serial = form.dataset.serial;
    const data = new FormData(form);
    const body = { checks: data.getAll("checks"), ticket: data.get("ticket") || null, note: data.get("note") || null };
    try {
      const started = await api(`/api/v1/tokens/${encodeURIComponent(serial)}/reveal/start`, body);
      if (started.approval) {
        followApproval(serial, started.approval, form, panel);
        return;
      }
      await signReveal(serial, started, form, panel);
    } catch (e) {
      showError(form, explain(e));
      busy(form, false);
    }
  });
  panel?.querySelector("[data-copy]")?.addEventListener("click", async () => {
    const raw = panel.querySelector("[data-code]").dataset.raw;
    if (raw) {
      await navigator.clipboard.writeText(raw).catch(() => {});
      panel.querySelector("[data-copied]").hidden = false;
    }
  });
}

// An approver approves a four-eyes request with their own passkey, bound to that request.
function setupApprove(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    const id = encodeURIComponent(form.dataset.approval);
    try {
      const challenge = await api(`/api/v1/approvals/${id}/approve/start`, {});
      const credential = await navigator.credentials.get({ publicKey: requestOptions(challenge) });
      await api(`/api/v1/approvals/${id}/approve/finish`, assertionJSON(credential));
      window.location.reload();
    } catch (e) {
      showError(form, explain(e));
      busy(form, false);
    }
  });
}

function setupDeny(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    try {
      await api(`/api/v1/approvals/${encodeURIComponent(form.dataset.deny)}/deny`, { reason: form.elements.reason.value });
      window.location.reload();
    } catch (e) {
      showError(form, explain(e));
      busy(form, false);
    }
  });
}

// Capture from a QR code: a screenshot pasted anywhere on the page (Ctrl+V / ⌘V), an image
// dropped on the form, or a file chosen. The image goes into the form's file input (so the
// capture posts it) and to /api/v1/tokens/qr-preview, whose summary (never the secret) is shown
// before the provisioner presses "Seal and escrow".
function setupQrCapture(form) {
  const input = form.querySelector('input[type="file"][name="qr_image"]');
  const summary = form.querySelector("[data-qr-summary]");
  const box = form.querySelector("[data-error]");
  const fill = (name, text) => {
    const el = summary.querySelector(`[data-qr-${name}]`);
    if (el) el.textContent = text;
  };
  async function preview() {
    const file = input.files?.[0];
    summary.hidden = true;
    if (box) box.hidden = true;
    if (!file) return;
    const data = new FormData();
    data.append("qr_image", file);
    try {
      const response = await fetch("/api/v1/tokens/qr-preview", {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        body: data,
      });
      const found = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(found.message || `the image could not be read (${response.status})`);
      fill("issuer", found.issuer || "—");
      fill("account", found.account || "—");
      fill("digits", String(found.digits));
      fill("period", `${found.period} s`);
      fill("algorithm", found.algorithm);
      summary.hidden = false;
      form.querySelector('input[name="serial"]')?.focus();
    } catch (e) {
      showError(form, e.message);
    }
  }
  function take(file) {
    if (!file || !/^image\/(png|jpeg)$/.test(file.type)) {
      showError(form, "qr_image: paste or drop a PNG or JPEG image of the QR code");
      return;
    }
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    preview();
  }
  input.addEventListener("change", preview);
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items ?? [])].find((i) => i.kind === "file");
    if (!item) return;
    event.preventDefault();
    take(item.getAsFile());
  });
  const zone = form.querySelector("[data-qr-drop]") ?? form;
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    take(event.dataTransfer?.files?.[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-qr-capture]")) setupQrCapture(form);
  const setups = { login: setupLogin, register: setupRegister, "add-credential": setupAddCredential, reveal: setupReveal, approve: setupApprove };
  for (const form of document.querySelectorAll("form[data-deny]")) setupDeny(form);
  for (const form of document.querySelectorAll("form[data-webauthn]")) {
    if (!window.PublicKeyCredential) {
      showError(form, "This browser does not support passkeys. Use a current Chrome, Edge, Firefox or Safari.");
      continue;
    }
    setups[form.dataset.webauthn]?.(form);
  }
  for (const button of document.querySelectorAll("button[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
  for (const box of document.querySelectorAll("input[data-select-all]")) {
    box.addEventListener("change", () => {
      for (const other of box.form.querySelectorAll("input[name=serials]")) other.checked = box.checked;
    });
  }
  for (const el of document.querySelectorAll("[data-confirm]")) {
    el.addEventListener("submit", (event) => {
      if (!window.confirm(el.dataset.confirm)) event.preventDefault();
    });
  }
});
