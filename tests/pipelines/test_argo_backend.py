"""The Argo backend against a loopback HTTP(S) server standing in for the Argo Server.

The stand-in records every request (method, path, headers, JSON body) and answers from a script,
the way the Argo Server's REST API (grpc-gateway) does: objects on success, ``{"code", "message"}``
on errors.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipelines.backends import argo
from pipelines.config import load_config
from tests.support.argo import REPO, TOKEN, FakeArgo, _serve, created, env_for


@pytest.fixture
def fake_argo() -> Iterator[FakeArgo]:
    yield from _serve(FakeArgo())


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA): ``(cert.pem, key.pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "argo-server.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def fake_argo_tls(self_signed: tuple[Path, Path]) -> Iterator[FakeArgo]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*self_signed)
    yield from _serve(FakeArgo(), tls=ctx)


@pytest.fixture(scope="module")
def cfg() -> Any:
    return load_config("sweep")


@pytest.fixture
def manifest() -> dict[str, Any]:
    """The compiled (golden, validated by `make compile`) sweep manifest."""
    return yaml.safe_load((REPO / "pipelines" / "compiled" / "sweep.yaml").read_text())


@pytest.fixture
def cron_manifest() -> dict[str, Any]:
    return yaml.safe_load((REPO / "pipelines" / "compiled" / "sweep-cron.yaml").read_text())


def test_submit_posts_exactly_the_validated_manifest_with_the_bearer_token(
    fake_argo: FakeArgo, cfg: Any, manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_argo.answer("POST", "/api/v1/workflows/sweepyard", 200, created(manifest, "sweep-x7k2p"))
    original = copy.deepcopy(manifest)

    rc = argo.submit(
        manifest,
        cfg=cfg,
        sweep_id=None,
        env=env_for(fake_argo, ARGO_UI_URL="https://argo.example.com"),
    )

    assert rc == 0
    [req] = fake_argo.seen
    assert (req.method, req.path) == ("POST", "/api/v1/workflows/sweepyard")
    assert req.body == {"workflow": original}
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Content-Type"] == "application/json"
    assert manifest == original, "submit must not change the caller's manifest"
    out = capsys.readouterr()
    assert "created workflow sweep-x7k2p in namespace sweepyard" in out.out
    assert "https://argo.example.com/workflows/sweepyard/sweep-x7k2p" in out.out
    assert TOKEN not in out.out + out.err


def test_submit_with_a_sweep_id_sets_the_workflow_argument_and_keeps_a_bearer_prefix(
    fake_argo: FakeArgo, cfg: Any, manifest: dict[str, Any]
) -> None:
    fake_argo.answer("POST", "/api/v1/workflows/team-a", 200, created(manifest, "sweep-abcde"))
    rc = argo.submit(
        manifest,
        cfg=cfg,
        sweep_id="sweep-old42",
        env={
            "ARGO_SERVER": fake_argo.url + "/",
            "ARGO_TOKEN": f"Bearer {TOKEN}\n",
            "ARGO_NAMESPACE": "team-a",
        },
    )
    assert rc == 0
    [req] = fake_argo.seen
    assert req.path == "/api/v1/workflows/team-a"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    expected = copy.deepcopy(manifest)
    expected["metadata"]["namespace"] = "team-a"
    [param] = [p for p in expected["spec"]["arguments"]["parameters"] if p["name"] == "sweep-id"]
    param["value"] = "sweep-old42"
    assert req.body == {"workflow": expected}


def test_unreachable_server_is_a_clear_error(
    cfg: Any, manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = argo.submit(
        manifest,
        cfg=cfg,
        sweep_id=None,
        env={"ARGO_SERVER": f"http://127.0.0.1:{port}", "ARGO_TOKEN": TOKEN},
    )
    assert rc != 0
    err = capsys.readouterr().err
    assert f"the Argo Server at http://127.0.0.1:{port}/ is unreachable" in err
    assert "ARGO_SERVER" in err and "port-forward" in err
    assert TOKEN not in err


@pytest.mark.parametrize(
    ("status", "server_message", "expected"),
    [
        (401, "token not valid", ["401 Unauthorized", "token not valid", "ARGO_TOKEN"]),
        (
            403,
            'workflows.argoproj.io is forbidden: User "system:serviceaccount:x:y" cannot create',
            ["403 Forbidden", "is forbidden", "namespace 'sweepyard'", "sweepyard-submitter"],
        ),
        (
            409,
            'workflows.argoproj.io "sweep-fixed" already exists',
            ["already exists", "409 Conflict", "namespace 'sweepyard'"],
        ),
    ],
)
def test_server_refusals_are_clear_errors(
    fake_argo: FakeArgo,
    cfg: Any,
    manifest: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    status: int,
    server_message: str,
    expected: list[str],
) -> None:
    fake_argo.error("POST", "/api/v1/workflows/sweepyard", status, server_message)
    rc = argo.submit(manifest, cfg=cfg, sweep_id=None, env=env_for(fake_argo))
    assert rc != 0
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create the workflow:")
    assert f"the Argo Server at {fake_argo.url}/" in err
    for fragment in expected:
        assert fragment in err
    assert TOKEN not in err


def test_missing_server_and_bad_settings_name_the_variable(
    cfg: Any, manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert argo.submit(manifest, cfg=cfg, sweep_id=None, env={}) != 0
    assert "ARGO_SERVER is not set" in capsys.readouterr().err
    bad = {"ARGO_SERVER": "https://h:2746", "ARGO_INSECURE_SKIP_VERIFY": "maybe"}
    assert argo.submit(manifest, cfg=cfg, sweep_id=None, env=bad) != 0
    assert "ARGO_INSECURE_SKIP_VERIFY='maybe' is not a boolean" in capsys.readouterr().err
    assert argo.submit(manifest, cfg=cfg, sweep_id=None, env={"ARGO_SERVER": "ftp://h"}) != 0
    assert "ARGO_SERVER='ftp://h' is not an http(s) URL" in capsys.readouterr().err
    missing = {"ARGO_SERVER": "https://h:2746", "ARGO_CA_BUNDLE": "/nonexistent/ca.pem"}
    assert argo.submit(manifest, cfg=cfg, sweep_id=None, env=missing) != 0
    assert "ARGO_CA_BUNDLE='/nonexistent/ca.pem' is not a file" in capsys.readouterr().err


def test_host_without_scheme_means_https() -> None:
    t = argo.target_from_env(load_config("sweep"), {"ARGO_SERVER": "argo.internal:2746"})
    assert t.server == "https://argo.internal:2746/"
    assert t.verify is True
    assert t.namespace == "sweepyard"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default(
    fake_argo_tls: FakeArgo,
    cfg: Any,
    manifest: dict[str, Any],
    self_signed: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = argo.submit(manifest, cfg=cfg, sweep_id=None, env=env_for(fake_argo_tls))
    assert rc != 0
    err = capsys.readouterr().err
    assert "TLS verification of the Argo Server at https://127.0.0.1:" in err
    assert "ARGO_CA_BUNDLE" in err and "ARGO_INSECURE_SKIP_VERIFY=true" in err
    assert fake_argo_tls.seen == [], "nothing may be sent over an unverified connection"

    # the server's CA given explicitly: verified, and the request goes through
    fake_argo_tls.answer("POST", "/api/v1/workflows/sweepyard", 200, created(manifest, "sweep-1"))
    ca = str(self_signed[0])
    rc = argo.submit(
        manifest, cfg=cfg, sweep_id=None, env=env_for(fake_argo_tls, ARGO_CA_BUNDLE=ca)
    )
    assert rc == 0
    assert fake_argo_tls.seen[-1].body == {"workflow": manifest}

    # verification switched off on purpose
    fake_argo_tls.answer("POST", "/api/v1/workflows/sweepyard", 200, created(manifest, "sweep-2"))
    rc = argo.submit(
        manifest,
        cfg=cfg,
        sweep_id=None,
        env=env_for(fake_argo_tls, ARGO_INSECURE_SKIP_VERIFY="true"),
    )
    assert rc == 0
    assert "created workflow sweep-2" in capsys.readouterr().out


def test_make_submit_backend_argo_sends_the_compiled_validated_manifest(
    fake_argo: FakeArgo,
    manifest: dict[str, Any],
    cron_manifest: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m pipelines submit|schedule --backend argo` (what `make` runs), end to end."""
    from pipelines import cli
    from pipelines.validate import validate_document

    for key in ("IMAGE", "ARGO_NAMESPACE", "ARGO_INSECURE_SKIP_VERIFY", "ARGO_CA_BUNDLE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ARGO_SERVER", fake_argo.url)
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    fake_argo.answer("POST", "/api/v1/workflows/sweepyard", 200, created(manifest, "sweep-q1"))
    fake_argo.answer("POST", "/api/v1/cron-workflows/sweepyard", 200, created(cron_manifest, "s"))

    assert (
        cli.main(["submit", "--pipeline", "sweep", "--backend", "argo", "--sweep-id", "s-7"]) == 0
    )
    assert cli.main(["schedule", "--pipeline", "sweep", "--backend", "argo"]) == 0

    submitted, scheduled = fake_argo.seen
    expected = with_sweep = copy.deepcopy(manifest)  # the golden file is what `compile` validated
    [param] = [p for p in with_sweep["spec"]["arguments"]["parameters"] if p["name"] == "sweep-id"]
    param["value"] = "s-7"
    assert submitted.body == {"workflow": expected}
    assert validate_document(submitted.body["workflow"]) == []
    assert scheduled.body == {"cronWorkflow": cron_manifest}
    assert "created workflow sweep-q1" in capsys.readouterr().out
