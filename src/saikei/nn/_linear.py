"""PLACEHOLDER: replaced by the module's real implementation this session."""

Linear = None
AddBias = None
Affine = None
LinearInPlace = None
RenameAxes = None
ConstantRescale = None
contract = None
