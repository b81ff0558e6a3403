// html_login's passkeys: plain JavaScript, no build step, served as /passkeys.js.
//
// The server speaks webauthn-rs's JSON, where binary fields are base64url strings; the
// browser's WebAuthn API takes and gives ArrayBuffers. `bytes` and `text` convert, and the
// rest is one fetch to start a ceremony, the browser's prompt, and one fetch to finish it.
"use strict";

function bytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "===".slice((base64.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function text(buffer) {
  let binary = "";
  for (const b of new Uint8Array(buffer)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// A refusal from the server: its `{"error": code}`.
class Refused extends Error {
  constructor(code) {
    super(code);
    this.code = code;
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body === undefined ? {} : body),
    credentials: "same-origin",
  });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new Refused(json.error || "http_" + response.status);
  return json;
}

// Registration: the server's options, the browser's new credential, the server stores it.
async function addPasskey() {
  const options = await post("/passkeys/register/start");
  const publicKey = options.publicKey;
  publicKey.challenge = bytes(publicKey.challenge);
  publicKey.user.id = bytes(publicKey.user.id);
  for (const c of publicKey.excludeCredentials || []) c.id = bytes(c.id);
  const credential = await navigator.credentials.create({ publicKey });
  await post("/passkeys/register/finish", {
    id: credential.id,
    rawId: text(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: text(credential.response.attestationObject),
      clientDataJSON: text(credential.response.clientDataJSON),
    },
    extensions: credential.getClientExtensionResults(),
  });
}

// Sign-in (or confirming the signed-in user): the options from the server's first step, the
// browser's prompt, the server's second step.
async function signInWith(options, mediation, signal) {
  const publicKey = options.publicKey;
  publicKey.challenge = bytes(publicKey.challenge);
  for (const c of publicKey.allowCredentials || []) c.id = bytes(c.id);
  const credential = await navigator.credentials.get({ publicKey, mediation, signal });
  const response = credential.response;
  return post("/passkeys/sign-in/finish", {
    id: credential.id,
    rawId: text(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: text(response.authenticatorData),
      clientDataJSON: text(response.clientDataJSON),
      signature: text(response.signature),
      userHandle: response.userHandle ? text(response.userHandle) : null,
    },
    extensions: credential.getClientExtensionResults(),
  });
}

async function usePasskey(start, mediation, signal) {
  return signInWith(await post(start), mediation, signal);
}

// What a failure means to the user.
function explain(err) {
  switch (err.code || err.name) {
    case "passkey_unknown_credential":
      return "That passkey is not registered here.";
    case "passkey_counter_regressed":
      return "That passkey looks copied; it was refused.";
    case "reauth_required":
      return "Confirm it's you with a passkey first.";
    case "too_many_sessions":
    case "too_many_attempts":
      return "Too many attempts. Try again in a minute.";
    case "NotAllowedError":
      return "No passkey was used.";
    case "InvalidStateError":
      return "This device already holds a passkey for your account.";
    default:
      return "Passkey refused (" + (err.code || err.name) + ").";
  }
}

function show(message, isError) {
  const status = document.getElementById("passkey-status");
  status.textContent = message;
  status.className = isError ? "error" : "note";
  status.hidden = false;
}

function destination() {
  const next = document.querySelector("input[name=next]");
  return (next && next.value) || "/";
}

// The login page: a button, and the username field's autofill (conditional mediation).
//
// The autofill's first request starts the visitor's session (its cookie holds the challenge).
// Until its answer is in, nothing else may post: a login answered first would have its cookie
// replaced by the visitor's when that late answer arrives.
function loginPage(button) {
  let autofill = null;
  let starting = null;
  let leaving = false;
  const settled = () => (starting ? starting.catch(() => {}) : Promise.resolve());
  const form = document.querySelector("form[action='/login']");
  form.addEventListener("submit", (event) => {
    if (!starting) {
      leaving = true; // and no autofill starts from now on
      return;
    }
    event.preventDefault();
    settled().then(() => form.requestSubmit());
  });
  button.addEventListener("click", async () => {
    if (autofill) autofill.abort();
    try {
      await settled();
      await usePasskey("/passkeys/sign-in/start", "optional");
      location.assign(destination());
    } catch (err) {
      show(explain(err), true);
    }
  });
  if (window.PublicKeyCredential && PublicKeyCredential.isConditionalMediationAvailable) {
    PublicKeyCredential.isConditionalMediationAvailable().then(async (available) => {
      if (!available || leaving) return;
      autofill = new AbortController();
      try {
        starting = post("/passkeys/sign-in/start");
        const options = await starting.finally(() => (starting = null));
        await signInWith(options, "conditional", autofill.signal);
        location.assign(destination());
      } catch (err) {
        // Aborted for the button, or no passkey chosen: the form still works, and only the
        // server's refusal is worth telling.
        if (err instanceof Refused && !autofill.signal.aborted) show(explain(err), true);
      }
    });
  }
}

// The home page: "Add a passkey", and "Confirm with a passkey" when the login is too old.
function homePage(add) {
  const confirm = document.getElementById("confirm-passkey");
  add.addEventListener("click", async () => {
    try {
      await addPasskey();
      show("Passkey added", false);
    } catch (err) {
      if (err.code === "reauth_required") confirm.hidden = false;
      show(explain(err), true);
    }
  });
  confirm.addEventListener("click", async () => {
    try {
      await usePasskey("/passkeys/confirm/start", "optional");
      confirm.hidden = true;
      show("Confirmed: you can add a passkey now.", false);
    } catch (err) {
      show(explain(err), true);
    }
  });
}

const signInButton = document.getElementById("passkey-sign-in");
const addButton = document.getElementById("add-passkey");
if (!window.PublicKeyCredential) {
  for (const b of [signInButton, addButton]) if (b) b.disabled = true;
} else if (signInButton) {
  loginPage(signInButton);
} else if (addButton) {
  homePage(addButton);
}
