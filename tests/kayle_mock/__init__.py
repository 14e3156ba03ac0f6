"""A local Kayle ID API (and sender) for the tests; see :mod:`tests.kayle_mock.app`."""
