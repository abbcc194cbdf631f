from tests.conftest import *  # noqa
from tests.e2e.support import *
def test_x(server, tmp_path):
    a=server.create_sa(); b=server.create_sa(); c=server.create_sa()
    server.grant(b, f"serviceAccount:{a}"); server.grant(c, f"serviceAccount:{b}")
    t=sa_token(server,a,tmp_path)
    r=mint(server,t,c,delegates=[b]); print("bare", r.status_code, r.text)
    r=mint(server,t,c,delegates=[f"projects/-/serviceAccounts/{b}"]); print("full", r.status_code, r.text)
    r=mint(server,t,"nope-abc@keyless-dev.iam.gserviceaccount.com"); print("missing", r.status_code, r.text)
    r=mint(server,t,c); print("direct", r.status_code, r.text)
    print(requests.get(f"{server.url}/oauth2/v3/certs").text[:300])
    print(requests.get(f"{server.url}/service_accounts/v1/metadata/x509/{c}").text[:100])
    print(server.owner("GET", "/v2/projects/keyless-dev/policies/iam.allowServiceAccountCredentialLifetimeExtension", expect=None))
