// The support story through the official server SDKs, node-appwrite 27.1.0 here and PyPI
// appwrite 27.0.0 (support_story.py), against mfa-local on the backend the environment
// names (MFA_STORE=dynamodb + AWS endpoints, or the embedded store): an API key made with
// `mfa-local keys create`; a user who lost their authenticator is found by email, their
// factors read, the authenticator removed, MFA switched off, their sessions ended and their
// log read; the user then signs in with the password alone.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { AppwriteException, Client, Query, Users } from 'node-appwrite';

import { Authenticator, startServer } from '../sdk/harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const PROJECT = 'support';
const PASSWORD = 'a long enough password';
const PYTHON = process.env.MFA_APPWRITE_PYTHON ?? resolve(here, '../../infra/.cache/appwrite-venv/bin/python');

let server;

/** `mfa-local keys create`, as an operator runs it: the secret is printed once. */
function createKey(bin, env, name, scopes) {
    const out = spawnSync(bin, ['keys', 'create', '--name', name, '--scopes', scopes], { env, encoding: 'utf8' });
    assert.equal(out.status, 0, `keys create failed:\n${out.stdout}${out.stderr}`);
    const id = /^id: (\S+)$/m.exec(out.stdout)?.[1];
    const secret = /^secret: (\S+)$/m.exec(out.stdout)?.[1];
    assert.ok(id && secret?.startsWith(`${id}_`), out.stdout);
    return { id, secret };
}

before(async () => {
    server = await startServer({
        projectId: PROJECT,
        prepare: ({ bin, env }) => {
            const support = createKey(bin, env, 'support desk', 'users.read,users.write');
            const reader = createKey(bin, env, 'reports', 'users.read');
            const revoked = createKey(bin, env, 'old laptop', 'users.read');
            const revoke = spawnSync(bin, ['keys', 'revoke', revoked.id], { env, encoding: 'utf8' });
            assert.equal(revoke.status, 0, revoke.stderr);
            const list = spawnSync(bin, ['keys', 'list'], { env, encoding: 'utf8' });
            assert.equal(list.status, 0, list.stderr);
            assert.match(list.stdout, new RegExp(`^${support.id}\tsupport desk\tusers.read,users.write\t`, 'm'));
            assert.ok(!list.stdout.includes(revoked.id), 'a revoked key is not listed');
            assert.ok(!list.stdout.includes(support.secret.split('_')[1]), 'no secret is listed');
            return { support, reader, revoked };
        },
    });
});

after(async () => {
    await server?.stop();
});

