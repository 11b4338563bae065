"""Would the Kubernetes Python client's config loader check what components/cluster/kubeconfig.py checks?

Asks tests/support/fake_apiserver.py's server, whose CA Go accepts but Python 3.13's X.509 rules refuse, for /version
through `kubernetes` (not a dependency: run it from a scratch venv with `pip install kubernetes==37.0.2 pyyaml`):
`python bench/kubeconfig_client_probe.py` as Python <= 3.12 makes TLS contexts, `... strict` as 3.13 does.
"""

import ssl
import sys
import time
from pathlib import Path

import urllib3.connection
import urllib3.util.ssl_
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.fake_apiserver import fake_api_server

STRICT = sys.argv[1:] == ["strict"]
made = urllib3.util.ssl_.create_urllib3_context


def like_python_3_13(*args: object, **kwargs: object) -> ssl.SSLContext:
    context = made(*args, **kwargs)  # type: ignore[arg-type]
    context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


if STRICT:  # urllib3 >= 2 sets these flags itself on Python 3.13 (urllib3/util/ssl_.py)
    urllib3.connection.create_urllib3_context = like_python_3_13
started = time.perf_counter()
from kubernetes import client, config  # noqa: E402

imported = time.perf_counter() - started
with fake_api_server(lax=True) as server:
    api = config.new_client_from_config_dict(yaml.safe_load(server.kubeconfig()))
    try:
        outcome = client.VersionApi(api).get_code(_request_timeout=5).git_version
    except client.ApiException as error:  # the client asks /version/, which the fake does not serve
        outcome = f"connected, the certificate verified (HTTP {error.status})"
    except Exception as error:
        outcome = "failed: " + " ".join(str(error).split())[-120:]
print(f"{'strict' if STRICT else 'default'}: {outcome}; import kubernetes.client+config {imported:.2f} s")
