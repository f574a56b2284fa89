"""PLACEHOLDER: replaced by the module's real implementation this session."""

LinearOperatorWeightInitializer = None
variance_scaling_initializer = None
xavier_uniform_initializer = None
xavier_normal_initializer = None
constant_initializer = None
zero_initializer = None
check_unique_axis_names_for_initializer = None