/** The account API as the user's app calls it (plain HTTP, the session in X-Fallback-Cookies). */
async function account(method, path, body, session) {
    const headers = { 'content-type': 'application/json', 'x-appwrite-project': PROJECT };
    if (session) headers['x-fallback-cookies'] = session;
    const res = await fetch(`${server.endpoint}${path}`, {
        method,
        headers,
        body: method === 'GET' ? undefined : JSON.stringify(body ?? {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null, session: res.headers.get('x-fallback-cookies') };
}

async function signIn(email) {
    const r = await account('POST', '/account/sessions/email', { email, password: PASSWORD });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.session;
}

/** A user with an authenticator app and MFA on, signed in on two devices. */
async function userWithMfa() {
    const email = `lost-phone-${Date.now()}-${Math.random().toString(16).slice(2, 8)}@example.com`;
    const created = await account('POST', '/account', { userId: 'unique()', email, password: PASSWORD });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const phone = await signIn(email);
    const enrolled = await account('POST', '/account/mfa/authenticators/totp', {}, phone);
    assert.equal(enrolled.status, 200, JSON.stringify(enrolled.body));
    const app = new Authenticator(enrolled.body.secret);
    const verified = await account('PUT', '/account/mfa/authenticators/totp', { otp: await app.nextCode() }, phone);
    assert.equal(verified.status, 200, JSON.stringify(verified.body));
    assert.equal((await account('PATCH', '/account/mfa', { mfa: true }, phone)).status, 200);
    const laptop = await signIn(email);
    const stuck = await account('GET', '/account', null, laptop);
    assert.equal(stuck.body.type, 'user_more_factors_required', 'MFA holds the password-only session back');
    return { id: created.body.$id, email, sessions: [phone, laptop] };
}

function users(secret) {
    return new Users(new Client().setEndpoint(server.endpoint).setProject(PROJECT).setKey(secret));
}

/** After support's reset: the old sessions are over, and the password alone signs in. */
async function assertRecovers(user) {
    for (const old of user.sessions) {
        assert.equal((await account('GET', '/account', null, old)).status, 401);
    }
    const fresh = await signIn(user.email);
    const me = await account('GET', '/account', null, fresh);
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.mfa, false);
    // The user sets up a new authenticator on their own.
    const again = await account('POST', '/account/mfa/authenticators/totp', {}, fresh);
    assert.equal(again.status, 200, JSON.stringify(again.body));
}

test('node-appwrite: support resets the MFA of a user who lost their phone', async () => {
    const user = await userWithMfa();
    const { support } = server.prepared;
    const api = users(support.secret);

    const found = await api.list({ queries: [Query.equal('email', [user.email.toUpperCase()])] });
    assert.equal(found.total, 1);
    const [match] = found.users;
    assert.equal(match.$id, user.id);
    assert.equal(match.mfa, true);
    for (const field of ['password', 'hash', 'hashOptions']) assert.equal(match[field], undefined, field);

    assert.equal((await api.get({ userId: user.id })).email, user.email);
    const factors = await api.listMFAFactors({ userId: user.id });
    assert.equal(factors.totp, true);
    assert.equal((await api.listSessions({ userId: user.id })).total, 2);

    await api.deleteMFAAuthenticator({ userId: user.id, type: 'totp' });
    assert.equal((await api.listMFAFactors({ userId: user.id })).totp, false);
    assert.equal((await api.updateMFA({ userId: user.id, mfa: false })).mfa, false);
    await api.deleteSessions({ userId: user.id });
    assert.equal((await api.listSessions({ userId: user.id })).total, 0);

    const codes = await api.createMFARecoveryCodes({ userId: user.id });
    assert.equal(codes.recoveryCodes.length, 8);
    await assert.rejects(api.getMFARecoveryCodes({ userId: user.id }), (e) => {
        assert.ok(e instanceof AppwriteException);
        assert.equal(e.type, 'user_recovery_codes_not_readable');
        return true;
    });

    const logs = await api.listLogs({ userId: user.id, queries: [Query.limit(4)] });
    assert.deepEqual(
        logs.logs.map((l) => l.event),
        ['recovery-codes.create', 'sessions.delete', 'mfa.update', 'authenticator.delete'],
    );
    for (const log of logs.logs) {
        assert.equal(log.mode, 'admin');
        assert.equal(log.keyId, support.id);
    }
    assert.ok(logs.total > 4, 'the user\'s own events are there too');

    await assertRecovers(user);
});

test('node-appwrite: keys are scoped, checked and never list everyone', async () => {
    const user = await userWithMfa();
    const { support, reader, revoked } = server.prepared;
    const refused = (type, code) => (e) => {
        assert.ok(e instanceof AppwriteException, String(e));
        assert.equal(e.type, type, e.message);
        assert.equal(e.code, code);
        return true;
    };

    assert.equal((await users(reader.secret).get({ userId: user.id })).$id, user.id);
    await assert.rejects(
        users(reader.secret).updateMFA({ userId: user.id, mfa: false }),
        refused('general_unauthorized_scope', 401),
    );
    await assert.rejects(users(revoked.secret).get({ userId: user.id }), refused('general_unauthorized_scope', 401));
    await assert.rejects(users(support.secret).list(), refused('general_query_invalid', 400));
    await assert.rejects(
        users(support.secret).list({ queries: [Query.startsWith('email', 'lost')] }),
        refused('general_query_invalid', 400),
    );
    await assert.rejects(users(support.secret).list({ search: 'lost' }), refused('general_query_invalid', 400));
    await assert.rejects(users(support.secret).get({ userId: 'nobody' }), refused('user_not_found', 404));

    // A key and a session in one request are refused, as Appwrite does.
    const both = new Client().setEndpoint(server.endpoint).setProject(PROJECT).setKey(support.secret);
    both.setSession(Buffer.from(JSON.stringify({ id: user.id, secret: 'x'.repeat(40) })).toString('base64'));
    await assert.rejects(new Users(both).get({ userId: user.id }), refused('user_api_key_and_session_set', 403));
    // Nothing changed.
    assert.equal((await users(reader.secret).get({ userId: user.id })).mfa, true);
});

test('PyPI appwrite: the same support story from Python', async () => {
    assert.ok(existsSync(PYTHON), `no Python with appwrite 27.0.0 at ${PYTHON} (bash infra/appwrite-python.sh install)`);
    const user = await userWithMfa();
    const { support } = server.prepared;
    const run = spawnSync(PYTHON, [resolve(here, 'support_story.py')], {
        env: {
            ...process.env,
            MFA_ENDPOINT: server.endpoint,
            MFA_PROJECT: PROJECT,
            MFA_KEY: support.secret,
            MFA_EMAIL: user.email,
        },
        encoding: 'utf8',
        timeout: 60_000,
    });
    assert.equal(run.status, 0, `support_story.py failed:\n${run.stdout}${run.stderr}`);
    const told = JSON.parse(run.stdout.trim().split('\n').pop());
    assert.equal(told.userId, user.id);
    assert.deepEqual(told.events, ['sessions.delete', 'mfa.update', 'authenticator.delete']);

    // Checked from outside Python too: the log names the key for each change.
    const logs = await users(support.secret).listLogs({ userId: user.id, queries: [Query.limit(3)] });
    assert.deepEqual(logs.logs.map((l) => [l.event, l.keyId]), told.events.map((e) => [e, support.id]));
    await assertRecovers(user);
});
