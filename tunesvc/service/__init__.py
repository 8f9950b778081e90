"""The service layer: what the CLI and Python users call.

Each function takes plain values, does its work against the storage and returns plain
dataclasses that the CLI prints as a table or as JSON.
"""
