"""The ``bert`` command (bert.cli.commands) and the programs behind its subcommands."""
