// The seed flow (shared/seed/appwrite-mfa-guide.md) driven through the official `appwrite`
// web SDK against `mfa-local`, as an app developer would write it.
//
// Run: npm ci && MFA_LOCAL_BIN=../../target/debug/mfa-local npm test
// (or against the Lambda functions: MFA_SDK_ENDPOINT, see harness.mjs)
//
// The tests of the `seed flow` suite run in order and share one server and one account: each
// step needs the previous ones, and a step whose prerequisite failed says so instead of
// failing with a confusing error.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
    Authenticator,
    codeIn,
    installBrowserGlobals,
    linkIn,
    projectIdFor,
    projectNameFor,
    startServer,
} from './harness.mjs';

const storage = installBrowserGlobals();
const { Account, AppwriteException, AuthenticationFactor, AuthenticatorType, Avatars, Client, ID } =
    await import('appwrite');

const PROJECT_ID = projectIdFor('sdk-e2e');
const PROJECT_NAME = projectNameFor('SDK E2E');
const SESSION_COOKIE = `a_session_${PROJECT_ID}`;
const PASSWORD = 'correct horse battery staple';
const PHONE = '+12065550100';
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$/;

/** Asserts `promise` rejects with an AppwriteException of this type and HTTP status. */
async function rejectsWith(promise, type, code) {
    await assert.rejects(promise, (err) => {
        assert.ok(err instanceof AppwriteException, `expected AppwriteException, got ${err?.stack ?? err}`);
        assert.equal(err.type, type, `error type (message: ${err.message}, response: ${err.response})`);
        assert.equal(err.code, code, `HTTP status of ${type}`);
        assert.equal(typeof err.message, 'string');
        assert.notEqual(err.message, '');
        return true;
    });
}

function assertRecentTimestamp(value, what) {
    assert.match(value, ISO_8601, `${what} is ISO 8601 with milliseconds and offset`);
    const age = Date.now() - Date.parse(value);
    assert.ok(age > -60_000 && age < 10 * 60_000, `${what} (${value}) is about now`);
}

/** What the SDK keeps in localStorage and sends back as `X-Fallback-Cookies`. */
function storedFallbackCookies() {
    const raw = storage.getItem('cookieFallback');
    return raw === null ? null : JSON.parse(raw);
}

