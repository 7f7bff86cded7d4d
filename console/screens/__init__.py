"""The console's full screens: sign-in (:mod:`.login`) and the shell that hosts the sections
(:mod:`.shell`)."""
