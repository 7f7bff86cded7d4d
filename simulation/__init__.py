"""Simulated agents (events, fleet) and the demo launcher; never imports the console."""
