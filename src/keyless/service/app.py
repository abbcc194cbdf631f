"""``Keyless``: one object wiring the store, the clock and the services together."""

from __future__ import annotations

from typing import TextIO

from keyless.clock import Clock
from keyless.crypto.keys import MasterKey
from keyless.service.accounts import Accounts
from keyless.service.admin import Admin
from keyless.service.analyzer import Analyzer
from keyless.service.audit import AuditLog
from keyless.service.config import Settings
from keyless.service.core import Core
from keyless.service.credentials import Credentials
from keyless.service.federation import Federation
from keyless.service.limits import Limits, RateLimiter
from keyless.service.oauth import OAuth
from keyless.service.orgpolicies import OrgPolicies
from keyless.service.policies import Policies
from keyless.service.signin import SignIn
from keyless.service.troubleshooter import Troubleshooter
from keyless.service.usage import ServiceUsage
from keyless.storage.base import Store


class Keyless:
    def __init__(self, store: Store, clock: Clock, settings: Settings, master: MasterKey,
                 limits: Limits | None = None, audit_sink: TextIO | None = None) -> None:
        self.core = Core(store, clock, settings, master)
        self.audit = AuditLog(store, clock, audit_sink)
        self.accounts = Accounts(self.core)
        self.policies = Policies(self.core, self.accounts)
        self.limits = limits or Limits()
        self.per_caller = RateLimiter(self.limits.rate_limit, what="for the caller")
        self.credentials = Credentials(self.core, self.limits)
        self.oauth = OAuth(self.core, self.credentials, self.limits, self.per_caller)
        self.admin = Admin(self.core)
        self.services = ServiceUsage(self.core)
        self.org_policies = OrgPolicies(self.core)
        self.sign_in = SignIn(self.core, self.limits)
        self.federation = Federation(self.core)
        self.troubleshooter = Troubleshooter(self.core)
        self.analyzer = Analyzer(self.core)

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def store(self) -> Store:
        return self.core.store
