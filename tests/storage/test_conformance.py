"""The storage protocol's contract, run against every backend."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from keyless.storage.base import (
    AuthorizationCode,
    Conflict,
    KeyRecord,
    OrgPolicy,
    Project,
    ServiceAccount,
    SignInGrant,
    Store,
    User,
    WorkloadPool,
    WorkloadProvider,
)
from keyless.storage.cache import CachingStore
from tests.storage.conftest import Runner


def _sa(uid: str = "100000000000000000001", email: str = "a-sa@p.iam.gserviceaccount.com") -> ServiceAccount:
    return ServiceAccount(unique_id=uid, project_id="proj-one", account_id=email.split("@")[0], email=email,
                          created_at=1.0)


def _key(key_id: str, owner: str = "100000000000000000001", created: float = 1.0, key_type: str = "SYSTEM_MANAGED",
         **kw: object) -> KeyRecord:
    return KeyRecord(key_id=key_id, owner=owner, key_type=key_type, key_origin="GOOGLE_PROVIDED",
                     certificate_pem=b"-----CERT-----", private_key_enc=b"\x00secret", valid_after=0.0,
                     valid_before=10.0**10, created_at=created, **kw)  # type: ignore[arg-type]


def test_meta_init_keeps_first_value(db: Runner) -> None:
    assert db(db.store.get_meta("k")) is None
    assert db(db.store.init_meta("k", "one")) == "one"
    assert db(db.store.init_meta("k", "two")) == "one"
    assert db(db.store.get_meta("k")) == "one"
    db(db.store.set_meta("k", "three"))
    assert db(db.store.get_meta("k")) == "three"


def test_projects_by_id_or_number(db: Runner) -> None:
    db(db.store.create_project(Project("proj-one", "123456789012", 1.0)))
    assert db(db.store.get_project("proj-one")).number == "123456789012"
    assert db(db.store.get_project("123456789012")).project_id == "proj-one"
    with pytest.raises(Conflict):
        db(db.store.create_project(Project("proj-one", "999", 1.0)))
    assert [p.project_id for p in db(db.store.list_projects())] == ["proj-one"]


def test_service_account_lifecycle(db: Runner) -> None:
    sa = _sa()
    db(db.store.create_service_account(sa))
    assert db(db.store.find_service_account(sa.email)) == sa
    assert db(db.store.find_service_account(sa.email.upper())) == sa
    with pytest.raises(Conflict):
        db(db.store.create_service_account(_sa(uid="100000000000000000002")))
    updated = db(db.store.update_service_account(sa.unique_id, display_name="X", disabled=True))
    assert updated.display_name == "X" and updated.disabled
    db(db.store.update_service_account(sa.unique_id, deleted_at=5.0))
    assert db(db.store.find_service_account(sa.email)) is None
    assert db(db.store.get_service_account(sa.unique_id)).deleted_at == 5.0
    # The email is free again once the account is deleted; undeleting the old one then conflicts.
    db(db.store.create_service_account(_sa(uid="100000000000000000002")))
    with pytest.raises(Conflict):
        db(db.store.update_service_account(sa.unique_id, deleted_at=None))
    with pytest.raises(ValueError):
        db(db.store.update_service_account(sa.unique_id, email="x@y"))


def test_list_service_accounts_pages_by_email(db: Runner) -> None:
    for i in range(5):
        db(db.store.create_service_account(_sa(uid=f"10000000000000000000{i}", email=f"sa-{i}@p.iam.gserviceaccount.com")))
    first = db(db.store.list_service_accounts("proj-one", after_email="", limit=2))
    assert [a.email[:4] for a in first] == ["sa-0", "sa-1"]
    rest = db(db.store.list_service_accounts("proj-one", after_email=first[-1].email, limit=10))
    assert [a.email[:4] for a in rest] == ["sa-2", "sa-3", "sa-4"]
    assert db(db.store.list_service_accounts("other", after_email="", limit=10)) == []


def test_keys(db: Runner) -> None:
    db(db.store.create_key(_key("b" * 40, created=2.0)))
    db(db.store.create_key(_key("a" * 40, created=1.0, retired_at=2.0)))
    db(db.store.create_key(_key("c" * 40, owner="other")))
    assert [k.key_id[0] for k in db(db.store.list_keys("100000000000000000001"))] == ["a", "b"]
    got = db(db.store.get_key("a" * 40))
    assert got.private_key_enc == b"\x00secret" and got.certificate_pem == b"-----CERT-----"
    assert db(db.store.update_key("a" * 40, disabled=True, retired_at=3.0)).disabled
    db(db.store.update_key("a" * 40, deleted_at=4.0))
    assert db(db.store.get_key("a" * 40)) is None
    assert [k.key_id[0] for k in db(db.store.list_keys("100000000000000000001"))] == ["b"]


def test_one_current_system_key_per_owner(db: Runner) -> None:
    db(db.store.create_key(_key("a" * 40)))
    with pytest.raises(Conflict):
        db(db.store.create_key(_key("b" * 40)))
    # A user-managed key is not a system key in force.
    db(db.store.create_key(_key("u" * 40, key_type="USER_MANAGED")))


def test_rotate_system_key_happens_once(db: Runner) -> None:
    owner = "100000000000000000001"
    assert db(db.store.rotate_system_key(owner, [], _key("a" * 40, created=1.0)))
    # Two rotations that both saw key a: the first wins, the second is told to read again.
    assert db(db.store.rotate_system_key(owner, ["a" * 40], _key("b" * 40, created=2.0)))
    assert not db(db.store.rotate_system_key(owner, ["a" * 40], _key("c" * 40, created=3.0)))
    # Two first keys for an owner with none: one wins.
    assert not db(db.store.rotate_system_key(owner, [], _key("d" * 40, created=3.0)))
    keys = {k.key_id[0]: k for k in db(db.store.list_keys(owner))}
    assert sorted(keys) == ["a", "b"]
    assert keys["a"].retired_at == 2.0 and keys["b"].retired_at is None


def test_policy_compare_and_swap(db: Runner) -> None:
    assert db(db.store.get_policy("projects/p")) is None
    assert db(db.store.put_policy("projects/p", {"bindings": []}, "e1", expected_etag="ACAB"))
    assert not db(db.store.put_policy("projects/p", {"bindings": [1]}, "e2", expected_etag="ACAB"))
    assert not db(db.store.put_policy("projects/p", {"bindings": [2]}, "e2", expected_etag="stale"))
    assert db(db.store.get_policy("projects/p")).etag == "e1"
    assert db(db.store.put_policy("projects/p", {"bindings": [3]}, "e3", expected_etag="e1"))
    assert db(db.store.put_policy("projects/p", {"bindings": [4]}, "e4", expected_etag=None))
    stored = db(db.store.get_policy("projects/p"))
    assert stored.body == {"bindings": [4]} and stored.etag == "e4"


def test_policies_mentioning_is_literal(db: Runner) -> None:
    db(db.store.put_policy("a", {"m": ["serviceAccount:x_y@p"]}, "e", expected_etag=None))
    db(db.store.put_policy("b", {"m": ["serviceAccount:xzy@p"]}, "e", expected_etag=None))
    assert [p.resource for p in db(db.store.policies_mentioning("serviceAccount:x_y@p"))] == ["a"]
    assert [p.resource for p in db(db.store.policies_mentioning("%"))] == []


def test_policy_etags_mentioning_pair_policies_mentioning(db: Runner) -> None:
    for name, etag in (("c", "e1"), ("a", "e2"), ("b", "e3")):
        db(db.store.put_policy(name, {"bindings": [name]}, etag, expected_etag=None))
    db(db.store.put_policy("d", {"etag": "x"}, "e4", expected_etag=None))
    assert db(db.store.put_policy("a", {"bindings": ["a2"]}, "e5", expected_etag="e2"))
    pairs = db(db.store.policy_etags_mentioning('"bindings"'))
    assert pairs == [(p.resource, p.etag) for p in db(db.store.policies_mentioning('"bindings"'))]
    assert sorted(pairs) == [("a", "e5"), ("b", "e3"), ("c", "e1")]
    assert db(db.store.policy_etags_mentioning("%")) == []


def test_users(db: Runner) -> None:
    user = User("1", "alice@example.com", "cid", "sh", "rh", 1.0)
    db(db.store.create_user(user))
    assert db(db.store.find_user("ALICE@example.com")) == user
    assert db(db.store.find_user_by_refresh_hash("rh")) == user
    assert db(db.store.get_user("1")) == user
    with pytest.raises(Conflict):
        db(db.store.create_user(User("2", "alice@example.com", "cid2", "sh", "rh2", 1.0)))
    assert [u.email for u in db(db.store.list_users())] == ["alice@example.com"]


def test_user_updates_and_deletion(db: Runner) -> None:
    db(db.store.create_user(User("1", "alice@example.com", "cid", "sh", "rh", 1.0)))
    db(db.store.create_user(User("2", "bob@example.com", "cid2", "sh2", "rh2", 1.0)))
    changed = db(db.store.update_user("1", client_secret_hash="sh-new", refresh_token_hash="rh-new", disabled=True))
    assert changed == User("1", "alice@example.com", "cid", "sh-new", "rh-new", 1.0, disabled=True)
    assert db(db.store.get_user("1")) == changed
    assert db(db.store.find_user_by_refresh_hash("rh")) is None
    assert db(db.store.find_user_by_refresh_hash("rh-new")) == changed
    assert db(db.store.update_user("1", disabled=False)).disabled is False
    with pytest.raises(Conflict):
        db(db.store.update_user("1", refresh_token_hash="rh2"))
    with pytest.raises(ValueError):
        db(db.store.update_user("1", email="mallory@example.com"))
    assert db(db.store.update_user("9", disabled=True)) is None
    assert db(db.store.delete_user("1")) is True
    assert db(db.store.delete_user("1")) is False
    assert db(db.store.get_user("1")) is None and db(db.store.find_user("alice@example.com")) is None
    assert db(db.store.find_user_by_refresh_hash("rh-new")) is None
    assert [u.email for u in db(db.store.list_users())] == ["bob@example.com"]


def test_user_password_hash(db: Runner) -> None:
    db(db.store.create_user(User("1", "alice@example.com", "cid", "sh", "rh", 1.0)))
    assert db(db.store.get_user("1")).password_hash == ""
    changed = db(db.store.update_user("1", password_hash="scrypt$x"))
    assert changed.password_hash == "scrypt$x"
    assert db(db.store.find_user("alice@example.com")).password_hash == "scrypt$x"


def _code(code_hash: str, user_id: str = "1", created: float = 100.0, **kw: object) -> AuthorizationCode:
    return AuthorizationCode(code_hash=code_hash, client_id="client", redirect_uri="http://localhost:8085/",
                             code_challenge="c" * 43, user_id=user_id, scopes=("openid", "email"),
                             created_at=created, expires_at=created + 300, **kw)  # type: ignore[arg-type]


def test_authorization_codes_are_taken_once(db: Runner) -> None:
    code = _code("h1", offline=True, nonce="n-1")
    db(db.store.create_authorization_code(code))
    with pytest.raises(Conflict):
        db(db.store.create_authorization_code(code))
    # Each take counts one presentation; the code stays, with what its first exchange recorded, for a second
    # presentation to find (RFC 6749 §4.1.2: it revokes that).
    assert db(db.store.take_authorization_code("h1")) == replace(code, redemptions=1)
    assert db(db.store.record_code_exchange("h1", "grant-1", "token-1"))
    assert db(db.store.take_authorization_code("h1")) == replace(code, redemptions=2, grant_id="grant-1",
                                                                 token_hash="token-1")
    assert not db(db.store.record_code_exchange("h1", "grant-2", "token-2"))
    # Presented again before its first exchange recorded anything: that exchange records nothing.
    db(db.store.create_authorization_code(_code("h2")))
    assert db(db.store.take_authorization_code("h2")).redemptions == 1
    assert db(db.store.take_authorization_code("h2")) == replace(_code("h2"), redemptions=2)
    assert not db(db.store.record_code_exchange("h2", "grant-3", "token-3"))
    assert db(db.store.take_authorization_code("h2")) == replace(_code("h2"), redemptions=3)
    assert db(db.store.take_authorization_code("unknown")) is None
    assert not db(db.store.record_code_exchange("unknown", "grant-4", "token-4"))
    # A code that expired before a new one was created is dropped then; one still valid stays.
    db(db.store.create_authorization_code(_code("old", created=100.0)))
    db(db.store.create_authorization_code(_code("recent", created=300.0)))
    db(db.store.create_authorization_code(_code("new", created=500.0)))
    assert db(db.store.take_authorization_code("old")) is None
    assert db(db.store.take_authorization_code("recent")) is not None
    # Deleting a user deletes its codes.
    db(db.store.create_user(User("1", "alice@example.com", "cid", "sh", "rh", 1.0)))
    db(db.store.create_authorization_code(_code("mine", created=500.0)))
    db(db.store.delete_user("1"))
    assert db(db.store.take_authorization_code("mine")) is None


def _take_all(store: Store, hashes: list[str]) -> list[bool]:
    async def run() -> list[bool]:
        await store.open()
        try:
            return [(await store.take_authorization_code(h)).redemptions == 1 for h in hashes]  # type: ignore[union-attr]
        finally:
            await store.close()

    return asyncio.run(run())


def test_each_code_is_taken_by_one_of_two_stores(db: Runner) -> None:
    hashes = [f"code-{i}" for i in range(40)]
    for h in hashes:
        db(db.store.create_authorization_code(_code(h)))
    stores = [db.twin(), db.twin()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_take_all, stores, [hashes, hashes]))
    # Every code went first to exactly one of the two.
    assert [a + b for a, b in zip(*results, strict=True)] == [1] * len(hashes)


def test_sign_in_attempts_are_counted_for_every_store_on_the_database(db: Runner) -> None:
    other = db.twin()  # another replica's store on the same database
    db(other.open())
    try:
        def take(store: Store, subject: str, now: float) -> bool:
            return bool(db(store.take_sign_in_attempt(subject, now, burst=3.0, per_second=0.1)))

        def refund(store: Store, subject: str, now: float) -> None:
            db(store.refund_sign_in_attempt(subject, now, burst=3.0, per_second=0.1))

        # Three in a row for alice, whichever store counts them; bob's are his own.
        assert [take(db.store, "alice", 100.0), take(other, "alice", 100.0), take(db.store, "alice", 100.0)] == [
            True, True, True]
        assert not take(other, "alice", 100.0) and not take(db.store, "alice", 100.0)
        assert take(other, "bob", 100.0)
        # A refund (the password was right) gives one back, on every store.
        refund(other, "alice", 100.0)
        assert take(db.store, "alice", 100.0) and not take(other, "alice", 100.0)
        # The bucket refills at per_second: one more ten seconds later; a store whose clock is behind gets none.
        assert take(other, "alice", 110.0)
        assert not take(db.store, "alice", 105.0) and not take(db.store, "alice", 110.0)
        # Refunds never fill a bucket beyond its burst.
        for _ in range(5):
            refund(db.store, "bob", 101.0)
        assert [take(other, "bob", 101.0) for _ in range(4)] == [True, True, True, False]
        # Untouched for burst / per_second seconds, a bucket is full again (and forgotten): three more.
        assert [take(other, "alice", 141.0) for _ in range(4)] == [True, True, True, False]
    finally:
        db(other.close())


def test_sign_in_grants(db: Runner) -> None:
    grant = SignInGrant("g1", "1", "client", ("openid", "https://www.googleapis.com/auth/cloud-platform"), "rh-1", 5.0)
    db(db.store.create_sign_in_grant(grant))
    with pytest.raises(Conflict):
        db(db.store.create_sign_in_grant(SignInGrant("g2", "1", "client", ("openid",), "rh-1", 6.0)))
    db(db.store.create_sign_in_grant(SignInGrant("g3", "1", "other", ("openid",), "rh-3", 7.0)))
    db(db.store.create_sign_in_grant(SignInGrant("g4", "2", "client", ("openid",), "rh-4", 8.0)))
    assert db(db.store.get_sign_in_grant("g1")) == grant
    assert db(db.store.find_sign_in_grant("rh-1")) == grant
    assert db(db.store.find_sign_in_grant("nope")) is None
    assert db(db.store.delete_sign_in_grant("g1")) is True
    assert db(db.store.delete_sign_in_grant("g1")) is False
    assert db(db.store.get_sign_in_grant("g1")) is None and db(db.store.find_sign_in_grant("rh-1")) is None
    assert db(db.store.delete_sign_in_grants("1")) == 1
    assert db(db.store.get_sign_in_grant("g3")) is None
    # Deleting a user deletes its grants.
    db(db.store.create_user(User("2", "bob@example.com", "cid", "sh", "rh", 1.0)))
    assert db(db.store.get_sign_in_grant("g4")) is not None
    db(db.store.delete_user("2"))
    assert db(db.store.get_sign_in_grant("g4")) is None


def test_groups(db: Runner) -> None:
    assert db(db.store.get_group("g@x")) is None
    db(db.store.set_group("g@x", ["user:a@x", "user:b@x"]))
    db(db.store.set_group("h@x", ["user:a@x"]))
    assert db(db.store.get_group("g@x")) == ["user:a@x", "user:b@x"]
    assert sorted(db(db.store.groups_of("user:a@x"))) == ["g@x", "h@x"]
    db(db.store.set_group("g@x", ["user:b@x"]))
    assert db(db.store.groups_of("user:a@x")) == ["h@x"]
    db(db.store.set_group("empty@x", []))
    assert db(db.store.list_groups()) == {"empty@x": [], "g@x": ["user:b@x"], "h@x": ["user:a@x"]}
    assert db(db.store.delete_group("h@x"))
    assert not db(db.store.delete_group("h@x"))
    assert db(db.store.groups_of("user:a@x")) == []


def test_org_policies(db: Runner) -> None:
    policy = OrgPolicy("projects/p", "constraints/c", {"rules": [{"allowAll": True}]}, "e1", 1.0)
    db(db.store.put_org_policy(policy))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) == policy
    db(db.store.put_org_policy(OrgPolicy("projects/p", "constraints/c", {"rules": []}, "e2", 2.0)))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")).etag == "e2"
    assert len(db(db.store.list_org_policies("projects/p"))) == 1
    assert db(db.store.delete_org_policy("projects/p", "constraints/c"))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) is None


def test_org_policy_compare_and_swap(db: Runner) -> None:
    first = OrgPolicy("projects/p", "constraints/c", {"rules": [{"allowAll": True}]}, "e1", 1.0)
    # An expected etag of a policy that does not exist matches nothing.
    assert not db(db.store.put_org_policy(first, expected_etag="e0"))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) is None
    assert db(db.store.put_org_policy(first))
    second = OrgPolicy("projects/p", "constraints/c", {"rules": [{"denyAll": True}]}, "e2", 2.0)
    assert not db(db.store.put_org_policy(second, expected_etag="stale"))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) == first
    assert db(db.store.put_org_policy(second, expected_etag="e1"))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) == second
    assert not db(db.store.put_org_policy(first, expected_etag="e1"))  # e1 is stale now
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) == second


def test_org_policy_created_only_if_absent(db: Runner) -> None:
    # "ACAB" (the etag Google answers for a policy never set) as the expected etag: create, unless one exists.
    first = OrgPolicy("projects/p", "constraints/c", {"rules": [{"allowAll": True}]}, "e1", 1.0)
    assert db(db.store.put_org_policy(first, expected_etag="ACAB"))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) == first
    second = OrgPolicy("projects/p", "constraints/c", {"rules": [{"denyAll": True}]}, "e2", 2.0)
    assert not db(db.store.put_org_policy(second, expected_etag="ACAB"))
    assert db(db.store.get_org_policy("projects/p", "constraints/c")) == first


def test_enabled_services(db: Runner) -> None:
    assert db(db.store.list_enabled_services("p-one")) == []
    db(db.store.enable_services("p-one", ["storage.googleapis.com", "iam.googleapis.com", "storage-api.googleapis.com"]))
    db(db.store.enable_services("p-one", ["iam.googleapis.com"]))  # enabled already: stays so, once
    db(db.store.enable_services("p-two", ["iamcredentials.googleapis.com"]))
    db(db.store.enable_services("p-two", []))
    assert db(db.store.list_enabled_services("p-one")) == [
        "iam.googleapis.com", "storage-api.googleapis.com", "storage.googleapis.com"]
    assert db(db.store.disable_service("p-one", "iam.googleapis.com"))
    assert not db(db.store.disable_service("p-one", "iam.googleapis.com"))
    assert not db(db.store.disable_service("p-one", "iamcredentials.googleapis.com"))  # only p-two has it
    assert db(db.store.list_enabled_services("p-one")) == ["storage-api.googleapis.com", "storage.googleapis.com"]
    assert db(db.store.list_enabled_services("p-two")) == ["iamcredentials.googleapis.com"]


def test_revocation(db: Runner) -> None:
    assert not db(db.store.is_token_revoked("h"))
    db(db.store.revoke_token("h", 10.0))
    db(db.store.revoke_token("h", 10.0))
    assert db(db.store.is_token_revoked("h"))


def test_audit_append_and_query(db: Runner) -> None:
    from keyless.storage.base import AuditEntry, AuditQuery

    def entry(i: int, principal: str, resource: str, denied: bool) -> AuditEntry:
        return AuditEntry(f"id{i}", float(i), "GenerateAccessToken", principal, resource, denied, {"n": i})

    db(db.store.append_audit([entry(1, "a@x", "projects/-/serviceAccounts/1", False)]))
    db(db.store.append_audit([entry(2, "b@x", "projects/-/serviceAccounts/1/keys/k", True),
                              entry(3, "a@x", "projects/-/serviceAccounts/10", False)]))
    all_ = db(db.store.query_audit(AuditQuery()))
    assert [e.body["n"] for e in all_] == [1, 2, 3]
    assert all_[0].seq < all_[1].seq < all_[2].seq
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery(principal="a@x")))] == [1, 3]
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery(resource="projects/-/serviceAccounts/1")))] == [1, 2]
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery(denied=True)))] == [2]
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery(since=2.0)))] == [2, 3]
    page = db(db.store.query_audit(AuditQuery(limit=1)))
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery(after_seq=page[0].seq)))] == [2, 3]


def test_audit_newest_first_pages_backwards(db: Runner) -> None:
    from keyless.storage.base import AuditEntry, AuditQuery

    db(db.store.append_audit([AuditEntry(f"id{i}", float(i), "SignBlob", "a@x" if i % 2 else "b@x", "r",
                                         i % 3 == 0, {"n": i}) for i in range(10)]))
    newest = db(db.store.query_audit(AuditQuery(newest_first=True, limit=4)))
    assert [e.body["n"] for e in newest] == [9, 8, 7, 6]
    after = db(db.store.query_audit(AuditQuery(newest_first=True, before_seq=newest[-1].seq, limit=4)))
    assert [e.body["n"] for e in after] == [5, 4, 3, 2]
    assert [e.body["n"] for e in db(db.store.query_audit(
        AuditQuery(newest_first=True, principal="a@x", since=4.0)))] == [9, 7, 5]
    assert [e.body["n"] for e in db(db.store.query_audit(
        AuditQuery(newest_first=True, denied=True, before_seq=newest[0].seq)))] == [6, 3, 0]
    # before_seq bounds the oldest-first order too: the two bounds make a window.
    assert [e.body["n"] for e in db(db.store.query_audit(
        AuditQuery(after_seq=after[-1].seq, before_seq=newest[-1].seq)))] == [3, 4, 5]


def test_audit_prune_deletes_the_oldest_in_batches_and_keeps_the_newest(db: Runner) -> None:
    from keyless.storage.base import AuditEntry, AuditQuery

    db(db.store.append_audit([AuditEntry(f"id{i}", float(i), "SignBlob", "a@x", "r", False, {"n": i})
                              for i in range(10)]))
    assert db(db.store.prune_audit(0.0, 100)) == 0
    assert db(db.store.prune_audit(6.0, 4)) == 4  # a batch at most
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery()))] == list(range(4, 10))
    assert db(db.store.prune_audit(6.0, 100)) == 2
    assert [e.body["n"] for e in db(db.store.query_audit(AuditQuery()))] == list(range(6, 10))
    # Everything is old: all but the newest entry go, and seq goes on from there.
    assert db(db.store.prune_audit(100.0, 100)) == 3
    kept = db(db.store.query_audit(AuditQuery()))
    assert [e.body["n"] for e in kept] == [9]
    db(db.store.append_audit([AuditEntry("id10", 10.0, "SignBlob", "a@x", "r", False, {"n": 10})]))
    after = db(db.store.query_audit(AuditQuery(after_seq=kept[0].seq)))
    assert [e.body["n"] for e in after] == [10]


def test_audit_time_bound_over_many_entries_stored_nearly_in_order(db: Runner) -> None:
    """Concurrent writers store entries a little out of time order; a ``since`` bound is still exact."""
    import random

    from keyless.storage.base import AuditEntry, AuditQuery

    rng = random.Random(5)
    stamps = [1000.0 + i + rng.uniform(-20.0, 20.0) for i in range(600)]
    for start in range(0, len(stamps), 50):
        db(db.store.append_audit([AuditEntry(f"id{i}", stamps[i], "SignBlob", "a@x", "r", i % 7 == 0, {"n": i})
                                  for i in range(start, start + 50)]))
    for since in (0.0, 999.5, 1010.0, 1234.5, 1400.0, 1598.0, 1700.0):
        expected = [i for i, stamp in enumerate(stamps) if stamp >= since]
        got = db(db.store.query_audit(AuditQuery(since=since, limit=1000)))
        assert [e.body["n"] for e in got] == expected, since
        denied = db(db.store.query_audit(AuditQuery(since=since, denied=True, limit=1000)))
        assert [e.body["n"] for e in denied] == [i for i in expected if i % 7 == 0], since


def _create_within_quota(store: Store, keys: list[KeyRecord], limit: int) -> list[bool]:
    """In a thread of its own (another process's), on ``store``: every create at once."""

    async def run() -> list[bool]:
        await store.open()
        try:
            return list(await asyncio.gather(*(store.create_key_within_quota(k, limit) for k in keys)))
        finally:
            await store.close()

    return asyncio.run(run())


def test_key_quota_holds_under_concurrent_creates_from_two_stores(db: Runner) -> None:
    owner = "100000000000000000001"
    db(db.store.create_key(_key("s" * 40, owner=owner)))  # a system-managed key does not count
    batches = [[_key(f"{i:02d}{side}" + "0" * 37, owner=owner, created=float(i), key_type="USER_MANAGED")
                for i in range(8)] for side in "ab"]
    stores = [db.twin(), db.twin()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_create_within_quota, stores, batches, [10, 10]))
    assert sum(ok for batch in results for ok in batch) == 10, results
    user_keys = [k for k in db(db.store.list_keys(owner)) if k.key_type == "USER_MANAGED"]
    assert len(user_keys) == 10
    assert not db(db.store.create_key_within_quota(_key("x" * 40, owner=owner, key_type="USER_MANAGED"), 10))
    # A deleted key frees its place; another owner and another key type have quotas of their own.
    db(db.store.update_key(user_keys[0].key_id, deleted_at=5.0))
    assert db(db.store.create_key_within_quota(_key("y" * 40, owner=owner, key_type="USER_MANAGED"), 10))
    assert not db(db.store.create_key_within_quota(_key("z" * 40, owner=owner, key_type="USER_MANAGED"), 10))
    assert db(db.store.create_key_within_quota(_key("w" * 40, owner="100000000000000000002",
                                                    key_type="USER_MANAGED"), 10))
    assert db(db.store.create_key_within_quota(_key("v" * 40, owner=owner, retired_at=1.0), 10))  # 2nd system key
    assert len(db(db.store.list_keys(owner))) == 12


