// The page: sign up, sign in, enrol every second factor and sign in with each, through the
// official Appwrite web SDK (vendor/appwrite.js, global `Appwrite`).

import * as ui from './ui.js';
import * as keys from './webauthn.js';

const { $ } = ui;
const { Client, Account, Avatars, ID } = window.Appwrite;

const SETTINGS_KEY = 'mfa-page-settings';
// Where the SDK keeps the session when it cannot rely on cookies.
const SDK_SESSION_KEY = 'cookieFallback';

let settings = { endpoint: '', project: '' };
let client;
let account;
let avatars;

// What the account screen shows, as last read.
let user = null;
let factors = null;
let securityKeys = [];

// The challenge in progress: why it was asked for, and the one started.
let challengeFor = null; // { retry?: () => Promise } while confirming a change; null at sign-in
let started = null; // { id, factor }

// ---------- settings ----------

async function serverDefaults() {
    let project = '';
    try {
        const answer = await fetch('page-settings.json', { cache: 'no-cache' });
        if (answer.ok) project = (await answer.json()).projectId ?? '';
    } catch {
        // Served without mfa-local (a static host): the project is set by hand.
    }
    return { endpoint: `${location.origin}/v1`, project };
}

function loadSettings() {
    try {
        const saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? 'null');
        if (saved?.endpoint && saved?.project) return saved;
    } catch {
        // Unreadable: fall back to the defaults.
    }
    return null;
}

function connect(next) {
    settings = next;
    client = new Client().setEndpoint(settings.endpoint).setProject(settings.project);
    account = new Account(client);
    avatars = new Avatars(client);
    $('project-label').textContent = settings.project || 'no project';
    $('settings-endpoint').value = settings.endpoint;
    $('settings-project').value = settings.project;
}

async function applySettings(next) {
    const changed = next.endpoint !== settings.endpoint || next.project !== settings.project;
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(next));
    if (changed) localStorage.removeItem(SDK_SESSION_KEY); // that session belongs to the old API
    connect(next);
    await start();
}

// ---------- what the session allows ----------

/** Reads the account and shows the screen the session is at. */
async function start() {
    if (!settings.project) {
        ui.show('screen-signed-out');
        $('settings').open = true;
        ui.showError(new Error('Set the project ID in the settings below.'));
        return;
    }
    try {
        user = await account.get();
    } catch (error) {
        user = null;
        if (error?.type === 'user_more_factors_required') {
            await openChallenge(null);
            return;
        }
        signedOutView();
        if (error?.type !== 'general_unauthorized_scope') {
            ui.showError(error);
            $('settings').open = true;
        }
        return;
    }
    try {
        await refresh();
    } catch (error) {
        ui.showError(error);
    }
    ui.show('screen-account');
}

function signedOutView() {
    user = null;
    $('who').hidden = true;
    $('sign-out').hidden = true;
    ui.show('screen-signed-out');
}

/** Reads the account, its factors and keys again and shows them. */
async function refresh() {
    [user, factors] = await Promise.all([account.get(), account.listMfaFactors()]);
    securityKeys = await loadKeys();
    render();
}

/** The user's keys; where the API or browser has none, says so on the page. */
async function loadKeys() {
    const note = $('keys-unsupported');
    if (!keys.available()) {
        note.textContent = 'This browser cannot use security keys on this page: it needs https, or http://localhost.';
        note.hidden = false;
        $('keys').hidden = true;
        return [];
    }
    try {
        const list = await keys.list(client);
        note.hidden = true;
        $('keys').hidden = false;
        return list;
    } catch (error) {
        // An older API has no such route; one without a WebAuthn relying party says so.
        if (error?.type !== 'general_route_not_found' && error?.type !== 'user_auth_method_unsupported') throw error;
        note.textContent = 'This API does not offer security keys.';
        note.hidden = false;
        $('keys').hidden = true;
        return [];
    }
}

// ---------- the account screen ----------

