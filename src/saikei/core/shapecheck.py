"""Shape checking for trees of (named) arrays, exposed as `sk.chk`.

Describe what a tree should look like with `ArraySpec` leaves whose
dimensions may be variables (`var("n")`, `*var("batch")`, `**var("rest")`),
then `check_structure(value, pattern)` checks it and returns the solved
variables, or raises `StructureMismatchError` with one line per keypath that
does not match.

Example:
  >>> import jax.numpy as jnp
  >>> from saikei import sk
  >>> spec = sk.chk.ArraySpec(shape=(*sk.chk.var("batch"), sk.chk.var("d")), dtype=jnp.float32)
  >>> dict(sk.chk.check_structure(jnp.zeros((2, 5, 8)), spec))
  {'d': 8, 'batch': (2, 5)}
"""

from saikei.core._shapecheck import ANY as ANY
from saikei.core._shapecheck import ArraySpec as ArraySpec
from saikei.core._shapecheck import DimVar as DimVar
from saikei.core._shapecheck import KnownDim as KnownDim
from saikei.core._shapecheck import MultiDimVar as MultiDimVar
from saikei.core._shapecheck import RemainingAxisPlaceholder as RemainingAxisPlaceholder
from saikei.core._shapecheck import StructureAnnotation as StructureAnnotation
from saikei.core._shapecheck import Wildcard as Wildcard
from saikei.core._shapecheck import var as var
from saikei.core._shapecheck import vars_for_axes as vars_for_axes
from saikei.core._shapecheck_match import MatchResult as MatchResult
from saikei.core._shapecheck_match import StructureMismatchError as StructureMismatchError
from saikei.core._shapecheck_match import check_structure as check_structure
from saikei.core._shapecheck_subst import (
    DimensionVariableSubstitution as DimensionVariableSubstitution,
)
from saikei.core._shapecheck_subst import as_array_structure as as_array_structure
from saikei.core._shapecheck_subst import (
    full_substitute_dimension_variables as full_substitute_dimension_variables,
)
from saikei.core._shapecheck_subst import get_dimension_variables as get_dimension_variables
