"""Pure domain: commands, events and deciders. Imports only the standard library and msgspec."""
