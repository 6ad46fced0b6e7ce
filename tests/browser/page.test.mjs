// The page mfa-local serves at `/`, walked as a person would in headless Chromium (Debian's
// `chromium`, driven by puppeteer-core): sign up, recovery codes, verify email and phone,
// add an authenticator app and a security key (a CDP virtual authenticator), MFA on, then
// sign out and in again through every factor, remove the key, MFA off. Codes are read from
// mfa-local's outbox, as a person reads their email and texts. Each screen is saved as a
// PNG under target/screenshots/ (MFA_SCREENSHOTS overrides).
//
// The steps share one browser and one account, in order.

import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';

import { Authenticator, codeIn, linkIn, startServer } from '../sdk/harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = resolve(process.env.MFA_SCREENSHOTS ?? join(here, '../../target/screenshots'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const person = {
    name: 'Ada Lovelace',
    email: 'ada@example.com',
    password: 'a long and careful password',
    phone: '+14155550123',
};

let server;
let browser;
let page;
let origin;
let cdp;
let authenticatorId;
let totp;
let recoveryCodes = [];
let shotNumber = 0;
const problems = []; // uncaught page errors and Content-Security-Policy refusals

before(async () => {
    server = await startServer();
    const port = new URL(server.endpoint).port;
    // A host name, not 127.0.0.1: WebAuthn refuses an IP address as its relying party.
    origin = `http://localhost:${port}`;
    browser = await puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-dev-shm-usage', '--lang=en-US'],
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
        if (/Content[- ]Security[- ]Policy|Refused to/i.test(message.text())) problems.push(message.text());
    });
    await rm(SHOTS, { recursive: true, force: true });
    await mkdir(SHOTS, { recursive: true });
});

after(async () => {
    await browser?.close();
    await server?.stop();
});

// ---------- what a person does and sees ----------

