// What the web SDK needs from CORS when it runs in a browser on another site than the API:
// the preflight must allow the headers the SDK sends, and the login response must be readable
// with credentials and expose `X-Fallback-Cookies` (the SDK reads it with
// `response.headers.get('X-Fallback-Cookies')`, which a browser hides unless exposed).
// Node's fetch does not enforce CORS, so this checks the headers directly.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Client } from 'appwrite';

import { projectIdFor, startServer } from './harness.mjs';

const PROJECT_ID = projectIdFor('sdk-cors');
const APP_ORIGIN = 'http://localhost:5173';

const listOf = (header) =>
    (header ?? '')
        .split(',')
        .map((h) => h.trim().toLowerCase())
        .filter(Boolean);

describe('CORS for a browser app on another site', () => {
    let server;
    before(async () => {
        server = await startServer({ projectId: PROJECT_ID });
    });
    after(async () => {
        await server?.stop();
    });

    test('the preflight allows every header the SDK sends, with credentials', async () => {
        // The SDK's own default headers, plus what each call adds.
        const sdkHeaders = [
            ...Object.keys(new Client().headers),
            'X-Appwrite-Project',
            'content-type',
            'X-Fallback-Cookies',
        ].map((h) => h.toLowerCase());
        const response = await fetch(`${server.endpoint}/account/sessions/email`, {
            method: 'OPTIONS',
            headers: {
                Origin: APP_ORIGIN,
                'Access-Control-Request-Method': 'POST',
                'Access-Control-Request-Headers': sdkHeaders.join(','),
            },
        });
        assert.ok(response.status >= 200 && response.status < 300, `preflight status ${response.status}`);
        assert.equal(response.headers.get('access-control-allow-origin'), APP_ORIGIN);
        assert.equal(response.headers.get('access-control-allow-credentials'), 'true');
        assert.ok(listOf(response.headers.get('access-control-allow-methods')).includes('post'));
        const allowed = listOf(response.headers.get('access-control-allow-headers'));
        for (const header of sdkHeaders) {
            assert.ok(allowed.includes(header), `preflight allows ${header} (allowed: ${allowed})`);
        }
    });

    test('login exposes X-Fallback-Cookies to the page', async () => {
        const email = `cors.${Date.now()}@example.com`;
        const password = 'password-for-cors';
        const common = { Origin: APP_ORIGIN, 'content-type': 'application/json', 'X-Appwrite-Project': PROJECT_ID };
        const created = await fetch(`${server.endpoint}/account`, {
            method: 'POST',
            headers: common,
            body: JSON.stringify({ userId: 'unique()', email, password }),
        });
        assert.equal(created.status, 201);

        const login = await fetch(`${server.endpoint}/account/sessions/email`, {
            method: 'POST',
            headers: common,
            body: JSON.stringify({ email, password }),
        });
        assert.equal(login.status, 201);
        assert.equal(login.headers.get('access-control-allow-origin'), APP_ORIGIN);
        assert.equal(login.headers.get('access-control-allow-credentials'), 'true');
        const exposed = listOf(login.headers.get('access-control-expose-headers'));
        assert.ok(exposed.includes('x-fallback-cookies'), `exposed: ${exposed}`);
        // The app's site differs from the API host (127.0.0.1): the fallback is sent.
        const fallback = JSON.parse(login.headers.get('x-fallback-cookies') ?? 'null');
        assert.equal(typeof fallback?.[`a_session_${PROJECT_ID}`], 'string');
    });
});
