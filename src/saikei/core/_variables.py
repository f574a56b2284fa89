"""Variables: mutable, labeled values at pytree leaves, and their pure forms.

The implementation lives in three private modules, re-exported here:

* `_variables_types`: the variable, frozen-value and slot classes, labels and
  errors;
* `_variables_binding`: `unbind_variables`, `bind_variables`,
  `freeze_variables` and their Parameter/StateVariable variants;
* `_variables_jit`: `variable_jit`.
"""

from saikei.core._variables_binding import bind_variables as bind_variables
from saikei.core._variables_binding import freeze_params as freeze_params
from saikei.core._variables_binding import freeze_state_vars as freeze_state_vars
from saikei.core._variables_binding import freeze_variables as freeze_variables
from saikei.core._variables_binding import unbind_params as unbind_params
from saikei.core._variables_binding import unbind_state_vars as unbind_state_vars
from saikei.core._variables_binding import unbind_variables as unbind_variables
from saikei.core._variables_jit import variable_jit as variable_jit
from saikei.core._variables_types import AbstractVariable as AbstractVariable
from saikei.core._variables_types import AbstractVariableSlot as AbstractVariableSlot
from saikei.core._variables_types import AbstractVariableValue as AbstractVariableValue
from saikei.core._variables_types import AutoStateVarLabel as AutoStateVarLabel
from saikei.core._variables_types import LabeledVariable as LabeledVariable
from saikei.core._variables_types import LabeledVariableValue as LabeledVariableValue
from saikei.core._variables_types import Parameter as Parameter
from saikei.core._variables_types import ParameterSlot as ParameterSlot
from saikei.core._variables_types import ParameterValue as ParameterValue
from saikei.core._variables_types import ScopedStateVarLabel as ScopedStateVarLabel
from saikei.core._variables_types import StateVariable as StateVariable
from saikei.core._variables_types import StateVariableSlot as StateVariableSlot
from saikei.core._variables_types import StateVariableValue as StateVariableValue
from saikei.core._variables_types import UnboundVariableError as UnboundVariableError
from saikei.core._variables_types import VariableConflictError as VariableConflictError
from saikei.core._variables_types import VariableLabel as VariableLabel
from saikei.core._variables_types import (
    scoped_auto_state_var_labels as scoped_auto_state_var_labels,
)