async function shot(name) {
    shotNumber += 1;
    // From the top, so the page's sticky message line sits where it belongs.
    await page.evaluate(() => window.scrollTo(0, 0));
    const file = join(SHOTS, `${String(shotNumber).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
}

const click = (selector) => page.locator(selector).click();
const fill = (selector, text) => page.locator(selector).fill(text);

/** The visible text of `selector`, once it is shown and `predicate` holds for it. */
async function shown(selector, predicate = () => true, what = selector) {
    try {
        await page.waitForFunction(
            (sel) => {
                const el = document.querySelector(sel);
                return el && el.offsetParent !== null && el.textContent.trim() !== '';
            },
            {},
            selector,
        );
        const deadline = Date.now() + 15_000;
        for (;;) {
            const text = await page.$eval(selector, (el) => (el.offsetParent !== null ? el.innerText.trim() : ''));
            if (text && predicate(text)) return text;
            if (Date.now() > deadline) throw new Error(`${what}: last text ${JSON.stringify(text)}`);
            await new Promise((ok) => setTimeout(ok, 50));
        }
    } catch (error) {
        const errorLine = await page.$eval('#error', (el) => (el.hidden ? '' : el.innerText)).catch(() => '');
        throw new Error(`${what} not shown (${error.message})${errorLine ? `; the page says: ${errorLine}` : ''}`);
    }
}

/** Waits for the notice line to say `words`. */
const notice = (words) => shown('#notice', (t) => t.includes(words), `notice "${words}"`);

/** Waits for the error line; it must be words, not JSON. */
async function errorSays(words) {
    const text = await shown('#error-text', (t) => t.includes(words), `error "${words}"`);
    assert.doesNotMatch(text, /^[[{]|"code"\s*:/, 'errors are shown in words, not JSON');
    return text;
}

async function onScreen(id) {
    await page.waitForSelector(`#${id}:not([hidden])`, { visible: true });
}

/** Text of the factor row named `name` on the account screen. */
async function factorState(name) {
    return page.$$eval(
        '#factor-list li',
        (rows, wanted) => rows.find((r) => r.firstChild.textContent === wanted)?.lastChild.textContent,
        name,
    );
}

async function expectFactor(name, state) {
    await page.waitForFunction(
        (wanted, expected) =>
            [...document.querySelectorAll('#factor-list li')].some(
                (r) => r.firstChild.textContent === wanted && r.lastChild.textContent === expected,
            ),
        {},
        name,
        state,
    ).catch(async () => assert.fail(`factor ${name}: ${await factorState(name)}, expected ${state}`));
}

/** The account screen, fully signed in: it is shown only after GET /account answered. */
async function expectSignedIn() {
    await onScreen('screen-account');
    await shown('#who', (t) => t === `Signed in as ${person.email}`, 'who is signed in');
    assert.equal(await page.$eval('#account-email', (el) => el.textContent), person.email);
}

async function signOut() {
    await click('#sign-out');
    await onScreen('screen-signed-out');
    await notice('You are signed out.');
}

async function signInWithPassword() {
    await fill('#sign-in-email', person.email);
    await fill('#sign-in-password', person.password);
    await click('#sign-in-form button[type=submit]');
}

/** Signs in with the password and chooses `factor` for the second step. */
async function startSecondStep(factor) {
    await signInWithPassword();
    await onScreen('screen-challenge');
    await shown('#challenge-title', (t) => t === 'One more step');
    await click(`#challenge-factors button[data-factor="${factor}"]`);
}

async function enterChallengeCode(code) {
    await page.waitForSelector('#challenge-form', { visible: true });
    await fill('#challenge-code', code);
    await click('#challenge-form button[type=submit]');
}

// ---------- the walk ----------

test('mfa-local tells the address to open, and the page opens there', async () => {
    assert.match(server.output(), new RegExp(`Open ${origin}/ in a browser`));
    await page.goto(`${origin}/`);
    await onScreen('screen-signed-out');
    assert.equal(await page.$eval('#project-label', (el) => el.textContent), 'local', "the server's project");
    assert.equal(await page.$eval('#settings-endpoint', (el) => el.value), `${origin}/v1`, 'the endpoint is this origin');
    await shot('signed-out');
});

test('a wrong password is refused in words', async () => {
    await fill('#sign-in-email', person.email);
    await fill('#sign-in-password', 'not the password');
    await click('#sign-in-form button[type=submit]');
    await errorSays('Invalid credentials. Please check the email and password.');
    await shot('wrong-password');
});

test('sign up: the account is shown, with no second factor yet', async () => {
    await fill('#sign-up-name', person.name);
    await fill('#sign-up-email', person.email);
    await fill('#sign-up-password', person.password);
    await click('#sign-up-form button[type=submit]');
    await expectSignedIn();
    await notice('Your account is ready');
    assert.equal(await page.$eval('#account-name', (el) => el.textContent), person.name);
    assert.equal(await page.$eval('#account-mfa', (el) => el.textContent), 'off');
    assert.equal(await page.$eval('#account-email-state', (el) => el.textContent), 'not verified');
    for (const [name, state] of [
        ['Email code', 'verify your email first'],
        ['Text message code', 'add and verify a phone number'],
        ['Authenticator app', 'not added'],
        ['Recovery codes', 'not created'],
    ]) {
        await expectFactor(name, state);
    }
    await shot('account-new');
});

test('recovery codes are shown once, to save', async () => {
    await click('#recovery-create');
    await notice('Save these recovery codes now');
    recoveryCodes = await page.$$eval('#recovery-codes li', (items) => items.map((li) => li.textContent));
    assert.equal(recoveryCodes.length, 8);
    for (const code of recoveryCodes) assert.match(code, /^[0-9a-z]{8}-[0-9a-z]{8}$/i);
    const download = await page.$eval('#recovery-download', (a) => a.href);
    assert.match(download, /^blob:/, 'they can be downloaded');
    await shot('recovery-codes');
    await click('#recovery-saved');
    await notice('Recovery codes saved.');
    assert.equal(await page.$eval('#recovery-panel', (el) => el.hidden), true, 'not shown again');
    await expectFactor('Recovery codes', 'saved');
    assert.equal(await page.$eval('#recovery-create', (el) => el.hidden), true);
});

test('verify the email address through the emailed link', async () => {
    await click('#email-send');
    await notice(`We sent a verification link to ${person.email}`);
    const link = linkIn(await server.outbox.next({ channel: 'email', to: person.email }));
    assert.equal(`${link.origin}${link.pathname}`, `${origin}/`, 'the link opens this page');
    await page.goto(link.href); // the person clicks the link in their email
    await expectSignedIn();
    await notice('Your email address is verified.');
    assert.equal(await page.evaluate(() => location.search), '', 'the secret is taken off the address');
    assert.equal(await page.$eval('#account-email-state', (el) => el.textContent), 'verified');
    await expectFactor('Email code', 'ready');
    await shot('email-verified');
});

test('add a phone number and verify it with the texted code', async () => {
    await fill('#phone-number', person.phone);
    await fill('#phone-password', person.password);
    await click('#phone-form button[type=submit]');
    await notice('Phone number saved.');
    await click('#phone-send');
    await notice(`We texted a code to ${person.phone}`);
    const code = codeIn(await server.outbox.next({ channel: 'sms', to: person.phone }));
    await fill('#phone-code', code);
    await shot('phone-code');
    await click('#phone-code-form button[type=submit]');
    await notice('Your phone number is verified.');
    assert.equal(await page.$eval('#account-phone-state', (el) => el.textContent), 'verified');
    await expectFactor('Text message code', 'ready');
});

test('add an authenticator app from the QR code and key shown', async () => {
    await click('#totp-add');
    await page.waitForSelector('#totp-panel', { visible: true });
    // The QR code image from /v1/avatars/qr loads and is a real picture.
    await page.waitForFunction(() => {
        const img = document.getElementById('totp-qr');
        return img.complete && img.naturalWidth > 0;
    });
    const qr = await page.$eval('#totp-qr', (img) => ({ src: img.src, width: img.naturalWidth }));
    assert.match(qr.src, /\/v1\/avatars\/qr\?/);
    assert.ok(qr.width >= 200, `QR code ${qr.width}px wide`);
    const shownKey = await page.$eval('#totp-secret', (el) => el.textContent);
    const secret = shownKey.replace(/\s/g, '');
    assert.match(secret, /^[A-Z2-7]{32}$/, 'the key to type in by hand');
    totp = new Authenticator(secret);
    await shot('authenticator-qr');

    await fill('#totp-code', totp.wrongCode());
    await click('#totp-form button[type=submit]');
    await errorSays('Invalid token passed in the request.');

    await fill('#totp-code', await totp.nextCode());
    await click('#totp-form button[type=submit]');
    await notice('Your authenticator app is set up.');
    await expectFactor('Authenticator app', 'ready');
    assert.equal(await page.$eval('#totp-panel', (el) => el.hidden), true);
});

// ---------- security keys (WebAuthn), with a virtual authenticator ----------

test('WebAuthn: a virtual security key is plugged in', async () => {
    cdp = await page.createCDPSession();
    await cdp.send('WebAuthn.enable', { enableUI: false });
    ({ authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
        options: {
            protocol: 'ctap2',
            transport: 'usb',
            hasResidentKey: true,
            hasUserVerification: true,
            isUserVerified: true,
            automaticPresenceSimulation: true,
        },
    }));
});