def _moves_past(db: Runner, store: Store, before: int, within: float = 1.0) -> int:
    """``store``'s generation once it is past ``before``: at once on SQLite (a shared memory-mapped counter),
    within the propagation bound on PostgreSQL (``notify.MAX_STALENESS``), which may answer from memory."""
    deadline = time.monotonic() + within
    while (value := db(store.generation())) <= before:
        assert time.monotonic() < deadline, f"the generation moved within {within} s"
        db(asyncio.sleep(0.002))  # the store's loop runs only here: its notifications come in meanwhile
    return int(value)


def test_every_change_bumps_the_generation_that_another_store_reads(db: Runner) -> None:
    """The counter every cache compares: a bump by one store (process) is visible to the other's read, and at
    once to the store that made it."""
    other = db.twin()
    db(other.open())
    try:
        before = db(other.generation())
        own = db(db.store.generation())
        db(db.store.bump_generation())
        assert db(db.store.generation()) > own
        bumped = _moves_past(db, other, before)
        if isinstance(db.store, CachingStore):  # the cache bumps it on every write it passes on
            db(db.store.create_project(Project("gen-proj", "123456789012", 1.0)))
            _moves_past(db, other, bumped)
    finally:
        db(other.close())


def test_lock_excludes_another_store(db: Runner) -> None:
    """``lock(name)`` is held across stores on one database (bootstrap and migrations rely on it)."""
    other = db.twin()
    db(other.open())
    order: list[str] = []

    async def hold(store: Store, tag: str, entered: asyncio.Event | None, release: asyncio.Event | None) -> None:
        async with store.lock("conformance"):
            order.append(f"{tag}-in")
            if entered is not None:
                entered.set()
            if release is not None:
                await release.wait()
            order.append(f"{tag}-out")

    async def scenario() -> None:
        entered, release = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(hold(db.store, "a", entered, release))
        await entered.wait()
        second = asyncio.create_task(hold(other, "b", None, None))
        # b must not get in while a holds the lock. Not a synchronisation: time for a wrong lock to show itself.
        await asyncio.sleep(0.05)
        assert order == ["a-in"]
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)

    try:
        db(scenario())
        assert order == ["a-in", "a-out", "b-in", "b-out"]
    finally:
        db(other.close())


