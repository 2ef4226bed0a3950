/*
 * logout.js — POST /api/v1/logout ends the session (on the server, so in
 * every tab), then back to the login page.  On a failure the page says so
 * and stays: a user must not believe a session ended when it did not.
 */
'use strict';

(function () {
    const status = document.getElementById('status');
    fetch('/api/v1/logout', {method: 'POST', credentials: 'same-origin',
                             headers: {Accept: 'application/json'}})
        .then(function (resp) {
            if (resp.ok || resp.status === 401) {
                window.location.replace('/');
            } else {
                status.textContent = 'Signing out failed (HTTP ' +
                                     resp.status + ').';
            }
        })
        .catch(function () {
            status.textContent = 'The server cannot be reached; the ' +
                                 'session may still be open.';
        });
})();