function render() {
    $('who').textContent = `Signed in as ${user.email || user.phone || user.$id}`;
    $('who').hidden = false;
    $('sign-out').hidden = false;

    $('account-name').textContent = user.name || '(no name)';
    $('account-email').textContent = user.email || '(none)';
    ui.badge($('account-email-state'), user.emailVerification ? 'verified' : 'not verified', user.emailVerification ? 'on' : 'warn');
    $('account-phone').textContent = user.phone || '(none)';
    ui.badge($('account-phone-state'), user.phone ? (user.phoneVerification ? 'verified' : 'not verified') : '', user.phoneVerification ? 'on' : 'warn');
    $('account-phone-state').hidden = !user.phone;
    $('account-id').textContent = user.$id;
    ui.badge($('account-mfa'), user.mfa ? 'on' : 'off', user.mfa ? 'on' : 'off');
    $('mfa-toggle').textContent = user.mfa ? 'Turn MFA off' : 'Turn MFA on';
    $('mfa-toggle').className = user.mfa ? 'secondary' : '';
    $('mfa-hint').textContent = user.mfa
        ? 'Signing in needs your password and one of your second factors.'
        : 'Signing in needs only your password. Add a second factor, then turn MFA on.';

    const list = $('factor-list');
    list.replaceChildren(
        factorRow('Email code', factors.email, factors.email ? 'ready' : 'verify your email first'),
        factorRow('Text message code', factors.phone, factors.phone ? 'ready' : 'add and verify a phone number'),
        factorRow('Authenticator app', factors.totp, factors.totp ? 'ready' : 'not added'),
        factorRow(
            'Security keys',
            Boolean(factors.webauthn),
            securityKeys.length ? `${securityKeys.length} registered` : 'none',
        ),
        factorRow('Recovery codes', factors.recoveryCode, factors.recoveryCode ? 'saved' : 'not created'),
    );

    $('recovery-create').hidden = factors.recoveryCode;
    $('recovery-replace').hidden = !factors.recoveryCode;

    $('email-verified-text').hidden = !user.emailVerification;
    $('email-unverified').hidden = user.emailVerification || !user.email;

    if (!$('phone-number').value) $('phone-number').value = user.phone ?? '';
    $('phone-save').textContent = user.phone ? 'Change phone number' : 'Save phone number';
    $('phone-save').className = user.phone ? 'secondary' : '';
    $('phone-verify').hidden = !user.phone;
    $('phone-verified-text').hidden = !user.phoneVerification;
    $('phone-unverified').hidden = user.phoneVerification;

    $('totp-ready').hidden = !factors.totp;
    $('totp-add').hidden = factors.totp;
    $('totp-remove').hidden = !factors.totp;
    if (factors.totp) $('totp-panel').hidden = true;

    $('key-list').replaceChildren(...securityKeys.map(keyRow));
    if (!securityKeys.length) $('key-list').append(ui.item('No security key yet.', 'muted'));
}

function factorRow(name, ready, state) {
    const li = document.createElement('li');
    li.className = ready ? 'ready' : 'missing';
    const label = document.createElement('span');
    label.textContent = name;
    const value = document.createElement('span');
    value.className = `badge ${ready ? 'on' : 'off'}`;
    value.textContent = state;
    li.append(label, value);
    return li;
}

