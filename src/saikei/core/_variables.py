"""PLACEHOLDER: replaced by the module's real implementation this session."""

VariableConflictError = None
UnboundVariableError = None
VariableLabel = None
AbstractVariable = None
AbstractVariableValue = None
AbstractVariableSlot = None
LabeledVariable = None
Parameter = None
ParameterValue = None
ParameterSlot = None
StateVariable = None
StateVariableValue = None
StateVariableSlot = None
AutoStateVarLabel = None
ScopedStateVarLabel = None
scoped_auto_state_var_labels = None
unbind_variables = None
bind_variables = None
freeze_variables = None
unbind_params = None
freeze_params = None
unbind_state_vars = None
freeze_state_vars = None
variable_jit = None