test('WebAuthn: add a security key', async () => {
    await shown('#key-list', (s) => s.includes('No security key yet.'));
    await fill('#key-name', 'Blue key');
    await click('#key-form button[type=submit]');
    await notice('Security key “Blue key” added.');
    await shown('#key-list', (s) => s.includes('Blue key'));
    await expectFactor('Security keys', '1 registered');
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1, 'the key holds one credential for this site');
    assert.equal(credentials[0].rpId, 'localhost');
    await shot('security-key-added');
});

// ---------- MFA on, and signing in with each factor ----------

test('turn MFA on', async () => {
    await click('#mfa-toggle');
    await notice('MFA is on');
    assert.equal(await page.$eval('#account-mfa', (el) => el.textContent), 'on');
    assert.equal(await page.$eval('#mfa-toggle', (el) => el.textContent), 'Turn MFA off');
    await shot('account-mfa-on');
});

test('sign out, then in with the password and an emailed code', async () => {
    await signOut();
    await startSecondStep('email');
    await shown('#challenge-prompt', (t) => t.includes('We emailed you a 6-digit code.'));
    await shot('second-step');
    const code = codeIn(await server.outbox.next({ channel: 'email', to: person.email }));
    const wrong = code === '000000' ? '111111' : '000000';
    await enterChallengeCode(wrong);
    await errorSays('Invalid token passed in the request.');
    await enterChallengeCode(code);
    await expectSignedIn();
    await notice('You are signed in.');
    await shot('signed-in-email-code');
});

