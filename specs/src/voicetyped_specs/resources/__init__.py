"""The custom resources' specs (pydantic): the CRD schemas are generated from them, CEL rules
included, and the operator validates each resource with the same models."""
