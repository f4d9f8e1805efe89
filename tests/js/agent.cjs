// A scripted Strophe.js client over wss (RFC 7395) or BOSH (XEP-0206, an https:// URL) with SASL EXTERNAL, for the messaging tests
// (tests/im/strophe_agent.py). Not a library.
//
//   node agent.cjs URL JID RESOURCE CERTFILE KEYFILE
//
// Prints one JSON line per event on stdout: {"event": "connected", "jid": ...}, {"event": "stanza", "xml": ...}
// for every message, presence and iq received, {"event": "failed", "status": ..., "condition": ...}, and
// {"event": "disconnected"}. Reads JSON lines on stdin: {"send": "<xml/>"} sends a stanza, {"stop": true}
// closes the stream and exits.
'use strict';

const fs = require('fs');
const readline = require('readline');
const { installCertTransports } = require('./certtransport.cjs');

const [url, jid, resource, certfile, keyfile] = process.argv.slice(2);
const tlsOptions = { rejectUnauthorized: false, cert: fs.readFileSync(certfile), key: fs.readFileSync(keyfile) };

installCertTransports(tlsOptions);  // wss and BOSH present the certificate

const { Strophe } = require('strophe.js');

function emit(event) {
    process.stdout.write(JSON.stringify(event) + '\n');
}

const connection = new Strophe.Connection(url);
connection.xmlInput = (element) => {
    const nodes = element.nodeName === 'body' ? Array.from(element.childNodes) : [element];
    for (const node of nodes) {
        const name = node.nodeName;
        if (name === 'message' || name === 'presence' || name === 'iq') {
            emit({ event: 'stanza', xml: Strophe.serialize(node) });
        }
    }
};

const statusNames = Object.fromEntries(Object.entries(Strophe.Status).map(([k, v]) => [v, k]));
connection.connect(`${jid}/${resource}`, null, (status, condition) => {
    if (status === Strophe.Status.CONNECTED) {
        emit({ event: 'connected', jid: connection.jid });
    } else if (status === Strophe.Status.AUTHFAIL || status === Strophe.Status.CONNFAIL) {
        emit({ event: 'failed', status: statusNames[status], condition: condition || null });
    } else if (status === Strophe.Status.DISCONNECTED) {
        emit({ event: 'disconnected' });
        agent.destroy();
        process.exit(0);
    }
}, undefined, undefined, undefined, jid);

const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
    const command = JSON.parse(line);
    if (command.send) {
        connection.send(Strophe.xmlHtmlNode(command.send).documentElement);
    } else if (command.stop) {
        connection.disconnect('bye');
        setTimeout(() => process.exit(0), 3000);
    }
});
input.on('close', () => process.exit(0));
