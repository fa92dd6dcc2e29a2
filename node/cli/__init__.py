"""The ``sealbox`` command line: argument parsing, the commands, output and secret input."""
