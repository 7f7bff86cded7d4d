"""Modal dialogs over the shell: the yes/no question, help, export, log filters and the admin forms."""
