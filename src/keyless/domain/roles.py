"""The catalogue of predefined roles and the permission each API method checks."""

from __future__ import annotations

_SA_READ = ("iam.serviceAccounts.get", "iam.serviceAccounts.list")
_SA_KEYS_READ = ("iam.serviceAccountKeys.get", "iam.serviceAccountKeys.list")
_PROJECT_READ = ("resourcemanager.projects.get", "resourcemanager.projects.list")
_TOKEN = (
    "iam.serviceAccounts.getAccessToken",
    "iam.serviceAccounts.getOpenIdToken",
    "iam.serviceAccounts.signBlob",
    "iam.serviceAccounts.signJwt",
    "iam.serviceAccounts.implicitDelegation",
)
_SA_ADMIN = (
    *_SA_READ,
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.update",
    "iam.serviceAccounts.disable",
    "iam.serviceAccounts.enable",
    "iam.serviceAccounts.undelete",
    "iam.serviceAccounts.getIamPolicy",
    "iam.serviceAccounts.setIamPolicy",
)
_KEY_ADMIN = (
    *_SA_KEYS_READ,
    "iam.serviceAccountKeys.create",
    "iam.serviceAccountKeys.delete",
    "iam.serviceAccountKeys.disable",
    "iam.serviceAccountKeys.enable",
)
_PROJECT_POLICY = ("resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy")
_ORG_POLICY = ("orgpolicy.policies.list", "orgpolicy.policy.get", "orgpolicy.policies.create",
               "orgpolicy.policies.update", "orgpolicy.policies.delete", "orgpolicy.policy.set",
               "orgpolicy.constraints.list")
_SERVICES_READ = ("serviceusage.services.get", "serviceusage.services.list")
_SERVICES_ADMIN = (*_SERVICES_READ, "serviceusage.services.enable", "serviceusage.services.disable",
                   "serviceusage.services.use")
_WI_READ = ("iam.workloadIdentityPools.get", "iam.workloadIdentityPools.list",
            "iam.workloadIdentityPoolProviders.get", "iam.workloadIdentityPoolProviders.list")
_WI_ADMIN = (*_WI_READ, *(f"iam.workloadIdentityPool{kind}.{verb}" for kind in ("s", "Providers")
                          for verb in ("create", "update", "delete", "undelete")))

ROLES: dict[str, frozenset[str]] = {
    "roles/viewer": frozenset({*_WI_READ, *_SA_READ, *_SA_KEYS_READ, *_PROJECT_READ, "orgpolicy.policy.get",
                               "orgpolicy.constraints.list", *_SERVICES_READ, "iam.roles.get", "iam.roles.list",
                               "resourcemanager.projects.getIamPolicy"}),
    "roles/iam.serviceAccountTokenCreator": frozenset({*_TOKEN, *_SA_READ, *_PROJECT_READ}),
    "roles/iam.serviceAccountOpenIdTokenCreator": frozenset({"iam.serviceAccounts.getOpenIdToken"}),
    "roles/iam.serviceAccountUser": frozenset({"iam.serviceAccounts.actAs", *_SA_READ, *_PROJECT_READ}),
    "roles/iam.workloadIdentityUser": frozenset({"iam.serviceAccounts.getAccessToken",
                                                 "iam.serviceAccounts.getOpenIdToken", *_SA_READ}),
    "roles/iam.serviceAccountAdmin": frozenset({*_SA_ADMIN, *_PROJECT_READ}),
    "roles/iam.serviceAccountKeyAdmin": frozenset({*_KEY_ADMIN, *_SA_READ, *_PROJECT_READ}),
    "roles/iam.serviceAccountCreator": frozenset({"iam.serviceAccounts.create", *_PROJECT_READ}),
    "roles/iam.securityAdmin": frozenset({
        *_SA_READ, *_SA_KEYS_READ, *_PROJECT_READ, *_PROJECT_POLICY, *_ORG_POLICY,
        "iam.serviceAccounts.getIamPolicy", "iam.serviceAccounts.setIamPolicy", "iam.roles.get", "iam.roles.list",
    }),
    "roles/iam.securityReviewer": frozenset({
        *_SA_READ, *_SA_KEYS_READ, *_PROJECT_READ, "resourcemanager.projects.getIamPolicy",
        "iam.serviceAccounts.getIamPolicy", "iam.roles.get", "iam.roles.list",
    }),
    "roles/iam.workloadIdentityPoolAdmin": frozenset({*_WI_ADMIN, *_PROJECT_READ}),
    "roles/iam.workloadIdentityPoolViewer": frozenset({*_WI_READ, *_PROJECT_READ}),
    "roles/resourcemanager.projectIamAdmin": frozenset({*_PROJECT_READ, *_PROJECT_POLICY}),
    "roles/orgpolicy.policyAdmin": frozenset({*_ORG_POLICY, *_PROJECT_READ}),
    "roles/serviceusage.serviceUsageAdmin": frozenset(_SERVICES_ADMIN),
    "roles/serviceusage.serviceUsageConsumer": frozenset({*_SERVICES_READ, "serviceusage.services.use"}),
    "roles/serviceusage.serviceUsageViewer": frozenset(_SERVICES_READ),
}
# Editor: every service-account and key operation, but neither IAM policy writes nor token minting
# (on Google, editor includes actAs but not getAccessToken).
ROLES["roles/editor"] = frozenset({
    *ROLES["roles/viewer"], *_SA_ADMIN, *_KEY_ADMIN, *_SERVICES_ADMIN, *_WI_ADMIN, "iam.serviceAccounts.actAs",
} - {"iam.serviceAccounts.setIamPolicy"})
ROLES["roles/owner"] = frozenset({
    *ROLES["roles/editor"], *ROLES["roles/iam.securityAdmin"], "iam.serviceAccounts.setIamPolicy",
    "resourcemanager.projects.setIamPolicy", "keyless.admin",
})

ALL_PERMISSIONS: frozenset[str] = frozenset().union(*ROLES.values())

# Permission checked by each service-account method, as Google checks it.
PERM_GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"
PERM_GET_ID_TOKEN = "iam.serviceAccounts.getOpenIdToken"
PERM_SIGN_BLOB = "iam.serviceAccounts.signBlob"
PERM_SIGN_JWT = "iam.serviceAccounts.signJwt"
PERM_IMPLICIT_DELEGATION = "iam.serviceAccounts.implicitDelegation"