function keyRow(key) {
    const li = document.createElement('li');
    const name = key.name || 'Security key';
    const text = document.createElement('span');
    const added = key.$createdAt ? new Date(key.$createdAt).toLocaleDateString() : '';
    const used = key.lastUsedAt ? `, last used ${new Date(key.lastUsedAt).toLocaleString()}` : ', not used yet';
    text.textContent = `${name} `;
    const meta = document.createElement('span');
    meta.className = 'muted';
    meta.textContent = `(added ${added}${used})`;
    text.append(meta);
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'danger small';
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove ${name}`);
    remove.addEventListener('click', () =>
        act(remove, async () => {
            await keys.remove(client, key.$id);
            await refresh();
            ui.notify(`Security key “${name}” removed.`);
        }),
    );
    li.append(text, remove);
    return li;
}

/**
 * Runs an account action from `control`. A session that needs a second factor again goes
 * to the challenge; a change that needs a recent challenge offers one, then runs again.
 */
function act(control, action) {
    ui.clearError();
    return ui.busy(control, action, async (error) => {
        if (error?.type === 'user_more_factors_required' || error?.type === 'general_unauthorized_scope') {
            await start();
        }
        ui.showError(error, { onConfirm: () => openChallenge({ retry: () => act(control, action) }) });
    });
}

// ---------- signing in and out ----------

$('sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const { email, password } = Object.fromEntries(new FormData(form));
    ui.notify('');
    ui.busy(form.querySelector('button'), async () => {
        await signIn(email, password);
        form.reset();
        await start();
    });
});

async function signIn(email, password) {
    try {
        await account.createEmailPasswordSession({ email, password });
    } catch (error) {
        if (error?.type !== 'user_session_already_exists') throw error;
        // A session this browser still holds (e.g. one left waiting for a second factor).
        await account.deleteSession({ sessionId: 'current' });
        await account.createEmailPasswordSession({ email, password });
    }
}

$('sign-up-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const { name, email, password } = Object.fromEntries(new FormData(form));
    ui.notify('');
    ui.busy(form.querySelector('button'), async () => {
        await account.create({ userId: ID.unique(), email, password, name: name || undefined });
        await signIn(email, password);
        form.reset();
        await start();
        ui.notify('Your account is ready. Next: create recovery codes and add a second factor.');
    });
});

async function signOut() {
    try {
        await account.deleteSession({ sessionId: 'current' });
    } catch {
        // Gone already, or unreachable: this browser forgets it all the same.
    }
    localStorage.removeItem(SDK_SESSION_KEY);
    signedOutView();
    ui.notify('You are signed out.');
}

$('sign-out').addEventListener('click', (event) => ui.busy(event.currentTarget, signOut));

// ---------- challenges: the second step of signing in, and confirming a change ----------

const FACTORS = [
    { key: 'email', factor: 'email', label: 'Email me a code' },
    { key: 'phone', factor: 'phone', label: 'Text me a code' },
    { key: 'totp', factor: 'totp', label: 'Use my authenticator app' },
    { key: 'webauthn', factor: 'webauthn', label: 'Use a security key or passkey' },
    { key: 'recoveryCode', factor: 'recoverycode', label: 'Use a recovery code' },
];

const PROMPTS = {
    email: ['We emailed you a 6-digit code.', 'Code from the email'],
    phone: ['We texted you a 6-digit code.', 'Code from the text message'],
    totp: ['Open your authenticator app.', 'The 6-digit code your app shows'],
    recoverycode: ['Each recovery code works once.', 'One of your recovery codes'],
};

async function openChallenge(purpose) {
    challengeFor = purpose;
    started = null;
    $('challenge-form').hidden = true;
    $('challenge-title').textContent = purpose ? 'Confirm it is you' : 'One more step';
    $('challenge-reason').textContent = purpose
        ? 'This change needs a recent confirmation with one of your second factors.'
        : 'Your account has MFA on: confirm it is you with a second factor to finish signing in.';
    $('challenge-cancel').textContent = purpose ? 'Cancel' : 'Sign out';
    $('who').hidden = !purpose;
    $('sign-out').hidden = true;
    let available;
    try {
        available = await account.listMfaFactors();
    } catch (error) {
        signedOutView();
        ui.showError(error);
        return;
    }
    const choices = FACTORS.filter((f) => available[f.key]).map((f) => {
        const li = document.createElement('li');
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'choice';
        button.dataset.factor = f.factor;
        button.textContent = f.label;
        button.setAttribute('aria-pressed', 'false');
        button.addEventListener('click', () => ui.busy(button, () => choose(button, f.factor)));
        li.append(button);
        return li;
    });
    if (!choices.length) choices.push(ui.item('This account has no second factor ready.', 'muted'));
    $('challenge-factors').replaceChildren(...choices);
    ui.show('screen-challenge');
}

async function choose(button, factor) {
    ui.notify('');
    for (const other of $('challenge-factors').querySelectorAll('button')) {
        other.setAttribute('aria-pressed', String(other === button));
    }
    $('challenge-form').hidden = true;
    if (factor === 'webauthn') {
        const begun = await keys.challenge(client);
        await keys.complete(client, begun);
        await challengeDone();
        return;
    }
    const challenge = await account.createMfaChallenge({ factor });
    started = { id: challenge.$id, factor };
    const [prompt, label] = PROMPTS[factor];
    $('challenge-prompt').textContent = prompt;
    $('challenge-label').textContent = label;
    $('challenge-code').value = '';
    $('challenge-code').inputMode = factor === 'recoverycode' ? 'text' : 'numeric';
    $('challenge-form').hidden = false;
    $('challenge-code').focus();
}

$('challenge-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    ui.clearError();
    ui.busy(form.querySelector('button'), async () => {
        const otp = $('challenge-code').value.trim();
        await account.updateMfaChallenge({ challengeId: started.id, otp });
        await challengeDone();
    });
});

async function challengeDone() {
    const purpose = challengeFor;
    challengeFor = null;
    started = null;
    $('challenge-form').hidden = true;
    if (!purpose) {
        await start();
        ui.notify('You are signed in.');
        return;
    }
    await refresh();
    ui.show('screen-account');
    ui.notify('Confirmed.');
    await purpose.retry?.();
}

$('challenge-cancel').addEventListener('click', (event) => {
    ui.clearError();
    if (!challengeFor) {
        ui.busy(event.currentTarget, signOut);
        return;
    }
    challengeFor = null;
    $('sign-out').hidden = false;
    ui.show('screen-account');
});

// ---------- MFA on and off ----------

$('mfa-toggle').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        const on = !user.mfa;
        await account.updateMFA({ mfa: on });
        await refresh();
        ui.notify(on ? 'MFA is on: signing in now needs a second factor.' : 'MFA is off: signing in needs only your password.');
    }),
);

// ---------- recovery codes ----------

function showRecoveryCodes(codes) {
    $('recovery-codes').replaceChildren(...codes.map((code) => ui.item(code)));
    const link = $('recovery-download');
    if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([`${codes.join('\n')}\n`], { type: 'text/plain' }));
    $('recovery-panel').hidden = false;
}

$('recovery-create').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        const { recoveryCodes } = await account.createMfaRecoveryCodes();
        await refresh();
        showRecoveryCodes(recoveryCodes);
        ui.notify('Save these recovery codes now: they are not shown again.');
    }),
);

$('recovery-replace').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        const { recoveryCodes } = await account.updateMfaRecoveryCodes();
        await refresh();
        showRecoveryCodes(recoveryCodes);
        ui.notify('New recovery codes: the old ones no longer work. Save these now.');
    }),
);

$('recovery-saved').addEventListener('click', () => {
    $('recovery-panel').hidden = true;
    $('recovery-codes').replaceChildren();
    const link = $('recovery-download');
    if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
    link.href = '#';
    ui.notify('Recovery codes saved.');
});

// ---------- email ----------

$('email-send').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        // The link in the email opens this page, which completes the verification.
        await account.createEmailVerification({ url: `${location.origin}${location.pathname}` });
        ui.notify(`We sent a verification link to ${user.email}.`);
    }),
);

$('email-link-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    act(form.querySelector('button'), async () => {
        let link;
        try {
            link = new URL($('email-link').value.trim());
        } catch {
            throw new Error('That is not a link. Paste the whole link from the email.');
        }
        await verifyEmail(link.searchParams);
        form.reset();
    });
});

/** Completes an email verification from a link's query (`userId`, `secret`). */
async function verifyEmail(query) {
    const userId = query.get('userId');
    const secret = query.get('secret');
    if (!userId || !secret) throw new Error('This link has no verification in it. Paste the whole link from the email.');
    await account.updateEmailVerification({ userId, secret });
    if (user) await refresh();
    ui.notify('Your email address is verified.');
}

// ---------- phone ----------

$('phone-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    act(form.querySelector('button'), async () => {
        const { phone, password } = Object.fromEntries(new FormData(form));
        await account.updatePhone({ phone: phone.trim(), password });
        $('phone-password').value = '';
        await refresh();
        ui.notify('Phone number saved. Verify it with a code by text message.');
    });
});

$('phone-send').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        await account.createPhoneVerification();
        ui.notify(`We texted a code to ${user.phone}.`);
        $('phone-code').focus();
    }),
);

$('phone-code-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    act(form.querySelector('button'), async () => {
        await account.updatePhoneVerification({ userId: user.$id, secret: $('phone-code').value.trim() });
        form.reset();
        await refresh();
        ui.notify('Your phone number is verified.');
    });
});

// ---------- authenticator app ----------

$('totp-add').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        const { secret, uri } = await account.createMfaAuthenticator({ type: 'totp' });
        $('totp-qr').src = avatars.getQR({ text: uri, size: 400 });
        $('totp-secret').textContent = secret.match(/.{1,4}/g).join(' ');
        $('totp-secret').dataset.secret = secret;
        $('totp-panel').hidden = false;
        $('totp-code').focus();
    }),
);

$('totp-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    act(form.querySelector('button'), async () => {
        await account.updateMfaAuthenticator({ type: 'totp', otp: $('totp-code').value.replace(/\s/g, '') });
        form.reset();
        $('totp-panel').hidden = true;
        $('totp-qr').removeAttribute('src');
        await refresh();
        ui.notify('Your authenticator app is set up.');
    });
});

$('totp-remove').addEventListener('click', (event) =>
    act(event.currentTarget, async () => {
        await account.deleteMfaAuthenticator({ type: 'totp' });
        await refresh();
        ui.notify('Authenticator app removed.');
    }),
);

// ---------- security keys ----------

$('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    act(form.querySelector('button'), async () => {
        const name = $('key-name').value.trim();
        await keys.register(client, name);
        form.reset();
        await refresh();
        ui.notify(name ? `Security key “${name}” added.` : 'Security key added.');
    });
});

// ---------- settings ----------

$('settings-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const { endpoint, project } = Object.fromEntries(new FormData(event.currentTarget));
    ui.clearError();
    applySettings({ endpoint: endpoint.trim().replace(/\/+$/, ''), project: project.trim() }).then(() => {
        if (!$('error').hidden) return;
        ui.notify('Settings saved.');
    });
});

$('settings-reset').addEventListener('click', async () => {
    ui.clearError();
    await applySettings(await serverDefaults());
    if ($('error').hidden) ui.notify('Settings set to this server’s defaults.');
});

// ---------- start ----------

async function main() {
    connect(loadSettings() ?? (await serverDefaults()));
    const query = new URLSearchParams(location.search);
    if (query.has('secret')) {
        // Opened from the verification email: complete it, and take the secret off the address.
        history.replaceState(null, '', location.pathname);
        try {
            await verifyEmail(query);
        } catch (error) {
            await start();
            ui.showError(error);
            return;
        }
    }
    const notice = $('notice').hidden ? '' : $('notice').textContent;
    await start();
    if (notice && $('error').hidden) ui.notify(notice);
}

main();