POOL = "projects/123456789012/locations/global/workloadIdentityPools/k8s-pool"


def test_workload_pools_lifecycle(db: Runner) -> None:
    pool = WorkloadPool(POOL, "123456789012", "Cluster", "the cluster", created_at=1.0)
    db(db.store.create_workload_pool(pool))
    assert db(db.store.get_workload_pool(POOL)) == pool
    with pytest.raises(Conflict):
        db(db.store.create_workload_pool(pool))
    other = WorkloadPool(POOL.replace("k8s-pool", "a-pool"), "123456789012", created_at=2.0)
    db(db.store.create_workload_pool(other))
    db(db.store.create_workload_pool(WorkloadPool(POOL.replace("123456789012", "9"), "9")))
    assert [p.name for p in db(db.store.list_workload_pools("123456789012"))] == [other.name, POOL]
    updated = db(db.store.update_workload_pool(POOL, disabled=True, display_name="X"))
    assert updated.disabled and updated.display_name == "X" and updated.description == "the cluster"
    assert db(db.store.update_workload_pool(POOL, deleted_at=5.0)).deleted_at == 5.0
    assert db(db.store.get_workload_pool(POOL)).deleted_at == 5.0  # deleted pools are still read (undelete)
    assert db(db.store.update_workload_pool(POOL, deleted_at=None)).deleted_at is None
    assert db(db.store.update_workload_pool(POOL + "x", disabled=True)) is None
    with pytest.raises(ValueError):
        db(db.store.update_workload_pool(POOL, project_number="1"))


