// Ed25519 signatures (RFC 8032) in the browser, with WebCrypto, over canonical JSON.
//
// The key comes from a PKCS#8 PEM file the person picks (what `dic keys new` writes); it is
// imported as a non-extractable CryptoKey held in memory only: never stored, never sent.
// The API body is {"payload": <canonical text>, "signature": <base64 of 64 bytes>}, exactly
// as dic_connector/trust/signing.py `signed` builds it.

import { canonicalJson } from "./canonical.js";

const ED25519 = { name: "Ed25519" };

function pemBody(text) {
  const match = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/
    .exec(text);
  if (!match) {
    throw new Error("not an unencrypted PKCS#8 PEM private key (BEGIN PRIVATE KEY)");
  }
  return Uint8Array.from(atob(match[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
}

export function base64(bytes) {
  let text = "";
  new Uint8Array(bytes).forEach((b) => { text += String.fromCharCode(b); });
  return btoa(text);
}

function fromBase64url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded + "=".repeat((4 - (padded.length % 4)) % 4)),
    (c) => c.charCodeAt(0));
}

/**
 * The signing key of a PEM text: {key, publicKey} where publicKey is the base64 of the raw
 * 32-byte public key (the form `dic keys new` prints and an admin registers).
 */
export async function importSigningKey(pemText) {
  const der = pemBody(pemText);
  // Extractable once, only to read the public half (JWK "x"); the key kept is not.
  const probe = await crypto.subtle.importKey("pkcs8", der, ED25519, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", probe);
  const key = await crypto.subtle.importKey("pkcs8", der, ED25519, false, ["sign"]);
  return { key, publicKey: base64(fromBase64url(jwk.x)) };
}

/** The API body for `payload` signed with `key`. */
export async function signed(payload, key) {
  const text = canonicalJson(payload);
  const signature = await crypto.subtle.sign(ED25519, key, new TextEncoder().encode(text));
  return { payload: text, signature: base64(signature) };
}
