"""Sample applications used by the demo and the tests."""