describe('seed flow through the appwrite web SDK', () => {
    let server;
    let client;
    let account;
    let avatars;
    const email = `ada.${Date.now()}@example.com`;
    // Filled in by the steps, checked by later ones.
    const state = {};

    const requires = (...keys) => {
        for (const key of keys) {
            assert.ok(state[key] !== undefined, `prerequisite missing: an earlier step did not set ${key}`);
        }
    };

    before(async () => {
        server = await startServer({ projectId: PROJECT_ID, projectName: PROJECT_NAME });
        client = new Client().setEndpoint(server.endpoint).setProject(PROJECT_ID);
        account = new Account(client);
        avatars = new Avatars(client);
    });

    after(async () => {
        await server?.stop();
    });

    /** Log out whatever session the SDK holds, then log in with email and password. */
    async function freshLogin() {
        if (storedFallbackCookies()?.[SESSION_COOKIE]) {
            await account.deleteSession({ sessionId: 'current' });
        }
        assert.equal(storedFallbackCookies()?.[SESSION_COOKIE], undefined, 'logged out: no session kept');
        const session = await account.createEmailPasswordSession({ email, password: PASSWORD });
        assert.equal(session.userId, state.userId);
        assert.deepEqual(session.factors, ['password'], 'a new login has proven only the password');
        assert.equal(session.secret, '', 'client responses never carry the session secret');
        assert.equal(typeof storedFallbackCookies()?.[SESSION_COOKIE], 'string', 'X-Fallback-Cookies kept');
        return session;
    }

    test('1. sign up and log in with email and password', async () => {
        const user = await account.create({ userId: ID.unique(), email, password: PASSWORD, name: 'Ada' });
        assert.equal(typeof user.$id, 'string');
        assert.match(user.$id, /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,35}$/);
        assert.equal(user.email, email);
        assert.equal(user.name, 'Ada');
        assert.equal(user.emailVerification, false);
        assert.equal(user.phoneVerification, false);
        assert.equal(user.mfa, false);
        assert.equal(user.password, undefined, 'the account never exposes a password (hash)');
        assert.equal(user.hash, undefined);
        assertRecentTimestamp(user.$createdAt, '$createdAt');
        state.userId = user.$id;

        assert.equal(storage.getItem('cookieFallback'), null, 'no session before logging in');
        const session = await account.createEmailPasswordSession({ email, password: PASSWORD });
        assert.equal(session.userId, user.$id);
        assert.equal(session.provider, 'email');
        assert.deepEqual(session.factors, ['password']);
        assert.equal(session.secret, '');
        assertRecentTimestamp(session.$createdAt, 'session.$createdAt');
        assert.ok(Date.parse(session.expire) > Date.now(), 'session expires in the future');

        // The server answered a request without Origin with X-Fallback-Cookies; the SDK kept
        // it and sends it back on every request: that is the only way it stays logged in here.
        const cookies = storedFallbackCookies();
        assert.deepEqual(Object.keys(cookies), [SESSION_COOKIE]);
        const decoded = JSON.parse(Buffer.from(cookies[SESSION_COOKIE], 'base64').toString('utf8'));
        assert.equal(decoded.id, user.$id, 'session cookie value is base64 of {"id":<userId>,"secret":...}');
        assert.equal(typeof decoded.secret, 'string');
        assert.ok(decoded.secret.length >= 32, 'session secret is long');

        const me = await account.get();
        assert.equal(me.$id, user.$id);
        assert.equal(me.email, email);
    });

    test('2. generate recovery codes, once', async () => {
        requires('userId');
        const { recoveryCodes } = await account.createMfaRecoveryCodes();
        assert.ok(Array.isArray(recoveryCodes));
        assert.equal(recoveryCodes.length, 8);
        for (const code of recoveryCodes) {
            assert.equal(typeof code, 'string');
            assert.ok(code.replace(/[^0-9a-z]/gi, '').length >= 16, `code ${code} carries at least 64 bits`);
        }
        assert.equal(new Set(recoveryCodes).size, recoveryCodes.length, 'codes are distinct');
        await rejectsWith(account.createMfaRecoveryCodes(), 'user_recovery_codes_already_exists', 409);
        state.recoveryCodes = recoveryCodes;
    });

    test('3. verify the email address through the emailed link', async () => {
        requires('userId');
        const token = await account.createVerification({ url: 'http://localhost/verify' });
        assert.equal(token.userId, state.userId);
        assert.equal(typeof token.$id, 'string');
        assert.equal(token.secret, '', 'the verification secret travels only by email');
        assert.ok(Date.parse(token.expire) > Date.now());

        const message = await server.outbox.next({ channel: 'email', to: email });
        const link = linkIn(message);
        assert.equal(`${link.origin}${link.pathname}`, 'http://localhost/verify');
        const userId = link.searchParams.get('userId');
        const secret = link.searchParams.get('secret');
        assert.equal(userId, state.userId);
        assert.ok(secret && secret.length >= 16, 'link carries the secret');
        assert.ok(link.searchParams.get('expire'), 'link carries expire');

        // A wrong secret of the same shape (last character changed) is refused.
        const wrong = secret.slice(0, -1) + (secret.endsWith('0') ? '1' : '0');
        await rejectsWith(account.updateVerification({ userId, secret: wrong }), 'user_invalid_token', 401);
        const done = await account.updateVerification({ userId, secret });
        assert.equal(done.userId, state.userId);

        const me = await account.get();
        assert.equal(me.emailVerification, true);
        await rejectsWith(account.updateVerification({ userId, secret }), 'user_invalid_token', 401);
        state.emailVerified = true;
    });

    test('4. set and verify the phone number through the SMS code', async () => {
        requires('userId');
        const updated = await account.updatePhone({ phone: PHONE, password: PASSWORD });
        assert.equal(updated.phone, PHONE);
        assert.equal(updated.phoneVerification, false);

        const token = await account.createPhoneVerification();
        assert.equal(token.userId, state.userId);
        assert.equal(token.secret, '', 'the code travels only by SMS');

        const sms = await server.outbox.next({ channel: 'sms', to: PHONE });
        const code = codeIn(sms);
        const done = await account.updatePhoneVerification({ userId: state.userId, secret: code });
        assert.equal(done.userId, state.userId);

        const me = await account.get();
        assert.equal(me.phoneVerification, true);
        assert.equal(me.emailVerification, true);
        state.phoneVerified = true;
    });

    test('5. add a TOTP authenticator: secret, otpauth URI, QR code, verification', async () => {
        requires('userId');
        const { secret, uri } = await account.createMfaAuthenticator({ type: AuthenticatorType.Totp });
        assert.match(secret, /^[A-Z2-7]+=*$/, 'secret is base32');
        assert.ok(secret.replace(/=+$/, '').length * 5 >= 160, 'secret has at least 160 bits');

        const otpauth = new URL(uri);
        assert.equal(otpauth.protocol, 'otpauth:');
        assert.equal(otpauth.host, 'totp');
        assert.equal(decodeURIComponent(otpauth.pathname.slice(1)), `${PROJECT_NAME}:${email}`);
        assert.equal(otpauth.searchParams.get('issuer'), PROJECT_NAME);
        assert.equal(otpauth.searchParams.get('secret'), secret);

        // The web SDK's getQR builds the image URL (an <img src>); it sends no session.
        const qrUrl = avatars.getQR({ text: uri, size: 300 });
        assert.equal(typeof qrUrl, 'string');
        const parsed = new URL(qrUrl);
        assert.equal(`${parsed.origin}${parsed.pathname}`, `${server.endpoint}/avatars/qr`);
        assert.equal(parsed.searchParams.get('project'), PROJECT_ID);
        assert.equal(parsed.searchParams.get('text'), uri);
        assert.equal(parsed.searchParams.get('size'), '300');
        const response = await fetch(qrUrl);
        assert.equal(response.status, 200);
        assert.match(response.headers.get('content-type') ?? '', /^image\/png\b/);
        const png = Buffer.from(await response.arrayBuffer());
        assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
        assert.equal(png.toString('latin1', 12, 16), 'IHDR');
        assert.equal(png.readUInt32BE(16), 300, 'QR width is the requested size');
        assert.equal(png.readUInt32BE(20), 300, 'QR height is the requested size');

        const authenticator = new Authenticator(secret);
        await rejectsWith(
            account.updateMfaAuthenticator({ type: AuthenticatorType.Totp, otp: authenticator.wrongCode() }),
            'user_invalid_token',
            401,
        );
        const me = await account.updateMfaAuthenticator({
            type: AuthenticatorType.Totp,
            otp: await authenticator.nextCode(),
        });
        assert.equal(me.$id, state.userId);
        await rejectsWith(
            account.createMfaAuthenticator({ type: AuthenticatorType.Totp }),
            'user_authenticator_already_verified',
            409,
        );
        state.authenticator = authenticator;
    });

    test('6. enable MFA', async () => {
        requires('emailVerified', 'phoneVerified', 'authenticator');
        const me = await account.updateMFA({ mfa: true });
        assert.equal(me.mfa, true);
        // Enabling MFA never locks the current session out: MFA is now enforced, yet get() works.
        const again = await account.get();
        assert.equal(again.mfa, true);
        const factors = await account.listMfaFactors();
        assert.equal(factors.totp, true);
        assert.equal(factors.email, true);
        assert.equal(factors.phone, true);
        state.mfaEnabled = true;
    });

    test('7. a new login must complete more factors', async () => {
        requires('mfaEnabled');
        const gone = await account.deleteSession({ sessionId: 'current' });
        assert.ok(gone !== null && typeof gone === 'object');
        assert.equal(storedFallbackCookies()?.[SESSION_COOKIE], undefined, 'logout clears the fallback cookie');
        await rejectsWith(account.get(), 'general_unauthorized_scope', 401);

        const session = await account.createEmailPasswordSession({ email, password: PASSWORD });
        assert.deepEqual(session.factors, ['password']);
        await rejectsWith(account.get(), 'user_more_factors_required', 401);
        await rejectsWith(account.updatePhone({ phone: PHONE, password: PASSWORD }), 'user_more_factors_required', 401);
        state.partialLogin = true;
    });

    test('8. list the factors the user can complete', async () => {
        requires('partialLogin');
        const factors = await account.listMfaFactors();
        assert.equal(factors.totp, true);
        assert.equal(factors.email, true);
        assert.equal(factors.phone, true);
        assert.equal(factors.recoveryCode, true);
        state.factors = factors;
    });

    test('8b. the factors answer has every field of the SDK model MfaFactors', () => {
        requires('factors');
        // SDK 28's Models.MfaFactors (and the contract) is {totp, phone, email, recoveryCode,
        // custom}, all booleans. This server has no custom factor: `custom` must be false.
        const { factors } = state;
        for (const field of ['totp', 'phone', 'email', 'recoveryCode', 'custom']) {
            assert.equal(typeof factors[field], 'boolean', `${field} in ${JSON.stringify(factors)}`);
        }
        assert.equal(factors.custom, false);
    });

    /** One whole second-factor login: fresh session, challenge, completion, access. */
    async function completeChallenge(factor, canonical, readOtp) {
        requires('mfaEnabled', 'recoveryCodes');
        const login = await freshLogin();
        await rejectsWith(account.get(), 'user_more_factors_required', 401);

        const challenge = await account.createMfaChallenge({ factor });
        assert.equal(typeof challenge.$id, 'string');
        assert.equal(challenge.userId, state.userId);
        assertRecentTimestamp(challenge.$createdAt, 'challenge.$createdAt');
        assert.ok(Date.parse(challenge.expire) > Date.now(), 'challenge expires in the future');
        assert.deepEqual(
            Object.keys(challenge).filter((k) => /code|otp|secret/i.test(k)),
            [],
            'the challenge never carries the code',
        );

        const otp = await readOtp();
        const session = await account.updateMfaChallenge({ challengeId: challenge.$id, otp });
        assert.equal(session.$id, login.$id, 'the challenge completes the current session');
        assert.equal(session.userId, state.userId);
        assert.ok(session.factors.includes('password'), `factors ${session.factors}`);
        assert.ok(session.factors.includes(canonical), `factors ${session.factors} include ${canonical}`);
        assert.equal(session.secret, '');
        assertRecentTimestamp(session.mfaUpdatedAt, 'mfaUpdatedAt');

        const me = await account.get();
        assert.equal(me.$id, state.userId);
        assert.equal(me.mfa, true);

        // A completed challenge is gone.
        await rejectsWith(account.updateMfaChallenge({ challengeId: challenge.$id, otp }), 'user_invalid_token', 401);
        return session;
    }

    test('9a. complete an email challenge', async () => {
        await completeChallenge(AuthenticationFactor.Email, 'email', async () => {
            const message = await server.outbox.next({ channel: 'email', to: email });
            return codeIn(message);
        });
    });

    test('9b. complete a phone (SMS) challenge', async () => {
        await completeChallenge(AuthenticationFactor.Phone, 'phone', async () => {
            const message = await server.outbox.next({ channel: 'sms', to: PHONE });
            return codeIn(message);
        });
    });

    test('9c. complete a TOTP challenge', async () => {
        requires('authenticator');
        await completeChallenge(AuthenticationFactor.Totp, 'totp', () => state.authenticator.nextCode());
    });

    test('9d. complete a recovery-code challenge', async () => {
        await completeChallenge(AuthenticationFactor.Recoverycode, 'recoveryCode', async () => {
            state.usedRecoveryCode = state.recoveryCodes[0];
            return state.usedRecoveryCode;
        });
    });

    test('9e. a used recovery code is refused; an unused one still works', async () => {
        requires('usedRecoveryCode');
        await freshLogin();
        const challenge = await account.createMfaChallenge({ factor: AuthenticationFactor.Recoverycode });
        await rejectsWith(
            account.updateMfaChallenge({ challengeId: challenge.$id, otp: state.usedRecoveryCode }),
            'user_invalid_token',
            401,
        );
        await rejectsWith(account.get(), 'user_more_factors_required', 401);

        // Typed without separators and in upper case (the contract accepts both).
        const typed = state.recoveryCodes[1].replace(/[^0-9a-z]/gi, '').toUpperCase();
        const session = await account.updateMfaChallenge({ challengeId: challenge.$id, otp: typed });
        assert.ok(session.factors.includes('recoveryCode'));
        const me = await account.get();
        assert.equal(me.$id, state.userId);
    });

    test('the session is carried only by X-Fallback-Cookies', async () => {
        requires('usedRecoveryCode');
        // Without what the SDK stored, the same client is anonymous.
        const saved = storage.getItem('cookieFallback');
        storage.removeItem('cookieFallback');
        try {
            await rejectsWith(account.get(), 'general_unauthorized_scope', 401);
        } finally {
            storage.setItem('cookieFallback', saved);
        }
        const me = await account.get();
        assert.equal(me.$id, state.userId);
    });
});
