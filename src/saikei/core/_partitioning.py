"""PLACEHOLDER: replaced by the module's real implementation this session."""

NotInThisPartition = None
combine = None
