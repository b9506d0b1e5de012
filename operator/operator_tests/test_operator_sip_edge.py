"""The media SIP edge in the operator: the TLS Secret's checks (before any rollout), the
Secrets it needs, and each trunk's TrunkRegistered condition from the media pods' reports."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from voicetyped_operator import conditions, naming, trunks
from voicetyped_operator.models.status import Condition
from voicetyped_operator.tls import check_ca_bundle, check_server_pair
from voicetyped_testkit.pki import Issued, make_pki

NOW = dt.datetime.now(dt.UTC)


def _read(issued: Issued) -> tuple[bytes, bytes]:
    return issued.cert.read_bytes(), issued.key.read_bytes()


def _not_yet_valid() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "later.voicetyped.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=2))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem


def test_tls_pair_checks(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    good = check_server_pair(*_read(pki.server), NOW)
    assert good.problem == "" and len(good.digest) == 16
    # The chain after the leaf is accepted and changes the digest (a renewal rolls the pods).
    cert, key = _read(pki.server)
    chained = check_server_pair(cert + pki.ca.cert.read_bytes(), key, NOW)
    assert chained.problem == "" and chained.digest != good.digest

    expired = check_server_pair(*_read(pki.expired), NOW)
    assert expired.problem.startswith("certificate CN=expired.voicetyped.test expired on ")
    assert expired.digest == ""
    later = check_server_pair(*_not_yet_valid(), NOW)
    assert later.problem.startswith("certificate CN=later.voicetyped.test is not valid before ")
    mismatch = check_server_pair(pki.server.cert.read_bytes(), pki.client.key.read_bytes(), NOW)
    assert mismatch.problem == "tls.key is not the key of certificate CN=server.voicetyped.test"
    assert check_server_pair(b"", key, NOW).problem == "tls.crt holds no PEM certificate"
    assert check_server_pair(cert, b"junk", NOW).problem == (
        "tls.key holds no unencrypted PEM private key"
    )
    # Messages never carry key material.
    for checked in (expired, later, mismatch):
        assert b"PRIVATE" not in checked.problem.encode()
    assert check_ca_bundle(pki.ca.cert.read_bytes(), "ca.pem") == ""
    assert check_ca_bundle(b"not a cert", "ca.pem") == "ca.pem holds no PEM certificate"


def _edge(vd_spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(vd_spec)
    spec["integrations"] = []
    spec["media"]["tls"] = {"secretRef": {"name": "sip-tls"}}
    spec["media"]["trunks"] = [
        {
            "name": "carrier-a",
            "registrars": ["sip:reg.carrier.example"],
            "username": "u",
            "passwordSecretRef": {"name": "trunk-a", "key": "password"},
        }
    ]
    return spec


def test_an_expired_certificate_stalls_and_is_not_rolled_out(
    vd_spec: dict[str, Any],
    tmp_path: Path,
    fake_kube: Callable[[dict[str, dict[str, bytes]]], Any],
    reconcile_vd: Callable[[Any, dict[str, Any]], Any],
) -> None:
    pki = make_pki(tmp_path / "pki")
    cert, key = _read(pki.expired)
    kube = fake_kube(
        {"sip-tls": {"tls.crt": cert, "tls.key": key}, "trunk-a": {"password": b"hunter2"}}
    )
    error, posted = reconcile_vd(kube, _edge(vd_spec))
    assert isinstance(error, kopf.TemporaryError)  # recovers by itself when the Secret is fixed
    assert kube.applied == []  # nothing rolled out
    stalled = kube.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidTLSSecret")
    assert stalled["message"].startswith(
        "Secret shop/sip-tls (spec.media.tls.secretRef): certificate "
        "CN=expired.voicetyped.test expired on "
    )
    assert kube.condition("Ready")["status"] == "False"
    assert posted[0][:2] == ("Warning", "InvalidTLSSecret")
    # A renewed Secret: rendered, the certificate's hash on the media pod template.
    kube.secrets["sip-tls"] = dict(zip(("tls.crt", "tls.key"), _read(pki.server), strict=True))
    error, _ = reconcile_vd(kube, _edge(vd_spec))
    assert error is None
    (media,) = [
        o for o in kube.applied
        if type(o).__name__ == "Deployment" and o.metadata.name == "order-status-media"
    ]  # fmt: skip
    digest = check_server_pair(*_read(pki.server), NOW).digest
    assert media.spec.template.metadata.annotations[naming.TLS_HASH] == digest
    assert "hunter2" not in str([o.to_dict() for o in kube.applied])
    assert "hunter2" not in str(kube.statuses)


@pytest.mark.parametrize(
    ("secrets", "reason", "says"),
    [
        ({"trunk-a": {"password": b"x"}}, "SecretNotFound",
         "Secret shop/sip-tls (used by spec.media.tls.secretRef) not found"),
        ({"sip-tls": {"tls.crt": b"c"}, "trunk-a": {"password": b"x"}}, "SecretKeyNotFound",
         "Secret shop/sip-tls has no key 'tls.key' (used by spec.media.tls.secretRef)"),
        ({"sip-tls": {"tls.crt": b"c", "tls.key": b"k"}}, "SecretNotFound",
         "Secret shop/trunk-a (used by spec.media.trunks[0].passwordSecretRef) not found"),
    ],
)  # fmt: skip
def test_a_missing_sip_edge_secret_is_named(
    vd_spec: dict[str, Any], stalled_by: StalledBy, secrets: Secrets, reason: str, says: str
) -> None:
    stalled, _ = stalled_by(secrets, _edge(vd_spec))
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", reason, says)


Secrets = dict[str, dict[str, bytes]]
StalledBy = Callable[[Secrets, dict[str, Any]], tuple[dict[str, Any], list[Any]]]


A_OK = {"name": "carrier-a", "registered": True, "registrar": "sip:reg1.a", "last_error": None}
B_DOWN = {
    "name": "carrier-b",
    "registered": False,
    "registrar": "sip:reg2.b",
    "last_error": "no answer from sip:reg2.b (timeout)",
}


def test_trunk_reports_are_read_in_either_form() -> None:
    wrapped = trunks.parse_report({"trunks": [A_OK, B_DOWN]})
    assert wrapped == trunks.parse_report([A_OK, B_DOWN])
    assert wrapped == [
        trunks.TrunkReport("carrier-a", True, "sip:reg1.a", ""),
        trunks.TrunkReport("carrier-b", False, "sip:reg2.b", "no answer from sip:reg2.b (timeout)"),
    ]
    for bad in ({"error": "x"}, [{"name": "a"}], [{"name": 1, "registered": True}], "text"):
        assert trunks.parse_report(bad) is None


def _by_type(conds: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conds}


def test_trunk_conditions_from_the_pods_reports() -> None:
    names = ("carrier-a", "carrier-b", "carrier-c")
    reports = {
        "media-1": trunks.parse_report([A_OK, B_DOWN]),
        "media-2": trunks.parse_report([A_OK, {**B_DOWN, "registered": True}]),
        "media-3": None,  # did not answer
    }
    got = _by_type(trunks.trunk_conditions(names, reports, [], 4))
    a, b, c = (got[f"TrunkRegistered-{n}"] for n in names)
    assert (a.status, a.reason, a.observed_generation) == ("True", "Registered", 4)
    assert a.message == "trunk carrier-a registered with sip:reg1.a on 2/2 media pods"
    assert (b.status, b.reason) == ("False", "NotRegistered")
    assert b.message == (
        "trunk carrier-b not registered on 1/2 media pods (pod media-1: registrar sip:reg2.b: "
        "no answer from sip:reg2.b (timeout))"
    )
    assert (c.status, c.reason) == ("Unknown", "NoReport")  # no pod knows it (yet)
    # Nothing reported at all: every trunk Unknown.
    nothing = trunks.trunk_conditions(names, {"media-1": None}, [], 4)
    assert {x.status for x in nothing} == {"Unknown"}


def test_trunk_conditions_leave_the_others_alone() -> None:
    ready = conditions.merge([], 4, conditions.ready("all 5 components available"))
    initial = ready + trunks.sync(ready, ("carrier-a",), 4)
    assert _by_type(initial)["TrunkRegistered-carrier-a"].status == "Unknown"
    down = trunks.trunk_conditions(
        ("carrier-a",), {"media-1": trunks.parse_report([{**B_DOWN, "name": "carrier-a"}])},
        initial, 4,
    )  # fmt: skip
    after = trunks.replace(initial, down)
    assert [c for c in after if not c.type.startswith("TrunkRegistered-")] == ready
    assert _by_type(after)["TrunkRegistered-carrier-a"].status == "False"
    # A reconcile keeps reported trunk conditions and drops a removed trunk's.
    assert trunks.sync(after, ("carrier-a",), 5) == down
    assert trunks.sync(after, ("carrier-z",), 5)[0].type == "TrunkRegistered-carrier-z"
    assert [c.type for c in trunks.sync(after, (), 5)] == []
    # Every condition type fits the CRD (16-character prefix + a 63-character trunk name).
    Condition.model_validate(
        conditions.condition(
            [], 1, trunks.condition_type("a" * 63), conditions.State("True", "R")
        ).model_dump()
    )


def test_a_reconcile_reports_trunks_unknown_until_the_pods_do(
    vd_spec: dict[str, Any],
    tmp_path: Path,
    fake_kube: Callable[[dict[str, dict[str, bytes]]], Any],
    reconcile_vd: Callable[[Any, dict[str, Any]], Any],
) -> None:
    pki = make_pki(tmp_path / "pki")
    kube = fake_kube(
        {"sip-tls": dict(zip(("tls.crt", "tls.key"), _read(pki.server), strict=True)),
         "trunk-a": {"password": b"hunter2"}}
    )  # fmt: skip
    error, _ = reconcile_vd(kube, _edge(vd_spec))
    assert error is None
    trunk = kube.condition("TrunkRegistered-carrier-a")
    assert (trunk["status"], trunk["reason"]) == ("Unknown", "NoReport")
    assert kube.condition("Stalled")["status"] == "False"
