// Log in with Strophe.js and SASL EXTERNAL over wss (RFC 7395) or BOSH (XEP-0206), presenting a client
// certificate, and print one JSON line with the outcome. Used by tests/transport/test_ws_strophe.py and
// test_bosh_strophe.py; not a library.
//
//   node login.cjs URL JID [CERTFILE KEYFILE]
//
// Strophe opens `new WebSocket(url, 'xmpp')` (the global, else the `ws` package) and, for BOSH, uses the
// global XMLHttpRequest, which Node does not have. Both are replaced before Strophe loads: a `ws` subclass
// and a minimal XMLHttpRequest over Node's https, each presenting the certificate. The server's own
// certificate is not checked (a test CA). JID is passed as both authzid and authcid, so Strophe sends no
// authzid: an empty <auth/>, then an empty <response/> to the server's empty challenge (XEP-0178, RFC 6120
// §6.4.2).
//
// Output: {"status": "connected"|"authfail"|"connfail"|"no-external"|"timeout", "jid": ..., "mechanisms": [...],
//          "condition": ..., "auth": text of the <auth/> sent, "response": text of the <response/> sent}
'use strict';

const fs = require('fs');
const https = require('https');
const WebSocket = require('ws');

const [url, jid, certfile, keyfile] = process.argv.slice(2);
const tlsOptions = { rejectUnauthorized: false };
if (certfile) {
    tlsOptions.cert = fs.readFileSync(certfile);
    tlsOptions.key = fs.readFileSync(keyfile);
}

class CertWebSocket extends WebSocket {
    constructor(address, protocols) {
        super(address, protocols, tlsOptions);
    }
}
globalThis.WebSocket = CertWebSocket;

const agent = new https.Agent({ ...tlsOptions, keepAlive: true });

// Just what Strophe's BOSH code uses (src/bosh.js, src/request.js): open, setRequestHeader, send, abort,
// readyState, status, responseText, getAllResponseHeaders, onreadystatechange.
class NodeXMLHttpRequest {
    constructor() {
        this.readyState = 0;
        this.status = 0;
        this.responseText = '';
        this.responseXML = null;
        this.onreadystatechange = null;
        this._headers = {};
        this._responseHeaders = {};
        this._request = null;
    }
    open(method, address) {
        this._method = method;
        this._url = address;
        this._change(1);
    }
    setRequestHeader(name, value) {
        this._headers[name] = value;
    }
    getAllResponseHeaders() {
        return Object.entries(this._responseHeaders)
            .map(([k, v]) => `${k}: ${v}`)
            .join('\r\n');
    }
    overrideMimeType() {}
    send(data) {
        const body = Buffer.from(data || '', 'utf8');
        const headers = { ...this._headers, 'Content-Length': body.length };
        this._request = https.request(this._url, { method: this._method, headers, agent }, (response) => {
            const chunks = [];
            response.on('data', (chunk) => chunks.push(chunk));
            response.on('end', () => {
                this.status = response.statusCode;
                this._responseHeaders = response.headers;
                this.responseText = Buffer.concat(chunks).toString('utf8');
                this._change(4);
            });
        });
        this._request.on('error', () => {
            if (this.readyState !== 4) {
                this.status = 0;
                this._change(4);
            }
        });
        this._request.end(body);
    }
    abort() {
        if (this._request) this._request.destroy();
    }
    _change(state) {
        this.readyState = state;
        if (this.onreadystatechange) this.onreadystatechange();
    }
}
globalThis.XMLHttpRequest = NodeXMLHttpRequest;

const { Strophe } = require('strophe.js');

const result = { status: 'timeout', jid: null, mechanisms: null, condition: null, auth: null, response: null };
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

const connection = new Strophe.Connection(url);
connection.xmlInput = (element) => {
    const nodes = element.nodeName === 'body' ? Array.from(element.childNodes) : [element];
    for (const node of nodes) {
        if (node.nodeName === 'stream:features' && result.mechanisms === null) {
            const offered = Array.from(node.getElementsByTagName('mechanism')).map((m) => m.textContent);
            const bind = node.getElementsByTagName('bind').length > 0;
            if (!bind) {
                result.mechanisms = offered;
                if (!offered.includes('EXTERNAL')) finish('no-external');
            }
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
connection.connect(jid, null, (status, condition) => {
    if (status === Strophe.Status.CONNECTED) {
        finish('connected', { jid: connection.jid });
    } else if (status === Strophe.Status.AUTHFAIL) {
        finish('authfail', { condition: condition || null });
    } else if (status === Strophe.Status.CONNFAIL) {
        finish('connfail', { condition: condition || null });
    }
}, undefined, undefined, undefined, jid);
