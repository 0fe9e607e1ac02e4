"""Token checks: HS256 with the configured secret by default, or a JWKS URL (served here over
loopback by a real HTTP server), and stream tickets that are never bearer tokens."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from im_runtime.auth import AuthError, Principal, TokenVerifier
from im_runtime.settings import CommonSettings

pytestmark = pytest.mark.unit


def claims(**over):
    now = int(time.time())
    return {"tid": "acme", "sub": "alice", "role": "agent", "iat": now, "exp": now + 60, **over}


@pytest.fixture
def jwks_server():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield key, f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_signed_by_a_key_of_the_configured_jwks_is_accepted(jwks_server):
    key, url, hits = jwks_server
    verifier = TokenVerifier(CommonSettings(jwks_url=url))
    token = jwt.encode(claims(role="admin"), key, algorithm="RS256", headers={"kid": "k1"})
    principal = verifier.verify(token)
    assert principal == Principal("acme", "alice", "admin", principal.expires_at)
    assert hits == ["/.well-known/jwks.json"]


def test_with_a_jwks_a_token_from_another_key_or_an_hs256_one_is_refused(jwks_server):
    _, url, _ = jwks_server
    verifier = TokenVerifier(CommonSettings(jwks_url=url))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"}))
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), "x" * 32, algorithm="HS256", headers={"kid": "k1"}))


def test_hs256_by_default_and_incomplete_or_expired_tokens_are_refused():
    secret = "s" * 32
    verifier = TokenVerifier(CommonSettings(jwt_secret=secret))
    assert verifier.verify(jwt.encode(claims(), secret, algorithm="HS256")).agent_id == "alice"
    for bad in (claims(role="root"), claims(tid=""), claims(exp=int(time.time()) - 60)):
        with pytest.raises(AuthError):
            verifier.verify(jwt.encode(bad, secret, algorithm="HS256"))
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), "another-secret-of-32-characters!", algorithm="HS256"))


def test_a_service_token_acts_for_an_agent_only_when_it_names_one():
    secret = "s" * 32
    verifier = TokenVerifier(CommonSettings(jwt_secret=secret))
    acting = verifier.verify(jwt.encode(claims(role="service", sub="ticketing", acting_agent_id="bob"), secret))
    assert (acting.subject, acting.agent_id) == ("ticketing", "bob")
    agent = verifier.verify(jwt.encode(claims(acting_agent_id="bob"), secret))
    assert agent.agent_id == "alice", "only service tokens may act for another agent"


def test_a_stream_ticket_is_not_a_bearer_token_and_expires():
    secret = "s" * 32
    verifier = TokenVerifier(CommonSettings(jwt_secret=secret))
    principal = verifier.verify(jwt.encode(claims(), secret))
    ticket, issued = verifier.mint_ticket(principal, "laptop", ttl_s=30)
    assert verifier.verify_ticket(ticket) == issued
    with pytest.raises(AuthError):
        verifier.verify(ticket)
    with pytest.raises(AuthError):
        verifier.verify_ticket(jwt.encode(claims(), secret))
    expired, _ = verifier.mint_ticket(principal, "laptop", ttl_s=-1)
    with pytest.raises(AuthError):
        verifier.verify_ticket(expired)


def test_a_service_refuses_to_start_without_a_way_to_verify_tokens(monkeypatch):
    monkeypatch.delenv("IM_JWT_SECRET", raising=False)
    monkeypatch.delenv("IM_JWKS_URL", raising=False)
    with pytest.raises(SystemExit):
        TokenVerifier(CommonSettings())
