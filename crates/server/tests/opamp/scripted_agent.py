"""A scripted OpAMP agent that accepts packages, for the tests. Its messages are built and
its answers read with the protobuf classes that opentelemetry-opamp-client ships
(generated from the official opamp.proto), so the wire encoding is not agentpkg's.

    scripted_agent.py ENDPOINT TOKEN UID_HEX OS_TYPE HOST_ARCH SERVICE [fail]

Sends its full state; when offered packages, downloads each with the offered headers,
checks content_hash and, when the offer carries a signature and AGENT_KEYRING names a
keyring, the signature with gpgv (and that another package's credential is refused), then
reports
Installing and Installed (or InstallFailed with "fail"). Then one more message with the
statuses. Prints one JSON object: what was offered, what the downloads gave, and whether
the last answer offered anything again.

With AGENT_SIGSTORE_IDENTITY and AGENT_SIGSTORE_ISSUER set, it checks a signature as the
Collector's supervisor would: a Sigstore bundle with sigstore-python, offline (`sigstore
verify identity --offline`, the `sigstore` next to this Python); the older cosign form
("<base64 PEM certificate> <base64 signature>") by the certificate's identity and issuer
and the signature over the file with the certificate's key (`cryptography`).
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import requests
from opentelemetry._opamp.proto import anyvalue_pb2, opamp_pb2

CAPS = (
    opamp_pb2.AgentCapabilities_ReportsStatus
    | opamp_pb2.AgentCapabilities_AcceptsPackages
    | opamp_pb2.AgentCapabilities_ReportsPackageStatuses
)


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


class Agent:
    def __init__(self, endpoint, token, uid, os_type, arch, service):
        self.endpoint, self.token, self.uid = endpoint, token, bytes.fromhex(uid)
        self.seq = 0
        self.description = opamp_pb2.AgentDescription(
            identifying_attributes=[kv("service.name", service)],
            non_identifying_attributes=[kv("os.type", os_type), kv("host.arch", arch)],
        )

    def send(self, **fields):
        message = opamp_pb2.AgentToServer(
            instance_uid=self.uid, sequence_num=self.seq, capabilities=CAPS, **fields
        )
        self.seq += 1
        res = requests.post(
            self.endpoint,
            data=message.SerializeToString(),
            headers={
                "Content-Type": "application/x-protobuf",
                "Authorization": "Bearer " + self.token,
            },
            timeout=30,
        )
        res.raise_for_status()
        answer = opamp_pb2.ServerToAgent()
        answer.ParseFromString(res.content)
        return answer


def sigstore_check(signature, body, identity, issuer):
    """Whether the signature verifies, and what the verifier said."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "file")
        open(data, "wb").write(body)
        if signature.lstrip().startswith(b"{"):
            bundle = os.path.join(tmp, "file.sigstore.json")
            open(bundle, "wb").write(signature)
            sigstore = os.path.join(os.path.dirname(sys.executable), "sigstore")
            run = subprocess.run(
                [sigstore, "verify", "identity", "--offline", "--bundle", bundle,
                 "--cert-identity", identity, "--cert-oidc-issuer", issuer, data],
                capture_output=True, text=True,
            )
            return run.returncode == 0, (run.stdout + run.stderr).strip()[-400:]
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_b64, sig_b64 = signature.split(b" ", 1)
    cert = x509.load_pem_x509_certificate(base64.b64decode(cert_b64))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    # Fulcio's OIDC issuer extension (v2, then v1).
    cert_issuer = None
    for oid in ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1"):
        try:
            value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
        except x509.ExtensionNotFound:
            continue
        cert_issuer = value.decode(errors="replace")
        # v2 is DER (a UTF8String): its text follows two header bytes.
        if oid.endswith(".8"):
            cert_issuer = value[2:].decode(errors="replace")
        break
    if identity not in uris or cert_issuer != issuer:
        return False, f"certificate for {uris} from {cert_issuer}"
    try:
        cert.public_key().verify(base64.b64decode(sig_b64), body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False, "signature does not verify"
    return True, "OK"


def main():
    endpoint, token, uid, os_type, arch, service = sys.argv[1:7]
    fail = len(sys.argv) > 7 and sys.argv[7] == "fail"
    agent = Agent(endpoint, token, uid, os_type, arch, service)
    answer = agent.send(agent_description=agent.description)
    report = {"capabilities": answer.capabilities, "offered": {}, "all_hash": None}
    statuses = opamp_pb2.PackageStatuses()
    if answer.HasField("packages_available"):
        available = answer.packages_available
        report["all_hash"] = available.all_packages_hash.hex()
        statuses.server_provided_all_packages_hash = available.all_packages_hash
        for name, package in available.packages.items():
            headers = {h.key: h.value for h in package.file.headers.headers}
            res = requests.get(package.file.download_url, headers=headers, timeout=30)
            body = res.content if res.status_code == 200 else b""
            ok = hashlib.sha256(body).digest() == package.file.content_hash
            # The credential is for this file only: the package list refuses it.
            elsewhere = requests.get(
                endpoint.replace("/v1/opamp", "/api/v1/packages"), headers=headers, timeout=30
            ).status_code
            signature_ok = None
            keyring = os.environ.get("AGENT_KEYRING")
            if package.file.signature and keyring:
                with tempfile.TemporaryDirectory() as tmp:
                    sig, data = os.path.join(tmp, "sig"), os.path.join(tmp, "file")
                    open(sig, "wb").write(package.file.signature)
                    open(data, "wb").write(body)
                    signature_ok = (
                        subprocess.run(
                            ["gpgv", "--keyring", keyring, sig, data], capture_output=True
                        ).returncode
                        == 0
                    )
            sigstore_said = None
            identity = os.environ.get("AGENT_SIGSTORE_IDENTITY")
            if package.file.signature and identity:
                signature_ok, sigstore_said = sigstore_check(
                    package.file.signature, body, identity, os.environ["AGENT_SIGSTORE_ISSUER"]
                )
            report["offered"][name] = {
                "signature_ok": signature_ok,
                "sigstore_said": sigstore_said,
                "signature_bytes": len(package.file.signature),
                "type": package.type,
                "version": package.version,
                "hash": package.hash.hex(),
                "url": package.file.download_url,
                "download_status": res.status_code,
                "bytes": len(body),
                "content_hash_ok": ok,
                "has_signature": len(package.file.signature) > 0,
                "header_keys": sorted(headers),
                "credential_elsewhere": elsewhere,
            }
            status = opamp_pb2.PackageStatus(
                name=name,
                server_offered_version=package.version,
                server_offered_hash=package.hash,
                status=opamp_pb2.PackageStatusEnum_Installing,
            )
            statuses.packages[name].CopyFrom(status)
        agent.send(package_statuses=statuses)
        for name, package in available.packages.items():
            status = statuses.packages[name]
            if fail or not report["offered"][name]["content_hash_ok"]:
                status.status = opamp_pb2.PackageStatusEnum_InstallFailed
                status.error_message = "scripted failure" if fail else "content_hash mismatch"
            else:
                status.status = opamp_pb2.PackageStatusEnum_Installed
                status.agent_has_version = package.version
                status.agent_has_hash = package.hash
    last = agent.send(package_statuses=statuses)
    report["offered_again"] = last.HasField("packages_available")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
