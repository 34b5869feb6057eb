"""The certificate agent with a fake clock and a scripted CA: first issue by bootstrap token, rotation at
half the lifetime with a new key, jittered retries, credentials running out, the secrets dump and stats;
and a rotation that leaves an established TLS connection alone."""

from __future__ import annotations

import asyncio
import random
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.proxy import certagent, stats, tls
from tests import pki

START = 1_800_000_000.0
TTL = 1000.0
BACKDATE = 60.0  # mesh.control.ca.BACKDATE_S: issued certificates start a minute early
SPIFFE = "spiffe://cluster.local/ns/bookinfo/sa/books"


class Stop(Exception):
    pass


class FakeTime:
    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(round(delay, 6))
        self.now += delay
        await asyncio.sleep(0)


class ScriptedCA:
    """Signs like the control plane (the identity is ours, not the CSR's) unless told to fail; stops the
    agent after `stop_after` requests."""

    def __init__(self, time: FakeTime, stop_after: int, failures: dict[int, tuple[int, str]] | None = None) -> None:
        self.ca = pki.make_ca(now=START - 3600)
        self.time = time
        self.stop_after = stop_after
        self.failures = failures or {}
        self.requests: list[tuple[dict, bool]] = []

    async def __call__(self, body: dict, with_certificate: bool):
        self.requests.append((body, with_certificate))
        number = len(self.requests)
        if number > self.stop_after:
            raise Stop
        if number in self.failures:
            status, error = self.failures[number]
            if status == 0:
                raise ConnectionRefusedError(error)
            return status, {"error": error}
        chain = self.ca.sign_workload(body["csr"].encode(), SPIFFE, now=self.time.now, ttl_s=TTL)
        return 200, {"certChain": chain.decode(), "rootCert": self.ca.root_pem.decode()}


def agent_for(tmp_path, time: FakeTime, ca: ScriptedCA, **options) -> certagent.CertAgent:
    options = {"bootstrap_token": "bootstrap-token-123", "grace_jitter": 0.0, **options}
    return certagent.CertAgent(tls.MeshTls(tmp_path / "certs"), ca, spiffe_id=SPIFFE, clock=time.clock,
                               sleep=time.sleep, rng=random.Random(7), counters=stats.Counters(), **options)


def run(agent: certagent.CertAgent) -> None:
    with pytest.raises(Stop):
        asyncio.run(agent.run())


def test_first_issue_by_token_then_rotation_at_half_life_by_certificate(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=3)
    agent = agent_for(tmp_path, time, ca)
    run(agent)
    keys = {x509.load_pem_x509_csr(body["csr"].encode()).public_key().public_numbers() for body, _ in ca.requests}
    (first, first_cert), (second, second_cert), (third, third_cert) = ca.requests[:3]
    assert first["token"] == "bootstrap-token-123" and not first_cert
    assert "token" not in second and second_cert and "token" not in third and third_cert
    assert all("PRIVATE" not in body["csr"] for body, _ in ca.requests)  # the key never leaves
    half = TTL / 2  # half of the lifetime left from issue: the backdated notBefore does not count
    assert time.sleeps == [half, half, half]  # the third renewal is the request that stops the test
    assert len(keys) == 4  # a new key for every request
    assert agent.first.is_set() and agent.bootstrap_token is None and agent.mesh_tls.installed == 3
    assert agent.mesh_tls.spiffe_id == SPIFFE
    assert agent.not_after == START + 2 * half + TTL
    text = "\n".join(agent.counters.render())
    assert "weir_cert_rotations_total 2" in text and "weir_cert_rotation_failures_total 0" in text
    assert f"weir_cert_expiry_timestamp_seconds {START + 2 * half + TTL}" in text


