// XEP-0257 with Strophe.js over wss or BOSH: log in with SASL EXTERNAL (a client certificate), add a
// certificate under a name (<append/>), list them (<items/>), and print one JSON line. Used by
// tests/transport/test_strophe_saslcert.py; not a library.
//
//   node saslcert.cjs URL JID CERTFILE KEYFILE NAME ADDFILE
//
// ADDFILE holds the base64 DER of the certificate to add. Output: {"status": "connected"|"authfail"|
// "connfail"|"timeout", "append": "result" or the stanza error's condition, "items": [names listed]}.
'use strict';

const fs = require('fs');
const { installCertTransports } = require('./certtransport.cjs');

const [url, jid, certfile, keyfile, name, addfile] = process.argv.slice(2);
const agent = installCertTransports({
    rejectUnauthorized: false, cert: fs.readFileSync(certfile), key: fs.readFileSync(keyfile),
});
const { Strophe, $iq } = require('strophe.js');
const NS = 'urn:xmpp:saslcert:1';

const result = { status: 'timeout', append: null, items: null };
let done = false;
function finish(status) {
    if (done) return;
    done = true;
    result.status = status;
    process.stdout.write(JSON.stringify(result) + '\n');
    agent.destroy();
    process.exit(0);
}
setTimeout(() => finish('timeout'), 30000);

function condition(stanza) {
    const error = stanza && stanza.getElementsByTagName('error')[0];
    const first = error && Array.from(error.childNodes).find((child) => child.nodeType === 1);
    return first ? first.nodeName : 'error';
}

const connection = new Strophe.Connection(url);
connection.connect(jid, null, (status) => {
    if (status === Strophe.Status.AUTHFAIL) finish('authfail');
    if (status === Strophe.Status.CONNFAIL) finish('connfail');
    if (status !== Strophe.Status.CONNECTED) return;
    const append = $iq({ type: 'set' }).c('append', { xmlns: NS })
        .c('name').t(name).up()
        .c('x509cert').t(fs.readFileSync(addfile, 'utf8').trim());
    const list = () => connection.sendIQ($iq({ type: 'get' }).c('items', { xmlns: NS }), (answer) => {
        result.items = Array.from(answer.getElementsByTagName('name')).map((n) => n.textContent);
        finish('connected');
    }, () => finish('connected'), 20000);
    connection.sendIQ(append, () => { result.append = 'result'; list(); },
        (answer) => { result.append = condition(answer); list(); }, 20000);
}, undefined, undefined, undefined, jid);
