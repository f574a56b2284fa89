"""The alias namespace: `from saikei import sk`.

`sk` gathers saikei's everyday names in one place, the way `pz` does for
penzai: structs and selectors (`sk.Struct`, `sk.select`), variables
(`sk.Parameter`, `sk.StateVariable`, `sk.unbind_variables`, ...), and the
sub-namespaces `sk.nx` (named axes), `sk.chk` (shape checking) and `sk.interp`
(interpretability: hook points, caches, interventions).

Example:
  >>> from saikei import sk
  >>> sk.nx.ones({"features": 3}).named_shape
  {'features': 3}
"""

# treescope helpers that penzai's `pz` re-exports.
from treescope.context import ContextualValue as ContextualValue
from treescope.dataclass_util import dataclass_from_attributes as dataclass_from_attributes
from treescope.dataclass_util import init_takes_fields as init_takes_fields
from treescope.formatting_util import color_from_string as color_from_string
from treescope.formatting_util import oklch_color as oklch_color

from saikei import interp as interp
from saikei import nn as nn
from saikei import viz as ts  # noqa: F401  (the sk.ts namespace)
from saikei.core import AbstractVariable as AbstractVariable
from saikei.core import AbstractVariableSlot as AbstractVariableSlot
from saikei.core import AbstractVariableValue as AbstractVariableValue
from saikei.core import AutoOrderedAcrossTypes as AutoOrderedAcrossTypes
from saikei.core import AutoStateVarLabel as AutoStateVarLabel
from saikei.core import NotInThisPartition as NotInThisPartition
from saikei.core import Parameter as Parameter
from saikei.core import ParameterSlot as ParameterSlot
from saikei.core import ParameterValue as ParameterValue
from saikei.core import PyTreeDataclassSafetyError as PyTreeDataclassSafetyError
from saikei.core import RandomStream as RandomStream
from saikei.core import ScopedStateVarLabel as ScopedStateVarLabel
from saikei.core import Selection as Selection
from saikei.core import StateVariable as StateVariable
from saikei.core import StateVariableSlot as StateVariableSlot
from saikei.core import StateVariableValue as StateVariableValue
from saikei.core import Struct as Struct
from saikei.core import StructStaticMetadata as StructStaticMetadata
from saikei.core import UnboundVariableError as UnboundVariableError
from saikei.core import VariableConflictError as VariableConflictError
from saikei.core import VariableLabel as VariableLabel
from saikei.core import bind_variables as bind_variables
from saikei.core import combine as combine
from saikei.core import freeze_params as freeze_params
from saikei.core import freeze_state_vars as freeze_state_vars
from saikei.core import freeze_variables as freeze_variables
from saikei.core import is_pytree_dataclass_type as is_pytree_dataclass_type
from saikei.core import is_pytree_node_field as is_pytree_node_field
from saikei.core import named_axes as nx  # noqa: F401  (the sk.nx namespace)
from saikei.core import pretty_keystr as pretty_keystr
from saikei.core import pytree_dataclass as pytree_dataclass
from saikei.core import scoped_auto_state_var_labels as scoped_auto_state_var_labels
from saikei.core import select as select
from saikei.core import shapecheck as chk  # noqa: F401  (the sk.chk namespace)
from saikei.core import slice as slice  # noqa: A004
from saikei.core import unbind_params as unbind_params
from saikei.core import unbind_state_vars as unbind_state_vars
from saikei.core import unbind_variables as unbind_variables
from saikei.core import variable_jit as variable_jit
from saikei.viz import disable_interactive_context as disable_interactive_context
from saikei.viz import enable_interactive_context as enable_interactive_context
from saikei.viz import show as show
