"""The custom resources' specs and statuses (pydantic): the CRD schemas are generated from them."""
