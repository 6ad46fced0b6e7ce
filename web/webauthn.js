// Security keys and passkeys (WebAuthn) through the API's routes under
// /account/mfa/authenticators/webauthn and /account/mfa/challenges. The SDK has no methods
// for them: they go through its `client.call`, which keeps the session like every other call.
// The API sends binary fields as base64url; the browser wants ArrayBuffers, and back.

/** base64url (padding optional) to an ArrayBuffer. */
export function fromBase64url(text) {
    const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
}

/** An ArrayBuffer (or view) to base64url without padding. */
export function toBase64url(buffer) {
    const bytes = buffer instanceof ArrayBuffer ? new Uint8Array(buffer) : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    let binary = '';
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Is WebAuthn there at all (a secure context: https, or http on localhost)? */
export function available() {
    return typeof window.PublicKeyCredential === 'function' && window.isSecureContext;
}

/** A browser credential as the API reads it, with its `response` already encoded. */
function asJSON(credential, response) {
    return {
        id: credential.id,
        rawId: toBase64url(credential.rawId),
        type: credential.type,
        response,
        extensions: credential.getClientExtensionResults(),
    };
}

function call(client, method, path, params = {}) {
    const headers = {
        'X-Appwrite-Project': client.config.project,
        'content-type': 'application/json',
        accept: 'application/json',
    };
    return client.call(method, new URL(client.config.endpoint + path), headers, params);
}

const KEYS = '/account/mfa/authenticators/webauthn';

/** The user's security keys: [{ $id, name, $createdAt, lastUsedAt, credentialId }]. */
export async function list(client) {
    const answer = await call(client, 'get', KEYS);
    return answer.authenticators ?? [];
}

/** Registers a new key on this device under `name`; answers the account. */
export async function register(client, name) {
    const ceremony = await call(client, 'post', KEYS);
    const options = ceremony.options.publicKey;
    const publicKey = {
        ...options,
        challenge: fromBase64url(options.challenge),
        user: { ...options.user, id: fromBase64url(options.user.id) },
        excludeCredentials: (options.excludeCredentials ?? []).map((c) => ({ ...c, id: fromBase64url(c.id) })),
    };
    const credential = await navigator.credentials.create({ publicKey });
    const response = credential.response;
    const attestation = asJSON(credential, {
        attestationObject: toBase64url(response.attestationObject),
        clientDataJSON: toBase64url(response.clientDataJSON),
        transports: typeof response.getTransports === 'function' ? response.getTransports() : [],
    });
    const body = { credential: attestation };
    if (name) body.name = name;
    return call(client, 'put', KEYS, body);
}

/** Removes the key with this id. */
export function remove(client, id) {
    return call(client, 'delete', `${KEYS}/${encodeURIComponent(id)}`);
}

/** Starts a WebAuthn challenge: { $id, options }. */
export function challenge(client) {
    return call(client, 'post', '/account/mfa/challenges', { factor: 'webauthn' });
}

/** Signs `started` (from `challenge`) with a key of this device and completes it. */
export async function complete(client, started) {
    const options = started.options.publicKey;
    const publicKey = {
        ...options,
        challenge: fromBase64url(options.challenge),
        allowCredentials: (options.allowCredentials ?? []).map((c) => ({ ...c, id: fromBase64url(c.id) })),
    };
    const credential = await navigator.credentials.get({ publicKey });
    const response = credential.response;
    const assertion = asJSON(credential, {
        authenticatorData: toBase64url(response.authenticatorData),
        clientDataJSON: toBase64url(response.clientDataJSON),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
    });
    return call(client, 'put', '/account/mfa/challenges', { challengeId: started.$id, credential: assertion });
}
