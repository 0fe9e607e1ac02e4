"""Token checks: HS256 with the configured secret by default, or a JWKS URL (served here over
loopback by a real HTTP server), and stream tickets that are never bearer tokens."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from im_runtime.auth import AuthError, Principal, TokenVerifier
from im_runtime.settings import CommonSettings

pytestmark = pytest.mark.unit


def claims(**over):
    now = int(time.time())
    return {"tid": "acme", "sub": "alice", "role": "agent", "iat": now, "exp": now + 60, **over}


def jwk(key, kid: str) -> dict:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "RS256",
            "use": "sig"}


@pytest.fixture
def jwks_server():
    """A real HTTP server serving `state["keys"]` (the test may rotate them); `hits` counts fetches."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state = {"keys": [jwk(key, "k1")]}
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            gate = state.get("gate")
            if gate is not None:
                gate.wait(30)  # a key server that answers only when the test says so
            body = json.dumps({"keys": state["keys"]}).encode()
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
        yield key, f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", hits, state
    finally:
        server.shutdown()
        server.server_close()


async def test_a_token_signed_by_a_key_of_the_configured_jwks_is_accepted(jwks_server):
    key, url, hits, _ = jwks_server
    verifier = TokenVerifier(CommonSettings(jwks_url=url, ticket_secret="t" * 32))
    await verifier.start()
    token = jwt.encode(claims(role="admin"), key, algorithm="RS256", headers={"kid": "k1"})
    principal = verifier.verify(token)
    assert principal == Principal("acme", "alice", "admin", principal.expires_at)
    assert hits == ["/.well-known/jwks.json"]


async def test_with_a_jwks_a_token_from_another_key_or_an_hs256_one_is_refused(jwks_server):
    _, url, _, _ = jwks_server
    verifier = TokenVerifier(CommonSettings(jwks_url=url, ticket_secret="t" * 32))
    await verifier.start()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"}))
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), "x" * 32, algorithm="HS256", headers={"kid": "k1"}))


async def test_unknown_key_ids_never_make_a_request_fetch_and_refetch_at_most_once_per_period(jwks_server):
    """A storm of tokens naming made-up key ids: each is refused at once (no request waits on the
    network), and the key set is fetched again at most once per IM_JWKS_MIN_REFRESH_S. A real
    rotation (a new kid) is picked up by that one refresh."""
    key, url, hits, state = jwks_server
    verifier = TokenVerifier(CommonSettings(jwks_url=url, ticket_secret="t" * 32, jwks_min_refresh_s=3600))
    await verifier.start()
    verifier.keyset.fetched_at = -float("inf")  # as if the period had passed since the start's fetch
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state["keys"] = [jwk(key, "k1"), jwk(rotated, "k2")]
    for i in range(200):
        with pytest.raises(AuthError):
            verifier.verify(jwt.encode(claims(), rotated, algorithm="RS256", headers={"kid": f"made-up-{i}"}))
    await verifier.keyset.refreshing  # the one refresh the storm caused
    assert len(hits) == 2, hits
    assert verifier.verify(jwt.encode(claims(), rotated, algorithm="RS256", headers={"kid": "k2"})).subject == "alice"
    for i in range(50):
        with pytest.raises(AuthError):
            verifier.verify(jwt.encode(claims(), rotated, algorithm="RS256", headers={"kid": f"again-{i}"}))
    assert len(hits) == 2, "within the period no unknown kid fetches again"


