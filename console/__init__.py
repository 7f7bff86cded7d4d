"""The operators' terminal console (Textual) and its command-line subcommands."""
