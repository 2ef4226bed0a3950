#!/usr/bin/env node
/*
 * viewer.js — the browser test of the UI and the OHIF viewer: Debian's
 * chromium (headless) driven by playwright-core, against a running
 * `agora serve`.  tests/system/test_viewer.py starts the server, stores the
 * study and runs this script; the assertions are made there, on the JSON
 * this script prints (one object on stdout).
 *
 *   node viewer.js --base http://127.0.0.1:PORT --patient "Viewer, Test"
 *                  [--series N] [--login USER] [--screenshot FILE.png]
 *
 * --login USER signs in through the login page first, with the password in
 * the environment variable AGORA_BROWSER_PASSWORD (not on the command line,
 * where ps would show it).  Without it the login page is only checked to
 * load, and the viewer is opened directly (anonymous HTTP).
 *
 * Steps: open "/", sign in (or not), land on /viewer/'s study list, find the
 * patient's row, open the study in the "Basic Viewer" mode, wait until
 * every series thumbnail has been drawn (N of them) and the viewport's
 * canvas holds an image; signed in, sign out through /ui/logout.html.
 * Then report what was seen, every response of this origin that was
 * 4xx/5xx, requests that failed, console errors and Content-Security-Policy
 * violations.
 */
'use strict';

const path = require('path');
const {chromium} = require(path.join(__dirname, 'node_modules',
                                     'playwright-core'));

const CHROMIUM = process.env.AGORA_CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 25000;

function parseArgs(argv) {
    const a = {series: 1};
    for (let i = 2; i < argv.length; i += 2) {
        const k = argv[i].replace(/^--/, ''), v = argv[i + 1];
        if (v === undefined) {
            throw new Error('missing value for ' + argv[i]);
        }
        a[k] = k === 'series' ? Number(v) : v;
    }
    if (!a.base || !a.patient) {
        throw new Error('usage: viewer.js --base URL --patient NAME ' +
                        '[--series N] [--login USER] [--screenshot FILE]');
    }
    return a;
}

/* Pixel statistics of the viewport canvas(es): cornerstone draws its
 * rendered image into a 2D canvas with class cornerstone-canvas. */
function canvasStats() {
    return Array.from(document.querySelectorAll('canvas.cornerstone-canvas'))
        .map(c => {
            const ctx = c.getContext('2d', {willReadFrequently: true});
            if (!ctx || c.width === 0 || c.height === 0) {
                return {w: c.width, h: c.height, distinct: 0, lit: 0};
            }
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            let lit = 0;
            for (let i = 0; i < d.length; i += 4) {
                seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                if (d[i] > 8 || d[i + 1] > 8 || d[i + 2] > 8) {
                    lit++;
                }
            }
            return {w: c.width, h: c.height, distinct: seen.size,
                    lit: lit / (c.width * c.height)};
        });
}

/* The study browser's thumbnails (data: PNGs the viewer renders from
 * WADO-RS frames): how many distinct grey levels each holds. */
async function thumbnailStats() {
    const imgs = Array.from(document.querySelectorAll(
        '[data-cy="study-browser-thumbnail"] img'));
    const out = [];
    for (const img of imgs) {
        if (!img.complete || img.naturalWidth === 0) {
            out.push({w: 0, distinct: 0});
            continue;
        }
        const c = document.createElement('canvas');
        c.width = img.naturalWidth;
        c.height = img.naturalHeight;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4) {
            seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        }
        out.push({w: c.width, distinct: seen.size});
    }
    return out;
}

