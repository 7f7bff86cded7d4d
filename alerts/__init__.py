"""Alert rules and their evaluation: which events, counted how, raise which alert, once."""