def test_a_failed_rotation_is_retried_with_jittered_doubling_delays(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=4, failures={2: (503, "TokenReview failed"), 3: (0, "refused")})
    agent = agent_for(tmp_path, time, ca)
    run(agent)
    expected = random.Random(7)
    first_retry = certagent.retry_delay(1, expected)
    second_retry = certagent.retry_delay(2, expected)
    assert 0.5 <= first_retry <= 1.0 and 1.0 <= second_retry <= 2.0
    half = TTL / 2
    assert time.sleeps[:3] == [half, round(first_retry, 6), round(second_retry, 6)]
    assert agent.counters.get("cert_rotation_failures_total") == 2 and agent.counters.get("cert_rotations_total") == 1
    assert agent.failures == 0 and agent.last_error is None


def test_the_dump_shows_failures_until_a_rotation_succeeds(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=2, failures={2: (503, "TokenReview failed")})
    agent = agent_for(tmp_path, time, ca)
    run(agent)
    dump = agent.dump()
    assert dump["rotation"]["consecutiveFailures"] == 1
    assert dump["rotation"]["lastError"] == "control plane answered 503: TokenReview failed"
    assert dump["state"] == "ACTIVE" and dump["spiffeId"] == SPIFFE and dump["source"] == "ca"
    assert dump["chain"][0]["issuer"] == "CN=Weir mesh root CA,O=cluster.local"
    assert dump["roots"][0]["fingerprintSha256"].count(":") == 31
    assert dump["lifetimeSeconds"] == TTL + BACKDATE and "PRIVATE" not in str(dump)


def test_a_refused_bootstrap_token_without_a_certificate_exhausts_the_credentials(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=5, failures={1: (401, "unknown or already used bootstrap token")})
    agent = agent_for(tmp_path, time, ca)
    with pytest.raises(certagent.CredentialsExhausted):
        asyncio.run(agent.run())
    assert len(ca.requests) == 1 and not agent.first.is_set()


def test_a_network_error_keeps_the_bootstrap_token_for_the_retry(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=2, failures={1: (0, "refused")})
    agent = agent_for(tmp_path, time, ca)
    asyncio.run(_until_first(agent))
    assert [body.get("token") for body, _ in ca.requests] == ["bootstrap-token-123", "bootstrap-token-123"]


async def _until_first(agent: certagent.CertAgent) -> None:
    task = asyncio.create_task(agent.run())
    await agent.first.wait()
    task.cancel()


def test_a_certificate_that_expires_while_renewals_fail_ends_the_agent(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=10_000, failures={n: (0, "control plane down") for n in range(2, 10_000)})
    agent = agent_for(tmp_path, time, ca)
    with pytest.raises(certagent.CredentialsExhausted):
        asyncio.run(agent.run())
    assert time.now >= agent.not_after  # it kept trying until the certificate was no longer valid
    assert agent.counters.get("cert_rotation_failures_total") > 5


def test_a_token_file_is_read_for_every_request(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=2)
    token_file = tmp_path / "istio-token"
    token_file.write_text("projected-token-1\n")
    agent = agent_for(tmp_path, time, ca, bootstrap_token=None, token_file=token_file)
    original = ca.__call__

    async def rotating(body, with_certificate):
        answer = await original(body, with_certificate)
        token_file.write_text("projected-token-2\n")  # the kubelet rotated it
        return answer

    agent.issue = rotating
    run(agent)
    assert [(body["token"], cert) for body, cert in ca.requests[:2]] == [
        ("projected-token-1", False), ("projected-token-2", True)]


def test_an_answer_for_another_key_is_refused(tmp_path):
    time = FakeTime()
    ca = ScriptedCA(time, stop_after=1)
    agent = agent_for(tmp_path, time, ca)
    other_csr = certagent.make_csr(ec.generate_private_key(ec.SECP256R1()), SPIFFE)

    async def swapped(body, with_certificate):
        return await ca({**body, "csr": other_csr.decode()}, with_certificate)

    agent.issue = swapped
    with pytest.raises(certagent.CredentialsExhausted):  # the one-time token was spent on it
        asyncio.run(agent.run())
    assert not agent.mesh_tls.ready and "another key" in agent.last_error


