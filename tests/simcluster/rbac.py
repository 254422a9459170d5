"""RBAC authorization from the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects of the simulated cluster.

The rules are those of Kubernetes' RBAC authorizer (plugin/pkg/auth/authorizer/rbac), which this reproduces rather
than approximates, because the least-privilege manifests in docs/rbac are only proven by an authorizer that is as
strict as a real one:

* a request is allowed when any rule of any role bound to the user (by name), one of its groups, or its
  ServiceAccount allows it; there is no deny;
* ClusterRoleBindings grant their ClusterRole everywhere (cluster-scoped objects and every namespace); RoleBindings
  grant their Role or ClusterRole only in the binding's own namespace, never for cluster-scoped objects;
* a rule matches on verb, API group, resource (``pods``, ``pods/exec``, ``*``, ``*/exec``) and, when it lists
  ``resourceNames``, on the object's name. Requests without a name - ``create`` on a collection, ``list``, ``watch``
  and ``deletecollection`` without a ``metadata.name`` field selector - never match a rule with resourceNames;
* a ServiceAccount subject with no namespace means the binding's namespace (RoleBindings);
* a binding whose role does not exist grants nothing, and the denial's reason names the missing role.

Every authenticated user also holds what the bootstrap roles ``system:basic-user`` and ``system:discovery`` give
(self-subject access and rules reviews; discovery is served without an authorization check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

GROUP = "rbac.authorization.k8s.io"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

# system:basic-user, bound to system:authenticated in every cluster
BASIC_USER_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
     "verbs": ["create"]},
)


@dataclass(frozen=True)
class Attributes:
    """What a resource request asks for, as the API server's RequestInfo gives it to the authorizer."""

    verb: str
    group: str
    resource: str  # without the subresource
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def service_account_user(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    """rbac.RuleAllows for a resource request."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    if not _resource_matches(rule.get("resources") or [], attrs):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _resource_matches(resources: list[str], attrs: Attributes) -> bool:
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    for resource in resources:
        if resource in ("*", combined):
            return True
        if attrs.subresource and resource == f"*/{attrs.subresource}":
            return True
    return False


@dataclass(frozen=True)
class Decision:
    """One authorized request, for tests that ask which rules a run needed: every (role kind, role name, rule index)
    whose rule allowed it (empty when it was denied)."""

    user: str
    attrs: Attributes
    allowed: bool
    grants: tuple[tuple[str, str, int], ...]


class RbacAuthorizer:
    """Decides requests from the RBAC objects in a store; reads them at every request, so changes apply at once.
    ``decisions`` keeps every decision (allowed or not) in order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.decisions: list[Decision] = []

    def authorize(self, user: str, groups: list[str], attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason): the reason is empty, or names the roles that bindings refer to but do not exist."""
        if any(rule_allows(rule, attrs) for rule in BASIC_USER_RULES) and "system:authenticated" in groups:
            return True, ""
        errors: list[str] = []
        bound = self._rules_for(user, groups, attrs.namespace, errors)
        grants = tuple((kind, name, index) for kind, name, rules in bound
                       for index, rule in enumerate(rules) if rule_allows(rule, attrs))
        self.decisions.append(Decision(user, attrs, bool(grants), grants))
        if grants:
            return True, ""
        return False, ("RBAC: " + ", ".join(errors)) if errors else ""

    # --- the rules that apply to a user in a namespace -----------------------------------------------------
    def _rules_for(self, user: str, groups: list[str], namespace: str, errors: list[str]) -> Any:
        """(role kind, role name, rules) of every role bound to the user where the request applies."""
        for binding in self._objects("clusterrolebindings"):
            if self._binds(binding, user, groups, None):
                ref = binding.get("roleRef") or {}
                rules = self._role_rules(ref, None, errors)
                if rules is not None:
                    yield ref["kind"], ref["name"], rules
        if not namespace:
            return
        for binding in self._objects("rolebindings", namespace):
            if self._binds(binding, user, groups, namespace):
                ref = binding.get("roleRef") or {}
                rules = self._role_rules(ref, namespace, errors)
                if rules is not None:
                    yield ref["kind"], ref["name"], rules

    def _objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        rtype = self.store.types.get((GROUP, plural))
        if rtype is None:
            return []
        return self.store.list(rtype, namespace)

    def _role_rules(self, ref: dict[str, Any], namespace: str | None, errors: list[str]) -> list[dict] | None:
        kind, name = ref.get("kind"), ref.get("name", "")
        if ref.get("apiGroup", GROUP) != GROUP or kind not in ("Role", "ClusterRole"):
            return None
        if kind == "Role" and namespace is None:
            return None  # a ClusterRoleBinding can only refer to a ClusterRole
        plural = "roles" if kind == "Role" else "clusterroles"
        rtype = self.store.types.get((GROUP, plural))
        role = self.store.try_get(rtype, namespace if kind == "Role" else None, name) if rtype else None
        if role is None:
            errors.append(f'{kind.lower()}.{GROUP} "{name}" not found')
            return None
        return list(role.get("rules") or [])

    @staticmethod
    def _binds(binding: dict[str, Any], user: str, groups: list[str], namespace: str | None) -> bool:
        """rbac.appliesTo: does one of the binding's subjects name this user, one of its groups or its
        ServiceAccount?"""
        for subject in binding.get("subjects") or []:
            kind = subject.get("kind")
            if kind == "User" and subject.get("name") == user:
                return True
            if kind == "Group" and subject.get("name") in groups:
                return True
            if kind == "ServiceAccount":
                sa_namespace = subject.get("namespace") or namespace or ""
                if sa_namespace and user == service_account_user(sa_namespace, subject.get("name", "")):
                    return True
        return False
