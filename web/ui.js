// What the page shows: screens, the notice and error lines, and errors put into words.

export const $ = (id) => document.getElementById(id);

const SCREENS = ['screen-loading', 'screen-signed-out', 'screen-challenge', 'screen-account'];

/** Shows one screen and hides the others; moves focus to its heading for screen readers. */
export function show(screen) {
    for (const id of SCREENS) $(id).hidden = id !== screen;
    const heading = $(screen).querySelector('h1');
    if (heading) {
        heading.tabIndex = -1;
        heading.focus({ preventScroll: true });
    }
}

export function notify(text) {
    clearError();
    $('notice').textContent = text;
    $('notice').hidden = !text;
}

export function clearError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
    $('error-confirm').hidden = true;
}

/** Shows `error` in words; a request that needs a recent challenge offers one. */
export function showError(error, { onConfirm } = {}) {
    $('notice').hidden = true;
    $('error-text').textContent = describe(error);
    $('error-confirm').hidden = !(onConfirm && error?.type === 'user_challenge_required');
    $('error-confirm').onclick = onConfirm ?? null;
    $('error').hidden = false;
}

// Appwrite messages meant for developers, said for the person using the page.
const WORDS = {
    general_unauthorized_scope: 'You are signed out. Please sign in again.',
    project_not_found: 'The API does not know this project. Check the project ID in the settings.',
    general_route_not_found: 'This API does not offer that. It may be an older version.',
    user_recovery_codes_not_readable: 'Recovery codes are shown only once, when they are created. Replace them to get a new set.',
    user_challenge_required:
        'This change needs a recent confirmation with a second factor you had before this session. Confirm it is you, then try again.',
};

// Errors of the browser's security-key prompt, by their name.
const WEBAUTHN_WORDS = {
    NotAllowedError: 'The security key prompt was cancelled or timed out.',
    InvalidStateError: 'This security key is already registered on your account.',
    SecurityError: 'Security keys need the page opened at a host name (such as http://localhost:8080/), not an IP address.',
    NotSupportedError: 'This browser or device cannot use a security key with these settings.',
    AbortError: 'The security key prompt was cancelled.',
};

/** An error in words: never raw JSON. */
export function describe(error) {
    if (error?.name === 'AppwriteException') {
        if (WORDS[error.type]) return WORDS[error.type];
        const message = String(error.message ?? '').trim();
        if (message && !message.startsWith('{') && !message.startsWith('<')) return message;
        return error.code ? `The server answered with an error (${error.code}) and no explanation.` : 'Something went wrong.';
    }
    if (error instanceof DOMException && WEBAUTHN_WORDS[error.name]) return WEBAUTHN_WORDS[error.name];
    if (error instanceof TypeError && /fetch|network|load/i.test(error.message)) {
        return 'Cannot reach the API. Check your connection and the API endpoint in the settings.';
    }
    return error?.message ? String(error.message) : 'Something went wrong.';
}

/**
 * Runs `action` for a button or form: the control is disabled meanwhile and a failure is
 * shown in words (through `onError` when given).
 */
export async function busy(control, action, onError = showError) {
    control.disabled = true;
    control.setAttribute('aria-busy', 'true');
    try {
        return await action();
    } catch (error) {
        onError(error);
        return undefined;
    } finally {
        control.disabled = false;
        control.removeAttribute('aria-busy');
    }
}

/** A `<li>` holding text, and a class when given. */
export function item(text, className) {
    const li = document.createElement('li');
    li.textContent = text;
    if (className) li.className = className;
    return li;
}

/** Shows `state` on a badge: a word and its look ("on", "off" or "warn"). */
export function badge(element, text, look) {
    element.textContent = text;
    element.className = `badge ${look}`;
}