def test_rotation_time_and_retry_delay_are_plain_functions():
    assert certagent.rotation_time(100.0, 300.0, 0.5) == 200.0
    assert certagent.rotation_time(100.0, 300.0, 0.25, jitter=0.05) == 260.0
    rng = random.Random(1)
    delays = [certagent.retry_delay(n, rng) for n in range(1, 10)]
    assert all(min(60.0, 2 ** (n - 1)) / 2 <= d <= min(60.0, 2 ** (n - 1)) for n, d in zip(range(1, 10), delays))


def test_rotation_leaves_an_established_connection_alone(tmp_path):
    ca = pki.make_ca()
    server_side = pki.mesh_tls(ca, tmp_path / "server", "bookinfo", "ratings")
    material = pki.mesh_tls(ca, tmp_path / "client", "bookinfo", "books")

    async def scenario():
        seen: list[str] = []

        async def echo(reader, writer):
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            seen.append(f"{x509.load_der_x509_certificate(der).serial_number:x}")
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_side.server)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=material.client)
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"
        old_context = material.client
        chain, key, spiffe = pki.workload(ca, "bookinfo", "books")
        material.install(chain, key, ca.root_pem, spiffe)  # what the agent does on rotation
        assert material.client is not old_context
        writer.write(b"after!")
        assert await reader.readexactly(6) == b"after!"  # the pooled connection never noticed
        fresh_reader, fresh_writer = await asyncio.open_connection("127.0.0.1", port, ssl=material.client)
        fresh_writer.write(b"x")
        await fresh_reader.readexactly(1)
        for w in (writer, fresh_writer):
            w.close()
        server.close()
        return seen, f"{x509.load_pem_x509_certificate(chain).serial_number:x}"

    seen, new_serial = asyncio.run(scenario())
    assert len(seen) == 2 and seen[0] != seen[1] and seen[1] == new_serial
    assert isinstance(material.server, ssl.SSLContext)


def test_a_static_identity_from_files_for_proxies_without_a_ca(tmp_path):
    ca = pki.make_ca()
    chain, key, spiffe = pki.workload(ca, "bench", "client")
    for name, data in (("cert.pem", chain), ("key.pem", key), ("roots.pem", ca.root_pem)):
        (tmp_path / name).write_bytes(data)
    material = tls.MeshTls(tmp_path / "certs")
    certagent.install_static(material, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"),
                             str(tmp_path / "roots.pem"))
    assert material.ready and material.spiffe_id == spiffe == "spiffe://cluster.local/ns/bench/sa/client"
    assert certagent.describe(material, START)["spiffeId"] == spiffe
    assert certagent.describe(None, START) == {"state": "NONE", "chain": []}


@pytest.mark.parametrize(("argv", "message"), [
    (["--control-plane", "127.0.0.1:15012"], "--control-plane needs --ca-file"),
    (["--bootstrap", "v.json", "--tls-cert", "c.pem"], "go together"),
    (["--control-plane", "h:1", "--ca-file", "r", "--tls-cert", "c", "--tls-key", "k", "--tls-roots", "r"],
     "with --bootstrap only"),
    (["--control-plane", "h:1", "--ca-file", "r", "--cert-grace-ratio", "1.5"], "between 0 and 1"),
    ([], "one of --control-plane or --bootstrap is required"),
    (["--bootstrap", "v.json", "--drain-timeout", "-1"], "--drain-timeout must not be negative"),
    (["--bootstrap", "v.json", "--idle-timeout", "-1"], "request timeouts and --max-request-body-bytes"),
])
def test_proxy_flags_that_do_not_fit_together(argv, message, capsys):
    from mesh.proxy import __main__ as entry

    with pytest.raises(SystemExit):
        entry.parse_args(["--id", "x", "--workload", "x", *argv])
    assert message in capsys.readouterr().err



def test_a_proxy_without_identity_never_loads_cryptography():
    """The proxy's entry point imports no `cryptography` until a key or certificate is handled: about 10 MiB
    of RSS a proxy without a workload identity does not need."""
    probe = ("import sys, mesh.proxy.__main__; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
