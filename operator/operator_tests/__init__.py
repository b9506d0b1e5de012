"""Unit tests of the operator.

A package named operator_tests: "tests" is common/tests, "operator" is the stdlib.
"""
