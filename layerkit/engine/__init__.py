"""The engine: the only package that imports the Docker SDK. Everything else calls the functions
of its modules (`client`, `images`, `containers`, `save`) and gets frozen dataclasses and
layerkit's own errors (`errors.py`) back.

This file imports nothing, so that a module of the package that needs no SDK (`unixhttp`, which
`layerkit analyze` uses before anything else) comes without it.
"""
