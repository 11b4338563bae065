"""Helpers the tests share: fake servers, stack evaluation, schema validation, stubs."""
