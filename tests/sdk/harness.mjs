// Test plumbing for driving `mfa-local` with the official `appwrite` web SDK from Node:
// a browser-like `window` for the SDK, the server child process, the outbox reader, TOTP.
// With MFA_SDK_ENDPOINT set, the tests run against that API instead (the Lambda functions
// behind infra/start-api.sh), which serves the project MFA_PROJECT_ID and sends through
// SES/SNS to moto (MFA_TEST_MOTO_ENDPOINT).
//
// What the web SDK 28.0.0 touches on `window` (dist/esm/sdk.js, Client.prepareRequest / call):
//   - `window.localStorage.getItem('cookieFallback')` before every request; when set, it is
//     sent verbatim as the `X-Fallback-Cookies` request header;
//   - after every successful (< 400) response carrying `X-Fallback-Cookies`, it calls
//     `window.console.warn(...)` and `window.localStorage.setItem('cookieFallback', value)`;
//   - `window.location` only for redirects (OAuth) and opaque (CORS) responses, and
//     `window.setTimeout`/`setInterval` only for Realtime: neither is used here.
// It never reads `document` or `navigator`. So `window = { localStorage, console }` is enough.

import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** A minimal Web Storage: what the SDK needs, in memory. */
export class MemoryStorage {
    #items = new Map();
    get length() {
        return this.#items.size;
    }
    key(index) {
        return [...this.#items.keys()][index] ?? null;
    }
    getItem(key) {
        return this.#items.has(String(key)) ? this.#items.get(String(key)) : null;
    }
    setItem(key, value) {
        this.#items.set(String(key), String(value));
    }
    removeItem(key) {
        this.#items.delete(String(key));
    }
    clear() {
        this.#items.clear();
    }
}

const FALLBACK_WARNING = 'Appwrite is using localStorage for session management';

/**
 * Installs the browser globals the SDK uses. Must run before the SDK is imported (the SDK
 * only reads `window` lazily, but installing first keeps that an implementation detail).
 */
export function installBrowserGlobals() {
    const localStorage = new MemoryStorage();
    const quietConsole = Object.create(console);
    // The SDK warns on every login that it keeps the session in localStorage: expected here.
    quietConsole.warn = (first, ...rest) => {
        if (typeof first === 'string' && first.startsWith(FALLBACK_WARNING)) return;
        console.warn(first, ...rest);
    };
    globalThis.window = { localStorage, console: quietConsole };
    return localStorage;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
    const server = createServer();
    await new Promise((ok, fail) => {
        server.once('error', fail);
        server.listen(0, '127.0.0.1', ok);
    });
    const { port } = server.address();
    await new Promise((ok) => server.close(ok));
    return port;
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** The API under test when it is not a mfa-local started here, e.g. http://127.0.0.1:3000/v1. */
export const externalEndpoint = process.env.MFA_SDK_ENDPOINT?.replace(/\/+$/, '');

/** The project a test uses: its own on a mfa-local it starts, else the one the API serves. */
export function projectIdFor(wanted) {
    if (!externalEndpoint) return wanted;
    const served = process.env.MFA_PROJECT_ID;
    if (!served) throw new Error('MFA_SDK_ENDPOINT needs MFA_PROJECT_ID, the project that API serves');
    return served;
}

/** The project name messages and TOTP apps show: as for projectIdFor. */
export function projectNameFor(wanted) {
    if (!externalEndpoint) return wanted;
    return process.env.MFA_PROJECT_NAME || projectIdFor(wanted);
}

/** The API at MFA_SDK_ENDPOINT, shaped like a started server; it stays up after the tests. */
async function externalServer() {
    const outbox = new Outbox(emulatorMessages);
    // moto is shared: only what is sent from now on is ours.
    await outbox.skipExisting();
    return {
        endpoint: externalEndpoint,
        outbox,
        output: () => '',
        async stop() {},
    };
}

/**
 * Starts `mfa-local` on a free port with a fresh data directory and waits for its
 * "listening" line (or, with MFA_SDK_ENDPOINT, uses that API). `prepare({ bin, env })`, if
 * given, runs once the store exists and before the server opens it (e.g. `mfa-local keys
 * create`). Returns { endpoint, outbox, stop() }.
 */
export async function startServer({ projectId, projectName, prepare, timeoutMs = 30_000 } = {}) {
    if (externalEndpoint) {
        if (prepare) throw new Error("prepare needs a mfa-local of the test's own, not MFA_SDK_ENDPOINT");
        return externalServer();
    }
    const bin = process.env.MFA_LOCAL_BIN
        ? resolve(process.env.MFA_LOCAL_BIN)
        : resolve(here, '../../target/debug/mfa-local');
    const dataDir = await mkdtemp(join(tmpdir(), 'mfa-sdk-e2e-'));
    const outboxPath = join(dataDir, 'outbox.jsonl');
    const port = await freePort();
    const env = {
        ...process.env,
        MFA_LISTEN: `127.0.0.1:${port}`,
        MFA_DATA_DIR: dataDir,
        MFA_OUTBOX: outboxPath,
    };
    if (projectId) env.MFA_PROJECT_ID = projectId;
    if (projectName) env.MFA_PROJECT_NAME = projectName;
    if (env.MFA_STORE === 'dynamodb') {
        // A fresh table per server, created the way a developer would: `mfa-local setup`.
        env.MFA_TABLE = `sdk-${port}-${process.pid}`;
        const setup = spawnSync(bin, ['setup'], { env, encoding: 'utf8' });
        if (setup.status !== 0) throw new Error(`mfa-local setup failed:\n${setup.stdout}${setup.stderr}`);
    }
    const prepared = prepare ? await prepare({ bin, env }) : undefined;

    const child = spawn(bin, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const exited = new Promise((ok) => child.once('exit', (code, signal) => ok({ code, signal })));

    const endpoint = await new Promise((ok, fail) => {
        const timer = setTimeout(
            () => fail(new Error(`mfa-local did not report listening within ${timeoutMs} ms:\n${output}`)),
            timeoutMs,
        );
        const onData = (chunk) => {
            output += chunk;
            const m = output.match(/MFA API listening on (http:\/\/\S+\/v1)/);
            if (m) {
                clearTimeout(timer);
                ok(m[1]);
            }
        };
        child.stdout.setEncoding('utf8').on('data', onData);
        child.stderr.setEncoding('utf8').on('data', (chunk) => {
            output += chunk;
        });
        child.once('error', (err) => {
            clearTimeout(timer);
            fail(new Error(`cannot start ${bin}: ${err.message}`));
        });
        exited.then(({ code, signal }) => {
            clearTimeout(timer);
            fail(new Error(`mfa-local exited early (code ${code}, signal ${signal}):\n${output}`));
        });
    }).catch(async (err) => {
        child.kill('SIGKILL');
        await rm(dataDir, { recursive: true, force: true });
        throw err;
    });

    const outbox =
        env.MFA_SENDER === 'aws' ? new Outbox(emulatorMessages) : new Outbox(() => outboxMessages(outboxPath));
    // The emulator is shared: only what this server sends from now on is ours.
    await outbox.skipExisting();
    let stopped = false;
    return {
        endpoint,
        port,
        dataDir,
        prepared,
        outbox,
        output: () => output,
        async stop() {
            if (stopped) return;
            stopped = true;
            if (child.exitCode === null && child.signalCode === null) {
                child.kill('SIGTERM');
                const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
                await exited;
                clearTimeout(timer);
            }
            await rm(dataDir, { recursive: true, force: true });
        },
    };
}

/** The messages in the server's outbox file (one JSON message a line). */
async function outboxMessages(path) {
    let text;
    try {
        text = await readFile(path, 'utf8');
    } catch (err) {
        if (err.code === 'ENOENT') return [];
        throw err;
    }
    // Only complete lines: the server may be in the middle of appending one.
    const complete = text.slice(0, text.lastIndexOf('\n') + 1);
    return complete
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line));
}

/** The readable text of an HTML email part (the emulator keeps only the HTML part). */
function htmlToText(html) {
    return html
        .replace(/<br>|<\/p>/g, '\n')
        .replace(/<[^>]*>/g, '')
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&quot;/g, '"')
        .replace(/&amp;/g, '&');
}

