"""The HTTP front end: a Quart app with one blueprint per API family."""
