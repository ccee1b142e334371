"""DFIR-IRIS → OpenCTI: the IRIS processor module and the IRIS→STIX 2.1 converter.

IRIS imports ``<package>.<__iris_module_interface>`` (the submodule named after the class) and then the class
itself. Only that submodule needs IRIS's ``iris_interface``; the converter and the ``iris-opencti`` command
work anywhere.
"""

__version__ = "0.1.0"
__iris_module_interface = "IrisOpenCTIInterface"