/** What the SES/SNS emulator (moto, at MFA_TEST_MOTO_ENDPOINT) received, as outbox messages. */
async function emulatorMessages() {
    const endpoint = process.env.MFA_TEST_MOTO_ENDPOINT;
    if (!endpoint) throw new Error('MFA_SENDER=aws needs MFA_TEST_MOTO_ENDPOINT to read messages back');
    const data = await (await fetch(`${endpoint}/moto-api/data.json`)).json();
    const emails = (data.ses?.Message ?? []).map((m) => ({
        channel: 'email',
        to: m.destinations?.ToAddresses?.[0],
        subject: m.subject,
        text: htmlToText(m.body ?? ''),
    }));
    const sms = (data.sns?.SMS ?? []).map((m) => ({ channel: 'sms', to: m.phone_number, subject: '', text: m.message }));
    return [...emails, ...sms];
}

/** Hands out each sent message once, per channel in sending order. */
export class Outbox {
    #consumed = { email: 0, sms: 0 };
    #source;
    constructor(source) {
        this.#source = source;
    }

    async skipExisting() {
        const messages = await this.#source();
        for (const channel of Object.keys(this.#consumed)) {
            this.#consumed[channel] = messages.filter((m) => m.channel === channel).length;
        }
    }

    /**
     * The next message on `channel` to `to` not yet handed out; polls up to `timeoutMs`.
     * Other messages in between are passed over (and named if nothing matching arrives).
     */
    async next({ channel, to, timeoutMs = 5_000 }) {
        const deadline = Date.now() + timeoutMs;
        const passedOver = [];
        for (;;) {
            const messages = (await this.#source()).filter((m) => m.channel === channel);
            while (messages.length > this.#consumed[channel]) {
                const message = messages[this.#consumed[channel]];
                this.#consumed[channel] += 1;
                if (message.to === to) return message;
                passedOver.push(message);
            }
            if (Date.now() > deadline) {
                throw new Error(
                    `no ${channel} message to ${to} after ${timeoutMs} ms` +
                        (passedOver.length ? `; other messages: ${JSON.stringify(passedOver)}` : ''),
                );
            }
            await sleep(50);
        }
    }
}

/** The 6-digit one-time code in a message's text. */
export function codeIn(message) {
    const m = /(?<![0-9])([0-9]{6})(?![0-9])/.exec(message.text ?? '');
    if (!m) throw new Error(`no 6-digit code in message ${JSON.stringify(message)}`);
    return m[1];
}

/** The first http(s) link in a message's text. */
export function linkIn(message) {
    const m = /https?:\/\/[^\s"'<>]+/.exec(message.text ?? '');
    if (!m) throw new Error(`no link in message ${JSON.stringify(message)}`);
    return new URL(m[0]);
}

// ---- TOTP (RFC 6238 over RFC 4226): HMAC-SHA1, 30 s steps, 6 digits ----

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (case-insensitive, padding and spaces ignored). */
export function base32Decode(text) {
    const clean = text.toUpperCase().replace(/[\s=]/g, '');
    const out = [];
    let bits = 0;
    let value = 0;
    for (const ch of clean) {
        const index = BASE32.indexOf(ch);
        if (index < 0) throw new Error(`invalid base32 character ${JSON.stringify(ch)}`);
        value = (value << 5) | index;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out.push((value >>> bits) & 0xff);
        }
    }
    return Buffer.from(out);
}

export const TOTP_STEP_SECONDS = 30;

export const currentStep = (nowMs = Date.now()) => Math.floor(nowMs / 1000 / TOTP_STEP_SECONDS);

/** The 6-digit HOTP value of `key` at counter `step`. */
export function totpAt(key, step) {
    const counter = Buffer.alloc(8);
    counter.writeBigUInt64BE(BigInt(step));
    const mac = createHmac('sha1', key).update(counter).digest();
    const offset = mac[mac.length - 1] & 0x0f;
    const binary = mac.readUInt32BE(offset) & 0x7fffffff;
    return String(binary % 1_000_000).padStart(6, '0');
}

/**
 * An authenticator app that knows the server never accepts a time step twice (nor an older
 * one) but accepts steps -1/0/+1: each code it hands out is for a step after the last one
 * used, waiting for the clock if that step is more than one ahead.
 */
export class Authenticator {
    #key;
    #lastStep = -Infinity;
    constructor(base32Secret) {
        this.#key = base32Decode(base32Secret);
    }
    async nextCode() {
        for (;;) {
            const now = currentStep();
            const step = Math.max(now, this.#lastStep + 1);
            if (step <= now + 1) {
                this.#lastStep = step;
                return totpAt(this.#key, step);
            }
            await sleep(1_000);
        }
    }
    /** A code no step in the window [-1, +2] around now produces: certain to be refused. */
    wrongCode() {
        const now = currentStep();
        const window = new Set([-1, 0, 1, 2].map((d) => totpAt(this.#key, now + d)));
        for (let n = 0; ; n += 1) {
            const candidate = String((123_457 + n * 7_919) % 1_000_000).padStart(6, '0');
            if (!window.has(candidate)) return candidate;
        }
    }
}
