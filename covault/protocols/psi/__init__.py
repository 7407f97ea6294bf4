"""Private set intersection (PSI): which ids several parties have in common, and nothing else
but the set sizes. DH-PSI over X25519, semi-honest; see :mod:`covault.protocols.psi.protocol`
for the steps and leakage and :mod:`covault.protocols.psi.group` for the group."""

from covault.protocols.psi.protocol import PsiResult, intersect

__all__ = ["PsiResult", "intersect"]
