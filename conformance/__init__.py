"""conformance: does an exported PyTorch model compute what eager PyTorch computes?

The public API for declaring cases::

    from conformance import Case, Dim, Inputs, TensorSpace, Tolerance, random_inputs, random_tokens
"""
from conformance.calling import Inputs
from conformance.cases import Case, CaseError, Registry, Tolerance, random_inputs, random_tokens
from conformance.spaces import Dim, TensorSpace

__all__ = ["Case", "CaseError", "Dim", "Inputs", "Registry", "TensorSpace", "Tolerance",
           "random_inputs", "random_tokens"]
__version__ = "0.1.0"