async function run(args, report) {
    const base = args.base.replace(/\/$/, '');
    const origin = new URL(base).origin;
    const browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        /* Root in a container has no user namespace sandbox; WebGL runs on
         * SwiftShader (no GPU here). */
        args: ['--no-sandbox', '--use-angle=swiftshader',
               '--enable-unsafe-swiftshader', '--disable-dev-shm-usage'],
    });
    try {
        const context = await browser.newContext({
            viewport: {width: 1400, height: 900}});
        context.setDefaultTimeout(STEP_MS);
        const page = await context.newPage();
        let probing = false;   /* after signing out: 401s are the point */
        await page.addInitScript({
            content: 'window.__agoraCanvasStats = ' + canvasStats});
        await page.addInitScript(() => {
            /* What the login page showed, kept across its own redirect. */
            if (window.location.pathname === '/') {
                document.addEventListener('DOMContentLoaded', () => {
                    sessionStorage.setItem('agoraLoginPage', JSON.stringify({
                        title: document.title,
                        form: document.querySelectorAll(
                            'form#login input#password').length}));
                });
            }
            window.__agoraCsp = [];
            document.addEventListener('securitypolicyviolation', e => {
                window.__agoraCsp.push(e.violatedDirective + ' ' +
                                       e.blockedURI);
            });
        });
        page.on('response', r => {
            if (r.status() < 400 || !r.url().startsWith(origin)) {
                return;
            }
            /* Expected 401s: before signing in, the login page asking
             * whether a session exists and the wrong password tried
             * first; after signing out, the probes of step 5. */
            const p = new URL(r.url()).pathname;
            if (r.status() === 401 && (probing ||
                ((p === '/api/v1/me' || p === '/api/v1/login') &&
                 !report.steps.includes('logged in')))) {
                return;
            }
            report.failed_requests.push(r.status() + ' ' + r.url());
        });
        page.on('requestfailed', r => {
            const why = r.failure() ? r.failure().errorText : '?';
            /* Aborts are the viewer cancelling what it no longer needs. */
            if (why !== 'net::ERR_ABORTED') {
                report.failed_requests.push(why + ' ' + r.url());
            }
        });
        page.on('console', m => {
            const t = m.text();
            if (/Content.Security.Policy/i.test(t)) {
                report.csp_violations.push(t.slice(0, 300));
            } else if (m.type() === 'error' && !probing &&
                       !t.startsWith('Failed to load resource')) {
                /* (failed loads are judged above, with their URLs) */
                report.console_errors.push(t.slice(0, 300));
            }
        });
        page.on('pageerror', e => {
            report.console_errors.push('uncaught: ' + e.message.slice(0, 300));
        });
        const t0 = Date.now();
        const step = name => {
            report.steps.push(name);
            report.step_seconds.push((Date.now() - t0) / 1000);
        };

        /* 1. The login page.  Signed in already (or anonymous HTTP), its
         * script goes on to the viewer by itself: GET /api/v1/me is 200. */
        const toViewer = u => new URL(u).origin === origin &&
            new URL(u).pathname.startsWith('/viewer/');
        const redirected = args.login ? null : page.waitForURL(
            toViewer, {timeout: 10000, waitUntil: 'commit'})
            .then(() => true, () => false);
        /* Signing in, ?next= may only lead into the viewer: this one
         * (another site) must be ignored. */
        await page.goto(base + '/' + (args.login ?
            '?next=' + encodeURIComponent('//evil.invalid/viewer/') : ''),
                        {waitUntil: 'domcontentloaded'});
        const seen = await page.waitForFunction(
            () => sessionStorage.getItem('agoraLoginPage'));
        report.login_page = JSON.parse(await seen.jsonValue());
        step('login page');
        if (args.login) {
            await page.waitForSelector('form#login input#username');
            /* A wrong password first: the server's detail is shown. */
            await page.fill('#username', args.login);
            await page.fill('#password', 'not-the-password');
            const [refused] = await Promise.all([
                page.waitForResponse(
                    r => new URL(r.url()).pathname === '/api/v1/login'),
                page.click('#submit'),
            ]);
            report.login_error_status = refused.status();
            report.login_error_detail = (await refused.json()).detail;
            await page.waitForSelector('#error:not([hidden])');
            report.login_error = await page.textContent('#error');
            await page.fill('#password',
                            process.env.AGORA_BROWSER_PASSWORD || '');
            await Promise.all([
                page.waitForURL(toViewer, {waitUntil: 'commit'}),
                page.click('#submit'),
            ]);
            step('logged in');
        } else {
            report.login_skipped = await redirected;
            if (!report.login_skipped) {
                await page.goto(base + '/viewer/');
            }
        }

        /* 2. The study list shows the patient. */
        const row = page.getByText(args.patient, {exact: true}).first();
        await row.waitFor();
        report.study_list_url = new URL(page.url()).pathname;
        step('study list');

        /* 3. Open the study in the basic viewer. */
        await row.click();
        await Promise.all([
            page.waitForURL(/\/viewer\/viewer\?/),
            page.getByRole('button', {name: 'Basic Viewer'}).click(),
        ]);
        report.viewer_url = page.url().slice(origin.length);
        step('viewer opened');

        /* 4. Pixels.  The thumbnails first: the viewport may be set up
         * again once they are in, so it is judged after them, as the first
         * moment its canvas holds an image (>= 16 grey levels). */
        await page.waitForFunction(
            n => document.querySelectorAll(
                '[data-cy="study-browser-thumbnail"] img').length >= n &&
                Array.from(document.querySelectorAll(
                    '[data-cy="study-browser-thumbnail"] img'))
                    .every(i => i.complete && i.naturalWidth > 0),
            args.series, {polling: 250});
        /* A moment for requests still in flight to finish or fail. */
        await page.waitForTimeout(1000);
        const drawn = await page.waitForFunction(
            () => {
                const s = window.__agoraCanvasStats();
                return s.some(v => v.distinct >= 16) ? s : null;
            }, undefined, {polling: 500});
        report.viewport = await drawn.jsonValue();
        report.thumbnails = await page.evaluate(thumbnailStats);
        report.csp_violations.push(
            ...await page.evaluate(() => window.__agoraCsp));
        step('image drawn');
        if (args.screenshot) {
            await page.screenshot({path: args.screenshot});
        }

        /* 5. Signed in: the logout page ends the session and returns to
         * the login page; the session's cookie then opens nothing. */
        if (args.login) {
            probing = true;   /* 401s expected from here on */
            await Promise.all([
                page.waitForURL(u => new URL(u).pathname === '/',
                                {waitUntil: 'commit'}),
                page.goto(base + '/ui/logout.html'),
            ]);
            await page.waitForSelector('form#login input#username');
            report.after_logout = await page.evaluate(async () => ({
                me: (await fetch('/api/v1/me')).status,
                qido: (await fetch('/dicom-web/studies')).status,
            }));
            step('logged out');
            /* The study's link now leads to the login page (the viewer's
             * DICOMweb gets 401), and signing in again back to it. */
            const link = report.viewer_url;
            await Promise.all([
                page.waitForURL(u => u.pathname === '/' &&
                                u.searchParams.has('next'),
                                {waitUntil: 'commit'}),
                page.goto(base + link),
            ]);
            report.relogin_next = new URL(page.url()).searchParams.get('next');
            await page.waitForSelector('form#login input#username');
            probing = false;
            await page.fill('#username', args.login);
            await page.fill('#password',
                            process.env.AGORA_BROWSER_PASSWORD || '');
            await Promise.all([
                page.waitForURL(u => u.pathname + u.search === link,
                                {waitUntil: 'commit'}),
                page.click('#submit'),
            ]);
            step('back to the study');
        }
    } finally {
        await browser.close();
    }
}

async function main() {
    const t0 = Date.now();
    const report = {ok: false, steps: [], step_seconds: [],
                    failed_requests: [], console_errors: [],
                    csp_violations: []};
    let code = 0;
    try {
        await run(parseArgs(process.argv), report);
        report.ok = true;
    } catch (e) {
        report.error = String(e && e.stack ? e.stack : e).slice(0, 2000);
        code = 1;
    }
    report.seconds = (Date.now() - t0) / 1000;
    process.stdout.write(JSON.stringify(report) + '\n');
    process.exitCode = code;
}

main();
