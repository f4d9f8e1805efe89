// Strophe.js under Node, presenting a TLS client certificate: installs the globals Strophe's transports use,
// before Strophe loads. Shared by login.cjs and agent.cjs; not a library beyond these tests.
//
// Strophe opens `new WebSocket(url, 'xmpp')` (the global, else the `ws` package) and, for BOSH (XEP-0206),
// uses the global XMLHttpRequest, which Node does not have. Both are replaced: a `ws` subclass and a minimal
// XMLHttpRequest over Node's https, each presenting the certificate. The server's own certificate is not
// checked (a test CA).
'use strict';

const https = require('https');
const WebSocket = require('ws');

// Returns the https.Agent the BOSH requests share (destroy it to close its kept-alive sockets).
function installCertTransports(tlsOptions) {
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
    return agent;
}

module.exports = { installCertTransports };
