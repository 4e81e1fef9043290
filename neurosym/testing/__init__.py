"""Test doubles that ship with the library: a scripted OpenAI-compatible server and teacher.

Product code never imports this package; tests, benchmarks and examples do."""