def test_workload_providers_lifecycle(db: Runner) -> None:
    name = f"{POOL}/providers/cluster"
    oidc = {"issuerUri": "https://issuer.example", "allowedAudiences": ["a"], "jwksJson": '{"keys": []}'}
    provider = WorkloadProvider(name, POOL, "Cluster", created_at=1.0,
                                attribute_mapping={"google.subject": "assertion.sub"},
                                attribute_condition="assertion.ns == 'prod'", oidc=oidc)
    db(db.store.create_workload_provider(provider))
    assert db(db.store.get_workload_provider(name)) == provider
    with pytest.raises(Conflict):
        db(db.store.create_workload_provider(provider))
    db(db.store.create_workload_provider(WorkloadProvider(f"{POOL}/providers/another", POOL)))
    db(db.store.create_workload_provider(WorkloadProvider("elsewhere/providers/x", "elsewhere")))
    assert [p.name for p in db(db.store.list_workload_providers(POOL))] == [f"{POOL}/providers/another", name]
    mapping = {"google.subject": "assertion.sub", "attribute.ns": "assertion.ns"}
    updated = db(db.store.update_workload_provider(name, attribute_mapping=mapping, attribute_condition="",
                                                   oidc={**oidc, "allowedAudiences": []}, disabled=True))
    assert updated.attribute_mapping == mapping and updated.attribute_condition == "" and updated.disabled
    assert updated.oidc["allowedAudiences"] == [] and updated.oidc["issuerUri"] == "https://issuer.example"
    assert db(db.store.update_workload_provider(name, deleted_at=7.0)).deleted_at == 7.0
    assert db(db.store.update_workload_provider(name + "x", disabled=False)) is None
    with pytest.raises(ValueError):
        db(db.store.update_workload_provider(name, pool="x"))


