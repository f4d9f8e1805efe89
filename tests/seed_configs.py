"""The two configs of the product brief ("seed examples"), as an operator coming from MongooseIM writes them.

Shared by the config tests (they load as written) and the end-to-end test that logs in through ``runc2s``
on the first one.
"""

SEED_EXAMPLE_1 = """
[listen.c2s]
  port = 5222
  tls.cacertfile = "ca.pem"
  tls.verify_peer = true
[listen.http]
  port = 5285
  tls.cacertfile = "ca.pem"
  tls.verify_peer = true
  [[listen.http.handlers.mod_bosh]]
    host = "_"
    path = "/http-bind"
  [[listen.http.handlers.mod_websockets]]
    host = "_"
    path = "/ws-xmpp"
[auth]
  method = ["pki"]
  sasl_mechanisms = ["external"]
"""

SEED_EXAMPLE_2 = """
[listen.c2s]
  port = 5222
  tls.cacertfile = "ca.pem"
  tls.verify_peer = true
[auth]
  methods = ["rdbms", "pki"]
  sasl_mechanisms = ["scram_sha1", "external"]
"""