test('sign out, then in with a texted code', async () => {
    await signOut();
    await startSecondStep('phone');
    await shown('#challenge-prompt', (t) => t.includes('We texted you a 6-digit code.'));
    await enterChallengeCode(codeIn(await server.outbox.next({ channel: 'sms', to: person.phone })));
    await expectSignedIn();
});

test('sign out, then in with the authenticator app', async () => {
    await signOut();
    await startSecondStep('totp');
    await shown('#challenge-label', (t) => t === 'The 6-digit code your app shows');
    await enterChallengeCode(await totp.nextCode());
    await expectSignedIn();
});

test('sign out, then in with a recovery code', async () => {
    await signOut();
    await startSecondStep('recoverycode');
    await shown('#challenge-label', (t) => t === 'One of your recovery codes');
    await enterChallengeCode(recoveryCodes[0]);
    await expectSignedIn();
});

test('WebAuthn: sign out, then in with the security key', async () => {
    await signOut();
    await startSecondStep('webauthn');
    await expectSignedIn();
    await notice('You are signed in.');
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.ok(credentials[0].signCount >= 1, 'the key signed');
    await shown('#key-list', (s) => s.includes('last used'));
});

test('WebAuthn: remove the security key', async () => {
    await click('#key-list button[aria-label="Remove Blue key"]');
    await notice('Security key “Blue key” removed.');
    await shown('#key-list', (s) => s.includes('No security key yet.'));
    await expectFactor('Security keys', 'none');
});

test('turn MFA off: the password alone signs in again', async () => {
    await click('#mfa-toggle');
    await notice('MFA is off');
    assert.equal(await page.$eval('#account-mfa', (el) => el.textContent), 'off');
    await signOut();
    await signInWithPassword();
    await expectSignedIn();
    await shot('signed-in-password-only');
});

test('a change that needs a recent confirmation asks for a second factor first', async () => {
    // This session signed in with the password alone (MFA is off): replacing the recovery
    // codes needs a recent challenge.
    await click('#recovery-replace');
    await errorSays('needs a recent confirmation with a second factor');
    await shot('confirmation-needed');
    await click('#error-confirm');
    await onScreen('screen-challenge');
    await shown('#challenge-title', (t) => t === 'Confirm it is you');
    await click('#challenge-factors button[data-factor="email"]');
    await enterChallengeCode(codeIn(await server.outbox.next({ channel: 'email', to: person.email })));
    await expectSignedIn();
    await notice('New recovery codes');
    const fresh = await page.$$eval('#recovery-codes li', (items) => items.map((li) => li.textContent));
    assert.equal(fresh.length, 8);
    assert.equal(fresh.filter((code) => recoveryCodes.includes(code)).length, 0, 'a new set');
    await click('#recovery-saved');
    await notice('Recovery codes saved.');
});

test('no script error and nothing refused by the Content-Security-Policy', () => {
    assert.deepEqual(problems, []);
});