def test_x509_providers_keep_their_trust_store_and_are_listed_across_pools(db: Runner) -> None:
    trust = {"trustStore": {"trustAnchors": [{"pemCertificate": "-----BEGIN CERTIFICATE-----\nA\n"}],
                            "intermediateCas": [{"pemCertificate": "-----BEGIN CERTIFICATE-----\nI\n"}]}}
    spiffe = WorkloadProvider(f"{POOL}/providers/spiffe", POOL, created_at=1.0,
                              attribute_mapping={"google.subject": "assertion.san.uri"}, x509=trust)
    elsewhere = WorkloadProvider("projects/9/locations/global/workloadIdentityPools/p/providers/ca", "p", x509=trust)
    oidc = WorkloadProvider(f"{POOL}/providers/oidc", POOL, oidc={"issuerUri": "https://issuer.example"})
    for provider in (spiffe, elsewhere, oidc):
        db(db.store.create_workload_provider(provider))
    assert db(db.store.get_workload_provider(spiffe.name)) == spiffe
    assert db(db.store.get_workload_provider(oidc.name)).x509 == {}
    assert [p.name for p in db(db.store.list_x509_providers())] == [spiffe.name, elsewhere.name]
    rotated = {"trustStore": {"trustAnchors": [{"pemCertificate": "-----BEGIN CERTIFICATE-----\nB\n"}]}}
    assert db(db.store.update_workload_provider(spiffe.name, x509=rotated)).x509 == rotated
    assert db(db.store.list_x509_providers())[0].x509 == rotated
