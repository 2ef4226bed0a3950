/*
 * login.js — the login page (issue 7).  POST /api/v1/login with
 * {"username", "password"}: 200 {"user": {...}} and a session cookie, then
 * on to the viewer's study list; 401/429 {"error", "detail"}: the detail is
 * shown.  A visitor whose session is still valid (GET /api/v1/me is 200)
 * goes straight on.  Only textContent is ever set from server data.
 */
'use strict';

(function () {
    const VIEWER = '/viewer/';
    const form = document.getElementById('login');
    const error = document.getElementById('error');
    const submit = document.getElementById('submit');

    /* Where to go after signing in: ?next= when it is a viewer path (the
     * viewer sends an expired session here with its location), never
     * another site ("//host", "/\host"). */
    function destination() {
        const next = new URLSearchParams(window.location.search).get('next');
        if (next && next.startsWith(VIEWER) && !next.includes('\\') &&
            !next.includes('//')) {
            return next;
        }
        return VIEWER;
    }

    function showError(text) {
        error.textContent = text;
        error.hidden = false;
    }

    async function detailOf(resp) {
        try {
            const body = await resp.json();
            return (body && (body.detail || body.error)) || '';
        } catch (e) {
            return '';
        }
    }

    fetch('/api/v1/me', {credentials: 'same-origin',
                         headers: {Accept: 'application/json'}})
        .then(function (resp) {
            if (resp.ok) {
                window.location.replace(destination());
            }
        })
        .catch(function () { /* not signed in, or no server: stay */ });

    form.addEventListener('submit', async function (ev) {
        ev.preventDefault();
        error.hidden = true;
        const username = form.elements.username.value.trim();
        const password = form.elements.password.value;
        if (username === '' || password === '') {
            showError('Enter your user name and password.');
            return;
        }
        submit.disabled = true;
        try {
            const resp = await fetch('/api/v1/login', {
                method: 'POST',
                credentials: 'same-origin',
                headers: {'Content-Type': 'application/json',
                          Accept: 'application/json'},
                body: JSON.stringify({username: username, password: password}),
            });
            if (resp.ok) {
                window.location.assign(destination());
                return;
            }
            const detail = await detailOf(resp);
            if (resp.status === 401) {
                showError(detail || 'Wrong user name or password.');
            } else if (resp.status === 429) {
                const after = resp.headers.get('Retry-After');
                showError((detail || 'Too many attempts.') +
                          (after ? ' Try again in ' + after + ' s.' : ''));
            } else {
                showError(detail || 'Sign-in failed (HTTP ' + resp.status +
                          ').');
            }
        } catch (e) {
            showError('The server cannot be reached.');
        }
        submit.disabled = false;
        form.elements.password.value = '';
        form.elements.password.focus();
    });
})();
