"""The keyword settings of a loader: which names exist and which values make sense, checked
when a loader or dataset is made, so that a typo or a zero batch size is an error at once and
not at the first batch.

The native loader owns the defaults and every check (``_native.Loader.check_settings`` runs
the checks that need no corpus); here only unknown names get a hint, and only the keywords the
caller gave travel on to it.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, FrozenSet, Iterable, Optional

from . import _native
from ._errors import SettingTypeError

# Every keyword of the native loader, for a native module whose signature does not list them.
LOADER_KEYWORDS = (
    "batch_size",
    "drop_last",
    "seed",
    "epoch",
    "position",
    "rank",
    "world_size",
    "worker",
    "num_workers",
    "policy",
    "shuffle_run",
    "shuffle_window",
    "group_size",
    "label",
    "label_mode",
    "balance",
    "level",
    "balance_terms",
    "ontology",
    "regions",
    "min_cells",
    "max_cells",
    "block_size",
    "stride",
    "where",
    "blocks_sql",
    "regions_sql",
    "values",
    "indices",
    "dense",
    "genes",
    "obs",
    "coords",
    "bounds",
    "multi_hot",
    "multi_hot_level",
    "multi_hot_terms",
    "tokens",
    "top_k",
    "n_bins",
    "gene_medians",
    "threads",
    "prefetch",
    "read_ahead",
)

_native_names: Optional[FrozenSet[str]] = None


def native_keywords() -> FrozenSet[str]:
    """The keywords the native loader takes: from its signature when it names them, else
    :data:`LOADER_KEYWORDS` (a signature with ``**settings`` names none)."""
    global _native_names
    if _native_names is None:
        names = _signature_names(getattr(_native.Loader, "__text_signature__", None) or "")
        _native_names = frozenset(names) if names else frozenset(LOADER_KEYWORDS)
    return _native_names


def _signature_names(text: str) -> Optional[list]:
    """The keyword names of a ``__text_signature__``, or None when it takes ``**kwargs``."""
    inner = text.strip()
    if not (inner.startswith("(") and inner.endswith(")")):
        return None
    names = []
    for item in inner[1:-1].split(","):
        name = item.split("=")[0].strip()
        if name.startswith("**"):
            return None
        if not name.isidentifier() or name in ("corpus", "cells"):
            continue
        names.append(name)
    return names or None


def check_keywords(given: Iterable[str], valid: Iterable[str], what: str) -> None:
    """Raises ``TypeError`` naming the first of ``given`` not in ``valid``, and listing those."""
    valid = sorted(set(valid))
    for name in given:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingTypeError(f"{what} got an unknown keyword argument {name!r}{hint}; the valid ones are: {', '.join(valid)}")


def check_values(settings: Dict[str, Any], sampler: Optional[str] = None) -> None:
    """Checks the values of ``settings`` (for ``sampler``, if given) with the library's own
    checks, as a loader will: a ``ValueError`` (``TypeError`` for a value of the wrong type)
    naming the first bad setting. ``None`` leaves a setting at its default; names that are not
    the native loader's (a cohort, say) are someone else's to check."""
    names = native_keywords()
    given = {k: v for k, v in settings.items() if v is not None and k in names}
    if sampler is not None:
        given["sampler"] = sampler
    _native.Loader.check_settings(**given)
