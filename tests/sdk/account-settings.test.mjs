// The account screens an app builds with the official `appwrite` web SDK: sessions, name,
// preferences, password, and the activity log, against `mfa-local` (either backend) or the
// API at MFA_SDK_ENDPOINT (harness.mjs).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { installBrowserGlobals, linkIn, projectIdFor, startServer } from './harness.mjs';

const storage = installBrowserGlobals();
const { Account, AppwriteException, Client, ID, Query } = await import('appwrite');

const PROJECT_ID = projectIdFor('sdk-settings');
const PASSWORD = 'correct horse battery staple';

describe('account settings through the appwrite web SDK', () => {
    let server;
    let client;
    let account;
    const email = `grace.${Date.now()}@example.com`;

    before(async () => {
        server = await startServer({ projectId: PROJECT_ID, projectName: 'SDK settings' });
        client = new Client().setEndpoint(server.endpoint).setProject(PROJECT_ID);
        account = new Account(client);
        await account.create({ userId: ID.unique(), email, password: PASSWORD });
        await account.createEmailPasswordSession({ email, password: PASSWORD });
    });

    after(async () => {
        await server?.stop();
    });

    test('sessions are listed and read', async () => {
        const { total, sessions } = await account.listSessions();
        assert.equal(total, 1);
        assert.equal(sessions[0].current, true);
        assert.equal(sessions[0].secret, '');
        const current = await account.getSession({ sessionId: 'current' });
        assert.equal(current.$id, sessions[0].$id);
        const byId = await account.getSession({ sessionId: sessions[0].$id });
        assert.equal(byId.current, true);
    });

    test('name and preferences', async () => {
        assert.equal((await account.updateName({ name: 'Grace' })).name, 'Grace');
        const user = await account.updatePrefs({ prefs: { theme: 'dark', language: 'en' } });
        assert.deepEqual({ ...user.prefs }, { theme: 'dark', language: 'en' });
        assert.deepEqual({ ...(await account.getPrefs()) }, { theme: 'dark', language: 'en' });
        assert.equal((await account.get()).name, 'Grace');
    });

    test('a new password needs the old one', async () => {
        await assert.rejects(
            account.updatePassword({ password: 'a brand new password', oldPassword: 'not it' }),
            (err) => err instanceof AppwriteException && err.type === 'user_invalid_credentials' && err.code === 401,
        );
        await account.updatePassword({ password: 'a brand new password', oldPassword: PASSWORD });
        await account.deleteSession({ sessionId: 'current' });
        await assert.rejects(account.createEmailPasswordSession({ email, password: PASSWORD }));
        await account.createEmailPasswordSession({ email, password: 'a brand new password' });
    });

    // SDK 28 has no `listLogs` on Account: apps reach the route with `client.call`.
    const listLogs = (queries = []) =>
        client.call('get', new URL(`${client.config.endpoint}/account/logs`), {}, { queries });

    test('the activity log, newest first, in pages', async () => {
        const { total, logs } = await listLogs();
        const events = logs.map((log) => log.event);
        assert.deepEqual(events.slice(0, 3), ['session.create', 'session.delete', 'password.update']);
        assert.equal(total, logs.length);
        assert.equal(logs[0].userEmail, email);
        assert.match(logs[0].ip, /^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/);
        const page = await listLogs([Query.limit(1), Query.offset(1)]);
        assert.deepEqual(page.logs.map((log) => log.event), ['session.delete']);
        await assert.rejects(
            listLogs([Query.equal('event', ['session.create'])]),
            (err) => err instanceof AppwriteException && err.type === 'general_query_invalid' && err.code === 400,
        );
        assert.ok(storage.getItem('cookieFallback'), 'the SDK kept its session');
    });

    test('a forgotten password is reset through the emailed link', async () => {
        await account.deleteSession({ sessionId: 'current' });
        const token = await account.createRecovery({ email, url: 'http://localhost/reset' });
        assert.equal(token.secret, '');
        const link = linkIn(await server.outbox.next({ channel: 'email', to: email }));
        const [userId, secret] = [link.searchParams.get('userId'), link.searchParams.get('secret')];
        assert.equal(userId, token.userId);
        await account.updateRecovery({ userId, secret, password: 'reset long password' });
        await assert.rejects(
            account.updateRecovery({ userId, secret, password: 'another long password' }),
            (err) => err instanceof AppwriteException && err.type === 'user_invalid_token' && err.code === 401,
        );
        await account.createEmailPasswordSession({ email, password: 'reset long password' });
        // An address without an account gets the same answer, and no email.
        const nobody = await account.createRecovery({ email: 'nobody@example.com', url: 'http://localhost/reset' });
        assert.deepEqual(Object.keys(nobody).sort(), Object.keys(token).sort());
    });
});
