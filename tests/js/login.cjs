// Log in with Strophe.js and SASL EXTERNAL over wss (RFC 7395) or BOSH (XEP-0206), presenting a client
// certificate, and print one JSON line with the outcome. Used by tests/transport/test_strophe_login.py; not a
// library.
//
//   node login.cjs URL JID [CERTFILE KEYFILE]
//
// The certificate goes out through certtransport.cjs (WebSocket and XMLHttpRequest for Strophe). JID is
// passed as both authzid and authcid, so Strophe sends no authzid: an empty <auth/>, then an empty
// <response/> to the server's empty challenge (XEP-0178, RFC 6120 §6.4.2).
//
// Output: {"status": "connected"|"authfail"|"connfail"|"disconnected"|"no-external"|"timeout",
//          "jid": ..., "mechanisms": [...],
//          "condition": ..., "auth": text of the <auth/> sent, "response": text of the <response/> sent,
//          "sasl_failure": the condition element of the server's SASL <failure/> (RFC 6120 §6.5), if any,
//          "stream_error": {"condition", "text"} of a <stream:error/> the server sent (RFC 6120 §4.9), if any,
//          "strophe_errors": what Strophe wrote to console.error (over wss: "WebSocket stream error: COND - TEXT")}
//
// With LOGIN_PASSWORD in the environment it logs in with that password instead (issue 14), using only the
// mechanism named by LOGIN_MECHANISM (e.g. SCRAM-SHA-256) when set; "no-external" is then not a verdict.
'use strict';

const fs = require('fs');
const { installCertTransports } = require('./certtransport.cjs');

const [url, jid, certfile, keyfile] = process.argv.slice(2);
const tlsOptions = { rejectUnauthorized: false };
if (certfile) {
    tlsOptions.cert = fs.readFileSync(certfile);
    tlsOptions.key = fs.readFileSync(keyfile);
}

const agent = installCertTransports(tlsOptions);
const password = process.env.LOGIN_PASSWORD || null;
const onlyMechanism = process.env.LOGIN_MECHANISM || null;

const { Strophe } = require('strophe.js');

const result = {
    status: 'timeout', jid: null, mechanisms: null, condition: null, auth: null, response: null, sasl_failure: null,
    stream_error: null, strophe_errors: [],
};
let done = false;
function finish(status, extra) {
    if (done) return;
    done = true;
    Object.assign(result, { status }, extra || {});
    process.stdout.write(JSON.stringify(result) + '\n');
    agent.destroy();
    process.exit(0);
}
setTimeout(() => finish('timeout'), 20000);

console.error = (...parts) => result.strophe_errors.push(parts.join(' '));  // Strophe logs errors there

function streamError(node) {
    const STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';
    const error = node.nodeName === 'stream:error' ? node : node.getElementsByTagName('stream:error')[0];
    if (!error || result.stream_error !== null) return;
    result.stream_error = { condition: null, text: null };
    for (const child of Array.from(error.childNodes).filter((c) => c.nodeType === 1)) {
        if (child.namespaceURI !== STREAMS) continue;
        if (child.localName === 'text') result.stream_error.text = child.textContent;
        else result.stream_error.condition = child.localName;
    }
}

const connection = new Strophe.Connection(url);
// BOSH resends a failed HTTP request after 1, 8, 27... s (Strophe's backoff), up to maxRetries times, then
// gives up (CONNFAIL "giving-up"). LOGIN_MAX_RETRIES lowers that, so a refused TLS handshake ends in a verdict
// within seconds, not in this script's 20 s watchdog ("timeout").
if (process.env.LOGIN_MAX_RETRIES) connection.maxRetries = Number(process.env.LOGIN_MAX_RETRIES);
if (onlyMechanism) {
    for (const name of Object.keys(connection.mechanisms)) {
        if (name !== onlyMechanism) delete connection.mechanisms[name];
    }
}
connection.xmlInput = (element) => {
    const nodes = element.nodeName === 'body' ? Array.from(element.childNodes) : [element];
    streamError(element);
    for (const node of nodes) {
        if (node.nodeName === 'stream:features' && result.mechanisms === null) {
            const offered = Array.from(node.getElementsByTagName('mechanism')).map((m) => m.textContent);
            const bind = node.getElementsByTagName('bind').length > 0;
            if (!bind) {
                result.mechanisms = offered;
                if (!offered.includes('EXTERNAL') && password === null) finish('no-external');
            }
        }
        if (node.nodeName === 'failure') {
            const condition = Array.from(node.childNodes).find((child) => child.nodeType === 1);
            if (condition) result.sasl_failure = condition.nodeName;
        }
    }
};
connection.xmlOutput = (element) => {
    const nodes = element.nodeName === 'body' ? Array.from(element.childNodes) : [element];
    for (const node of nodes) {
        if (node.nodeName === 'auth') result.auth = node.textContent;
        if (node.nodeName === 'response') result.response = node.textContent;
    }
};
connection.connect(jid, password, (status, condition) => {
    if (status === Strophe.Status.CONNECTED) {
        finish('connected', { jid: connection.jid });
    } else if (status === Strophe.Status.AUTHFAIL) {
        finish('authfail', { condition: condition || null });
    } else if (status === Strophe.Status.CONNFAIL) {
        finish('connfail', { condition: condition || null });
    } else if (status === Strophe.Status.DISCONNECTED) {
        finish('disconnected');  // before any verdict above: e.g. BOSH's first request answered 403
    }
}, undefined, undefined, undefined, password === null ? jid : undefined);