async def test_a_token_is_answered_while_the_key_server_has_not_answered_yet(jwks_server):
    """The refresh an unknown kid starts runs beside the request: the server below answers only
    once the test releases it, and by then the request has long been refused (a lookup that
    waited for the fetch would still be waiting here)."""
    key, url, hits, state = jwks_server
    verifier = TokenVerifier(CommonSettings(jwks_url=url, ticket_secret="t" * 32))
    await verifier.start()
    state["gate"] = threading.Event()
    verifier.keyset.fetched_at = -float("inf")
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k9"}))
    assert not verifier.keyset.refreshing.done(), "the fetch is still waiting on the key server"
    assert verifier.verify(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"})).subject == "alice"
    state["gate"].set()
    await verifier.keyset.refreshing
    assert len(hits) == 2


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_configured_public_key_verifies_rs256_and_eddsa_tokens_and_refuses_hs256(kind):
    private = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
               else ed25519.Ed25519PrivateKey.generate())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = TokenVerifier(CommonSettings(jwt_public_key=pem, ticket_secret="t" * 32))
    algorithm = "RS256" if kind == "rsa" else "EdDSA"
    assert verifier.verify(jwt.encode(claims(), private, algorithm=algorithm)).agent_id == "alice"
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), "x" * 32, algorithm="HS256"))
    with pytest.raises(AuthError):
        other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                 else ed25519.Ed25519PrivateKey.generate())
        verifier.verify(jwt.encode(claims(), other, algorithm=algorithm))


def test_a_kafka_token_is_refused_over_http_and_an_http_token_in_a_kafka_header():
    secret = "s" * 32
    verifier = TokenVerifier(CommonSettings(jwt_secret=secret))
    for_kafka = jwt.encode(claims(role="service", sub="ticketing", aud="im-kafka"), secret)
    for_http = jwt.encode(claims(role="service", sub="ticketing"), secret)
    assert verifier.verify_for_kafka(for_kafka).subject == "ticketing"
    assert verifier.verify(for_http).subject == "ticketing"
    with pytest.raises(AuthError, match="not accepted here"):
        verifier.verify(for_kafka)
    with pytest.raises(AuthError, match="im-kafka"):
        verifier.verify_for_kafka(for_http)


def test_stream_tickets_use_their_own_secret_when_tokens_are_asymmetric():
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    api = TokenVerifier(CommonSettings(jwt_public_key=pem, ticket_secret="t" * 32))
    gateway = TokenVerifier(CommonSettings(jwt_public_key=pem, ticket_secret="t" * 32))
    stranger = TokenVerifier(CommonSettings(jwt_public_key=pem, ticket_secret="u" * 32))
    principal = api.verify(jwt.encode(claims(), private, algorithm="EdDSA"))
    ticket, issued = api.mint_ticket(principal, "laptop")
    assert gateway.verify_ticket(ticket) == issued
    with pytest.raises(AuthError):
        stranger.verify_ticket(ticket)
    with pytest.raises(SystemExit, match="IM_TICKET_SECRET"):
        CommonSettings(jwt_public_key=pem).require_ticket_secret()
    with pytest.raises(AuthError, match="IM_TICKET_SECRET"):  # imctl verifies tokens, never tickets
        TokenVerifier(CommonSettings(jwt_public_key=pem)).mint_ticket(principal, "laptop")


def test_with_an_audience_and_issuer_configured_a_token_from_elsewhere_is_refused():
    """An identity provider shared with other applications: their tokens carry the same claims."""
    secret = "s" * 32
    verifier = TokenVerifier(CommonSettings(jwt_secret=secret, jwt_audience="helpdesk-im",
                                            jwt_issuer="https://idp.example.com"))
    ours = claims(aud="helpdesk-im", iss="https://idp.example.com")
    assert verifier.verify(jwt.encode(ours, secret)).subject == "alice"
    for other in ({**ours, "aud": "crm"}, {**ours, "iss": "https://other.example.com"},
                  {k: v for k, v in ours.items() if k != "iss"}, {k: v for k, v in ours.items() if k != "aud"}):
        with pytest.raises(AuthError):
            verifier.verify(jwt.encode(other, secret))


async def test_an_encryption_key_of_the_jwks_never_verifies_a_token(jwks_server):
    key, url, _, state = jwks_server
    state["keys"] = [{**jwk(key, "k1"), "use": "enc"}]
    verifier = TokenVerifier(CommonSettings(jwks_url=url, ticket_secret="t" * 32))
    await verifier.start()
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"}))


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
    monkeypatch.delenv("IM_JWT_PUBLIC_KEY", raising=False)
    with pytest.raises(SystemExit):
        TokenVerifier(CommonSettings())
