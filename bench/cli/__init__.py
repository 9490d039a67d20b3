"""The command line: the typer app (:mod:`.app`) and every terminal rendering.

The only package that prints. Each command parses its arguments, calls plain
functions of the stages and renders what they return.
"""
